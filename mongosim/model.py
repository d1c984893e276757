"""The state of a simulated replica set: members, version profiles, the clock and a lazily computed oplog.

Nothing here does I/O or knows about sockets: the server reads this state to answer commands, the public
`ReplicaSet` changes it (always on the event-loop thread, so a document is never built from a half-made change).

The oplog is never stored entry by entry. It is a list of write *segments* (continuous traffic; idle, where the
primary writes a no-op every 10 s unless something else was written since the previous tick, as mongod's
NoopWriter does; a fixed rate; or stopped while there is no primary) plus the explicit writes; every question about it
("how many entries up to wall ms w", "the n-th entry") is answered arithmetically, so an hour of 2 000 ops/s costs
nothing. Entry n has the ts `Timestamp(wall // 1000, its rank within that second)`, as a real server assigns it.

A member's replication lag L is an *apply delay*: at time `now` it has applied the first entry written at wall
`now - L` (or the last one before, when nothing was written in that millisecond); L = 0 means caught up. A delayed
member (secondaryDelaySecs) is never less behind than its delay, and a member that syncs from another secondary
is never ahead of its source, like real ones.

The majority commit point is derived: the newest entry that `writeMajorityCount` voting data-bearing members have
made durable. A member that stopped acknowledging (down, hung, starting, in initial sync, just added) counts with
what it had acknowledged when it stopped, so its absence makes the commit point stall, never go back. Controls
that set a lag describe a steady state ("this member is, and has been, L behind"), so the commit point follows
them at once, backwards too. Flow control and initial syncs that finish on their own have a history, so
`settle(now)` folds in what the clock did since the last look; every command and every control calls it first.

Imports `bson`, `.flowcontrol`, `.initialsync`, `.scram` and the standard library only.
"""

from __future__ import annotations

import bisect
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from bson import ObjectId, Timestamp

from .flowcontrol import FlowSettings, FlowState, Probe
from .initialsync import InitialSync
from .scram import User

# replSetGetStatus member states (MongoDB manual, "Replica Set Member States").
STARTUP, PRIMARY, SECONDARY, RECOVERING = 0, 1, 2, 3
STARTUP2, UNKNOWN, ARBITER, DOWN, ROLLBACK, REMOVED = 5, 6, 7, 8, 9, 10
STATE_NAMES = {
    STARTUP: "STARTUP",
    PRIMARY: "PRIMARY",
    SECONDARY: "SECONDARY",
    RECOVERING: "RECOVERING",
    STARTUP2: "STARTUP2",
    UNKNOWN: "UNKNOWN",
    ARBITER: "ARBITER",
    DOWN: "(not reachable/healthy)",
    ROLLBACK: "ROLLBACK",
    REMOVED: "REMOVED",
}
# States a test may put a data member into with set_state (PRIMARY goes through elect, DOWN through take_down).
SETTABLE_STATES = dict(
    STARTUP=STARTUP, STARTUP2=STARTUP2, RECOVERING=RECOVERING, ROLLBACK=ROLLBACK, SECONDARY=SECONDARY
)

NOOP_INTERVAL_MS = 10_000  # periodicNoopIntervalSecs
DAY_MS = 24 * 3600 * 1000
HISTORY_MS = 7 * DAY_MS  # default: the set was initiated a week before it starts (initiated_ago_ms)
# Oplog accounting: every entry counts as this many bytes (a mongosim insert entry is 143 BSON bytes from 5.0 on),
# and each member's oplog holds, by default, exactly one day of the default traffic (2 entries per ms) plus one.
DEFAULT_ENTRY_BYTES = 143
DEFAULT_OPLOG_BYTES = (2 * DAY_MS + 1) * DEFAULT_ENTRY_BYTES
MAX_RATE_OPS = 10_000  # write_rate() ceiling: keeps a second of oplog cheap to reason about


# --- clocks ---------------------------------------------------------------------------------------------------


class RealClock:
    """Wall-clock time in ms since the epoch."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to: `advance(ms)` or `set(ms)`. Thread-safe; never goes backwards."""

    def __init__(self, start_ms: int | None = None) -> None:
        self._ms = RealClock().now_ms() if start_ms is None else int(start_ms)
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        return self._ms

    def advance(self, ms: int) -> int:
        if ms < 0:
            raise ValueError("a ManualClock never goes backwards")
        with self._lock:
            self._ms += int(ms)
            return self._ms

    def set(self, ms: int) -> None:
        with self._lock:
            if ms < self._ms:
                raise ValueError("a ManualClock never goes backwards")
            self._ms = int(ms)


# --- version profiles -----------------------------------------------------------------------------------------


@functools.cache
def _version_tuple(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split("."))


@dataclass(frozen=True)
class Profile:
    """What one server version looks like on the wire (docs/domain.md §1)."""

    name: str
    version: str
    max_wire: int

    def at_least(self, other: str) -> bool:
        return _version_tuple(self.name) >= _version_tuple(other)

    @property
    def wall_times(self) -> bool:  # member lastAppliedWallTime (4.4.11+)
        return self.at_least("4.4")

    @property
    def syncing_to(self) -> bool:  # deprecated `syncingTo`, gone in 4.4
        return not self.at_least("4.4")

    @property
    def written(self) -> bool:  # optimeWritten / lastWrittenWallTime
        return self.at_least("8.0")

    @property
    def streaming(self) -> bool:  # topologyVersion + awaitable hello
        return self.at_least("4.4")

    @property
    def delay_field(self) -> str:
        return "secondaryDelaySecs" if self.at_least("5.0") else "slaveDelay"


PROFILES = {
    p.name: p
    for p in (
        Profile("4.0", "4.0.28", 7),
        Profile("4.4", "4.4.29", 9),
        Profile("5.0", "5.0.28", 13),
        Profile("6.0", "6.0.19", 17),
        Profile("7.0", "7.0.14", 21),
        Profile("8.0", "8.0.4", 25),
    )
}


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown version profile {name!r}; known: {', '.join(PROFILES)}") from None


# --- the oplog ------------------------------------------------------------------------------------------------


@dataclass
class _Segment:
    """Writes between two mode changes; `end` is the last wall ms it covers (None while it is the current one)."""

    kind: str  # "traffic" (2 entries per ms), "idle" (a no-op every 10 s), "rate", "stopped"
    start: int
    end: int | None = None
    anchor: int = 0  # idle: no-ops at anchor + 10 s * k, k >= 1
    rate: Fraction = Fraction(0)  # rate: ops per second
    base: int = 0  # entries in all earlier segments
    # idle: ticks with no no-op, because something else was written in the 10 s before them (the NoopWriter
    # writes only when the last applied optime has not moved since its previous tick)
    skipped: list[int] = field(default_factory=list)

    def count_le(self, w: int) -> int:
        """Entries of this segment with wall <= w."""
        if w < self.start:
            return 0
        if self.end is not None:
            w = min(w, self.end)
        if self.kind == "traffic":
            return 2 * (w - self.start + 1)
        if self.kind == "idle":
            ticks = (w - self.anchor) // NOOP_INTERVAL_MS
            return ticks - bisect.bisect_right(self.skipped, ticks) if ticks > 0 else 0
        if self.kind == "rate":
            num, den = self.rate.numerator, self.rate.denominator
            return ((w - self.start + 1) * num - 1) // (1000 * den) + 1
        return 0


@dataclass(frozen=True)
class Entry:
    """One oplog entry: its ordinal (1-based, over the whole oplog), wall ms, ts, term and kind."""

    n: int
    wall: int
    ts: Timestamp
    term: int
    kind: str  # "initiate" (the first), "traffic", "noop" (periodic), "new_primary", "write"
    doc: dict[str, Any] | None = None  # explicit writes only: {"ns": ..., "o": ...}


class Oplog:
    """The primary's oplog, computed on demand from the write schedule."""

    def __init__(self, start_ms: int, mode: str = "traffic", rate: float = 0.0) -> None:
        self.start_ms = start_ms
        self._segments: list[_Segment] = []
        self._starts: list[int] = []
        self._write_walls: list[int] = []
        self._write_docs: list[tuple[str, dict[str, Any]]] = []
        self._terms: list[tuple[int, int]] = [(1, 1)]  # (first ordinal, term)
        self._open(mode, start_ms, anchor=start_ms - 1, rate=rate)

    @property
    def mode(self) -> str:
        return self._segments[-1].kind

    def _open(self, kind: str, start: int, anchor: int, rate: float = 0.0) -> None:
        if kind == "rate" and not 0 < rate <= MAX_RATE_OPS:
            raise ValueError(f"write rate must be in (0, {MAX_RATE_OPS}] ops/s")
        base = self._segments[-1].base + self._segments[-1].count_le(start - 1) if self._segments else 0
        seg = _Segment(kind, start, anchor=anchor, rate=Fraction(rate).limit_denominator(1000), base=base)
        self._segments.append(seg)
        self._starts.append(start)

    def switch(self, kind: str, now: int, rate: float = 0.0) -> None:
        """From `now + 1` on, write in another mode (entries up to `now` are history and keep their ts)."""
        current = self._segments[-1]
        if now < current.start:  # nothing written in the current segment yet: replace it
            self._segments.pop()
            self._starts.pop()
            self._open(kind, current.start, anchor=now, rate=rate)
            return
        current.end = now
        self._open(kind, now + 1, anchor=now, rate=rate)

    def write(self, now: int, kind: str = "write", ns: str = "app.events", o: dict[str, Any] | None = None) -> Entry:
        """Append one explicit entry at wall `now` (after any segment entries of that same millisecond)."""
        if self._write_walls and now < self._write_walls[-1]:
            raise ValueError("writes must not go back in time")
        self._write_walls.append(now)
        self._write_docs.append((kind, {"ns": ns, "o": dict(o or {})}))
        seg = self._segments[-1]
        if seg.kind == "idle" and now >= seg.anchor:
            tick = (now - seg.anchor) // NOOP_INTERVAL_MS + 1  # the next tick sees the optime moved: no no-op
            if not seg.skipped or seg.skipped[-1] != tick:
                seg.skipped.append(tick)
        return self.entry(self.count_le(now), now)

    def new_term(self, term: int, now: int) -> None:
        """Entries written after `now` (by ordinal) carry `term`."""
        self._terms.append((self.count_le(now) + 1, term))

    def _segment_count_le(self, w: int) -> int:
        i = bisect.bisect_right(self._starts, w) - 1
        if i < 0:
            return 0
        seg = self._segments[i]
        return seg.base + seg.count_le(w)

    def count_le(self, w: int) -> int:
        """How many entries have wall <= w."""
        return self._segment_count_le(w) + bisect.bisect_right(self._write_walls, w)

    def _wall_of(self, n: int, hi: int) -> int:
        # Gallop back from `hi` first: the entries asked about are nearly always recent.
        lo, step = self.start_ms, 1
        while hi - step > lo and self.count_le(hi - step) >= n:
            hi -= step
            step *= 2
        lo = max(lo, hi - step)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.count_le(mid) >= n:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def entry(self, n: int, hi: int) -> Entry:
        """The n-th entry (1-based); `hi` is a wall ms at or after it (usually "now")."""
        if not 1 <= n <= self.count_le(hi):
            raise IndexError(f"no oplog entry {n} at or before wall {hi}")
        wall = self._wall_of(n, hi)
        before_ms = self.count_le(wall - 1)
        second_start = self.count_le(wall // 1000 * 1000 - 1)
        ts = Timestamp(wall // 1000, n - second_start)
        rank = n - before_ms - 1  # position within its millisecond
        seg_here = self._segment_count_le(wall) - self._segment_count_le(wall - 1)
        term = self._terms[bisect.bisect_right(self._terms, (n, float("inf"))) - 1][1]
        if rank < seg_here:
            seg = self._segments[bisect.bisect_right(self._starts, wall) - 1]
            kind = "initiate" if n == 1 else "noop" if seg.kind == "idle" else "traffic"
            return Entry(n, wall, ts, term, kind)
        index = bisect.bisect_left(self._write_walls, wall) + rank - seg_here
        kind, doc = self._write_docs[index]
        return Entry(n, wall, ts, term, kind, doc)

    def last_at_or_before(self, w: int) -> Entry | None:
        n = self.count_le(w)
        return self.entry(n, w) if n else None

    def position(self, now: int, lag_ms: int) -> int:
        """The ordinal a member with apply delay `lag_ms` has reached at `now` (0: nothing)."""
        if lag_ms <= 0:
            return self.count_le(now)
        w = now - lag_ms
        before = self.count_le(w - 1)
        # First entry of ms w when there is one, so the next unapplied entry is exactly lag_ms old.
        return before + 1 if self.count_le(w) > before else before

    def ordinal_after(self, ts: Timestamp) -> int:
        """Ordinal of the first entry whose ts is greater than `ts` (that entry may not be written yet)."""
        second_start = ts.time * 1000
        before_second = self.count_le(second_start - 1)
        in_second = self.count_le(second_start + 999) - before_second
        return before_second + min(ts.inc, in_second) + 1


# --- members and the set --------------------------------------------------------------------------------------


@dataclass
class Member:
    """One member as configured and as it behaves."""

    id: int
    port: int
    name: str
    arbiter: bool = False
    priority: float = 1.0
    votes: int = 1
    hidden: bool = False
    delay_secs: int = 0
    lag_ms: int = 0
    written_lag_ms: int | None = None  # 8.0: oplog written ahead of applied; None = same as applied
    state: int = SECONDARY  # the member's own state while up (PRIMARY/SECONDARY/ARBITER/RECOVERING/...)
    up: bool = True
    hang: str | None = None  # None, "after_accept", "before_accept"
    version: str = "7.0"
    sync_source: int | None = None  # member id; None = the primary
    started_ms: int = 0
    down_since_ms: int = 0
    process_id: ObjectId = field(default_factory=ObjectId)
    tags: dict[str, str] = field(default_factory=dict)
    ping_ms: int | None = None  # the pingMs the others report for it; None: its _id % 3
    oplog_max_bytes: int = DEFAULT_OPLOG_BYTES  # --oplogSize / replSetResizeOplog
    oplog_min_retention_ms: int = 0  # oplogMinRetentionHours (4.4+)
    oplog_floor_n: int = 1  # its oplog never held anything older (an initial sync starts it afresh)
    # Its own clock minus the set's: what it reports as "now" (replSetGetStatus `date`, `localTime`) is the set's
    # clock plus this. The oplog's wall times stay the set's clock: a clock stepped after the writes shown.
    clock_offset_ms: int = 0
    # mongod's failCommand failpoint (configureFailPoint, test servers only): command name -> the error code it
    # answers with, once authenticated.
    fail_commands: dict[str, int] = field(default_factory=dict)
    initial_sync: InitialSync | None = None
    acked_until_ms: int | None = None  # stopped acknowledging then (STARTUP, STARTUP2, initial sync); None: it acks
    # What serverStatus reports; the server counts them.
    stats: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("current", "total", "requests", "bytes_in", "bytes_out"), 0)
    )

    @property
    def apply_delay_ms(self) -> int:
        """How far behind the primary it applies: its lag, and never less than its configured delay."""
        return max(self.lag_ms, self.delay_secs * 1000)

    @property
    def reachable(self) -> bool:
        return self.up and self.hang is None

    @property
    def data_bearing(self) -> bool:
        return not self.arbiter


def acks(member: Member) -> bool:
    """Whether a data member acknowledges writes: not while it starts or runs an initial sync."""
    return member.data_bearing and member.initial_sync is None and member.state not in (STARTUP, STARTUP2)


class SetModel:
    """The whole replica set. Mutated only through its methods, which keep the invariants a real set has."""

    def __init__(
        self,
        name: str,
        clock: Any,
        version: str = "7.0",
        *,
        mode: str = "traffic",
        rate: float = 0.0,
        initiated_ago_ms: int = HISTORY_MS,
    ) -> None:
        profile(version)
        if initiated_ago_ms < 1:
            raise ValueError("initiated_ago_ms must be >= 1: the set was initiated before it starts")
        self.name = name
        self.clock = clock
        self.members: dict[int, Member] = {}
        self.topology = "replset"  # or "standalone", "uninitialized"
        now = clock.now_ms()
        self.created_ms = now
        self.initiated_ms = now - initiated_ago_ms  # wall of the first oplog entry, "initiating set"
        self.oplog = Oplog(self.initiated_ms, mode, rate)
        self.entry_bytes = DEFAULT_ENTRY_BYTES
        self.write_mode = mode
        self.write_rate = rate
        self.term = 1
        self.primary_id: int | None = None
        self.prior_primary_id: int | None = None
        # the first primary was elected well before the set "started" (halfway through its history)
        self.election_ms = now - min(HISTORY_MS, initiated_ago_ms) // 2
        self.election_n = self.oplog.count_le(self.election_ms)
        self.election_commit_n = self.election_n
        self.new_term_n = 0  # ordinal of the "new primary" entry of the last elect(); 0 for the first primary
        self.w_majority_ms: int | None = self.election_ms + 173  # when that entry became majority-committed
        self.w_majority_checked_ms = self.election_ms
        self.commit_lag_ms: int | None = None  # set_commit_lag(): the commit point trails at least this much
        self.flow_settings = FlowSettings()
        self.flow: dict[tuple[int, ObjectId], FlowState] = {}  # per member process
        self.settled_ms = now
        self.config_version = 1
        self.config_term = 1
        self.topology_counter = 0
        self.replica_set_id = ObjectId()
        self.users: dict[tuple[str, str], User] = {}
        self.connection_ids = 0
        self.on_change: Callable[[], None] = lambda: None

    # -- lookups --

    def now(self) -> int:
        return self.clock.now_ms()

    def member(self, ref: int | str | Member) -> Member:
        """A member by `_id`, by name ("127.0.0.1:PORT") or the Member itself."""
        if isinstance(ref, Member):
            ref = ref.id
        if isinstance(ref, bool):
            raise TypeError("member reference must be an _id or a host:port name")
        if isinstance(ref, int):
            if ref in self.members:
                return self.members[ref]
        else:
            for m in self.members.values():
                if m.name == ref:
                    return m
        raise KeyError(f"no member {ref!r} in set {self.name!r}")

    @property
    def primary(self) -> Member | None:
        return self.members.get(self.primary_id) if self.primary_id is not None else None

    def profile_of(self, member: Member) -> Profile:
        return PROFILES[member.version]

    @property
    def fcv_profile(self) -> Profile:
        """The lowest member version decides the config's field names, like the featureCompatibilityVersion."""
        return min((PROFILES[m.version] for m in self.members.values()), key=lambda p: p.max_wire)

    def voting(self) -> list[Member]:
        return [m for m in self.members.values() if m.votes > 0]

    # -- the oplog as each member sees it --

    def last_written(self, now: int) -> int:
        """Ordinal of the newest entry the primary has written (the oplog stops while there is no primary)."""
        return self.oplog.count_le(now)

    def sync_source_of(self, member: Member) -> Member | None:
        """The member `member` replicates from: its initial-sync source while it runs one; else the one chosen
        with set_sync_source while that one can serve (up, PRIMARY or SECONDARY), else the primary."""
        if member.arbiter or member.id == self.primary_id or not member.reachable:
            return None
        if member.initial_sync is not None:
            source = self.members.get(member.initial_sync.source_id)
            return source if source is not None and source.reachable else None
        if member.state in (STARTUP, STARTUP2):
            return None
        chosen = self.members.get(member.sync_source) if member.sync_source is not None else None
        if chosen is not None and chosen.id != member.id and self.can_serve(chosen):
            return chosen
        primary = self.primary
        return primary if primary is not None and primary.reachable and primary.id != member.id else None

    def can_serve(self, member: Member) -> bool:
        """Whether another member may replicate from `member`."""
        return (
            member.data_bearing
            and member.reachable
            and member.initial_sync is None
            and member.state in (PRIMARY, SECONDARY)
        )

    def delay_ms(self, member: Member, written: bool = False) -> int:
        """How far behind the primary `member` applies (writes, with `written`): its own lag and delay, and never
        less than its sync source's, since it cannot be ahead of the member it copies from."""
        own = member.apply_delay_ms
        if written and member.written_lag_ms is not None:
            own = min(own, member.written_lag_ms)
        source = self.sync_source_of(member)
        if source is None or source.id == self.primary_id:
            return own
        return max(own, self.delay_ms(source, written))  # set_sync_source refuses cycles

    def applied_n(self, member: Member, now: int, written: bool = False) -> int:
        """Ordinal of the last entry `member` has applied (or, with `written`, written to its oplog; 8.0)."""
        if member.arbiter:
            return 0
        if member.id == self.primary_id:
            return self.last_written(now)
        return self.oplog.position(now, self.delay_ms(member, written))

    def applied(self, member: Member, now: int, written: bool = False) -> Entry | None:
        n = self.applied_n(member, now, written)
        return self.oplog.entry(n, now) if n else None

    def durable_n(self, member: Member, t: int, written: bool | None = None) -> int:
        """What `member` has acknowledged at `t`: its durable entry (written = durable in 8.0, applied before),
        frozen at what it had when it went down, hung, or stopped acknowledging (STARTUP, STARTUP2)."""
        if member.arbiter:
            return 0
        if not member.reachable:
            t = min(t, member.down_since_ms)
        if member.initial_sync is not None or member.state in (STARTUP, STARTUP2):
            t = min(t, self.created_ms if member.acked_until_ms is None else member.acked_until_ms)
        if written is None:
            written = self.profile_of(member).written
        return self.applied_n(member, t, written)

    def _majority_n(self, t: int) -> int:
        """The newest ordinal writeMajorityCount voting data members have made durable at `t`."""
        voting = self.voting()
        writers = [x for x in voting if x.data_bearing]
        if not writers:
            return 0
        needed = min(len(voting) // 2 + 1, len(writers))
        n = sorted((self.durable_n(x, t) for x in writers), reverse=True)[needed - 1]
        if self.commit_lag_ms is not None:
            n = min(n, self.oplog.position(t, self.commit_lag_ms))
        return n

    def commit_n(self, now: int) -> int:
        """Ordinal of the majority commit point (0: none)."""
        return self._majority_n(now)

    def commit_point(self, now: int) -> Entry | None:
        """The newest entry a majority of the voting data members has made durable."""
        n = self.commit_n(now)
        return self.oplog.entry(n, now) if n else None

    # -- history: what the clock did since the last look --

    def settle(self, now: int) -> None:
        """Fold in everything that happened up to `now`: initial syncs that finished, flow control's ticks and
        when w:majority became available after an election. Called before every command and every control, so
        between two calls only the clock moves (and the commit point only moves forward)."""
        while True:
            due = [x for x in self.members.values() if x.initial_sync is not None and x.initial_sync.done_ms <= now]
            if not due:
                break
            member = min(due, key=lambda x: x.initial_sync.done_ms if x.initial_sync else 0)
            assert member.initial_sync is not None
            self._advance(member.initial_sync.done_ms)
            self._finish_initial_sync(member)
        self._advance(now)

    def _advance(self, t: int) -> None:
        if t < self.settled_ms:
            return
        for member in self.members.values():
            if member.up and member.data_bearing:
                self._flow_state(member).advance(t, member.id == self.primary_id, self.flow_settings, self._probe())
        self._track_w_majority(t)
        self.settled_ms = t

    def _flow_state(self, member: Member) -> FlowState:
        key = (member.id, member.process_id)
        state = self.flow.get(key)
        if state is None:
            since = max(member.started_ms, self.settled_ms)
            state = FlowState(last_tick_ms=since - (since - member.started_ms) % 1000)
            self.flow = {k: v for k, v in self.flow.items() if k[0] != member.id}  # the old process is gone
            self.flow[key] = state
        return state

    def flow_section(self, member: Member) -> dict[str, Any]:
        """serverStatus.flowControl of `member` (settled up to now by the caller)."""
        return self._flow_state(member).section(self.flow_settings)

    def _probe(self) -> Probe:
        """Flow control's view of the set at an instant of the span being settled (the primary is the node)."""

        def lag(t: int) -> tuple[int, int]:
            last, committed = self.last_written(t), self._majority_n(t)
            if last == 0:
                return 0, 0
            committed_wall = self.oplog.entry(committed, t).wall if committed else 0
            return self.oplog.entry(last, t).wall - committed_wall, last - committed

        def sustainer_ops(t: int) -> int:
            members = sorted(self.members.values(), key=lambda x: self.durable_n(x, t, written=False))
            median = members[len(members) // 2]
            return self.durable_n(median, t, written=False) - self.durable_n(median, t - 1000, written=False)

        return Probe(lag, sustainer_ops)

    def _track_w_majority(self, t: int) -> None:
        """Find when the last election's "new primary" entry became majority-committed (the commit point only
        grows between two looks, so bisect the milliseconds since the last check)."""
        if self.w_majority_ms is not None or self.new_term_n == 0:
            return

        def committed(x: int) -> bool:
            return self._majority_n(x) >= self.new_term_n

        lo, hi = self.w_majority_checked_ms + 1, t
        if lo > hi or not committed(hi):
            self.w_majority_checked_ms = max(self.w_majority_checked_ms, t)
            return
        while lo < hi:
            mid = (lo + hi) // 2
            if committed(mid):
                hi = mid
            else:
                lo = mid + 1
        self.w_majority_ms = lo

    # -- initial sync --

    def start_initial_sync(
        self, ref: int | str | Member, total_bytes: int, bytes_per_s: int, source: int | str | None = None
    ) -> None:
        """`ref` wipes its data and copies it again from `source` (default: its sync source, else the primary):
        STARTUP2 until the copy is done, then SECONDARY with an oplog that starts where the copy began."""
        member = self.member(ref)
        if member.arbiter or member.id == self.primary_id or not member.up:
            raise ValueError(f"{member.name} is an arbiter, the primary or down: it cannot run an initial sync")
        if source is not None:
            chosen = self.member(source)
        else:
            chosen = self.sync_source_of(member) if member.initial_sync is None else None
            chosen = chosen or self.primary
        if chosen is None or chosen.id == member.id or not self.can_serve(chosen):
            raise ValueError("an initial sync needs a sync source that is up and PRIMARY or SECONDARY")
        now = self.now()
        begin = self.applied_n(chosen, now)  # the sync source's last applied entry: where the copy's oplog starts
        if acks(member):
            member.acked_until_ms = now
        member.initial_sync = InitialSync(now, int(total_bytes), int(bytes_per_s), chosen.id, begin)
        member.state = STARTUP2
        self.changed()

    def _finish_initial_sync(self, member: Member) -> None:
        sync = member.initial_sync
        assert sync is not None
        member.initial_sync, member.acked_until_ms = None, None
        member.state = SECONDARY
        member.oplog_floor_n = max(1, sync.oplog_start_n)
        self.changed()

    # -- changes --

    def changed(self) -> None:
        """Something hello reports changed: bump topologyVersion and wake awaitable hellos."""
        self.topology_counter += 1
        self.on_change()

    def reconfigured(self) -> None:
        self.config_version += 1
        self.changed()

    def add(self, member: Member) -> None:
        member.started_ms = self.now()
        if not acks(member):
            member.acked_until_ms = member.started_ms  # it joins with nothing acknowledged since
        self.members[member.id] = member

    def elect(self, ref: int | str | Member) -> None:
        m = self.member(ref)
        if m.arbiter or m.priority <= 0 or not m.up or m.state not in (PRIMARY, SECONDARY):
            raise ValueError(f"{m.name} cannot be elected (arbiter, priority 0, down or not SECONDARY)")
        now = self.now()
        self.election_commit_n = self.commit_n(now)  # lastCommittedOpTimeAtElection
        old = self.primary
        if old is not None:
            old.state = SECONDARY
            old.lag_ms = 0
        self.prior_primary_id = self.primary_id
        # The new primary has everything the old one wrote (a real one catches up or the rest rolls back).
        m.lag_ms = 0
        m.written_lag_ms = None
        m.state = PRIMARY
        self.primary_id = m.id
        self.term += 1
        self.config_term = self.term
        self.election_ms = now
        self.election_n = self.oplog.count_le(now)
        if old is None:
            self.oplog.switch(self.write_mode, now, self.write_rate)
        self.oplog.new_term(self.term, now)
        self.new_term_n = self.oplog.write(now, kind="new_primary", ns="", o={"msg": "new primary"}).n
        self.w_majority_ms, self.w_majority_checked_ms = None, now - 1
        self.changed()

    def step_down(self) -> None:
        """No primary: the primary becomes a secondary and nobody writes until the next elect()."""
        old = self.primary
        if old is None:
            return
        old.state = SECONDARY
        self.prior_primary_id = old.id
        self.primary_id = None
        self.oplog.switch("stopped", self.now())
        self.changed()

    def set_write_mode(self, mode: str, rate: float = 0.0) -> None:
        self.write_mode, self.write_rate = mode, rate
        if self.primary_id is not None:
            self.oplog.switch(mode, self.now(), rate)

    def set_state(self, ref: int | str | Member, state: str) -> None:
        m = self.member(ref)
        try:
            code = SETTABLE_STATES[state.upper()]
        except KeyError:
            raise ValueError(f"state must be one of {', '.join(SETTABLE_STATES)}") from None
        if m.arbiter:
            raise ValueError(f"{m.name} is an arbiter; its state is ARBITER")
        if m.id == self.primary_id:
            self.step_down()
        if code in (STARTUP, STARTUP2):
            if acks(m):
                m.acked_until_ms = self.now()
        else:
            m.acked_until_ms = None
        m.state = code
        m.initial_sync = None  # set_state ends an initial sync
        self.changed()
