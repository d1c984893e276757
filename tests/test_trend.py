"""The trend of a member's lag, pure and table-driven: sequences of (time, lag) polls with the time given, never a
clock read; the words a YELLOW or RED line carries; the bounded history that feeds it."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
from view_factory import COLLECTED_AT_MS, FakeClock, healthy_set

from replicationlag import history
from replicationlag.history import LagHistory
from replicationlag.store import SnapshotStore
from replicationlag.trend import Trend, trend
from replicationlag.view import View
from replicationlag.words import minutes_words, trend_words

NOW = 1_723_763_174.512


def polls(*lags: int | None, every_s: float = 60.0, now: float = NOW) -> list[tuple[float, int | None]]:
    """One point per poll, the last one at `now`."""
    start = now - every_s * (len(lags) - 1)
    return [(start + i * every_s, lag) for i, lag in enumerate(lags)]


@pytest.mark.parametrize(
    ("points", "ms_per_min", "direction"),
    [
        (polls(10_000, 12_000, 14_000, 16_000, 18_000), 2_000, "rising"),
        (polls(20_000, 17_000, 14_000, 11_000), -3_000, "falling"),
        (polls(7_000, 7_020, 6_990, 7_010), 0, "steady"),
        (polls(5_000, 5_500, 6_000, every_s=5), 6_000, "rising"),  # the demo's 5 s interval
    ],
)
def test_the_rate_is_the_least_squares_slope_over_the_last_minutes(points, ms_per_min, direction):
    found = trend(points, NOW)
    assert found is not None
    assert found.ms_per_min == pytest.approx(ms_per_min, abs=1)
    assert found.direction == direction


@pytest.mark.parametrize(
    "points",
    [
        polls(10_000, 20_000),  # two polls are not a trend
        polls(10_000, None, 30_000, 40_000),  # a poll without a lag value (the member was down)
        [(NOW, 1), (NOW, 2), (NOW, 3)],  # no time between them
        polls(1_000, 2_000, 3_000, now=NOW - 400),  # all older than the window
    ],
)
def test_too_few_or_unusable_points_give_no_trend(points):
    assert trend(points, NOW) is None


def test_points_older_than_the_window_do_not_count():
    old_spike = [(NOW - 3600, 900_000)]
    assert trend(old_spike + polls(10_000, 10_000, 10_000), NOW) == Trend(0)


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


def test_a_trend_follows_the_lags_the_history_kept():
    kept = LagHistory()
    for t, lag in polls(10_000, 12_000, 14_000, 16_000):
        kept.record("rs0", t, {"db1:27017": lag})
    found = trend(kept.points("rs0", "db1:27017", NOW - 300), NOW)
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
