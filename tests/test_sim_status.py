"""Every control is visible in replSetGetStatus / replSetGetConfig / the oplog, read through pymongo over TCP
(a raw OP_MSG socket for the 4.0 profile, which pymongo 4.20 refuses like a real 4.0 server)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from bson import Int64, Timestamp, json_util
from pymongo import ReadPreference
from pymongo.errors import OperationFailure

from mongosim import ManualClock

T0 = 1_723_763_174_512  # the `date` of the project's synthetic fixtures
PP = ReadPreference.PRIMARY_PREFERRED
FIXTURES = Path(__file__).parent / "fixtures"
EPOCH = dt.datetime(1970, 1, 1)


def _ms(value: dt.datetime) -> int:
    return round((value - EPOCH).total_seconds() * 1000)


def _status(client: Any) -> dict[str, Any]:
    return client.admin.command("replSetGetStatus", read_preference=PP)


def _primary_status(client: Any) -> dict[str, Any]:
    """The primary's view: PRIMARY_PREFERRED may pick a secondary until the primary has been discovered."""
    client.admin.command("ping")
    return _status(client)


def _by_name(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in status["members"]}


def _oplog_lag_ms(client: Any, status: dict[str, Any], member: dict[str, Any]) -> int | None:
    """docs/domain.md §6: status date - wall of the first entry after the member's optime; None when caught up."""
    entry = client.local["oplog.rs"].find_one({"ts": {"$gt": member["optime"]["ts"]}}, sort=[("$natural", 1)])
    return None if entry is None else _ms(status["date"]) - _ms(entry["wall"])


def test_lag_shows_to_the_millisecond_in_wall_times_and_in_whole_seconds_in_optimedate(replica_set, connect):
    replica_set.set_lag(1, 1_239)  # by _id
    replica_set.set_lag(replica_set.member(2).name, 12_486)  # or by name
    client = connect(replica_set)
    status = _primary_status(client)
    members = _by_name(status)
    primary, m1, m2 = (members[replica_set.member(i).name] for i in range(3))
    assert _ms(status["date"]) == T0
    assert _ms(primary["lastAppliedWallTime"]) == T0  # continuous traffic: the primary is at "now"
    assert _ms(primary["lastAppliedWallTime"]) - _ms(m1["lastAppliedWallTime"]) == 1_239
    assert _ms(primary["lastAppliedWallTime"]) - _ms(m2["lastAppliedWallTime"]) == 12_486
    for member in (primary, m1, m2):
        assert _ms(member["optimeDate"]) == member["optime"]["ts"].time * 1000  # whole seconds: ts.time
        assert member["optimeDate"] <= member["lastAppliedWallTime"]
    assert _oplog_lag_ms(client, status, m1) == 1_239
    assert _oplog_lag_ms(client, status, m2) == 12_486
    assert _oplog_lag_ms(client, status, primary) is None


def test_a_member_whose_clock_was_stepped_back_reports_its_own_time_but_the_walls_stay_the_primarys(
    replica_set, connect
):
    replica_set.set_lag(1, 20_000)
    replica_set.set_clock_offset(0, -60_000)  # the primary's clock stepped back a minute after its writes
    client = connect(replica_set)
    status = _primary_status(client)
    members = _by_name(status)
    primary, m1 = members[replica_set.member(0).name], members[replica_set.member(1).name]
    assert _ms(status["date"]) == T0 - 60_000
    assert _ms(client.admin.command("hello")["localTime"]) == T0 - 60_000
    assert _ms(primary["lastAppliedWallTime"]) == T0  # stamped before the step
    assert _ms(primary["lastAppliedWallTime"]) - _ms(m1["lastAppliedWallTime"]) == 20_000
    assert _oplog_lag_ms(client, status, m1) == 20_000 - 60_000  # the §6 measure goes negative: the trap
    replica_set.set_clock_offset(0, 0)
    assert _ms(_primary_status(client)["date"]) == T0


def test_a_caught_up_member_has_the_primarys_optime_and_nothing_after_it_in_the_oplog(replica_set, connect):
    client = connect(replica_set)
    status = _status(client)
    members = _by_name(status)
    primary, secondary = members[replica_set.member(0).name], members[replica_set.member(1).name]
    assert secondary["optime"] == primary["optime"]
    assert _oplog_lag_ms(client, status, secondary) is None


def test_the_oplog_holds_two_entries_per_millisecond_with_consecutive_ts(replica_set, connect):
    client = connect(replica_set)
    second = T0 // 1000 - 1
    entries = list(client.local["oplog.rs"].find({"ts": {"$gte": Timestamp(second, 1), "$lt": Timestamp(second, 7)}}))
    assert [e["ts"] for e in entries] == [Timestamp(second, i) for i in range(1, 7)]
    assert [_ms(e["wall"]) - second * 1000 for e in entries] == [0, 0, 1, 1, 2, 2]
    assert {e["op"] for e in entries} == {"i"}
    newest = client.local["oplog.rs"].find_one(sort=[("$natural", -1)])
    assert _ms(newest["wall"]) == T0


def test_a_down_member_has_epoch_optimes_and_health_zero_and_keeps_its_name(replica_set, connect):
    client = connect(replica_set)
    replica_set.take_down(2)
    down = _by_name(_status(client))[replica_set.member(2).name]
    assert (down["health"], down["state"], down["stateStr"]) == (0.0, 8, "(not reachable/healthy)")
    assert down["optime"] == {"ts": Timestamp(0, 0), "t": Int64(-1)}
    assert down["optimeDate"] == EPOCH
    assert down["lastAppliedWallTime"] == EPOCH
    assert "Connection refused" in down["lastHeartbeatMessage"]


def test_an_arbiter_has_no_optime_fields_at_all(replica_set, connect):
    client = connect(replica_set)
    arbiter = _by_name(_status(client))[replica_set.member(3).name]
    assert (arbiter["state"], arbiter["stateStr"]) == (7, "ARBITER")
    assert not [k for k in arbiter if k.startswith(("optime", "last")) and "Heartbeat" not in k]


def test_the_answering_member_reports_itself_and_no_heartbeat_fields_for_itself(replica_set, connect):
    replica_set.set_lag(2, 700)
    client = connect(replica_set.address(2))
    status = client.admin.command("replSetGetStatus")
    members = _by_name(status)
    me = members[replica_set.member(2).name]
    assert status["myState"] == 2
    assert status["syncSourceHost"] == replica_set.member(0).name
    assert me["self"] is True
    assert not {"lastHeartbeat", "lastHeartbeatRecv", "pingMs", "optimeDurableDate"} & set(me)
    others = [m for name, m in members.items() if name != me["name"]]
    assert all({"lastHeartbeat", "lastHeartbeatRecv", "pingMs"} <= set(m) for m in others)
    assert all("self" not in m for m in others)


@pytest.mark.parametrize("state, code", [("STARTUP2", 5), ("RECOVERING", 3), ("ROLLBACK", 9)])
def test_states_set_on_a_secondary_show_in_status_and_in_hello(replica_set, connect, raw_command, state, code):
    replica_set.set_lag(1, 4_000)
    replica_set.set_state(1, state)
    member = _by_name(_status(connect(replica_set)))[replica_set.member(1).name]
    assert (member["health"], member["state"], member["stateStr"]) == (1.0, code, state)
    if state == "STARTUP2":
        assert member["optime"]["ts"] == Timestamp(0, 0)  # no usable optime during initial sync
    else:
        assert _ms(member["lastAppliedWallTime"]) == T0 - 4_000
    hello = raw_command(replica_set.address(1), {"hello": 1})
    assert (hello["isWritablePrimary"], hello["secondary"]) == (False, False)


def test_no_primary_leaves_status_readable_with_primary_preferred(replica_set, connect):
    client = connect(replica_set)
    client.admin.command("ping")
    replica_set.no_primary()
    status = _status(client)
    assert [m for m in status["members"] if m["state"] == 1] == []
    assert status["myState"] == 2
    replica_set.elect(1)
    status = _status(client)
    assert [m["name"] for m in status["members"] if m["state"] == 1] == [replica_set.member(1).name]
    assert status["term"] == 2


def test_an_election_advances_the_term_and_keeps_the_config_version(replica_set, connect, wait_until):
    client = connect(replica_set)
    before = client.admin.command("replSetGetConfig")["config"]
    replica_set.elect(1)
    after = client.admin.command("replSetGetConfig")["config"]
    assert (after["version"], after["term"]) == (before["version"], before["term"] + 1)
    assert wait_until(lambda: client.primary == replica_set.address(1))  # pymongo's next heartbeat
    status = _primary_status(client)
    primary = _by_name(status)[replica_set.member(1).name]
    assert primary["optime"]["t"] == 2
    assert status["electionCandidateMetrics"]["priorPrimaryMemberId"] == 0


def test_post_idle_first_write_shows_the_pause_in_wall_times_and_the_truth_in_the_oplog(start_set, connect):
    """docs/domain.md §6: an idle primary writes a no-op every 10 s; the first write after a pause makes the naive
    wall-time lag equal the pause until the secondaries apply it, while the oplog lookup says "just written"."""
    clock = ManualClock(T0)
    rs = start_set(3, clock=clock)
    rs.set_lag(1, 2_000)  # an apply delay: the secondary applies each entry 2 s after it is written
    rs.idle()
    clock.advance(10_000)
    noop_ms = clock.now_ms()
    client = connect(rs)
    entry = client.local["oplog.rs"].find_one(sort=[("$natural", -1)])
    assert (entry["op"], entry["o"], _ms(entry["wall"])) == ("n", {"msg": "periodic noop"}, noop_ms)
    clock.advance(9_000)
    members = _by_name(_status(client))
    assert members[rs.member(1).name]["optime"] == members[rs.member(0).name]["optime"]  # caught up at the no-op
    written = rs.write()
    assert written["wall_ms"] == noop_ms + 9_000
    clock.advance(100)
    status = _status(client)
    members = _by_name(status)
    primary, secondary = members[rs.member(0).name], members[rs.member(1).name]
    assert _ms(primary["lastAppliedWallTime"]) == written["wall_ms"]
    assert _ms(secondary["lastAppliedWallTime"]) == noop_ms
    assert _ms(primary["lastAppliedWallTime"]) - _ms(secondary["lastAppliedWallTime"]) == 9_000  # naive: the pause
    assert _oplog_lag_ms(client, status, secondary) == 100  # the truth: the write is 100 ms old
    clock.advance(2_000)
    status = _status(client)
    secondary = _by_name(status)[rs.member(1).name]
    assert _ms(secondary["lastAppliedWallTime"]) == written["wall_ms"]
    assert _oplog_lag_ms(client, status, secondary) is None


def test_write_traffic_at_a_given_rate_fills_the_oplog_at_that_rate(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set(2, clock=clock)
    rs.write_rate(250)
    clock.advance(5_000)
    client = connect(rs)
    second = T0 // 1000 + 2
    window = {"ts": {"$gt": Timestamp(second, 0), "$lt": Timestamp(second + 1, 0)}}
    assert len(list(client.local["oplog.rs"].find(window).limit(1000))) == 250


def test_a_version_8_0_member_reports_written_and_applied_progress_apart(start_set, connect):
    rs = start_set(3, version="8.0", clock=ManualClock(T0))
    rs.set_lag(2, 31_208, written_ms=0)
    status = _primary_status(connect(rs))
    member = _by_name(status)[rs.member(2).name]
    assert _ms(member["lastWrittenWallTime"]) == T0
    assert _ms(member["lastAppliedWallTime"]) == T0 - 31_208
    assert member["optimeWritten"]["ts"] > member["optime"]["ts"]
    assert {"writtenOpTime", "lastWrittenWallTime"} <= set(status["optimes"])


@pytest.mark.parametrize("version, field", [("4.4", "slaveDelay"), ("5.0", "secondaryDelaySecs")])
def test_a_delay_is_named_per_version_in_the_config(start_set, connect, version, field):
    rs = start_set(3, version=version)
    rs.set_delay(2, 3600)
    rs.set_hidden(2)
    config = connect(rs).admin.command("replSetGetConfig", read_preference=PP)["config"]
    delayed = config["members"][2]
    assert (delayed[field], delayed["hidden"], delayed["priority"]) == (3600, True, 0.0)
    assert {"slaveDelay", "secondaryDelaySecs"} - {field} & set(delayed) == set()
    assert config["version"] == 3


def test_config_changes_advance_the_config_version_and_show_in_status(replica_set, connect):
    client = connect(replica_set)
    name = replica_set.add_member(lag_ms=250)
    status = _status(client)
    assert status["members"][-1]["name"] == name
    assert status["members"][-1]["configVersion"] == 2
    replica_set.rename(1, f"localhost:{replica_set.member(1).port}")
    replica_set.remove_member(2)
    config = client.admin.command("replSetGetConfig", read_preference=PP)["config"]
    assert config["version"] == 4
    assert [m["host"] for m in config["members"]] == [
        replica_set.member(0).name,
        f"localhost:{replica_set.member(1).port}",
        replica_set.member(3).name,
        name,
    ]


# --- shapes per version profile, against the project's fixture documents -------------------------------------


def _fixture(name: str) -> dict[str, Any]:
    return json_util.loads((FIXTURES / name).read_text())


def _member_shapes(status: dict[str, Any]) -> dict[tuple[str, bool], list[str]]:
    return {(m["stateStr"], bool(m.get("self"))): list(m) for m in status["members"]}


def _assert_same_shape(simulated: dict[str, Any], fixture: dict[str, Any]) -> None:
    assert list(simulated) == list(fixture)
    assert list(simulated["optimes"]) == list(fixture["optimes"])
    expected = _member_shapes(fixture)
    got = _member_shapes(simulated)
    for role, keys in expected.items():
        assert got[role] == keys, role


def test_a_4_0_status_has_the_4_0_fields_and_none_of_the_later_ones(start_set, raw_command):
    rs = start_set(3, version="4.0")
    status = raw_command(rs.address(0), {"replSetGetStatus": 1})
    _assert_same_shape(status, _fixture("replSetGetStatus-4.0-primary.json"))
    assert all("lastAppliedWallTime" not in m and "configTerm" not in m for m in status["members"])
    config = raw_command(rs.address(0), {"replSetGetConfig": 1})["config"]
    assert "slaveDelay" in config["members"][0] and "term" not in config


def test_a_5_0_secondary_view_with_an_arbiter_has_the_5_0_shape(start_set, connect):
    rs = start_set(3, arbiter=True, version="5.0")
    status = connect(rs.address(1)).admin.command("replSetGetStatus")
    fixture = _fixture("replSetGetStatus-5.0-secondary-with-arbiter.json")
    assert list(status) == list(fixture)
    assert _member_shapes(status) == {**_member_shapes(status), **_member_shapes(fixture)}


def test_a_7_0_primary_view_has_the_7_0_shape(replica_set, connect):
    status = _primary_status(connect(replica_set))
    _assert_same_shape(status, _fixture("replSetGetStatus-7.0-primary-lagging.json"))


def test_a_7_0_secondary_view_without_primary_has_the_7_0_shape(replica_set, connect):
    replica_set.take_down(0)
    status = connect(replica_set.address(1)).admin.command("replSetGetStatus")
    _assert_same_shape(status, _fixture("replSetGetStatus-7.0-no-primary.json"))


def test_an_8_0_primary_view_has_the_8_0_shape(start_set, connect):
    rs = start_set(3, version="8.0")
    _assert_same_shape(_primary_status(connect(rs)), _fixture("replSetGetStatus-8.0-primary-apply-lag.json"))


@pytest.mark.parametrize("version", ["4.4", "5.0", "7.0"])
def test_profiles_before_8_0_have_no_written_fields_and_no_syncingto(start_set, connect, version):
    rs = start_set(3, version=version)
    status = _status(connect(rs))
    flat = set(status) | set(status["optimes"]) | {k for m in status["members"] for k in m}
    assert not flat & {"optimeWritten", "lastWrittenWallTime", "writtenOpTime", "syncingTo"}
    assert {"lastAppliedWallTime", "configTerm", "votingMembersCount"} <= flat
    assert connect(rs).admin.command("buildInfo")["version"].startswith(version + ".")


def test_a_delayed_member_is_never_less_behind_than_its_delay(replica_set, connect):
    replica_set.set_delay(2, 3600)
    client = connect(replica_set)
    members = _by_name(_primary_status(client))
    primary, delayed = members[replica_set.member(0).name], members[replica_set.member(2).name]
    assert _ms(primary["lastAppliedWallTime"]) - _ms(delayed["lastAppliedWallTime"]) == 3_600_000
    replica_set.set_lag(2, 3_600_429)
    delayed = _by_name(_status(client))[replica_set.member(2).name]
    assert _ms(primary["lastAppliedWallTime"]) - _ms(delayed["lastAppliedWallTime"]) == 3_600_429


def test_the_config_keeps_slavedelay_until_every_member_is_upgraded_to_5_0(start_set, connect):
    rs = start_set(3, version="4.4")
    client = connect(rs)
    rs.set_version("5.0", 1)  # a rolling upgrade: secondaries first (each restarts)
    rs.set_version("5.0", 2)
    config = client.admin.command("replSetGetConfig")["config"]
    assert "slaveDelay" in config["members"][0]
    rs.set_version("5.0", 0)
    config = connect(rs).admin.command("replSetGetConfig")["config"]
    assert "secondaryDelaySecs" in config["members"][0] and "slaveDelay" not in config["members"][0]


@pytest.mark.parametrize(
    "control, args",
    [
        ("set_lag", (0, 100)),  # the primary has no lag
        ("set_lag", (3, 100)),  # nor has an arbiter
        ("elect", (3,)),  # an arbiter cannot be elected
        ("set_hidden", (0,)),  # a primary cannot be hidden
        ("set_state", (1, "PRIMARY")),  # primaries come from elect()
        ("hang", (1, "sometimes")),
    ],
)
def test_controls_refuse_what_a_real_set_would_refuse(replica_set, control, args):
    with pytest.raises(ValueError):
        getattr(replica_set, control)(*args)
    assert replica_set.primary == replica_set.member(0).name


def test_a_chained_secondary_reports_its_sync_source(replica_set, connect):
    replica_set.set_sync_source(2, 1)
    members = _by_name(_primary_status(connect(replica_set)))
    chained = members[replica_set.member(2).name]
    assert (chained["syncSourceHost"], chained["syncSourceId"]) == (replica_set.member(1).name, 1)
    assert members[replica_set.member(1).name]["syncSourceHost"] == replica_set.member(0).name


def test_the_in_process_command_answers_exactly_what_the_wire_carries(replica_set, raw_command):
    replica_set.set_lag(1, 2_500)
    for command in ("replSetGetStatus", "replSetGetConfig"):
        assert replica_set.command(0, command) == raw_command(replica_set.address(0), {command: 1})


def test_a_fail_command_failpoint_makes_one_member_refuse_that_command_until_it_is_lifted(replica_set, connect):
    replica_set.fail_command(1, "find", 2)
    direct = connect(replica_set.address(1))
    with pytest.raises(OperationFailure) as refused:
        direct.local["oplog.rs"].find_one({})
    assert (refused.value.code, refused.value.details["codeName"]) == (2, "BadValue")
    assert "failCommand" in refused.value.details["errmsg"]
    assert direct.admin.command("replSetGetStatus")["ok"] == 1.0  # other commands answer
    assert connect(replica_set.address(0)).local["oplog.rs"].find_one({}) is not None  # other members answer
    replica_set.fail_command(1, "find", None)
    assert direct.local["oplog.rs"].find_one({}) is not None
