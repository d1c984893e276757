"""The trend of a member's lag, pure and table-driven: sequences of (time, lag) polls with the time given, never a
clock read; the words a YELLOW or RED line carries; the bounded history that feeds it."""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from view_factory import COLLECTED_AT_MS, FakeClock, healthy_set

from mongosim.demo import demo_lag_ms
from replicationlag import history
from replicationlag.history import LagHistory
from replicationlag.model import RED_AT_MS
from replicationlag.store import SnapshotStore
from replicationlag.trend import FIT_POINTS, Trend, trend
from replicationlag.view import View
from replicationlag.words import minutes_words, trend_words

NOW = 1_723_763_174.512


def polls(*lags: int | None, every_s: float = 60.0, now: float = NOW) -> list[tuple[float, int | None]]:
    """One point per poll, the last one at `now`."""
    start = now - every_s * (len(lags) - 1)
    return [(start + i * every_s, lag) for i, lag in enumerate(lags)]


# --- Forecasts against what then happens (docs/domain.md §15) ------------------------------------------------------
# Each sequence is a lag as a function of seconds since it started, polled every `every_s` s. At every poll the
# trend is computed from what the history holds, as the store does, and the words users would read are checked
# against the sequence itself: what it really did since the last poll, how fast it really moved, and when it really
# turned RED or caught up. `clean` is the sequence without its noise: what "really" means for a noisy one.

LagAt = Callable[[float], float]


@dataclass(frozen=True)
class Sequence:
    lag_at: LagAt
    every_s: float
    until_s: float
    clean: LagAt | None = None  # the truth without noise; the sequence itself when None
    etas_come_true: bool = True  # False where the future cannot be known (a climb that stops unannounced)
    expect: tuple[tuple[float, str], ...] = ()  # (poll time s, a regex the words must match fully)

    @property
    def truth(self) -> LagAt:
        return self.clean or self.lag_at


@dataclass(frozen=True)
class Said:
    t: float
    lag_ms: int
    words: str  # "" when no trend could be said


def said_along(seq: Sequence) -> list[Said]:
    kept = LagHistory()
    said = []
    for k in range(int(seq.until_s / seq.every_s) + 1):
        t = k * seq.every_s
        lag = round(seq.lag_at(t))
        kept.record("rs0", NOW + t, {"db1:27017": lag}, {"db1:27017": ("SECONDARY", "db0:27017")})
        found = trend(kept.recent("rs0", "db1:27017", FIT_POINTS), NOW + t)
        said.append(Said(t, lag, trend_words(found, lag) if found else ""))
    return said


def line(*knots: tuple[float, float]) -> LagAt:
    """Straight lines between (s, ms) knots, flat after the last."""

    def at(t: float) -> float:
        for (t0, v0), (t1, v1) in itertools.pairwise(knots):
            if t0 <= t < t1:
                return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
        return knots[-1][1]

    return at


def noisy(clean: LagAt, deviation_ms: float, seed: int) -> LagAt:
    draw, drawn = random.Random(seed), {}
    return lambda t: clean(t) + drawn.setdefault(t, draw.gauss(0, deviation_ms))


WORDS = re.compile(
    r"(?P<way>rising|falling|steady)(?: (?P<rate>[\d.]+) s/min)?(?:, (?P<event>RED|caught up) in (?P<eta>.+))?"
)


def eta_bounds_s(eta: str) -> tuple[float, float]:
    """`under a minute` -> (0, 60); `about 1 h 5 min` -> 65 min ± 30 s."""
    if eta == "under a minute":
        return 0, 60
    match = re.fullmatch(r"about (?:(\d+) h)? ?(?:(\d+) min)?", eta)
    assert match, eta
    minutes = 60 * int(match[1] or 0) + int(match[2] or 0)
    return 60 * minutes - 30, 60 * minutes + 30


def first_time(truth: LagAt, after_s: float, reached: Callable[[float], bool], step_s: float) -> float | None:
    """When the true lag first reaches something within four hours after `after_s`."""
    t = after_s
    while t <= after_s + 4 * 3600:
        if reached(truth(t)):
            return t
        t += step_s
    return None


SEQUENCES = {
    # 2 s of lag for ten minutes, then it climbs 2 s/min until long after it is RED (polls every 60 s)
    "a climb from a flat start": Sequence(
        line((0, 2_000), (600, 2_000), (2_400, 62_000)), 60, 1_800, expect=((600, "steady"), (660, ""))
    ),
    # a batch: the lag jumps from 1 s to 8 s and then does not move (the "RED in about 1 min" of the report)
    "a step then a hold": Sequence(
        line((0, 1_000), (299, 1_000), (300, 8_000)), 60, 900, expect=((300, ""), (360, ""), (420, ""), (480, "steady"))
    ),
    # the demo's member 1 (mongosim/demo.py), polled every 5 s as the demo is, for two cycles, off the cycle's knots
    "the demo's sawtooth": Sequence(
        lambda t: demo_lag_ms(round((t + 2.5) * 1000)),
        5,
        360,
        expect=(
            (85, r"rising 49\.5 s/min, RED in under a minute"),  # RED came 5.5 s later
            (125, "steady"),  # the RED plateau
            (145, r"falling 87\.0 s/min, caught up in under a minute"),
            (250, ""),  # the first poll of a ramp: the line moved beyond the noise, nothing to say yet
        ),
    ),
    # a long catch-up after a hold at 40 s (polls every 60 s)
    "a fall": Sequence(line((0, 40_000), (300, 40_000), (1_100, 0)), 60, 1_500, expect=((360, ""),)),
    # 2 s/min with a deviation of 0.7 s on every poll: a third of each poll's climb (the seed is fixed)
    "a noisy climb": Sequence(
        noisy(line((0, 6_000), (1_800, 66_000)), 700, seed=7), 60, 1_200, clean=line((0, 6_000), (1_800, 66_000))
    ),
    # 2 s/min from 8 s, then a plateau at 24 s below RED: a forecast of RED cannot know that, so it must go
    "a climb into a plateau": Sequence(
        line((0, 8_000), (480, 24_000)), 60, 1_200, etas_come_true=False, expect=((780, "steady"),)
    ),
}


def test_the_sequences_cover_what_the_words_can_say():
    everything = " ".join(s.words for seq in SEQUENCES.values() for s in said_along(seq))
    for words in ("rising", "falling", "steady", "RED in about", "caught up in about", "in under a minute"):
        assert words in everything


@pytest.mark.parametrize("name", SEQUENCES)
def test_a_direction_is_said_only_when_the_latest_polls_go_that_way(name):
    seq = SEQUENCES[name]
    for said in said_along(seq):
        way = WORDS.fullmatch(said.words)["way"] if said.words else None
        change = seq.truth(said.t) - seq.truth(said.t - seq.every_s)
        assert not (way == "rising" and change < 0), said
        assert not (way == "falling" and change > 0), said


@pytest.mark.parametrize("name", SEQUENCES)
def test_a_few_polls_into_a_straight_stretch_the_rate_is_within_30_percent(name):
    seq = SEQUENCES[name]
    checked = 0
    for said in said_along(seq):
        lags = [seq.truth(said.t - i * seq.every_s) for i in range(5)]  # the last five polls, newest first
        changes = [a - b for a, b in itertools.pairwise(lags)]
        if said.t < 4 * seq.every_s or max(changes) - min(changes) > 1:
            continue  # not (yet) five polls on one straight line
        checked += 1
        true_per_min = changes[0] / seq.every_s * 60
        if abs(true_per_min) < 100:
            assert said.words == "steady", said
            continue
        match = WORDS.fullmatch(said.words)
        assert match and match["way"] == ("rising" if true_per_min > 0 else "falling"), said
        assert abs(float(match["rate"]) * 1000 - abs(true_per_min)) <= 0.3 * abs(true_per_min), said
    assert checked >= 3


@pytest.mark.parametrize("name", [n for n, seq in SEQUENCES.items() if seq.etas_come_true])
def test_every_red_in_and_caught_up_in_comes_true_within_a_minute_or_35_percent(name):
    seq = SEQUENCES[name]
    for said in said_along(seq):
        match = WORDS.fullmatch(said.words) if said.words else None
        if not match or not match["event"]:
            continue
        if match["event"] == "RED":
            when = first_time(seq.truth, said.t, lambda lag: lag >= RED_AT_MS, seq.every_s / 10)
        else:
            when = first_time(seq.truth, said.t, lambda lag: lag <= 2_000, seq.every_s / 10)
        assert when is not None, f"{said}: it never happens"
        low, high = eta_bounds_s(match["eta"])
        actual = when - said.t
        slack = max(60, 0.35 * actual)
        assert low - slack <= actual <= high + slack, f"{said}: it happened {actual:.0f} s later"


@pytest.mark.parametrize("name", SEQUENCES)
def test_the_words_at_the_moments_that_matter(name):
    seq = SEQUENCES[name]
    by_time = {s.t: s for s in said_along(seq)}
    for t, pattern in seq.expect:
        assert re.fullmatch(pattern, by_time[t].words), by_time[t]


def test_a_plateau_withdraws_the_forecast_of_red_within_a_few_polls():
    said = said_along(SEQUENCES["a climb into a plateau"])
    assert any("RED in" in s.words for s in said if s.t < 480)  # it was climbing towards RED
    assert [s.words for s in said if s.t >= 480 + 4 * 60] == ["steady"] * len([s for s in said if s.t >= 720])


def test_no_eta_further_away_than_a_few_times_the_span_that_was_fitted():
    slow = polls(10_000, 10_500, 11_000, 11_500)  # 0.5 s/min over 3 min: RED in 38 min is out of sight
    found = trend(slow, NOW)
    assert found is not None and found.span_s == 180
    assert trend_words(found, 11_500) == "rising 0.5 s/min"
    longer = polls(*range(10_000, 20_000, 500))  # the same rate over 19 min: 30 min to RED is within 38 min
    assert trend_words(trend(longer, NOW), 19_500) == "rising 0.5 s/min, RED in about 21 min"


@pytest.mark.parametrize(
    "points",
    [
        polls(10_000, 20_000, 30_000),  # three polls are not a trend
        polls(10_000, 11_000, None, 30_000, 40_000, 50_000),  # three polls since the member had no lag value
        [(NOW, 1), (NOW, 2), (NOW, 3), (NOW, 4)],  # no time between them
        polls(1_000, 2_000, 3_000, 4_000, now=NOW + 60) + polls(5_000, 6_000, 7_000),  # the clock stepped back
        polls(1_000, 1_000, 1_000, 1_000, 9_000, 9_000),  # two polls since the jump
        polls(10_000, 12_000, 14_000, 16_000, 18_000, 16_500, 15_000),  # it turned: two polls since
    ],
)
def test_too_few_points_since_the_last_change_give_no_trend(points):
    assert trend(points, NOW + 60) is None


def test_rising_is_not_said_while_the_two_newest_polls_fall():
    climbing = polls(10_000, 12_400, 13_600, 16_400, 17_600, 20_400)  # 2 s/min with noise of about a second
    assert trend([*climbing, (NOW + 60, 20_200)], NOW + 60).direction == "rising"  # one fall is noise
    assert trend([*climbing, (NOW + 60, 20_200), (NOW + 120, 20_000)], NOW + 120) is None


def test_a_slope_whose_interval_holds_zero_is_steady():
    found = trend(polls(7_000, 7_400, 6_900, 7_300, 6_800), NOW)  # up and down by about as much
    assert found is not None and found.direction == "steady"


def test_one_odd_poll_does_not_end_the_regime_or_move_the_rate():
    found = trend(polls(10_000, 12_000, 14_000, 25_000, 18_000, 20_000, 22_000), NOW)
    assert found is not None and found.ms_per_min == pytest.approx(2_000)
    assert found.span_s == 6 * 60


def test_the_trend_starts_over_when_the_member_s_state_or_sync_source_changes():
    kept = LagHistory()
    for i, lag in enumerate((10_000, 12_000, 14_000, 16_000, 18_000)):
        source = "db0:27017" if i < 3 else "db2:27017"  # it chose another sync source before the 4th poll
        kept.record("rs0", NOW + 60 * i, {"db1:27017": lag}, {"db1:27017": ("SECONDARY", source)})
    assert kept.recent("rs0", "db1:27017", FIT_POINTS) == [(NOW + 180, 16_000), (NOW + 240, 18_000)]
    assert trend(kept.recent("rs0", "db1:27017", FIT_POINTS), NOW + 240) is None


@pytest.mark.parametrize(
    ("rate", "lag_ms", "headroom_ms", "words"),
    [
        (2_100, 21_233, None, "rising 2.1 s/min, RED in about 4 min"),
        (2_100, 21_233, 18_720_000, "rising 2.1 s/min, RED in about 4 min"),  # RED comes long before the oplog
        (2_000, 40_000, 600_000, "rising 2.0 s/min, off the oplog in about 5 h"),  # RED already
        (6_000, 10_000, 12_000, "rising 6.0 s/min, off the oplog in about 2 min"),  # a tiny oplog comes first
        (2_000, 45_000, None, "rising 2.0 s/min"),  # RED and no headroom known: nothing to count down to
        (-3_000, 12_000, None, "falling 3.0 s/min, caught up in about 4 min"),
        (-40_000, 12_000, None, "falling 40.0 s/min, caught up in under a minute"),
        (50, 12_000, None, "steady"),
    ],
)
def test_the_words_say_the_direction_the_rate_and_the_time_that_matters(rate, lag_ms, headroom_ms, words):
    assert trend_words(Trend(rate), lag_ms, headroom_ms) == words


@pytest.mark.parametrize(
    ("minutes", "words"),
    [
        (0.5, "under a minute"),
        (4.4, "about 4 min"),
        (59.6, "about 1 h"),
        (312, "about 5 h 12 min"),
        (3000, "about 2 d 2 h"),
    ],
)
def test_durations_read_as_people_say_them(minutes, words):
    assert minutes_words(minutes) == words


def test_the_history_keeps_a_member_for_24_hours_within_its_point_bound():
    kept = LagHistory()
    every_s = 30.0
    for i in range(3 * history.MAX_POINTS):  # 72 h of polls every 30 s
        kept.record("rs0", NOW + i * every_s, {"db1:27017": i})
    end = NOW + (3 * history.MAX_POINTS - 1) * every_s
    points = kept.points("rs0", "db1:27017", 0)
    assert len(points) <= history.MAX_POINTS
    assert points[-1] == (end, 3 * history.MAX_POINTS - 1)
    assert points[0][0] >= end - history.KEEP_S
    assert end - points[0][0] >= 20 * 3600  # most of the 24 h is there


def test_a_member_or_set_that_leaves_is_forgotten_and_a_missing_lag_is_kept_as_a_gap():
    kept = LagHistory()
    kept.record("rs0", NOW, {"a:1": 5, "b:1": None})
    assert kept.points("rs0", "b:1", 0) == [(NOW, None)]
    kept.record("rs0", NOW + 60, {"a:1": 6})
    assert kept.members("rs0") == ["a:1"]
    kept.keep_sets(["other"])
    assert kept.points("rs0", "a:1", 0) == [] and kept.point_count() == 0


def test_a_trend_follows_the_lags_the_history_kept_at_most_the_last_few_polls():
    kept = LagHistory()
    for t, lag in polls(*range(0, 60_000, 2_000)):
        kept.record("rs0", t, {"db1:27017": lag})
    recent = kept.recent("rs0", "db1:27017", FIT_POINTS)
    assert len(recent) == FIT_POINTS and recent[-1] == (NOW, 58_000)
    found = trend(recent, NOW)
    assert found is not None and math.isclose(found.ms_per_min, 2_000)


# --- The store's history keeps its own time (docs/domain.md §17) ------------------------------------------------


def _published(dates_ms: list[int], lags_ms: list[int]) -> View:
    """A real store fed one poll a minute by its own monotonic clock, each poll's status `date` as given."""
    clock = FakeClock()
    store = SnapshotStore("clusterKeeper", 60, monotonic=clock, wall=lambda: 1_723_763_175.0)
    for date_ms, lag_ms in zip(dates_ms, lags_ms, strict=True):
        store.publish(replace(healthy_set(lag_ms), collected_at_ms=date_ms), duration_s=0.04)
        clock.advance(60)
    return store.view()


def test_one_poll_whose_date_lies_far_in_the_future_keeps_the_24_hour_history():
    dates = [COLLECTED_AT_MS + i * 60_000 for i in range(4)] + [COLLECTED_AT_MS + 2 * 86_400_000]
    view = _published(dates, [10_000, 12_000, 14_000, 16_000, 18_000])
    points = view.history.points("rs0", "db1:27017", -math.inf)
    assert [lag for _, lag in points] == [10_000, 12_000, 14_000, 16_000, 18_000]
    assert [b - a for (a, _), (b, _) in itertools.pairwise(points)] == [60, 60, 60, 60]
    assert math.isclose(view.single.trend_of("db1:27017").ms_per_min, 2_000)


def test_a_date_stepped_back_an_hour_keeps_the_history_in_poll_order_and_the_trend_true():
    dates = [COLLECTED_AT_MS, COLLECTED_AT_MS + 60_000, COLLECTED_AT_MS - 3_480_000, COLLECTED_AT_MS - 3_420_000]
    view = _published(dates, [10_000, 12_000, 14_000, 16_000])
    points = view.history.points("rs0", "db1:27017", -math.inf)
    assert [lag for _, lag in points] == [10_000, 12_000, 14_000, 16_000]
    assert math.isclose(view.single.trend_of("db1:27017").ms_per_min, 2_000)
