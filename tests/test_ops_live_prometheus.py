"""The dashboard and the alert rules against a real Prometheus that scrapes the real exporter.

One stack for the whole module: a simulated 7.0 replica set and a simulated sharded cluster (mongosim, real clock),
one `exporter.py` subprocess for each polling it every second (infra `clusterKeeper` for the set, `orders` for the
cluster, through its router URI), and one `prometheus` server (apt) scraping both every second under the job name
the rules select, with the rules of prometheus/alerts.yml loaded (their `for:` shortened, see `shortened_rules`).
Each test reads one infra, as the dashboard's infra variable does; alerts are told apart by their `infra` label.

The replica set, as its exporter sees it from its first poll on. It was initiated 61 minutes before it starts, so
no oplog is full yet: every window is only its age (about 3 660 s), a limit of nothing.

    member 0  PRIMARY
    member 1  SECONDARY 40 s behind                            -> RED: MongoReplicationLagRed and ...LagYellow
    member 2  SECONDARY 6 s behind                             -> YELLOW: MongoReplicationLagYellow
    member 3  SECONDARY, secondaryDelaySecs 3600, 3600.8 s behind (0.8 s effective): about 60 s of headroom,
              under 2 % of the primary's window, but that oplog is not full     -> no alert
    member 4  DOWN, votes 0                                    -> MongoReplicationMemberUnhealthy
    member 5  STARTUP2: initial sync of 4 GiB at 8 MiB/s, votes 0             -> MongoReplicationMemberUnhealthy
    member 6  ARBITER
    set       the majority commit point is member 1's position (the third of the four voting data members), 40 s
              behind; flow control throttles        -> MongoReplicationMajorityCommitLag, ...FlowControlEngaged

The sharded cluster (two routers, three shards of three members, the config servers):

    router 1                          down                       -> MongoReplicationRouterDown (router 0 answers)
    shard01  member 1                 SECONDARY 40 s behind      -> MongoReplicationLagRed and ...LagYellow
             member 0 (primary)       a full oplog holding exactly 50 s: member 1 has 10 s of headroom, 20 %
                                                                 -> MongoReplicationOplogHeadroomLow (not ...Critical)
    shard02  member 2                 secondaryDelaySecs 3600, 0.5 s effective lag, a full one-day window
                                      (95.8 % headroom); shard draining                        -> no alert
    shard03  every member             DOWN: the set cannot be polled -> MongoReplicationSetNotCollected
    configRepl                        majority commit point held 6 s behind; flow control throttles
                                                 -> MongoReplicationMajorityCommitLag, ...FlowControlEngaged

Prometheus has its first sample some 5 to 6 s after it starts; the module takes about 17 s in all.
"""

from __future__ import annotations

import json
import os
import re
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
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from ops_util import REPO, dashboard_queries, grafana_regex, load_dashboard, prometheus, substitute, variable_queries

from mongosim import ReplicaSet, ShardedCluster

pytestmark = pytest.mark.slow  # README "Tests": skipped by the quick run

ALERTS_FILE = REPO / "prometheus" / "alerts.yml"
JOB = "replicationlag"  # the scrape job name the rules select (up{job="replicationlag"}, process_start_time_seconds)
INFRA = "clusterKeeper"  # the exporter's default --infra.label
SET_NAME = "rs0"

PRIMARY, RED, YELLOW, DELAYED, DOWN, SYNCING, ARBITER = range(7)
RED_LAG_MS = 40_000
YELLOW_LAG_MS = 6_000
DELAY_S = 3600
DELAYED_LAG_MS = DELAY_S * 1000 + 800
# Older than the delayed member's raw lag (so it is measured exactly), far younger than the default oplog's day.
INITIATED_AGO_MS = 3_660_000
INITIAL_SYNC_BYTES, INITIAL_SYNC_BYTES_PER_S = 4 << 30, 8 << 20  # 512 s: longer than the module

SHARDED_INFRA = "orders"
LAGGING_SHARD, DRAINING_SHARD, LOST_SHARD = "shard01", "shard02", "shard03"  # mongosim: shard id = set name
CONFIG_SET = "configRepl"
SHARD_RED_MEMBER = 1  # of shard01, RED_LAG_MS behind
SHARD_DELAYED_MEMBER = 2  # of shard02, DELAY_S + 0.5 s behind
SHARD_DELAYED_LAG_MS = DELAY_S * 1000 + 500
DOWN_ROUTER = 1
SHORT_WINDOW_MS = 50_000  # shard01's primary's full oplog: its member 1, 40 s behind, has 10 s of headroom (20 %)
CONFIG_COMMIT_LAG_MS = 6_000

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
    """What one exporter watches, as the shared Prometheus holds it."""

    prometheus_url: str
    infra: str  # the exporter's infra label: every query and alert of this stack is about it
    exporter: str  # host:port, the scrape target and so the alerts' `instance` label
    member: dict[Any, str]  # _id (plain) or (set, _id) (sharded) -> "127.0.0.1:PORT", the exporter's member label
    logs: tuple[Path, ...]
    routers: tuple[str, ...] = ()  # sharded: each mongos's "127.0.0.1:PORT", the router label

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


def start_exporter(processes: list[subprocess.Popen], uri: str, infra: str, log: Path) -> str:
    """`exporter.py` polling `uri` every second under the infra label `infra`; returns its host:port once its
    /liveness answers 200 (a poll succeeded, so Prometheus's first scrape already has the data)."""
    exporter = f"127.0.0.1:{free_port()}"
    command = [sys.executable, str(REPO / "exporter.py"), "--mongodb.uri", uri, "--infra.label", infra]
    command += ["--web.listen-address", exporter, "--collect.interval", "1", "--log.level", "debug"]
    start_server(
        processes,
        command,
        log,
        f"http://{exporter}/liveness",
        cwd=REPO,
        env={**os.environ, "PROMETHEUS_DISABLE_CREATED_SERIES": "True"},
    )
    return exporter


def tag_by_member(rs: ReplicaSet, tags_of: Callable[[int], dict[str, str]]) -> None:
    """Where each member lives (replSetGetConfig members[].tags), for the "By location" row: mixed so that no
    location has every member RED (which would fire MongoReplicationLocationDown)."""
    for m in rs.members:
        rs.set_tags(m.id, tags_of(m.id))


def start_cluster(cluster: ShardedCluster) -> None:
    """Start the cluster and give it the faults of the module docstring."""
    cluster.start()
    for each in (*(cluster.shard(s) for s in (LAGGING_SHARD, DRAINING_SHARD)), cluster.config):
        tag_by_member(each, lambda i: {"cloud": "aws" if i % 2 == 0 else "gcp", "zone": f"zone-{i}"})
    cluster.shard(LAGGING_SHARD).set_lag(SHARD_RED_MEMBER, RED_LAG_MS)
    cluster.shard(LAGGING_SHARD).set_oplog(0, window_ms=SHORT_WINDOW_MS)
    cluster.config.set_commit_lag(CONFIG_COMMIT_LAG_MS)
    cluster.shard(DRAINING_SHARD).set_delay(SHARD_DELAYED_MEMBER, DELAY_S)
    cluster.shard(DRAINING_SHARD).set_lag(SHARD_DELAYED_MEMBER, SHARD_DELAYED_LAG_MS)
    cluster.drain_shard(DRAINING_SHARD)
    for m in cluster.shard(LOST_SHARD).members:
        cluster.shard(LOST_SHARD).take_down(m.id)
    cluster.router(DOWN_ROUTER).take_down()


@pytest.fixture(scope="module")
def stacks() -> Iterator[tuple[Stack, Stack]]:
    prometheus_binary = prometheus()  # fails (never skips) when the apt package is missing
    processes: list[subprocess.Popen] = []
    rs = ReplicaSet(6, arbiter=True, version="7.0", name=SET_NAME, initiated_ago_ms=INITIATED_AGO_MS)
    cluster = ShardedCluster(shards=3, routers=2, version="7.0")
    with tempfile.TemporaryDirectory(prefix="replicationlag-live-") as tmp:
        work = Path(tmp)
        try:
            rs.start()
            tag_by_member(
                rs, lambda i: {"cloud": "aws", "region": "ap-northeast-2"} if i < DELAYED else {"cloud": "gcp"}
            )
            rs.set_lag(RED, RED_LAG_MS)
            rs.set_lag(YELLOW, YELLOW_LAG_MS)
            rs.set_delay(DELAYED, DELAY_S)
            rs.set_lag(DELAYED, DELAYED_LAG_MS)
            # Non-voting, so the commit point is the third freshest of the four voting data members: RED's.
            rs.set_votes(DOWN, 0)
            rs.set_votes(SYNCING, 0)
            rs.take_down(DOWN)
            rs.start_initial_sync(SYNCING, INITIAL_SYNC_BYTES, INITIAL_SYNC_BYTES_PER_S)
            start_cluster(cluster)

            exporter = start_exporter(processes, rs.uri, INFRA, work / "exporter.log")
            sharded_exporter = start_exporter(processes, cluster.uri, SHARDED_INFRA, work / "exporter-sharded.log")

            rules = work / "alerts.yml"
            rules.write_text(yaml.safe_dump(shortened_rules(yaml.safe_load(ALERTS_FILE.read_text()))))
            config = {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [exporter, sharded_exporter]}]}],
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
            logs = (work / "exporter.log", work / "exporter-sharded.log", work / "prometheus.log")
            plain = Stack(f"http://{server}", INFRA, exporter, {m.id: m.name for m in rs.members}, logs)
            sets = {shard_id: cluster.shard(shard_id) for shard_id in cluster.shard_ids} | {CONFIG_SET: cluster.config}
            members = {(name, m.id): m.name for name, s in sets.items() for m in s.members}
            routers = tuple(r.name for r in cluster.routers)
            yield plain, Stack(f"http://{server}", SHARDED_INFRA, sharded_exporter, members, logs, routers)
        finally:
            for process in reversed(processes):
                stop(process)
            cluster.stop()
            rs.stop()


@pytest.fixture(scope="module")
def stack(stacks: tuple[Stack, Stack]) -> Stack:
    """The plain replica set's stack."""
    return stacks[0]


@pytest.fixture(scope="module")
def sharded(stacks: tuple[Stack, Stack]) -> Stack:
    """The sharded cluster's stack."""
    return stacks[1]


# Panels that read what only a sharded cluster has: a plain replica set leaves them empty (and they say so).
SHARDED_ONLY_PANELS = frozenset({("Routers", "A"), ("Draining shards", "A"), ("Shard map age", "A")})
# In the sharded stack every other query must answer (Draining shards because shard02 drains, the flow control
# target rate because the config servers are throttled) but these, for the reason given.
EMPTY_IN_SHARDED_STACK = {
    ("Initial sync progress", "A"): "no member of the simulated cluster is in initial sync (the plain set's is)",
    ("Initial sync: time left", "A"): "no member of the simulated cluster is in initial sync (the plain set's is)",
    ("Members up and down by location", "B"): "the lost shard's members are down, but it was never polled, so its "
    "members' tags are unknown (the plain set's down member is tagged)",
}


def panel_queries(stack: Stack, **values: str) -> dict[tuple[str, str], str]:
    """The dashboard's queries for this stack's infra (and `values` for the other variables), by (title, refId)."""
    return {(q.panel_title, q.ref_id): q.expr for q in dashboard_queries(infra=stack.infra, **values)}


def empty_panels(stack: Stack) -> dict[tuple[str, str], str]:
    """Every dashboard target that Prometheus answers with no series for this stack's infra (instant targets as
    instant queries, the others as range queries over the last 30 s, as Grafana sends them), by (panel title,
    refId), with its query."""
    now = time.time()
    empty = {}
    # Grafana's $__rate_interval is max(4 x scrape interval, $__interval + scrape interval): 4 s at a 1 s scrape.
    for query in dashboard_queries(infra=stack.infra, __rate_interval="4s", __interval="1s"):
        if query.instant:
            result = stack.api("/api/v1/query", query=query.expr, time=now)["result"]
        else:
            result = stack.api("/api/v1/query_range", query=query.expr, start=now - 30, end=now, step=1)["result"]
        if not result:
            empty[query.panel_title, query.ref_id] = query.expr
    return empty


def instant(stack: Stack, expr: str, label: str = "member") -> dict[str, float]:
    """An instant query's samples by their `label` ("" for none)."""
    result = stack.api("/api/v1/query", query=expr)["result"]
    return {sample["metric"].get(label, ""): float(sample["value"][1]) for sample in result}


def labelled(stack: Stack, expr: str, label: str, key: str = "member") -> dict[str, tuple[str, float]]:
    """An instant query's samples by their `key` label, each with its `label` label and its value."""
    result = stack.api("/api/v1/query", query=expr)["result"]
    return {s["metric"][key]: (s["metric"][label], float(s["value"][1])) for s in result}


def wait_for_every_panel(stack: Stack, may_be_empty: frozenset[tuple[str, str]]) -> None:
    """Until every dashboard query answers for this stack's infra but exactly `may_be_empty`."""

    def every_panel_has_data() -> tuple[bool, str]:
        empty = empty_panels(stack)
        return set(empty) == may_be_empty, f"no data for {empty} (only {sorted(may_be_empty)} may be)"

    poll_until(every_panel_has_data, DATA_TIMEOUT_S, "the dashboard's panels did not answer", stack.log_tails)


def test_every_dashboard_query_returns_data_from_a_real_prometheus_scraping_the_exporter(stack):
    wait_for_every_panel(stack, SHARDED_ONLY_PANELS)

    queries = panel_queries(stack)
    m = stack.member
    assert instant(stack, queries["Cluster status", "A"]) == {"": 2}  # RED
    assert instant(stack, queries["Members down or unhealthy", "A"]) == {"": 2}  # DOWN, STARTUP2
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
        m[SYNCING]: 5,
        m[ARBITER]: 7,
    }
    assert instant(stack, queries["Exporter restarts (24 h)", "A"]) == {"": 0}


def alert_key(labels: dict[str, str]) -> tuple[str, str]:
    """(alertname, what it is about): the member, else the router, else the set, else ""."""
    return labels["alertname"], labels.get("member") or labels.get("router") or labels.get("set", "")


def ours(stack: Stack, labels: dict[str, str]) -> bool:
    """An alert about this stack's infra, or about the scrape job as a whole (ExporterDown has no infra)."""
    return labels.get("infra", stack.infra) == stack.infra


def active_alerts(stack: Stack) -> dict[tuple[str, str], dict]:
    """Prometheus's pending and firing alerts now (/api/v1/alerts) for this stack, by `alert_key`."""
    return {
        alert_key(alert["labels"]): alert
        for alert in stack.api("/api/v1/alerts")["alerts"]
        if ours(stack, alert["labels"])
    }


def alert_history(stack: Stack) -> dict[tuple[str, str], set[str]]:
    """Every alert of this stack that was pending or firing since Prometheus started, by `alert_key`, with the
    states it was seen in: the rule manager writes each evaluation's active alerts to the ALERTS series (from its
    third evaluation on, once it has restored the `for:` state; the exporters' first samples come later than that)."""
    history: dict[tuple[str, str], set[str]] = {}
    for sample in stack.api("/api/v1/query", query="last_over_time(ALERTS[10m])")["result"]:
        labels = sample["metric"]
        if ours(stack, labels):
            history.setdefault(alert_key(labels), set()).add(labels["alertstate"])
    return history


def assert_only_these_went_pending_then_fired(stack: Stack, expected: set[tuple[str, str]]) -> None:
    """Each of `expected` went pending before it fired, and no other alert of this stack was active at any time
    since Prometheus started but one: Prometheus scrapes for the first time some 5 s after it starts, and until then
    absent(up{job=...}) is true, so the shortened MongoReplicationExporterDown fires (the real rule's `for: 1m`
    waits that out). It must have ended before the first scrape."""
    history = alert_history(stack)
    history.pop(("MongoReplicationExporterDown", ""), None)
    assert history == {key: {"pending", "firing"} for key in expected}
    first_scrape = min(sample_times(stack, f'up{{job="{JOB}"}}'))
    assert [
        t for t in sample_times(stack, 'ALERTS{alertname="MongoReplicationExporterDown"}') if t >= first_scrape
    ] == []


def sample_times(stack: Stack, selector: str) -> list[float]:
    """The timestamps of every sample of `selector` that Prometheus holds from the last 10 minutes."""
    result = stack.api("/api/v1/query", query=f"{selector}[10m]")["result"]
    return [float(t) for series in result for t, _ in series["values"]]


def unix_time(rfc3339: str) -> float:
    """Prometheus's RFC 3339 times carry nanoseconds; fromisoformat in 3.11 takes at most six fractional digits."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", rfc3339).replace("Z", "+00:00")).timestamp()


def wait_for_a_whole_for_window_of_evaluations(stack: Stack, fired: set[tuple[str, str]]) -> None:
    """Until every rule group has evaluated for longer than a `for:` past the moment the last of `fired` fired:
    an alert the state does not call for has then had every chance to go pending, so "nothing else fired" can
    fail. Counted in Prometheus's own evaluations, not in seconds the test waits: on a loaded machine they come
    later, not fewer; a test that runs once the stack is old waits for nothing."""
    alerts = active_alerts(stack)
    window = float(SHORT_FOR.rstrip("s")) + 2 * float(RULE_INTERVAL.rstrip("s"))
    until = max(unix_time(alerts[key]["activeAt"]) for key in fired) + float(SHORT_FOR.rstrip("s")) + window

    def evaluated() -> tuple[bool, str]:
        at = min(unix_time(group["lastEvaluation"]) for group in stack.api("/api/v1/rules")["groups"])
        return at >= until, f"rules evaluated up to {at:.1f}, waiting for {until:.1f}"

    poll_until(evaluated, DATA_TIMEOUT_S, "Prometheus did not evaluate its rules for a whole window", stack.log_tails)


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
        ("MongoReplicationMemberUnhealthy", m[SYNCING]),
        ("MongoReplicationMajorityCommitLag", SET_NAME),
        ("MongoReplicationFlowControlEngaged", SET_NAME),
    }
    wait_until_firing(stack, expected)
    wait_for_a_whole_for_window_of_evaluations(stack, expected)

    alerts = active_alerts(stack)
    assert set(alerts) == expected, "an alert is active that the set's state does not call for"
    assert_only_these_went_pending_then_fired(stack, expected)

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
    syncing = alerts["MongoReplicationMemberUnhealthy", m[SYNCING]]
    assert syncing["annotations"]["summary"] == f"MongoDB member {m[SYNCING]} of {SET_NAME} is STARTUP2"
    commit = alerts["MongoReplicationMajorityCommitLag", SET_NAME]
    assert commit["labels"] == {
        "alertname": "MongoReplicationMajorityCommitLag",
        "severity": "warning",
        "infra": INFRA,
        "set": SET_NAME,
        "instance": stack.exporter,
        "job": JOB,
    }
    assert commit["annotations"]["summary"] == (
        f"MongoDB replica set {SET_NAME}: majority commit point 40s behind the primary"
    )
    flow = alerts["MongoReplicationFlowControlEngaged", SET_NAME]
    assert (
        flow["annotations"]["summary"]
        == f"MongoDB replica set {SET_NAME}: flow control is throttling writes on the primary"
    )
    assert "writes are held to about " in flow["annotations"]["description"]


def test_a_delayed_member_behind_by_its_delay_raises_no_alert_though_its_raw_lag_is_an_hour(stack):
    m = stack.member
    # The YELLOW member's alert fires after the same `for:`, on the same polls as the delayed member's data.
    wait_until_firing(stack, {("MongoReplicationLagYellow", m[YELLOW])})
    wait_for_a_whole_for_window_of_evaluations(stack, {("MongoReplicationLagYellow", m[YELLOW])})
    assert instant(stack, "mongodb_replication_raw_lag_seconds")[m[DELAYED]] == DELAYED_LAG_MS / 1000
    assert instant(stack, "mongodb_replication_member_delay_seconds")[m[DELAYED]] == DELAY_S
    assert instant(stack, "mongodb_replication_lag_seconds")[m[DELAYED]] == 0.8
    assert [key for key in alert_history(stack) if key[1] == m[DELAYED]] == []


NOT_FULL = "not known full, no alarm"


def test_the_danger_panels_show_a_young_sets_oplogs_its_commit_point_flow_control_and_initial_sync(stack):
    m = stack.member
    # Flow control fires after the same `for:` as a headroom alert would, on the same polls.
    wait_until_firing(stack, {("MongoReplicationFlowControlEngaged", SET_NAME)})
    # So that a headroom alert would have gone pending.
    wait_for_a_whole_for_window_of_evaluations(stack, {("MongoReplicationFlowControlEngaged", SET_NAME)})
    queries = panel_queries(stack)
    oplogs = (PRIMARY, RED, YELLOW, DELAYED)  # DOWN is unreachable, SYNCING's oplog is empty until it is done
    assert instant(stack, f'mongodb_replication_oplog_full{{infra="{INFRA}"}}') == {m[i]: 0 for i in oplogs}
    windows = labelled(stack, queries["Oplog window per member (shortest first)", "A"], "oplog")
    assert {member: label for member, (label, _) in windows.items()} == {m[i]: "still filling" for i in oplogs}
    primary_window = windows[m[PRIMARY]][1]
    assert INITIATED_AGO_MS / 1000 < primary_window < INITIATED_AGO_MS / 1000 + DATA_TIMEOUT_S * 3

    # Headroom from the primary: its window minus the raw lag, the delayed member's delay included. Tiny for the
    # delayed member (under 10 %: RED, were that oplog full), but the oplog is filling: no alarm, labelled so.
    headroom = labelled(stack, queries["Oplog headroom per member (lowest first)", "A"], "source_oplog")
    assert {member: label for member, (label, _) in headroom.items()} == {
        m[i]: NOT_FULL for i in (RED, YELLOW, DELAYED)
    }
    assert headroom[m[DELAYED]][1] == pytest.approx(primary_window - DELAYED_LAG_MS / 1000, abs=5)
    assert headroom[m[RED]][1] == pytest.approx(primary_window - RED_LAG_MS / 1000, abs=5)
    share = labelled(stack, queries["Headroom against what the sync source holds", "A"], "source_oplog")
    assert share[m[DELAYED]][1] < 0.10
    assert [key for key in alert_history(stack) if key[0].startswith("MongoReplicationOplogHeadroom")] == []

    assert instant(stack, queries["Majority commit lag per set", "A"], "set") == {SET_NAME: RED_LAG_MS / 1000}
    assert instant(stack, queries["Flow control", "A"], "set") == {SET_NAME: 1}  # THROTTLING
    (rate,) = instant(stack, queries["Flow control target rate (throttled sets)", "A"], "set").values()
    assert 0 < rate < 1e9

    def writes_wait() -> tuple[bool, str]:
        waiting = instant(stack, queries["Writes waiting for flow control", "A"], "set")
        return waiting.get(SET_NAME, 0) > 0, f"writes waiting {waiting}"

    poll_until(writes_wait, DATA_TIMEOUT_S, "no write waited for flow control", stack.log_tails)
    (progress,) = instant(stack, queries["Initial sync progress", "A"]).items()
    assert progress[0] == m[SYNCING] and 0 < progress[1] < 1
    (left,) = instant(stack, queries["Initial sync: time left", "A"]).items()
    assert left[0] == m[SYNCING] and 0 < left[1] < INITIAL_SYNC_BYTES / INITIAL_SYNC_BYTES_PER_S


def test_in_sharded_mode_every_dashboard_query_returns_data_and_the_shard_panels_name_the_right_shards(sharded):
    wait_for_every_panel(sharded, frozenset(EMPTY_IN_SHARDED_STACK))

    queries = panel_queries(sharded)
    m = sharded.member
    # Worst first, each set with its shard id and role; the lost shard has no lag, so no row.
    rows = [
        (s["metric"].get("shard"), s["metric"]["set"], s["metric"]["role"], float(s["value"][1]))
        for s in sharded.api("/api/v1/query", query=queries["Worst lag by shard", "A"])["result"]
    ]
    assert rows == [
        (LAGGING_SHARD, LAGGING_SHARD, "shard", RED_LAG_MS / 1000),
        (DRAINING_SHARD, DRAINING_SHARD, "shard", (SHARD_DELAYED_LAG_MS - DELAY_S * 1000) / 1000),
        ("config", CONFIG_SET, "config", 0),
    ]
    assert instant(sharded, queries["Cluster status", "A"]) == {"": 2}  # RED: shard01's member, and shard03
    assert instant(sharded, queries["Largest effective lag", "A"]) == {"": RED_LAG_MS / 1000}
    assert instant(sharded, queries["Sets collected", "A"]) == {"": 3}
    assert instant(sharded, queries["Sets collected", "B"]) == {"": 1}
    assert instant(sharded, queries["Draining shards", "A"], "shard") == {DRAINING_SHARD: 1}
    assert instant(sharded, queries["Routers", "A"], "router") == {
        router: 0 if i == DOWN_ROUTER else 1 for i, router in enumerate(sharded.routers)
    }
    assert instant(sharded, queries["Shard map age", "A"])[""] < 5
    assert set(instant(sharded, queries["Set data age", "A"], "set")) == {LAGGING_SHARD, DRAINING_SHARD, CONFIG_SET}
    # Every shard's secondaries and the config servers', none of the lost shard's (fewer than the top 10).
    assert instant(sharded, queries["Effective replication lag per member", "A"]) == {
        m[LAGGING_SHARD, 1]: RED_LAG_MS / 1000,
        m[LAGGING_SHARD, 2]: 0,
        m[DRAINING_SHARD, 1]: 0,
        m[DRAINING_SHARD, 2]: (SHARD_DELAYED_LAG_MS - DELAY_S * 1000) / 1000,
        m[CONFIG_SET, 1]: 0,
        m[CONFIG_SET, 2]: 0,
    }
    assert instant(sharded, queries["Delayed members: raw lag against configured delay", "A"]) == {
        m[DRAINING_SHARD, SHARD_DELAYED_MEMBER]: SHARD_DELAYED_LAG_MS / 1000
    }


def test_in_sharded_mode_the_danger_panels_show_the_short_full_window_the_delayed_member_and_the_config_commit_point(
    sharded,
):
    wait_for_every_panel(sharded, frozenset(EMPTY_IN_SHARDED_STACK))
    queries = panel_queries(sharded)
    m = sharded.member
    short = SHORT_WINDOW_MS / 1000
    windows = labelled(sharded, queries["Oplog window per member (shortest first)", "A"], "oplog")
    assert windows[m[LAGGING_SHARD, 0]] == ("full", pytest.approx(short, abs=0.05))
    assert {label for label, _ in windows.values()} == {"full"}  # the default oplogs are full too (one day)
    # Every source is full: shard01's member 1 has 10 s of what its primary's 50 s hold; the delayed member of
    # shard02 has the day minus its hour.
    headroom = labelled(sharded, queries["Oplog headroom per member (lowest first)", "A"], "source_oplog")
    assert headroom[m[LAGGING_SHARD, SHARD_RED_MEMBER]] == ("full", pytest.approx(short - RED_LAG_MS / 1000, abs=0.05))
    assert headroom[m[DRAINING_SHARD, SHARD_DELAYED_MEMBER]] == (
        "full",
        pytest.approx(86_400 - SHARD_DELAYED_LAG_MS / 1000, abs=0.05),
    )
    share = labelled(sharded, queries["Headroom against what the sync source holds", "A"], "source_oplog")
    assert share[m[LAGGING_SHARD, SHARD_RED_MEMBER]] == ("full", pytest.approx(0.2, abs=0.001))
    assert min(value for _, value in share.values()) == share[m[LAGGING_SHARD, SHARD_RED_MEMBER]][1]

    commit = instant(sharded, queries["Majority commit lag per set", "A"], "set")
    assert commit == {LAGGING_SHARD: 0, DRAINING_SHARD: 0, CONFIG_SET: CONFIG_COMMIT_LAG_MS / 1000}
    assert instant(sharded, queries["Flow control", "A"], "set") == {LAGGING_SHARD: 0, DRAINING_SHARD: 0, CONFIG_SET: 1}
    assert set(instant(sharded, queries["Flow control target rate (throttled sets)", "A"], "set")) == {CONFIG_SET}


def variable_values(stack: Stack, name: str, **values: str) -> list[str]:
    """What Grafana lists for the dashboard's query variable `name` (a label_values(selector, label)), for this
    stack's infra and `values` of the variables it depends on: the label's values on the matching series."""
    query = substitute(variable_queries(load_dashboard())[name], {"infra": stack.infra, **values})
    selector, label = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query).groups()
    return sorted(stack.api(f"/api/v1/label/{label}/values", **{"match[]": selector}))


def test_the_shard_variable_lists_the_shards_and_picking_one_narrows_the_sets_and_the_member_panels(stack, sharded):
    wait_for_every_panel(sharded, frozenset(EMPTY_IN_SHARDED_STACK))
    every_set = sorted([LAGGING_SHARD, DRAINING_SHARD, LOST_SHARD, CONFIG_SET])
    assert variable_values(sharded, "shard") == ["config", LAGGING_SHARD, DRAINING_SHARD, LOST_SHARD]
    assert variable_values(sharded, "set", shard=".*") == every_set  # All: ".*"
    assert variable_values(sharded, "set", shard=LAGGING_SHARD) == [LAGGING_SHARD]
    assert variable_values(sharded, "set", shard="config") == [CONFIG_SET]
    # A plain set has no shard label: only All (".*") is offered, and it lists the set.
    assert variable_values(stack, "shard") == []
    assert variable_values(stack, "set", shard=".*") == [SET_NAME]

    # shard01 picked: Grafana sends the set variable's All as the sets it lists, here shard01 alone.
    picked = panel_queries(sharded, set=grafana_regex(variable_values(sharded, "set", shard=LAGGING_SHARD)))
    m = sharded.member
    assert instant(sharded, picked["Effective replication lag per member", "A"]) == {
        m[LAGGING_SHARD, 1]: RED_LAG_MS / 1000,
        m[LAGGING_SHARD, 2]: 0,
    }
    assert set(instant(sharded, picked["Member state", "A"])) == {m[LAGGING_SHARD, i] for i in range(3)}
    assert instant(sharded, picked["Worst lag by shard", "A"], "shard") == {LAGGING_SHARD: RED_LAG_MS / 1000}
    assert instant(sharded, picked["Sets collected", "B"]) == {"": 0}
    # The plain set's All, sent as its one set, answers as ".*" does.
    plain = panel_queries(stack, set=grafana_regex(variable_values(stack, "set", shard=".*")))
    assert instant(stack, plain["Effective replication lag per member", "A"]) == instant(
        stack, panel_queries(stack)["Effective replication lag per member", "A"]
    )


def test_per_set_alerts_fire_for_the_lagging_shard_the_lost_shard_and_the_down_router_and_nothing_else(sharded):
    m = sharded.member
    red_member = m[LAGGING_SHARD, SHARD_RED_MEMBER]
    down_router = sharded.routers[DOWN_ROUTER]
    expected = {
        ("MongoReplicationLagRed", red_member),
        ("MongoReplicationLagYellow", red_member),
        ("MongoReplicationOplogHeadroomLow", red_member),  # 20 %: not ...Critical
        ("MongoReplicationSetNotCollected", LOST_SHARD),
        ("MongoReplicationRouterDown", down_router),
        ("MongoReplicationMajorityCommitLag", CONFIG_SET),
        ("MongoReplicationFlowControlEngaged", CONFIG_SET),
    }
    wait_until_firing(sharded, expected)
    wait_for_a_whole_for_window_of_evaluations(sharded, expected)

    alerts = active_alerts(sharded)
    assert set(alerts) == expected, "an alert is active that the cluster's state does not call for"
    # Nothing for shard02 (its delayed member has a comfortable window), the config servers' members, ...
    assert_only_these_went_pending_then_fired(sharded, expected)

    scrape = {"infra": SHARDED_INFRA, "instance": sharded.exporter, "job": JOB}
    red = alerts["MongoReplicationLagRed", red_member]
    assert red["labels"] == {
        "alertname": "MongoReplicationLagRed",
        "severity": "critical",
        "set": LAGGING_SHARD,
        "member": red_member,
        **scrape,
    }
    assert red["annotations"]["summary"] == (
        f"MongoDB member {red_member} of {LAGGING_SHARD} (replica set {LAGGING_SHARD}) lags 40s"
    )
    lost = alerts["MongoReplicationSetNotCollected", LOST_SHARD]
    assert lost["labels"] == {
        "alertname": "MongoReplicationSetNotCollected",
        "severity": "critical",
        "set": LOST_SHARD,
        "shard": LOST_SHARD,
        "role": "shard",
        **scrape,
    }
    assert lost["annotations"]["summary"] == f"MongoDB {LOST_SHARD} (replica set {LOST_SHARD}) is not collected"
    assert lost["annotations"]["description"].startswith(
        f"replicationlag has failed to poll replica set {LOST_SHARD} (infra {SHARDED_INFRA}) for two polls in a "
        "row; it has not been collected since the exporter started."
    )
    router = alerts["MongoReplicationRouterDown", down_router]
    assert router["labels"] == {
        "alertname": "MongoReplicationRouterDown",
        "severity": "warning",
        "router": down_router,
        **scrape,
    }
    assert router["annotations"]["summary"] == f"mongos router {down_router} of infra {SHARDED_INFRA} does not answer"
    assert "; 1 of 2 routers answer." in router["annotations"]["description"]
    headroom = alerts["MongoReplicationOplogHeadroomLow", red_member]
    assert headroom["labels"] == {
        "alertname": "MongoReplicationOplogHeadroomLow",
        "severity": "warning",
        "set": LAGGING_SHARD,
        "member": red_member,
        **scrape,
    }
    # The window is read with two finds a few ms apart, so the numbers may be a few ms off 10 s and 50 s.
    summary = re.fullmatch(
        rf"MongoDB member {re.escape(red_member)} of {LAGGING_SHARD} \(replica set {LAGGING_SHARD}\) has "
        r"([\d.]+)s of oplog headroom",
        headroom["annotations"]["summary"],
    )
    assert summary and float(summary[1]) == pytest.approx((SHORT_WINDOW_MS - RED_LAG_MS) / 1000, abs=0.05)
    share = re.search(r"\(([\d.]+)% of the ([\d.]+)s the source holds;", headroom["annotations"]["description"])
    assert share, headroom["annotations"]["description"]
    assert float(share[1]) == pytest.approx(20, abs=0.1) and float(share[2]) == pytest.approx(50, abs=0.05)
    commit = alerts["MongoReplicationMajorityCommitLag", CONFIG_SET]
    assert commit["annotations"]["summary"] == (
        f"MongoDB config servers (replica set {CONFIG_SET}): majority commit point 6s behind the primary"
    )
    flow = alerts["MongoReplicationFlowControlEngaged", CONFIG_SET]
    assert flow["annotations"]["summary"] == (
        f"MongoDB config servers (replica set {CONFIG_SET}): flow control is throttling writes on the primary"
    )


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
