"""The Zero Problem bridge: one `View` of the store in, the status document (and the /liveness answer) out.

PURE: no I/O, no clock, no logging; the same view always gives the same document. Imports `kinds`, `replset`
and `store` only. The web layer serves what this returns, and the status page reuses its wording, so the
document, /liveness and the page can never disagree about a member.
"""

from __future__ import annotations

import re
from typing import Any

from kinds import NoteKind
from replset import Member, Snapshot
from store import FRESHNESS_LIMIT_S, View

# The consumer is configured with this id, typo included: it must not be "corrected".
SERVICE_ID = "mhp.zeroproblem.mongo.replcationlag"


# What CommonMark (and GFM's ~ and |) would read inside a line: escapes, code, emphasis, links, images, HTML and
# entities. An _ between letters or digits is no emphasis (docker's mongo_1:27017 stays as it is).
_MARKDOWN = re.compile(r"[\\`*\[\]<>!&~|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_IPV6_HOST_PORT = re.compile(r"\[[0-9A-Fa-f:.]+(?:%[0-9A-Za-z._~-]+)?\]:\d+")  # brackets that are no link
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # controls, and what str.splitlines() splits on


def markdown_name(name: str) -> str:
    """A member name as Markdown shows it literally. host:port and [IPv6]:port come out byte for byte (consumers
    parse those lines); a control character, which could start a line of its own, becomes U+FFFD."""
    name = _CONTROL.sub("\ufffd", name)
    if _IPV6_HOST_PORT.fullmatch(name):
        return name
    return _MARKDOWN.sub(lambda match: "\\" + match.group(0), name)


def role(member: Member) -> str:
    """The member's role in words. Any other data-bearing member (down, recovering, ...) is a secondary."""
    if member.is_primary:
        return "Primary"
    if member.is_arbiter:
        return "Arbiter"
    return "Secondary"


def attributes(member: Member) -> list[str]:
    """Configuration facts a reader needs to judge the lag: hidden, and the configured delay."""
    facts = []
    if member.hidden:
        facts.append("hidden")
    if member.delay_ms:
        facts.append(f"delayed {duration_text(member.delay_ms)}")
    return facts


def lag_text(member: Member) -> str:
    """The lag as a reader should read it: exact ms, or "~" and a note when only whole seconds are known."""
    if member.lag_ms is None:
        return ""
    if member.precision == "s":
        text = f"~{member.lag_ms}ms, whole seconds: server has no wall times"
    else:
        text = f"{member.lag_ms}ms"
    if member.delay_ms and member.raw_lag_ms is not None:
        text += f" (raw {member.raw_lag_ms}ms)"
    return text


def condition(member: Member) -> str:
    """What stands in for the lag of a member that has none: an arbiter's health, else why (e.g. `DOWN: ...`).

    The engine's reason already names the state when the state is the cause, so it is shown as it is.
    """
    if member.is_arbiter:
        return "healthy" if member.healthy else f"not healthy: {member.reason or member.state_str}"
    return member.reason or member.state_str or f"state {member.state}"


def member_line(member: Member, snapshot: Snapshot, prefix: str = "") -> str:
    """One Markdown list line for one member, e.g. `- Secondary db1:27017 replication lag 1239ms`."""
    words = [f"{prefix}{role(member)}", markdown_name(member.name)]
    facts = attributes(member)
    # With a primary, the primary is obviously the reference; otherwise the reader must be told which it was.
    if member.name == snapshot.reference_member and not snapshot.has_primary:
        facts.append("reference")
    if facts:
        words.append(f"({', '.join(facts)})")
    if member.lag_ms is None or member.is_arbiter:
        words.append(condition(member))
    else:
        words.append(f"replication lag {lag_text(member)}")
        # Notes (an oplog lookup fallback, apply as the bottleneck) are worth the reader's eye; "N ms behind"
        # would only repeat the number, and consumers read the line as `... replication lag <N>ms`.
        notes = [note.text for note in member.notes if note.kind is not NoteKind.BEHIND]
        if notes:
            words.append(f"({'; '.join(notes)})")
    return "- " + " ".join(words)


def collection_problems(view: View) -> list[str]:
    """The sentences that explain a RED caused by the exporter rather than the set: no data, failed or stale.

    Empty when the view has current data. These come first in the document and on the status page.
    """
    if view.current is not None:
        return []
    if view.snapshot is None and view.failure is None:
        return ["No collection has finished yet"]
    sentences = []
    if view.failure is not None:
        sentences.append(f"Collection failed: {view.failure.message}")
    if view.snapshot is not None and view.age_s is not None:
        age = int(view.age_s)
        if view.is_stale:
            sentences.append(f"Data is stale: last successful collection {age} s ago")
        else:
            sentences.append(f"Last successful collection {age} s ago")
    return sentences


def snapshot_lines(snapshot: Snapshot, *, last_known: bool = False) -> list[str]:
    """The reference line for a set with no primary, then one line per member, primary first."""
    lines = []
    prefix = "Last known: " if last_known else ""
    if not snapshot.has_primary:
        if snapshot.reference_member:
            reference = markdown_name(snapshot.reference_member)
            lines.append(f"- {prefix}No primary: lag measured against the freshest member {reference}")
        else:
            lines.append(f"- {prefix}No primary and no healthy data-bearing member to measure lag against")
    lines.extend(member_line(m, snapshot, prefix) for m in snapshot.members)
    return lines


def action_body(view: View) -> str:
    """The Markdown the consumer shows: problems with the collection first, then the (last known) members."""
    lines = [f"- {sentence}" for sentence in collection_problems(view)]
    if view.snapshot is not None:
        lines.extend(snapshot_lines(view.snapshot, last_known=view.current is None))
    return "\n".join(lines)


def data_timestamp_ms(view: View) -> int:
    """When the data shown was collected: the snapshot's time, else the failure's, else 0."""
    if view.snapshot is not None:
        return view.snapshot.collected_at_ms
    if view.failure is not None:
        return view.failure.at_ms
    return 0


def status_document(view: View) -> dict[str, Any]:
    """The document Zero Problem expects: status, timestamp and exactly one message, in every state."""
    return {
        SERVICE_ID: {
            "status": view.status.name,
            "timestamp": data_timestamp_ms(view),
            "messages": [
                {
                    "statusCode": "",
                    "statusBody": SERVICE_ID,
                    "actionCode": "",
                    "actionBody": action_body(view),
                }
            ],
        }
    }


def liveness_document(view: View) -> tuple[int, dict[str, Any]]:
    """200 when the exporter is doing its job, else 503 with the reasons.

    A set with no primary or a lagging member is the cluster's problem, not the exporter's: still 200.
    """
    problems = view.liveness_problems()
    failure = view.failure
    document: dict[str, Any] = {
        "status": "failing" if problems else "ok",
        "infra": view.infra,
        "cluster_status": view.status.name,
        "last_success_age_s": None if view.age_s is None else round(view.age_s, 3),
        "freshness_limit_s": FRESHNESS_LIMIT_S,
        "collection_interval_s": view.interval_s,
        "polls": view.polls,
        "last_failure_kind": None if failure is None else failure.kind,
        "last_failure": None if failure is None else failure.message,
    }
    if problems:
        document["reasons"] = problems
        return 503, document
    return 200, document


def duration_text(ms: int) -> str:
    """A configured delay as people write it: whole seconds when it is whole seconds."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
