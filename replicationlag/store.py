"""The in-memory store of the latest collection, and the read-only view every endpoint answers from.

The scheduled job publishes one result per poll (a swap under a lock): a `Snapshot` or a `Failure` when the URI
names a replica set, a `ClusterResult` (the shard map and one result per set) when it names mongos routers.
Readers take a `View`, an immutable value with the data ages computed from an injected monotonic clock. Each set
keeps its last good snapshot beside its latest failure, so readers can say "failed 40 s ago; last known: ...".
A set that leaves the shard map is dropped: memory is one record per set of the current map. Nothing here does
I/O and nothing is written to disk: the user asked for memory only (each member's lag history is bounded: see
`history`). Imports `history`, `kinds`, `replset`, `shardmap` and `trend`.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from replicationlag.history import LagHistory
from replicationlag.model import FRESHNESS_LIMIT_S, FailureKind, SetRole
from replicationlag.replset import Failure, Snapshot, Status
from replicationlag.shardmap import SetAddress, ShardMap
from replicationlag.trend import FIT_POINTS, Trend, trend


def wall_now_ms() -> int:
    """The wall clock in ms since the epoch: when a failure happened."""
    return time.time_ns() // 1_000_000


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


@dataclass(frozen=True)
class SetView:
    """One replica set as readers see it: its last good snapshot and its latest failure."""

    address: SetAddress
    snapshot: Snapshot | None  # the last successful snapshot, None before the first success
    failure: Failure | None  # the last poll's failure; None when the last poll succeeded
    age_s: float | None  # seconds since the last success, None before the first success
    last_success_wall_s: float | None  # wall clock of the last success
    freshness_limit_s: float = FRESHNESS_LIMIT_S
    trends: tuple[tuple[str, Trend], ...] = ()  # member -> its lag's trend over the last minutes, when known

    def trend_of(self, member: str) -> Trend | None:
        return dict(self.trends).get(member)

    @property
    def is_stale(self) -> bool:
        return self.age_s is None or self.age_s >= self.freshness_limit_s

    @property
    def current(self) -> Snapshot | None:
        """The snapshot readers may present as the state now: the last poll succeeded and it is fresh."""
        if self.failure is None and self.snapshot is not None and not self.is_stale:
            return self.snapshot
        return None

    @property
    def status(self) -> Status:
        current = self.current
        return current.status if current is not None else Status.RED

    @property
    def name(self) -> str:
        return self.address.name or (self.snapshot.set_name if self.snapshot is not None else "")


@dataclass(frozen=True)
class View:
    """What one reader sees at one instant: every set of the cluster (one when the URI names a replica set)."""

    infra: str
    interval_s: float
    sharded: bool
    sets: tuple[SetView, ...]  # the shards in shard-id order, then the config servers; one set when not sharded
    age_s: float | None  # seconds since the last poll that collected anything, None before the first
    last_duration_s: float | None  # how long the last poll took
    last_success_wall_s: float | None  # wall clock of the last poll that collected anything
    polls: int  # how many polls have ended (success or failure)
    failures_by_kind: tuple[tuple[FailureKind, int], ...]  # cumulative failures per kind (sets and map), by kind
    freshness_limit_s: float = FRESHNESS_LIMIT_S
    map_failure: Failure | None = None  # sharded: why the map could not be read in the last poll
    map_age_s: float | None = None  # sharded: seconds since the map was last read
    map_source: str = ""  # sharded: getShardMap, listShards or config.shards
    config_watched: bool = True  # sharded: False when the config server set is not in the map
    routers: tuple[RouterState, ...] = ()
    history: LagHistory | None = None  # every member's lag at every poll for 24 h (the page's charts)
    taken_at_s: float = 0.0  # the store's monotonic clock when the view was taken

    def next_age_change_s(self) -> float:
        """When (store clock) the next of the view's ages passes a whole second: until then an answer that prints
        ages in whole seconds reads the same. Infinite when the view holds no age."""
        ages = [self.age_s, self.map_age_s, *(s.age_s for s in self.sets)]
        return min((self.taken_at_s + math.floor(a) + 1 - a for a in ages if a is not None), default=math.inf)

    # --- One replica set (the URI named a set): the readers of issue 5 read these. ---------------------------

    @property
    def single(self) -> SetView | None:
        return self.sets[0] if not self.sharded and self.sets else None

    @property
    def snapshot(self) -> Snapshot | None:
        return self.single.snapshot if self.single is not None else None

    @property
    def failure(self) -> Failure | None:
        """The last poll's failure: the set's when not sharded, the map's when sharded."""
        if self.sharded:
            return self.map_failure
        return self.single.failure if self.single is not None else None

    @property
    def current(self) -> Snapshot | None:
        return self.single.current if self.single is not None else None

    # --- Any cluster. -------------------------------------------------------------------------------------------

    @property
    def is_stale(self) -> bool:
        return self.age_s is None or self.age_s >= self.freshness_limit_s

    @property
    def status(self) -> Status:
        """The worst set; RED before anything was collected. A set that could not be collected is RED."""
        if not self.sets:
            return Status.RED
        return max(s.status for s in self.sets)

    def liveness_problems(self) -> list[str]:
        """Why the exporter is not doing its job; empty when it is. A RED set is the cluster's problem, not this."""
        if self.sharded:
            return self._cluster_liveness_problems()
        problems = []
        failure = self.failure
        # Failures that stop collecting are 503 at once; a missed deadline waits for staleness (kinds.FailureKind).
        if failure is not None and failure.kind.stops_collecting:
            problems.append(failure.message)
        if self.snapshot is None:
            if self.polls == 0:
                problems.append("no collection has finished yet")
            elif not problems:
                problems.append("no collection has succeeded yet")
        elif self.is_stale:
            problems.append(self._stale_sentence())
        return problems

    def _cluster_liveness_problems(self) -> list[str]:
        """Sharded: alive while the map or some set was read within the freshness limit."""
        if self.polls == 0:
            return ["no collection has finished yet"]
        map_fresh = self.map_age_s is not None and self.map_age_s < self.freshness_limit_s
        if map_fresh or any(s.current is not None for s in self.sets):
            return []
        problems = [self.map_failure.message] if self.map_failure is not None else []
        if self.age_s is None:
            problems.append("nothing has been collected from the cluster yet")
        else:
            problems.append(self._stale_sentence())
        return problems

    def _stale_sentence(self) -> str:
        return f"the last successful collection is {self.age_s:.0f} s old (limit {self.freshness_limit_s:g} s)"


@dataclass
class _SetRecord:
    address: SetAddress
    snapshot: Snapshot | None = None
    failure: Failure | None = None
    success_mono: float | None = None
    success_wall: float | None = None
    trends: tuple[tuple[str, Trend], ...] = ()


class SnapshotStore:
    """Holds the latest poll result for one infra label. Thread-safe; readers never block the writer long."""

    def __init__(
        self,
        infra: str,
        interval_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        *,
        freshness_limit_s: float = FRESHNESS_LIMIT_S,
    ) -> None:
        self.infra = infra
        self.interval_s = interval_s
        self.freshness_limit_s = freshness_limit_s
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._sharded = False
        self._sets: dict[str, _SetRecord] = {}  # by replica-set name ("" for a set whose name is not known yet)
        self._success_mono: float | None = None
        self._success_wall: float | None = None
        self._duration: float | None = None
        self._polls = 0
        self._failures: dict[FailureKind, int] = {}
        self._map: ShardMap | None = None
        self._map_failure: Failure | None = None
        self._map_mono: float | None = None
        self._routers: tuple[RouterState, ...] = ()
        self._history = LagHistory()
        self._turns_stale: tuple[float, ...] = ()  # sorted instants at which published data turns stale

    def now_s(self) -> float:
        """The store's monotonic clock: the one its ages and `View.next_age_change_s` count in."""
        return self._monotonic()

    def publish(self, result: Snapshot | Failure | ClusterResult, duration_s: float) -> None:
        now_mono, now_wall = self._monotonic(), self._wall()
        with self._lock:
            self._polls += 1
            self._duration = duration_s
            if isinstance(result, ClusterResult):
                self._publish_cluster(result, now_mono, now_wall)
            elif self._sharded and isinstance(result, Failure):
                self._publish_cluster_failure(result)
            else:
                self._publish_set(result, now_mono, now_wall)
            since = [self._success_mono, self._map_mono, *(r.success_mono for r in self._sets.values())]
            self._turns_stale = tuple(sorted({t + self.freshness_limit_s for t in since if t is not None}))

    def _publish_set(self, result: Snapshot | Failure, now_mono: float, now_wall: float) -> None:
        """The URI names one replica set: it is the only record, whatever its name turns out to be."""
        self._sharded = False
        known = next(iter(self._sets.values()), None)
        name = result.set_name if isinstance(result, Snapshot) else (known.address.name if known else "")
        record = known or _SetRecord(SetAddress(name, (), SetRole.REPLICA_SET))
        record.address = SetAddress(name, (), SetRole.REPLICA_SET)
        self._sets = {name: record}
        self._history.keep_sets([name])
        if self._record(record, result, now_mono, now_wall):
            self._success_mono, self._success_wall = now_mono, now_wall

    def _publish_cluster(self, result: ClusterResult, now_mono: float, now_wall: float) -> None:
        self._sharded = True
        self._routers = result.routers
        self._map_failure = result.map_failure
        if result.map_failure is not None:
            self._count(result.map_failure)
        else:
            self._map_mono = now_mono
        self._map = result.map
        collected = result.map_failure is None
        fresh: dict[str, _SetRecord] = {}
        for address, set_result in result.sets:
            record = self._sets.get(address.name) or _SetRecord(address)
            record.address = address
            fresh[address.name] = record
            collected |= self._record(record, set_result, now_mono, now_wall)
        self._sets = fresh  # a set that left the map is forgotten
        self._history.keep_sets(fresh)
        if collected:
            self._success_mono, self._success_wall = now_mono, now_wall

    def _publish_cluster_failure(self, failure: Failure) -> None:
        """The whole poll of a cluster failed (its deadline, a bug): every set is failed by it, counted once."""
        self._map_failure = failure
        self._count(failure)
        for record in self._sets.values():
            record.failure = failure

    def _record(self, record: _SetRecord, result: Snapshot | Failure, now_mono: float, now_wall: float) -> bool:
        """Store one set's result; True when it was a success."""
        if isinstance(result, Snapshot):
            record.snapshot, record.failure = result, None
            record.success_mono, record.success_wall = now_mono, now_wall
            record.trends = self._remember(record.address.name, result)
            return True
        record.failure = result
        self._count(result)
        return False

    def _remember(self, set_name: str, snapshot: Snapshot) -> tuple[tuple[str, Trend], ...]:
        """Keep each replicating member's lag at the set's own clock (the status `date`), and say its trend: since
        its state, its sync source or the set's reference member last changed (a restart, an election)."""
        if snapshot.collected_at_ms <= 0:
            return ()
        at_s = snapshot.collected_at_ms / 1000
        replicating = [m for m in snapshot.members if m.is_data_bearing and not m.is_primary]
        regimes = {m.name: (m.state, m.sync_source, snapshot.reference_member) for m in replicating}
        self._history.record(set_name, at_s, {m.name: m.lag_ms for m in replicating}, regimes)
        found = ((m.name, trend(self._history.recent(set_name, m.name, FIT_POINTS), at_s)) for m in replicating)
        return tuple((name, t) for name, t in found if t is not None)

    def _count(self, failure: Failure) -> None:
        self._failures[failure.kind] = self._failures.get(failure.kind, 0) + 1

    def freshness_key(self) -> tuple[int, int]:
        """Changes exactly when what readers show changes, ages aside: at each publish, and each time some data
        turns stale (staleness only grows between publishes). Read on every request, so it takes no lock and no
        time that grows with the cluster: the publish that changed the data computed when it turns stale."""
        polls, turns_stale = self._polls, self._turns_stale  # replaced, never mutated; a torn pair only costs
        return (polls, bisect.bisect_right(turns_stale, self._monotonic()))  # a caller one render more

    def view(self) -> View:
        now = self._monotonic()

        def age(since: float | None) -> float | None:
            return None if since is None else max(0.0, now - since)

        with self._lock:
            sets = tuple(
                SetView(
                    address=r.address,
                    snapshot=r.snapshot,
                    failure=r.failure,
                    age_s=age(r.success_mono),
                    last_success_wall_s=r.success_wall,
                    freshness_limit_s=self.freshness_limit_s,
                    trends=r.trends,
                )
                for r in self._sets.values()
            )
            return View(
                infra=self.infra,
                interval_s=self.interval_s,
                sharded=self._sharded,
                sets=sets,
                age_s=age(self._success_mono),
                last_duration_s=self._duration,
                last_success_wall_s=self._success_wall,
                polls=self._polls,
                failures_by_kind=tuple(sorted(self._failures.items())),
                freshness_limit_s=self.freshness_limit_s,
                map_failure=self._map_failure,
                map_age_s=age(self._map_mono),
                map_source=self._map.source if self._map is not None else "",
                config_watched=self._map.config_watched if self._map is not None else True,
                routers=self._routers,
                history=self._history,
                taken_at_s=now,
            )
