"""The shard map read from what real routers answered (tests/fixtures/real-shapes/, copied unchanged): one set per
shard whatever older seed lists `connStrings` keeps, a shard's seeds as its map entry names them even when the set
has more members (they come from the set itself), a host the router knows in no map entry adding no set, the config
server set last; and the 4.2 flow control section of a real primary read by `danger.flow_control`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bson import json_util

from replicationlag.danger import flow_control
from replicationlag.model import SetAddress, SetRole
from replicationlag.shardmap import from_shard_documents, from_shard_map

REAL = Path(__file__).parent / "fixtures" / "real-shapes"
DATADOG_7_0 = "getShardMap-7.0-datadog-three-shards-stale-connstrings-stringified-times.json"
MLAUNCH_8_X = "getShardMap-8.x-mlaunch-three-shards-one-node-config.json"
LIST_SHARDS_4_0 = "listShards-4.0-three-shards-one-draining.json"


def real(name: str) -> Any:
    return json_util.loads((REAL / name).read_text())


def test_a_7_0_map_gives_one_set_per_shard_with_the_seeds_of_its_map_entry_and_the_config_set_last():
    shard_map = from_shard_map(real(DATADOG_7_0))

    assert shard_map is not None
    assert shard_map.source == "getShardMap" and shard_map.config_watched
    assert shard_map.sets == (
        SetAddress("shard01", ("shard01a:27018", "shard01b:27019"), SetRole.SHARD, "shard01"),
        SetAddress("shard02", ("shard02a:27019", "shard02b:27019"), SetRole.SHARD, "shard02"),
        SetAddress("shard03", ("shard03a:27020", "shard03b:27020"), SetRole.SHARD, "shard03"),
        SetAddress("configserver", ("config01:27017", "config02:27017", "config03:27017"), SetRole.CONFIG, "config"),
    )
    assert [s.label for s in shard_map.sets][-1] == "config servers (replica set configserver)"


def test_older_seed_lists_in_conn_strings_and_a_host_in_no_map_entry_add_no_set():
    reply = real(DATADOG_7_0)
    assert "shard01/shard01a:27018" in reply["connStrings"]  # an older seed list of shard01
    assert reply["hosts"]["shard01c:27020"] == "shard01"  # a member the router knows, in no map entry

    shard_map = from_shard_map(reply)

    assert shard_map is not None
    assert shard_map.names() == {"shard01", "shard02", "shard03", "configserver"}
    assert all("shard01c:27020" not in s.hosts for s in shard_map.sets)  # the set itself names its members


def test_an_8_x_map_with_a_one_member_config_set_and_shards_on_one_host():
    shard_map = from_shard_map(real(MLAUNCH_8_X))

    assert shard_map is not None
    assert [(s.shard_id, s.name, len(s.hosts), s.role) for s in shard_map.sets] == [
        ("shard01", "shard01", 3, SetRole.SHARD),
        ("shard02", "shard02", 3, SetRole.SHARD),
        ("shard03", "shard03", 3, SetRole.SHARD),
        ("config", "configRepl", 1, SetRole.CONFIG),
    ]
    assert shard_map.sets[-1].hosts == ("localhost:27027",)


def test_list_shards_of_4_0_names_the_shards_only_and_the_draining_one():
    shard_map = from_shard_documents(real(LIST_SHARDS_4_0)["shards"], "listShards")

    assert shard_map is not None
    assert shard_map.source == "listShards" and not shard_map.config_watched
    assert [(s.name, s.hosts, s.draining) for s in shard_map.sets] == [
        ("shard1", ("127.0.0.1:27000", "127.0.0.1:27001"), True),
        ("shard2", ("127.0.0.1:27100", "127.0.0.1:27101"), False),
        ("shard3", ("127.0.0.1:27200", "127.0.0.1:27201"), False),
    ]


def test_a_map_takes_draining_from_list_shards_documents_by_shard_id():
    reply = {"map": {"shard1": "shard1/127.0.0.1:27000", "shard2": "shard2/127.0.0.1:27100"}}

    shard_map = from_shard_map(reply, real(LIST_SHARDS_4_0)["shards"])

    assert shard_map is not None
    assert {s.shard_id: s.draining for s in shard_map.sets} == {"shard1": True, "shard2": False}


@pytest.mark.parametrize("reply", [{}, {"map": "junk"}, {"map": {"shard1": "127.0.0.1:27000"}}, {"ok": 0}])
def test_a_reply_without_a_usable_map_gives_none(reply):
    assert from_shard_map(reply) is None


def test_a_whole_4_2_server_status_gives_idle_flow_control_at_its_ceiling():
    found = flow_control(real("serverStatus-4.2.8-primary-flowControl-repl-percona-ftdc-gojson.json"))

    assert found is not None
    assert (found.enabled, found.engaged, found.target_rate) == (True, False, 1_000_000_000)
    assert (found.lagged_count, found.lagged_time_s, found.acquiring_time_s) == (0, 0.0, 0.007635)


def test_the_4_2_flow_control_sequence_is_engaged_by_is_lagged_even_with_no_lagged_time_yet():
    idle, engaged, later = (
        flow_control({"flowControl": section})
        for section in real("serverStatus.flowControl-4.2-sequence-startup-then-engaged.json")
    )

    assert idle is not None and engaged is not None and later is not None
    assert (idle.engaged, idle.target_rate) == (False, 1_000_000_000)
    assert (engaged.engaged, engaged.target_rate, engaged.lagged_count, engaged.lagged_time_s) == (True, 2015, 1, 0.0)
    assert (later.target_rate, later.acquiring_time_s) == (1014, 0.038346)
