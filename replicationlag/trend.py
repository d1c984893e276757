"""Which way a member's lag is going, and when that means something: to RED, to caught up, to falling off the oplog.

PURE: no I/O, no clock (the caller says what "now" is). Imports `danger` (its duration words) and `replset` (its
thresholds). The rate is the least-squares slope of the member's lag over the last `WINDOW_S` seconds of polls (at
least `MIN_POINTS`), so one odd poll moves it little; a member whose lag has no value in that span has no trend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from replicationlag.model import RED_AT_MS
from replicationlag.words import duration_words

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


def minutes_words(minutes: float) -> str:
    """`about 4 min`, `about 2 h 10 min`, `under a minute`."""
    if minutes < 1:
        return "under a minute"
    return "about " + duration_words(round(minutes) * 60_000)


def trend_words(found: Trend, lag_ms: int, headroom_ms: int | None = None) -> str:
    """`rising 2.1 s/min, RED in about 4 min`: the direction, the rate, and the time that means something.

    Rising below RED: when it turns RED. Rising with headroom known (and the source's oplog full): when it would
    fall off the oplog, if that comes first or it is RED already. Falling: when it has caught up.
    """
    direction = found.direction
    if direction == "steady":
        return "steady"
    rate = abs(found.ms_per_min)
    text = f"{direction} {rate / 1000:.1f} s/min"
    if direction == "falling":
        return f"{text}, caught up in {minutes_words(lag_ms / rate)}"
    to_red = (RED_AT_MS - lag_ms) / rate if lag_ms < RED_AT_MS else None
    to_off = headroom_ms / rate if headroom_ms is not None and headroom_ms > 0 else None
    if to_off is not None and (to_red is None or to_off < to_red):
        return f"{text}, off the oplog in {minutes_words(to_off)}"
    if to_red is not None:
        return f"{text}, RED in {minutes_words(to_red)}"
    return text
