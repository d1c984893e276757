"""Which way a member's lag is going, and how fast.

PURE: no I/O, no clock (the caller says what "now" is); imports nothing of ours (its words are in `words`). The
rate is the least-squares slope of the member's lag over the last `WINDOW_S` seconds of polls (at least
`MIN_POINTS`), so one odd poll moves it little; a member whose lag has no value in that span has no trend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WINDOW_S = 300  # "the last minutes": five polls at the default interval, sixty in the demo
MIN_POINTS = 3
STEADY_BELOW_MS_PER_MIN = 100  # under 0.1 s of lag more or less per minute, the lag is steady


@dataclass(frozen=True)
class Trend:
    """The lag's rate of change, in ms of lag per minute of time (positive: rising)."""

    ms_per_min: float

    @property
    def direction(self) -> str:
        if abs(self.ms_per_min) < STEADY_BELOW_MS_PER_MIN:
            return "steady"
        return "rising" if self.ms_per_min > 0 else "falling"


def trend(points: Sequence[tuple[float, int | None]], now_s: float) -> Trend | None:
    """The slope of (time s, lag ms) over the last WINDOW_S s; None with too few points or any without a lag."""
    recent = [(t, lag) for t, lag in points if t >= now_s - WINDOW_S]
    if len(recent) < MIN_POINTS or any(lag is None for _, lag in recent):
        return None
    n = len(recent)
    mean_t = sum(t for t, _ in recent) / n
    mean_lag = sum(lag for _, lag in recent) / n
    spread = sum((t - mean_t) ** 2 for t, _ in recent)
    if spread <= 0:
        return None
    slope_ms_per_s = sum((t - mean_t) * (lag - mean_lag) for t, lag in recent) / spread
    return Trend(slope_ms_per_s * 60)
