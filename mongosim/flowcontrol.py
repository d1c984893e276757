"""Flow control (4.2+): the primary throttles writes when the majority commit point trails too far.

This mirrors mongod's `FlowControl::getNumTickets`, which a periodic job runs once a second on every node:

- It only acts where it can (`enableFlowControl` is true and the node is a writable primary). Anywhere else it
  returns at once and leaves every reported value as it was, so a secondary that never was primary shows the
  start-up placeholders (`targetRateLimit` 1 000 000 000, counters 0) and a primary that stepped down while
  lagged keeps `isLagged: true`, exactly as the real code does.
- The lag it controls is the node's lastApplied wall time minus lastCommitted wall time. The set is lagged when
  that lag reaches `flowControlThresholdLagPercentage` (0.5) x `flowControlTargetLagSeconds` (10 s), i.e. 5 s by
  default, and at least a sample period (1 000 ops) separates the two optimes (an idle set's no-ops never
  engage it).
- Entering the lagged state adds one to `isLaggedCount`; `isLaggedTimeMicros` grows only when a lagged period
  ends, by that period's length (the real code adds `curTimeMicros64() - _startWaitTime` on the way out).
- While lagged, `targetRateLimit` = locksPerOp x sustainerRate x 0.5^((lag - threshold) / threshold) x 0.95
  (at least 100), where `sustainerRate` is what the median member (by applied optime) applied in the last
  second. While healthy it climbs back: (previous + 1000) x 1.05 a second, up to 1 000 000 000.

Ticks fall every 1 000 ms after the node's process started. Between two looks (a command or a control) the
simulator assumes the commit lag can only grow or stay (true for every schedule but the idle no-op sawtooth), so
it finds the first lagged tick by bisection instead of stepping through every second.

Imports `bson` and the standard library only; the set is reached through the `Probe` callables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bson import Int64

TICK_MS = 1000  # the FlowControlRefresher period (flowControlPollIntervalMs in the newest servers)
MAX_TICKETS = 1_000_000_000  # FlowControl::kMaxTickets
MIN_TICKETS = 100  # flowControlMinTicketsPerSecond
THRESHOLD_FRACTION = 0.5  # flowControlThresholdLagPercentage
TICKET_ADDER = 1000  # flowControlTicketAdderConstant
TICKET_MULTIPLIER = 1.05  # flowControlTicketMultiplierConstant
DECAY = 0.5  # flowControlDecayConstant
FUDGE = 0.95  # flowControlFudgeFactor
SAMPLE_PERIOD_OPS = 1000  # flowControlSamplePeriod
LOCKS_PER_OP = 1.0  # one global IX lock per simulated write
DEFAULT_TARGET_LAG_S = 10  # flowControlTargetLagSeconds


@dataclass
class FlowSettings:
    """The server parameters, set-wide here (a real set has them per node, set with setParameter)."""

    enabled: bool = True  # enableFlowControl
    target_lag_s: int = DEFAULT_TARGET_LAG_S  # flowControlTargetLagSeconds

    @property
    def threshold_ms(self) -> int:
        return int(1000.0 * THRESHOLD_FRACTION * self.target_lag_s)


@dataclass
class Probe:
    """What flow control reads from the set at a (past) instant `t`.

    `lag(t)` -> (lastApplied wall - lastCommitted wall in ms, ops between the two optimes);
    `sustainer_ops(t)` -> ops the median member applied in (t - 1 s, t].
    """

    lag: Callable[[int], tuple[int, int]]
    sustainer_ops: Callable[[int], int]


@dataclass
class FlowState:
    """One node's flow control, for the life of its process (a restart starts a fresh one)."""

    last_tick_ms: int
    target_rate: int = MAX_TICKETS
    locks_per_kilo_op: float = 0.0
    sustainer_rate: int = 0
    lagged: bool = False
    lagged_count: int = 0
    lagged_time_us: int = 0
    lagged_since_ms: int = 0
    acquiring_us: int = 0

    def section(self, settings: FlowSettings) -> dict[str, Any]:
        """serverStatus.flowControl, with the types mongod appends (int, NumberLong, double, bool)."""
        return {
            "enabled": settings.enabled,
            "targetRateLimit": self.target_rate,
            "timeAcquiringMicros": Int64(self.acquiring_us),
            "locksPerKiloOp": float(self.locks_per_kilo_op),
            "sustainerRate": self.sustainer_rate,
            "isLagged": self.lagged,
            "isLaggedCount": self.lagged_count,
            "isLaggedTimeMicros": Int64(self.lagged_time_us),
        }

    def advance(self, until_ms: int, usable: bool, settings: FlowSettings, probe: Probe) -> None:
        """Run every refresher tick in (last tick, until_ms]. `usable`: enabled and primary throughout."""
        first = self.last_tick_ms + TICK_MS
        if until_ms < first:
            return
        ticks = (until_ms - self.last_tick_ms) // TICK_MS
        last = self.last_tick_ms + ticks * TICK_MS
        self.last_tick_ms = last
        if not usable or not settings.enabled:
            return  # getNumTickets returns kMaxTickets without touching what serverStatus reports
        self.locks_per_kilo_op = LOCKS_PER_OP * 1000

        def lagged_at(t: int) -> bool:
            lag_ms, ops = probe.lag(t)
            return lag_ms >= settings.threshold_ms and ops >= SAMPLE_PERIOD_OPS

        if not lagged_at(last):
            if self.lagged:  # the lag only grows between two looks, so it ended at the first tick
                self.lagged = False
                self.lagged_time_us += (first - self.lagged_since_ms) * 1000
            self._recover(ticks)
            return
        if not self.lagged:
            lo, hi = 0, ticks - 1  # index of the first lagged tick
            while lo < hi:
                mid = (lo + hi) // 2
                if lagged_at(first + mid * TICK_MS):
                    hi = mid
                else:
                    lo = mid + 1
            self._recover(lo)
            self.lagged, self.lagged_since_ms = True, first + lo * TICK_MS
            self.lagged_count += 1
        engaged_ticks = (last - max(first, self.lagged_since_ms)) // TICK_MS + 1
        self.acquiring_us += engaged_ticks * TICK_MS * 1000  # as if one writer always waited for a ticket
        lag_ms, _ = probe.lag(last)
        self.sustainer_rate = probe.sustainer_ops(last)
        threshold = max(settings.threshold_ms, 1)
        reduce = DECAY ** ((lag_ms - settings.threshold_ms) / threshold)
        self.target_rate = max(_multiply(LOCKS_PER_OP, self.sustainer_rate * reduce * FUDGE), MIN_TICKETS)

    def _recover(self, ticks: int) -> None:
        """`ticks` healthy periods: tickets grow back by (previous + adder) x multiplier a second."""
        for _ in range(ticks):
            if self.target_rate >= MAX_TICKETS:
                return
            self.target_rate = max(_multiply(self.target_rate + TICKET_ADDER, TICKET_MULTIPLIER), MIN_TICKETS)


def _multiply(a: float, b: float) -> int:
    """multiplyWithOverflowCheck: a x b truncated, 0 if either is 0, capped at MAX_TICKETS."""
    if a == 0 or b == 0:
        return 0
    product = a * b
    return MAX_TICKETS if product >= MAX_TICKETS else int(product)
