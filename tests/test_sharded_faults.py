"""Sharded mode through exporter.py as a user runs it: router, shard and config-server credentials all from the
config file, and faults row by row on a simulated cluster (a shard member down, a shard primary hung, a shard
with a wrong password, a router down, the config servers down, a shard added and removed). Each row checks what
the document, /liveness and /metrics show, that the other sets keep fresh exact values, that the exporter
recovers without a restart, and that no password (any of the three) appears in any log line at debug level,
answer, metric or page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from service_util import ENDPOINTS, SERVICE_PATH, Exporter, Look, uri_with_credentials

from mongosim import ShardedCluster

pytestmark = pytest.mark.slow  # README "Tests": skipped by the quick run

ROUTER_PASSWORD = "r0uter:P@ss/%?&="
SHARD_PASSWORD = "sh4rd-Pa55w0rd"
CONFIG_PASSWORD = "c0nfig-Pa55w0rd"
WRONG = "n0t-the-Pa55w0rd"
SECRETS = (ROUTER_PASSWORD, SHARD_PASSWORD, CONFIG_PASSWORD, WRONG)
WAIT_S = 20.0


def spellings(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret)}


def assert_no_password(text: str) -> None:
    for secret in SECRETS:
        for spelling in spellings(secret):
            assert spelling not in text, f"a password leaked as {spelling!r}"


@dataclass
class Stack:
    cluster: ShardedCluster
    exporter: Exporter

    def look_until(self, condition: Callable[[Look], bool], what: str) -> Look:
        look, _ = self.exporter.wait_for(lambda look: condition(look) or None, WAIT_S, what)
        return look

    def name(self, shard: str, member: int) -> str:
        host, port = self.cluster.shard(shard).address(member)
        return f"{host}:{port}"

    def read_everything(self) -> None:
        for path in ENDPOINTS:
            self.exporter.get(path, "PUT" if path == SERVICE_PATH else "GET")

    def check_no_password_anywhere(self) -> None:
        self.read_everything()
        assert_no_password(self.exporter.log_text)
        assert_no_password("\n".join(self.exporter.transcript))


def config_text(uri: str, *, shard02_password: str = SHARD_PASSWORD) -> str:
    return (
        f'[infra.clusterKeeper]\nuri = "{uri}"\n'
        f'[infra.clusterKeeper.shards]\nusername = "shardmon"\npassword = "{SHARD_PASSWORD}"\n'
        f'[infra.clusterKeeper.shards.shard02]\nusername = "shardmon"\npassword = "{shard02_password}"\n'
        f'[infra.clusterKeeper.config_servers]\nusername = "cfgmon"\npassword = "{CONFIG_PASSWORD}"\n'
    )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    started: list[Stack] = []

    def start(**config: str) -> Stack:
        cluster = ShardedCluster(3, routers=2, users=[("monitor", ROUTER_PASSWORD)]).start()
        cluster.add_shard_user("shardmon", SHARD_PASSWORD)
        cluster.add_cluster_user("cfgmon", CONFIG_PASSWORD)
        path = tmp_path / "replicationlag.toml"
        path.write_text(config_text(uri_with_credentials(cluster.uri, "monitor", ROUTER_PASSWORD), **config))
        path.chmod(0o600)
        exporter = Exporter(
            "--config.file", str(path), "--collect.interval", "1", "--collect.timeout", "0.8", "--log.level", "debug"
        )
        started.append(Stack(cluster, exporter))
        return started[-1]

    yield start
    for each in started:
        each.exporter.kill()
        each.cluster.stop()


def status_of(look: Look) -> dict[str, float]:
    return {s["set"]: v for s, v in zip_series(look, "mongodb_replication_status")}


def zip_series(look: Look, name: str):
    return [(dict(ls), v) for n, ls, v in look.metrics.samples if n == name]


def test_every_set_is_read_with_its_own_credentials_and_a_member_down_in_one_shard_stays_in_that_shard(stack):
    s = stack()
    s.cluster.shard("shard03").set_lag(1, 2_345)
    look = s.look_until(lambda look: len(status_of(look)) == 4 and look.liveness_status == 200, "four sets")
    assert status_of(look) == {"shard01": 0, "shard02": 0, "shard03": 0, "configRepl": 0}

    down = s.name("shard01", 2)
    s.cluster.shard("shard01").take_down(2)
    s.cluster.shard("shard03").set_lag(1, 3_456)
    look = s.look_until(lambda look: status_of(look).get("shard01") == 2, "shard01 RED")
    assert look.metrics.value("mongodb_replication_lag_seconds", member=s.name("shard03", 1)) == 3.456
    assert "- RED: DOWN: 1 member in 1 shard: shard01 (" in look.action_body
    assert f"- Secondary {down} DOWN: " in look.action_body.split("### shard01 (replica set shard01): RED")[1]
    assert look.liveness_status == 200

    s.cluster.shard("shard01").bring_up(2)
    s.look_until(lambda look: status_of(look).get("shard01") == 0, "shard01 back to GREEN")
    s.check_no_password_anywhere()
    assert s.exporter.stop() == 0


def test_a_hung_shard_primary_turns_that_shard_red_only_and_every_other_set_stays_fresh(stack):
    # A primary that accepts and never answers: first the poll of its set times out (set_up 0), then the driver
    # marks it unknown and the status comes from a secondary that reports it DOWN (set_up 1, "no primary").
    # Which of the two a look catches depends on timing; both are RED and name the hung member.
    s = stack()
    s.look_until(lambda look: len(status_of(look)) == 4, "four sets")
    hung = s.name("shard02", 0)
    s.cluster.shard("shard02").hang(0, "after_accept")
    s.cluster.shard("shard01").set_lag(1, 1_111)
    look = s.look_until(
        lambda look: (
            status_of(look).get("shard02") == 2
            and look.metrics.value("mongodb_replication_lag_seconds", member=s.name("shard01", 1)) == 1.111
        ),
        "shard02 RED, shard01 fresh",
    )
    assert "### shard02 (replica set shard02): RED" in look.action_body
    assert hung in look.action_body or look.metrics.value("mongodb_replication_set_up", set="shard02") == 0
    assert {k: v for k, v in status_of(look).items() if k != "shard02"} == {"shard01": 0, "shard03": 0, "configRepl": 0}
    assert look.metrics.value("mongodb_replication_set_up", set="shard01") == 1
    assert look.liveness_status == 200
    s.cluster.shard("shard02").hang(0, None)
    s.look_until(
        lambda look: (
            status_of(look).get("shard02") == 0 and look.metrics.value("mongodb_replication_set_up", set="shard02") == 1
        ),
        "shard02 recovered, GREEN",
    )
    s.check_no_password_anywhere()


def test_a_wrong_shard_password_names_the_shard_and_what_to_create_and_leaks_nothing(stack):
    s = stack(shard02_password=WRONG)
    look = s.look_until(lambda look: "authentication failed on shard02" in look.action_body, "the auth failure")
    assert look.metrics.value("mongodb_replication_set_up", set="shard01") == 1
    assert look.metrics.value("mongodb_replication_set_up", set="configRepl") == 1
    assert "create the monitoring user on shard02's replica set" in look.action_body
    assert look.liveness_status == 200  # the other sets are collected: the exporter is doing its job
    s.check_no_password_anywhere()


def test_routers_down_then_the_config_servers_down_keep_the_shards_watched(stack):
    s = stack()
    s.look_until(lambda look: len(status_of(look)) == 4, "four sets")
    for router in s.cluster.routers:
        router.take_down()
    s.cluster.shard("shard02").set_lag(2, 2_222)
    look = s.look_until(
        lambda look: (
            look.metrics.value("mongodb_replication_lag_seconds", member=s.name("shard02", 2)) == 2.222
            and "Shard map not read" in look.action_body
        ),
        "shards polled from the last known map",
    )
    assert "polling the last known map" in look.action_body
    for router in s.cluster.routers:
        router.bring_up()
    for member in range(3):
        s.cluster.config.take_down(member)
    look = s.look_until(lambda look: status_of(look).get("configRepl") == 2, "the config servers RED")
    assert {k: v for k, v in status_of(look).items() if k != "configRepl"} == {"shard01": 0, "shard02": 0, "shard03": 0}
    s.check_no_password_anywhere()


def test_a_shard_added_then_removed_is_followed_with_its_own_credentials(stack):
    s = stack()
    s.look_until(lambda look: len(status_of(look)) == 4, "four sets")
    added = s.cluster.add_shard()
    look = s.look_until(lambda look: look.metrics.value("mongodb_replication_set_up", set=added) == 1, "new shard")
    assert len(status_of(look)) == 5
    s.cluster.remove_shard(added)
    look = s.look_until(lambda look: added not in status_of(look), "the shard gone")
    assert not [ls for _, ls, _ in look.metrics.samples if dict(ls).get("set") == added]
    s.check_no_password_anywhere()
