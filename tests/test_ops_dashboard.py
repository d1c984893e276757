"""The Grafana dashboard and its provisioning: structure, datasource variable, metric names, thresholds, and every
query parsed and (for the key panels) evaluated by promtool on a simulated replica set.

There is no Grafana here; a later test runs `ops_util.dashboard_queries()` against a real Prometheus."""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from ops_util import (
    DASHBOARD,
    REPO,
    dashboard_queries,
    iter_panels,
    load_dashboard,
    metric_names,
    run_promtool,
    substitute,
    undocumented_metrics,
    variable_queries,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PROVISIONING = REPO / "grafana" / "provisioning"


def datasource_problems(dashboard: dict) -> list[str]:
    """Panels and targets that do not take their datasource from the ${datasource} variable."""
    problems = []
    for panel in iter_panels(dashboard):
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != DATASOURCE:
            problems.append(f"panel {panel.get('title')!r}: datasource {panel.get('datasource')!r}")
        for target in panel.get("targets", []):
            if target.get("datasource") != DATASOURCE:
                problems.append(
                    f"panel {panel.get('title')!r} target {target.get('refId')}: {target.get('datasource')}"
                )
    return problems


def all_exprs(dashboard: dict) -> list[str]:
    return [query.raw_expr for query in dashboard_queries(dashboard)] + list(variable_queries(dashboard).values())


def panel(dashboard: dict, title: str) -> dict:
    (found,) = [p for p in iter_panels(dashboard) if p.get("title") == title]
    return found


def mapping_texts(panel_: dict) -> dict[str, tuple[str, str]]:
    out = {}
    for mapping in panel_["fieldConfig"]["defaults"].get("mappings", []):
        if mapping["type"] == "value":
            out.update({value: (r["text"], r["color"]) for value, r in mapping["options"].items()})
    return out


def test_the_dashboard_is_valid_json_with_unique_panel_ids():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in iter_panels(dashboard)]
    assert len(ids) == len(set(ids)) > 10
    assert dashboard["uid"] == "replicationlag"


def test_every_panel_and_target_takes_the_datasource_variable():
    dashboard = load_dashboard()
    assert datasource_problems(dashboard) == []
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("infra", "set"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
    assert variable_queries(dashboard)["infra"].startswith("label_values(")
    assert variable_queries(dashboard)["set"].startswith("label_values(")


def test_the_datasource_check_flags_a_hard_wired_datasource():
    dashboard = load_dashboard()
    broken = copy.deepcopy(dashboard)
    lag = panel(broken, "Effective replication lag per member")
    lag["targets"][0]["datasource"] = {"type": "prometheus", "uid": "prometheus"}
    assert datasource_problems(broken) == [
        "panel 'Effective replication lag per member' target A: {'type': 'prometheus', 'uid': 'prometheus'}"
    ]


def test_every_metric_the_dashboard_reads_is_exported_by_the_exporter():
    assert undocumented_metrics(all_exprs(load_dashboard())) == set()


def test_the_metric_check_flags_a_dashboard_reading_an_unknown_metric():
    broken = copy.deepcopy(load_dashboard())
    lag = panel(broken, "Effective replication lag per member")
    lag["targets"][0]["expr"] = 'mongodb_replset_member_replication_lag{set=~"$set"}'
    assert undocumented_metrics(all_exprs(broken)) == {"mongodb_replset_member_replication_lag"}


def test_the_lag_panel_draws_the_5_and_30_second_thresholds():
    lag = panel(load_dashboard(), "Effective replication lag per member")
    defaults = lag["fieldConfig"]["defaults"]
    steps = [(step["value"], step["color"]) for step in defaults["thresholds"]["steps"]]
    assert steps == [(None, "green"), (5, "yellow"), (30, "red")]
    assert defaults["custom"]["thresholdsStyle"]["mode"] != "off"
    assert defaults["unit"] == "s"
    assert metric_names(lag["targets"][0]["expr"]) == {"mongodb_replication_lag_seconds"}


def test_the_cluster_status_reads_green_yellow_red_in_colour():
    status = panel(load_dashboard(), "Cluster status")
    assert mapping_texts(status) == {"0": ("GREEN", "green"), "1": ("YELLOW", "yellow"), "2": ("RED", "red")}
    assert metric_names(status["targets"][0]["expr"]) == {"mongodb_replication_status"}


def test_the_member_state_timeline_names_every_state_code():
    states = panel(load_dashboard(), "Member state")
    assert states["type"] == "state-timeline"
    texts = mapping_texts(states)
    assert {code: text for code, (text, _) in texts.items()} == {
        "0": "STARTUP",
        "1": "PRIMARY",
        "2": "SECONDARY",
        "3": "RECOVERING",
        "5": "STARTUP2",
        "6": "UNKNOWN",
        "7": "ARBITER",
        "8": "DOWN",
        "9": "ROLLBACK",
        "10": "REMOVED",
    }
    assert all("green" in texts[code][1] for code in ("1", "2"))
    assert all("red" in texts[code][1] for code in ("6", "8", "9", "10"))


def test_the_exporter_stability_panels_count_restarts_and_uptime():
    dashboard = load_dashboard()
    restarts = panel(dashboard, "Exporter restarts (24 h)")["targets"][0]["expr"]
    uptime = panel(dashboard, "Exporter uptime")["targets"][0]["expr"]
    assert restarts.startswith("changes(process_start_time_seconds[24h])")
    assert uptime.startswith("time() - process_start_time_seconds")


def test_every_dashboard_variable_in_a_query_has_a_value():
    queries = dashboard_queries(infra="clusterKeeper", set="rs0")
    assert queries
    for query in queries:
        assert "$" not in query.expr and "[[" not in query.expr, query
    with pytest.raises(KeyError, match="cluster"):
        substitute('mongodb_replication_up{infra="$cluster"}', {"infra": "x"})


def recording_rules(exprs: list[str]) -> str:
    rules = [{"record": f"dashboard:query_{n}", "expr": expr} for n, expr in enumerate(exprs)]
    return yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False)


def test_promtool_parses_every_dashboard_query(tmp_path):
    rules = tmp_path / "dashboard_rules.yml"
    queries = dashboard_queries()
    rules.write_text(recording_rules([q.expr for q in queries]), encoding="utf-8")
    result = run_promtool("check", "rules", rules)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_promtool_rejects_a_dashboard_query_that_does_not_parse(tmp_path):
    rules = tmp_path / "dashboard_rules.yml"
    rules.write_text(recording_rules(["count by (infra, set (mongodb_replication_member_health == 0)"]))
    result = run_promtool("check", "rules", rules)
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


# A scrape of the exporter as Prometheus stores it (job and instance added), for two sets of infra clusterKeeper:
# rs0 with a primary, a secondary 0.25 s behind, a member delayed by one hour and 0.8 s behind its delay, a DOWN
# member and an arbiter; rs1 all healthy. The exporter restarted twice; Prometheus's own process restarts often.
SCRAPED = 'job="replicationlag", instance="exporter:9218", infra="clusterKeeper"'
SIMULATED_SERIES = [
    ("mongodb_replication_up", "", "1x40"),
    ("mongodb_replication_status", 'set="rs0"', "2x40"),
    ("mongodb_replication_status", 'set="rs1"', "0x40"),
    *[
        ("mongodb_replication_member_state", f'set="rs0", member="{m}"', f"{s}x40")
        for m, s in [
            ("mongo1:27017", 1),
            ("mongo2:27017", 2),
            ("mongo3:27017", 2),
            ("mongo4:27017", 8),
            ("arbiter:27017", 7),
        ]
    ],
    *[
        ("mongodb_replication_member_health", f'set="rs0", member="{m}"', f"{h}x40")
        for m, h in [
            ("mongo1:27017", 1),
            ("mongo2:27017", 1),
            ("mongo3:27017", 1),
            ("mongo4:27017", 0),
            ("arbiter:27017", 1),
        ]
    ],
    ("mongodb_replication_lag_seconds", 'set="rs0", member="mongo2:27017"', "0.25x40"),
    ("mongodb_replication_lag_seconds", 'set="rs0", member="mongo3:27017"', "0.8x40"),
    ("mongodb_replication_raw_lag_seconds", 'set="rs0", member="mongo2:27017"', "0.25x40"),
    ("mongodb_replication_raw_lag_seconds", 'set="rs0", member="mongo3:27017"', "3600.8x40"),
    *[
        ("mongodb_replication_member_delay_seconds", f'set="rs0", member="{m}"', f"{d}x40")
        for m, d in [("mongo1:27017", 0), ("mongo2:27017", 0), ("mongo3:27017", 3600), ("mongo4:27017", 0)]
    ],
    ("mongodb_replication_member_state", 'set="rs1", member="a:27017"', "1x40"),
    ("mongodb_replication_member_state", 'set="rs1", member="b:27017"', "2x40"),
    ("mongodb_replication_member_health", 'set="rs1", member="a:27017"', "1x40"),
    ("mongodb_replication_member_health", 'set="rs1", member="b:27017"', "1x40"),
    ("mongodb_replication_lag_seconds", 'set="rs1", member="b:27017"', "1.5x40"),
]
RESTARTS = [
    ('process_start_time_seconds{job="replicationlag", instance="exporter:9218"}', "100x13 300x13 500x13"),
    ('process_start_time_seconds{job="prometheus", instance="localhost:9090"}', "0+10x40"),
]
EVAL_TIME_S = 600
RS0 = 'infra="clusterKeeper", set="rs0"'
RS1 = 'infra="clusterKeeper", set="rs1"'
MONGO3 = f'{{instance="exporter:9218", job="replicationlag", member="mongo3:27017", {RS0}}}'
OURS = '{instance="exporter:9218", job="replicationlag"}'
EXPECTED = {
    ("Cluster status", "A"): [
        (f"mongodb_replication_status{{instance='exporter:9218', job='replicationlag', {RS0}}}", 2),
        (f"mongodb_replication_status{{instance='exporter:9218', job='replicationlag', {RS1}}}", 0),
    ],
    ("Members down or unhealthy", "A"): [(f"{{{RS0}}}", 1), (f"{{{RS1}}}", 0)],
    ("Largest effective lag", "A"): [(f"{{{RS0}}}", 0.8), (f"{{{RS1}}}", 1.5)],
    ("Delayed members: raw lag against configured delay", "A"): [
        (f"mongodb_replication_raw_lag_seconds{MONGO3}", 3600.8)
    ],
    ("Delayed members: raw lag against configured delay", "B"): [
        (f"mongodb_replication_member_delay_seconds{MONGO3}", 3600)
    ],
    ("Delayed members: raw lag against configured delay", "C"): [(f"mongodb_replication_lag_seconds{MONGO3}", 0.8)],
    ("Exporter restarts (24 h)", "A"): [(OURS, 2)],
    ("Exporter uptime", "A"): [(OURS, EVAL_TIME_S - 500)],
}


def test_the_key_panels_answer_right_on_a_simulated_replica_set(tmp_path):
    queries = {(q.panel_title, q.ref_id): q.expr for q in dashboard_queries(infra="clusterKeeper", set=".*")}
    assert set(EXPECTED) <= set(queries)
    series = [
        {"series": f"{name}{{{SCRAPED}{', ' if extra else ''}{extra}}}", "values": values}
        for name, extra, values in SIMULATED_SERIES
    ]
    series += [{"series": name, "values": values} for name, values in RESTARTS]
    checks = [
        {
            "expr": queries[key],
            "eval_time": f"{EVAL_TIME_S}s",
            "exp_samples": [{"labels": labels.replace("'", '"'), "value": value} for labels, value in samples],
        }
        for key, samples in EXPECTED.items()
    ]
    (tmp_path / "empty_rules.yml").write_text("groups: []\n")
    test_file = tmp_path / "dashboard_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": ["empty_rules.yml"],
                "evaluation_interval": "15s",
                "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": checks}],
            },
            sort_keys=False,
        )
    )
    result = run_promtool("test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisions_the_datasource_and_loads_the_dashboard_folder_compose_mounts():
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    (prometheus,) = datasources
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    assert prometheus["isDefault"] is True
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "replicationlag.yml").read_text())["providers"]
    (provider,) = providers
    assert provider["type"] == "file"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = dict(volume.split(":")[:2][::-1] for volume in compose["services"]["grafana"]["volumes"])
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
