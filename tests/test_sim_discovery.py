"""Discovery through the real pymongo driver over TCP: seed lists, a single seed, direct connections, hidden and
priority-0 members, elections and members that come back."""

from __future__ import annotations

import pytest
from pymongo import MongoClient, ReadPreference
from pymongo.errors import ConfigurationError
from pymongo.server_type import SERVER_TYPE


def _server_types(client: MongoClient) -> dict[tuple[str, int], int]:
    return {address: sd.server_type for address, sd in client.topology_description.server_descriptions().items()}


def test_a_seed_list_of_every_member_discovers_primary_secondaries_and_arbiter(replica_set, connect, wait_until):
    client = connect(replica_set)
    client.admin.command("ping")
    expected = {
        replica_set.address(0): SERVER_TYPE.RSPrimary,
        replica_set.address(1): SERVER_TYPE.RSSecondary,
        replica_set.address(2): SERVER_TYPE.RSSecondary,
        replica_set.address(3): SERVER_TYPE.RSArbiter,
    }
    assert wait_until(lambda: _server_types(client) == expected), client.topology_description
    assert client.topology_description.topology_type_name == "ReplicaSetWithPrimary"


def test_a_single_seed_discovers_the_rest_of_the_set(replica_set, connect, wait_until):
    host, port = replica_set.address(2)
    client = connect(f"mongodb://{host}:{port}/?replicaSet={replica_set.name}")
    client.admin.command("ping")
    assert wait_until(lambda: len(client.secondaries) == 2 and len(client.arbiters) == 1)
    assert client.primary == replica_set.address(0)


def test_a_direct_connection_to_a_secondary_runs_commands_and_reads_its_oplog(replica_set, connect):
    client = connect(replica_set.address(1))
    status = client.admin.command("replSetGetStatus")
    assert status["myState"] == 2
    assert [m["name"] for m in status["members"] if m.get("self")] == [replica_set.member(1).name]
    assert client.local["oplog.rs"].find_one() is not None
    assert client.topology_description.topology_type_name == "Single"


def test_hidden_members_are_left_out_of_hello_but_not_out_of_replsetgetstatus(replica_set, connect, raw_command):
    replica_set.set_hidden(2)
    hello = raw_command(replica_set.address(0), {"hello": 1})
    names = {m.name: m for m in replica_set.members}
    hidden = replica_set.member(2).name
    assert hidden not in hello["hosts"] + hello.get("passives", []) + hello.get("arbiters", [])
    assert hidden not in replica_set.uri
    own = raw_command(replica_set.address(2), {"hello": 1})
    assert (own["hidden"], own["secondary"], own["me"]) == (True, True, hidden)
    client = connect(replica_set)
    status = client.admin.command("replSetGetStatus", read_preference=ReadPreference.PRIMARY_PREFERRED)
    assert {m["name"] for m in status["members"]} == set(names)


def test_priority_zero_members_are_listed_as_passives_and_still_discovered(
    replica_set, connect, raw_command, wait_until
):
    replica_set.set_priority(1, 0)
    hello = raw_command(replica_set.address(0), {"hello": 1})
    assert hello["passives"] == [replica_set.member(1).name]
    assert replica_set.member(1).name not in hello["hosts"]
    client = connect(replica_set)
    assert wait_until(lambda: replica_set.address(1) in client.secondaries)


def test_an_election_is_followed_by_pymongo_within_a_heartbeat(replica_set, connect, wait_until):
    client = connect(replica_set)
    client.admin.command("ping")
    assert wait_until(lambda: len(client.secondaries) == 2)
    replica_set.elect(2)
    assert wait_until(lambda: client.primary == replica_set.address(2))
    # The new primary's hello makes the driver forget the old one; its next heartbeat finds it a secondary.
    assert wait_until(lambda: replica_set.address(0) in client.secondaries)
    hello = client.admin.command("hello")
    assert hello["me"] == replica_set.member(2).name
    assert hello["electionId"].binary[-8:] == (2).to_bytes(8, "big")  # term 2: OID::fromTerm


def test_a_member_taken_down_is_unknown_and_is_rediscovered_when_it_comes_back(replica_set, connect, wait_until):
    client = connect(replica_set)
    client.admin.command("ping")
    address = replica_set.address(1)
    assert wait_until(lambda: address in client.secondaries)
    replica_set.take_down(1)
    assert wait_until(lambda: _server_types(client).get(address) == SERVER_TYPE.Unknown)
    replica_set.bring_up(1)
    assert replica_set.address(1) == address  # the same port
    assert wait_until(lambda: address in client.secondaries)


def test_a_rolling_upgrade_changes_the_wire_version_pymongo_sees(replica_set, connect, wait_until):
    client = connect(replica_set)
    client.admin.command("ping")
    replica_set.set_version("8.0", 1)
    address = replica_set.address(1)

    def wire_version() -> int:
        return client.topology_description.server_descriptions()[address].max_wire_version

    assert wait_until(lambda: wire_version() == 25)
    assert client.topology_description.server_descriptions()[replica_set.address(0)].max_wire_version == 21


def test_pymongo_refuses_a_4_0_member_as_it_refuses_a_real_one(start_set, connect):
    rs = start_set(1, version="4.0")
    client = connect(rs, serverSelectionTimeoutMS=1000)
    with pytest.raises(ConfigurationError, match="wire version 7"):  # pymongo 4.20 needs 9 (MongoDB 4.4)
        client.admin.command("ping")
