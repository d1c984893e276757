"""The Zero Problem bridge: one `View` of the store in, the status document (and the /liveness answer) out.

PURE: no I/O, no clock, no logging; the same view always gives the same document. Imports `danger` (its words),
`kinds`, `replset`, `store` and `trend` only. The web layer serves what this returns, and the status page reuses
its wording, so the document, /liveness and the page can never disagree about a member.
"""

from __future__ import annotations

import re
from typing import Any

from replicationlag.model import Member, NoteKind, Snapshot, Status
from replicationlag.store import SetView, View
from replicationlag.trend import Trend, trend_words
from replicationlag.words import duration_words

# The consumer is configured with this id, typo included: it must not be "corrected".
SERVICE_ID = "mhp.zeroproblem.mongo.replcationlag"
# A cluster of up to this many sets lists every set's members; a larger one lists the sets that are not GREEN
# and sums the GREEN ones up in one line, so the document stays readable at 100 shards.
FULL_LISTING_MAX_SETS = 4


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


def danger_words(member: Member, trend: Trend | None) -> list[str]:
    """For a YELLOW or RED member: which way its lag goes and when that matters, and its oplog headroom."""
    if member.status is Status.GREEN or member.lag_ms is None:
        return []
    full_source = member.sync_source_full is True
    words = [trend_words(trend, member.lag_ms, member.headroom_ms if full_source else None)] if trend else []
    if member.headroom_ms is not None and not member.has_note(NoteKind.HEADROOM_LOW):
        words.append(f"oplog headroom {duration_words(member.headroom_ms)}" + ("" if full_source else _NOT_FULL))
    return words


_NOT_FULL = " (the oplog is not full yet: not a limit)"


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


def collection_problems(view: View | SetView) -> list[str]:
    """The sentences that explain a RED caused by the exporter rather than the set: no data, failed or stale.

    Empty when the view (of a replica set, or of one set of a cluster) has current data. These come first in the
    document and on the status page.
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


SET_DANGER = frozenset({NoteKind.MAJORITY_COMMIT_LAG, NoteKind.FLOW_CONTROL_ENGAGED, NoteKind.PRIVILEGE_MISSING})


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


def cluster_problems(view: View) -> list[str]:
    """Sentences about the cluster as a whole: no poll yet, the map not read, sets or routers not watched."""
    if view.polls == 0:
        return ["No collection has finished yet"]
    sentences = []
    if view.map_failure is not None:
        if view.sets:
            age = f", read {int(view.map_age_s)} s ago" if view.map_age_s is not None else ""
            sentences.append(f"Shard map not read: {view.map_failure.message}; polling the last known map{age}")
        else:
            sentences.append(f"Shard map not read: {view.map_failure.message}")
    if not view.config_watched:
        sentences.append(
            f"The config server replica set is not watched: the routers gave the shards by {view.map_source}, "
            "which does not name it (getShardMap was refused)"
        )
    down = [r.address for r in view.routers if not r.reachable]
    if down:
        sentences.append(f"Router{'s' if len(down) > 1 else ''} not reachable: {', '.join(down)}")
    return sentences


def set_problems(each: SetView) -> list[str]:
    """Which set, which member, why: the collection's problems or the engine's reasons, each naming the set."""
    sentences = collection_problems(each) or (list(each.current.reasons) if each.current is not None else [])
    return [f"{each.address.label}: {sentence}" for sentence in sentences]


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
    age. Two views with the same key give the same document, so it is rendered once per key (web.py)."""
    if view.sharded:
        moving = [*cluster_problems(view), *(p for each in view.sets for p in collection_problems(each))]
    else:
        moving = collection_problems(view)
    return (view.polls, view.status, tuple(moving))


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
        "freshness_limit_s": view.freshness_limit_s,
        "collection_interval_s": view.interval_s,
        "polls": view.polls,
        "last_failure_kind": None if failure is None else failure.kind,
        "last_failure": None if failure is None else failure.message,
    }
    if view.sharded:
        document["sets"] = len(view.sets)
        document["sets_collected"] = sum(1 for s in view.sets if s.current is not None)
        document["shard_map_age_s"] = None if view.map_age_s is None else round(view.map_age_s, 3)
    if problems:
        document["reasons"] = problems
        return 503, document
    return 200, document


def duration_text(ms: int) -> str:
    """A configured delay as people write it: whole seconds when it is whole seconds."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
