"""A simulated sharded cluster through the real pymongo driver over TCP: routers a driver takes for mongos, the
shard map in its three forms, one seed list per replica set, users where a real cluster keeps them, shards that
come and go, router faults, the config servers' markers, and a stop that frees every port and the one thread."""

from __future__ import annotations

import datetime as dt
import gc
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pymongo import MongoClient, ReadPreference
from pymongo.errors import AutoReconnect, OperationFailure, ServerSelectionTimeoutError
from pymongo.server_type import SERVER_TYPE
from service_util import read_line

from mongosim import ManualClock, MemberSpec, ReplicaSet, ShardedCluster
from mongosim.demo import start_demo_cluster

PP = ReadPreference.PRIMARY_PREFERRED
MONITOR = ("monitor", "s3cret")
CREDENTIALS = {"username": "monitor", "password": "s3cret"}
REPO = Path(__file__).resolve().parent.parent


def _hosts(rs: ReplicaSet) -> list[str]:
    return [m.name for m in rs.members if m.role != "arbiter" and not m.hidden]


def _conn_string(rs: ReplicaSet) -> str:
    return f"{rs.name}/{','.join(_hosts(rs))}"


def _server_types(client: MongoClient) -> dict[tuple[str, int], int]:
    return {address: sd.server_type for address, sd in client.topology_description.server_descriptions().items()}


def _ports(cluster: ShardedCluster) -> list[int]:
    sets = [cluster.config, *(cluster.shard(s) for s in cluster.shard_ids)]
    return [r.address[1] for r in cluster.routers] + [m.port for rs in sets for m in rs.members]


def _mongosim_threads(before: set[threading.Thread]) -> list[str]:
    """The simulator's threads started since `before` (Thread objects: idents are reused once a thread ends)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("mongosim") and t not in before]


def _code(call, *args) -> tuple[int | None, str]:
    """(code, errmsg) of the OperationFailure that call(*args) raises."""
    with pytest.raises(OperationFailure) as caught:
        call(*args)
    return caught.value.code, str(caught.value.details.get("errmsg"))


# --- routers --------------------------------------------------------------------------------------------------


def test_a_client_on_the_router_uri_sees_a_sharded_topology_of_mongos(start_cluster, connect, wait_until):
    cluster = start_cluster(shards=2, routers=2)
    assert cluster.uri == f"mongodb://{cluster.router(0).name},{cluster.router(1).name}/"
    client = connect(cluster.uri)
    client.admin.command("ping")
    routers = {r.address: SERVER_TYPE.Mongos for r in cluster.routers}
    assert wait_until(lambda: _server_types(client) == routers), client.topology_description
    assert client.topology_description.topology_type_name == "Sharded"
    hello = client.admin.command("hello")
    assert list(hello)[:3] == ["isWritablePrimary", "msg", "topologyVersion"]
    assert (hello["isWritablePrimary"], hello["msg"], hello["maxWireVersion"]) == (True, "isdbgrid", 21)
    assert not {"setName", "hosts", "me", "primary", "secondary"} & set(hello)


@pytest.mark.parametrize("version, wire", [("4.0", 7), ("4.4", 9), ("6.0", 17), ("8.0", 25)])
def test_a_router_says_isdbgrid_with_the_wire_version_and_streaming_of_its_version(start_cluster, version, wire):
    cluster = start_cluster(shards=1, version=version)
    hello = cluster.router(0).command("isMaster")
    assert (hello["ismaster"], hello["msg"], hello["maxWireVersion"]) == (True, "isdbgrid", wire)
    assert ("topologyVersion" in hello) == (version != "4.0")  # 4.0 has no awaitable hello
    status = cluster.router(0).command("serverStatus")
    assert status["process"] == "mongos"
    assert status["sharding"]["configsvrConnectionString"] == _conn_string(cluster.config)


def test_replsetgetstatus_through_a_router_is_refused_as_mongos_refuses_it_with_no_code(start_cluster, connect):
    cluster = start_cluster(shards=1)
    client = connect(cluster.uri)
    with pytest.raises(OperationFailure) as caught:
        client.admin.command("replSetGetStatus")
    # Not CommandNotFound: mongos has the command, only to refuse it, and its error carries no code at all.
    assert caught.value.code is None
    assert caught.value.details["errmsg"] == "replSetGetStatus is not supported through mongos"
    assert caught.value.details["info"] == "mongos"
    assert _code(client.admin.command, "replSetGetConfig") == (59, "no such command: 'replSetGetConfig'")


def test_with_authentication_on_replsetgetstatus_on_a_router_first_wants_a_login(start_cluster, connect):
    cluster = start_cluster(shards=1, users=[MONITOR, ("nobody", "s3cret", [])])
    anonymous = connect(cluster.uri)
    assert anonymous.admin.command("ping")["ok"] == 1.0
    assert _code(anonymous.admin.command, "replSetGetStatus")[0] == 13
    without_roles = connect(cluster.uri, username="nobody", password="s3cret")
    assert _code(without_roles.admin.command, "replSetGetStatus")[0] is None


# --- the shard map --------------------------------------------------------------------------------------------


def test_get_shard_map_names_every_shard_set_then_the_config_server_set(start_cluster, connect):
    cluster = start_cluster(shards=3)
    reply = connect(cluster.uri).admin.command("getShardMap")
    sets = {shard_id: cluster.shard(shard_id) for shard_id in cluster.shard_ids} | {"config": cluster.config}
    assert list(reply["map"]) == ["shard01", "shard02", "shard03", "config"]
    assert reply["map"] == {shard_id: _conn_string(rs) for shard_id, rs in sets.items()}
    assert reply["map"]["config"].startswith("configRepl/")
    assert reply["hosts"] == {host: shard_id for shard_id, rs in sets.items() for host in _hosts(rs)}
    assert reply["connStrings"] == {_conn_string(rs): shard_id for shard_id, rs in sets.items()}


def test_a_shard_host_string_leaves_out_hidden_members_and_arbiters_and_follows_new_members(start_cluster, connect):
    specs = [MemberSpec(role="primary"), MemberSpec(), MemberSpec(hidden=True), MemberSpec(role="arbiter")]
    cluster = start_cluster(shards=1, members=specs)
    client = connect(cluster.uri)
    shard = cluster.shard("shard01")
    expected = f"shard01/{shard.member(0).name},{shard.member(1).name}"
    assert client.admin.command("getShardMap")["map"]["shard01"] == expected
    added = shard.add_member()
    assert client.admin.command("listShards")["shards"][0]["host"].endswith(f",{added}")


@pytest.mark.parametrize(
    "version, fields",
    [
        ("4.4", ["_id", "host", "state"]),
        ("5.0", ["_id", "host", "state", "topologyTime"]),
        ("7.0", ["_id", "host", "state", "topologyTime"]),
        ("8.0", ["_id", "host", "state", "topologyTime", "replSetConfigVersion"]),
    ],
)
def test_list_shards_and_config_shards_hold_the_same_documents_with_the_fields_of_each_version(
    start_cluster, connect, version, fields
):
    cluster = start_cluster(shards=2, version=version)
    client = connect(cluster.uri)
    shards = client.admin.command("listShards")["shards"]
    assert [list(s) for s in shards] == [fields, fields]
    assert [(s["_id"], s["host"], s["state"]) for s in shards] == [
        ("shard01", _conn_string(cluster.shard("shard01")), 1),
        ("shard02", _conn_string(cluster.shard("shard02")), 1),
    ]
    assert list(client.config.shards.find()) == shards  # the config servers are not among the shards
    if version == "8.0":
        assert [s["replSetConfigVersion"] for s in shards] == [-1, -1]


def test_each_set_of_the_map_is_discovered_from_its_seed_list_with_replicaset(start_cluster, connect, wait_until):
    cluster = start_cluster(shards=2)
    for conn_string in connect(cluster.uri).admin.command("getShardMap")["map"].values():
        name, _, seeds = conn_string.partition("/")
        client = connect(f"mongodb://{seeds}/?replicaSet={name}")
        assert client.admin.command("replSetGetStatus", read_preference=PP)["set"] == name
        assert wait_until(lambda c=client: c.primary is not None and len(c.secondaries) == 2)
        assert client.topology_description.topology_type_name == "ReplicaSetWithPrimary"


def test_added_drained_and_removed_shards_show_in_every_form_of_the_map(start_cluster, connect):
    cluster = start_cluster(shards=2)
    client = connect(cluster.uri)
    assert cluster.add_shard(members=2) == "shard03"
    assert client.admin.command("getShardMap")["map"]["shard03"] == _conn_string(cluster.shard("shard03"))
    times = [s["topologyTime"] for s in client.admin.command("listShards")["shards"]]
    assert times == sorted(times) and len(set(times)) == 3

    cluster.drain_shard("shard01")
    listed = client.admin.command("listShards")["shards"][0]
    assert (list(listed)[:3], listed["draining"]) == (["_id", "host", "draining"], True)
    stored = client.config.shards.find_one({"_id": "shard01"})
    assert list(stored)[-1] == "draining"  # removeShard $sets it on a document that exists: it comes last
    assert [d["_id"] for d in client.config.shards.find({"draining": {"$ne": True}})] == ["shard02", "shard03"]

    ports = [m.port for m in cluster.shard("shard01").members]
    cluster.remove_shard("shard01")
    assert list(client.admin.command("getShardMap")["map"]) == ["shard02", "shard03", "config"]
    assert [s["_id"] for s in client.admin.command("listShards")["shards"]] == ["shard02", "shard03"]
    assert cluster.shard_ids == ["shard02", "shard03"]
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # its set stopped: the ports are free
    with pytest.raises(KeyError):
        cluster.shard("shard01")


@pytest.mark.parametrize("kind, code, code_name", [("atlas", 8000, "AtlasError"), ("unauthorized", 13, "Unauthorized")])
def test_a_refused_get_shard_map_leaves_list_shards_and_config_shards_to_fall_back_on(
    start_cluster, connect, kind, code, code_name
):
    cluster = start_cluster(shards=2, users=[MONITOR])
    client = connect(cluster.uri, **CREDENTIALS)
    cluster.refuse_shard_map(kind)
    with pytest.raises(OperationFailure) as caught:
        client.admin.command("getShardMap")
    assert (caught.value.code, caught.value.details["codeName"]) == (code, code_name)
    assert [s["_id"] for s in client.admin.command("listShards")["shards"]] == ["shard01", "shard02"]
    assert len(list(client.config.shards.find())) == 2
    cluster.refuse_shard_map(None)
    assert "shard02" in client.admin.command("getShardMap")["map"]


@pytest.mark.parametrize(
    "kind, code, words", [("atlas", 8000, "is not allowed"), ("unauthorized", 13, "not authorized on")]
)
def test_list_shards_and_config_shards_reads_can_each_be_refused_and_answer_again(
    start_cluster, connect, kind, code, words
):
    cluster = start_cluster(shards=2, users=[MONITOR])
    client = connect(cluster.uri, **CREDENTIALS)
    cluster.refuse_list_shards(kind)
    listed = _code(client.admin.command, "listShards")
    assert listed[0] == code and words in listed[1] and "listShards" in listed[1]
    assert len(list(client.config.shards.find())) == 2  # the other ways still answer
    assert "shard02" in client.admin.command("getShardMap")["map"]

    cluster.refuse_config_shards(kind)
    found = _code(client.config.shards.find_one)
    assert found[0] == code and words in found[1]
    assert client.config.settings.find_one() is None  # other config collections are not refused

    cluster.refuse_list_shards(None)
    cluster.refuse_config_shards(None)
    assert [s["_id"] for s in client.admin.command("listShards")["shards"]] == ["shard01", "shard02"]
    assert len(list(client.config.shards.find())) == 2


def test_with_no_config_server_answering_list_shards_fails_while_get_shard_map_answers_from_cache(
    start_cluster, connect
):
    cluster = start_cluster(shards=1)
    client = connect(cluster.uri)
    for member in range(3):
        cluster.config.take_down(member)
    assert "shard01" in client.admin.command("getShardMap")["map"]
    assert _code(client.admin.command, "listShards")[0] == 133
    assert _code(client.config.shards.find_one)[0] == 133
    cluster.config.bring_up(2)
    assert client.admin.command("listShards")["ok"] == 1.0


def test_an_8_0_config_shard_is_listed_as_shard_config_with_the_set_that_is_also_map_config(start_cluster, connect):
    cluster = start_cluster(shards=2, version="8.0", config_shard=True)
    client = connect(cluster.uri)
    shards = client.admin.command("listShards")["shards"]
    shard_map = client.admin.command("getShardMap")["map"]
    assert [s["_id"] for s in shards] == ["config", "shard01", "shard02"]
    assert shards[0]["host"] == shard_map["config"] == _conn_string(cluster.config)
    assert list(shard_map) == ["shard01", "shard02", "config"]
    # What a discoverer has to do: one replica set per name, whichever list named it.
    names = {host.partition("/")[0] for host in [*shard_map.values(), *(s["host"] for s in shards)]}
    assert names == {"configRepl", "shard01", "shard02"}
    assert cluster.shard("config") is cluster.config
    with pytest.raises(ValueError, match=r"8\.0"):
        ShardedCluster(shards=1, version="7.0", config_shard=True)


# --- users ----------------------------------------------------------------------------------------------------


def test_a_cluster_user_logs_in_on_routers_and_config_servers_but_not_on_shard_members(start_cluster, connect):
    cluster = start_cluster(shards=2, users=[MONITOR])
    assert connect(cluster.uri, **CREDENTIALS).admin.command("listShards")["ok"] == 1.0
    config = connect(cluster.config.uri, **CREDENTIALS)
    assert config.admin.command("replSetGetStatus", read_preference=PP)["configsvr"] is True
    on_shard = connect(cluster.shard("shard01").address(0), **CREDENTIALS)
    assert _code(on_shard.admin.command, "ping")[0] == 18
    anonymous = connect(cluster.shard("shard01").address(0))  # authentication is on on shard members too
    assert _code(anonymous.admin.command, "replSetGetStatus")[0] == 13


def test_a_shard_local_user_logs_in_on_its_own_shard_only(start_cluster, connect):
    cluster = start_cluster(shards=2, users=[MONITOR])
    cluster.add_shard_user("local1", "s3cret", shard="shard01")
    own = connect(cluster.shard("shard01").uri, username="local1", password="s3cret")
    assert own.admin.command("replSetGetStatus", read_preference=PP)["set"] == "shard01"
    assert own.local["oplog.rs"].find_one() is not None
    elsewhere = [cluster.shard("shard02").address(0), cluster.config.address(0), cluster.router(0).address]
    for address in elsewhere:
        client = connect(address, username="local1", password="s3cret")
        assert _code(client.admin.command, "ping")[0] == 18


def test_shard_users_of_every_shard_reach_shards_added_later_and_go_away_when_removed(start_cluster, connect):
    cluster = start_cluster(shards=2, shard_users=[("local", "s3cret")])
    cluster.add_shard()
    for shard_id in cluster.shard_ids:
        client = connect(cluster.shard(shard_id).address(0), username="local", password="s3cret")
        assert client.admin.command("replSetGetStatus")["set"] == shard_id
    cluster.remove_shard_user("local")
    client = connect(cluster.shard("shard02").address(0), username="local", password="s3cret")
    assert _code(client.admin.command, "ping")[0] == 18


def test_a_cluster_user_added_at_runtime_turns_authentication_on_everywhere(start_cluster, connect):
    cluster = start_cluster(shards=1)
    anonymous = connect(cluster.uri)
    assert anonymous.admin.command("listShards")["ok"] == 1.0
    cluster.add_cluster_user(*MONITOR)
    assert _code(anonymous.admin.command, "listShards")[0] == 13  # the open connection too
    on_shard = connect(cluster.shard("shard01").address(0))
    assert _code(on_shard.admin.command, "replSetGetStatus")[0] == 13
    assert connect(cluster.uri, **CREDENTIALS).admin.command("listShards")["ok"] == 1.0
    cluster.remove_cluster_user("monitor")
    assert _code(connect(cluster.uri, **CREDENTIALS).admin.command, "ping")[0] == 18


def test_the_shard_map_needs_cluster_monitor(start_cluster, connect):
    cluster = start_cluster(shards=1, users=[("reader", "s3cret", ["read@local"])])
    client = connect(cluster.uri, username="reader", password="s3cret")
    assert _code(client.admin.command, "getShardMap")[0] == 13
    assert _code(client.admin.command, "listShards")[0] == 13
    assert _code(client.config.shards.find_one)[0] == 13


# --- faults and controls ---------------------------------------------------------------------------------------


def test_a_router_taken_down_leaves_the_others_serving_and_comes_back_on_its_port(start_cluster, connect, wait_until):
    cluster = start_cluster(shards=1, routers=2)
    client = connect(cluster.uri)
    client.admin.command("ping")
    down = cluster.router(0)
    down.take_down()
    assert wait_until(lambda: _server_types(client).get(down.address) == SERVER_TYPE.Unknown)
    assert client.admin.command("listShards")["ok"] == 1.0  # through the other router
    direct = connect(down.address, serverSelectionTimeoutMS=300)
    with pytest.raises(ServerSelectionTimeoutError):
        direct.admin.command("ping")
    down.bring_up()
    assert wait_until(lambda: _server_types(client).get(down.address) == SERVER_TYPE.Mongos)
    assert connect(down.address).admin.command("ping")["ok"] == 1.0


def test_a_hung_router_ends_a_command_at_the_client_timeout_and_answers_once_released(
    start_cluster, connect, wait_until
):
    cluster = start_cluster(shards=1)
    client = connect(cluster.router_uri(0), socketTimeoutMS=400)
    client.admin.command("ping")
    cluster.router(0).hang("after_accept")
    with pytest.raises(AutoReconnect):  # NetworkTimeout is one
        client.admin.command("listShards")
    cluster.router(0).hang(None)

    def answers() -> bool:
        try:
            return connect(cluster.router_uri(0), serverSelectionTimeoutMS=300).admin.command("ping")["ok"] == 1.0
        except ServerSelectionTimeoutError:
            return False

    assert wait_until(answers)


def test_replica_set_controls_work_on_a_shard_and_on_the_config_servers(start_cluster, connect):
    cluster = start_cluster(shards=2, clock=ManualClock(1_723_763_174_512))
    shard = cluster.shard("shard02")
    shard.set_lag(1, 1500)
    status = connect(shard.uri).admin.command("replSetGetStatus", read_preference=PP)
    walls = [m["lastAppliedWallTime"] for m in status["members"]]
    assert (walls[0] - walls[1]).total_seconds() == 1.5
    cluster.config.elect(2)
    assert cluster.config.primary == cluster.config.member(2).name
    assert connect(cluster.config.address(2)).admin.command("hello")["isWritablePrimary"] is True


def test_config_server_members_carry_the_configsvr_markers_and_shard_members_do_not(start_cluster, connect):
    cluster = start_cluster(shards=1)
    config, shard = connect(cluster.config.address(1)), connect(cluster.shard("shard01").address(1))
    hello = list(config.admin.command("hello"))
    assert hello[hello.index("configsvr") + 1] == "maxBsonObjectSize"
    status = config.admin.command("replSetGetStatus")
    assert (list(status)[list(status).index("syncSourceId") + 1], status["configsvr"]) == ("configsvr", True)
    conf = config.admin.command("replSetGetConfig")["config"]
    assert (list(conf)[list(conf).index("configsvr") + 1], conf["configsvr"]) == ("protocolVersion", True)
    assert config.admin.command("hello")["configsvr"] == 2
    for command in ("hello", "replSetGetStatus"):
        assert "configsvr" not in shard.admin.command(command)
    assert "configsvr" not in shard.admin.command("replSetGetConfig")["config"]
    assert cluster.config.command(0, "replSetGetConfig")["config"]["configsvr"] is True  # in-process as on the wire
    for client in (config, shard):
        status = client.admin.command("serverStatus")
        assert status["sharding"]["configsvrConnectionString"] == _conn_string(cluster.config)
        assert list(status).index("sharding") + 1 == list(status).index("storageEngine")


# --- scale and lifecycle ---------------------------------------------------------------------------------------


def test_every_set_and_router_of_a_cluster_is_served_by_one_thread(start_cluster):
    before = set(threading.enumerate())
    cluster = start_cluster(shards=20, routers=2)
    assert _mongosim_threads(before) == ["mongosim-cluster"]
    assert len(set(_ports(cluster))) == 2 + 3 + 20 * 3


def test_stop_frees_every_port_and_the_thread_at_once_even_with_clients_connected(connect):
    before = set(threading.enumerate())
    cluster = ShardedCluster(shards=3, routers=2).start()
    client = connect(cluster.uri, serverSelectionTimeoutMS=300)
    client.admin.command("listShards")
    on_shard = connect(cluster.shard("shard02").uri, serverSelectionTimeoutMS=300)
    on_shard.admin.command("replSetGetStatus", read_preference=PP)
    ports = _ports(cluster)
    cluster.stop()
    for port in ports:
        with socket.socket() as s:  # no SO_REUSEADDR: the port must be free, not in TIME_WAIT
            s.bind(("127.0.0.1", port))
    assert _mongosim_threads(before) == []
    cluster.stop()  # a second stop is harmless


def test_a_cluster_that_cannot_bind_a_router_port_fails_to_start_and_leaves_nothing_running():
    before = set(threading.enumerate())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cluster = ShardedCluster(shards=2, router_port=taken.getsockname()[1])
        with pytest.raises(OSError):
            cluster.start()
    ports = [m.port for m in cluster.config.members] + [m.port for m in cluster.shard("shard01").members]
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    assert _mongosim_threads(before) == []


def test_a_cluster_dropped_without_stop_still_frees_its_thread():
    before = set(threading.enumerate())
    cluster = ShardedCluster(shards=2).start()
    assert _mongosim_threads(before) == ["mongosim-cluster"]
    del cluster
    gc.collect()
    assert _mongosim_threads(before) == []


# --- the command line and the demo ----------------------------------------------------------------------------


def test_the_cli_starts_a_cluster_prints_the_router_uri_first_and_exits_cleanly_on_sigterm(connect):
    flags = ["--shards", "2", "--routers", "2", "--lag", "1=1500", "--auth", "monitor:s3cret"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mongosim", *flags],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        uri = read_line(proc.stdout, 10).strip()
        assert re.fullmatch(r"mongodb://127\.0\.0\.1:\d+,127\.0\.0\.1:\d+/", uri)
        client = connect(uri, **CREDENTIALS)
        assert list(client.admin.command("getShardMap")["map"]) == ["shard01", "shard02", "config"]
        client.close()  # before the cluster goes away: closing a client with no server left waits for one
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    commands, *lines = out.splitlines()
    assert commands.startswith("# commands: none")  # stdin is /dev/null and there is no --control
    routers = uri.removeprefix("mongodb://").rstrip("/").split(",")
    assert lines[:2] == [f"# router {i} {name} (mongos 7.0)" for i, name in enumerate(routers)]
    assert lines[2].startswith("# config servers (set configRepl): 127.0.0.1:")
    assert [line.split(":")[0] for line in lines[3:5]] == [
        "# shard shard01 (set shard01)",
        "# shard shard02 (set shard02)",
    ]
    assert all(" SECONDARY lag 1500 ms" in line for line in lines[3:5])
    assert "s3cret" not in uri + out + err


def test_the_cli_help_documents_the_cluster_flags():
    run = subprocess.run(
        [sys.executable, "-m", "mongosim", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    for flag in ("--shards", "--routers", "--config-members", "--shard-auth", "--config-shard"):
        assert flag in run.stdout


def test_the_demo_cluster_moves_a_shard_secondary_through_the_colours_and_stops_at_once(connect, wait_until):
    before = set(threading.enumerate())
    clock = ManualClock(1_723_763_174_512)
    cluster, stop = start_demo_cluster(clock=clock)
    try:
        router = connect(cluster.uri)
        assert list(router.admin.command("getShardMap")["map"]) == ["shard01", "shard02", "shard03", "config"]
        shard = connect(cluster.shard("shard01").uri)

        def lag_1() -> float:
            members = shard.admin.command("replSetGetStatus", read_preference=PP)["members"]
            return (members[0]["lastAppliedWallTime"] - members[1]["lastAppliedWallTime"]) / dt.timedelta(
                milliseconds=1
            )

        assert lag_1() < 5_000
        clock.advance(120_000)
        assert wait_until(lambda: lag_1() >= 30_000)
        router.close()
        shard.close()
    finally:
        stop()
    assert _mongosim_threads(before) == []
    stop()
