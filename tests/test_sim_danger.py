"""What the exporter reads to say how dangerous a lag is, through real pymongo over TCP on a ManualClock: each
member's oplog window (full, not yet full, past maxSize to keep the commit point), collStats on it, chained sync
sources, the majority commit point, flow control and initial sync, shaped per version profile."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import Int64, Timestamp
from pymongo import MongoClient, ReadPreference
from pymongo.errors import OperationFailure

from mongosim import ManualClock, MemberSpec
from mongosim.__main__ import build, configure, parse_args
from mongosim.model import DAY_MS, DEFAULT_ENTRY_BYTES, DEFAULT_OPLOG_BYTES

T0 = 1_723_763_174_512  # the `date` of the project's synthetic fixtures; ticks of flow control fall at T0 + k s
EPOCH = dt.datetime(1970, 1, 1)
PP = ReadPreference.PRIMARY_PREFERRED
PSA = [MemberSpec(role="primary"), MemberSpec(), MemberSpec(role="arbiter")]
GIB = 1024**3


def _ms(value: dt.datetime) -> int:
    return round((value - EPOCH).total_seconds() * 1000)


def _ends(client: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(oldest, newest) entry of the member's own oplog: natural order, limit 1, as every tool asks."""
    oplog = client.local["oplog.rs"]
    return oplog.find_one(sort=[("$natural", 1)]), oplog.find_one(sort=[("$natural", -1)])


def _window_ms(client: Any) -> int:
    oldest, newest = _ends(client)
    return _ms(newest["wall"]) - _ms(oldest["wall"])


def _status(client: Any) -> dict[str, Any]:
    return client.admin.command("replSetGetStatus", read_preference=PP)


def _commit_lag_ms(status: dict[str, Any]) -> int:
    optimes = status["optimes"]
    return _ms(optimes["lastAppliedWallTime"]) - _ms(optimes["lastCommittedWallTime"])


def _flow(client: Any) -> dict[str, Any]:
    return client.admin.command("serverStatus")["flowControl"]


# --- each member's oplog: newest, oldest, window -----------------------------------------------------------------


def test_a_full_oplog_sized_to_a_window_holds_exactly_that_window_on_every_member(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set(3, clock=clock)
    rs.set_lag(1, 1_500)
    rs.set_lag(2, 12_486)
    for member in range(3):
        rs.set_oplog(member, window_ms=3_600_000)
    for member, lag in ((0, 0), (1, 1_500), (2, 12_486)):
        client = connect(rs.address(member))
        oldest, newest = _ends(client)
        assert (_ms(newest["wall"]), _ms(oldest["wall"])) == (T0 - lag, T0 - lag - 3_600_000), member
        assert oldest["ts"] < newest["ts"]
    clock.advance(90_000)  # continuous traffic: the window slides, its length stays
    assert [_window_ms(connect(rs.address(m))) for m in range(3)] == [3_600_000] * 3


def test_by_default_every_oplog_is_full_and_holds_one_day_of_traffic(replica_set, connect):
    client = connect(replica_set.address(0))
    assert _window_ms(client) == DAY_MS
    stats = client.local.command("collStats", "oplog.rs")
    assert (stats["count"], stats["maxSize"]) == (2 * DAY_MS + 1, Int64(DEFAULT_OPLOG_BYTES))
    assert stats["size"] == stats["maxSize"] == stats["count"] * DEFAULT_ENTRY_BYTES


def test_a_fresh_set_has_an_oplog_not_yet_full_that_starts_when_the_set_was_initiated(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set(3, clock=clock, initiated_ago_ms=600_000)
    rs.set_lag(1, 2_000)
    primary, secondary = connect(rs.address(0)), connect(rs.address(1))
    oldest, newest = _ends(primary)
    assert (oldest["op"], oldest["o"], _ms(oldest["wall"]), oldest["ts"]) == (
        "n",
        {"msg": "initiating set"},
        T0 - 600_000,
        Timestamp((T0 - 600_000) // 1000, 1),
    )
    assert _ms(newest["wall"]) == T0
    assert _ends(secondary)[0] == oldest  # the same first entry, 2 s less at the other end
    assert _window_ms(secondary) == 598_000
    stats = primary.local.command("collStats", "oplog.rs")
    assert stats["count"] == 2 * 600_001  # two entries in each ms from the first to now
    assert stats["size"] == stats["count"] * DEFAULT_ENTRY_BYTES < stats["maxSize"]
    clock.advance(60_000)
    assert _window_ms(primary) == 660_000  # not full: the window is the set's age


def test_an_oplog_fills_up_and_from_then_on_keeps_what_fits(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set(2, clock=clock, initiated_ago_ms=600_000)
    rs.set_oplog(0, max_size_bytes=(2 * 900_000 + 1) * DEFAULT_ENTRY_BYTES)  # room for 15 minutes of traffic
    client = connect(rs.address(0))
    assert _window_ms(client) == 600_000
    clock.advance(300_000)
    assert _window_ms(client) == 900_000  # just full
    clock.advance(300_000)
    assert _window_ms(client) == 900_000
    stats = client.local.command("collStats", "oplog.rs")
    assert stats["size"] == stats["maxSize"] == (2 * 900_000 + 1) * DEFAULT_ENTRY_BYTES


def test_resizing_keeps_the_newest_entries_that_fit(replica_set, connect):
    replica_set.set_oplog(0, max_size_bytes=1_000 * DEFAULT_ENTRY_BYTES + 99)
    client = connect(replica_set.address(0))
    oldest, newest = _ends(client)
    assert (_ms(newest["wall"]), _ms(oldest["wall"])) == (T0, T0 - 499)  # 1 000 entries, two per ms
    stats = client.local.command("collStats", "oplog.rs")
    assert (stats["count"], stats["size"], stats["maxSize"]) == (1_000, 1_000 * DEFAULT_ENTRY_BYTES, stats["size"] + 99)
    replica_set.set_oplog_entry_bytes(286)  # entries twice as big: half as many fit
    assert client.local.command("collStats", "oplog.rs")["count"] == 500


def test_an_oplog_grows_past_its_size_rather_than_truncate_the_majority_commit_point(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set(PSA, clock=clock)
    rs.set_oplog(0, window_ms=10_000)
    client = connect(rs.address(0))
    assert _window_ms(client) == 10_000
    rs.take_down(1)  # PSA: the commit point stays where the secondary was
    clock.advance(25_000)
    oldest, newest = _ends(client)
    assert (_ms(oldest["wall"]), _ms(newest["wall"])) == (T0, T0 + 25_000)
    assert oldest["ts"] == _status(client)["optimes"]["lastCommittedOpTime"]["ts"]
    stats = client.local.command("collStats", "oplog.rs")
    assert stats["size"] > stats["maxSize"]
    rs.bring_up(1)
    assert _window_ms(client) == 10_000


def test_min_retention_hours_keeps_entries_younger_than_that_whatever_the_size(replica_set, connect):
    replica_set.set_oplog(1, window_ms=60_000, min_retention_hours=0.5)
    assert _window_ms(connect(replica_set.address(1))) == 1_800_000
    replica_set.set_oplog(1, min_retention_hours=0)
    assert _window_ms(connect(replica_set.address(1))) == 60_000


def test_an_8_0_member_oplog_ends_at_what_it_has_written(start_set, connect):
    rs = start_set(3, version="8.0", clock=ManualClock(T0))
    rs.set_lag(2, 31_208, written_ms=0)
    assert _ms(_ends(connect(rs.address(2)))[1]["wall"]) == T0


# --- collStats and $collStats on local.oplog.rs ------------------------------------------------------------------


def test_collstats_and_collstats_stage_give_the_same_numbers_on_any_data_member(replica_set, connect):
    replica_set.set_oplog(2, max_size_bytes=1_000_000_000)
    client = connect(replica_set.address(2))
    stats = client.local.command("collStats", "oplog.rs")
    count = 1_000_000_000 // DEFAULT_ENTRY_BYTES
    assert {k: stats[k] for k in ("ns", "size", "count", "avgObjSize", "capped", "max", "maxSize")} == {
        "ns": "local.oplog.rs",
        "size": count * DEFAULT_ENTRY_BYTES,
        "count": count,
        "avgObjSize": DEFAULT_ENTRY_BYTES,
        "capped": True,
        "max": 0,
        "maxSize": 1_000_000_000,
    }
    assert stats["storageSize"] <= stats["size"]
    (out,) = client.local["oplog.rs"].aggregate([{"$collStats": {"storageStats": {}, "count": {}}}])
    assert (out["ns"], out["host"], out["count"]) == ("local.oplog.rs", replica_set.member(2).name, count)
    assert out["storageStats"] == {
        k: v for k, v in stats.items() if k not in ("ns", "ok", "$clusterTime", "operationTime")
    }
    scaled = client.local.command("collStats", "oplog.rs", scale=1024)
    assert (scaled["size"], scaled["maxSize"], scaled["scaleFactor"]) == (stats["size"] // 1024, 976_562, 1024)


def test_collstats_has_the_fields_of_each_version(start_set, connect, raw_command):
    rs = start_set(2, version="4.4")
    stats = connect(rs.address(0)).local.command("collStats", "oplog.rs")
    assert "numOrphanDocs" not in stats and (stats["max"], stats["freeStorageSize"]) == (-1, 0)
    old = start_set(2, version="4.0")
    stats = raw_command(old.address(0), {"collStats": "oplog.rs"}, db="local")
    assert (stats["sleepCount"], stats["sleepMS"]) == (0, 0) and "totalSize" not in stats


def test_collstats_of_a_collection_that_is_not_there_is_namespace_not_found(replica_set, connect):
    with pytest.raises(OperationFailure) as caught:
        connect(replica_set).local.command("collStats", "startup_log")
    assert caught.value.code == 26


@pytest.mark.parametrize("roles, allowed", [(["clusterMonitor"], True), (["read@local"], True), (["read"], False)])
def test_oplog_statistics_need_cluster_monitor_or_read_on_local(start_set, connect, roles, allowed):
    rs = start_set(3, users=[("someone", "s3cret", roles)])
    client = connect(rs.address(0), username="someone", password="s3cret")
    calls = [
        lambda: client.local.command("collStats", "oplog.rs"),
        lambda: list(client.local["oplog.rs"].aggregate([{"$collStats": {"storageStats": {}}}])),
    ]
    for call in calls:
        if allowed:
            call()
        else:
            with pytest.raises(OperationFailure) as caught:
                call()
            assert caught.value.code == 13


# --- chained replication -----------------------------------------------------------------------------------------


def test_a_chained_secondary_is_never_ahead_of_its_sync_source(replica_set, connect):
    replica_set.set_lag(1, 5_000)
    replica_set.set_lag(2, 1_000)
    replica_set.set_sync_source(2, 1)
    status = _status(connect(replica_set))
    chained = status["members"][2]
    assert (chained["syncSourceHost"], chained["syncSourceId"]) == (replica_set.member(1).name, 1)
    assert _ms(chained["lastAppliedWallTime"]) == T0 - 5_000
    assert replica_set.member(2).lag_ms == 5_000
    replica_set.set_lag(2, 8_000)  # further behind than its source: its own lag
    assert _ms(_status(connect(replica_set))["members"][2]["lastAppliedWallTime"]) == T0 - 8_000


def test_a_chained_secondary_whose_source_goes_down_syncs_from_the_primary(replica_set, connect):
    replica_set.set_lag(1, 5_000)
    replica_set.set_sync_source(2, 1)
    replica_set.take_down(1)
    chained = _status(connect(replica_set.address(0)))["members"][2]
    assert (chained["syncSourceId"], _ms(chained["lastAppliedWallTime"])) == (0, T0)


def test_sync_source_cycles_are_refused(replica_set):
    replica_set.set_sync_source(2, 1)
    with pytest.raises(ValueError):
        replica_set.set_sync_source(1, 2)
    with pytest.raises(ValueError):
        replica_set.set_sync_source(1, 3)  # an arbiter


# --- the majority commit point -----------------------------------------------------------------------------------


def test_the_commit_point_trails_when_the_psa_secondary_lags(start_set, connect):
    rs = start_set(PSA, clock=ManualClock(T0))
    rs.set_lag(1, 3_000)
    primary = _status(connect(rs.address(0)))
    assert _commit_lag_ms(primary) == 3_000
    assert primary["optimes"]["readConcernMajorityOpTime"] == primary["optimes"]["lastCommittedOpTime"]
    assert primary["lastStableRecoveryTimestamp"] <= primary["optimes"]["lastCommittedOpTime"]["ts"]
    secondary = _status(connect(rs.address(1)))
    assert secondary["optimes"]["lastCommittedOpTime"] == primary["optimes"]["lastCommittedOpTime"]
    assert secondary["optimes"]["appliedOpTime"] == secondary["optimes"]["readConcernMajorityOpTime"]
    hello = connect(rs.address(0)).admin.command("hello")
    assert hello["lastWrite"]["majorityOpTime"] == primary["optimes"]["lastCommittedOpTime"]


def test_the_commit_point_stalls_while_the_psa_secondary_is_down(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set(PSA, clock=clock)
    rs.set_lag(1, 1_000)
    client = connect(rs.address(0))
    rs.take_down(1)
    clock.advance(7_000)
    status = _status(client)
    assert _ms(status["optimes"]["lastCommittedWallTime"]) == T0 - 1_000
    assert _commit_lag_ms(status) == 8_000
    rs.bring_up(1)
    assert _commit_lag_ms(_status(client)) == 1_000


def test_one_lagging_secondary_of_three_does_not_hold_the_commit_point_back(start_set, connect):
    rs = start_set(3, clock=ManualClock(T0))  # majority 2 of 3 (with an arbiter, 3 of 4: every data member)
    rs.set_lag(2, 60_000)
    assert _commit_lag_ms(_status(connect(rs.address(0)))) == 0


def test_a_forced_commit_lag_holds_the_commit_point_exactly_that_far_back(replica_set, connect):
    replica_set.set_commit_lag(4_321)
    client = connect(replica_set.address(0))
    assert _commit_lag_ms(_status(client)) == 4_321
    replica_set.set_commit_lag(None)
    assert _commit_lag_ms(_status(client)) == 0


@pytest.mark.parametrize("version", ["4.4", "5.0", "6.0", "7.0", "8.0"])
def test_every_profile_reports_the_commit_point_with_its_wall_time(start_set, connect, version):
    rs = start_set(PSA, version=version, clock=ManualClock(T0))
    rs.set_lag(1, 2_500, written_ms=100 if version == "8.0" else None)
    status = _status(connect(rs.address(0)))
    expected = {"lastCommittedOpTime", "lastCommittedWallTime", "readConcernMajorityOpTime"}
    expected |= {"readConcernMajorityWallTime", "appliedOpTime", "durableOpTime", "lastAppliedWallTime"}
    assert expected <= set(status["optimes"])
    assert "lastStableRecoveryTimestamp" in status
    # 8.0 acknowledges what is written (durable), earlier versions what is applied
    assert _commit_lag_ms(status) == (100 if version == "8.0" else 2_500)


def test_a_4_0_primary_reports_the_commit_point_without_wall_times(start_set, raw_command):
    rs = start_set(PSA, version="4.0", clock=ManualClock(T0))
    rs.set_lag(1, 2_000)
    status = raw_command(rs.address(0), {"replSetGetStatus": 1})
    assert "lastCommittedWallTime" not in status["optimes"]
    assert status["optimes"]["lastCommittedOpTime"]["ts"] < status["optimes"]["appliedOpTime"]["ts"]
    assert status["lastStableCheckpointTimestamp"] <= status["optimes"]["lastCommittedOpTime"]["ts"]


# --- flow control ------------------------------------------------------------------------------------------------


def test_flow_control_engages_once_the_commit_point_trails_by_half_the_target(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set(PSA, clock=clock)
    client = connect(rs.address(0))
    rs.set_lag(1, 4_999)
    clock.advance(3_000)
    assert (_flow(client)["isLagged"], _flow(client)["isLaggedCount"]) == (False, 0)
    rs.set_lag(1, 5_000)
    clock.advance(999)
    assert _flow(client)["isLagged"] is False  # the next refresh is a second after the last one
    clock.advance(1)
    flow = _flow(client)
    assert (flow["isLagged"], flow["isLaggedCount"], flow["sustainerRate"]) == (True, 1, 2_000)
    assert flow["targetRateLimit"] == int(1.0 * 2_000 * 0.5**0 * 0.95)  # locksPerOp x sustainer x decay x fudge


def test_flow_control_counters_grow_with_the_clock_and_never_go_down(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set(PSA, clock=clock)
    client = connect(rs.address(0))
    assert _flow(client) == {
        "enabled": True,
        "targetRateLimit": 1_000_000_000,
        "timeAcquiringMicros": Int64(0),
        "locksPerKiloOp": 0.0,
        "sustainerRate": 0,
        "isLagged": False,
        "isLaggedCount": 0,
        "isLaggedTimeMicros": Int64(0),
    }
    rs.set_lag(1, 10_000)
    seen = []
    for _ in range(4):
        clock.advance(1_000)
        seen.append(_flow(client))
    assert [f["isLagged"] for f in seen] == [True] * 4
    assert [f["targetRateLimit"] for f in seen] == [950] * 4  # 2 000 x 0.5^((10 000 - 5 000) / 5 000) x 0.95
    assert [f["timeAcquiringMicros"] for f in seen] == [1_000_000, 2_000_000, 3_000_000, 4_000_000]
    assert [f["isLaggedTimeMicros"] for f in seen] == [0] * 4  # added when a lagged period ends
    rs.set_lag(1, 0)
    clock.advance(1_000)
    flow = _flow(client)
    assert (flow["isLagged"], flow["isLaggedCount"], flow["isLaggedTimeMicros"]) == (False, 1, 4_000_000)
    assert flow["targetRateLimit"] == int((950 + 1000) * 1.05)  # tickets grow back
    rs.set_lag(1, 6_000)
    clock.advance(2_500)
    flow = _flow(client)
    assert (flow["isLaggedCount"], flow["isLaggedTimeMicros"], flow["timeAcquiringMicros"]) == (2, 4_000_000, 6_000_000)


def test_flow_control_counts_a_down_psa_secondary_from_when_the_lag_reaches_the_threshold(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set(PSA, clock=clock)
    client = connect(rs.address(0))
    rs.take_down(1)
    clock.advance(60_000)  # one look a minute later: engaged since T0 + 5 s, counted per second since then
    flow = _flow(client)
    assert (flow["isLagged"], flow["isLaggedCount"], flow["timeAcquiringMicros"]) == (True, 1, 56_000_000)
    assert (flow["sustainerRate"], flow["targetRateLimit"]) == (0, 100)  # the median member applies nothing
    rs.bring_up(1)
    clock.advance(1_000)
    assert _flow(client)["isLaggedTimeMicros"] == 56_000_000


def test_the_flow_control_target_and_switch_are_settable(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set(PSA, clock=clock)
    client = connect(rs.address(0))
    rs.set_flow_control(target_lag_s=30)
    rs.set_lag(1, 14_999)
    clock.advance(2_000)
    assert _flow(client)["isLagged"] is False
    rs.set_flow_control(target_lag_s=10)
    clock.advance(1_000)
    assert _flow(client)["isLagged"] is True
    rs.set_flow_control(enabled=False)  # mongod stops refreshing: what it reported stays as it was
    rs.set_lag(1, 0)
    clock.advance(5_000)
    assert (_flow(client)["enabled"], _flow(client)["isLagged"]) == (False, True)


def test_a_secondary_reports_flow_control_placeholders(start_set, connect, raw_command):
    clock = ManualClock(T0)
    rs = start_set(PSA, clock=clock)
    rs.set_lag(1, 20_000)
    clock.advance(5_000)
    flow = _flow(connect(rs.address(1)))
    assert (flow["targetRateLimit"], flow["isLagged"], flow["isLaggedCount"], flow["sustainerRate"]) == (
        1_000_000_000,
        False,
        0,
        0,
    )
    old = start_set(2, version="4.0")
    assert "flowControl" not in raw_command(old.address(0), {"serverStatus": 1})


def test_server_status_still_needs_cluster_monitor(start_set, connect):
    rs = start_set(3, users=[("reader", "s3cret", ["read@local"])])
    with pytest.raises(OperationFailure) as caught:
        connect(rs.address(0), username="reader", password="s3cret").admin.command("serverStatus")
    assert caught.value.code == 13


# --- initial sync ------------------------------------------------------------------------------------------------


def test_a_member_in_initial_sync_reports_its_progress_and_estimate(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set(3, clock=clock)
    rs.start_initial_sync(2, total_bytes=512_000_000, bytes_per_s=5_120_000)  # 100 s
    clock.advance(25_000)
    syncing = connect(rs.address(2))  # a direct connection reaches a STARTUP2 member
    status = syncing.admin.command("replSetGetStatus")
    assert (status["myState"], status["syncSourceHost"], status["syncSourceId"]) == (5, rs.member(0).name, 0)
    sync = status["initialSyncStatus"]
    assert list(sync)[:6] == [
        "method",
        "failedInitialSyncAttempts",
        "maxFailedInitialSyncAttempts",
        "initialSyncStart",
        "totalInitialSyncElapsedMillis",
        "initialSyncAttempts",
    ]
    assert (sync["method"], _ms(sync["initialSyncStart"]), sync["totalInitialSyncElapsedMillis"]) == (
        "logical",
        T0,
        25_000,
    )
    assert (sync["approxTotalDataSize"], sync["approxTotalBytesCopied"]) == (512_000_000, 128_000_000)  # 25 %
    assert sync["remainingInitialSyncEstimatedMillis"] == int(25_000 / 128_000_000 * (512_000_000 - 128_000_000))
    assert sync["initialSyncOplogStart"] == Timestamp(T0 // 1000, 2 * (T0 % 1000 + 1))  # the source's newest
    events = sync["databases"]["app"]["app.events"]
    assert (events["documentsToCopy"], events["documentsCopied"]) == (1_000_000, 250_000)
    assert (events["bytesToCopy"], events["approxBytesCopied"]) == (512_000_000, 128_000_000)
    assert "readConcernMajorityOpTime" not in status["optimes"]
    assert status["optimes"]["appliedOpTime"]["ts"] == Timestamp(0, 0)
    seen = _status(connect(rs.address(0)))["members"][2]
    assert (seen["stateStr"], seen["optime"]["ts"], seen["lastAppliedWallTime"]) == ("STARTUP2", Timestamp(0, 0), EPOCH)
    assert syncing.local.command("collStats", "oplog.rs")["count"] == 0
    assert syncing.admin.command("hello")["lastWrite"]["opTime"]["ts"] == Timestamp(0, 0)


@pytest.mark.parametrize("version, method", [("4.4", False), ("5.0", False), ("6.0", True), ("8.0", True)])
def test_initial_sync_status_has_the_fields_of_each_version(start_set, connect, version, method):
    clock = ManualClock(T0)
    rs = start_set(3, version=version, clock=clock)
    rs.start_initial_sync(1, total_bytes=1_024_000, bytes_per_s=102_400)
    assert (
        "remainingInitialSyncEstimatedMillis"
        not in connect(rs.address(1)).admin.command("replSetGetStatus")["initialSyncStatus"]
    )  # nothing copied yet, no estimate
    clock.advance(5_000)
    sync = connect(rs.address(1)).admin.command("replSetGetStatus")["initialSyncStatus"]
    assert ("method" in sync) is method
    assert sync["approxTotalBytesCopied"] == 512_000 and sync["totalTimeUnreachableMillis"] == Int64(0)
    assert sync["databases"]["databasesToClone"] == 1


def test_a_4_0_member_reports_initial_sync_only_when_asked(start_set, raw_command):
    clock = ManualClock(T0)
    rs = start_set(3, version="4.0", clock=clock)
    rs.start_initial_sync(1, total_bytes=1_024_000, bytes_per_s=102_400)
    assert "initialSyncStatus" not in raw_command(rs.address(1), {"replSetGetStatus": 1})
    sync = raw_command(rs.address(1), {"replSetGetStatus": 1, "initialSync": 1})["initialSyncStatus"]
    assert "fetchedMissingDocs" in sync and "approxTotalDataSize" not in sync


def test_initial_sync_zero_leaves_the_status_out_and_a_string_is_a_type_mismatch(start_set, connect):
    rs = start_set(3, clock=ManualClock(T0))
    rs.start_initial_sync(1, total_bytes=GIB, bytes_per_s=GIB // 100)
    client = connect(rs.address(1))
    assert "initialSyncStatus" not in client.admin.command("replSetGetStatus", initialSync=0)
    with pytest.raises(OperationFailure) as caught:
        client.admin.command("replSetGetStatus", initialSync="t")
    assert caught.value.code == 14


def test_a_member_becomes_secondary_when_its_initial_sync_is_done(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set(3, clock=clock)
    rs.set_lag(2, 700)
    rs.start_initial_sync(2, total_bytes=1_024_000, bytes_per_s=102_400)  # 10 s
    client = connect(rs.address(2))
    clock.advance(9_999)
    assert client.admin.command("replSetGetStatus")["myState"] == 5
    clock.advance(1)
    status = client.admin.command("replSetGetStatus")
    assert (status["myState"], "initialSyncStatus" in status) == (2, False)
    assert rs.member(2).state == "SECONDARY"
    oldest, newest = _ends(client)
    assert (_ms(oldest["wall"]), _ms(newest["wall"])) == (T0, T0 + 10_000 - 700)  # its oplog begins with the copy


def test_a_voting_member_in_initial_sync_stalls_the_psa_commit_point(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set(PSA, clock=clock)
    client = connect(rs.address(0))
    rs.start_initial_sync(1, total_bytes=GIB, bytes_per_s=GIB // 100)
    clock.advance(8_000)
    assert _ms(_status(client)["optimes"]["lastCommittedWallTime"]) == T0
    assert _flow(client)["isLagged"] is True


# --- elections ---------------------------------------------------------------------------------------------------


def test_w_majority_availability_after_an_election_waits_for_the_majority(start_set, connect):
    clock = ManualClock(T0)
    rs = start_set([MemberSpec(role="primary"), MemberSpec(), MemberSpec(), MemberSpec(role="arbiter")], clock=clock)
    rs.set_lag(2, 3_000)
    rs.take_down(0)
    rs.elect(1)  # voting 4, majority 3; members 1 and 2 are the writers that remain
    client = connect(rs.address(1))
    metrics = _status(client)["electionCandidateMetrics"]
    assert {"lastElectionReason", "lastElectionDate", "numCatchUpOps", "newTermStartDate"} <= set(metrics)
    assert "wMajorityWriteAvailabilityDate" not in metrics
    clock.advance(5_000)
    metrics = _status(client)["electionCandidateMetrics"]
    assert _ms(metrics["newTermStartDate"]) == T0
    # member 2 applies the first entry of each ms 3 s later; the new-term entry is the last one of ms T0
    assert _ms(metrics["wMajorityWriteAvailabilityDate"]) == T0 + 3_001


# --- the command line --------------------------------------------------------------------------------------------


def test_the_command_line_sets_windows_commit_lag_flow_control_and_initial_syncs():
    flags = ["--members", "3", "--initiated-ago", "2h", "--oplog-window", "1=30m", "--commit-lag", "6000"]
    args = parse_args([*flags, "--flow-control-target-lag", "20", "--initial-sync", "2=1MiB@64KiB"])
    rs = build(args).start()  # on the real clock
    try:
        assert len(configure(rs, args)) == 3
        with (
            MongoClient(*rs.address(0), directConnection=True, serverSelectionTimeoutMS=2000) as primary,
            MongoClient(*rs.address(1), directConnection=True, serverSelectionTimeoutMS=2000) as secondary,
        ):
            # on a real clock the newest entry is read a little after the oldest, as on a real server
            assert 7_200_000 <= _window_ms(primary) < 7_260_000  # initiated 2 h ago: not yet full
            assert 1_800_000 <= _window_ms(secondary) < 1_860_000
            assert _commit_lag_ms(_status(primary)) == 6_000
        assert rs.member(2).state == "STARTUP2"  # 16 s to go
    finally:
        rs.stop()
