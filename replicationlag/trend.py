"""Which way a member's lag is going, how fast, and how far ahead that may be said (its words are in `words`).

PURE: no I/O, no clock (the caller says what "now" is); imports nothing of ours. A lag series jumps, holds, saws,
climbs and falls, so the rate is not a fit over a fixed range (docs/domain.md §15):
1. the points since the member last had no lag (or since time last ran backwards), at most `FIT_POINTS` polls;
2. the current regime only: walking back from the newest poll, each older point must lie on the line of the
   points after it within `JUMP_NOISES` times the poll-to-poll noise (never less than `JUMP_FLOOR_MS`); the first
   point off it ends the regime (a jump leaves it at once, a turn as soon as the lines have drifted apart), a single
   odd point between two good ones is skipped;
3. the Theil-Sen slope of the regime (the median of its pairwise slopes) with its 95 % interval: an interval that
   holds 0 reads "steady"; fewer than `MIN_POINTS` points, or newest polls that go against the slope, give nothing;
4. an ETA only within `HORIZON_SPANS` times the span that was fitted; further away, the rate alone (the reader gets
   the oplog headroom beside it).
Everything counts in polls, never in a fixed number of seconds, so it reads the same at any poll interval.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

FIT_POINTS = 20  # "the last few polls": the newest points a regime may span (190 pairwise slopes at most)
MIN_POINTS = 4  # fewer points since the last change support no rate
JUMP_NOISES = 4.0  # a point further than this many noise deviations off the line is a jump or a turn
JUMP_FLOOR_MS = 500  # ... and never closer than half a second: a smooth series is not cut by a wobble or by rounding
HORIZON_SPANS = 2.0  # no ETA further away than this many times the span of the fitted points
STEADY_BELOW_MS_PER_MIN = 100  # under 0.1 s of lag more or less per minute, the lag is steady
_Z95 = 1.959964  # the normal quantile of a two-sided 95 % interval

Point = tuple[float, int | None]


@dataclass(frozen=True)
class Trend:
    """The lag's rate of change, in ms of lag per minute of time (positive: rising), over `span_s` seconds of polls
    (how far ahead a forecast from it may reach)."""

    ms_per_min: float
    span_s: float = math.inf

    @property
    def direction(self) -> str:
        if abs(self.ms_per_min) < STEADY_BELOW_MS_PER_MIN:
            return "steady"
        return "rising" if self.ms_per_min > 0 else "falling"

    @property
    def horizon_min(self) -> float:
        """The furthest ETA worth saying, in minutes."""
        return HORIZON_SPANS * self.span_s / 60


def trend(points: Sequence[Point], now_s: float) -> Trend | None:
    """The trend of (time s, lag ms) polls, oldest first, up to `now_s`; None when nothing can be said."""
    usable = _since_last_gap([p for p in points if p[0] <= now_s])[-FIT_POINTS:]
    if len(usable) < MIN_POINTS:
        return None
    tolerance_ms = max(JUMP_NOISES * _noise_ms(usable), JUMP_FLOOR_MS)
    regime, slopes = _current_regime(usable, tolerance_ms)
    if len(regime) < MIN_POINTS:
        return None
    slope, low, high = theil_sen(slopes, len(regime))
    span_s = regime[-1][0] - regime[0][0]
    newest = [b[1] - a[1] for a, b in zip(regime[-3:], regime[-2:], strict=False)]
    if low <= 0 <= high:  # no rate told apart from none; unless the newest poll moved beyond the noise
        return Trend(0.0, span_s) if abs(newest[-1]) <= tolerance_ms else None
    if all(change * slope < 0 for change in newest):  # the newest polls go the other way: say nothing yet
        return None
    return Trend(slope * 60, span_s)


def theil_sen(slopes: Sequence[float], n: int) -> tuple[float, float, float]:
    """(slope, low, high): the median of the sorted pairwise slopes of `n` points and its 95 % interval (Sen 1968,
    as `scipy.stats.theilslopes` computes it, without the correction for ties)."""
    pairs = len(slopes)
    spread = _Z95 * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    high = min(round((pairs + spread) / 2), pairs - 1)
    low = max(round((pairs - spread) / 2) - 1, 0)
    return _median(slopes), slopes[low], slopes[high]


def _since_last_gap(points: Sequence[Point]) -> list[tuple[float, int]]:
    """The points after the last one without a lag (the member was down, syncing, unknown) and after the last time
    the clock did not move forward: a trend starts over there."""
    kept: list[tuple[float, int]] = []
    for t, lag in points:
        if lag is None or (kept and t <= kept[-1][0]):
            kept = []
        if lag is not None:
            kept.append((t, lag))
    return kept


def _noise_ms(points: Sequence[tuple[float, int]]) -> float:
    """The poll-to-poll noise (a standard deviation, ms): how far each point lies from the line through its two
    neighbours. A jump moves two of those distances and a turn one, so the estimate reads their lower quartile,
    which stays put until three in four are moved: for white noise of deviation s at an even poll interval the
    distance has deviation s·√1.5, and a quarter of such distances lie under 0.319 times that."""
    off = sorted(
        abs(b[1] - (a[1] + (c[1] - a[1]) * (b[0] - a[0]) / (c[0] - a[0])))
        for a, b, c in zip(points, points[1:], points[2:], strict=False)
    )
    return off[(len(off) - 1) // 4] / (0.3186 * math.sqrt(1.5)) if off else 0.0


def _current_regime(
    points: Sequence[tuple[float, int]], tolerance_ms: float
) -> tuple[list[tuple[float, int]], list[float]]:
    """The newest points that lie on one line, and their pairwise slopes (sorted): walk back from the newest two,
    testing each older point against the Theil-Sen line of the points kept so far."""
    kept = list(points[-2:])
    slopes = [_slope(*kept)]
    i = len(points) - 3
    while i >= 0:
        if _off_line(points[i], kept, slopes, tolerance_ms):
            if i == 0 or _off_line(points[i - 1], kept, slopes, tolerance_ms):
                break
            i -= 1  # one odd point between good ones: skip it, as the robust slope would
        for other in kept:
            bisect.insort(slopes, _slope(points[i], other))
        kept.insert(0, points[i])
        i -= 1
    return kept, slopes


def _slope(a: tuple[float, int], b: tuple[float, int]) -> float:
    return (b[1] - a[1]) / (b[0] - a[0])


def _off_line(point: tuple[float, int], kept: list[tuple[float, int]], slopes: list[float], tolerance: float) -> bool:
    """Whether `point` is off the kept points' line; a line through few points is itself uncertain, so it gets more
    room (1.5 times the tolerance through two points, 1.25 times through four)."""
    slope = _median(slopes)
    intercept = _median(sorted(lag - slope * t for t, lag in kept))
    return abs(point[1] - (intercept + slope * point[0])) > tolerance * (1 + 1 / len(kept))


def _median(ordered: Sequence[float]) -> float:
    """The median of an already sorted sequence (0 when empty)."""
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
