"""The demo replica set and the demo sharded cluster the exporter's `--demo` collects from: something worth looking
at, on one machine.

The set (`start_demo_set`): 7.0, a primary (_id 0), a secondary whose lag goes GREEN (< 5 s) -> YELLOW (5-30 s) ->
RED (>= 30 s) -> back over three minutes (_id 1), a steady secondary (_id 2), an arbiter (_id 3) and a hidden member
with secondaryDelaySecs 3600 whose raw lag sits a little above its delay (_id 4).

The cluster (`start_demo_cluster`): 7.0, three shards of three members, a config server set of three and one
router; shard01's member 1 cycles like the set's member 1, every other secondary wobbles below a second.

A daemon thread moves the lags along the clock (pass a `ManualClock` to step through the cycle deterministically);
the returned stop callable ends that thread at once and stops the set or the cluster.

Imports `.replicaset`, `.sharded` and `.model` only.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

from .model import RealClock
from .replicaset import MemberSpec, ReplicaSet
from .sharded import ShardedCluster

log = logging.getLogger("mongosim")

DEMO_PERIOD_MS = 180_000
TICK_S = 0.25
DELAY_SECS = 3600
# (seconds into the cycle, lag in ms) of member 1; straight lines in between. It never falls behind faster than
# time passes (a real member cannot), and it catches up faster than it fell behind, as real ones do.
_KEYPOINTS = ((0, 1_200), (30, 1_500), (50, 12_000), (70, 12_000), (110, 45_000), (130, 45_000), (160, 1_500))
_KEYPOINTS += ((180, 1_200),)
_PLATEAUS = ((0, 30), (50, 70), (110, 130), (160, 180))  # where a small wobble cannot cross a threshold


def demo_lag_ms(elapsed_ms: int) -> int:
    """Member 1's lag `elapsed_ms` after the demo started: GREEN until ~37 s, YELLOW until ~92 s, RED until
    ~140 s, YELLOW until ~158 s, GREEN to 180 s, then again."""
    t = (elapsed_ms % DEMO_PERIOD_MS) / 1000
    lag: float = _KEYPOINTS[-1][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(_KEYPOINTS):
        if t0 <= t < t1:
            lag = v0 + (v1 - v0) * (t - t0) / (t1 - t0)
            break
    for a, b in _PLATEAUS:
        if a <= t < b:  # whole periods only, so the wobble is 0 where a plateau meets a ramp
            lag += 250 * math.sin(2 * math.pi * round((b - a) / 7) * (t - a) / (b - a))
    return round(lag)


def _wobble_ms(elapsed_ms: int, amplitude: int, period_s: float) -> int:
    return round(amplitude * math.sin(2 * math.pi * elapsed_ms / 1000 / period_s))


# (replica set, member _id, lag in ms as a function of the ms since the demo started)
Lag = tuple[ReplicaSet, int, Callable[[int], int]]


def start_demo_set(clock: Any = None) -> tuple[ReplicaSet, Callable[[], None]]:
    """Start the demo set and the thread that moves its lags; returns (set, stop). stop() is idempotent."""
    clock = clock if clock is not None else RealClock()
    members = [
        MemberSpec(role="primary", priority=2),
        MemberSpec(lag_ms=demo_lag_ms(0)),
        MemberSpec(lag_ms=400),
        MemberSpec(role="arbiter"),
        MemberSpec(hidden=True, delay_secs=DELAY_SECS, lag_ms=DELAY_SECS * 1000 + 700),
    ]
    rs = ReplicaSet(members, version="7.0", name="demo", clock=clock).start()
    lags: list[Lag] = [
        (rs, 1, demo_lag_ms),
        (rs, 2, lambda t: 400 + _wobble_ms(t, 150, 11)),
        (rs, 4, lambda t: DELAY_SECS * 1000 + 700 + _wobble_ms(t, 200, 13)),
    ]
    return rs, _drive(clock, lags, rs.stop)


def start_demo_cluster(clock: Any = None) -> tuple[ShardedCluster, Callable[[], None]]:
    """Start the demo cluster and the thread that moves its lags; returns (cluster, stop). stop() is idempotent."""
    clock = clock if clock is not None else RealClock()
    cluster = ShardedCluster(shards=3, version="7.0", clock=clock).start()
    shard01, shard02, shard03 = (cluster.shard(s) for s in ("shard01", "shard02", "shard03"))
    lags: list[Lag] = [
        (shard01, 1, demo_lag_ms),
        (shard01, 2, lambda t: 400 + _wobble_ms(t, 150, 11)),
        (shard02, 1, lambda t: 250 + _wobble_ms(t, 100, 7)),
        (shard02, 2, lambda t: 600 + _wobble_ms(t, 200, 13)),
        (shard03, 1, lambda t: 900 + _wobble_ms(t, 300, 17)),
        (shard03, 2, lambda t: 150 + _wobble_ms(t, 50, 5)),
        (cluster.config, 1, lambda t: 60 + _wobble_ms(t, 30, 9)),
        (cluster.config, 2, lambda t: 80 + _wobble_ms(t, 40, 10)),
    ]
    return cluster, _drive(clock, lags, cluster.stop)


def _drive(clock: Any, lags: list[Lag], stop_all: Callable[[], None]) -> Callable[[], None]:
    """A daemon thread that sets every lag each TICK_S along `clock`; returns the stop callable."""
    for rs, member, lag in lags:
        rs.set_lag(member, lag(0))
    start_ms = clock.now_ms()
    stopping = threading.Event()

    def drive() -> None:
        while not stopping.wait(TICK_S):
            elapsed = clock.now_ms() - start_ms
            for rs, member, lag in lags:
                if member in rs.manual:  # someone set this lag by hand (mongosim.control): theirs until `auto`
                    continue
                try:
                    rs.set_lag(member, lag(elapsed))
                except Exception:  # someone reshaped a set (e.g. elected that member): keep the demo alive
                    log.debug("mongosim demo: could not move a lag", exc_info=True)

    driver = threading.Thread(target=drive, name="mongosim-demo", daemon=True)
    driver.start()

    def stop() -> None:
        stopping.set()
        driver.join()
        stop_all()

    return stop
