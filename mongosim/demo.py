"""The demo replica set the exporter's `--demo` collects from: something worth looking at, on one machine.

A 7.0 set: a primary (_id 0), a secondary whose lag goes GREEN (< 5 s) -> YELLOW (5-30 s) -> RED (>= 30 s) -> back
over three minutes (_id 1), a steady secondary (_id 2), an arbiter (_id 3) and a hidden member with
secondaryDelaySecs 3600 whose raw lag sits a little above its delay (_id 4). A daemon thread moves the lags along
the set's clock (pass a `ManualClock` to step through the cycle deterministically); the returned stop callable ends
that thread at once and stops the set.

Imports `.replicaset` and `.model` only.
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
    start_ms = clock.now_ms()
    stopping = threading.Event()

    def drive() -> None:
        while not stopping.wait(TICK_S):
            elapsed = clock.now_ms() - start_ms
            try:
                rs.set_lag(1, demo_lag_ms(elapsed))
                rs.set_lag(2, 400 + _wobble_ms(elapsed, 150, 11))
                rs.set_lag(4, DELAY_SECS * 1000 + 700 + _wobble_ms(elapsed, 200, 13))
            except Exception:  # someone reshaped the set (e.g. elected member 1): keep the demo alive
                log.debug("mongosim demo: could not move the lags", exc_info=True)

    driver = threading.Thread(target=drive, name="mongosim-demo", daemon=True)
    driver.start()

    def stop() -> None:
        stopping.set()
        driver.join()
        rs.stop()

    return rs, stop
