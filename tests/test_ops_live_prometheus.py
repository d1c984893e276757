"""The dashboard and the alert rules against a real Prometheus that scrapes the real exporter.

One stack for the whole module: a simulated 7.0 replica set (mongosim, real clock), `exporter.py` as a subprocess
polling it every second, and the `prometheus` server (apt) scraping the exporter every second under the job name
the rules select, with the rules of prometheus/alerts.yml loaded (their `for:` shortened, see `shortened_rules`).

The set, as the exporter sees it from its first poll on:

    member 0  PRIMARY
    member 1  SECONDARY 40 s behind                            -> RED: MongoReplicationLagRed and ...LagYellow
    member 2  SECONDARY 6 s behind                             -> YELLOW: MongoReplicationLagYellow
    member 3  SECONDARY, secondaryDelaySecs 3600, 3600.8 s behind (0.8 s effective)            -> no alert
    member 4  DOWN                                             -> MongoReplicationMemberUnhealthy
    member 5  ARBITER

Prometheus has its first sample some 5 to 6 s after it starts; the module takes about 10 s in all.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from ops_util import REPO, dashboard_queries, prometheus

from mongosim import ReplicaSet

pytestmark = pytest.mark.slow  # README "Tests": skipped by the quick run

ALERTS_FILE = REPO / "prometheus" / "alerts.yml"
JOB = "replicationlag"  # the scrape job name the rules select (up{job="replicationlag"}, process_start_time_seconds)
INFRA = "clusterKeeper"  # the exporter's default --infra.label
SET_NAME = "rs0"

PRIMARY, RED, YELLOW, DELAYED, DOWN, ARBITER = range(6)
RED_LAG_MS = 40_000
YELLOW_LAG_MS = 6_000
DELAY_S = 3600
DELAYED_LAG_MS = DELAY_S * 1000 + 800

# The real rules wait `for: 90s` (two polls at the production --collect.interval 60) and their group evaluates
# every 15 s: a test would wait minutes. Here the exporter polls every second, so 2 s still means "more than one
# poll", and a 1 s group interval lets an alert go pending and then firing within a few seconds.
SHORT_FOR = "2s"
RULE_INTERVAL = "1s"

STACK_START_TIMEOUT_S = 20  # the set, the exporter's first poll and Prometheus ready
DATA_TIMEOUT_S = 30  # from Prometheus ready: first sample at ~6 s, alerts firing ~3 s later
HTTP_TIMEOUT_S = 5
POLL_EVERY_S = 0.25
STOP_TIMEOUT_S = 10


def shortened_rules(original: dict) -> dict:
    """prometheus/alerts.yml with every `for:` cut to SHORT_FOR and every group evaluated each RULE_INTERVAL.

    Nothing else changes: expressions, labels and annotations are the file's own, and
    `test_prometheus_loaded_the_projects_rules_with_only_for_and_the_interval_shortened` checks that against
    what Prometheus actually loaded."""
    rules = json.loads(json.dumps(original))  # a deep copy of plain YAML data
    for group in rules["groups"]:
        group["interval"] = RULE_INTERVAL
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = SHORT_FOR
    return rules


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def poll_until(
    check: Callable[[], tuple[bool, str]], timeout_s: float, what: str, logs: Callable[[], str] = str
) -> None:
    """Call `check` until it returns (True, detail) or the deadline passes; then fail with its last detail and
    `logs()` (read at that moment)."""
    deadline = time.monotonic() + timeout_s
    while True:
        done, detail = check()
        if done:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout_s} s: {detail}{logs()}")
        time.sleep(POLL_EVERY_S)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return f"\n--- {log.name} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])


def start_server(processes: list[subprocess.Popen], args: list[str], log: Path, ready_url: str, **popen: Any) -> None:
    """Start a server logging to `log` (appended to `processes` at once, for the caller to stop) and return once
    `ready_url` answers 200; fail with the log's end if it exits or is not ready in time."""
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **popen)
    processes.append(process)

    def ready() -> tuple[bool, str]:
        if process.poll() is not None:
            pytest.fail(f"{log.stem} exited with {process.returncode}{tail(log)}")
        status, body = get(ready_url)
        return status == 200, f"{ready_url} answered {status} {body[:300]!r}"

    poll_until(ready, STACK_START_TIMEOUT_S, f"{log.stem} was not ready", lambda: tail(log))


@dataclass(frozen=True)
class Stack:
    prometheus_url: str
    exporter: str  # host:port, the scrape target and so the alerts' `instance` label
    member: dict[int, str]  # _id -> "127.0.0.1:PORT", the exporter's member label
    logs: tuple[Path, ...]

    def api(self, path: str, **params: Any) -> Any:
        """The `data` of a Prometheus HTTP API answer; fails on an error answer."""
        status, body = get(f"{self.prometheus_url}{path}?{urllib.parse.urlencode(params)}")
        if status != 200:
            pytest.fail(f"Prometheus {path} {params}: HTTP {status} {body[:500]!r}{self.log_tails()}")
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]

    def log_tails(self) -> str:
        """The end of the exporter's and Prometheus' logs, for a failure message."""
        return "".join(tail(log) for log in self.logs)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    prometheus_binary = prometheus()  # fails (never skips) when the apt package is missing
    processes: list[subprocess.Popen] = []
    rs = ReplicaSet(5, arbiter=True, version="7.0", name=SET_NAME)
    with tempfile.TemporaryDirectory(prefix="replicationlag-live-") as tmp:
        work = Path(tmp)
        try:
            rs.start()
            rs.set_lag(RED, RED_LAG_MS)
            rs.set_lag(YELLOW, YELLOW_LAG_MS)
            rs.set_delay(DELAYED, DELAY_S)
            rs.set_lag(DELAYED, DELAYED_LAG_MS)
            rs.take_down(DOWN)

            # /liveness answers 200 once a poll succeeded, so Prometheus's first scrape already has the set.
            exporter = f"127.0.0.1:{free_port()}"
            command = [sys.executable, str(REPO / "exporter.py"), "--mongodb.uri", rs.uri]
            command += ["--web.listen-address", exporter, "--collect.interval", "1", "--log.level", "debug"]
            start_server(
                processes,
                command,
                work / "exporter.log",
                f"http://{exporter}/liveness",
                cwd=REPO,
                env={**os.environ, "PROMETHEUS_DISABLE_CREATED_SERIES": "True"},
            )

            rules = work / "alerts.yml"
            rules.write_text(yaml.safe_dump(shortened_rules(yaml.safe_load(ALERTS_FILE.read_text()))))
            config = {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [exporter]}]}],
            }
            (work / "prometheus.yml").write_text(yaml.safe_dump(config))
            server = f"127.0.0.1:{free_port()}"
            command = [prometheus_binary, f"--config.file={work / 'prometheus.yml'}"]
            command += [f"--web.listen-address={server}", f"--storage.tsdb.path={work / 'data'}"]
            start_server(
                processes,
                command,
                work / "prometheus.log",
                f"http://{server}/-/ready",
                cwd=work,
            )
            members = {m.id: m.name for m in rs.members}
            yield Stack(f"http://{server}", exporter, members, (work / "exporter.log", work / "prometheus.log"))
        finally:
            for process in reversed(processes):
                stop(process)
            rs.stop()


# Panels that read what only a sharded cluster has: a plain replica set leaves them empty (and they say so).
SHARDED_ONLY_PANELS = frozenset({("Routers", "A"), ("Draining shards", "A"), ("Shard map age", "A")})


def empty_panels(stack: Stack) -> dict[tuple[str, str], str]:
    """Every dashboard target that Prometheus answers with no series (instant targets as instant queries, the
    others as range queries over the last 30 s, as Grafana sends them), by (panel title, refId), with its query."""
    now = time.time()
    empty = {}
    # Grafana's $__rate_interval is max(4 x scrape interval, $__interval + scrape interval): 4 s at a 1 s scrape.
    for query in dashboard_queries(infra=".*", set=".*", __rate_interval="4s", __interval="1s"):
        if query.instant:
            result = stack.api("/api/v1/query", query=query.expr, time=now)["result"]
        else:
            result = stack.api("/api/v1/query_range", query=query.expr, start=now - 30, end=now, step=1)["result"]
        if not result:
            empty[query.panel_title, query.ref_id] = query.expr
    return empty


def instant(stack: Stack, expr: str) -> dict[str, float]:
    """An instant query's samples by their `member` label ("" for none)."""
    result = stack.api("/api/v1/query", query=expr)["result"]
    return {sample["metric"].get("member", ""): float(sample["value"][1]) for sample in result}


def test_every_dashboard_query_returns_data_from_a_real_prometheus_scraping_the_exporter(stack):
    def every_panel_has_data() -> tuple[bool, str]:
        empty = empty_panels(stack)
        return set(empty) == SHARDED_ONLY_PANELS, f"no data for {empty} (only {sorted(SHARDED_ONLY_PANELS)} may be)"

    poll_until(every_panel_has_data, DATA_TIMEOUT_S, "some dashboard panels stayed empty", stack.log_tails)

    queries = {(q.panel_title, q.ref_id): q.expr for q in dashboard_queries(infra=".*", set=".*")}
    m = stack.member
    assert instant(stack, queries["Cluster status", "A"]) == {"": 2}  # RED
    assert instant(stack, queries["Members down or unhealthy", "A"]) == {"": 1}
    assert instant(stack, queries["Largest effective lag", "A"]) == {"": RED_LAG_MS / 1000}
    # The primary is the reference and has no lag series; neither has the DOWN member nor the arbiter.
    assert instant(stack, queries["Effective replication lag per member", "A"]) == {
        m[RED]: RED_LAG_MS / 1000,
        m[YELLOW]: YELLOW_LAG_MS / 1000,
        m[DELAYED]: (DELAYED_LAG_MS - DELAY_S * 1000) / 1000,
    }
    assert instant(stack, queries["Delayed members: raw lag against configured delay", "A"]) == {
        m[DELAYED]: DELAYED_LAG_MS / 1000
    }
    assert instant(stack, queries["Member state", "A"]) == {
        m[PRIMARY]: 1,
        m[RED]: 2,
        m[YELLOW]: 2,
        m[DELAYED]: 2,
        m[DOWN]: 8,
        m[ARBITER]: 7,
    }
    assert instant(stack, queries["Exporter restarts (24 h)", "A"]) == {"": 0}


def active_alerts(stack: Stack) -> dict[tuple[str, str], dict]:
    """Prometheus's pending and firing alerts now (/api/v1/alerts), by (alertname, member)."""
    return {
        (alert["labels"]["alertname"], alert["labels"].get("member", "")): alert
        for alert in stack.api("/api/v1/alerts")["alerts"]
    }


def alert_history(stack: Stack) -> dict[tuple[str, str], set[str]]:
    """Every alert that was pending or firing since Prometheus started, by (alertname, member), with the states it
    was seen in: the rule manager writes each evaluation's active alerts to the ALERTS series (from its third
    evaluation on, once it has restored the `for:` state; the exporter's first sample comes later than that)."""
    history: dict[tuple[str, str], set[str]] = {}
    for sample in stack.api("/api/v1/query", query="last_over_time(ALERTS[10m])")["result"]:
        labels = sample["metric"]
        history.setdefault((labels["alertname"], labels.get("member", "")), set()).add(labels["alertstate"])
    return history


def sample_times(stack: Stack, selector: str) -> list[float]:
    """The timestamps of every sample of `selector` that Prometheus holds from the last 10 minutes."""
    result = stack.api("/api/v1/query", query=f"{selector}[10m]")["result"]
    return [float(t) for series in result for t, _ in series["values"]]


def wait_until_firing(stack: Stack, expected: set[tuple[str, str]]) -> None:
    def all_fire() -> tuple[bool, str]:
        alerts = active_alerts(stack)
        firing = {key for key, alert in alerts.items() if alert["state"] == "firing"}
        return expected <= firing, f"firing {sorted(firing)}; active {sorted(alerts)}"

    poll_until(all_fire, DATA_TIMEOUT_S, f"{sorted(expected)} did not all fire", stack.log_tails)


def test_lag_and_member_alerts_go_pending_then_fire_for_the_right_members_and_nothing_else(stack):
    m = stack.member
    expected = {
        ("MongoReplicationLagRed", m[RED]),
        ("MongoReplicationLagYellow", m[RED]),
        ("MongoReplicationLagYellow", m[YELLOW]),
        ("MongoReplicationMemberUnhealthy", m[DOWN]),
    }
    wait_until_firing(stack, expected)

    alerts = active_alerts(stack)
    assert set(alerts) == expected, "an alert is active that the set's state does not call for"
    # Each went pending before it fired, and no other alert was active at any time since Prometheus started but
    # one: Prometheus scrapes for the first time some 5 s after it starts, and until then absent(up{job=...}) is
    # true, so the shortened MongoReplicationExporterDown fires (the real rule's `for: 1m` waits that out). It
    # must have ended before the first scrape.
    history = alert_history(stack)
    history.pop(("MongoReplicationExporterDown", ""), None)
    assert history == {key: {"pending", "firing"} for key in expected}
    first_scrape = min(sample_times(stack, f'up{{job="{JOB}"}}'))
    assert [
        t for t in sample_times(stack, 'ALERTS{alertname="MongoReplicationExporterDown"}') if t >= first_scrape
    ] == []

    red = alerts["MongoReplicationLagRed", m[RED]]
    assert red["labels"] == {
        "alertname": "MongoReplicationLagRed",
        "severity": "critical",
        "infra": INFRA,
        "set": SET_NAME,
        "member": m[RED],
        "instance": stack.exporter,
        "job": JOB,
    }
    assert red["annotations"]["summary"] == f"MongoDB member {m[RED]} of {SET_NAME} lags 40s"
    yellow = alerts["MongoReplicationLagYellow", m[YELLOW]]
    assert yellow["labels"]["severity"] == "warning"
    assert yellow["annotations"]["summary"] == f"MongoDB member {m[YELLOW]} of {SET_NAME} lags 6s"
    unhealthy = alerts["MongoReplicationMemberUnhealthy", m[DOWN]]
    assert unhealthy["labels"]["severity"] == "critical"
    assert unhealthy["annotations"]["summary"] == f"MongoDB member {m[DOWN]} of {SET_NAME} is DOWN"


def test_a_delayed_member_behind_by_its_delay_raises_no_alert_though_its_raw_lag_is_an_hour(stack):
    m = stack.member
    # The YELLOW member's alert fires after the same `for:`, on the same polls as the delayed member's data.
    wait_until_firing(stack, {("MongoReplicationLagYellow", m[YELLOW])})
    assert instant(stack, "mongodb_replication_raw_lag_seconds")[m[DELAYED]] == DELAYED_LAG_MS / 1000
    assert instant(stack, "mongodb_replication_member_delay_seconds")[m[DELAYED]] == DELAY_S
    assert instant(stack, "mongodb_replication_lag_seconds")[m[DELAYED]] == 0.8
    assert [key for key in alert_history(stack) if key[1] == m[DELAYED]] == []


def test_prometheus_loaded_the_projects_rules_with_only_for_and_the_interval_shortened(stack):
    original = yaml.safe_load(ALERTS_FILE.read_text())

    def every_rule_was_evaluated() -> tuple[bool, str]:
        health = [rule["health"] for group in stack.api("/api/v1/rules")["groups"] for rule in group["rules"]]
        return "unknown" not in health, f"rule health {health}"

    poll_until(every_rule_was_evaluated, DATA_TIMEOUT_S, "Prometheus did not evaluate every rule", stack.log_tails)
    loaded = stack.api("/api/v1/rules", type="alert")["groups"]
    assert [group["name"] for group in loaded] == [group["name"] for group in original["groups"]]
    for file_group, live_group in zip(original["groups"], loaded, strict=True):
        assert live_group["interval"] == 1
        assert [rule["name"] for rule in live_group["rules"]] == [rule["alert"] for rule in file_group["rules"]]
        for file_rule, live_rule in zip(file_group["rules"], live_group["rules"], strict=True):
            name = file_rule["alert"]
            assert live_rule["labels"] == file_rule.get("labels", {}), name
            assert live_rule["annotations"] == file_rule.get("annotations", {}), name
            assert live_rule["duration"] == (2 if "for" in file_rule else 0), name
            assert live_rule["health"] == "ok", (name, live_rule.get("lastError"))
            # Prometheus prints the parsed expression back on one line, without the file's layout spaces.
            assert "".join(live_rule["query"].split()) == "".join(file_rule["expr"].split()), name
