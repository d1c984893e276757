"""What Prometheus scrapes: series, values, labels and exposition formats, each test with a fresh registry."""

from __future__ import annotations

import platform
import shutil
import subprocess

import pytest
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as prometheus_text
from view_factory import failure, healthy_set, make_store, member, primary, snapshot

from replicationlag.metrics import build_registry, render
from replicationlag.model import ARBITER, FRESHNESS_LIMIT_S, PRIMARY, SECONDARY
from replicationlag.version import VERSION

SET = {"infra": "clusterKeeper", "set": "rs0"}
DOWN = 8


def at(member_name: str) -> dict[str, str]:
    return {**SET, "member": member_name}


def scrape_of(*results, age_s: float = 0.0, interval_s: float = 60):
    store, clock = make_store(*results, interval_s=interval_s)
    clock.advance(age_s)
    return build_registry(store)


def series(registry, name: str) -> set[str]:
    """The `member` labels of every sample of one metric."""
    return {s.labels["member"] for f in registry.collect() for s in f.samples if s.name == name}


def test_lag_is_exported_in_seconds_with_millisecond_precision():
    registry = scrape_of(healthy_set(1_239, 4_999))

    assert registry.get_sample_value("mongodb_replication_lag_seconds", at("db1:27017")) == 1.239
    assert registry.get_sample_value("mongodb_replication_lag_seconds", at("db2:27017")) == 4.999
    assert registry.get_sample_value("mongodb_replication_up", {"infra": "clusterKeeper"}) == 1


@pytest.mark.parametrize(("lag_ms", "status"), [(4_999, 0), (5_000, 1), (29_999, 1), (30_000, 2)])
def test_the_cluster_status_gauge_follows_the_lag_thresholds(lag_ms, status):
    registry = scrape_of(healthy_set(lag_ms))

    assert registry.get_sample_value("mongodb_replication_status", SET) == status
    assert registry.get_sample_value("mongodb_replication_member_status", at("db1:27017")) == status


def test_a_member_that_left_the_set_is_no_longer_exported():
    store, _ = make_store(healthy_set(0, 1_000))
    registry = build_registry(store)
    assert series(registry, "mongodb_replication_lag_seconds") == {"db1:27017", "db2:27017"}

    store.publish(healthy_set(0), duration_s=0.01)

    assert series(registry, "mongodb_replication_lag_seconds") == {"db1:27017"}
    assert series(registry, "mongodb_replication_member_state") == {"db0:27017", "db1:27017"}
    assert registry.get_sample_value("mongodb_replication_member_health", at("db2:27017")) is None


def test_the_primary_has_no_lag_series():
    registry = scrape_of(healthy_set(0, 1_000))

    assert registry.get_sample_value("mongodb_replication_lag_seconds", at("db0:27017")) is None
    assert registry.get_sample_value("mongodb_replication_raw_lag_seconds", at("db0:27017")) is None
    assert registry.get_sample_value("mongodb_replication_member_delay_seconds", at("db0:27017")) == 0


def test_an_election_keeps_one_lag_series_per_member_with_no_role_label():
    before = snapshot(primary("db0:27017"), member("db1:27017", lag_ms=300), member("db2:27017", lag_ms=800))
    after = snapshot(member("db0:27017", lag_ms=2_000), primary("db1:27017"), member("db2:27017", lag_ms=900))
    store, _ = make_store(before)
    registry = build_registry(store)
    assert series(registry, "mongodb_replication_lag_seconds") == {"db1:27017", "db2:27017"}

    store.publish(after, duration_s=0.01)

    lag_samples = [
        sample
        for family in registry.collect()
        if family.name == "mongodb_replication_lag_seconds"
        for sample in family.samples
    ]
    assert {tuple(sorted(sample.labels)) for sample in lag_samples} == {("infra", "member", "set")}
    assert series(registry, "mongodb_replication_lag_seconds") == {"db0:27017", "db2:27017"}
    assert registry.get_sample_value("mongodb_replication_lag_seconds", at("db2:27017")) == 0.9
    assert registry.get_sample_value("mongodb_replication_lag_seconds", at("db0:27017")) == 2.0
    assert registry.get_sample_value("mongodb_replication_member_state", at("db1:27017")) == PRIMARY


def test_a_down_member_has_state_and_health_but_no_lag_series():
    registry = scrape_of(snapshot(primary(), member("db3:27017", DOWN, None, healthy=False)))

    assert registry.get_sample_value("mongodb_replication_lag_seconds", at("db3:27017")) is None
    assert registry.get_sample_value("mongodb_replication_member_state", at("db3:27017")) == DOWN
    assert registry.get_sample_value("mongodb_replication_member_health", at("db3:27017")) == 0
    assert registry.get_sample_value("mongodb_replication_member_status", at("db3:27017")) == 2
    assert registry.get_sample_value("mongodb_replication_status", SET) == 2


def test_an_arbiter_has_state_health_and_info_but_no_lag_or_delay():
    registry = scrape_of(snapshot(primary(), member("arb:27017", ARBITER, None)))

    assert registry.get_sample_value("mongodb_replication_member_state", at("arb:27017")) == ARBITER
    assert registry.get_sample_value("mongodb_replication_member_health", at("arb:27017")) == 1
    assert registry.get_sample_value("mongodb_replication_lag_seconds", at("arb:27017")) is None
    assert registry.get_sample_value("mongodb_replication_member_delay_seconds", at("arb:27017")) is None
    info = {**at("arb:27017"), "id": "1", "hidden": "false", "arbiter": "true", "precision": ""}
    assert registry.get_sample_value("mongodb_replication_member_info", info) == 1


def test_a_delayed_member_exports_effective_lag_raw_lag_and_its_delay():
    delayed = member("db2:27017", lag_ms=429, hidden=True, delay_ms=3_600_000)

    registry = scrape_of(snapshot(primary(), delayed))

    assert registry.get_sample_value("mongodb_replication_lag_seconds", at("db2:27017")) == 0.429
    assert registry.get_sample_value("mongodb_replication_raw_lag_seconds", at("db2:27017")) == 3600.429
    assert registry.get_sample_value("mongodb_replication_member_delay_seconds", at("db2:27017")) == 3600
    info = {**at("db2:27017"), "id": "1", "hidden": "true", "arbiter": "false", "precision": "ms"}
    assert registry.get_sample_value("mongodb_replication_member_info", info) == 1


def test_a_whole_second_measurement_is_marked_in_the_member_info():
    registry = scrape_of(snapshot(primary(), member("db1:27017", lag_ms=12_000, precision="s")))

    info = {**at("db1:27017"), "id": "1", "hidden": "false", "arbiter": "false", "precision": "s"}
    assert registry.get_sample_value("mongodb_replication_member_info", info) == 1


def test_written_lag_is_exported_only_where_the_server_reports_it():
    registry = scrape_of(snapshot(primary(), member("db1:27017", lag_ms=31_208, written_lag_ms=0), member("db2:27017")))

    assert registry.get_sample_value("mongodb_replication_written_lag_seconds", at("db1:27017")) == 0
    assert registry.get_sample_value("mongodb_replication_written_lag_seconds", at("db2:27017")) is None


def test_a_set_without_primary_keeps_its_lag_series_and_names_the_freshest_reference():
    registry = scrape_of(snapshot(member("db1:27017", SECONDARY, 0), member("db2:27017", SECONDARY, 6_316)))

    assert registry.get_sample_value("mongodb_replication_primary_present", SET) == 0
    assert registry.get_sample_value("mongodb_replication_status", SET) == 2
    assert registry.get_sample_value("mongodb_replication_lag_seconds", at("db2:27017")) == 6.316
    reference = {**SET, "reference": "freshest", "member": "db1:27017"}
    assert registry.get_sample_value("mongodb_replication_reference_info", reference) == 1


def test_a_failed_collection_drops_member_series_and_counts_the_failure_by_kind():
    registry = scrape_of(healthy_set(0), failure("auth"), failure("auth"), failure("timeout", "timed out"))

    assert registry.get_sample_value("mongodb_replication_up", {"infra": "clusterKeeper"}) == 0
    assert registry.get_sample_value("mongodb_replication_status", SET) == 2
    assert series(registry, "mongodb_replication_lag_seconds") == set()
    assert registry.get_sample_value("mongodb_replication_primary_present", SET) is None
    failures = "mongodb_replication_collection_failures_total"
    assert registry.get_sample_value(failures, {"infra": "clusterKeeper", "kind": "auth"}) == 2
    assert registry.get_sample_value(failures, {"infra": "clusterKeeper", "kind": "timeout"}) == 1
    assert registry.get_sample_value(failures, {"infra": "clusterKeeper", "kind": "unreachable"}) == 0


def test_stale_data_drops_member_series_and_reports_its_age():
    registry = scrape_of(healthy_set(0), age_s=FRESHNESS_LIMIT_S + 0.001)

    assert registry.get_sample_value("mongodb_replication_up", {"infra": "clusterKeeper"}) == 0
    assert registry.get_sample_value("mongodb_replication_status", SET) == 2
    assert series(registry, "mongodb_replication_member_state") == set()
    age = registry.get_sample_value("mongodb_replication_snapshot_age_seconds", {"infra": "clusterKeeper"})
    assert age == pytest.approx(FRESHNESS_LIMIT_S + 0.001)


def test_before_the_first_collection_only_the_exporter_series_exist():
    registry = scrape_of()

    assert registry.get_sample_value("mongodb_replication_up", {"infra": "clusterKeeper"}) == 0
    assert registry.get_sample_value("mongodb_replication_status", {"infra": "clusterKeeper", "set": ""}) == 2
    assert registry.get_sample_value("mongodb_replication_snapshot_age_seconds", {"infra": "clusterKeeper"}) is None
    failures = {"infra": "clusterKeeper", "kind": "auth"}
    assert registry.get_sample_value("mongodb_replication_collection_failures_total", failures) == 0


def test_the_collection_time_and_duration_are_exported():
    registry = scrape_of(healthy_set(0))

    infra = {"infra": "clusterKeeper"}
    assert registry.get_sample_value("mongodb_replication_last_success_timestamp_seconds", infra) == 1_723_763_175
    assert registry.get_sample_value("mongodb_replication_collection_duration_seconds", infra) == 0.042


def test_help_texts_say_how_often_mongodb_is_polled():
    text, _ = render(scrape_of(healthy_set(0), interval_s=15), None)

    helps = [line for line in text.decode().splitlines() if line.startswith("# HELP mongodb_replication_")]
    assert helps
    assert all("polled every 15 s, not at scrape time" in line for line in helps)


def test_the_registry_carries_process_and_platform_metrics_and_leaves_the_global_registry_alone():
    registry = scrape_of(healthy_set(0))

    assert registry.get_sample_value("process_start_time_seconds") > 0
    assert any(f.name == "python_info" for f in registry.collect())
    assert REGISTRY.get_sample_value("mongodb_replication_up", {"infra": "clusterKeeper"}) is None


def test_a_scraper_without_preference_gets_prometheus_text_0_0_4():
    text, content_type = render(scrape_of(healthy_set(1_239)), "*/*")

    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert 'mongodb_replication_lag_seconds{infra="clusterKeeper",member="db1:27017",set="rs0"} 1.239' in (
        text.decode().splitlines()
    )


def test_a_scraper_asking_for_openmetrics_gets_valid_openmetrics():
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"

    text, content_type = render(scrape_of(healthy_set(1_239), failure("timeout", "timed out")), accept)

    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert text.decode().endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert families["mongodb_replication_collection_failures"].type == "counter"


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        ("application/openmetrics-text;q=0.1, text/plain;q=0.9", False),
        ("text/plain;q=0.9, application/openmetrics-text;q=0.1", False),
        ("application/openmetrics-text;version=1.0.0;q=0", False),
        ("*/*;q=0.9, application/openmetrics-text;q=0.5", False),
        ("text/plain;q=0.1, application/openmetrics-text;version=1.0.0;q=0.9", True),
        ("application/openmetrics-text;version=0.0.1;q=0.9, application/openmetrics-text;version=1.0.0;q=0.5", True),
        ("application/openmetrics-text;version=0.0.1", False),
        ("application/openmetrics-text; version=1.0.0; Q=0.5, text/plain; q=0.5", True),  # a tie: as listed
        ("application/openmetrics-text;q=bogus, text/plain;q=0.5", True),  # an unreadable q counts as 1
    ],
)
def test_the_accept_header_q_values_choose_the_format(accept, openmetrics):
    """Issue 17 item 10: `openmetrics;q=0.1, text/plain;q=0.9` still got OpenMetrics."""
    text, content_type = render(scrape_of(healthy_set(1_239)), accept)
    assert content_type.startswith("application/openmetrics-text") is openmetrics
    assert text.decode().endswith("# EOF\n") is openmetrics


@pytest.mark.prometheus
@pytest.mark.parametrize(
    "results",
    [
        (),
        (
            snapshot(
                primary(),
                member("db1:27017", lag_ms=1_239, written_lag_ms=0),
                member("db2:27017", lag_ms=429, hidden=True, delay_ms=3_600_000),
                member("db3:27017", DOWN, None, healthy=False),
                member("arb:27017", ARBITER, None),
            ),
        ),
        (healthy_set(0), failure()),
    ],
    ids=["before the first poll", "every kind of member", "failed"],
)
def test_the_exposition_passes_promtool_check_metrics(results):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: ./run tests installs it (Debian package 'prometheus')"
    text, _ = render(scrape_of(*results), None)

    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False)

    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert checked.stdout.decode() + checked.stderr.decode() == ""


def test_two_members_reporting_one_name_never_give_one_label_set_twice():
    """Issue 17 item 9: duplicate series with identical labels make Prometheus reject the whole scrape."""
    twins = snapshot(primary(), member("db1:27017", lag_ms=1_000), member("db1:27017", lag_ms=2_000))
    store, _ = make_store(twins)
    text, _ = render(build_registry(store), None)

    samples = [(s.name, tuple(sorted(s.labels.items()))) for f in prometheus_text(text.decode()) for s in f.samples]
    assert len(samples) == len(set(samples))
    lags = {dict(labels)["member"] for name, labels in samples if name == "mongodb_replication_lag_seconds"}
    assert lags == {"db1:27017#1", "db1:27017#2"}


def test_the_build_info_names_the_exporter_version():
    store, _ = make_store(healthy_set(0))
    labels = {"version": VERSION, "python_version": platform.python_version()}
    assert build_registry(store).get_sample_value("mongodb_replication_exporter_build_info", labels) == 1
