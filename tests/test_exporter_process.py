"""exporter.py as a user runs it: a subprocess against the simulator, read only through HTTP and its log."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import service_util

from mongosim import ReplicaSet

pytestmark = pytest.mark.slow  # README "Tests": skipped by the quick run

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "pa55:w@rd/with%symbols"
ENCODED = "pa55%3Aw%40rd%2Fwith%25symbols"
USERS = [("monitor", PASSWORD, ("clusterMonitor", "read@local"))]
SERVICE_PATH = "/mhp.zeroproblem.mongo.replcationlag"
STOP_TIMEOUT_S = 10.0
HUNG_POLL_S = 30  # --collect.timeout while every member hangs: the first poll is in flight this long


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Exporter:
    """A running exporter.py and what it printed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "exporter.py"), "--web.listen-address", f"127.0.0.1:{self.port}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        self.answers: list[str] = []

    def get(self, path: str, method: str = "GET") -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            body = response.read().decode()
            self.answers.append(body)
            return response.status, body
        finally:
            connection.close()

    def wait_for(self, condition: Callable[[], bool], seconds: float = 15) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.05)
        raise AssertionError(f"condition not met within {seconds} s; answers so far: {self.answers[-3:]}")

    def status(self) -> str:
        return json.loads(self.get(SERVICE_PATH, "PUT")[1])["mhp.zeroproblem.mongo.replcationlag"]["status"]

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Send `sig` (unless it has exited) and wait for the exit, with a bound far above a clean stop (well under
        a second) and below the poll the signal tests hang: under load a fixed 2 s was eaten by other work."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            output, _ = self.process.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate(timeout=5)
            name = signal.Signals(sig).name
            raise AssertionError(
                f"the exporter did not stop within {STOP_TIMEOUT_S:g} s of {name}:\n{output}"
            ) from None
        return self.process.returncode, output


@pytest.fixture
def exporters() -> Iterator[Callable[..., Exporter]]:
    started: list[Exporter] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Exporter:
        exporter = Exporter(*args, env=env)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        if exporter.process.poll() is None:
            exporter.process.kill()
            exporter.process.communicate(timeout=5)


def test_the_password_appears_in_no_log_line_answer_or_metric_through_faults(exporters, start_set, tmp_path):
    rs: ReplicaSet = start_set(3, arbiter=True, users=USERS)
    config = tmp_path / "infra.toml"
    config.write_text(
        f'[infra.clusterKeeper]\nuri = "{rs.uri.replace("mongodb://", f"mongodb://monitor:{ENCODED}@")}"\n'
    )
    config.chmod(0o644)  # readable by others: the exporter must warn, without the password
    exporter = exporters(
        "--config.file", str(config), "--collect.interval", "0.5", "--collect.timeout", "0.4", "--log.level", "debug"
    )
    exporter.wait_for(lambda: exporter.status() == "GREEN")

    rs.set_lag(1, 40_000)
    exporter.wait_for(lambda: exporter.status() == "RED")
    rs.set_lag(1, 0)
    rs.take_down(2)
    exporter.wait_for(lambda: "DOWN" in exporter.get(SERVICE_PATH)[1])
    rs.bring_up(2)
    rs.hang(0, "after_accept")
    exporter.wait_for(lambda: "timeout" in exporter.get("/liveness")[1] or "Collection failed" in exporter.get("/")[1])
    rs.hang(0, None)
    rs.add_user("monitor", "another-password", ("clusterMonitor",))  # the exporter's password is now wrong
    exporter.wait_for(lambda: exporter.get("/liveness")[0] == 503 and "authentication" in exporter.answers[-1])
    for path in ("/", "/metrics", "/liveness", SERVICE_PATH):
        exporter.get(path)

    code, output = exporter.stop()
    assert code == 0
    assert "readable by others" in output
    seen = output + "\n".join(exporter.answers)
    for spelling in (PASSWORD, ENCODED, "pa55:w@rd", "pa55%3A"):
        assert spelling not in seen, f"the password leaked as {spelling!r}"
    assert "monitor:***@" in output


@pytest.mark.parametrize("how", ["MONGODB_PASSWORD", "--mongodb.password-file"])
def test_a_user_and_password_given_apart_from_the_uri_log_in_and_never_show(exporters, start_set, tmp_path, how):
    """Percona's MONGODB_USER / MONGODB_PASSWORD (or a password file, as a Kubernetes Secret mounts one): the URI
    needs no assembly, and the password, special characters and all, is percent-encoded into it and redacted."""
    rs: ReplicaSet = start_set(3, users=USERS)
    env, flags = {"MONGODB_USER": "monitor"}, []
    if how == "MONGODB_PASSWORD":
        env[how] = PASSWORD
    else:
        secret = tmp_path / "password"
        secret.write_text(PASSWORD + "\n")  # as `echo` writes it
        secret.chmod(0o440)
        flags = [how, str(secret)]
    exporter = exporters(
        "--mongodb.uri", rs.uri, *flags, "--collect.interval", "0.5", "--collect.timeout", "0.4",
        "--log.level", "debug", env=env,
    )  # fmt: skip
    exporter.wait_for(lambda: exporter.get("/liveness")[0] == 200 and exporter.status() == "GREEN")
    for path in ("/", "/metrics", "/liveness", "/-/ready", SERVICE_PATH):
        exporter.get(path)

    code, output = exporter.stop()
    assert code == 0, output
    seen = output + "\n".join(exporter.answers)
    for spelling in (PASSWORD, ENCODED, "pa55:w@rd", "pa55%3A"):
        assert spelling not in seen, f"the password leaked as {spelling!r}"
    assert "monitor:***@" in output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_each_stop_it_cleanly_while_a_poll_is_in_flight(exporters, start_set, signum):
    """Every member hangs from the start, so the first poll (started before the exporter says it serves) waits
    out its whole deadline: it is still running when the one signal arrives. Ctrl-C is handled like SIGTERM."""
    rs: ReplicaSet = start_set(3)
    for member in range(3):
        rs.hang(member, "after_accept")
    exporter = exporters("--mongodb.uri", rs.uri, "--collect.interval", "60", "--collect.timeout", str(HUNG_POLL_S))
    exporter.wait_for(lambda: exporter.get("/liveness")[0] == 503)
    assert json.loads(exporter.answers[-1])["polls"] == 0  # serving, and the first poll has not ended

    code, output = exporter.stop(signum)  # this signal only; STOP_TIMEOUT_S is a third of the poll's deadline

    assert code == 0
    lines = output.splitlines()
    assert [line for line in lines if 'msg="stopping"' in line], output
    assert "collection failed" not in output  # the poll cut short published nothing
    assert "Traceback" not in output
    assert exporter.process.poll() == 0  # the process has ended


def test_json_logs_are_one_object_per_line(exporters, start_set):
    rs: ReplicaSet = start_set(3)
    exporter = exporters("--mongodb.uri", rs.uri, "--log.format", "json", "--log.level", "debug")
    exporter.wait_for(lambda: exporter.get("/liveness")[0] == 200)
    code, output = exporter.stop()
    assert code == 0
    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert {"ts", "level", "source", "msg"} <= set(records[0])
    assert any("is GREEN" in record["msg"] for record in records)


def test_a_burst_of_concurrent_scrapes_does_not_flood_the_log(exporters, start_set):
    rs: ReplicaSet = start_set(3)
    exporter = exporters("--mongodb.uri", rs.uri, "--collect.interval", "30")
    exporter.wait_for(lambda: exporter.get("/liveness")[0] == 200)

    def scrape() -> None:
        for _ in range(25):
            exporter.get("/metrics")

    threads = [threading.Thread(target=scrape) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    code, output = exporter.stop()
    assert code == 0
    assert "Task queue depth" not in output
    assert len(output.splitlines()) < 10, output[-2000:]


def test_with_json_logs_a_driver_warning_is_a_json_line_too():
    """Issue 17 item 7: pymongo's DocumentDB warning came out as plain text, past the redaction."""
    exporter = service_util.Exporter(
        "--mongodb.uri", "mongodb://monitor:pw@db0.docdb.amazonaws.com:1/", "--log.format", "json"
    )
    try:
        service_util.wait_until(lambda: exporter.logged("DocumentDB"), 10, "the DocumentDB warning")
    finally:
        status = exporter.stop()
    assert status == 0
    records = [json.loads(line) for line in exporter.lines()]  # every line is JSON
    [warning] = [r for r in records if "DocumentDB" in r["msg"]]
    assert (warning["level"], warning["source"]) == ("warn", "py.warnings")
    assert warning["msg"].startswith("UserWarning: You appear to be connected to a DocumentDB cluster")


def test_the_demo_polls_its_simulator_even_with_a_uri_in_the_environment():
    """Issue 17 item 6: with MONGODB_URI set, `--demo` polled that cluster every 60 s and started no simulator."""
    env = {"MONGODB_URI": "mongodb://monitor:pw@127.0.0.1:1/?replicaSet=rs0"}
    exporter = service_util.Exporter("--demo", env=env)
    try:
        look, _ = exporter.wait_for(lambda look: look.polls >= 1, 15, "the first poll")
    finally:
        status = exporter.stop()
    assert status == 0
    assert look.liveness["last_failure_kind"] is None
    assert look.liveness["collection_interval_s"] == 5
    assert look.metrics.value("mongodb_replication_up") == 1
    assert "--demo: MONGODB_URI is ignored" in exporter.log_text
    assert "polling the built-in simulated replica set" in exporter.log_text


def test_the_cluster_demo_watches_every_set_of_a_simulated_sharded_cluster():
    exporter = service_util.Exporter("--demo", "--demo.cluster")
    try:
        # /liveness is read before /metrics: under load the first poll can end between the two, so wait for both.
        look, _ = exporter.wait_for(
            lambda look: (
                len(look.metrics.series("mongodb_replication_set_info")) == 4
                and look.liveness_status == 200
                and look.liveness["sets_collected"] == 4
            ),
            15,
            "four sets watched and collected, liveness 200",
        )
    finally:
        status = exporter.stop()
    assert status == 0
    roles = sorted((s["shard"], s["role"]) for s in look.metrics.series("mongodb_replication_set_info"))
    assert roles == [("config", "config"), ("shard01", "shard"), ("shard02", "shard"), ("shard03", "shard")]
    assert "polling the built-in simulated sharded cluster" in exporter.log_text
