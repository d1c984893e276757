"""The status page's lag charts: a day of polls thinned to at most `max_points` a member by keeping each bucket's
largest lag (a spike is never averaged away, a gap stays a gap), and the points drawn where those lags are. The
page test reads the SVG the status page serves after a day of polls published to the real store."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from view_factory import COLLECTED_AT_MS, FakeClock, member, primary, snapshot

import bridge
from replicationlag.store import SnapshotStore
from replicationlag.web.charts import BOTTOM, HEIGHT, LEFT, MIN_TOP_MS, RIGHT, TOP, WIDTH, lag_chart, thinned
from replicationlag.web.page import HISTORY_POINTS, render_status_page

SVG = "{http://www.w3.org/2000/svg}"
DAY_S, POLL_S = 24 * 3600, 30
POLLS = DAY_S // POLL_S  # 2 880: a day at one poll every 30 s, what the history keeps
SPIKE_AT, SPIKE_MS = 1_000, 45_000  # one poll of the day
GAP = range(2_000, 2_120)  # an hour of polls without a lag (the member was DOWN)


def lag_at(poll: int) -> int | None:
    if poll == SPIKE_AT:
        return SPIKE_MS
    if poll in GAP:
        return None
    return 1_000 + poll % 7  # small lags that differ, so a bucket's largest is a real choice


def day_of_points(end_s: float) -> list[tuple[float, int | None]]:
    return [(end_s - DAY_S + (i + 1) * POLL_S, lag_at(i)) for i in range(POLLS)]


def test_a_day_of_polls_is_thinned_to_the_bucket_maxima_and_keeps_the_spike_and_the_gap():
    end_s = 100_000.0
    points = day_of_points(end_s)

    kept = thinned(points, end_s - DAY_S, end_s, 240)

    assert len(kept) == 240
    assert [t for t, _ in kept] == sorted(t for t, _ in kept)
    assert (points[SPIKE_AT][0], SPIKE_MS) in kept  # the spike, at its own time, not averaged into its bucket
    assert max(lag for _, lag in kept if lag is not None) == SPIKE_MS
    # Buckets of 12 polls: those wholly inside the gap have no lag; one that overlaps it keeps the lag it has.
    width_s = DAY_S / 240
    gap_start, gap_end = points[GAP.start][0], points[GAP.stop - 1][0]
    inside = [lag for t, lag in kept if gap_start + width_s <= t <= gap_end - width_s]
    assert inside and all(lag is None for lag in inside)
    assert all(lag is not None for t, lag in kept if not gap_start - width_s <= t <= gap_end + width_s)
    for t, lag in kept:  # each kept lag is the largest of its bucket
        bucket = int((t - (end_s - DAY_S)) / width_s)
        same = [v for u, v in points if v is not None and int((u - (end_s - DAY_S)) / width_s) == bucket]
        assert lag == (max(same) if same else None)


@pytest.mark.parametrize(
    ("points", "start_s", "end_s", "max_points", "expected"),
    [
        ([(1.0, 5), (2.0, 6)], 0.0, 10.0, 2, [(1.0, 5), (2.0, 6)]),  # no more than allowed: unchanged
        ([(-1.0, 9), (1.0, 5), (11.0, 9)], 0.0, 10.0, 5, [(1.0, 5)]),  # outside the span: left out
        ([(1.0, 5), (2.0, None), (3.0, 7)], 0.0, 10.0, 1, [(3.0, 7)]),  # one bucket: its largest
        ([(1.0, None), (2.0, None), (6.0, 3)], 0.0, 10.0, 2, [(1.0, None), (6.0, 3)]),  # a bucket of gaps
        ([(1.0, 8), (9.9, 2), (10.0, 4)], 0.0, 10.0, 2, [(1.0, 8), (10.0, 4)]),  # the end is in the last bucket
    ],
)
def test_thinning_keeps_each_buckets_largest_lag(points, start_s, end_s, max_points, expected):
    assert thinned(points, start_s, end_s, max_points) == expected


def drawn(svg: str) -> tuple[float, list[list[tuple[float, float]]]]:
    """The chart's top of scale (ms) and each polyline's points as (seconds from the left, lag in ms)."""
    root = ET.fromstring(svg)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    lines = [
        [tuple(map(float, pair.split(","))) for pair in line.get("points").split()]
        for line in root.iter(f"{SVG}polyline")
    ]
    top_label = next(t.text for t in root.iter(f"{SVG}text") if t.get("y") == str(TOP + 8))
    return float(top_label.split()[0]) * 1000, [
        [((x - LEFT) / plot_w, (TOP + plot_h - y) / plot_h) for x, y in line] for line in lines
    ]


def test_the_chart_draws_the_thinned_points_where_their_lags_are_and_breaks_the_line_at_the_gap():
    end_s = 100_000.0
    svg = lag_chart("rs0: last 24 h", [("db1:27017", day_of_points(end_s))], end_s - DAY_S, end_s, max_points=240)

    top_label_ms, lines = drawn(svg)
    assert len(lines) == 2  # the gap breaks the line in two
    points = [p for line in lines for p in line]
    assert 230 <= len(points) <= 240  # the buckets inside the gap draw nothing
    top_ms = SPIKE_MS * 1.1  # the scale leaves a tenth above the largest lag
    assert top_label_ms == 50_000  # printed in whole seconds, rounded up
    highest = max(points, key=lambda p: p[1])
    assert highest[1] * top_ms == pytest.approx(SPIKE_MS, rel=0.01)  # the spike reaches its own height
    assert highest[0] * DAY_S == pytest.approx((SPIKE_AT + 1) * POLL_S, abs=DAY_S / 560)  # at its own time
    assert all(p[1] * top_ms == pytest.approx(1_003, abs=400) for p in points if p is not highest)
    root = ET.fromstring(svg)
    assert "db1:27017 1006ms" in [t.text for t in root.iter(f"{SVG}text")]  # the last poll's lag, at the right


def test_a_chart_of_small_lags_still_shows_the_red_line():
    svg = lag_chart("rs0: last hour", [("db1:27017", [(0.0, 100), (60.0, 200)])], 0.0, 60.0)
    top_label_ms, lines = drawn(svg)
    assert top_label_ms == MIN_TOP_MS
    pixel_ms = MIN_TOP_MS / (HEIGHT - TOP - BOTTOM) / 10  # coordinates are written to a tenth of a pixel
    assert [lag * MIN_TOP_MS for _, lag in lines[0]] == [
        pytest.approx(100, abs=pixel_ms),
        pytest.approx(200, abs=pixel_ms),
    ]


def test_the_status_page_after_a_day_of_polls_draws_every_poll_of_the_hour_and_thinned_maxima_of_the_day():
    clock = FakeClock()
    store = SnapshotStore("clusterKeeper", POLL_S, monotonic=clock, wall=lambda: COLLECTED_AT_MS / 1000)
    start_ms = COLLECTED_AT_MS - DAY_S * 1000
    for i in range(POLLS):
        lag = lag_at(i)
        secondary = member("db1:27017", lag_ms=lag) if lag is not None else member("db1:27017", 8, None, healthy=False)
        clock.advance(POLL_S)  # the history's time axis is the store's clock: the poll lands now
        store.publish(snapshot(primary(), secondary, collected_at_ms=start_ms + (i + 1) * POLL_S * 1000), 0.01)

    page = render_status_page(store.view(), document_path=bridge.PATH)

    charts = {
        re.search(r"<title>(.*?)</title>", svg)[1]: svg for svg in re.findall(r"<svg .*?</svg>", page, flags=re.DOTALL)
    }
    assert set(charts) == {"rs0: replication lag, last hour", "rs0: replication lag, last 24 h"}
    _, hour = drawn(charts["rs0: replication lag, last hour"])
    assert sum(len(line) for line in hour) == 3600 // POLL_S + 1  # every poll of the hour, both ends in: no thinning
    day_top_ms, day = drawn(charts["rs0: replication lag, last 24 h"])
    assert len(day) == 2  # broken at the hour the member was down
    assert 230 <= sum(len(line) for line in day) <= HISTORY_POINTS
    assert day_top_ms == 50_000 and max(lag for line in day for _, lag in line) * SPIKE_MS * 1.1 == pytest.approx(
        SPIKE_MS, rel=0.01
    )
