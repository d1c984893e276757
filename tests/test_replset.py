"""The lag engine on the checked-in replSetGetStatus documents and on hand-built ones, both sides of every boundary.

Fixtures are loaded the way pymongo hands documents over (tz-aware datetimes, bson.Timestamp, bson.Int64); the
expected values are the ones tests/fixtures/README.md lists.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from bson import Int64, Timestamp, json_util
from bson.json_util import JSONOptions

from replicationlag.model import (
    ARBITER,
    PRIMARY,
    RED_AT_MS,
    SECONDARY,
    STATE_NAMES,
    YELLOW_AT_MS,
    NoteKind,
    OplogProbe,
    Snapshot,
    Status,
    status_for_lag,
    texts,
)
from replicationlag.replset import build_snapshot, config_is_stale, members_needing_oplog_probe

FIXTURES = Path(__file__).parent / "fixtures"
UTC = dt.UTC
GREEN, YELLOW, RED = Status.GREEN, Status.YELLOW, Status.RED


def load(name: str) -> dict[str, Any]:
    options = JSONOptions(tz_aware=True, tzinfo=UTC)
    return json_util.loads((FIXTURES / name).read_text(), json_options=options)


def edge_config(delay_field: str = "secondaryDelaySecs") -> dict[str, Any]:
    name = "replSetGetConfig-7.0-edge-cases.json"
    if delay_field == "slaveDelay":
        name = "replSetGetConfig-4.4-slaveDelay.json"
    return load(name)["config"]


def snapshot_of(fixture: str, config: dict[str, Any] | None = None, **kwargs: Any) -> Snapshot:
    return build_snapshot(load(f"replSetGetStatus-{fixture}.json"), config, **kwargs)


def member_named(snapshot: Snapshot, prefix: str):
    (found,) = [m for m in snapshot.members if m.name.startswith(prefix)]
    return found


# --- Hand-built documents -------------------------------------------------------------------------------
# The primary applied its last op at PRIMARY_WALL; the document was produced 571 ms later (as in the fixtures).
PRIMARY_WALL = dt.datetime(2024, 8, 15, 23, 6, 13, 941_000, tzinfo=UTC)
DATE = PRIMARY_WALL + dt.timedelta(milliseconds=571)
DATE_MS = int(DATE.timestamp() * 1000)


def optime_at(wall: dt.datetime, term: int = 3) -> dict[str, Any]:
    """An optime consistent with `wall`: later walls give later optimes, as in a real oplog."""
    return {"ts": Timestamp(int(wall.timestamp()), wall.microsecond // 1000 + 1), "t": Int64(term)}


def entry(member_id: int, state: int = SECONDARY, behind_ms: int = 0, **fields: Any) -> dict[str, Any]:
    """One members[] entry as a 5.0+ server writes it, `behind_ms` behind the primary's last applied op."""
    wall = PRIMARY_WALL - dt.timedelta(milliseconds=behind_ms)
    doc: dict[str, Any] = {
        "_id": member_id,
        "name": f"db{member_id}.example.net:27017",
        "health": 1.0,
        "state": state,
        "stateStr": STATE_NAMES.get(state, "?"),
        "optime": optime_at(wall),
        "optimeDate": wall.replace(microsecond=0),
        "lastAppliedWallTime": wall,
        "pingMs": Int64(1),
        "configVersion": 7,
        "configTerm": 3,
    }
    if state == ARBITER:
        for key in ("optime", "optimeDate", "lastAppliedWallTime"):
            del doc[key]
    doc.update(fields)
    return {key: value for key, value in doc.items() if value is not DROP}


DROP = object()  # entry(..., field=DROP) removes a field


def status(*members: dict[str, Any], **top: Any) -> dict[str, Any]:
    doc = {"set": "rs0", "date": DATE, "myState": 1, "members": list(members), "ok": 1.0}
    doc.update(top)
    return {key: value for key, value in doc.items() if value is not DROP}


def primary(**fields: Any) -> dict[str, Any]:
    return entry(0, PRIMARY, self=True, **fields)


def lag_row(snapshot: Snapshot, name: str) -> tuple:
    m = member_named(snapshot, name)
    return m.raw_lag_ms, m.lag_ms, m.precision, m.lag_source, m.status


# --- Every fixture, with the values its README lists ----------------------------------------------------
LAGS = [
    # fixture, member, raw ms, effective ms, precision, source, member status
    ("4.0-primary", "m1", (0, 0, "s", "optimeDate", GREEN)),
    ("4.0-primary", "m2", (0, 0, "s", "optimeDate", GREEN)),
    ("4.0-primary", "m3", (0, 0, "s", "optimeDate", GREEN)),
    ("4.4-primary", "m2", (0, 0, "ms", "wall", GREEN)),
    ("4.4-primary", "m3", (0, 0, "ms", "wall", GREEN)),
    ("4.4-secondary", "m1", (0, 0, "ms", "wall", GREEN)),
    ("4.4-secondary", "m3", (0, 0, "ms", "wall", GREEN)),
    ("5.0-secondary-with-arbiter", "192.168.2.6:27017", (0, 0, "ms", "wall", GREEN)),
    ("5.0-secondary-with-arbiter", "192.168.2.6:27018", (0, 0, "ms", "wall", GREEN)),
    ("5.0-secondary-with-arbiter", "192.168.2.6:27020", (None, None, None, None, GREEN)),
    ("7.0-primary-lagging", "m2", (1239, 1239, "ms", "wall", GREEN)),
    ("7.0-primary-lagging", "m3", (12486, 12486, "ms", "wall", YELLOW)),
    ("8.0-primary-apply-lag", "m2", (0, 0, "ms", "wall", GREEN)),
    ("8.0-primary-apply-lag", "m3", (31208, 31208, "ms", "wall", RED)),
    ("7.0-primary-edge-cases", "db1", (0, 0, "ms", "wall", GREEN)),
    ("7.0-primary-edge-cases", "db2", (3600429, 429, "ms", "wall", GREEN)),
    ("7.0-primary-edge-cases", "db3", (None, None, None, None, RED)),
    ("7.0-primary-edge-cases", "db4", (None, None, None, None, RED)),
    ("7.0-primary-edge-cases", "arb", (None, None, None, None, GREEN)),
    ("7.0-no-primary", "db0", (None, None, None, None, RED)),
    ("7.0-no-primary", "db1", (0, 0, "ms", "wall", GREEN)),
    ("7.0-no-primary", "db2", (6316, 6316, "ms", "wall", YELLOW)),
]


@pytest.mark.parametrize(("fixture", "name", "expected"), LAGS)
def test_every_fixture_gives_the_lag_its_readme_lists(fixture, name, expected):
    config = edge_config() if "edge" in fixture else None
    assert lag_row(snapshot_of(fixture, config), name) == expected


CLUSTERS = [
    # fixture, status, reference, reference member, answered by, has primary, first reason
    ("4.0-primary", GREEN, ("primary", "m3", "m3", True, None)),
    ("4.4-primary", GREEN, ("primary", "m1", "m1", True, None)),
    ("4.4-secondary", GREEN, ("primary", "m1", "m2", True, None)),
    ("5.0-secondary-with-arbiter", GREEN, ("primary", "192.168.2.6:27019", "192.168.2.6:27017", True, None)),
    ("7.0-primary-lagging", YELLOW, ("primary", "m1", "m1", True, "m3.example.net:27017: 12486 ms behind")),
    ("8.0-primary-apply-lag", RED, ("primary", "m1", "m1", True, "m3.example.net:27017: 31208 ms behind")),
    ("7.0-primary-edge-cases", RED, ("primary", "db0", "db0", True, "db3.example.net:27017: DOWN: ")),
    ("7.0-no-primary", RED, ("freshest", "db1", "db1", False, "no primary")),
]


@pytest.mark.parametrize(("fixture", "colour", "expected"), CLUSTERS)
def test_every_fixture_gives_the_cluster_verdict_its_readme_lists(fixture, colour, expected):
    kind, ref, answered, has_primary, reason = expected
    snap = snapshot_of(fixture, edge_config() if "edge" in fixture else None)
    assert (snap.status, snap.reference, snap.has_primary) == (colour, kind, has_primary)
    assert snap.reference_member.startswith(ref)
    assert snap.answered_by.startswith(answered)
    assert snap.reasons[0].startswith(reason) if reason else snap.reasons == ()


def test_a_down_member_has_no_lag_and_its_heartbeat_message_as_reason_never_epoch_arithmetic():
    db3 = member_named(snapshot_of("7.0-primary-edge-cases", edge_config()), "db3")
    assert (db3.lag_ms, db3.raw_lag_ms, db3.healthy, db3.state_str) == (None, None, False, "DOWN")
    assert db3.reason.startswith("DOWN: Error connecting to db3.example.net:27017")
    assert db3.reason.endswith("Connection refused")


def test_a_recovering_member_is_red_by_state_whatever_its_optimes_say():
    db4 = member_named(snapshot_of("7.0-primary-edge-cases", edge_config()), "db4")
    assert (db4.status, db4.reason, db4.lag_ms) == (RED, "RECOVERING", None)


def test_edge_case_cluster_lists_exactly_the_down_and_the_recovering_member():
    snap = snapshot_of("7.0-primary-edge-cases", edge_config())
    assert [r.split(":")[0] for r in snap.reasons] == ["db3.example.net", "db4.example.net"]


@pytest.mark.parametrize("delay_field", ["secondaryDelaySecs", "slaveDelay"])
def test_a_delayed_hidden_member_is_judged_on_its_lag_beyond_the_delay_under_either_config_name(delay_field):
    db2 = member_named(snapshot_of("7.0-primary-edge-cases", edge_config(delay_field)), "db2")
    assert (db2.delay_ms, db2.raw_lag_ms, db2.lag_ms, db2.status) == (3_600_000, 3_600_429, 429, GREEN)
    assert (db2.hidden, db2.priority, db2.votes) == (True, 0.0, 0)


def test_without_the_config_a_delayed_member_reads_as_plain_lag():
    db2 = member_named(snapshot_of("7.0-primary-edge-cases"), "db2")
    assert (db2.delay_ms, db2.lag_ms, db2.status) == (0, 3_600_429, RED)


def test_the_whole_replsetgetconfig_reply_is_read_like_its_config_subdocument():
    whole = load("replSetGetConfig-7.0-edge-cases.json")
    assert member_named(snapshot_of("7.0-primary-edge-cases", whole), "db2").lag_ms == 429


def test_the_8_0_written_lag_is_reported_beside_the_applied_lag_and_named_in_the_reason():
    snap = snapshot_of("8.0-primary-apply-lag")
    m3 = member_named(snap, "m3")
    assert (m3.lag_ms, m3.written_lag_ms) == (31208, 0)
    assert "applying is the bottleneck" in m3.reason
    assert member_named(snapshot_of("7.0-primary-lagging"), "m3").written_lag_ms is None


def test_an_arbiter_has_no_lag_and_stays_green_while_healthy():
    arb = member_named(snapshot_of("5.0-secondary-with-arbiter"), "192.168.2.6:27020")
    assert (arb.is_arbiter, arb.is_data_bearing, arb.lag_ms, arb.status) == (True, False, None, GREEN)


def test_members_are_listed_primary_first_then_by_id():
    snap = snapshot_of("5.0-secondary-with-arbiter")
    assert [m.id for m in snap.members] == [2, 0, 1, 4]


def test_the_snapshot_time_is_the_documents_date_in_ms():
    snap = snapshot_of("7.0-primary-lagging")
    assert snap.collected_at_ms == int(dt.datetime(2024, 8, 15, 23, 6, 14, 512_000, tzinfo=UTC).timestamp() * 1000)


def test_sync_source_ping_and_set_name_come_from_the_document():
    snap = snapshot_of("7.0-primary-lagging")
    m3 = member_named(snap, "m3")
    assert (snap.set_name, m3.sync_source, m3.ping_ms) == ("replset", "m2.example.net:27017", 38)
    assert member_named(snap, "m1").ping_ms is None  # the answering member has no pingMs


def test_a_4_0_member_that_only_has_syncing_to_reports_it_as_sync_source():
    doc = status(primary(), entry(1, syncingTo="db0.example.net:27017"))
    assert member_named(build_snapshot(doc), "db1").sync_source == "db0.example.net:27017"


# --- Thresholds, both sides ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lag_ms", "colour"),
    [(0, GREEN), (4_999, GREEN), (5_000, YELLOW), (29_999, YELLOW), (30_000, RED), (3_600_000, RED)],
)
def test_a_lagging_secondary_colours_itself_and_the_cluster_on_both_sides_of_each_line(lag_ms, colour):
    assert (YELLOW_AT_MS, RED_AT_MS) == (5_000, 30_000)
    assert status_for_lag(lag_ms) == colour
    snap = build_snapshot(status(primary(), entry(1, behind_ms=lag_ms)))
    assert lag_row(snap, "db1") == (lag_ms, lag_ms, "ms", "wall", colour)
    assert snap.status == colour
    assert bool(snap.reasons) == (colour != GREEN)


@pytest.mark.parametrize(
    ("beyond_delay_ms", "colour"), [(-1, GREEN), (0, GREEN), (4_999, GREEN), (5_000, YELLOW), (30_000, RED)]
)
def test_a_delayed_member_is_classified_on_its_effective_lag_never_negative(beyond_delay_ms, colour):
    config = {
        "_id": "rs0",
        "version": 7,
        "members": [{"_id": 1, "host": "db1.example.net:27017", "secondaryDelaySecs": 600}],
    }
    snap = build_snapshot(status(primary(), entry(1, behind_ms=600_000 + beyond_delay_ms)), config)
    db1 = member_named(snap, "db1")
    assert (db1.raw_lag_ms, db1.lag_ms, db1.status) == (600_000 + beyond_delay_ms, max(0, beyond_delay_ms), colour)


def test_a_hidden_member_without_delay_is_an_ordinary_secondary():
    config = {"members": [{"_id": 1, "host": "db1.example.net:27017", "hidden": True, "priority": 0}]}
    db1 = member_named(build_snapshot(status(primary(), entry(1, behind_ms=6_000)), config), "db1")
    assert (db1.hidden, db1.lag_ms, db1.status) == (True, 6_000, YELLOW)


# --- Exact milliseconds and the fallbacks ---------------------------------------------------------------
def test_lag_is_exact_milliseconds_where_optime_date_would_round_to_seconds():
    db1 = member_named(build_snapshot(status(primary(), entry(1, behind_ms=1_500))), "db1")
    assert (db1.lag_ms, db1.precision) == (1_500, "ms")


@pytest.mark.parametrize("side", ["member", "reference"])
def test_a_missing_wall_time_on_either_side_falls_back_to_optime_date_in_seconds(side):
    fields = {"lastAppliedWallTime": DROP}
    doc = (
        status(primary(**fields), entry(1, behind_ms=1_500))
        if side == "reference"
        else status(primary(), entry(1, behind_ms=1_500, **fields))
    )
    # optimeDate: 23:06:13 vs 23:06:12 (the member's wall 23:06:12.441 truncated).
    assert lag_row(build_snapshot(doc), "db1") == (1_000, 1_000, "s", "optimeDate", GREEN)


def test_a_wall_time_at_the_epoch_counts_as_missing_not_as_1970():
    epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
    doc = status(primary(), entry(1, behind_ms=1_500, lastAppliedWallTime=epoch))
    assert lag_row(build_snapshot(doc), "db1") == (1_000, 1_000, "s", "optimeDate", GREEN)


def test_the_timestamp_increment_is_never_read_as_milliseconds():
    doc = status(
        primary(lastAppliedWallTime=DROP, optime={"ts": Timestamp(1723763173, 999), "t": 3}),
        entry(
            1,
            lastAppliedWallTime=DROP,
            optime={"ts": Timestamp(1723763171, 1), "t": 3},
            optimeDate=dt.datetime(2024, 8, 15, 23, 6, 11, tzinfo=UTC),
        ),
    )
    assert member_named(build_snapshot(doc), "db1").lag_ms == 2_000


def test_the_same_optime_as_the_primary_is_exactly_zero_whatever_the_wall_times_say():
    same = primary()["optime"]
    doc = status(primary(), entry(1, behind_ms=9_000, optime=same))
    assert lag_row(build_snapshot(doc), "db1") == (0, 0, "ms", "wall", GREEN)


def test_a_member_ahead_of_the_primary_in_a_stale_view_is_clamped_to_zero_never_absolute():
    doc = status(primary(), entry(1, behind_ms=-7_000))
    assert lag_row(build_snapshot(doc), "db1") == (0, 0, "ms", "wall", GREEN)


def test_naive_utc_datetimes_give_the_same_lags_as_aware_ones():
    def naive(doc: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in doc.items():
            out[key] = value.replace(tzinfo=None) if isinstance(value, dt.datetime) else value
        return out

    aware = status(primary(), entry(1, behind_ms=1_239))
    plain = {**naive(aware), "members": [naive(m) for m in aware["members"]]}
    assert build_snapshot(plain) == build_snapshot(aware)


def test_a_member_with_only_a_wall_time_against_a_reference_with_only_an_optime_date_is_red_unmeasured():
    doc = status(primary(lastAppliedWallTime=DROP), entry(1, behind_ms=800, optimeDate=DROP))
    db1 = member_named(build_snapshot(doc), "db1")
    assert (db1.lag_ms, db1.status) == (None, RED)
    assert "comparable" in db1.reason


# --- Members without a lag ------------------------------------------------------------------------------
@pytest.mark.parametrize("state", [0, 3, 5, 6, 8, 9, 10])
def test_a_healthy_looking_member_in_a_non_data_state_is_red_by_state_and_has_no_lag(state):
    snap = build_snapshot(status(primary(), entry(1, state=state, behind_ms=200)))
    db1 = member_named(snap, "db1")
    assert (db1.lag_ms, db1.raw_lag_ms, db1.status, db1.reason) == (None, None, RED, STATE_NAMES[state])
    assert snap.status == RED


def test_a_state_with_a_message_says_both():
    doc = status(primary(), entry(1, state=9, infoMessage="rolling back to common point"))
    assert member_named(build_snapshot(doc), "db1").reason == "ROLLBACK: rolling back to common point"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"health": 0}, "DOWN: not reachable"),
        ({"health": 0, "lastHeartbeatMessage": "Connection refused"}, "DOWN: Connection refused"),
        ({"health": DROP}, "no health reported"),
        ({"optime": DROP}, "no usable optime"),
        ({"optime": {"ts": Timestamp(0, 0), "t": -1}}, "no usable optime"),
        (
            {
                "optimeDate": dt.datetime(1970, 1, 1, tzinfo=UTC),
                "lastAppliedWallTime": dt.datetime(1970, 1, 1, tzinfo=UTC),
            },
            "no usable optime",
        ),
        ({"optimeDate": dt.datetime(1969, 12, 31, tzinfo=UTC), "lastAppliedWallTime": DROP}, "no usable optime"),
    ],
)
def test_a_member_without_a_usable_optime_has_no_lag_and_is_red_with_the_reason(fields, reason):
    db1 = member_named(build_snapshot(status(primary(), entry(1, behind_ms=200, **fields))), "db1")
    assert (db1.lag_ms, db1.raw_lag_ms, db1.precision, db1.status, db1.reason) == (None, None, None, RED, reason)


def test_a_down_arbiter_is_red():
    doc = status(primary(), entry(1), entry(2, state=ARBITER, health=0))
    snap = build_snapshot(doc)
    assert (member_named(snap, "db2").status, snap.status) == (RED, RED)
    assert snap.reasons == ("db2.example.net:27017: DOWN: not reachable",)


def test_reasons_are_listed_worst_first():
    doc = status(primary(), entry(1, behind_ms=6_000), entry(2, health=0))
    assert build_snapshot(doc).reasons == (
        "db2.example.net:27017: DOWN: not reachable",
        "db1.example.net:27017: 6000 ms behind the primary",
    )


# --- The reference point -------------------------------------------------------------------------------
def test_without_a_primary_lag_is_measured_against_the_freshest_member_and_the_set_is_red():
    doc = status(entry(0, health=0, state=8), entry(1, behind_ms=1_000, self=True), entry(2, behind_ms=4_000))
    snap = build_snapshot(doc)
    assert (snap.status, snap.reference, snap.reference_member, snap.reasons) == (
        RED,
        "freshest",
        "db1.example.net:27017",
        ("no primary", "db0.example.net:27017: DOWN: not reachable"),
    )
    assert member_named(snap, "db2").lag_ms == 3_000


def test_without_a_primary_the_set_is_red_even_when_every_member_is_caught_up():
    snap = build_snapshot(status(entry(1, self=True), entry(2)))
    assert (snap.status, snap.reasons, snap.has_primary) == (RED, ("no primary",), False)
    assert [m.status for m in snap.members] == [GREEN, GREEN]


def test_the_freshest_member_is_chosen_by_term_before_timestamp():
    newer_term = entry(2, behind_ms=3_000, optime=optime_at(PRIMARY_WALL - dt.timedelta(seconds=3), term=4))
    snap = build_snapshot(status(entry(1, self=True), newer_term))
    assert snap.reference_member == "db2.example.net:27017"
    assert member_named(snap, "db1").lag_ms == 0  # db1's wall is later: clamped, never abs()


def test_with_two_members_reporting_primary_the_newer_term_is_the_reference_and_a_note_says_so():
    stale = entry(1, PRIMARY, behind_ms=8_000, optime=optime_at(PRIMARY_WALL - dt.timedelta(seconds=8), term=2))
    snap = build_snapshot(status(primary(), stale))
    assert snap.reference_member == "db0.example.net:27017"
    assert texts(snap.notes) == ("2 members report PRIMARY; lag is measured against db0.example.net:27017, the newest",)


def test_a_primary_without_a_usable_optime_is_red_and_the_freshest_member_becomes_the_reference():
    snap = build_snapshot(status(primary(optime=DROP), entry(1, behind_ms=500), entry(2, behind_ms=700)))
    assert (snap.has_primary, snap.reference, snap.reference_member) == (True, "freshest", "db1.example.net:27017")
    assert snap.reasons == ("db0.example.net:27017: no usable optime",)
    assert member_named(snap, "db2").lag_ms == 200


# --- The post-idle false alarm: the primary's oplog (docs/domain.md §6) ----------------------------------------
IDLE_WRITE_MS = DATE_MS - 300  # the first write after a 9.5 s pause, 300 ms before the document


def idle_doc(**top: Any) -> dict[str, Any]:
    """A quiet set: db1 applied the last no-op, the primary has just applied a write 9.5 s later."""
    return status(primary(), entry(1, behind_ms=9_500), **top)


def test_a_quiet_set_measured_by_the_oplog_shows_the_age_of_the_oldest_unapplied_op_not_the_pause():
    assert member_named(build_snapshot(idle_doc()), "db1").status == YELLOW  # the naive false alarm
    snap = build_snapshot(idle_doc(), oplog={"db1.example.net:27017": OplogProbe(IDLE_WRITE_MS)})
    assert lag_row(snap, "db1") == (300, 300, "ms", "oplog", GREEN)
    assert (snap.status, snap.notes) == (GREEN, ())


def test_an_oplog_lag_gives_ms_precision_even_on_a_4_0_server_and_clamps_an_entry_newer_than_the_date():
    doc = status(primary(lastAppliedWallTime=DROP), entry(1, behind_ms=2_000, lastAppliedWallTime=DROP))
    snap = build_snapshot(doc, oplog={"db1.example.net:27017": OplogProbe(DATE_MS + 50)})
    assert lag_row(snap, "db1") == (0, 0, "ms", "oplog", GREEN)


def test_an_oplog_lag_of_a_delayed_member_has_the_delay_subtracted():
    config = {"members": [{"_id": 1, "host": "db1.example.net:27017", "secondaryDelaySecs": 60}]}
    doc = status(primary(), entry(1, behind_ms=61_000))
    snap = build_snapshot(doc, config, oplog={"db1.example.net:27017": OplogProbe(DATE_MS - 60_400)})
    assert lag_row(snap, "db1") == (60_400, 400, "ms", "oplog", GREEN)


def test_a_failed_oplog_lookup_falls_back_to_wall_times_and_says_so_without_changing_the_status():
    probe = OplogProbe(error="not authorized on local to execute command find")
    snap = build_snapshot(status(primary(), entry(1, behind_ms=1_200)), oplog={"db1.example.net:27017": probe})
    db1 = member_named(snap, "db1")
    assert (db1.lag_ms, db1.lag_source, db1.status, snap.status) == (1_200, "wall", GREEN, GREEN)
    assert "not authorized on local" in db1.reason
    assert db1.reason.endswith("lag from wall times")
    assert texts(snap.notes) == (f"db1.example.net:27017: {db1.reason}",)
    assert snap.reasons == ()


def test_an_oplog_that_shows_nothing_unapplied_for_a_member_behind_is_distrusted():
    snap = build_snapshot(idle_doc(), oplog={"db1.example.net:27017": OplogProbe(None)})
    db1 = member_named(snap, "db1")
    assert (db1.lag_ms, db1.lag_source, db1.status) == (9_500, "wall", YELLOW)
    assert "nothing unapplied" in str(snap.notes[0])


def test_an_oplog_probe_for_a_caught_up_member_changes_nothing():
    snap = build_snapshot(status(primary(), entry(1)), oplog={"db1.example.net:27017": OplogProbe(DATE_MS - 9_000)})
    assert lag_row(snap, "db1") == (0, 0, "ms", "wall", GREEN)


def test_the_oplog_is_not_used_without_a_primary():
    doc = status(entry(1, self=True), entry(2, behind_ms=9_500))
    snap = build_snapshot(doc, oplog={"db2.example.net:27017": OplogProbe(IDLE_WRITE_MS)})
    assert member_named(snap, "db2").lag_source == "wall"


def test_the_oplog_is_not_used_when_a_secondary_answered_because_its_clock_would_enter():
    doc = status(entry(0, PRIMARY), entry(1, behind_ms=9_500), entry(2, self=True))
    snap = build_snapshot(doc, oplog={"db1.example.net:27017": OplogProbe(IDLE_WRITE_MS)})
    assert member_named(snap, "db1").lag_source == "wall"


def test_the_oplog_is_not_used_without_a_date_to_age_its_entry_against():
    snap = build_snapshot(idle_doc(date=DROP), oplog={"db1.example.net:27017": OplogProbe(IDLE_WRITE_MS)})
    assert member_named(snap, "db1").lag_source == "wall"
    assert any("no date" in str(note) for note in snap.notes)


def test_an_oplog_probe_whose_wall_is_not_a_number_is_distrusted():
    snap = build_snapshot(idle_doc(), oplog={"db1.example.net:27017": OplogProbe("soon")})
    assert member_named(snap, "db1").lag_source == "wall"
    assert texts(snap.notes) == (
        "db1.example.net:27017: the oplog lookup gave no usable wall time; lag from wall times",
    )


def test_members_needing_an_oplog_probe_are_those_behind_the_answering_primary_with_their_optime():
    assert members_needing_oplog_probe(load("replSetGetStatus-7.0-primary-lagging.json")) == {
        "m2.example.net:27017": Timestamp(1723763172, 3),
        "m3.example.net:27017": Timestamp(1723763161, 7),
    }
    # db3 (down), db4 (recovering) and the arbiter have nothing to look up; delayed db2 does.
    assert list(members_needing_oplog_probe(load("replSetGetStatus-7.0-primary-edge-cases.json"))) == [
        "db2.example.net:27017"
    ]


@pytest.mark.parametrize(
    "doc",
    [
        load("replSetGetStatus-7.0-no-primary.json"),
        load("replSetGetStatus-4.4-primary.json"),  # all caught up
        status(entry(0, PRIMARY), entry(1, behind_ms=9_500), entry(2, self=True)),  # a secondary answered
        {"members": "junk"},
        None,
    ],
    ids=["no-primary", "caught-up", "secondary-answered", "junk-members", "none"],
)
def test_no_member_needs_an_oplog_probe_when_the_oplog_could_not_be_used(doc):
    assert members_needing_oplog_probe(doc) == {}


# --- When to re-read the config ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "stale"),
    [
        (None, True),
        ({"_id": "rs0", "version": 7, "term": 3, "members": []}, False),
        ({"_id": "rs0", "version": 6, "term": 3, "members": []}, True),
        ({"_id": "rs0", "version": 7, "term": 4, "members": []}, True),
        ({"_id": "rs0", "version": 7, "members": []}, False),  # before 4.4 there is no config term
        ({"_id": "other", "version": 7, "term": 3, "members": []}, True),
    ],
)
def test_the_config_is_re_read_when_the_answering_member_runs_another_version_or_term(config, stale):
    assert config_is_stale(status(primary(), entry(1)), config) is stale


def test_the_edge_case_config_matches_its_status_document():
    assert config_is_stale(load("replSetGetStatus-7.0-primary-edge-cases.json"), edge_config()) is False


# --- Never raises on odd documents ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (None, "the replSetGetStatus answer is not a document"),
        ([], "the replSetGetStatus answer is not a document"),
        ({}, "the replSetGetStatus answer has no members list"),
        (
            {"ok": 0.0, "errmsg": "not running with --replSet", "code": 76},
            "the replSetGetStatus answer has no members list",
        ),
        ({"set": "rs0", "members": "db0"}, "the replSetGetStatus answer has no members list"),
        ({"set": "rs0", "members": []}, "the replSetGetStatus answer lists no members"),
    ],
)
def test_an_unusable_document_gives_a_red_snapshot_with_the_reason(doc, reason):
    snap = build_snapshot(doc)
    assert (snap.status, snap.reasons, snap.members, snap.reference) == (RED, (reason,), (), "")


def test_a_member_entry_that_is_not_a_document_makes_the_set_red_while_the_others_are_judged():
    snap = build_snapshot(status(primary(), "db1:27017", entry(2, behind_ms=700)))
    assert snap.status == RED
    assert "members[1] is not a document, so one member cannot be judged" in snap.reasons
    assert member_named(snap, "db2").lag_ms == 700


def test_a_document_without_a_date_still_measures_lag_and_says_it_has_no_time():
    snap = build_snapshot(status(primary(), entry(1, behind_ms=700), date=DROP))
    assert (snap.collected_at_ms, member_named(snap, "db1").lag_ms) == (0, 700)
    assert texts(snap.notes) == ("the status document has no usable date; collected_at_ms is 0",)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"health": "1"}, "no health reported"),
        ({"health": None}, "no health reported"),
        ({"state": "2"}, "no valid state reported"),
        ({"state": None, "stateStr": None}, "no valid state reported"),
        ({"state": 42, "stateStr": "FUTURE"}, "FUTURE"),
        ({"optime": "Timestamp(1, 1)"}, "no usable optime"),
        ({"optime": {"ts": None, "t": "3"}}, "no usable optime"),
        ({"optimeDate": "yesterday", "lastAppliedWallTime": 1723763173941}, "no usable optime"),
    ],
)
def test_wrong_types_in_a_member_give_a_reason_not_an_exception(fields, reason):
    db1 = member_named(build_snapshot(status(primary(), entry(1, **fields))), "db1")
    assert (db1.status, db1.reason, db1.lag_ms) == (RED, reason, None)


def test_cosmetic_junk_is_tolerated_with_defaults():
    doc = status(primary(), entry(1, name=None, _id="one", pingMs="fast", syncSourceHost=7, behind_ms=100))
    (db1,) = [m for m in build_snapshot(doc).members if not m.is_primary]
    assert (db1.name, db1.id, db1.ping_ms, db1.sync_source, db1.lag_ms) == ("members[1]", -1, None, "", 100)


@pytest.mark.parametrize("config", ["junk", {"members": "junk"}, {"members": [None, {"host": 3, "slaveDelay": "1h"}]}])
def test_an_unreadable_config_subtracts_no_delay(config):
    snap = build_snapshot(status(primary(), entry(1, behind_ms=6_000)), config)
    assert (member_named(snap, "db1").delay_ms, member_named(snap, "db1").status) == (0, YELLOW)


def test_numbers_arrive_as_int64_or_double_and_read_the_same():
    as_int64 = status(primary(health=Int64(1)), entry(1, behind_ms=1_239, health=Int64(1), pingMs=Int64(3)))
    as_double = status(primary(health=1.0), entry(1, behind_ms=1_239, health=1.0, pingMs=3.0))
    assert build_snapshot(as_int64) == build_snapshot(as_double)


def test_two_members_reporting_one_name_get_names_that_tell_them_apart():
    """Issue 17 item 9: a real server forbids it, but a broken reconfig or a proxy can show one name twice; every
    reader keys members by name (series, oplog lookups, lines), so the engine makes them unique and says why."""
    twin = "db1.example.net:27017"
    doc = status(primary(), entry(1, behind_ms=1_000), entry(2, behind_ms=2_000, name=twin))

    assert len(members_needing_oplog_probe(doc)) == 2
    snapshot = build_snapshot(doc)
    assert [(m.name, m.lag_ms) for m in snapshot.members] == [
        ("db0.example.net:27017", 0),
        (f"{twin}#1", 1_000),
        (f"{twin}#2", 2_000),
    ]
    [note] = [n for n in snapshot.notes if n.kind is NoteKind.DUPLICATE_NAME]
    assert (
        note.text == f"2 members report the name {twin} (a server forbids it: a broken reconfig or a proxy?); "
        f"shown as {twin}#1 and {twin}#2"
    )
    assert snapshot.status is GREEN


# --- Clocks (docs/domain.md §17) -------------------------------------------------------------------------------
PRIMARY_WALL_MS = round(PRIMARY_WALL.timestamp() * 1000)
DB1 = "db1.example.net:27017"


def clock_notes(snapshot: Snapshot) -> list:
    return [note for note in snapshot.notes if note.kind is NoteKind.CLOCK_SKEW]


def test_a_primary_whose_date_was_stepped_back_behind_its_own_writes_keeps_the_real_lag_and_says_so():
    # db1 is 20 s behind; the primary's clock was stepped back 30 s after its newest write, so the §6 measure
    # (date - oldest unapplied wall) is negative and used to be clamped to a GREEN 0 ms with no word.
    doc = status(primary(), entry(1, behind_ms=20_000), date=PRIMARY_WALL - dt.timedelta(seconds=30))
    snap = build_snapshot(doc, oplog={DB1: OplogProbe(PRIMARY_WALL_MS - 20_000 + 1)})
    assert lag_row(snap, "db1") == (20_000, 20_000, "ms", "wall", YELLOW)
    assert snap.status == YELLOW
    (clock,) = clock_notes(snap)
    assert (clock.value("between"), clock.value("behind_ms")) == ("members", 30_000)
    assert clock.text.startswith("the status date of db0.example.net:27017 is 30000 ms behind the newest write")
    assert "the oplog entry's age is not used" in member_named(snap, "db1").reason


@pytest.mark.parametrize(("behind_ms", "noted"), [(2_000, False), (2_001, True)])
def test_a_date_behind_the_newest_write_is_a_clock_problem_beyond_two_seconds(behind_ms, noted):
    date = PRIMARY_WALL - dt.timedelta(milliseconds=behind_ms)
    snap = build_snapshot(status(primary(), entry(1, behind_ms=1_000), date=date))
    assert len(clock_notes(snap)) == (1 if noted else 0)
    assert member_named(snap, "db1").lag_ms == 1_000  # the wall-time lag, whatever the clock


def test_a_secondary_whose_clock_is_behind_the_primary_s_writes_is_noted_and_lags_stay_wall_times():
    doc = status(entry(0, PRIMARY), entry(1, behind_ms=1_000, self=True), date=PRIMARY_WALL - dt.timedelta(seconds=5))
    snap = build_snapshot(doc)
    (clock,) = clock_notes(snap)
    assert (clock.value("between"), clock.value("behind_ms"), clock.value("member")) == (
        "members",
        5_000,
        "db1.example.net:27017",
    )
    assert lag_row(snap, "db1") == (1_000, 1_000, "ms", "wall", GREEN)


@pytest.mark.parametrize(
    ("asked_ms", "offset_ms"),
    [
        ((DATE_MS - 2_000, DATE_MS - 1_000), None),  # the date lies inside the poll, give or take 2 s
        ((DATE_MS + 2_000, DATE_MS + 2_500), None),
        ((DATE_MS + 2_001, DATE_MS + 2_500), -2_001),  # the server's clock behind the exporter's
        ((DATE_MS - 2 * 86_400_000, DATE_MS - 2 * 86_400_000 + 40), 2 * 86_400_000 - 40),  # far in the future
    ],
)
def test_a_date_far_from_the_exporter_s_clock_during_the_poll_is_noted_and_changes_no_lag(asked_ms, offset_ms):
    snap = build_snapshot(idle_doc(), oplog={DB1: OplogProbe(IDLE_WRITE_MS)}, asked_between_ms=asked_ms)
    assert lag_row(snap, "db1") == (300, 300, "ms", "oplog", GREEN)  # both ends of §6 are the server's clock
    found = clock_notes(snap)
    if offset_ms is None:
        assert found == []
    else:
        (clock,) = found
        assert (clock.value("between"), clock.value("offset_ms")) == ("poll_and_server", offset_ms)
        assert ("ahead of" if offset_ms > 0 else "behind") in clock.text
        assert snap.status == GREEN


def test_a_date_far_ahead_of_the_exporter_s_clock_cannot_make_an_oplog_age_larger_than_the_wall_time_lag():
    # The primary's clock jumped two days ahead after its newest write: the §6 age would read two days (RED).
    doc = idle_doc(date=DATE + dt.timedelta(days=2))
    snap = build_snapshot(doc, oplog={DB1: OplogProbe(IDLE_WRITE_MS)}, asked_between_ms=(DATE_MS, DATE_MS + 40))
    assert lag_row(snap, "db1") == (9_500, 9_500, "ms", "wall", YELLOW)
    (clock,) = clock_notes(snap)
    assert (clock.value("between"), clock.value("offset_ms")) == ("poll_and_server", 2 * 86_400_000 - 40)
    assert "capped at the wall-time lag" in member_named(snap, "db1").reason


def test_a_down_arbiter_is_known_by_the_config_though_it_reports_state_8_like_any_down_member():
    """A real server reports an unreachable arbiter as state 8 DOWN with epoch optimes, not 7: only the config's
    arbiterOnly says it holds no data. It is then an arbiter that is not healthy, never a secondary with no lag."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    down_arbiter = entry(
        2, 8, health=0.0, stateStr="(not reachable/healthy)", optime=optime_at(epoch), optimeDate=epoch,
        lastAppliedWallTime=epoch, lastHeartbeatMessage="Error connecting to db2.example.net:27017",
    )  # fmt: skip
    config = {
        "_id": "rs0",
        "version": 3,
        "members": [
            {"_id": 0, "host": "db0.example.net:27017"},
            {"_id": 1, "host": "db1.example.net:27017"},
            {"_id": 2, "host": "db2.example.net:27017", "arbiterOnly": True, "priority": 0},
        ],
    }
    snap = build_snapshot(status(primary(), entry(1, behind_ms=300), down_arbiter), config)

    arbiter = member_named(snap, "db2")
    assert (arbiter.is_arbiter, arbiter.is_data_bearing, arbiter.lag_ms, arbiter.status) == (True, False, None, RED)
    assert arbiter.reason == "DOWN: Error connecting to db2.example.net:27017"
    assert snap.status is RED and snap.reasons == (
        "db2.example.net:27017: DOWN: Error connecting to db2.example.net:27017",
    )
    without_config = member_named(build_snapshot(status(primary(), entry(1, behind_ms=300), down_arbiter)), "db2")
    assert not without_config.is_arbiter  # nothing else tells an arbiter that cannot be reached
