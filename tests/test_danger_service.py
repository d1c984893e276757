"""How dangerous the lag is, end to end: the service as exporter.py builds it, real pymongo over TCP against a
simulated set whose oplogs, commit point, flow control and initial syncs are known exactly; every number read back
through /metrics, the Zero Problem document and the status page."""

from __future__ import annotations

import logging
import math
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from ops_util import promtool
from prometheus_client.parser import text_string_to_metric_families

import bridge
from mongosim import ManualClock, MemberSpec, ReplicaSet
from replicationlag import metrics
from replicationlag import service as service_module
from replicationlag.config import load_settings
from replicationlag.web import page

FIXTURE_NOW_MS = 1_723_763_174_512
HOUR_MS = 3_600_000


MEMBER_LINE = ("- Primary ", "- Secondary ", "- Arbiter ", "- Last known: ")  # not the summary's lines


@dataclass
class Watched:
    rs: ReplicaSet
    built: service_module.Service

    def poll(self) -> None:
        self.built.poll()

    def poll_lags(self, member: int, *lags: int) -> None:
        """One poll a minute, member `member` at each lag in turn; the clock a minute past the last poll after."""
        for lag in lags:
            self.rs.set_lag(member, lag)
            self.poll()
            self.rs.clock.advance(60_000)

    def exposition(self) -> str:
        body, _ = metrics.render(self.built.registry, None)
        return body.decode()

    def metric(self, name: str, **labels: str) -> float | None:
        found = [
            s.value
            for f in text_string_to_metric_families(self.exposition())
            for s in f.samples
            if s.name == name and labels.items() <= s.labels.items()
        ]
        assert len(found) <= 1
        return found[0] if found else None

    def body(self) -> str:
        return bridge.status_document(self.built.store.view())[bridge.SERVICE_ID]["messages"][0]["actionBody"]

    def line(self, name: str) -> str:
        return next(line for line in self.body().splitlines() if line.startswith(MEMBER_LINE) and f" {name} " in line)

    def page(self) -> str:
        return page.render_status_page(self.built.store.view(), document_path=bridge.PATH)

    def name(self, member: int) -> str:
        host, port = self.rs.address(member)
        return f"{host}:{port}"


@pytest.fixture
def watch() -> Iterator[Callable[..., Watched]]:
    started: list[Watched] = []

    def start(members: Any = 3, *, credentials: str = "", **options: Any) -> Watched:
        options.setdefault("clock", ManualClock(FIXTURE_NOW_MS))
        rs = ReplicaSet(members, **options).start()
        uri = rs.uri.replace("mongodb://", f"mongodb://{credentials}@") if credentials else rs.uri
        flags = ["--mongodb.uri", uri, "--collect.timeout", "2", "--web.listen-address", "127.0.0.1:0"]
        # One simulated world: the exporter's clocks are the set's, so ages and trends follow its ManualClock.
        clock = rs.clock
        built = service_module.build_service(
            load_settings(flags, env={}), bridge, monotonic=lambda: clock.now_ms() / 1000, wall_ms=clock.now_ms
        )
        started.append(Watched(rs, built))
        return started[-1]

    yield start
    for watched in started:
        watched.built.stop()
        watched.rs.stop()


def test_each_member_s_oplog_window_is_read_from_its_own_oplog_in_exact_ms(watch):
    w = watch(3)
    w.rs.set_oplog(0, window_ms=2 * HOUR_MS + 7)
    w.rs.set_oplog(1, window_ms=HOUR_MS + 123)
    w.rs.set_lag(1, 4_000)
    w.poll()
    assert w.metric("mongodb_replication_oplog_window_seconds", member=w.name(0)) == (2 * HOUR_MS + 7) / 1000
    assert w.metric("mongodb_replication_oplog_window_seconds", member=w.name(1)) == (HOUR_MS + 123) / 1000
    assert w.metric("mongodb_replication_oplog_full", member=w.name(0)) == 1
    # Direct replication: the primary's window minus the member's raw lag.
    assert w.metric("mongodb_replication_headroom_seconds", member=w.name(1)) == (2 * HOUR_MS + 7 - 4_000) / 1000
    assert w.metric("mongodb_replication_headroom_seconds", member=w.name(0)) is None  # the primary has none


def test_a_not_yet_full_oplog_is_its_age_and_raises_no_alarm_whatever_the_headroom(watch):
    w = watch(3, initiated_ago_ms=20_000)  # a fresh set: the oplog holds 20 s of writes and is far from full
    w.rs.set_lag(1, 15_000)
    w.poll()
    assert w.metric("mongodb_replication_oplog_full", member=w.name(0)) == 0
    assert w.metric("mongodb_replication_oplog_window_seconds", member=w.name(0)) == 20
    assert w.metric("mongodb_replication_headroom_seconds", member=w.name(1)) == 5
    line = w.line(w.name(1))
    assert line.endswith("(oplog headroom 5 s (the oplog is not full yet: not a limit))")
    assert w.metric("mongodb_replication_member_status", member=w.name(1)) == 1  # YELLOW by its lag only


def test_a_member_chained_behind_a_secondary_with_a_small_oplog_is_red_by_its_headroom(watch):
    w = watch(3)
    w.rs.set_oplog(1, window_ms=20_000)
    w.rs.set_sync_source(2, 1)
    w.rs.set_lag(1, 1_000)
    w.rs.set_lag(2, 19_500)
    w.poll()
    assert w.metric("mongodb_replication_headroom_seconds", member=w.name(2)) == 1.5
    assert w.metric("mongodb_replication_member_status", member=w.name(2)) == 2
    assert f"oplog headroom 1 s, 7% of {w.name(1)}'s 20 s window" in w.line(w.name(2))


def test_a_delayed_member_needs_a_window_longer_than_its_delay(watch):
    delayed = MemberSpec("secondary", hidden=True, priority=0, delay_secs=3600)
    w = watch([MemberSpec("primary"), MemberSpec("secondary"), delayed])
    w.rs.set_oplog(0, window_ms=HOUR_MS + 300_000)  # five minutes more than the delay
    w.poll()
    assert w.metric("mongodb_replication_headroom_seconds", member=w.name(2)) == 300
    assert w.metric("mongodb_replication_member_status", member=w.name(2)) == 2
    assert "oplog headroom 5 min, 7% of the primary's 1 h 5 min window" in w.line(w.name(2))


def test_the_majority_commit_lag_and_engaged_flow_control_are_exported_and_stated(watch):
    w = watch(3)
    w.rs.set_commit_lag(12_000)
    w.rs.clock.advance(12_000)
    w.poll()
    assert w.metric("mongodb_replication_majority_commit_lag_seconds", set="rs0") == 12.0
    assert w.metric("mongodb_replication_flow_control_engaged", set="rs0") == 1
    body = w.body()
    assert '- Majority commit point 12000ms behind the primary\'s last write: w: "majority" writes wait' in body
    assert "- Flow control is throttling writes on the primary" in body
    types = {f.name: f.type for f in text_string_to_metric_families(w.exposition())}
    assert types["mongodb_replication_flow_control_lagged"] == "counter"
    assert types["mongodb_replication_flow_control_ticket_wait_seconds"] == "counter"
    assert types["mongodb_replication_flow_control_engaged"] == "gauge"


@pytest.mark.prometheus
def test_the_exposition_with_every_danger_family_passes_promtool(watch):
    w = watch(3)
    w.rs.set_commit_lag(6_000)
    w.rs.clock.advance(6_000)
    w.rs.start_initial_sync(2, total_bytes=512_000, bytes_per_s=1_000)
    w.rs.clock.advance(128_000)
    w.poll()
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=w.exposition(), capture_output=True, text=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_member_in_initial_sync_shows_its_progress_and_estimate(watch):
    w = watch(3)
    w.rs.start_initial_sync(2, total_bytes=512_000_000, bytes_per_s=1_000_000)
    w.rs.clock.advance(128_000)
    w.poll()
    assert w.line(w.name(2)) == f"- Secondary {w.name(2)} STARTUP2: initial sync 25%, about 6 min left"
    assert w.metric("mongodb_replication_initial_sync_progress_ratio", member=w.name(2)) == 0.25
    assert w.metric("mongodb_replication_initial_sync_remaining_seconds", member=w.name(2)) == 384


def test_without_read_on_local_everything_else_works_and_the_document_says_once_what_to_grant(watch):
    w = watch(3, users=[("monitor", "s3cret", ["clusterMonitor"])], credentials="monitor:s3cret")
    w.rs.set_lag(1, 1_239)
    w.poll()
    body = w.body()
    assert f"- Secondary {w.name(1)} replication lag 1239ms" in body  # the naive measure still works
    grant = "- Oplog windows need read on the local database: grant the monitoring user read on local"
    assert body.count(grant) == 1
    assert w.metric("mongodb_replication_oplog_window_seconds", member=w.name(0)) is None
    assert w.metric("mongodb_replication_flow_control_enabled", set="rs0") == 1  # clusterMonitor is enough there


def test_a_rising_lag_says_how_fast_and_when_it_turns_red(watch):
    w = watch(3)
    w.poll_lags(1, 10_000, 12_000, 14_000, 16_000, 18_000)
    line = w.line(w.name(1))
    assert line.startswith(f"- Secondary {w.name(1)} replication lag 18000ms (rising 2.0 s/min, RED in about 6 min; ")


def test_a_falling_lag_says_when_it_will_have_caught_up(watch):
    w = watch(3)
    w.poll_lags(1, 30_000, 25_000, 20_000, 15_000)
    assert "(falling 5.0 s/min, caught up in about 3 min; " in w.line(w.name(1))


def test_the_status_page_draws_each_member_s_history_as_inline_svg(watch):
    w = watch(3)
    for poll, lag in enumerate((1_000, 6_000, 40_000)):
        w.rs.clock.advance(60_000 if poll else 0)  # a poll a minute; the page is read right after the last
        w.rs.set_lag(1, lag)
        w.rs.set_lag(2, lag // 2)
        w.poll()
    html = w.page()
    charts = [chunk.split("</svg>")[0] + "</svg>" for chunk in html.split("<svg ")[1:]]
    # Two minutes kept: one chart, and it spends its width on them (the day's chart would draw the same again).
    assert len(charts) == 1
    assert "rs0: replication lag, last 2 min (all kept so far)" in charts[0]
    assert ">2 min ago</text>" in charts[0]
    for chart in charts:
        svg = ET.fromstring("<svg " + chart)
        texts = " ".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
        assert w.name(1) in texts and w.name(2) in texts
        assert "5 s" in texts and "30 s" in texts
        assert len(list(svg.iter("{http://www.w3.org/2000/svg}polyline"))) == 2
    assert "<script" not in html and "src=" not in html
    assert "kept in memory only" in html


# --- Clocks (docs/domain.md §17) ------------------------------------------------------------------------------


def _clock_lines(w: Watched) -> list[str]:
    return [line for line in w.body().splitlines() if line.startswith("- The status date of ")]


def test_a_primary_whose_clock_was_stepped_back_keeps_the_real_lag_and_the_document_and_the_log_say_so(watch, caplog):
    w = watch(3)
    w.rs.set_lag(1, 20_000)
    w.rs.set_clock_offset(0, -60_000)  # the primary's `date` is now a minute behind its own newest write
    with caplog.at_level(logging.INFO, logger="replicationlag.poller"):
        w.poll()
        w.poll()
        document = bridge.status_document(w.built.store.view())[bridge.SERVICE_ID]
        assert document["status"] == "YELLOW"  # it used to be GREEN, the member at 0 ms, no word of a clock
        assert w.line(w.name(1)).startswith(f"- Secondary {w.name(1)} replication lag 20000ms (")
        assert "the oplog entry's age is not used" in w.line(w.name(1))
        primary = w.name(0)
        assert _clock_lines(w) == [
            f"- The status date of {primary} is 60000 ms behind the newest write the set reports (its own): a clock "
            "was stepped back or the members' clocks disagree; lags are from wall times, which no clock enters",
            f"- The status date of {primary} is 60000 ms behind this exporter's clock during the poll: one of the two "
            "clocks is wrong (check NTP on both); the data age and the lag history use the exporter's own monotonic "
            "clock",
        ]
        assert f'<p class="warn">the status date of {primary} is 60000 ms behind the newest write' in w.page()
        w.rs.set_clock_offset(0, 0)
        w.poll()
    assert _clock_lines(w) == []
    assert w.line(w.name(1)).startswith(f"- Secondary {w.name(1)} replication lag 20000ms")
    clocks = [r for r in caplog.records if "clocks disagree" in r.getMessage() or "clocks agree" in r.getMessage()]
    said = [r.getMessage() for r in clocks]
    assert len(said) == 2  # once when they start to disagree (not at every poll), once when they agree again
    assert said[0].startswith(f"replica set {w.rs.name}: clocks disagree: the status date of {primary} is 60000 ms")
    assert said[1] == f"replica set {w.rs.name}: the clocks agree again"
    assert [r.levelname for r in clocks] == ["WARNING", "INFO"]


def test_one_poll_whose_date_lies_far_in_the_future_is_said_and_neither_wipes_the_history_nor_inflates_a_lag(watch):
    w = watch(3)
    for lag in (10_000, 12_000, 14_000):
        w.rs.set_lag(1, lag)
        w.poll()
        w.rs.clock.advance(60_000)
    w.rs.set_lag(1, 16_000)
    w.rs.set_clock_offset(0, 2 * 86_400_000)  # one answer two days ahead
    w.poll()
    (said,) = _clock_lines(w)
    assert said.startswith(f"- The status date of {w.name(0)} is 172800000 ms ahead of this exporter's clock")
    assert w.line(w.name(1)).startswith(f"- Secondary {w.name(1)} replication lag 16000ms (rising 2.0 s/min")
    view = w.built.store.view()
    lags = [lag for _, lag in view.history.points(w.rs.name, w.name(1), -math.inf)]
    assert lags == [10_000, 12_000, 14_000, 16_000]  # the day before it is still there
    w.rs.set_clock_offset(0, 0)
    w.rs.clock.advance(60_000)
    w.rs.set_lag(1, 18_000)
    w.poll()
    assert _clock_lines(w) == []
    assert [lag for _, lag in w.built.store.view().history.points(w.rs.name, w.name(1), -math.inf)] == [
        10_000,
        12_000,
        14_000,
        16_000,
        18_000,
    ]


# --- What a failed read says (issue 22 item 8) --------------------------------------------------------------


def test_a_member_whose_host_name_makes_no_uri_is_told_about_its_host_name_not_about_escaping_a_password(watch):
    w = watch(3)
    w.rs.rename(2, "db@2:27017")  # a replica-set config can hold such a name; no URI can
    w.poll()
    line = w.line("db@2:27017")
    assert "password" not in line and "escaped" not in line and "URI was rejected" not in line
    assert line.startswith("- Secondary db@2:27017 replication lag 0ms (")
    assert "its host name 'db@2:27017' is not a host:port a client can connect to" in line


def test_a_failed_oplog_read_on_a_member_names_the_read_once(watch):
    w = watch(3)
    w.rs.fail_command(1, "find", 2)  # mongod's failCommand failpoint: every find on member 1 answers BadValue
    w.poll()
    line = w.line(w.name(1))
    assert line.count("find on local.oplog.rs") == 1
    assert "find on local.oplog.rs failed with code 2 BadValue" in line
    w.rs.fail_command(1, "find", None)
    w.poll()
    assert "find on local.oplog.rs" not in w.line(w.name(1))


def test_the_forecast_in_the_document_comes_true_for_a_lag_that_moves_every_second(watch):
    """The simulated member's lag changes every second (flat, a jump that holds, then a climb at 6 s/min) and the
    service polls every 5 s, as the demo does: each forecast the document carries is checked against when the lag
    really turns RED."""

    def lag_at(s: int) -> int:
        if s < 40:
            return 2_000 + 40 * (s % 3)  # a small wobble
        if s < 80:
            return 9_000  # a batch: it jumped and held
        return 9_000 + 100 * (s - 80)  # 6 s/min: RED at 290 s

    w = watch(3)
    said: list[tuple[int, str]] = []
    for second in range(300):
        w.rs.set_lag(1, lag_at(second))
        if second % 5 == 0:
            w.poll()
            said.append((second, w.line(w.name(1))))
        w.rs.clock.advance(1_000)
    red_at = next(s for s in range(400) if lag_at(s) >= 30_000)
    forecast = re.compile(r"\(rising (\d+\.\d) s/min, RED in (under a minute|about (\d+) min)")
    etas = [(s, found) for s, line in said if (found := forecast.search(line))]
    assert any(found[3] for _, found in etas), said  # the climb was forecast minutes ahead
    for second, found in etas:
        assert abs(float(found[1]) - 6) <= 0.3 * 6, (second, found[0])
        low, high = (0, 60) if found[3] is None else (60 * int(found[3]) - 30, 60 * int(found[3]) + 30)
        assert low - 60 <= red_at - second <= high + 60, (second, found[0])
    hold = [line for s, line in said if 55 <= s < 80]  # the jump came at 40 s: three polls later it is steady
    assert hold and all("(steady; " in line for line in hold), hold
    assert not any("RED in" in line or "falling" in line for s, line in said if s < 80), said


def change_sync_source(w: Watched) -> None:
    w.rs.set_sync_source(1, 2)  # chained now: its lag behind the primary is another story


def restart_between_polls(w: Watched) -> None:
    """A restart that ends before the next poll shows no DOWN or STARTUP2 to the exporter: only the member's uptime,
    which falls back."""
    w.rs.take_down(1)
    w.rs.bring_up(1)  # a new process, SECONDARY again before the next poll


@pytest.mark.parametrize("change", [change_sync_source, restart_between_polls], ids=["sync source", "restart"])
def test_the_trend_starts_over_when_the_member_changes_its_sync_source_or_restarts(watch, change):
    w = watch(3)
    w.rs.clock.advance(3_600_000)  # an hour up: a restart's uptime is far below it
    w.poll_lags(1, 10_000, 12_000, 14_000, 16_000)
    assert "(rising 2.0 s/min; " in w.line(w.name(1))  # RED in 7 min is beyond twice the 3 min fitted
    change(w)
    for lag in (18_000, 20_000, 22_000):
        w.rs.set_lag(1, lag)
        w.poll()
        assert "rising" not in w.line(w.name(1))  # three polls since the change are not a trend
        w.rs.clock.advance(60_000)
    w.poll_lags(1, 24_000)
    assert "(rising 2.0 s/min, RED in about 3 min; " in w.line(w.name(1))
