"""A sharded cluster watched from one router URI: the service as exporter.py builds it (`build_service`), real
pymongo over TCP against a simulated cluster (mongosim.ShardedCluster), the four endpoints through the real
threaded server. Polls are driven by the test, so every state is reached deterministically.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families
from view_factory import FakeClock

import bridge
from mongosim import ManualClock, ShardedCluster
from replicationlag import service as service_module
from replicationlag.config import load_settings

FIXTURE_NOW_MS = 1_723_763_174_512
SERVICE_ID = "mhp.zeroproblem.mongo.replcationlag"
HTTP_TIMEOUT_S = 2.0
PASSWORD = "r0uter-S3cret!"
SHARD_PASSWORD = "sh4rd-Pa55"


@dataclass
class Watched:
    cluster: ShardedCluster
    built: service_module.Service
    monotonic: FakeClock

    def poll(self) -> None:
        self.built.poll()

    def request(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.built.server.port, timeout=HTTP_TIMEOUT_S)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def document(self) -> dict[str, Any]:
        status, _, body = self.request("PUT", "/" + SERVICE_ID)
        assert status == 200
        return json.loads(body)[SERVICE_ID]

    def body(self) -> str:
        return self.document()["messages"][0]["actionBody"]

    def liveness(self) -> tuple[int, dict[str, Any]]:
        status, _, body = self.request("GET", "/liveness")
        return status, json.loads(body)

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        _, _, body = self.request("GET", "/metrics")
        return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(body.decode()) for s in f.samples]

    def metric(self, name: str, **labels: str) -> float | None:
        found = [v for n, ls, v in self.samples() if n == name and labels.items() <= ls.items()]
        assert len(found) <= 1, f"{len(found)} samples of {name} match {labels}"
        return found[0] if found else None

    def lags(self) -> dict[tuple[str, str], float]:
        return {(ls["set"], ls["member"]): v for n, ls, v in self.samples() if n == "mongodb_replication_lag_seconds"}

    def page(self) -> str:
        return self.request("GET", "/")[2].decode()


def member_name(cluster: ShardedCluster, shard: str, member: int) -> str:
    rs = cluster.config if shard == "config" else cluster.shard(shard)
    host, port = rs.address(member)
    return f"{host}:{port}"


@pytest.fixture
def watch(tmp_path) -> Iterator[Callable[..., Watched]]:
    started: list[tuple[ShardedCluster, service_module.Service]] = []

    def start(
        shards: int = 2,
        *,
        uri: Callable[[ShardedCluster], str] = lambda cluster: cluster.uri,
        config_text: str = "",
        timeout_s: float = 1.5,
        external_url: str = "",
        **cluster_options: Any,
    ) -> Watched:
        cluster_options.setdefault("clock", ManualClock(FIXTURE_NOW_MS))
        cluster = ShardedCluster(shards, **cluster_options).start()
        flags = ["--collect.interval", "60", "--collect.timeout", f"{timeout_s:g}"]
        if config_text:
            path = tmp_path / "replicationlag.toml"
            path.write_text(f'[infra.clusterKeeper]\nuri = "{uri(cluster)}"\n{config_text}')
            os.chmod(path, 0o600)
            flags += ["--config.file", str(path)]
        else:
            flags += ["--mongodb.uri", uri(cluster)]
        flags += ["--web.external-url", external_url] if external_url else []
        settings = load_settings([*flags, "--web.listen-address", "127.0.0.1:0"], env={})
        monotonic = FakeClock()
        built = service_module.build_service(settings, bridge, monotonic=monotonic, wall_ms=cluster.clock.now_ms)
        threading.Thread(target=built.server.run, daemon=True).start()
        started.append((cluster, built))
        return Watched(cluster, built, monotonic)

    yield start
    for cluster, built in started:
        built.stop()
        cluster.stop()


def with_user(cluster: ShardedCluster, user: str = "monitor", password: str = PASSWORD) -> str:
    scheme, rest = cluster.uri.split("://", 1)
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"


def test_one_router_address_in_every_shard_and_the_config_set_out_each_member_in_exact_ms(watch):
    w = watch(2)
    w.cluster.shard("shard01").set_lag(1, 1_239)
    w.cluster.shard("shard02").set_lag(2, 5_001)
    w.cluster.config.set_lag(1, 77)
    w.poll()

    lags = w.lags()
    assert lags[("shard01", member_name(w.cluster, "shard01", 1))] == 1.239
    assert lags[("shard02", member_name(w.cluster, "shard02", 2))] == 5.001
    assert lags[("configRepl", member_name(w.cluster, "config", 1))] == 0.077
    assert {s for s, _ in lags} == {"shard01", "shard02", "configRepl"}
    roles = {ls["set"]: (ls["shard"], ls["role"]) for n, ls, _ in w.samples() if n == "mongodb_replication_set_info"}
    assert roles == {
        "shard01": ("shard01", "shard"),
        "shard02": ("shard02", "shard"),
        "configRepl": ("config", "config"),
    }

    document = w.document()
    assert document["status"] == "YELLOW"  # the worst set
    body = document["messages"][0]["actionBody"]
    shard02 = member_name(w.cluster, "shard02", 2)
    # The verdict, then the problems: which kind, which set, which member, since when.
    assert body.startswith(f"YELLOW: 1 member 5 s or more behind in shard02; worst lag shard02 {shard02} 5001ms\n")
    assert f"- YELLOW: 5 s or more behind: 1 member in 1 shard: shard02 {shard02} 5001ms (since " in body
    assert f"- Secondary {member_name(w.cluster, 'shard01', 1)} replication lag 1239ms" in body.splitlines()
    yellow = f"- Secondary {member_name(w.cluster, 'shard02', 2)} replication lag 5001ms (oplog headroom 23 h 59 min)"
    assert yellow in body.splitlines()
    assert "### config servers (replica set configRepl): GREEN" in body.splitlines()
    assert w.liveness()[0] == 200


def test_two_routers_give_the_same_cluster_and_one_router_down_is_not_a_shard_down(watch):
    w = watch(2, routers=2)
    w.poll()
    assert w.metric("mongodb_replication_router_up", router=w.cluster.routers[1].name) == 1

    w.cluster.router(1).take_down()
    w.cluster.shard("shard01").set_lag(1, 2_000)
    w.poll()
    assert w.lags()[("shard01", member_name(w.cluster, "shard01", 1))] == 2.0
    assert w.document()["status"] == "GREEN"
    assert w.metric("mongodb_replication_router_up", router=w.cluster.routers[1].name) == 0
    assert f"Router not reachable: {w.cluster.routers[1].name}" in w.body()


def test_every_router_down_keeps_polling_the_last_known_map_and_says_so(watch):
    w = watch(2)
    w.poll()
    w.cluster.router(0).take_down()
    w.cluster.shard("shard02").set_lag(1, 3_333)
    w.poll()

    assert w.lags()[("shard02", member_name(w.cluster, "shard02", 1))] == 3.333
    body = w.body()
    assert body.splitlines()[1].startswith("- NOTE: Shard map not read: cannot read the shard map through the routers")
    assert "polling the last known map" in body
    assert w.liveness()[0] == 200  # the sets were read: the exporter is doing its job


def test_routers_unreachable_from_the_start_fail_liveness_with_the_reason(watch):
    w = watch(1, timeout_s=1.0)
    w.cluster.router(0).take_down()
    w.poll()
    status, answer = w.liveness()
    assert status == 503
    assert "none of the URI's servers answered within 1 s" in " ".join(answer["reasons"])
    assert w.document()["status"] == "RED"


def test_a_member_down_in_one_shard_turns_that_set_red_and_leaves_the_others_green(watch):
    w = watch(3)
    w.poll()
    down = member_name(w.cluster, "shard02", 2)
    w.cluster.shard("shard02").take_down(2)
    w.cluster.shard("shard03").set_lag(1, 1_500)
    w.poll()

    status = {ls["set"]: v for n, ls, v in w.samples() if n == "mongodb_replication_status"}
    assert status == {"shard01": 0, "shard02": 2, "shard03": 0, "configRepl": 0}
    assert w.lags()[("shard03", member_name(w.cluster, "shard03", 1))] == 1.5
    body = w.body()
    assert body.splitlines()[0].startswith("RED: 1 member DOWN in shard02; worst lag shard03 ")
    assert body.splitlines()[1].startswith("- RED: DOWN: 1 member in 1 shard: shard02 (since ")
    assert body.splitlines()[2].startswith("### shard02 (replica set shard02): RED since ")
    assert f"- Secondary {down} DOWN: " in body
    assert w.liveness()[0] == 200  # one shard down is the cluster's problem, not the exporter's


def test_a_hung_shard_primary_fails_that_set_only_and_the_others_publish_fresh_values_in_the_same_poll(watch):
    w = watch(2, timeout_s=1.0)
    w.poll()
    w.cluster.shard("shard01").hang(0, "after_accept")
    w.cluster.shard("shard02").set_lag(1, 4_321)
    w.poll()

    view = w.built.store.view()
    by_name = {s.name: s for s in view.sets}
    assert by_name["shard01"].failure is not None
    assert by_name["shard01"].failure.kind in {"timeout", "unreachable"}
    assert by_name["shard02"].current is not None
    assert w.lags()[("shard02", member_name(w.cluster, "shard02", 1))] == 4.321
    assert w.metric("mongodb_replication_set_up", set="shard01") == 0
    assert w.metric("mongodb_replication_set_up", set="shard02") == 1
    assert w.body().splitlines()[1].startswith("- RED: collection failed (timeout): shard01: ")


def test_a_shard_with_no_primary_is_red_and_measured_against_its_freshest_member(watch):
    w = watch(2)
    w.cluster.shard("shard01").no_primary()
    w.poll()
    body = w.body()
    assert w.document()["status"] == "RED"
    assert body.splitlines()[:2] == [
        "RED: no primary in shard01",
        "- RED: no primary: shard01 (since 23:06 UTC)",
    ]
    assert "- No primary: lag measured against the freshest member" in body


def test_the_config_server_set_down_is_its_own_red_set_and_the_shards_stay_green(watch):
    w = watch(2, timeout_s=1.0)
    w.poll()
    for member in range(3):
        w.cluster.config.take_down(member)
    w.poll()
    status = {ls["set"]: v for n, ls, v in w.samples() if n == "mongodb_replication_status"}
    assert status == {"shard01": 0, "shard02": 0, "configRepl": 2}


def test_wrong_shard_credentials_name_the_shard_and_what_to_create(watch):
    w = watch(
        2,
        users=[("monitor", PASSWORD)],
        shard_users=[("monitor", SHARD_PASSWORD)],
        uri=with_user,
        config_text=f'[infra.clusterKeeper.shards]\nusername = "monitor"\npassword = "{SHARD_PASSWORD}"\n'
        '[infra.clusterKeeper.shards.shard02]\nusername = "monitor"\npassword = "not-the-password"\n',
    )
    w.poll()
    by_name = {s.name: s for s in w.built.store.view().sets}
    assert by_name["shard01"].current is not None  # shard-local user from [infra.clusterKeeper.shards]
    assert by_name["configRepl"].current is not None  # the router's user lives on the config servers
    failure = by_name["shard02"].failure
    assert failure is not None and failure.kind == "auth"
    assert "create the monitoring user on shard02's replica set" in failure.message
    assert "clusterMonitor, read on local" in failure.message
    body = w.body()
    assert body.splitlines()[1].startswith(
        "- RED: collection failed (auth): shard02: authentication failed on shard02 (replica set shard02): create the "
    )
    assert "- Collection failed: authentication failed on shard02" in body
    for text in (body, w.page(), json.dumps(w.liveness()[1]), str(w.samples())):
        assert PASSWORD not in text and SHARD_PASSWORD not in text and "not-the-password" not in text


def test_the_router_user_alone_cannot_log_in_on_the_shards_and_the_document_says_what_to_create(watch):
    w = watch(1, users=[("monitor", PASSWORD)], uri=with_user)
    w.poll()
    by_name = {s.name: s for s in w.built.store.view().sets}
    assert by_name["configRepl"].current is not None
    assert "create the monitoring user on shard01's replica set" in by_name["shard01"].failure.message


def test_a_shard_added_drained_and_removed_is_followed_without_a_restart_and_its_series_go(watch):
    w = watch(1)
    w.poll()
    added = w.cluster.add_shard()
    w.cluster.shard(added).set_lag(1, 900)
    w.poll()
    assert w.lags()[(added, member_name(w.cluster, added, 1))] == 0.9

    w.cluster.drain_shard(added)
    w.poll()
    assert w.metric("mongodb_replication_shard_draining", set=added) == 1
    assert f"### {added} (replica set {added}): GREEN (draining: removeShard in progress)" in w.body()

    w.cluster.remove_shard(added)
    w.poll()
    assert not [ls for n, ls, _ in w.samples() if ls.get("set") == added]
    assert added not in w.body()
    assert {s.name for s in w.built.store.view().sets} == {"shard01", "configRepl"}


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_threads_and_descriptors_do_not_grow_as_shards_come_and_go(watch, wait_until):
    w = watch(1)
    w.poll()

    def add_and_remove() -> None:
        shard = w.cluster.add_shard()
        w.poll()
        w.cluster.remove_shard(shard)
        w.poll()

    add_and_remove()  # the first round opens what every later round reuses (the router's pool)
    threads, descriptors = threading.active_count(), _descriptors()
    for _ in range(4):
        add_and_remove()
    # Closing a set's client happens in the background: give it its moment, with a deadline.
    assert wait_until(lambda: threading.active_count() <= threads and _descriptors() <= descriptors, 10.0), (
        threading.active_count(),
        threads,
        _descriptors(),
        descriptors,
    )


def test_a_refused_get_shard_map_falls_back_to_list_shards_and_says_the_config_set_is_not_watched(watch):
    w = watch(2)
    w.cluster.refuse_shard_map("atlas")
    w.poll()
    assert {s.name for s in w.built.store.view().sets} == {"shard01", "shard02"}
    assert "The config server replica set is not watched" in w.body()


def test_with_get_shard_map_and_list_shards_refused_the_map_is_read_from_config_shards(watch):
    w = watch(2)
    w.cluster.refuse_shard_map("unauthorized")
    w.cluster.refuse_list_shards("unauthorized")
    w.cluster.shard("shard02").set_lag(1, 1_500)
    w.poll()

    view = w.built.store.view()
    assert view.map_source == "config.shards"
    assert {s.name for s in view.sets} == {"shard01", "shard02"}
    assert w.lags()[("shard02", member_name(w.cluster, "shard02", 1))] == 1.5
    assert w.document()["status"] == "GREEN"
    assert "The config server replica set is not watched" in w.body()


@pytest.mark.parametrize("kind", ["unauthorized", "atlas"])
def test_with_all_three_ways_to_the_map_refused_the_document_says_what_to_grant(watch, kind):
    w = watch(1)
    w.cluster.refuse_shard_map(kind)
    w.cluster.refuse_list_shards(kind)
    w.cluster.refuse_config_shards(kind)
    w.poll()

    document = w.document()
    assert document["status"] == "RED"
    grant = "the routers refuse getShardMap, listShards and reading config.shards: grant the monitoring user"
    assert grant in w.body()
    status, answer = w.liveness()
    assert status == 503 and answer["last_failure_kind"] == "unauthorized"
    assert w.metric("mongodb_replication_collection_failures_total", kind="unauthorized") == 1

    for refuse in (w.cluster.refuse_shard_map, w.cluster.refuse_list_shards, w.cluster.refuse_config_shards):
        refuse(None)
    w.poll()
    assert w.document()["status"] == "GREEN"  # a grant is all it takes: the next poll reads the map


def test_an_8_0_config_shard_listed_twice_is_watched_once(watch):
    w = watch(1, version="8.0", config_shard=True)
    w.poll()
    sets = w.built.store.view().sets
    assert [s.name for s in sets].count("configRepl") == 1
    config = next(s for s in sets if s.name == "configRepl")
    assert (config.address.shard_id, config.address.role) == ("config", "config")


def test_a_large_cluster_names_every_yellow_member_and_sums_up_the_green_sets(watch):
    w = watch(6)
    w.cluster.shard("shard04").set_lag(2, 7_777)
    w.cluster.shard("shard05").set_lag(1, 2_000)
    w.poll()
    body = w.body()
    lines = body.splitlines()
    assert lines[0].startswith("YELLOW: 1 member 5 s or more behind in shard04; worst lag shard04 ")
    assert lines[2] == "### shard04 (replica set shard04): YELLOW since 23:06 UTC"
    yellow = f"- Secondary {member_name(w.cluster, 'shard04', 2)} replication lag 7777ms (oplog headroom 23 h 59 min)"
    assert yellow in lines
    assert lines[-2:] == [
        "- 6 sets GREEN, worst replication lag 2000ms "
        f"(shard05 (replica set shard05), {member_name(w.cluster, 'shard05', 1)})",
        "- All members: the status page at / of this exporter",
    ]
    assert len(lines) < 12  # readable: the GREEN sets' members are not listed
    page = w.page()
    assert page.count("<details>") == 6  # the GREEN sets' members are one click away
    worst = page.split("most lagging members, last hour")[-1].split("</svg>")[0]
    assert f"{member_name(w.cluster, 'shard04', 2)} (shard04) 7777ms" in worst  # drawn first, at the top


def test_the_status_page_colours_each_sets_problems_by_what_they_make_the_set(watch):
    w = watch(2)
    w.cluster.shard("shard01").set_lag(1, 7_777)  # YELLOW: a warning
    w.cluster.shard("shard02").set_lag(2, 45_000)  # RED: an alarm
    w.poll()
    page = w.page()
    yellow = f"YELLOW: 5 s or more behind: 1 member in 1 shard: shard01 {member_name(w.cluster, 'shard01', 1)} 7777ms"
    red = f"RED: 30 s or more behind: 1 member in 1 shard: shard02 {member_name(w.cluster, 'shard02', 2)} 45000ms"
    since = " (since 23:06 UTC)"
    # The page opens with the document's summary: the verdict, then the problems, RED first, each in its colour.
    verdict = "RED: 1 member 30 s or more behind in shard02; worst lag shard02"  # the YELLOW part did not fit
    assert f'<p class="verdict">{verdict} {member_name(w.cluster, "shard02", 2)} 45000ms</p>' in page
    assert (
        f'<ul class="summary"><li class="problem">{red}{since}</li><li class="warn">{yellow}{since}</li></ul>' in page
    )


def test_the_router_password_never_shows_anywhere(watch):
    w = watch(1, users=[("monitor", PASSWORD)], shard_users=[("monitor", PASSWORD)], uri=with_user)
    w.poll()
    w.cluster.shard("shard01").take_down(1)
    w.poll()
    outputs = [w.body(), w.page(), json.dumps(w.liveness()[1]), str(w.samples())]
    for text in outputs:
        assert PASSWORD not in text and quote(PASSWORD, safe="") not in text


def settings_of(path: Path):
    return load_settings(["--config.file", str(path)], env={})


def test_the_shard_credentials_never_show_in_the_settings_repr_nor_in_redacted_texts(tmp_path):
    path = Path(tmp_path) / "c.toml"
    path.write_text(
        '[infra.clusterKeeper]\nuri = "mongodb://r:27017/"\n'
        f'[infra.clusterKeeper.config_servers]\nusername = "cfg"\npassword = "{SHARD_PASSWORD}"\n'
    )
    os.chmod(path, 0o600)
    settings = settings_of(path)
    assert SHARD_PASSWORD not in repr(settings)
    leaked = f"connection to mongodb://cfg:{SHARD_PASSWORD}@c1:27019/?replicaSet=configRepl failed"
    assert SHARD_PASSWORD not in settings.redact(leaked)
    long_password = "a-shard-password-of-24ch"
    path.write_text(path.read_text().replace(SHARD_PASSWORD, long_password))
    assert settings_of(path).redact(f"x {long_password} y") == "x *** y"  # a long one is redacted even bare


def test_a_per_shard_table_that_names_no_shard_of_the_map_is_warned_about_once(watch, caplog):
    w = watch(2, config_text='[infra.clusterKeeper.shards.shard3]\nusername = "monitor"\npassword = "s3cret-3"\n')
    with caplog.at_level(logging.WARNING, logger="replicationlag.cluster"):
        w.poll()
        w.poll()
    said = [r.getMessage() for r in caplog.records if "shard3" in r.getMessage()]
    assert said == [
        "[infra.clusterKeeper.shards.shard3] names no shard of the routers' shard map (shards: shard01, shard02): "
        "its credentials are not used; a table's name must be a shard id"
    ]
    assert all(s.current is not None for s in w.built.store.view().sets)


def test_a_shard_whose_hosts_answer_for_another_set_is_told_so_and_not_to_fix_a_uri_the_user_never_wrote(watch):
    w = watch(2, timeout_s=1.0)
    shard01 = w.cluster.shard("shard01")
    for member in range(3):  # the map's entry for shard01 now lists hosts that answer as shard02's members
        shard01.rename(member, member_name(w.cluster, "shard02", member))
    w.poll()
    failure = {s.name: s for s in w.built.store.view().sets}["shard01"].failure
    assert failure is not None and failure.kind == "not_replica_set"
    assert "replicaSet=" not in failure.message and "URI" not in failure.message
    host, _, rest = failure.message.partition(" ")
    assert host in {member_name(w.cluster, "shard02", member) for member in range(3)}
    assert rest.startswith(
        "answers as a member of replica set 'shard02', but the routers' shard map names it for replica set 'shard01'"
    )


def test_a_shard_map_host_that_makes_no_uri_is_told_about_the_host_name_not_about_escaping_a_password(watch):
    w = watch(2)
    w.cluster.shard("shard01").rename(0, "db@1:27018")
    w.poll()
    failure = {s.name: s for s in w.built.store.view().sets}["shard01"].failure
    assert failure is not None
    assert failure.message == (
        "the routers' shard map names host 'db@1:27018' for shard01 (replica set shard01), which is not a host:port "
        "a client can connect to: correct the shard's entry in config.shards"
    )


def test_a_zone_outage_across_100_shards_is_one_bounded_message_and_one_log_line_per_kind(watch, caplog):
    """Issue 23: one member DOWN in each of 100 shards and 30 shards lagging; a minute later the document, the
    page and the log each say it once, counted, worst first."""
    w = watch(100, timeout_s=5.0, external_url="https://lag.example.com/")
    w.poll()
    for number in range(1, 101):
        w.cluster.shard(f"shard{number:02d}").take_down(2)
    for number in range(1, 31):  # 10 RED (the largest lag in shard01), 20 YELLOW
        lag = 45_000 - number * 500 if number <= 10 else 6_000 + number * 300
        w.cluster.shard(f"shard{number:02d}").set_lag(1, lag)
    w.poll()
    w.cluster.clock.advance(60_000)
    w.monotonic.advance(60)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="replicationlag.poller")
    w.poll()

    body = w.body()
    lines = body.splitlines()
    assert len(body) <= 3_000 and len(lines) <= 30
    worst = member_name(w.cluster, "shard01", 1)
    assert lines[0] == f"RED: 100 members DOWN in 100 shards; worst lag shard01 {worst} 44500ms"
    assert lines[1] == (
        "- RED: DOWN: 100 members in 100 shards: shard01, shard02, shard03 and 97 more (for 1 min, since 23:06 UTC)"
    )
    assert lines[2].startswith(f"- RED: 30 s or more behind: 10 members in 10 shards: shard01 {worst} 44500ms, ")
    assert lines[3].startswith("- YELLOW: 5 s or more behind: 20 members in 20 shards: shard30 ")
    assert lines[4] == "### shard01 (replica set shard01): RED for 1 min, since 23:06 UTC"
    assert re.fullmatch(r"- \d+ more lines on the status page \(\d+ more sets\)", lines[-2])
    assert lines[-1] == "- All members: <https://lag.example.com/>"

    logged = [r.getMessage() for r in caplog.records if r.name == "replicationlag.poller"]
    assert logged == [line.removeprefix("- ") for line in lines[1:4]]  # one line per kind, not one per set

    page = w.page()
    assert page.index(f'<p class="verdict">{lines[0]}</p>') < page.index("<table>")
    assert page.count("<details>") == 1  # the config servers, GREEN, folded


def two_clouds(cluster: ShardedCluster) -> None:
    """Members 0 and 1 of every set in one cloud, member 2 in another (replSetGetConfig members[].tags)."""
    for each in (*(cluster.shard(f"shard{n:02d}") for n in (1, 2)), cluster.config):
        for member in range(3):
            where = {"cloud": "aws", "region": "ap-northeast-2"} if member < 2 else {"cloud": "gcp"}
            each.set_tags(member, where)


def test_a_cloud_cut_off_reads_as_one_line_for_the_cloud_and_the_page_counts_it_by_location(watch):
    """Issue 24: one cloud's members, one in each set, all DOWN: the document says it once for the cloud, the
    status page shows each location's members up and down and each member's location."""
    w = watch(2)
    two_clouds(w.cluster)
    w.poll()
    for each in (w.cluster.shard("shard01"), w.cluster.shard("shard02"), w.cluster.config):
        each.take_down(2)
    w.poll()

    lines = w.body().splitlines()
    assert lines[1].startswith("- RED: cloud gcp: 3 of 3 members DOWN")
    assert not any(line.startswith("- RED: DOWN:") for line in lines)  # no line per member or per set besides
    page = w.page()
    rows = dict(re.findall(r"<tr><td>(cloud [a-z]+[^<]*)</td>(.*?)</tr>", page))
    assert rows["cloud gcp"].startswith('<td class="num">0</td><td class="num problem">3</td>')
    assert rows["cloud aws"].startswith('<td class="num">6</td><td class="num">0</td>')  # by the first key, cloud
    down = member_name(w.cluster, "shard01", 2)
    assert re.search(rf"<tr><td>{re.escape(down)}</td><td[^>]*>cloud gcp</td>", page)


def test_one_member_of_a_cloud_down_is_a_member_line_not_the_cloud(watch):
    w = watch(2)
    two_clouds(w.cluster)
    w.poll()
    w.cluster.shard("shard01").take_down(2)
    w.poll()

    lines = w.body().splitlines()
    assert lines[1].startswith("- RED: DOWN: 1 member in 1 shard: shard01")
    assert not any("cloud gcp" in line for line in lines[:3])


def test_a_secondary_copying_from_another_cloud_is_marked_on_the_page(watch):
    w = watch(2)
    two_clouds(w.cluster)
    shard = w.cluster.shard("shard01")
    shard.set_sync_source(1, 2)  # member 1 (aws) copies from member 2 (gcp)
    w.poll()

    copying = member_name(w.cluster, "shard01", 1)
    marked = rf'<tr><td>{re.escape(copying)}</td><td class="warn">cloud aws \(copies from cloud gcp\)</td>'
    assert re.search(marked, w.page())
