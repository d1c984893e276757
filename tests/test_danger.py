"""How dangerous a lag is, judged by the engine (build_snapshot runs danger.assess before the set's one verdict) on
status documents of the members asked for and hand-made evidence: oplog windows and fullness, headroom
under direct and chained replication and for a delayed member, the alarm only against a full oplog, initial-sync
progress per server version, flow control, the majority commit lag from a real primary's document."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from test_replset import load
from view_factory import member, primary, snapshot

from replicationlag.danger import Evidence, MemberEvidence, flow_control, initial_sync, oplog_window
from replicationlag.model import NoteKind, Status
from replicationlag.replset import build_snapshot
from replicationlag.words import duration_words

T0 = dt.datetime(2024, 8, 15, 23, 6, 14, 512000, tzinfo=dt.UTC)
HOUR_MS = 3_600_000


def entry(ms_before_t0: int) -> dict:
    return {"ts": None, "wall": T0 - dt.timedelta(milliseconds=ms_before_t0)}


def window(newest_ms_before: int, span_ms: int, *, full: bool | None = True) -> MemberEvidence:
    """A member whose newest entry is `newest_ms_before` T0 and whose oplog spans `span_ms`."""
    stats = None if full is None else {"size": 1000 if full else 10, "maxSize": 1000}
    return MemberEvidence(oldest=entry(newest_ms_before + span_ms), newest=entry(newest_ms_before), stats=stats)


def test_a_window_is_newest_minus_oldest_wall_in_exact_ms_and_full_only_at_its_maximum_size():
    assert oplog_window(window(0, 5 * HOUR_MS + 1)).window_ms == 5 * HOUR_MS + 1
    assert oplog_window(window(0, 1_000)).full is True
    assert oplog_window(window(0, 1_000, full=False)).full is False
    assert oplog_window(window(0, 1_000, full=None)).full is None
    assert oplog_window(MemberEvidence(oldest=entry(10))) is None  # no newest entry read: no window


def judged_set(*members, evidence=None, commit_lag_ms=0, **windows):
    """The engine's snapshot of a set of these members, judged with what a poll's danger reads found: `evidence`,
    or the oplogs of the members named as keywords (member name with _ for :)."""
    if evidence is None:
        evidence = Evidence({name.replace("_", ":"): found for name, found in windows.items()})
    return snapshot(*members, commit_lag_ms=commit_lag_ms, evidence=evidence)


def by_name(snap, name):
    return next(m for m in snap.members if m.name == name)


def test_headroom_is_the_primary_window_minus_the_raw_lag_and_a_big_one_raises_nothing():
    judged = judged_set(
        primary("p:1"),
        member("s:1", lag_ms=21_233),
        p_1=window(0, 5 * HOUR_MS),
        s_1=window(21_233, 5 * HOUR_MS),
    )
    secondary = by_name(judged, "s:1")
    assert secondary.headroom_ms == 5 * HOUR_MS - 21_233
    assert secondary.status is Status.YELLOW  # by its lag, not by its headroom
    assert not secondary.has_note(NoteKind.HEADROOM_LOW)


@pytest.mark.parametrize(
    ("raw_lag_ms", "status"),
    [(0.74 * HOUR_MS, Status.GREEN), (0.76 * HOUR_MS, Status.YELLOW), (0.91 * HOUR_MS, Status.RED)],
)
def test_a_delayed_member_needs_room_for_its_delay_and_small_headroom_raises_it(raw_lag_ms, status):
    raw = int(raw_lag_ms)
    delayed = member("d:1", lag_ms=1_000, delay_ms=raw - 1_000, raw_lag_ms=raw)  # 1 s beyond its delay: GREEN
    judged = by_name(judged_set(primary("p:1"), delayed, p_1=window(0, HOUR_MS)), "d:1")
    assert judged.headroom_ms == HOUR_MS - raw
    assert judged.status is status
    if status is not Status.GREEN:
        assert judged.reason.startswith(f"oplog headroom {duration_words(HOUR_MS - raw)}, ")
        assert "of the primary's 1 h window" in judged.reason


def test_under_chained_replication_the_headroom_is_against_the_sync_source_not_the_primary():
    source = member("s1:1", lag_ms=1_000)
    chained = replace(member("s2:1", lag_ms=10_500), sync_source="s1:1")
    judged = judged_set(
        primary("p:1"),
        source,
        chained,
        p_1=window(0, 10 * HOUR_MS),
        s1_1=window(1_000, 10_000),  # a small oplog on the middle member
    )
    # s2 is at T0-10.5 s; s1's oldest entry is T0-11 s: 0.5 s left before s2 needs what s1 no longer has.
    assert by_name(judged, "s2:1").headroom_ms == 500
    assert by_name(judged, "s2:1").status is Status.RED  # YELLOW by its lag, RED by its headroom
    assert "s1:1's 10 s window" in by_name(judged, "s2:1").reason
    assert (judged.status, judged.reasons[0]) == (Status.RED, f"s2:1: {by_name(judged, 's2:1').reason}")
    assert by_name(judged, "s1:1").headroom_ms == 10 * HOUR_MS - 1_000


def test_a_not_yet_full_oplog_is_not_a_limit_its_headroom_raises_no_alarm():
    judged = judged_set(
        primary("p:1"), member("s:1", lag_ms=3_000), p_1=window(0, 10_000, full=False), s_1=window(3_000, 7_000)
    )
    secondary = by_name(judged, "s:1")
    assert secondary.headroom_ms == 7_000
    assert secondary.sync_source_full is False
    assert secondary.status is Status.GREEN


def test_without_the_source_window_there_is_no_headroom_and_nothing_changes():
    judged = judged_set(primary("p:1"), member("s:1", lag_ms=1_000), s_1=window(1_000, HOUR_MS))
    assert by_name(judged, "s:1").headroom_ms is None
    assert judged.status is snapshot(primary("p:1"), member("s:1", lag_ms=1_000)).status


def test_a_member_whose_oplog_could_not_be_read_says_why():
    unread = MemberEvidence(unread="its oplog could not be read in time")
    judged = judged_set(primary("p:1"), member("s:1", lag_ms=1_000), s_1=unread)
    assert by_name(judged, "s:1").reason == "its oplog could not be read in time"
    assert judged.status is Status.GREEN


STATUS_4_4 = {
    "initialSyncStatus": {
        "failedInitialSyncAttempts": 1,
        "totalInitialSyncElapsedMillis": 5_400_000,
        "databases": {"databasesToClone": 7, "databasesCloned": 3, "app": {}},
    }
}
STATUS_6_0 = {
    "initialSyncStatus": {
        "failedInitialSyncAttempts": 0,
        "totalInitialSyncElapsedMillis": 3_000_000,
        "approxTotalDataSize": 1000,
        "approxTotalBytesCopied": 430,
        "remainingInitialSyncEstimatedMillis": 7_200_000,
        "databases": {"databasesToClone": 2, "databasesCloned": 0},
    }
}


@pytest.mark.parametrize(
    ("own_status", "reason", "progress"),
    [
        (STATUS_6_0, "STARTUP2: initial sync 43%, about 2 h left", 0.43),
        (
            STATUS_4_4,
            "STARTUP2: initial sync 42% (3 of 7 databases cloned), running for 1 h 30 min (the server gives no "
            "estimate); 1 failed attempt so far",
            3 / 7,
        ),
        ({"initialSyncStatus": {}}, "STARTUP2: initial sync", None),
    ],
)
def test_a_member_in_initial_sync_shows_its_progress_instead_of_a_bare_state(own_status, reason, progress):
    syncing = member("s:1", 5, None, reason="STARTUP2")
    judged = by_name(judged_set(primary("p:1"), syncing, s_1=MemberEvidence(own_status=own_status)), "s:1")
    assert judged.reason == reason
    assert judged.initial_sync.progress == pytest.approx(progress) if progress else judged.initial_sync.progress is None
    assert judged.status is Status.RED  # still not a data-serving member


def test_initial_sync_status_is_read_defensively():
    assert initial_sync(None) is None and initial_sync({"initialSyncStatus": "junk"}) is None
    assert initial_sync(STATUS_6_0).remaining_ms == 7_200_000


def test_flow_control_is_read_from_server_status_with_its_counters_in_seconds():
    found = flow_control(
        {
            "flowControl": {
                "enabled": True,
                "targetRateLimit": 950,
                "timeAcquiringMicros": 2_000_000,
                "isLagged": True,
                "isLaggedCount": 3,
                "isLaggedTimeMicros": 1_500_000,
            }
        }
    )
    assert (found.enabled, found.engaged, found.target_rate) == (True, True, 950)
    assert (found.lagged_count, found.lagged_time_s, found.acquiring_time_s) == (3, 1.5, 2.0)
    assert flow_control({}) is None and flow_control({"flowControl": {"enabled": "yes"}}) is None


def test_engaged_flow_control_and_a_trailing_commit_point_are_set_lines_that_change_no_colour():
    engaged = Evidence(server_status={"flowControl": {"enabled": True, "isLagged": True}})
    judged = judged_set(primary("p:1"), member("s:1", lag_ms=10), evidence=engaged, commit_lag_ms=12_345)
    kinds = [n.kind for n in judged.notes]
    assert kinds == [NoteKind.MAJORITY_COMMIT_LAG, NoteKind.FLOW_CONTROL_ENGAGED]
    assert 'w: "majority" writes wait' in str(judged.notes[0])
    assert judged.status is Status.GREEN


def test_a_commit_point_under_5_s_says_nothing():
    assert judged_set(primary("p:1"), commit_lag_ms=4_999).notes == ()


def test_the_majority_commit_lag_comes_from_the_primary_s_own_optimes():
    lagging = build_snapshot(load("replSetGetStatus-7.0-primary-lagging.json"))
    assert lagging.majority_commit_lag_ms is not None and lagging.majority_commit_lag_ms >= 0
    secondary_view = build_snapshot(load("replSetGetStatus-4.4-secondary.json"))
    assert secondary_view.majority_commit_lag_ms is None  # a secondary's view of the commit point trails


def test_a_refused_read_is_said_once_for_the_set():
    grant = "oplog windows need read on the local database: grant the monitoring user read on local"
    judged = judged_set(primary("p:1"), member("s:1"), member("s2:1"), evidence=Evidence(missing=(grant,)))
    assert [str(n) for n in judged.notes] == [grant]
