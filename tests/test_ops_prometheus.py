"""The Prometheus side: the scrape config and alert rules pass promtool, and the rules' unit tests pass, cover every
rule both ways (fires / must not fire) and fail when a rule is weakened."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from ops_util import REPO, documented_metrics, metric_names, run_promtool, undocumented_metrics

PROMETHEUS_DIR = REPO / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"


def alert_rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def copy_with(tmp_path: Path, old: str, new: str) -> Path:
    """The rules in tmp_path with `old` replaced by `new`, and the unit tests that check a rule this changed.

    Only those: a case about another rule cannot notice the change, and when they fail the whole file fails (it
    holds them), so the weakened-rule tests prove the same in a fraction of the time."""
    text = RULES.read_text(encoding="utf-8")
    assert old in text, f"mutation target {old!r} is not in alerts.yml"
    mutated = text.replace(old, new)
    (tmp_path / "alerts.yml").write_text(mutated, encoding="utf-8")
    changed = changed_alerts(text, mutated)
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    tests["tests"] = [
        case for case in tests["tests"] if {check["alertname"] for check in case.get("alert_rule_test", [])} & changed
    ]
    assert tests["tests"], f"no unit test checks {sorted(changed)}"
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    return tmp_path / "alerts_test.yml"


def changed_alerts(text: str, mutated: str) -> set[str]:
    """The names of the alert rules that differ between two rule files (every name when one does not parse)."""

    def rules(source: str) -> dict[str, dict]:
        return {rule["alert"]: rule for group in yaml.safe_load(source)["groups"] for rule in group["rules"]}

    before = rules(text)
    try:
        after = rules(mutated)
    except (yaml.YAMLError, KeyError, TypeError):
        return set(before)
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def test_promtool_accepts_the_scrape_config_with_its_rule_file():
    result = run_promtool("check", "config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_promtool_rejects_a_broken_scrape_config(tmp_path):
    broken = tmp_path / "prometheus.yml"
    broken.write_text(CONFIG.read_text(encoding="utf-8").replace("scrape_interval: 15s", "scrape_interval: 15 parsecs"))
    shutil.copy(RULES, tmp_path / "alerts.yml")
    result = run_promtool("check", "config", broken)
    assert result.returncode != 0
    assert "parsecs" in result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules():
    result = run_promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_rejects_a_rule_file_with_a_broken_expression(tmp_path):
    broken = tmp_path / "alerts.yml"
    text = RULES.read_text(encoding="utf-8")
    broken.write_text(text.replace("mongodb_replication_lag_seconds >= 30", "mongodb_replication_lag_seconds >= ("))
    result = run_promtool("check", "rules", broken)
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


def test_the_alert_rules_pass_their_unit_tests():
    result = run_promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("weakening", "old", "new"),
    [
        ("YELLOW below 5 s", "mongodb_replication_lag_seconds >= 5\n", "mongodb_replication_lag_seconds >= 4.9\n"),
        ("for one minute: a single drifted poll fires", "for: 90s", "for: 1m"),
        ("for three minutes: two bad polls no longer fire", "for: 90s", "for: 3m"),
        (
            "RED on raw lag: delayed members alarm",
            "mongodb_replication_lag_seconds >= 30",
            "mongodb_replication_raw_lag_seconds >= 30",
        ),
        ("health ignored", "mongodb_replication_member_health == 0", "mongodb_replication_member_health == 2"),
        (
            "an arbiter counted unhealthy",
            "mongodb_replication_member_state != 7",
            "mongodb_replication_member_state != 6",
        ),
        (
            "restarts of any job counted",
            'changes(process_start_time_seconds{job="replicationlag"}[1h])',
            "changes(process_start_time_seconds[1h])",
        ),
        ("a missing target not noticed", ' or absent(up{job="replicationlag"})', ""),
        (
            "no fresh data alarmed at once",
            "expr: mongodb_replication_up == 0\n        for: 90s",
            "expr: mongodb_replication_up == 0",
        ),
        (
            "a plain replica set's failed polls alarmed as a set not collected (NoFreshData already says it)",
            'mongodb_replication_set_info{role!="replica_set"})',
            "mongodb_replication_set_info)",
        ),
        (
            "a set not collected alarmed after one failed poll",
            '(mongodb_replication_set_info{role!="replica_set"})\n        for: 90s',
            '(mongodb_replication_set_info{role!="replica_set"})',
        ),
        (
            "every set alarmed as not collected, the healthy ones too",
            "(mongodb_replication_set_up == 0)",
            "(mongodb_replication_set_up >= 0)",
        ),
        (
            "a router restart alarmed",
            "expr: mongodb_replication_router_up == 0\n        for: 90s",
            "expr: mongodb_replication_router_up == 0",
        ),
        (
            "one failed read of the shard map alarmed",
            "mongodb_replication_shard_map_age_seconds >= 180",
            "mongodb_replication_shard_map_age_seconds >= 120",
        ),
        ("headroom low from 30 % of the window", "< 0.25 *", "< 0.3 *"),
        ("headroom critical from 12 % of the window", "< 0.1 *", "< 0.12 *"),
        (
            "a not-yet-full primary oplog taken for a limit",
            "(mongodb_replication_oplog_full and mongodb_replication_member_state == 1) == 1",
            "(mongodb_replication_oplog_full and mongodb_replication_member_state == 1) >= 0",
        ),
        (
            "the primary's fullness taken for a chained member's source's",
            ") < 0.0005",
            ") >= 0",
        ),
        ("every member's oplog full required: a resynced member silences the set", ") < 0.0005", ") < 0"),
        (
            "a RECOVERING member's refilling oplog silences the set (it cannot be a sync source)",
            "(mongodb_replication_member_state == 1 or mongodb_replication_member_state == 2)",
            "mongodb_replication_member_state",
        ),
        (
            "a delayed member's delay left out of what its source holds",
            "* (mongodb_replication_headroom_seconds + mongodb_replication_raw_lag_seconds)",
            "* (mongodb_replication_headroom_seconds + mongodb_replication_lag_seconds)",
        ),
        (
            "two exporter replicas mixed (the rule errors on their duplicate series)",
            "ignoring (member) group_left ()",
            "on (infra, set) group_left ()",
        ),
        (
            "majority commit lag from above 5 s",
            "mongodb_replication_majority_commit_lag_seconds >= 5",
            "mongodb_replication_majority_commit_lag_seconds > 5",
        ),
        (
            "majority commit lag alarmed on the one-poll jump after a quiet spell",
            "mongodb_replication_majority_commit_lag_seconds >= 5\n        for: 90s",
            "mongodb_replication_majority_commit_lag_seconds >= 5\n        for: 45s",
        ),
        (
            "flow control alarmed while disabled (isLagged stays true)",
            " and mongodb_replication_flow_control_enabled == 1",
            "",
        ),
        (
            "flow control alarmed on one poll",
            "mongodb_replication_flow_control_enabled == 1\n        for: 90s",
            "mongodb_replication_flow_control_enabled == 1\n        for: 45s",
        ),
        (
            "summaries no longer name the shard",
            '{{ $set = printf "%s (replica set %s)" .Labels.shard $labels.set }}',
            "{{ $set = $labels.set }}",
        ),
    ],
)
def test_the_unit_tests_fail_when_a_rule_is_weakened(tmp_path, weakening, old, new):
    result = run_promtool("test", "rules", copy_with(tmp_path, old, new))
    assert result.returncode != 0, f"the unit tests did not notice: {weakening}"
    assert "FAILED" in result.stdout + result.stderr


def test_the_unit_tests_kept_for_a_mutation_pass_when_it_changes_nothing_that_matters(tmp_path):
    # 1m30s is 90s: every rule with a `for:` differs as text, and its cases, copied as copy_with copies them, pass.
    result = run_promtool("test", "rules", copy_with(tmp_path, "for: 90s", "for: 1m30s"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_must_not():
    cases = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    checks = [check for case in cases for check in case.get("alert_rule_test", [])]
    for rule in alert_rules():
        name = rule["alert"]
        assert any(c["alertname"] == name and c.get("exp_alerts") for c in checks), f"{name} never shown to fire"
        assert any(c["alertname"] == name and not c.get("exp_alerts") for c in checks), f"{name} never shown silent"


def test_every_alert_has_a_severity_a_summary_and_a_description():
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_the_rules_read_only_the_exporters_metrics_and_the_scrape_job():
    exprs = [rule["expr"] for rule in alert_rules()]
    assert undocumented_metrics(exprs, also_allowed=frozenset({"up"})) == set()
    names, _ = documented_metrics()
    used = set().union(*map(metric_names, exprs))
    assert {"mongodb_replication_lag_seconds", "mongodb_replication_member_state", "up"} <= used
    assert used - {"up", "process_start_time_seconds"} <= names


def test_the_metric_check_flags_a_peer_exporters_metric_name():
    assert undocumented_metrics(["mongodb_mongod_replset_member_replication_lag > 10"]) == {
        "mongodb_mongod_replset_member_replication_lag"
    }


def test_prometheus_scrapes_the_compose_exporter_under_the_job_the_rules_name():
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "replicationlag"
    assert job["static_configs"][0]["targets"] == ["exporter:9218"]
    assert config["rule_files"] == ["alerts.yml"]
    job_selectors = {rule["alert"] for rule in alert_rules() if 'job="replicationlag"' in rule["expr"]}
    assert job_selectors == {"MongoReplicationExporterDown", "MongoReplicationExporterRestarting"}
