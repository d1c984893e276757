"""The readers' test factory on the real engine: the documents it writes make the engine measure exactly the lags
and say exactly the reasons the tests ask for, in the engine's own words (so a reader's test that reads them reads
what users see)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from view_factory import (
    COLLECTED_AT_MS,
    EPOCH,
    healthy_set,
    member,
    primary,
    snapshot,
    status_and_config,
)

from replicationlag.model import ARBITER, PRIMARY, RECOVERING, SECONDARY, STARTUP2, Reference, Status

DOWN = 8
GREEN, YELLOW, RED = Status.GREEN, Status.YELLOW, Status.RED


def judged(snap, name):
    return next(m for m in snap.members if m.name == name)


def test_a_healthy_set_has_exactly_the_lags_asked_and_the_engines_reasons_on_both_sides_of_each_line():
    snap = healthy_set(0, 4_999, 5_000, 29_999, 30_000)

    rows = [(m.name, m.lag_ms, m.raw_lag_ms, m.precision, m.lag_source, m.status) for m in snap.members]
    assert rows == [
        ("db0:27017", 0, 0, "ms", "wall", GREEN),
        ("db1:27017", 0, 0, "ms", "wall", GREEN),
        ("db2:27017", 4_999, 4_999, "ms", "wall", GREEN),
        ("db3:27017", 5_000, 5_000, "ms", "wall", YELLOW),
        ("db4:27017", 29_999, 29_999, "ms", "wall", YELLOW),
        ("db5:27017", 30_000, 30_000, "ms", "wall", RED),
    ]
    assert snap.reasons == (
        "db5:27017: 30000 ms behind the primary",
        "db3:27017: 5000 ms behind the primary",
        "db4:27017: 29999 ms behind the primary",
    )
    assert (snap.status, snap.answered_by, snap.reference, snap.reference_member) == (
        RED,
        "db0:27017",
        Reference.PRIMARY,
        "db0:27017",
    )
    assert (snap.set_name, snap.collected_at_ms, snap.has_primary) == ("rs0", COLLECTED_AT_MS, True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10 * 3_600_000), min_size=1, max_size=6))
def test_any_lags_asked_are_the_lags_the_engine_measures_to_the_millisecond(lags):
    snap = healthy_set(*lags)
    assert [m.lag_ms for m in snap.members[1:]] == lags


def test_a_delayed_hidden_member_is_judged_on_its_lag_beyond_the_delay_read_from_the_config():
    snap = snapshot(primary(), member("db2:27017", lag_ms=429, hidden=True, delay_ms=3_600_000))

    db2 = judged(snap, "db2:27017")
    assert (db2.lag_ms, db2.raw_lag_ms, db2.delay_ms, db2.status) == (429, 3_600_429, 3_600_000, GREEN)
    assert (db2.hidden, db2.priority, db2.votes) == (True, 0.0, 1)
    _, config = status_and_config(primary(), member("db2:27017", lag_ms=429, hidden=True, delay_ms=3_600_000))
    assert config["members"][1]["secondaryDelaySecs"] == 3_600


def test_a_member_without_wall_times_is_measured_in_whole_seconds_from_optime_date():
    db1 = judged(snapshot(primary(), member("db1:27017", lag_ms=12_000, precision="s")), "db1:27017")
    assert (db1.lag_ms, db1.precision, db1.lag_source, db1.status) == (12_000, "s", "optimeDate", YELLOW)
    with pytest.raises(ValueError, match="whole seconds"):
        snapshot(primary(), member("db1:27017", lag_ms=12_345, precision="s"))


def test_an_8_0_written_lag_is_reported_where_asked_and_the_engine_names_the_bottleneck():
    by_field = snapshot(primary(), member("db1:27017", lag_ms=31_208, written_lag_ms=0), member("db2:27017"))
    by_reason = snapshot(
        primary(),
        member("db1:27017", lag_ms=31_208, reason="oplog written 0 ms behind, so applying is the bottleneck"),
    )

    for snap in (by_field, by_reason):
        db1 = judged(snap, "db1:27017")
        assert (db1.lag_ms, db1.written_lag_ms, db1.status) == (31_208, 0, RED)
        assert db1.reason == "31208 ms behind the primary; oplog written 0 ms behind, so applying is the bottleneck"
    assert judged(by_field, "db2:27017").written_lag_ms is None  # not asked: no 8.0 fields


@pytest.mark.parametrize(
    ("asked", "reason"),
    [
        (member("db3:27017", DOWN, None, healthy=False), "DOWN: not reachable"),
        (member("db3:27017", DOWN, None, healthy=False, reason="DOWN: not reachable"), "DOWN: not reachable"),
        (member("db3:27017", DOWN, None, healthy=False, reason="DOWN: Connection refused"), "DOWN: Connection refused"),
        (member("db3:27017", DOWN, None, healthy=False, reason="<b>&"), "DOWN: <b>&"),
        (member("db3:27017", ARBITER, None, healthy=False, reason="DOWN: no route"), "DOWN: no route"),
        (member("db3:27017", RECOVERING, None), "RECOVERING"),
        (member("db3:27017", RECOVERING, None, reason="RECOVERING: maintenance mode"), "RECOVERING: maintenance mode"),
        (member("db3:27017", STARTUP2, None, reason="STARTUP2"), "STARTUP2"),
    ],
)
def test_a_reason_asked_is_what_the_engine_says_from_the_servers_own_message(asked, reason):
    snap = snapshot(primary(), asked)

    db3 = judged(snap, "db3:27017")
    assert (db3.reason, db3.lag_ms, db3.raw_lag_ms, db3.status) == (reason, None, None, RED)
    assert snap.reasons == (f"db3:27017: {reason}",)


def test_a_down_member_is_written_as_a_server_writes_it_health_0_and_epoch_optimes():
    status, _ = status_and_config(primary(), member("db3:27017", DOWN, None, healthy=False, reason="refused"))

    me, down = status["members"]
    assert (me["self"], me["health"], status["myState"], "pingMs" in me) == (True, 1.0, PRIMARY, False)
    assert (down["health"], down["state"], down["stateStr"]) == (0.0, DOWN, "(not reachable/healthy)")
    assert (down["optime"]["ts"].time, down["optimeDate"], down["lastAppliedWallTime"]) == (0, EPOCH, EPOCH)
    assert (down["lastHeartbeatMessage"], "self" in down) == ("refused", False)


def test_without_a_primary_the_engine_measures_against_the_freshest_member_and_says_so():
    snap = snapshot(member("db1:27017"), member("db2:27017", lag_ms=6_316))

    assert (snap.has_primary, snap.reference, snap.reference_member) == (False, Reference.FRESHEST, "db1:27017")
    assert snap.answered_by == "db1:27017"
    assert snap.reasons == ("no primary", "db2:27017: 6316 ms behind the freshest member db1:27017")


def test_an_arbiter_has_no_lag_and_stays_green_while_healthy():
    arb = judged(snapshot(primary(), member("arb:27017", ARBITER, None)), "arb:27017")
    assert (arb.is_arbiter, arb.lag_ms, arb.status, arb.reason) == (True, None, GREEN, "")


def test_secondaries_sync_from_the_primary_unless_asked_otherwise_and_the_primary_lists_first():
    chained = replace(member("s2:1", lag_ms=10_500), sync_source="s1:1")
    snap = snapshot(member("s1:1", lag_ms=1_000), chained, primary("p:1"), set_name="rs9", collected_at_ms=1_000_000)

    assert [(m.name, m.sync_source) for m in snap.members] == [("p:1", ""), ("s1:1", "p:1"), ("s2:1", "s1:1")]
    assert [m.lag_ms for m in snap.members] == [0, 1_000, 10_500]
    assert (snap.set_name, snap.collected_at_ms) == ("rs9", 1_000_000)


def test_tags_priority_and_votes_come_from_the_config_it_writes():
    asked = member("db1:27017", SECONDARY, 0, tags={"dc": "east"}, priority=2, votes=0)
    db1 = judged(snapshot(primary(), asked), "db1:27017")
    assert (db1.tags, db1.priority, db1.votes) == ((("dc", "east"),), 2.0, 0)


def test_an_answering_primary_reports_the_majority_commit_lag_asked_and_zero_by_default():
    assert snapshot(primary(), member("db1:27017")).majority_commit_lag_ms == 0
    assert snapshot(primary(), member("db1:27017"), commit_lag_ms=12_345).majority_commit_lag_ms == 12_345
    assert snapshot(member("db1:27017"), member("db2:27017")).majority_commit_lag_ms is None  # a secondary answered
