"""The service as exporter.py builds it (`service.build_service`): real pymongo against the simulator, the store,
the metrics registry and the bottle app on the real threaded server on port 0. Polls are triggered by the test
(one `poll()` is what the scheduler runs each interval), so every state is reached deterministically.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from service_util import headline_colour
from view_factory import FakeClock

import bridge
from mongosim import ManualClock, MemberSpec, ReplicaSet
from replicationlag import poller
from replicationlag import service as service_module
from replicationlag.config import load_settings
from replicationlag.liveness import liveness_document
from replicationlag.store import SnapshotStore

FIXTURE_NOW_MS = 1_723_763_174_512
SERVICE_PATH = "/mhp.zeroproblem.mongo.replcationlag"
HTTP_TIMEOUT_S = 2.0  # a generous bound on a shared 2-core machine; bench/ measures the real answer times


@dataclass
class Service:
    rs: ReplicaSet
    built: service_module.Service
    monotonic: FakeClock

    @property
    def store(self) -> SnapshotStore:
        return self.built.store

    @property
    def server(self):
        return self.built.server

    def poll(self) -> None:
        self.built.poll()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=HTTP_TIMEOUT_S)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def document(self) -> dict[str, Any]:
        status, headers, body = self.request("PUT", SERVICE_PATH, b"{}")
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        return json.loads(body)["mhp.zeroproblem.mongo.replcationlag"]

    def liveness(self) -> tuple[int, dict[str, Any]]:
        status, _, body = self.request("GET", "/liveness")
        return status, json.loads(body)

    def metric(self, name: str, **labels: str) -> float | None:
        _, _, body = self.request("GET", "/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                found = dict(part.split("=", 1) for part in _labels(line))
                if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
                    return float(line.rsplit(" ", 1)[1])
        return None


def _labels(line: str) -> list[str]:
    inside = line[line.find("{") + 1 : line.rfind("}")] if "{" in line else ""
    return [part for part in inside.split(",") if "=" in part]


@pytest.fixture
def service() -> Iterator[Callable[..., Service]]:
    started: list[tuple[ReplicaSet, service_module.Service]] = []

    def start(
        members: int | list[MemberSpec] = 3,
        *,
        credentials: str = "",
        uri_options: str = "",
        timeout_s: float = 1.5,
        **set_options: Any,
    ) -> Service:
        set_options.setdefault("clock", ManualClock(FIXTURE_NOW_MS))
        rs = ReplicaSet(members, **set_options).start()
        uri = rs.uri.replace("mongodb://", f"mongodb://{credentials}@") if credentials else rs.uri
        uri += f"&{uri_options}" if uri_options else ""
        flags = ["--mongodb.uri", uri, "--collect.interval", "60", "--collect.timeout", f"{timeout_s:g}"]
        settings = load_settings([*flags, "--web.listen-address", "127.0.0.1:0"], env={})
        monotonic = FakeClock()
        built = service_module.build_service(settings, bridge, monotonic=monotonic, wall_ms=rs.clock.now_ms)
        threading.Thread(target=built.server.run, daemon=True).start()  # HTTP only: the test runs the polls
        started.append((rs, built))
        return Service(rs, built, monotonic)

    yield start
    for rs, built in started:
        built.stop()
        rs.stop()


MEMBER_LINE = ("- Primary ", "- Secondary ", "- Arbiter ", "- Last known: ")  # not the summary's lines


def member_line(document: dict[str, Any], name: str) -> str:
    body = document["messages"][0]["actionBody"]
    return next(line for line in body.splitlines() if line.startswith(MEMBER_LINE) and name in line)


@pytest.mark.parametrize(
    ("lag_ms", "status"),
    [(0, "GREEN"), (4_999, "GREEN"), (5_000, "YELLOW"), (29_999, "YELLOW"), (30_000, "RED"), (3_600_000, "RED")],
)
def test_every_endpoint_shows_the_colour_of_an_exact_lag(service, lag_ms, status):
    svc = service(3)
    svc.rs.set_lag(1, lag_ms)
    svc.poll()

    document = svc.document()
    secondary = svc.rs.address(1)
    name = f"{secondary[0]}:{secondary[1]}"
    assert document["status"] == status
    assert document["timestamp"] == FIXTURE_NOW_MS
    assert len(document["messages"]) == 1
    line = f"- Secondary {name} replication lag {lag_ms}ms"
    if status != "GREEN":  # a YELLOW or RED member also says how far it may still fall (the default 24 h oplog)
        hours, minutes = divmod((24 * 3600_000 - lag_ms) // 60_000, 60)
        line += f" (oplog headroom {hours} h{f' {minutes} min' if minutes else ''})"
    assert member_line(document, name) == line
    assert svc.metric("mongodb_replication_lag_seconds", member=name) == lag_ms / 1000
    assert svc.metric("mongodb_replication_status", set="rs0") == {"GREEN": 0, "YELLOW": 1, "RED": 2}[status]
    assert svc.liveness()[0] == 200
    _, _, page = svc.request("GET", "/")
    assert headline_colour(page.decode()) == status  # its CSS names all three colours, whatever the status


def test_the_document_lists_the_primary_first_and_every_member_by_host_and_port(service):
    svc = service(3, arbiter=True)
    svc.rs.set_lag(1, 1_239)
    svc.rs.set_lag(2, 12_486)
    svc.poll()

    verdict, *lines = svc.document()["messages"][0]["actionBody"].splitlines()
    lines = [line for line in lines if line.startswith(MEMBER_LINE)]
    names = [f"{h}:{p}" for h, p in (svc.rs.address(i) for i in range(4))]
    assert verdict == f"YELLOW: replica set rs0, 4 members: 1 member 5 s or more behind; worst lag {names[2]} 12486ms"
    assert lines[0] == f"- Primary {names[0]} replication lag 0ms"
    assert lines[1] == f"- Secondary {names[1]} replication lag 1239ms"
    assert lines[2] == f"- Secondary {names[2]} replication lag 12486ms (oplog headroom 23 h 59 min)"
    assert lines[3].startswith(f"- Arbiter {names[3]}")
    assert svc.metric("mongodb_replication_lag_seconds", member=names[3]) is None
    assert svc.metric("mongodb_replication_member_state", member=names[3]) == 7


def test_a_down_member_makes_the_set_red_with_the_reason_and_no_lag_series(service):
    svc = service(3)
    svc.rs.take_down(2)
    svc.poll()

    name = "{}:{}".format(*svc.rs.address(2))
    document = svc.document()
    assert document["status"] == "RED"
    assert "DOWN" in member_line(document, name)
    assert "replication lag" not in member_line(document, name)
    assert svc.metric("mongodb_replication_lag_seconds", member=name) is None
    assert svc.metric("mongodb_replication_member_health", member=name) == 0
    assert svc.liveness()[0] == 200  # the exporter is doing its job: the set is RED, not the exporter


def test_with_no_primary_the_document_is_red_and_names_the_reference(service):
    svc = service(3)
    svc.rs.set_lag(2, 2_000)
    svc.rs.no_primary()
    svc.poll()

    document = svc.document()
    assert document["status"] == "RED"
    first = document["messages"][0]["actionBody"].splitlines()[0]
    assert "no primary" in first.lower()
    assert svc.metric("mongodb_replication_primary_present", set="rs0") == 0
    assert svc.liveness()[0] == 200


def test_a_delayed_member_is_judged_on_its_effective_lag(service):
    specs = [MemberSpec("primary"), MemberSpec("secondary"), MemberSpec("secondary", hidden=True, priority=0)]
    svc = service(specs)
    svc.rs.set_delay(2, 3600)
    svc.rs.set_lag(2, 3_600_429)
    svc.poll()

    name = "{}:{}".format(*svc.rs.address(2))
    document = svc.document()
    assert document["status"] == "GREEN"
    assert "delayed 3600s" in member_line(document, name)
    assert "429ms" in member_line(document, name)
    assert svc.metric("mongodb_replication_lag_seconds", member=name) == 0.429
    assert svc.metric("mongodb_replication_raw_lag_seconds", member=name) == 3600.429
    assert svc.metric("mongodb_replication_member_delay_seconds", member=name) == 3600


def test_an_election_is_followed_on_the_next_poll(service):
    svc = service(3)
    svc.poll()
    svc.rs.elect(1)
    new_primary = "{}:{}".format(*svc.rs.address(1))
    svc.poll()

    document = svc.document()
    members = [line for line in document["messages"][0]["actionBody"].splitlines() if line.startswith(MEMBER_LINE)]
    assert members[0].startswith(f"- Primary {new_primary}")
    assert svc.metric("mongodb_replication_member_state", member=new_primary) == 1
    assert svc.metric("mongodb_replication_lag_seconds", member=new_primary) is None


def test_a_wrong_password_is_a_red_document_and_a_failing_liveness(service):
    users = [("monitor", "right-password", ("clusterMonitor", "read@local"))]
    svc = service(3, users=users, credentials="monitor:wrong-password")
    svc.poll()

    document = svc.document()
    assert document["status"] == "RED"
    assert "authentication failed" in document["messages"][0]["actionBody"]
    status, answer = svc.liveness()
    assert status == 503
    assert answer["last_failure_kind"] == "auth"
    assert svc.metric("mongodb_replication_up", infra="clusterKeeper") == 0
    assert svc.metric("mongodb_replication_collection_failures_total", kind="auth") == 1
    assert "wrong-password" not in json.dumps(document) + json.dumps(answer)


def test_a_mechanism_the_server_does_not_offer_is_an_auth_failure_that_says_what_to_fix(service):
    """Issue 17 item 8: the server's MechanismUnavailable (code 334) was kind `error`, 'failed with code 334'."""
    users = [("monitor", "pw", ("clusterMonitor", "read@local"))]
    svc = service(3, users=users, credentials="monitor:pw", uri_options="authMechanism=PLAIN")
    svc.poll()

    status, answer = svc.liveness()
    assert (status, answer["last_failure_kind"]) == (503, "auth")
    assert "authMechanism=PLAIN" in answer["last_failure"]
    assert "remove authMechanism" in answer["last_failure"]
    assert svc.metric("mongodb_replication_collection_failures_total", kind="auth") == 1


def test_an_srv_name_that_does_not_resolve_is_unreachable_and_says_what_to_check():
    """Issue 17 item 8: a failed SRV lookup was kind `error`; no member can be reached, so liveness fails at once."""
    flags = ["--mongodb.uri", "mongodb+srv://monitor:pw@no-such-cluster.invalid/", "--collect.timeout", "1"]
    built = service_module.build_service(load_settings([*flags, "--web.listen-address", "127.0.0.1:0"], env={}), bridge)
    try:
        built.poll()
        status, answer = liveness_document(built.store.view())
    finally:
        built.stop()
    assert (status, answer["last_failure_kind"]) == (503, "unreachable")
    assert "SRV record of the mongodb+srv:// host could not be resolved" in answer["last_failure"]
    assert "check the host name" in answer["last_failure"]
    assert "pw" not in answer["last_failure"]


def test_a_user_without_cluster_monitor_is_told_which_role_is_missing(service):
    users = [("monitor", "pw", ("clusterMonitor",)), ("app", "pw", ("readWrite@app",))]
    svc = service(3, users=users, credentials="app:pw")
    svc.poll()

    assert "clusterMonitor" in svc.document()["messages"][0]["actionBody"]
    assert svc.liveness()[1]["last_failure_kind"] == "unauthorized"


def test_a_monitoring_user_without_read_on_local_still_gets_the_naive_lag(service):
    svc = service(3, users=[("monitor", "pw", ("clusterMonitor",))], credentials="monitor:pw")
    svc.rs.set_lag(1, 6_000)
    svc.poll()

    name = "{}:{}".format(*svc.rs.address(1))
    document = svc.document()
    assert document["status"] == "YELLOW"
    assert svc.metric("mongodb_replication_lag_seconds", member=name) == 6.0
    view = svc.store.view()
    assert any("read on the local database" in str(note) for note in view.snapshot.notes)


@pytest.mark.parametrize("topology", ["standalone", "uninitialized"])
def test_a_server_that_is_not_a_replica_set_is_reported_as_such(service, topology):
    svc = service(3)
    svc.rs.set_topology(topology)
    svc.poll()

    document = svc.document()
    assert document["status"] == "RED"
    status, answer = svc.liveness()
    assert status == 503
    assert answer["last_failure_kind"] == "not_replica_set"


def test_a_hung_primary_costs_one_poll_deadline_and_the_endpoints_keep_answering(service):
    svc = service(3, timeout_s=1.0)
    svc.poll()
    svc.rs.hang(0, "after_accept")
    polling = threading.Thread(target=svc.poll)
    polling.start()
    try:
        # While the poll waits on the hung primary, every endpoint answers from the last snapshot at once
        # (each request is bounded by the client's timeout: a blocked handler would fail the test).
        assert svc.request("GET", "/metrics")[0] == 200
        assert svc.request("PUT", SERVICE_PATH)[0] == 200
        assert svc.request("GET", "/liveness")[0] == 200
        assert svc.request("GET", "/")[0] == 200
    finally:
        # The poll is bounded by its 1 s deadline (the watchdog adds a grace); one more second is slack for load.
        polling.join(1.0 + poller.WATCHDOG_GRACE_S + 1.0)
    assert not polling.is_alive()
    view = svc.store.view()
    assert view.failure is not None
    assert view.failure.kind in {"timeout", "unreachable"}


def test_stale_data_is_red_and_fails_liveness_one_millisecond_past_three_minutes(service):
    svc = service(3)
    svc.poll()
    svc.monotonic.now += 180 - 0.001
    assert svc.liveness()[0] == 200
    assert svc.document()["status"] == "GREEN"

    svc.monotonic.now += 0.002
    status, answer = svc.liveness()
    assert status == 503
    assert "180" in " ".join(answer["reasons"])
    document = svc.document()
    assert document["status"] == "RED"
    assert "stale" in document["messages"][0]["actionBody"].splitlines()[0].lower()


def test_the_post_idle_write_is_not_a_false_alarm(service):
    svc = service(3)
    clock: ManualClock = svc.rs.clock
    svc.rs.set_lag(1, 2_000)
    svc.rs.idle()
    clock.advance(10_000)
    clock.advance(9_000)
    svc.rs.write("app.events", {"x": 1})
    clock.advance(100)
    svc.poll()

    name = "{}:{}".format(*svc.rs.address(1))
    assert svc.document()["status"] == "GREEN"
    assert svc.metric("mongodb_replication_lag_seconds", member=name) == 0.1


@pytest.mark.parametrize("attempt", range(5))
def test_the_first_poll_is_answered_by_the_primary_whichever_member_the_driver_finds_first(service, attempt):
    svc = service(3)
    svc.poll()

    snapshot = svc.store.view().snapshot
    assert snapshot is not None
    assert snapshot.answered_by == "{}:{}".format(*svc.rs.address(0))


def test_after_an_outage_that_made_the_driver_drop_every_seed_a_fresh_client_brings_the_set_back(service, caplog):
    """With replicaSet= in the URI pymongo drops a seed that answers as a standalone and never looks at the URI
    again: once all of them answered so, only a fresh client (the keeper's renewal) sees the set when it is back."""
    svc = service(3)
    svc.poll()
    assert svc.document()["status"] == "GREEN"

    svc.rs.set_topology("standalone")  # every member at once: a total outage of the set as a set
    for _ in range(10):  # each poll lasts up to the 1.5 s deadline; the driver drops the seeds at its next heartbeat
        svc.poll()
        if svc.built.store.view().failure is not None and svc.liveness()[1]["last_failure_kind"] == "not_replica_set":
            break
    assert svc.liveness()[1]["last_failure_kind"] == "not_replica_set"

    svc.rs.set_topology("replset")
    with caplog.at_level(logging.DEBUG, logger="replicationlag.keeper"):
        for _ in range(5):
            svc.poll()
            if svc.document()["status"] == "GREEN":
                break
    assert svc.document()["status"] == "GREEN"
    assert svc.liveness()[0] == 200
    renewals = [r for r in caplog.records if "starting over from the hosts of the URI" in r.getMessage()]
    assert [r.levelname for r in renewals][:1] == ["INFO"]  # said once per outage at info
