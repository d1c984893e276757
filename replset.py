"""The lag engine: a replSetGetStatus document (plus the cached replSetGetConfig and the oplog lookups) in,
one immutable snapshot of the replica set out.

PURE: no I/O, no clock, no logging. Imports nothing of ours. Every reader (metrics, the Zero Problem document,
/liveness, the status page) reads the values defined here, so no two endpoints can disagree.
The rules, with their sources, are in the project's DOMAIN notes (README, "How lag is measured").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

YELLOW_AT_MS = 5_000
RED_AT_MS = 30_000


class Status(IntEnum):
    """Traffic-light status; the order is the severity, so `max()` gives the worst."""

    GREEN = 0
    YELLOW = 1
    RED = 2


# replSetGetStatus `state` codes (MongoDB manual, "Replica Set Member States").
STATE_NAMES = {
    0: "STARTUP",
    1: "PRIMARY",
    2: "SECONDARY",
    3: "RECOVERING",
    5: "STARTUP2",
    6: "UNKNOWN",
    7: "ARBITER",
    8: "DOWN",
    9: "ROLLBACK",
    10: "REMOVED",
}
PRIMARY, SECONDARY, ARBITER = 1, 2, 7


@dataclass(frozen=True)
class OplogProbe:
    """What the collector found in the primary's oplog for one lagging member (DOMAIN §6).

    `oldest_unapplied_wall_ms` is the `wall` of the first oplog entry after the member's `optime.ts`, or None
    when the member has applied everything. `error` is set (in words) when the lookup could not be made,
    e.g. no `read` on `local`; the engine then falls back to the naive value and says so.
    """

    oldest_unapplied_wall_ms: int | None = None
    error: str = ""


@dataclass(frozen=True)
class Member:
    """One member of the set as the engine judged it."""

    id: int
    name: str  # host:port, as the set's config spells it
    state: int
    state_str: str  # PRIMARY, SECONDARY, ARBITER, DOWN, ...
    healthy: bool
    is_self: bool  # the member that answered replSetGetStatus
    hidden: bool = False
    priority: float = 1.0
    votes: int = 1
    delay_ms: int = 0  # secondaryDelaySecs / slaveDelay, in ms
    raw_lag_ms: int | None = None  # behind the reference, before subtracting the delay
    lag_ms: int | None = None  # effective lag: max(0, raw - delay); None when the member has no usable optime
    precision: str | None = None  # "ms" (wall times / oplog) or "s" (optimeDate fallback); None without a lag
    lag_source: str | None = None  # "oplog", "wall" or "optimeDate"
    written_lag_ms: int | None = None  # 8.0+: behind the reference in oplog *written*
    sync_source: str = ""
    ping_ms: int | None = None
    status: Status = Status.GREEN
    reason: str = ""  # in words, when the member is not fine (or a note, e.g. an oplog fallback)

    @property
    def is_primary(self) -> bool:
        return self.state == PRIMARY

    @property
    def is_arbiter(self) -> bool:
        return self.state == ARBITER

    @property
    def is_data_bearing(self) -> bool:
        return self.state != ARBITER


@dataclass(frozen=True)
class Snapshot:
    """A whole replica set at one collection."""

    set_name: str
    answered_by: str  # host:port of the member that answered
    reference: str  # "primary" or "freshest" (no primary) or "" (no member to measure against)
    reference_member: str  # host:port of the reference member, "" when none
    has_primary: bool
    status: Status
    reasons: tuple[str, ...]  # why the status is not GREEN, worst first; empty when GREEN
    members: tuple[Member, ...]  # primary first, then by _id
    collected_at_ms: int  # the status document's `date`, ms since the epoch
    notes: tuple[str, ...] = field(default=())  # facts that do not change the status (e.g. oplog fallback)

    @property
    def max_lag_ms(self) -> int | None:
        lags = [m.lag_ms for m in self.members if m.lag_ms is not None]
        return max(lags) if lags else None


@dataclass(frozen=True)
class Failure:
    """A collection that produced no snapshot. `message` is in words and never holds a credential."""

    kind: str  # "auth", "unauthorized", "not_replica_set", "timeout", "unreachable", "error"
    message: str
    at_ms: int  # when it failed, ms since the epoch
    status: Status = Status.RED


def status_for_lag(lag_ms: int) -> Status:
    """The colour of one effective lag: GREEN < 5 000 ms <= YELLOW < 30 000 ms <= RED."""
    if lag_ms >= RED_AT_MS:
        return Status.RED
    if lag_ms >= YELLOW_AT_MS:
        return Status.YELLOW
    return Status.GREEN


def build_snapshot(
    status_doc: dict[str, Any],
    config_doc: dict[str, Any] | None = None,
    oplog: dict[str, OplogProbe] | None = None,
) -> Snapshot:
    """Judge one replSetGetStatus document.

    `config_doc` is the `config` sub-document of replSetGetConfig (members with hidden/priority/votes/delay);
    `oplog` maps a member name to what the primary's oplog said about it. Never raises on any document shape
    a server can produce: odd fields become reasons, not exceptions.
    """
    raise NotImplementedError  # the lag-engine issue fills this in
