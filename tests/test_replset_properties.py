"""Invariants of the lag engine over generated replica sets: every server version from 4.0 to 8.0, every state,
down members, arbiters, delays, lags from 0 to hours, with and without a primary, and junk where numbers and
dates should be.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bson import Int64, Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from replicationlag.model import ARBITER, PRIMARY, SECONDARY, STATE_NAMES, OplogProbe, Snapshot, Status, status_for_lag
from replicationlag.replset import build_snapshot, members_needing_oplog_probe

FAST = settings(max_examples=200, deadline=None)
TIP = dt.datetime(2024, 8, 15, 23, 6, 13, 941_000, tzinfo=dt.UTC)  # the primary's last applied op
DATE = TIP + dt.timedelta(milliseconds=571)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
VERSIONS = ["4.0", "4.4", "5.0", "6.0", "7.0", "8.0"]
HOURS_MS = 4 * 3_600_000

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=6),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.just(EPOCH),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.builds(Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["ts", "t", "x"]), st.integers() | st.none(), max_size=2),
)


def optime_at(wall: dt.datetime, term: int = 3) -> dict[str, Any]:
    """An optime consistent with `wall`: later walls give later optimes, as in a real oplog."""
    return {"ts": Timestamp(int(wall.timestamp()), wall.microsecond // 1000 + 1), "t": Int64(term)}


def member_entry(member_id: int, state: int, health: Any, behind_ms: int, version: str) -> dict[str, Any]:
    """A members[] entry as a server of `version` writes it; down members carry the epoch, arbiters no optime."""
    wall = TIP - dt.timedelta(milliseconds=behind_ms)
    doc: dict[str, Any] = {
        "_id": member_id,
        "name": f"db{member_id}:27017",
        "health": health,
        "state": state,
        "stateStr": STATE_NAMES.get(state, "?"),
        "optime": optime_at(wall),
        "optimeDate": wall.replace(microsecond=0),
        "lastAppliedWallTime": wall,
        "syncSourceHost": "db0:27017",
        "pingMs": Int64(2),
        "configVersion": 1,
    }
    if health != 1 or state == 8:
        doc.update(optime={"ts": Timestamp(0, 0), "t": Int64(-1)}, optimeDate=EPOCH, lastAppliedWallTime=EPOCH)
    if state == ARBITER:
        for key in ("optime", "optimeDate", "lastAppliedWallTime"):
            doc.pop(key)
    if version == "4.0":
        doc.pop("lastAppliedWallTime", None)
        doc["syncingTo"] = doc.pop("syncSourceHost")
    if version == "8.0" and "optime" in doc:
        doc.update(optimeWritten=doc["optime"], lastWrittenWallTime=doc.get("lastAppliedWallTime"))
    return doc


@st.composite
def replica_sets(draw: st.DrawFn, junk_fields: bool = False) -> tuple[dict, dict | None, dict]:
    """(status document, config sub-document or None, oplog probes)."""
    version = draw(st.sampled_from(VERSIONS))
    count = draw(st.integers(1, 7))
    ids = draw(st.lists(st.integers(0, 50), min_size=count, max_size=count, unique=True))
    with_primary = draw(st.booleans())
    members = []
    for index, member_id in enumerate(ids):
        if with_primary and index == 0:
            state, health, behind = PRIMARY, 1, 0
        else:
            state = draw(st.sampled_from([SECONDARY, SECONDARY, SECONDARY, 0, 3, 5, 6, 7, 8, 9, 10]))
            health = draw(st.sampled_from([1, 1.0, Int64(1), 1, 0]))
            behind = draw(st.integers(-5_000, HOURS_MS) | st.sampled_from([0, 4_999, 5_000, 29_999, 30_000]))
        entry = member_entry(member_id, state, health, behind, version)
        for key in draw(st.lists(st.sampled_from(sorted(entry)), max_size=3)):
            entry.pop(key, None)  # every field is optional (docs/domain.md §1)
        if junk_fields:
            for key in draw(st.lists(st.sampled_from([*sorted(entry), "self", "optimeWritten"]), max_size=4)):
                entry[key] = draw(junk)
        members.append(entry)
    members[draw(st.integers(0, count - 1))]["self"] = True
    delay_field = "slaveDelay" if version in {"4.0", "4.4"} else "secondaryDelaySecs"
    config = None
    if draw(st.booleans()):
        config = {
            "_id": "rs0",
            "version": 1,
            "members": [
                {"_id": i, "host": f"db{i}:27017", delay_field: draw(st.sampled_from([0, 0, 60, 3600]))} for i in ids
            ],
        }
    probes = {
        name: draw(st.builds(OplogProbe, st.none() | st.integers(0, 2 * 10**12), st.sampled_from(["", "", "denied"])))
        for name in draw(st.lists(st.sampled_from([f"db{i}:27017" for i in ids]), max_size=3))
    }
    doc = {"set": "rs0", "date": DATE, "myState": 1 if with_primary else 2, "members": members, "ok": 1.0}
    return doc, config, probes


def usable_optime(entry: dict[str, Any]) -> bool:
    """docs/domain.md §3, written independently of the engine: healthy PRIMARY/SECONDARY with a real optime and date."""
    health, state, optime = entry.get("health"), entry.get("state"), entry.get("optime")
    if isinstance(health, bool) or health != 1 or isinstance(state, bool) or state not in (PRIMARY, SECONDARY):
        return False
    ts = optime.get("ts") if isinstance(optime, dict) else optime
    if not isinstance(ts, Timestamp) or ts.time == 0:
        return False
    dates = [entry.get("optimeDate"), entry.get("lastAppliedWallTime")]
    return any(isinstance(d, dt.datetime) and d.replace(tzinfo=d.tzinfo or dt.UTC) > EPOCH for d in dates)


def check_invariants(snap: Snapshot, doc: dict[str, Any]) -> None:
    entries = {e.get("name"): e for e in doc["members"] if isinstance(e, dict) and isinstance(e.get("name"), str)}
    for m in snap.members:
        assert m.lag_ms is None or m.lag_ms >= 0
        assert m.raw_lag_ms is None or m.raw_lag_ms >= 0
        assert (m.lag_ms is None) == (m.raw_lag_ms is None) == (m.precision is None) == (m.lag_source is None)
        if m.lag_ms is not None:
            assert m.lag_ms <= m.raw_lag_ms
            assert m.lag_ms == max(0, m.raw_lag_ms - m.delay_ms)
            assert m.precision == ("s" if m.lag_source == "optimeDate" else "ms")
            assert m.status >= status_for_lag(m.lag_ms)
        if m.name in entries and not usable_optime(entries[m.name]):
            assert m.lag_ms is None, m
        if m.is_arbiter:
            assert m.lag_ms is None
        if m.status is not Status.GREEN:
            assert m.reason
        assert m.written_lag_ms is None or m.written_lag_ms >= 0
    worst = max((m.status for m in snap.members), default=Status.GREEN)
    assert snap.status >= worst
    if snap.has_primary and all(isinstance(e, dict) for e in doc["members"]):
        assert snap.status == worst
    if not snap.has_primary:
        assert snap.status is Status.RED
        assert "no primary" in snap.reasons or not snap.members
    assert bool(snap.reasons) == (snap.status is not Status.GREEN)
    order = [(not m.is_primary, m.id) for m in snap.members]
    assert order == sorted(order)


@FAST
@given(replica_sets())
def test_generated_sets_keep_every_invariant(case):
    doc, config, probes = case
    check_invariants(build_snapshot(doc, config, probes), doc)


@FAST
@given(replica_sets(junk_fields=True))
def test_junk_in_member_fields_never_raises_and_keeps_every_invariant(case):
    doc, config, probes = case
    check_invariants(build_snapshot(doc, config, probes), doc)
    assert isinstance(members_needing_oplog_probe(doc), dict)


@FAST
@given(
    st.recursive(junk, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner)),
    st.one_of(junk, st.lists(junk | st.dictionaries(st.text(max_size=8), junk), max_size=3)),
    junk | st.dictionaries(st.text(max_size=8), junk),
    junk | st.dictionaries(st.text(max_size=4), junk),
)
def test_any_document_shape_gives_a_snapshot_never_an_exception(doc, members, config, oplog):
    if isinstance(doc, dict) and members is not None:
        doc["members"] = members
    snap = build_snapshot(doc, config, oplog)
    assert isinstance(snap, Snapshot)
    assert bool(snap.reasons) == (snap.status is not Status.GREEN)
    assert isinstance(members_needing_oplog_probe(doc), dict)


@FAST
@given(
    version=st.sampled_from(VERSIONS),
    lags=st.lists(st.integers(0, HOURS_MS), min_size=1, max_size=6),
    delays_s=st.lists(st.sampled_from([0, 1, 60, 3600]), min_size=6, max_size=6),
)
def test_with_a_primary_every_secondary_lag_is_the_exact_wall_difference_minus_its_delay(version, lags, delays_s):
    members = [member_entry(0, PRIMARY, 1, 0, version) | {"self": True}]
    members += [member_entry(i, SECONDARY, 1, behind, version) for i, behind in enumerate(lags, start=1)]
    config = {"members": [{"_id": i, "secondaryDelaySecs": delays_s[i - 1]} for i in range(1, len(lags) + 1)]}
    snap = build_snapshot({"set": "rs0", "date": DATE, "members": members}, config)
    for m, behind, delay_s in zip(snap.members[1:], lags, delays_s, strict=False):
        if version == "4.0":  # no wall times: whole seconds from optimeDate, marked as such
            wall = TIP - dt.timedelta(milliseconds=behind)
            expected_raw = int((TIP.replace(microsecond=0) - wall.replace(microsecond=0)).total_seconds()) * 1000
            assert m.precision == "s"
        else:
            expected_raw = behind
            assert (m.precision, m.lag_source) == ("ms", "wall")
        assert (m.raw_lag_ms, m.lag_ms) == (expected_raw, max(0, expected_raw - delay_s * 1000))
        assert m.status == status_for_lag(m.lag_ms)
    assert snap.status == max(status_for_lag(m.lag_ms) for m in snap.members)
