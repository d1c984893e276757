"""The in-memory store of the latest collection, from which every endpoint takes its read-only `View`.

The scheduled job publishes one result per poll (a swap under a lock): a `Snapshot` or a `Failure` when the URI
names a replica set, a `ClusterResult` (the shard map and one result per set) when it names mongos routers.
Readers take a `View`, an immutable value with the data ages computed from an injected monotonic clock. Each set
keeps its last good snapshot beside its latest failure, so readers can say "failed 40 s ago; last known: ...".
A set that leaves the shard map is dropped: memory is one record per set of the current map. Nothing here does
I/O and nothing is written to disk: the user asked for memory only (each member's lag history is bounded: see
`history`). Each set also keeps since when each of its problems has lasted (one wall time per current problem:
a (kind, member) pair, so at most one per member and a few for the set, dropped when the problem ends) and since
when it has had its colour, for "RED for 8 min, since 03:12 UTC". Imports `history`, `model`, `problems`, `trend`
and `view`.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from replicationlag.history import LagHistory
from replicationlag.model import (
    FRESHNESS_LIMIT_S,
    ClusterResult,
    Failure,
    FailureKind,
    RouterState,
    SetAddress,
    SetRole,
    ShardMap,
    Snapshot,
    Status,
)
from replicationlag.problems import failure_problem, snapshot_problems
from replicationlag.trend import FIT_POINTS, Trend, trend
from replicationlag.view import SetView, View


@dataclass
class _SetRecord:
    address: SetAddress
    snapshot: Snapshot | None = None
    failure: Failure | None = None
    success_mono: float | None = None
    success_wall: float | None = None
    trends: tuple[tuple[str, Trend], ...] = ()
    since: dict[tuple[str, str], float] = field(default_factory=dict)  # (kind, member) -> wall s it began
    colour: Status | None = None  # the colour of the last poll's result
    colour_since: float | None = None  # wall s since the set has had that colour
    # member -> (its last uptime, how many restarts seen): a restart between two polls, the member SECONDARY on both
    # sides, shows only as an uptime that fell back. One entry per member of the last snapshot.
    boots: dict[str, tuple[int | None, int]] = field(default_factory=dict)

    def note_restarts(self, snapshot: Snapshot) -> dict[str, int]:
        """Each member's count of restarts seen since the exporter started (its uptime fell back)."""
        seen = {}
        for m in snapshot.members:
            last, restarts = self.boots.get(m.name, (None, 0))
            if m.uptime_s is not None and last is not None and m.uptime_s < last:
                restarts += 1
            seen[m.name] = (m.uptime_s if m.uptime_s is not None else last, restarts)
        self.boots = seen
        return {name: restarts for name, (_, restarts) in seen.items()}

    def note_problems(self, result: Snapshot | Failure, now_wall: float) -> None:
        """Keep the start of each problem that goes on, start the new ones, forget the ones that ended."""
        found = snapshot_problems(result) if isinstance(result, Snapshot) else [failure_problem(result)]
        self.since = {p.key: self.since.get(p.key, now_wall) for p in found}
        colour = result.status if isinstance(result, Snapshot) else Status.RED
        if colour is not self.colour:
            self.colour, self.colour_since = colour, now_wall


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
        location_tags: tuple[str, ...] = (),
    ) -> None:
        self.infra = infra
        self.location_tags = location_tags
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
        self._published_wall: float | None = None
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
            self._published_wall = now_wall
            if isinstance(result, ClusterResult):
                self._publish_cluster(result, now_mono, now_wall)
            elif self._sharded and isinstance(result, Failure):
                self._publish_cluster_failure(result, now_wall)
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

    def _publish_cluster_failure(self, failure: Failure, now_wall: float) -> None:
        """The whole poll of a cluster failed (its deadline, a bug): every set is failed by it, counted once."""
        self._map_failure = failure
        self._count(failure)
        for record in self._sets.values():
            record.failure = failure
            record.note_problems(failure, now_wall)

    def _record(self, record: _SetRecord, result: Snapshot | Failure, now_mono: float, now_wall: float) -> bool:
        """Store one set's result; True when it was a success."""
        record.note_problems(result, now_wall)
        if isinstance(result, Snapshot):
            record.snapshot, record.failure = result, None
            record.success_mono, record.success_wall = now_mono, now_wall
            record.trends = self._remember(record.address.name, result, now_mono, record.note_restarts(result))
            return True
        record.failure = result
        self._count(result)
        return False

    def _remember(
        self, set_name: str, snapshot: Snapshot, at_s: float, restarts: dict[str, int]
    ) -> tuple[tuple[str, Trend], ...]:
        """Keep each replicating member's lag at `at_s`, the store's monotonic clock when the poll was published, and
        say its trend: since its state, its sync source, its process (a restart) or the set's reference member (an
        election) last changed. Not at the status `date`: that is a server's wall clock, which can be stepped back
        (the points would go out of order and the trend with them) or lie far ahead for one poll (the 24 h trim
        would drop every earlier point); the exporter's monotonic clock does neither (docs/domain.md §17)."""
        replicating = [m for m in snapshot.members if m.is_data_bearing and not m.is_primary]
        regimes = {
            m.name: (m.state, m.sync_source, snapshot.reference_member, restarts.get(m.name, 0)) for m in replicating
        }
        self._history.record(set_name, at_s, {m.name: m.lag_ms for m in replicating}, regimes)
        found = ((m.name, trend(self._history.recent(set_name, m.name, FIT_POINTS), at_s)) for m in replicating)
        return tuple((name, t) for name, t in found if t is not None)

    def _count(self, failure: Failure) -> None:
        self._failures[failure.kind] = self._failures.get(failure.kind, 0) + 1

    def polls_ended(self) -> int:
        """How many polls have ended, successful or not (0: still starting). Read on every readiness probe: no lock,
        no view (an int read is atomic)."""
        return self._polls

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
                    since=tuple(r.since.items()),
                    colour_since_s=r.colour_since,
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
                location_tags=self.location_tags,
                published_wall_s=self._published_wall,
            )
