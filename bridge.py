"""The Zero Problem bridge: the contract with Zero Problem, its service id, its path, and one `View` of the
store in, the status document out.

PURE: no I/O, no clock, no logging; the same view always gives the same document. Imports `replicationlag.model`,
`.trend`, `.view` and `.words` (the sentences the status page shares), and is imported by nothing in the package:
exporter.py hands it to the service (`build_service(settings, bridge)`), which serves `PATH` with
`status_document`, rendered once per `document_key`.
"""

from __future__ import annotations

import re
from typing import Any

from replicationlag.model import Member, NoteKind, Snapshot, Status
from replicationlag.trend import Trend
from replicationlag.view import SetView, View
from replicationlag.words import (
    FULL_LISTING_MAX_SETS,
    SET_DANGER,
    attributes,
    changing_sentences,
    cluster_problems,
    collection_problems,
    condition,
    danger_words,
    lag_text,
    role,
    set_problems,
)

# The consumer is configured with this id, typo included: it must not be "corrected".
SERVICE_ID = "mhp.zeroproblem.mongo.replcationlag"
PATH = "/" + SERVICE_ID


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


def member_line(member: Member, snapshot: Snapshot, prefix: str = "", trend: Trend | None = None) -> str:
    """One Markdown list line for one member, e.g. `- Secondary db1:27017 replication lag 1239ms`, and for a
    YELLOW or RED member how it is going: `(rising 2.1 s/min, RED in about 4 min; oplog headroom 5 h 12 min)`."""
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
        notes = danger_words(member, trend) + [n.text for n in member.notes if n.kind is not NoteKind.BEHIND]
        if notes:
            words.append(f"({'; '.join(notes)})")
    return "- " + " ".join(words)


def snapshot_lines(snapshot: Snapshot, *, last_known: bool = False, trends: SetView | None = None) -> list[str]:
    """The reference line for a set with no primary, one line per member (primary first), then what endangers
    the whole set: the majority commit point, flow control, a read the user may not make."""
    lines = []
    prefix = "Last known: " if last_known else ""
    if not snapshot.has_primary:
        if snapshot.reference_member:
            reference = markdown_name(snapshot.reference_member)
            lines.append(f"- {prefix}No primary: lag measured against the freshest member {reference}")
        else:
            lines.append(f"- {prefix}No primary and no healthy data-bearing member to measure lag against")
    lines.extend(
        member_line(m, snapshot, prefix, trends.trend_of(m.name) if trends is not None else None)
        for m in snapshot.members
    )
    lines += [f"- {prefix}{_capital(n.text)}" for n in snapshot.notes if n.kind in SET_DANGER]
    return lines


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def action_body(view: View) -> str:
    """The Markdown the consumer shows: problems with the collection first, then the (last known) members."""
    if view.sharded:
        return "\n".join(cluster_lines(view))
    lines = [f"- {sentence}" for sentence in collection_problems(view)]
    if view.snapshot is not None:
        lines.extend(snapshot_lines(view.snapshot, last_known=view.current is None, trends=view.single))
    return "\n".join(lines)


def cluster_lines(view: View) -> list[str]:
    """Problems first (the cluster's, then each set's, worst set first), then the sets: every set that is not
    GREEN with its members in the replica-set wording; GREEN sets too while the cluster is small, else one line."""
    ranked = sorted(view.sets, key=lambda s: -s.status)
    lines = [f"- {sentence}" for sentence in cluster_problems(view)]
    lines += [f"- {sentence}" for each in ranked for sentence in set_problems(each)]
    quiet = [s for s in ranked if s.status is Status.GREEN]
    shown = ranked if len(view.sets) <= FULL_LISTING_MAX_SETS else [s for s in ranked if s.status is not Status.GREEN]
    for each in shown:
        lines.append(f"- {each.address.label}: {each.status.name}{_draining(each)}")
        if each.snapshot is not None:
            lines.extend(snapshot_lines(each.snapshot, last_known=each.current is None, trends=each))
    if len(shown) < len(view.sets):
        lines.append(_green_summary(quiet))
    return lines


def _draining(each: SetView) -> str:
    return " (draining: removeShard in progress)" if each.address.draining else ""


def _green_summary(quiet: list[SetView]) -> str:
    """One line for every GREEN set of a large cluster: how many, and the worst lag among them."""
    worst = max(
        (
            (m.lag_ms, each.address.label, m.name)
            for each in quiet
            for m in each.current.members
            if m.lag_ms is not None
        ),
        default=None,
    )
    text = f"- {len(quiet)} more set{'s' if len(quiet) != 1 else ''} GREEN"
    if worst is not None:
        text += f", worst replication lag {worst[0]}ms ({worst[1]}, {worst[2]})"
    return text


def data_timestamp_ms(view: View) -> int:
    """When the data shown was collected: the snapshot's time (the newest of a cluster's sets), else the
    failure's, else 0."""
    if view.sharded:
        collected = [s.snapshot.collected_at_ms for s in view.sets if s.snapshot is not None]
        if collected:
            return max(collected)
        return view.map_failure.at_ms if view.map_failure is not None else 0
    if view.snapshot is not None:
        return view.snapshot.collected_at_ms
    if view.failure is not None:
        return view.failure.at_ms
    return 0


def document_key(view: View) -> tuple:
    """What the document shows that changes between polls: the poll, the colour, and the sentences that print an
    age. Two views with the same key give the same document, so it is rendered once per key (web/app.py)."""
    return changing_sentences(view)


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
