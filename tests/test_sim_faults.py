"""Each fault the simulator injects reaches pymongo as the real one would: hangs and closed ports end in the
client's own timeout (it raises instead of waiting forever), refusals carry the real error codes."""

from __future__ import annotations

import contextlib

import pytest
from pymongo import ReadPreference
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

PP = ReadPreference.PRIMARY_PREFERRED
USERS = [
    ("monitor", "s3cret"),  # clusterMonitor + read@local, the monitoring user
    ("nolocal", "s3cret", ["clusterMonitor"]),
    ("reader", "s3cret", ["read@local"]),
]


def test_a_member_hung_after_accept_ends_a_command_at_the_socket_timeout(replica_set, connect):
    client = connect(replica_set.address(1), socketTimeoutMS=400)
    client.admin.command("ping")
    replica_set.hang(1, "after_accept")
    with pytest.raises(NetworkTimeout) as caught:
        client.admin.command("ping")
    assert caught.value.timeout


def test_a_member_hung_after_accept_ends_server_selection_at_its_timeout(replica_set, connect):
    replica_set.hang(1, "after_accept")
    client = connect(replica_set.address(1), connectTimeoutMS=300, serverSelectionTimeoutMS=600)
    with pytest.raises(ServerSelectionTimeoutError) as caught:
        client.admin.command("ping")
    assert caught.value.timeout


def test_a_member_hung_before_accept_ends_at_the_client_timeout_ms(replica_set, connect):
    replica_set.hang(1, "before_accept")
    client = connect(replica_set.address(1), timeoutMS=600)
    with pytest.raises(ConnectionFailure) as caught:
        client.admin.command("ping")
    assert caught.value.timeout


def test_a_hung_member_answers_again_once_released_and_others_report_it_down_meanwhile(replica_set, connect):
    replica_set.hang(2, "before_accept")
    status = connect(replica_set.address(0)).admin.command("replSetGetStatus")
    hung = next(m for m in status["members"] if m["name"] == replica_set.member(2).name)
    assert (hung["health"], hung["state"]) == (0.0, 8)
    replica_set.hang(2, None)
    assert connect(replica_set.address(2)).admin.command("ping")["ok"] == 1.0


def test_a_closed_port_ends_server_selection_with_connection_refused(replica_set, connect):
    replica_set.take_down(1)
    client = connect(replica_set.address(1), serverSelectionTimeoutMS=500)
    with pytest.raises(ServerSelectionTimeoutError, match="refused"):
        client.admin.command("ping")


def test_without_a_primary_primary_preferred_still_answers_and_primary_times_out(replica_set, connect, wait_until):
    client = connect(replica_set, serverSelectionTimeoutMS=800)
    client.admin.command("ping")
    replica_set.no_primary()
    assert wait_until(lambda: client.primary is None)  # the next (awaitable) hello tells pymongo
    assert client.admin.command("replSetGetStatus", read_preference=PP)["myState"] == 2
    with pytest.raises(ServerSelectionTimeoutError):
        client.admin.command("replSetGetStatus")


@pytest.fixture
def secured(start_set):
    return start_set(3, arbiter=True, users=USERS)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "DEFAULT"])
def test_a_monitoring_user_authenticates_with_each_scram_mechanism(secured, connect, mechanism):
    client = connect(secured, username="monitor", password="s3cret", authMechanism=mechanism)
    assert client.admin.command("replSetGetStatus", read_preference=PP)["ok"] == 1.0
    assert client.local["oplog.rs"].find_one(sort=[("$natural", -1)]) is not None


def test_a_wrong_password_fails_with_code_18(secured, connect):
    client = connect(secured, username="monitor", password="wrong")
    with pytest.raises(OperationFailure) as caught:
        client.admin.command("ping")
    assert caught.value.code == 18


def test_an_unknown_user_fails_with_code_18(secured, connect):
    client = connect(secured, username="nobody", password="s3cret", authMechanism="SCRAM-SHA-256")
    with pytest.raises(OperationFailure) as caught:
        client.admin.command("ping")
    assert caught.value.code == 18


def test_no_user_on_a_set_that_requires_auth_gets_code_13(secured, connect):
    client = connect(secured)
    assert client.admin.command("ping")["ok"] == 1.0  # like mongod: ping and hello need no authentication
    with pytest.raises(OperationFailure) as caught:
        client.admin.command("replSetGetStatus", read_preference=PP)
    assert (caught.value.code, caught.value.details["codeName"]) == (13, "Unauthorized")


def test_a_user_without_cluster_monitor_gets_code_13_on_replsetgetstatus(secured, connect):
    client = connect(secured, username="reader", password="s3cret")
    with pytest.raises(OperationFailure) as caught:
        client.admin.command("replSetGetStatus", read_preference=PP)
    assert caught.value.code == 13
    assert client.local["oplog.rs"].find_one() is not None


def test_a_user_without_read_on_local_gets_code_13_on_the_oplog(secured, connect):
    client = connect(secured, username="nolocal", password="s3cret")
    assert client.admin.command("replSetGetStatus", read_preference=PP)["ok"] == 1.0
    with pytest.raises(OperationFailure) as caught:
        client.local["oplog.rs"].find_one()
    assert caught.value.code == 13


def test_not_a_replica_set_answers_76(start_set, connect):
    rs = start_set(1, topology="standalone")
    client = connect(rs.uri)
    assert client.topology_description.topology_type_name == "Single"
    assert "setName" not in client.admin.command("hello")
    with pytest.raises(OperationFailure) as caught:
        client.admin.command("replSetGetStatus")
    assert (caught.value.code, caught.value.details["codeName"]) == (76, "NoReplicationEnabled")


def test_a_set_not_yet_initialised_answers_94_and_has_no_servers_for_a_replica_set_uri(replica_set, connect):
    replica_set.set_topology("uninitialized")
    client = connect(replica_set.address(0))
    assert client.admin.command("hello")["isreplicaset"] is True
    with pytest.raises(OperationFailure) as caught:
        client.admin.command("replSetGetStatus")
    assert (caught.value.code, caught.value.details["codeName"]) == (94, "NotYetInitialized")
    seeds = ",".join(m.name for m in replica_set.members)
    as_set = connect(f"mongodb://{seeds}/?replicaSet={replica_set.name}", serverSelectionTimeoutMS=500)
    with pytest.raises(ServerSelectionTimeoutError):
        as_set.admin.command("replSetGetStatus", read_preference=PP)


def test_an_unknown_command_answers_59(replica_set, connect):
    with pytest.raises(OperationFailure) as caught:
        connect(replica_set).admin.command("top")
    assert (caught.value.code, caught.value.details["codeName"]) == (59, "CommandNotFound")


def test_a_read_on_a_secondary_without_secondary_ok_is_refused_like_a_real_secondary(replica_set, raw_command):
    reply = raw_command(replica_set.address(1), {"find": "oplog.rs", "limit": 1}, db="local")
    assert (reply["ok"], reply["code"]) == (0.0, 13435)
    ok = raw_command(
        replica_set.address(1),
        {"find": "oplog.rs", "limit": 1, "$readPreference": {"mode": "secondaryPreferred"}},
        db="local",
    )
    assert len(ok["cursor"]["firstBatch"]) == 1


def test_a_member_restarted_by_an_upgrade_drops_connections_and_pymongo_recovers(replica_set, connect):
    client = connect(replica_set.address(1))
    client.admin.command("ping")
    replica_set.set_version("8.0", 1)
    with contextlib.suppress(AutoReconnect):  # the pooled connection died with the restart
        client.admin.command("ping")
    assert client.admin.command("buildInfo")["version"].startswith("8.0.")


def test_taking_the_primary_down_under_streaming_heartbeats_always_returns(replica_set, connect, wait_until):
    """Each take_down() must close the member's connections even when one of pymongo's awaitable hellos was
    woken by the same change (a cancel racing that wake-up can be lost in asyncio; a closed socket cannot)."""
    client = connect(replica_set)

    def pinged() -> bool:
        # A pooled connection to the member taken down in the last round may still be in the pool until the
        # driver's monitor has seen it go: that ping is reset, the next one uses a fresh connection.
        try:
            client.admin.command("ping")
        except AutoReconnect:
            return False
        return True

    for _ in range(3):
        assert wait_until(pinged)
        assert wait_until(lambda: client.primary == replica_set.address(0))
        replica_set.take_down(0)  # a control that could not finish would raise TimeoutError here
        assert not replica_set.member(0).up
        replica_set.bring_up(0)
        replica_set.elect(0)


def test_a_grant_or_a_revoke_applies_to_open_connections_at_once(secured, connect):
    client = connect(secured, username="nolocal", password="s3cret")
    with pytest.raises(OperationFailure):
        client.local["oplog.rs"].find_one()
    secured.add_user("nolocal", "s3cret", ["clusterMonitor", "read@local"])  # as updateUser would
    assert client.local["oplog.rs"].find_one() is not None
    secured.remove_user("nolocal")
    with pytest.raises(OperationFailure) as caught:
        client.admin.command("replSetGetStatus", read_preference=PP)
    assert caught.value.code == 13
