"""The Grafana dashboard and its provisioning: structure, the datasource, infra, shard, set and top variables,
metric names, thresholds, and every query parsed and (for the key panels) evaluated by promtool on simulated plain
replica sets and a simulated sharded cluster, with a shard picked as Grafana sends it (`ops_util.grafana_regex`);
the danger row's panels evaluated on simulated sets, its headroom panels labelling the sync source's oplog full
exactly where the headroom alert rules would judge it so.

There is no Grafana here; a later test runs `ops_util.dashboard_queries()` against a real Prometheus."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml
from ops_util import (
    DASHBOARD,
    REPO,
    dashboard_queries,
    documented_metrics,
    grafana_regex,
    iter_panels,
    load_dashboard,
    metric_names,
    percona_table,
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
    for name in ("infra", "shard", "set"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
        assert variable_queries(dashboard)[name].startswith("label_values(")


def test_the_set_variable_lists_the_sets_of_the_selected_shards_and_all_means_exactly_those():
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert [v["name"] for v in dashboard["templating"]["list"]] == [
        "datasource",
        "infra",
        "shard",
        "set",
        "top",
        "location",
    ]
    queries = variable_queries(dashboard)
    assert queries["shard"] == 'label_values(mongodb_replication_set_info{infra=~"$infra"}, shard)'
    assert queries["set"] == 'label_values(mongodb_replication_set_info{infra=~"$infra", shard=~"$shard"}, set)'
    # A plain replica set has shard "" (no label in Prometheus): the shard list is empty and only All, ".*",
    # matches it. A set's All must not be ".*", which would ignore the shard chosen: without a custom all value
    # Grafana sends the regex of the sets it listed for that shard.
    assert variables["shard"]["includeAll"] and variables["shard"]["allValue"] == ".*"
    assert variables["set"]["includeAll"] and variables["set"].get("allValue") in (None, "")
    for name in ("shard", "set"):
        assert variables[name]["multi"] and variables[name]["current"]["value"] == ["$__all"]


def test_member_level_panels_show_the_worst_members_only_so_a_hundred_shards_stay_readable():
    dashboard = load_dashboard()
    top = {v["name"]: v for v in dashboard["templating"]["list"]}["top"]
    assert top["type"] == "custom" and top["current"]["value"] == "10"
    assert [o["value"] for o in top["options"]] == top["query"].split(",")
    for title, selector in [
        ("Effective replication lag per member", "topk($top, mongodb_replication_lag_seconds{"),
        ("Member status", "topk($top, mongodb_replication_member_status{"),
        ("Member state", "topk($top, mongodb_replication_member_status{"),
        ("Set data age", "topk($top, mongodb_replication_set_snapshot_age_seconds{"),
    ]:
        (target,) = panel(dashboard, title)["targets"]
        assert selector in target["expr"], title
        assert "{{set}}" in target["legendFormat"], title
    # The "Now" tiles are one per infra whatever the number of sets: the worst of the selection.
    for title in ("Cluster status", "Primary", "Members down or unhealthy", "Largest effective lag"):
        (target,) = panel(dashboard, title)["targets"]
        assert target["expr"].startswith(("max by (infra) (", "min by (infra) (", "sum by (infra) (")), title
        assert target["legendFormat"] == "{{infra}}", title


def test_the_sharded_row_has_its_panels_and_every_set_query_follows_the_set_variable():
    dashboard = load_dashboard()
    titles = [p.get("title") for p in dashboard["panels"]]
    row = titles.index("Sharded cluster: sets, routers, shard map")
    assert titles[row + 1 : row + 7] == [
        "Worst lag by shard",
        "Sets collected",
        "Routers",
        "Draining shards",
        "Shard map age",
        "Set data age",
    ]
    worst = panel(dashboard, "Worst lag by shard")
    assert worst["type"] == "table"
    assert worst["options"]["sortBy"] == [{"displayName": "worst lag", "desc": True}]
    assert worst["targets"][0]["expr"].startswith("sort_desc(max by (infra, set) (mongodb_replication_lag_seconds{")
    assert "group_left (shard, role)" in worst["targets"][0]["expr"]
    # Every query reading a per-set family is filtered by both variables (no panel ignores a chosen shard).
    per_set = {"set_info", "set_up", "set_snapshot_age_seconds", "shard_draining", "lag_seconds", "status"}
    for query in dashboard_queries(dashboard):
        for name in metric_names(query.raw_expr):
            if name.removeprefix("mongodb_replication_") in per_set:
                selectors = re.findall(re.escape(name) + r"\{([^}]*)\}", query.raw_expr)
                assert selectors, (query.panel_title, name)
                for selector in selectors:
                    assert 'infra=~"$infra"' in selector and 'set=~"$set"' in selector, (query.panel_title, name)


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


def evaluate_panels(tmp_path, series: list[dict], checks: list[dict]) -> None:
    """Run `checks` (promtool promql_expr_test entries) on `series` (input_series, one sample per 15 s)."""
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


def scraped(series: list[tuple[str, str, str]]) -> list[dict]:
    """(name, labels, values) as Prometheus stores a scrape of the exporter: with its job and instance."""
    return [
        {"series": f'{name}{{job="replicationlag", instance="exporter:9218", {labels}}}', "values": values}
        for name, labels, values in series
    ]


def expected_checks(queries: dict, expected: dict, eval_time_s: int) -> list[dict]:
    """promtool checks of the panel queries `queries[key]` against `expected[key]`: (labels, value) pairs, where
    labels use ' for " and OURS stands for the exporter's job and instance."""
    return [
        {
            "expr": queries[key],
            "eval_time": f"{eval_time_s}s",
            "exp_samples": [
                {"labels": labels.replace("OURS", JOB_INSTANCE).replace("'", '"'), "value": value}
                for labels, value in samples
            ],
        }
        for key, samples in expected.items()
    ]


JOB_INSTANCE = "instance='exporter:9218', job='replicationlag'"

# Two plain replica sets, each the only set of its infra, as two exporters' scrapes: clusterKeeper's rs0 with a
# primary, a secondary 0.25 s behind, a member delayed by one hour and 0.8 s behind its delay, a DOWN member and an
# arbiter; billing's rs1 all healthy. The exporter restarted twice; Prometheus's own process restarts often.
RS0 = 'infra="clusterKeeper", set="rs0"'
RS1 = 'infra="billing", set="rs1"'
SIMULATED_SERIES = [
    ("mongodb_replication_up", 'infra="clusterKeeper"', "1x40"),
    ("mongodb_replication_up", 'infra="billing"', "1x40"),
    ("mongodb_replication_status", RS0, "2x40"),
    ("mongodb_replication_status", RS1, "0x40"),
    ("mongodb_replication_set_info", f'{RS0}, role="replica_set"', "1x40"),
    ("mongodb_replication_set_info", f'{RS1}, role="replica_set"', "1x40"),
    ("mongodb_replication_set_up", RS0, "1x40"),
    ("mongodb_replication_set_up", RS1, "1x40"),
    ("mongodb_replication_primary_present", RS0, "1x40"),
    ("mongodb_replication_primary_present", RS1, "1x40"),
    *[
        ("mongodb_replication_member_state", f'{RS0}, member="{m}"', f"{s}x40")
        for m, s in [
            ("mongo1:27017", 1),
            ("mongo2:27017", 2),
            ("mongo3:27017", 2),
            ("mongo4:27017", 8),
            ("arbiter:27017", 7),
        ]
    ],
    *[
        ("mongodb_replication_member_health", f'{RS0}, member="{m}"', f"{h}x40")
        for m, h in [
            ("mongo1:27017", 1),
            ("mongo2:27017", 1),
            ("mongo3:27017", 1),
            ("mongo4:27017", 0),
            ("arbiter:27017", 1),
        ]
    ],
    ("mongodb_replication_lag_seconds", f'{RS0}, member="mongo2:27017"', "0.25x40"),
    ("mongodb_replication_lag_seconds", f'{RS0}, member="mongo3:27017"', "0.8x40"),
    ("mongodb_replication_raw_lag_seconds", f'{RS0}, member="mongo2:27017"', "0.25x40"),
    ("mongodb_replication_raw_lag_seconds", f'{RS0}, member="mongo3:27017"', "3600.8x40"),
    *[
        ("mongodb_replication_member_delay_seconds", f'{RS0}, member="{m}"', f"{d}x40")
        for m, d in [("mongo1:27017", 0), ("mongo2:27017", 0), ("mongo3:27017", 3600), ("mongo4:27017", 0)]
    ],
    ("mongodb_replication_member_state", f'{RS1}, member="a:27017"', "1x40"),
    ("mongodb_replication_member_state", f'{RS1}, member="b:27017"', "2x40"),
    ("mongodb_replication_member_health", f'{RS1}, member="a:27017"', "1x40"),
    ("mongodb_replication_member_health", f'{RS1}, member="b:27017"', "1x40"),
    ("mongodb_replication_lag_seconds", f'{RS1}, member="b:27017"', "1.5x40"),
]
RESTARTS = [
    ('process_start_time_seconds{job="replicationlag", instance="exporter:9218"}', "100x13 300x13 500x13"),
    ('process_start_time_seconds{job="prometheus", instance="localhost:9090"}', "0+10x40"),
]
EVAL_TIME_S = 600
MONGO3 = f"{{{JOB_INSTANCE}, member='mongo3:27017', {RS0}}}".replace('"', "'")
OURS = "{OURS}"
EXPECTED = {
    # One tile per infra: the worst of its sets (a plain set is its infra's only set, so nothing changes for it).
    ("Cluster status", "A"): [("{infra='clusterKeeper'}", 2), ("{infra='billing'}", 0)],
    ("Primary", "A"): [("{infra='clusterKeeper'}", 1), ("{infra='billing'}", 1)],
    ("Members down or unhealthy", "A"): [("{infra='clusterKeeper'}", 1), ("{infra='billing'}", 0)],
    ("Largest effective lag", "A"): [("{infra='clusterKeeper'}", 0.8), ("{infra='billing'}", 1.5)],
    # A plain set has role replica_set and no shard label.
    ("Worst lag by shard", "A"): [
        (f"{{{RS0}, role='replica_set'}}".replace('"', "'"), 0.8),
        (f"{{{RS1}, role='replica_set'}}".replace('"', "'"), 1.5),
    ],
    ("Sets collected", "A"): [("{infra='clusterKeeper'}", 1), ("{infra='billing'}", 1)],
    ("Sets collected", "B"): [("{infra='clusterKeeper'}", 0), ("{infra='billing'}", 0)],
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


def test_the_key_panels_answer_right_on_simulated_replica_sets(tmp_path):
    queries = {(q.panel_title, q.ref_id): q.expr for q in dashboard_queries(infra=".*", set=".*")}
    assert set(EXPECTED) <= set(queries)
    series = scraped(SIMULATED_SERIES) + [{"series": name, "values": values} for name, values in RESTARTS]
    evaluate_panels(tmp_path, series, expected_checks(queries, EXPECTED, EVAL_TIME_S))


# A sharded cluster of infra orders as its exporter reports it: shard01 (set shard01) with a secondary 40 s behind
# (RED) and one 0.5 s; shard02 (set shard02rs, draining) with one 6 s behind (YELLOW) and one 0.2 s; shard03 not
# collected for ten minutes (no member series); the config servers (configRepl) healthy; router r2 down.
ORDERS = 'infra="orders"'
SETS = {"shard01": "shard01", "shard02": "shard02rs", "shard03": "shard03", "config": "configRepl"}
SHARDED_SERIES = [
    ("mongodb_replication_up", ORDERS, "1x40"),
    *[
        ("mongodb_replication_set_info", f'{ORDERS}, set="{s}", shard="{shard}", role="{role}"', "1x40")
        for shard, s, role in [
            ("shard01", "shard01", "shard"),
            ("shard02", "shard02rs", "shard"),
            ("shard03", "shard03", "shard"),
            ("config", "configRepl", "config"),
        ]
    ],
    *[
        ("mongodb_replication_status", f'{ORDERS}, set="{s}"', f"{v}x40")
        for s, v in [("shard01", 2), ("shard02rs", 1), ("shard03", 2), ("configRepl", 0)]
    ],
    *[
        ("mongodb_replication_set_up", f'{ORDERS}, set="{s}"', f"{v}x40")
        for s, v in [("shard01", 1), ("shard02rs", 1), ("shard03", 0), ("configRepl", 1)]
    ],
    *[
        ("mongodb_replication_set_snapshot_age_seconds", f'{ORDERS}, set="{s}"', v)
        for s, v in [("shard01", "4x40"), ("shard02rs", "5x40"), ("shard03", "0+15x40"), ("configRepl", "3x40")]
    ],
    *[
        ("mongodb_replication_shard_draining", f'{ORDERS}, set="{s}"', f"{v}x40")
        for s, v in [("shard01", 0), ("shard02rs", 1), ("shard03", 0), ("configRepl", 0)]
    ],
    *[
        ("mongodb_replication_primary_present", f'{ORDERS}, set="{s}"', "1x40")
        for s in ("shard01", "shard02rs", "configRepl")
    ],
    *[
        ("mongodb_replication_lag_seconds", f'{ORDERS}, set="{s}", member="{m}"', f"{v}x40")
        for s, m, v in [
            ("shard01", "s1b:27018", 40),
            ("shard01", "s1c:27018", 0.5),
            ("shard02rs", "s2b:27018", 6),
            ("shard02rs", "s2c:27018", 0.2),
            ("configRepl", "c2:27019", 0.1),
            ("configRepl", "c3:27019", 0.3),
        ]
    ],
    *[
        (family, f'{ORDERS}, set="{s}", member="{m}"', f"{v}x40")
        for s, m, status, state in [
            ("shard01", "s1a:27018", 0, 1),
            ("shard01", "s1b:27018", 2, 2),
            ("shard01", "s1c:27018", 0, 2),
            ("shard02rs", "s2a:27018", 0, 1),
            ("shard02rs", "s2b:27018", 1, 2),
            ("shard02rs", "s2c:27018", 0, 2),
            ("configRepl", "c1:27019", 0, 1),
            ("configRepl", "c2:27019", 0, 2),
            ("configRepl", "c3:27019", 0, 2),
        ]
        for family, v in [("mongodb_replication_member_status", status), ("mongodb_replication_member_state", state)]
    ],
    ("mongodb_replication_router_up", f'{ORDERS}, router="r1:27017"', "1x40"),
    ("mongodb_replication_router_up", f'{ORDERS}, router="r2:27017"', "0x40"),
    ("mongodb_replication_shard_map_age_seconds", ORDERS, "5x40"),
]


def sample(name: str, labels: str) -> str:
    """A series of the exporter's scrape as promtool prints it ('-quoted): `name{job, instance, labels}`; the name
    is "" where the query drops it."""
    return f"{name}{{{JOB_INSTANCE}, {labels}}}"


def member(name: str, set_name: str, member_name: str) -> str:
    return sample(name, f"infra='orders', member='{member_name}', set='{set_name}'")


# Every shard, top 2 members.
SHARDED_EXPECTED = {
    ("Cluster status", "A"): [("{infra='orders'}", 2)],
    ("Primary", "A"): [("{infra='orders'}", 1)],
    ("Largest effective lag", "A"): [("{infra='orders'}", 40)],
    ("Worst lag by shard", "A"): [
        ("{infra='orders', role='shard', set='shard01', shard='shard01'}", 40),
        ("{infra='orders', role='shard', set='shard02rs', shard='shard02'}", 6),
        ("{infra='orders', role='config', set='configRepl', shard='config'}", 0.3),
    ],
    ("Sets collected", "A"): [("{infra='orders'}", 3)],
    ("Sets collected", "B"): [("{infra='orders'}", 1)],
    ("Draining shards", "A"): [(sample("", "infra='orders', set='shard02rs', shard='shard02'"), 1)],
    ("Routers", "A"): [
        (sample("mongodb_replication_router_up", "infra='orders', router='r1:27017'"), 1),
        (sample("mongodb_replication_router_up", "infra='orders', router='r2:27017'"), 0),
    ],
    ("Shard map age", "A"): [(sample("mongodb_replication_shard_map_age_seconds", "infra='orders'"), 5)],
    ("Set data age", "A"): [
        (sample("mongodb_replication_set_snapshot_age_seconds", "infra='orders', set='shard03'"), 600),
        (sample("mongodb_replication_set_snapshot_age_seconds", "infra='orders', set='shard02rs'"), 5),
    ],
    ("Effective replication lag per member", "A"): [
        (member("mongodb_replication_lag_seconds", "shard01", "s1b:27018"), 40),
        (member("mongodb_replication_lag_seconds", "shard02rs", "s2b:27018"), 6),
    ],
    ("Member status", "A"): [
        (member("mongodb_replication_member_status", "shard01", "s1b:27018"), 2),
        (member("mongodb_replication_member_status", "shard02rs", "s2b:27018"), 1),
    ],
    ("Member state", "A"): [
        (member("mongodb_replication_member_state", "shard01", "s1b:27018"), 2),
        (member("mongodb_replication_member_state", "shard02rs", "s2b:27018"), 2),
    ],
}
# shard02 picked: Grafana sends the set variable's All as the one set it lists for that shard. Top 3 members:
# topk between equal values (two GREEN members for a second place) picks either.
SHARD02_EXPECTED = {
    ("Cluster status", "A"): [("{infra='orders'}", 1)],
    ("Worst lag by shard", "A"): [("{infra='orders', role='shard', set='shard02rs', shard='shard02'}", 6)],
    ("Sets collected", "A"): [("{infra='orders'}", 1)],
    ("Sets collected", "B"): [("{infra='orders'}", 0)],
    ("Effective replication lag per member", "A"): [
        (member("mongodb_replication_lag_seconds", "shard02rs", "s2b:27018"), 6),
        (member("mongodb_replication_lag_seconds", "shard02rs", "s2c:27018"), 0.2),
    ],
    ("Member status", "A"): [
        (member("mongodb_replication_member_status", "shard02rs", "s2a:27018"), 0),
        (member("mongodb_replication_member_status", "shard02rs", "s2b:27018"), 1),
        (member("mongodb_replication_member_status", "shard02rs", "s2c:27018"), 0),
    ],
}


def test_the_sharded_panels_answer_right_on_a_simulated_cluster_and_follow_the_shard_picked(tmp_path):
    every_set = grafana_regex(list(SETS.values()))
    assert every_set == "(shard01|shard02rs|shard03|configRepl)"
    every = {(q.panel_title, q.ref_id): q.expr for q in dashboard_queries(infra="orders", set=every_set, top="2")}
    shard02 = {(q.panel_title, q.ref_id): q.expr for q in dashboard_queries(infra="orders", set="shard02rs", top="3")}
    assert set(SHARDED_EXPECTED) <= set(every) and set(SHARD02_EXPECTED) <= set(shard02)
    checks = expected_checks(every, SHARDED_EXPECTED, EVAL_TIME_S)
    checks += expected_checks(shard02, SHARD02_EXPECTED, EVAL_TIME_S)
    evaluate_panels(tmp_path, scraped(SHARDED_SERIES), checks)


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


DANGER_ROW = "How dangerous: oplog headroom and window, majority commit point, flow control, initial sync"
DANGER_PANELS = [
    "Oplog headroom per member (lowest first)",
    "Headroom against what the sync source holds",
    "Oplog window per member (shortest first)",
    "Majority commit lag per set",
    "Flow control",
    "Flow control target rate (throttled sets)",
    "Writes waiting for flow control",
    "Initial sync progress",
    "Initial sync: time left",
]
DANGER_FAMILIES = {
    "headroom_seconds",
    "raw_lag_seconds",
    "oplog_window_seconds",
    "oplog_full",
    "member_state",
    "majority_commit_lag_seconds",
    "flow_control_enabled",
    "flow_control_engaged",
    "flow_control_target_rate",
    "flow_control_ticket_wait_seconds_total",
    "initial_sync_progress_ratio",
    "initial_sync_remaining_seconds",
}


def test_the_danger_row_has_its_panels_each_limited_to_the_top_members_or_sets_and_filtered_by_both_variables():
    dashboard = load_dashboard()
    titles = [p.get("title") for p in dashboard["panels"]]
    row = titles.index(DANGER_ROW)
    assert titles[row + 1 : row + 1 + len(DANGER_PANELS)] == DANGER_PANELS
    assert titles[row + 1 + len(DANGER_PANELS)] == "Members"
    for title in DANGER_PANELS:
        (target,) = panel(dashboard, title)["targets"]
        expr = target["expr"]
        # A hundred shards stay readable: the worst $top members or sets, the throttled sets only.
        assert expr.startswith(("bottomk($top, ", "topk($top, ")) or title.endswith("(throttled sets)"), title
        assert "{{set}}" in target["legendFormat"], title
        names = {name.removeprefix("mongodb_replication_") for name in metric_names(expr)}
        assert names and names <= DANGER_FAMILIES, (title, names)
        selectors = re.findall(r"mongodb_replication_\w+(\{[^}]*\})?", expr)
        assert selectors and all(s == '{infra=~"$infra", set=~"$set"}' for s in selectors), title
    # Lowest first: the member panels keep the least headroom and the shortest windows.
    assert panel(dashboard, "Oplog headroom per member (lowest first)")["options"]["tooltip"]["sort"] == "asc"
    assert panel(dashboard, "Oplog window per member (shortest first)")["targets"][0]["expr"].startswith("bottomk(")


def test_the_headroom_panels_show_whether_the_sources_oplog_is_full_exactly_as_the_alert_rules_judge_it():
    dashboard = load_dashboard()
    rules = {
        rule["alert"]: rule["expr"]
        for group in yaml.safe_load((REPO / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    for name, share in (
        ("MongoReplicationOplogHeadroomLow", "0.25"),
        ("MongoReplicationOplogHeadroomCritical", "0.1"),
    ):
        # The rule: (headroom < share of what the source holds) and (the source's oplog is known full).
        threshold, source_full = rules[name].split("\nand\n")
        assert f"< {share} * (mongodb_replication_headroom_seconds + mongodb_replication_raw_lag_seconds)" in threshold
        source_full = "".join(source_full.split())
        for title in ("Oplog headroom per member (lowest first)", "Headroom against what the sync source holds"):
            target = panel(dashboard, title)["targets"][0]
            flat = "".join(target["expr"].replace('{infra=~"$infra", set=~"$set"}', "").split())
            # Each member is labelled "full" where the rule's condition holds, "not known full" where it does not.
            assert f'and{source_full},"source_oplog","full",' in flat, title
            assert f'unless{source_full},"source_oplog","notknownfull,noalarm",' in flat, title
            assert "{{source_oplog}}" in target["legendFormat"]
    share = panel(dashboard, "Headroom against what the sync source holds")["fieldConfig"]["defaults"]
    assert share["unit"] == "percentunit"
    assert [(s["value"], s["color"]) for s in share["thresholds"]["steps"]] == [
        (None, "red"),
        (0.10, "yellow"),
        (0.25, "green"),
    ]
    commit = panel(dashboard, "Majority commit lag per set")["fieldConfig"]["defaults"]
    assert [(s["value"], s["color"]) for s in commit["thresholds"]["steps"]] == [(None, "green"), (5, "yellow")]
    assert mapping_texts(panel(dashboard, "Flow control")) == {
        "1": ("THROTTLING", "orange"),
        "0": ("ready", "green"),
        "-1": ("disabled", "text"),
    }


# How dangerous, on two plain sets as their exporter reports them. rs0: a primary with a full one-day window;
# mongo2 19 % of it from the end (source full); mongo3 resynced an hour ago (its own oplog still filling, 3 000 s),
# syncing from the full primary; mongo4 chained to mongo3, 50.2 s from the end of that not-yet-full oplog (no alarm);
# mongo5 whose oplog size could not be read; mongo6 in initial sync. The majority commit point trails 40 s and flow
# control throttles. rs1: healthy, one member in initial sync; rs2: flow control disabled while it was lagged.
def danger_member(name: str, set_name: str, member_name: str, extra: str = "") -> str:
    return sample(name, f"infra='clusterKeeper', member='{member_name}', set='{set_name}'{extra}")


def danger_set(name: str, set_name: str) -> str:
    return sample(name, f"infra='clusterKeeper', set='{set_name}'")


DANGER_SERIES = [
    *[
        (family, f'{RS0}, member="{m}"', f"{v}x40")
        for m, state, raw, headroom, window, full in [
            ("mongo1:27017", 1, None, None, 86400, 1),
            ("mongo2:27017", 2, 70000, 16400, 86400, 1),
            ("mongo3:27017", 2, 0.2, 86399.8, 3000, 0),
            ("mongo4:27017", 2, 2950, 50.2, 86400, 1),
            ("mongo5:27017", 2, 0.1, 86399.9, 40000, None),
            ("mongo6:27017", 5, None, None, None, None),
        ]
        for family, v in [
            ("mongodb_replication_member_state", state),
            ("mongodb_replication_raw_lag_seconds", raw),
            ("mongodb_replication_headroom_seconds", headroom),
            ("mongodb_replication_oplog_window_seconds", window),
            ("mongodb_replication_oplog_full", full),
        ]
        if v is not None
    ],
    ("mongodb_replication_initial_sync_progress_ratio", f'{RS0}, member="mongo6:27017"', "0.43x40"),
    ("mongodb_replication_initial_sync_remaining_seconds", f'{RS0}, member="mongo6:27017"', "7200x40"),
    (
        "mongodb_replication_initial_sync_progress_ratio",
        'infra="clusterKeeper", set="rs1", member="b2:27017"',
        "0.9x40",
    ),
    (
        "mongodb_replication_initial_sync_remaining_seconds",
        'infra="clusterKeeper", set="rs1", member="b2:27017"',
        "600x40",
    ),
    *[
        (f"mongodb_replication_{family}", f'infra="clusterKeeper", set="{s}"', v)
        for s, commit, enabled, engaged, rate, waited in [
            ("rs0", 40, 1, 1, 100, "0+15x40"),
            ("rs1", 0.2, 1, 0, 1e9, "0x40"),
            ("rs2", 0.1, 0, 1, 1e9, "3x40"),
        ]
        for family, v in [
            ("majority_commit_lag_seconds", f"{commit}x40"),
            ("flow_control_enabled", f"{enabled}x40"),
            ("flow_control_engaged", f"{engaged}x40"),
            ("flow_control_target_rate", f"{rate:.0f}x40"),
            ("flow_control_ticket_wait_seconds_total", waited),
        ]
    ],
]
FULL, NOT_FULL = ", source_oplog='full'", ", source_oplog='not known full, no alarm'"
# The two lowest members (Members shown: 2) or every set.
DANGER_EXPECTED = {
    ("Oplog headroom per member (lowest first)", "A"): [
        (danger_member("mongodb_replication_headroom_seconds", "rs0", "mongo4:27017", NOT_FULL), 50.2),
        (danger_member("mongodb_replication_headroom_seconds", "rs0", "mongo2:27017", FULL), 16400),
    ],
    ("Headroom against what the sync source holds", "A"): [
        (danger_member("", "rs0", "mongo4:27017", NOT_FULL), 50.2 / (50.2 + 2950)),
        (danger_member("", "rs0", "mongo2:27017", FULL), 16400 / (16400 + 70000)),
    ],
    ("Oplog window per member (shortest first)", "A"): [
        (
            danger_member("mongodb_replication_oplog_window_seconds", "rs0", "mongo3:27017", ", oplog='still filling'"),
            3000,
        ),
        (
            danger_member(
                "mongodb_replication_oplog_window_seconds", "rs0", "mongo5:27017", ", oplog='fullness unknown'"
            ),
            40000,
        ),
    ],
    ("Majority commit lag per set", "A"): [
        (danger_set("mongodb_replication_majority_commit_lag_seconds", "rs0"), 40),
        (danger_set("mongodb_replication_majority_commit_lag_seconds", "rs1"), 0.2),
    ],
    ("Initial sync progress", "A"): [
        (danger_member("mongodb_replication_initial_sync_progress_ratio", "rs0", "mongo6:27017"), 0.43),
        (danger_member("mongodb_replication_initial_sync_progress_ratio", "rs1", "b2:27017"), 0.9),
    ],
    ("Initial sync: time left", "A"): [
        (danger_member("mongodb_replication_initial_sync_remaining_seconds", "rs0", "mongo6:27017"), 7200),
        (danger_member("mongodb_replication_initial_sync_remaining_seconds", "rs1", "b2:27017"), 600),
    ],
}
DANGER_SETS_EXPECTED = {
    # THROTTLING, ready, and disabled although isLagged is still 1.
    ("Flow control", "A"): [
        (danger_set("mongodb_replication_flow_control_engaged", "rs0"), 1),
        (danger_set("mongodb_replication_flow_control_engaged", "rs1"), 0),
        (danger_set("", "rs2"), -1),
    ],
    ("Flow control target rate (throttled sets)", "A"): [
        (danger_set("mongodb_replication_flow_control_target_rate", "rs0"), 100)
    ],
    ("Writes waiting for flow control", "A"): [
        (danger_set("", "rs0"), 1),
        (danger_set("", "rs1"), 0),
        (danger_set("", "rs2"), 0),
    ],
}


def test_the_danger_panels_answer_right_on_simulated_sets(tmp_path):
    two = {(q.panel_title, q.ref_id): q.expr for q in dashboard_queries(top="2")}
    every = {(q.panel_title, q.ref_id): q.expr for q in dashboard_queries(top="10")}
    assert {title for title, _ in DANGER_EXPECTED | DANGER_SETS_EXPECTED} == set(DANGER_PANELS)
    checks = expected_checks(two, DANGER_EXPECTED, EVAL_TIME_S) + expected_checks(
        every, DANGER_SETS_EXPECTED, EVAL_TIME_S
    )
    evaluate_panels(tmp_path, scraped(DANGER_SERIES), checks)


def test_the_percona_table_leads_to_documented_metrics_and_documents_none_of_percona():
    """docs/metrics.md's table from Percona's names: each of ours it names is exported (documented above it), and
    the Percona names do not count as ours (a dashboard reading one must still fail the check above)."""
    rows = percona_table()
    ours = set().union(*(o for _, o in rows))
    percona = set().union(*(p for p, _ in rows))
    documented, _ = documented_metrics()
    assert {"mongodb_mongod_replset_member_replication_lag", "mongodb_members_optimeDate"} <= percona
    assert "mongodb_replication_lag_seconds" in ours
    assert ours - documented == set()
    assert percona & documented == set()
    assert undocumented_metrics(["mongodb_mongod_replset_member_replication_lag > 10"]) == {
        "mongodb_mongod_replset_member_replication_lag"
    }


def test_the_location_row_groups_lag_health_and_round_trips_by_the_tag_picked():
    dashboard = load_dashboard()
    titles = [p.get("title") for p in dashboard["panels"]]
    row = next(i for i, title in enumerate(titles) if title and title.startswith("By location"))
    assert titles[row + 1 : row + 4] == [
        "Worst lag by location",
        "Members up and down by location",
        "Slowest round trip by location",
    ]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variable_queries(dashboard)["location"] == 'label_values(mongodb_replication_member_tag{infra=~"$infra"}, key)'
    )
    assert variables["location"]["current"]["value"] == "cloud"
    tag = 'group_left (value) mongodb_replication_member_tag{infra=~"$infra", set=~"$set", key="$location"}'
    for title, reads in [
        ("Worst lag by location", "mongodb_replication_lag_seconds"),
        ("Members up and down by location", "mongodb_replication_member_health"),
        ("Slowest round trip by location", "mongodb_replication_member_ping_seconds"),
    ]:
        for target in panel(dashboard, title)["targets"]:
            assert reads in target["expr"] and tag in target["expr"], title
            assert " by (value) (" in target["expr"], title
