"""What is wrong, as (kind, subject) pairs: each member or set that is not GREEN gives one `Problem` of one kind
("DOWN", "30 s or more behind", "no primary", "collection failed (timeout)", ...), and `shared` turns many
subjects of one kind into one entry, so a zone outage across 100 shards reads as one line, not a hundred.

`shared` knows nothing of members or sets: any grouping key plugs in (a member's cloud, region or zone, say), and
`names_words` says the first few names and counts the rest. The store keys "since when" by a problem's
`(kind, member)`, so a problem's age survives between polls while its kind stays the same.

PURE: imports `model` and `text`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from replicationlag.model import Failure, Member, NoteKind, Snapshot, Status, status_for_lag
from replicationlag.text import NAME_LIMIT, neutral

DOWN = "DOWN"
RED_BEHIND = "30 s or more behind"
YELLOW_BEHIND = "5 s or more behind"
HEADROOM_LOW = "low on oplog headroom"
NO_PRIMARY = "no primary"
INCOMPLETE = "status document incomplete"
STALE = "data stale"
NOT_COLLECTED = "not collected yet"

# The kinds that say why a member has no lag, in the words of the line (a state's own name is used as it is).
_NO_LAG = {
    NoteKind.NO_HEALTH: "without health reported",
    NoteKind.NO_STATE: "without a valid state",
    NoteKind.NO_OPTIME: "without a usable optime",
    NoteKind.NO_COMPARABLE_TIME: "without a comparable time",
    NoteKind.INITIAL_SYNC: "in initial sync",
}


@dataclass(frozen=True)
class Problem:
    """One thing that keeps a set from GREEN: what it makes the set, its kind, and whom it is about."""

    status: Status
    kind: str  # the words of its line, already neutral (a state name comes from the server)
    member: str = ""  # host:port as the engine spells it (raw), "" for the whole set
    lag_ms: int | None = None  # the member's effective lag, when the problem is its lag
    detail: str = ""  # raw words that say more (a failure's message)

    @property
    def key(self) -> tuple[str, str]:
        """What "since when" is kept by."""
        return (self.kind, self.member)


def member_kind(member: Member) -> str | None:
    """The kind of problem a member that is not GREEN has; None for a GREEN member."""
    if member.status is Status.GREEN:
        return None
    if member.has_note(NoteKind.DOWN) or (not member.healthy and not member.has_note(NoteKind.NO_HEALTH)):
        return DOWN
    for note in member.notes:
        if note.kind in _NO_LAG:
            return _NO_LAG[note.kind]
        if note.kind is NoteKind.STATE:
            return neutral(note.value("state") or member.state_str or f"state {member.state}", NAME_LIMIT)
    if member.lag_ms is not None and status_for_lag(member.lag_ms) is member.status:
        return RED_BEHIND if member.status is Status.RED else YELLOW_BEHIND
    if member.has_note(NoteKind.HEADROOM_LOW):
        return HEADROOM_LOW
    return RED_BEHIND if member.status is Status.RED else YELLOW_BEHIND


def snapshot_problems(snapshot: Snapshot) -> list[Problem]:
    """A collected set's problems: no primary, parts of its document unreadable, then each member not GREEN."""
    found = [Problem(Status.RED, NO_PRIMARY)] if not snapshot.has_primary else []
    found += [Problem(Status.RED, INCOMPLETE, detail=p) for p in snapshot.problems]
    for member in snapshot.members:
        kind = member_kind(member)
        if kind is not None:
            lag = member.lag_ms if kind in (RED_BEHIND, YELLOW_BEHIND) else None
            found.append(Problem(member.status, kind, member.name, lag))
    return found


def failure_problem(failure: Failure) -> Problem:
    return Problem(Status.RED, f"collection failed ({failure.kind})", detail=failure.message)


K = TypeVar("K", bound=Hashable)
S = TypeVar("S")


def shared(pairs: Iterable[tuple[K, S]]) -> list[tuple[K, list[S]]]:
    """(kind, subject) pairs -> one (kind, subjects) per kind: kinds in the order first seen, subjects in theirs."""
    grouped: dict[K, list[S]] = {}
    for kind, subject in pairs:
        grouped.setdefault(kind, []).append(subject)
    return list(grouped.items())


def names_words(names: Sequence[str], shown: int = 3, *, total: int | None = None) -> str:
    """`shard01, shard02, shard03 and 97 more`; `shard01 and shard02`; `shard01`. `total` counts names not given."""
    total = len(names) if total is None else total
    if total <= shown:
        return " and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{', '.join(names[:shown])} and {total - shown} more"


def plural(count: int, noun: str) -> str:
    """`1 member`, `2 members`; nouns ending in s stay (`2 config servers` is not said)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
