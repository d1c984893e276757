"""Hand-built snapshots, failures and store views for the readers' tests (bridge, metrics, web).

Most values are built directly from the `replset` dataclasses, so the readers are tested against exactly the
snapshot each test names; `fixture_snapshot` runs the real engine on a checked-in document, so the readers'
wording is also tested against the engine's. Views come from the real `SnapshotStore`, driven by a fake clock,
so staleness is the store's own rule.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from pathlib import Path

from bson import json_util
from bson.json_util import JSONOptions

from replicationlag.model import (
    ARBITER,
    PRIMARY,
    SECONDARY,
    STATE_NAMES,
    ClusterResult,
    Failure,
    FailureKind,
    Member,
    Note,
    NoteKind,
    SetAddress,
    SetRole,
    ShardMap,
    Snapshot,
    Status,
    status_for_lag,
)
from replicationlag.replset import build_snapshot
from replicationlag.store import SnapshotStore
from replicationlag.view import View

COLLECTED_AT_MS = 1_723_763_174_512  # 2024-08-15T23:06:14.512Z, the synthetic fixtures' `date`
FIXTURES = Path(__file__).parent / "fixtures"


class FakeClock:
    """Mimics `time.monotonic()` / `time.time()`: returns a number that moves only when the test advances it."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def member(
    name: str,
    state: int = SECONDARY,
    lag_ms: int | None = 0,
    *,
    id: int = 0,
    healthy: bool = True,
    reason: str = "",
    **fields,
) -> Member:
    """A member judged the way the lag engine judges: RED by health/state, else by its effective lag."""
    if not healthy or state not in (PRIMARY, SECONDARY, ARBITER):
        status = Status.RED
    elif lag_ms is None:
        status = Status.GREEN
    else:
        status = status_for_lag(lag_ms)
    fields.setdefault("precision", None if lag_ms is None else "ms")
    fields.setdefault("raw_lag_ms", None if lag_ms is None else lag_ms + fields.get("delay_ms", 0))
    return Member(
        id=id,
        name=name,
        state=state,
        state_str=STATE_NAMES.get(state, "UNKNOWN"),
        healthy=healthy,
        is_self=state == PRIMARY,
        lag_ms=lag_ms,
        status=fields.pop("status", status),
        notes=fields.pop("notes", notes_of(name, reason)),
        **fields,
    )


_NOTE_STARTS = (
    (re.compile(r"^\d+ ms behind"), NoteKind.BEHIND),
    (re.compile(r"^DOWN: "), NoteKind.DOWN),
    (re.compile(r"^oplog written "), NoteKind.APPLY_BOTTLENECK),
    (re.compile(r"^oplog lookup failed"), NoteKind.OPLOG_FALLBACK),
)


def notes_of(name: str, reason: str) -> tuple[Note, ...]:
    """The notes the engine would give for `reason` ("; "-separated sentences in its words), each of its kind."""
    notes = []
    for part in filter(None, reason.split("; ")):
        kind = next((kind for pattern, kind in _NOTE_STARTS if pattern.match(part)), NoteKind.STATE)
        notes.append(Note(kind, part, name))
    return tuple(notes)


def primary(name: str = "db0:27017", **fields) -> Member:
    return member(name, PRIMARY, 0, **fields)


def snapshot(*members: Member, set_name: str = "rs0", collected_at_ms: int = COLLECTED_AT_MS) -> Snapshot:
    """A set of the given members; the primary (if any) is the reference, else the first healthy member."""
    members = tuple(replace(m, id=i) for i, m in enumerate(members))
    primaries = [m for m in members if m.is_primary]
    if primaries:
        reference, reference_member = "primary", primaries[0].name
    else:
        healthy = [m for m in members if m.healthy and m.is_data_bearing]
        reference, reference_member = ("freshest", healthy[0].name) if healthy else ("", "")
    status = max([m.status for m in members] + ([] if primaries else [Status.RED]), default=Status.RED)
    reasons = tuple(f"{m.name} is {m.status.name}" for m in members if m.status is not Status.GREEN)
    return Snapshot(
        set_name=set_name,
        answered_by=members[0].name,
        reference=reference,
        reference_member=reference_member,
        has_primary=bool(primaries),
        status=status,
        reasons=(("no primary",) if not primaries else ()) + reasons,
        members=members,
        collected_at_ms=collected_at_ms,
    )


def healthy_set(*lags_ms: int) -> Snapshot:
    """A primary db0 and one secondary db1, db2, ... per lag."""
    return snapshot(primary(), *(member(f"db{i}:27017", lag_ms=lag) for i, lag in enumerate(lags_ms, start=1)))


def failure(kind: str = "auth", message: str = "authentication failed for user 'monitor'") -> Failure:
    return Failure(kind=FailureKind(kind), message=message, at_ms=COLLECTED_AT_MS + 60_000)


def make_store(*results: Snapshot | Failure, interval_s: float = 60) -> tuple[SnapshotStore, FakeClock]:
    """A real store that has published `results` in order, with its fake clock (advance it to age the data)."""
    clock = FakeClock()
    store = SnapshotStore("clusterKeeper", interval_s, monotonic=clock, wall=lambda: 1_723_763_175.0)
    for result in results:
        store.publish(result, duration_s=0.042)
    return store, clock


def view_of(*results: Snapshot | Failure, age_s: float = 0.0) -> View:
    """The view a reader gets after `results` were published and `age_s` seconds went by."""
    store, clock = make_store(*results)
    clock.advance(age_s)
    return store.view()


def fixture_snapshot(status_file: str, config_file: str | None = None) -> Snapshot:
    """The real engine's snapshot of a checked-in replSetGetStatus document (and replSetGetConfig)."""
    options = JSONOptions(tz_aware=True, tzinfo=dt.UTC)
    status, config = (
        (json_util.loads((FIXTURES / name).read_text(), json_options=options) if name else None)
        for name in (status_file, config_file)
    )
    return build_snapshot(status, config["config"] if config else None)


def engine_snapshot(
    status_file: str = "replSetGetStatus-7.0-primary-edge-cases.json",
    config_file: str | None = "replSetGetConfig-7.0-edge-cases.json",
    *,
    rename: tuple[str, str] = ("", ""),
    edit=None,
) -> Snapshot:
    """The real engine's snapshot of a checked-in document, its hosts renamed (`rename`: old, new text, in the
    status and the config alike) and `edit(status, config)` applied first: what a server could have said."""
    options = JSONOptions(tz_aware=True, tzinfo=dt.UTC)
    old, new = rename
    status, config = (
        json_util.loads(
            (FIXTURES / name).read_text().replace(old, new) if old else (FIXTURES / name).read_text(),
            json_options=options,
        )
        if name
        else None
        for name in (status_file, config_file)
    )
    if edit is not None:
        edit(status, config)
    return build_snapshot(status, config["config"] if config else None)


def cluster_store(
    *results: tuple[SetAddress, Snapshot | Failure],
    polls: int = 1,
    step_s: float = 60.0,
    wall_s: float = 1_723_763_175.0,
) -> tuple[SnapshotStore, FakeClock]:
    """A real store that has published the same cluster poll `polls` times, `step_s` apart (both of its clocks
    move), with its monotonic clock."""
    clock = FakeClock()
    start = clock.now
    store = SnapshotStore("clusterKeeper", 60, monotonic=clock, wall=lambda: wall_s + clock.now - start)
    shard_map = ShardMap(tuple(address for address, _ in results), "getShardMap", True)
    for poll in range(polls):
        if poll:
            clock.advance(step_s)
        store.publish(ClusterResult(shard_map, None, tuple(results)), duration_s=0.5)
    return store, clock


def shard(number: int, *, name: str | None = None, role: SetRole = SetRole.SHARD) -> SetAddress:
    """The address of shard `number` (`shard7`, replica set `shard7`, not zero-padded: natural order matters)."""
    shard_id = name if name is not None else f"shard{number}"
    return SetAddress(shard_id, (f"s{number}db0.example.net:27017",), role, shard_id=shard_id)
