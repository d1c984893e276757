"""What every reader answers from: a `View` of the store at one instant, every set of the cluster as a `SetView`
(its last good snapshot beside its latest failure, and since when its problems and its colour have lasted), with
data ages from the store's monotonic clock.

PURE values: no I/O, no clock of their own. Imports `history` (the lag history the page draws), `model` and `trend`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from replicationlag.history import LagHistory
from replicationlag.model import FRESHNESS_LIMIT_S, Failure, FailureKind, RouterState, SetAddress, Snapshot, Status
from replicationlag.trend import Trend


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
    since: tuple[tuple[tuple[str, str], float], ...] = ()  # (kind, member) -> wall s the problem began
    colour_since_s: float | None = None  # wall s since the last poll's colour began

    def since_of(self, kind: str, member: str = "") -> float | None:
        """Since when (wall s) a problem has lasted: a stale set since it turned stale, else the store's record."""
        return dict(self.since).get((kind, member))

    @property
    def status_since_s(self) -> float | None:
        """Since when (wall s) the set has had its colour now: stale data turned RED when it turned stale."""
        if self.failure is None and self.is_stale and self.last_success_wall_s is not None:
            return self.last_success_wall_s + self.freshness_limit_s
        return self.colour_since_s

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
    location_tags: tuple[str, ...] = ()  # --topology.tags: member tag keys to group by; empty: the default
    published_wall_s: float | None = None  # the wall clock of the last publish: what "for 8 min" counts to

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

    def stale_sentence(self) -> str:
        return f"the last successful collection is {self.age_s:.0f} s old (limit {self.freshness_limit_s:g} s)"
