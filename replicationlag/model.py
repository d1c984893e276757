"""The vocabulary every layer shares: statuses and their thresholds, why a poll failed, what lag is measured
against, the kinds of facts the engine states, members and snapshots of a replica set, where the sets of a sharded
cluster live, and what one poll yields. Values only: the lag engine (`replset`) makes them, readers read them.

PURE and imports nothing of ours and no third-party package. Adding a failure kind is one edit here: its liveness
meaning travels with it, metrics zero-initialise every kind, and /liveness judges every kind by that meaning
(tests/test_kinds.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

# Data older than 3 minutes is stale: RED in the document, 503 on /liveness. The user's rule; `config` refuses a
# poll interval that could not keep a healthy set's data younger than this.
FRESHNESS_LIMIT_S = 180


class FailureKind(StrEnum):
    """Why a poll produced no snapshot. The value is what readers show (`kind="auth"` in metrics and JSON).

    `stops_collecting`: the exporter cannot do its job now (no connection, refused credentials, not a replica
    set), so /liveness is 503 at once. The other kinds (a missed deadline, an odd answer) are RED in the
    document, but /liveness waits for the data to go stale: a primary that hangs for a few seconds must not get
    the exporter restarted.
    """

    stops_collecting: bool

    def __new__(cls, value: str, stops_collecting: bool) -> FailureKind:
        kind = str.__new__(cls, value)
        kind._value_ = value
        kind.stops_collecting = stops_collecting
        return kind

    AUTH = "auth", True  # wrong user name, password or authSource (code 18)
    UNAUTHORIZED = "unauthorized", True  # logged in, but a role is missing (code 13)
    NOT_REPLICA_SET = "not_replica_set", True  # a standalone, an uninitialised set, a mongos, another set
    TIMEOUT = "timeout", False  # the poll did not finish within its deadline
    UNREACHABLE = "unreachable", True  # no member could be reached
    ERROR = "error", False  # anything else the server or the driver said


class Reference(StrEnum):
    """What a set's lag is measured against (docs/domain.md §4)."""

    PRIMARY = "primary"
    FRESHEST = "freshest"  # no primary: the healthy data-bearing member with the newest optime
    NONE = ""  # no member to measure against


class NoteKind(StrEnum):
    """The kinds of facts the engine states about a member or a set. Readers choose by kind, never by words."""

    # Why a member is not GREEN.
    BEHIND = "behind"  # values: lag_ms, reference, reference_member, delay_ms
    DOWN = "down"  # not healthy; values: message
    NO_HEALTH = "no_health"
    NO_STATE = "no_state"
    STATE = "state"  # a non-data state such as RECOVERING; values: state, message
    NO_OPTIME = "no_optime"
    NO_COMPARABLE_TIME = "no_comparable_time"
    # Facts beside the lag that do not change a colour.
    APPLY_BOTTLENECK = "apply_bottleneck"  # 8.0: written far less behind than applied; values: written_lag_ms
    OPLOG_FALLBACK = "oplog_fallback"  # the exact measure could not be used; values: problem, source
    HEADROOM_LOW = "headroom_low"  # values: headroom_ms, window_ms, source
    INITIAL_SYNC = "initial_sync"  # values: progress, remaining_ms
    DANGER_UNREAD = "danger_unread"  # the oplog window (or initial sync) could not be read; values: why
    # Facts about the whole set.
    SEVERAL_PRIMARIES = "several_primaries"  # values: count, chosen
    CONFIG_UNREADABLE = "config_unreadable"
    DUPLICATE_NAME = "duplicate_name"  # members report one name; values: name, shown_as
    NO_DATE = "no_date"
    MAJORITY_COMMIT_LAG = "majority_commit_lag"  # values: lag_ms
    FLOW_CONTROL_ENGAGED = "flow_control_engaged"  # values: target_rate
    PRIVILEGE_MISSING = "privilege_missing"  # a read was refused; the text says what to grant
    # Clocks disagree (docs/domain.md §17); values: between ("members": the status date is behind_ms behind the
    # newest write the set reports, member is who answered, writer whose write it is; "poll_and_server": the
    # date is offset_ms from this exporter's clock during the poll, positive when the server's is ahead).
    CLOCK_SKEW = "clock_skew"


class SetRole(StrEnum):
    """What a replica set is to the cluster the exporter watches (docs/domain.md §11)."""

    REPLICA_SET = "replica_set"  # the URI named a replica set: the cluster is that one set
    SHARD = "shard"  # a shard of a sharded cluster
    CONFIG = "config"  # the config server set (from 8.0 it may hold data too: a config shard)


def wall_now_ms() -> int:
    """The wall clock in ms since the epoch: when a failure happened (the default of every `now_ms` injected)."""
    return time.time_ns() // 1_000_000


# Tag keys that say where a member lives (replSetGetConfig members[].tags, docs/domain.md §16), in the order the
# default grouping looks for them: operators' usual keys, then MongoDB Atlas's.
COMMON_LOCATION_TAGS = ("cloud", "provider", "region", "availabilityZone", "zone", "dc", "rack")
MAX_TAGS_PER_MEMBER = 8  # more tags on a member are not kept (sorted by key, the first 8)
MAX_TAG_CHARS = 64  # a tag key or value is cut to this many characters


# --- Statuses and thresholds. ---

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
PRIMARY, SECONDARY, RECOVERING, STARTUP2, ARBITER = 1, 2, 3, 5, 7


@dataclass(frozen=True)
class Note:
    """One fact the engine states, with its kind and values; `text` is the engine's words for people.

    `member` is the host:port the fact is about, "" for the whole set. `str(note)` names the member, for lists
    of the whole set's facts.
    """

    kind: NoteKind
    text: str
    member: str = ""
    values: tuple[tuple[str, Any], ...] = ()

    def value(self, key: str, default: Any = None) -> Any:
        return dict(self.values).get(key, default)

    def __str__(self) -> str:
        return f"{self.member}: {self.text}" if self.member else self.text


def texts(notes: tuple[Note, ...]) -> tuple[str, ...]:
    """The notes as people read them."""
    return tuple(str(note) for note in notes)


@dataclass(frozen=True)
class OplogProbe:
    """What the collector found in the primary's oplog for one lagging member (docs/domain.md §6).

    `oldest_unapplied_wall_ms` is the `wall` of the first oplog entry after the member's `optime.ts`, or None
    when the member has applied everything. `error` is set (in words) when the lookup could not be made,
    e.g. no `read` on `local`; the engine then falls back to the naive value and says so.
    """

    oldest_unapplied_wall_ms: int | None = None
    error: str = ""


@dataclass(frozen=True)
class OplogWindow:
    """The span a member's oplog holds (docs/domain.md §12), from its own oldest and newest entries."""

    window_ms: int  # wall of the newest entry - wall of the oldest, exact ms
    full: bool | None  # size reached its configured maximum; None when the sizes could not be read
    size_bytes: int | None = None
    max_size_bytes: int | None = None


@dataclass(frozen=True)
class InitialSync:
    """A member's initial sync as its own replSetGetStatus tells it (docs/domain.md §14); None where untold."""

    elapsed_ms: int | None = None
    copied_bytes: int | None = None  # 5.2+
    total_bytes: int | None = None  # 5.2+
    remaining_ms: int | None = None  # 5.2+: the server's own estimate
    databases_cloned: int | None = None
    databases_total: int | None = None
    failed_attempts: int | None = None

    @property
    def progress(self) -> float | None:
        """Bytes copied of the total (0..1), else databases cloned of the total, else None."""
        if self.copied_bytes is not None and self.total_bytes:
            return min(1.0, self.copied_bytes / self.total_bytes)
        if self.databases_cloned is not None and self.databases_total:
            return min(1.0, self.databases_cloned / self.databases_total)
        return None


@dataclass(frozen=True)
class FlowControl:
    """The primary's `serverStatus().flowControl` (docs/domain.md §13); counters are cumulative."""

    enabled: bool
    engaged: bool  # isLagged: the primary throttles writes now
    target_rate: int | None = None  # targetRateLimit: tickets (about ops) per second while engaged
    lagged_count: int | None = None  # isLaggedCount
    lagged_time_s: float | None = None  # isLaggedTimeMicros, in seconds
    acquiring_time_s: float | None = None  # timeAcquiringMicros, in seconds


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
    uptime_s: int | None = None  # replSetGetStatus `uptime`: it falls back when the member's process restarts
    status: Status = Status.GREEN
    notes: tuple[Note, ...] = ()  # why the member is not fine, and facts beside its lag (an oplog fallback)
    # How dangerous the lag is (danger.py fills these in from the extra reads of a poll).
    oplog: OplogWindow | None = None
    headroom_ms: int | None = None  # the sync source's window minus the raw lag (docs/domain.md §12)
    sync_source_full: bool | None = None  # whether that window is a limit yet (a not-yet-full oplog is not)
    initial_sync: InitialSync | None = None
    # replSetGetConfig members[].tags (where it lives: cloud, region, zone, ...): sorted by key, bounded.
    tags: tuple[tuple[str, str], ...] = ()
    # The config says arbiterOnly: an arbiter whatever its state (a down arbiter reports state 8 DOWN, not 7).
    arbiter_only: bool = False

    @property
    def reason(self) -> str:
        """The notes in words, one sentence; empty when there is nothing to say."""
        return "; ".join(note.text for note in self.notes)

    def tag(self, key: str) -> str | None:
        return dict(self.tags).get(key)

    def has_note(self, kind: NoteKind) -> bool:
        return any(note.kind is kind for note in self.notes)

    @property
    def is_primary(self) -> bool:
        return self.state == PRIMARY

    @property
    def is_arbiter(self) -> bool:
        return self.state == ARBITER or self.arbiter_only

    @property
    def is_data_bearing(self) -> bool:
        return not self.is_arbiter


@dataclass(frozen=True)
class Snapshot:
    """A whole replica set at one collection."""

    set_name: str
    answered_by: str  # host:port of the member that answered
    reference: Reference
    reference_member: str  # host:port of the reference member, "" when none
    has_primary: bool
    status: Status
    reasons: tuple[str, ...]  # why the status is not GREEN, worst first; empty when GREEN
    members: tuple[Member, ...]  # primary first, then by _id
    collected_at_ms: int  # the status document's `date`, ms since the epoch
    notes: tuple[Note, ...] = field(default=())  # facts that do not change the status (e.g. oplog fallback)
    majority_commit_lag_ms: int | None = None  # on the primary: applied minus majority-committed wall time
    flow_control: FlowControl | None = None
    problems: tuple[str, ...] = ()  # what could not be read in the document (each makes the set RED)

    @property
    def max_lag_ms(self) -> int | None:
        lags = [m.lag_ms for m in self.members if m.lag_ms is not None]
        return max(lags) if lags else None


@dataclass(frozen=True)
class Failure:
    """A collection that produced no snapshot. `message` is in words and never holds a credential."""

    kind: FailureKind
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


# --- Where the sets of a sharded cluster live. ---


@dataclass(frozen=True)
class SetAddress:
    """Where one replica set of the cluster lives and what it is to the cluster."""

    name: str  # the replica-set name
    hosts: tuple[str, ...]  # host:port seeds, as the router spells them
    role: SetRole
    shard_id: str = ""  # the shard's _id; "config" for the config servers; "" for a plain replica set
    draining: bool = False  # removeShard has started and the balancer is moving its chunks away

    @property
    def label(self) -> str:
        """How people name the set: `shard03 (rs shard03rs)`, `config servers (rs configRepl)`, or the set name."""
        if self.role is SetRole.REPLICA_SET:
            return self.name
        owner = "config servers" if self.role is SetRole.CONFIG else self.shard_id
        return f"{owner} (replica set {self.name})"


@dataclass(frozen=True)
class ShardMap:
    """The sets to watch: the shards in shard-id order, then the config server set (when known)."""

    sets: tuple[SetAddress, ...]
    source: str  # the command that gave it: "getShardMap", "listShards" or "config.shards"
    config_watched: bool  # False when only listShards/config.shards answered: they do not name the config set

    def names(self) -> frozenset[str]:
        return frozenset(s.name for s in self.sets)


# --- What one poll yields. ---


@dataclass(frozen=True)
class RouterState:
    address: str  # host:port of a mongos
    reachable: bool  # its last heartbeat succeeded


@dataclass(frozen=True)
class ClusterResult:
    """One poll of a sharded cluster: the map it used and one result per set of that map."""

    map: ShardMap | None  # the map read this poll, or the last known one; None when none was ever read
    map_failure: Failure | None  # why the map could not be read this poll (then `map` is the last known one)
    sets: tuple[tuple[SetAddress, Snapshot | Failure], ...]
    routers: tuple[RouterState, ...] = ()
