"""Snapshots, failures and store views for the readers' tests (bridge, metrics, web), built by the real engine.

A test names the members it wants (`member`, `primary`, `healthy_set`); `snapshot` writes the replSetGetStatus
document a 5.0+ server would send for them (and the replSetGetConfig `config` for hidden, delay, priority, votes
and tags) with the document builders of tests/test_replset.py, and runs it through `replset.build_snapshot`. So a
reader is tested on the sentences users see ("db1:27017: 7777 ms behind the primary", "DOWN: <heartbeat
message>"), never on words the engine does not produce. tests/test_view_factory.py checks that the documents make
the engine measure the lags and say the reasons the tests ask for. `fixture_snapshot` runs the engine on a
checked-in document. Views come from the real `SnapshotStore`, driven by a fake clock, so staleness is the store's
own rule.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson import Int64, Timestamp, json_util
from bson.json_util import JSONOptions
from test_replset import DATE, DROP, PRIMARY_WALL, entry, optime_at
from test_replset import status as status_document

from replicationlag.danger import Evidence
from replicationlag.model import (
    ARBITER,
    PRIMARY,
    RECOVERING,
    SECONDARY,
    STATE_NAMES,
    ClusterResult,
    Failure,
    FailureKind,
    OplogProbe,
    SetAddress,
    SetRole,
    ShardMap,
    Snapshot,
)
from replicationlag.replset import build_snapshot
from replicationlag.store import SnapshotStore
from replicationlag.view import View

COLLECTED_AT_MS = 1_723_763_174_512  # 2024-08-15T23:06:14.512Z, the synthetic fixtures' `date`
FIXTURES = Path(__file__).parent / "fixtures"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The primary applied its last op this long before the document's `date` (as in the fixtures).
PRIMARY_WALL_BEFORE_DATE = DATE - PRIMARY_WALL
DOWN, ROLLBACK = 8, 9
_BEHIND_WHEN_NOT_SAID_MS = 96_000  # a RECOVERING or ROLLBACK member's optime when the test gives no lag
_LAG_STATES = (PRIMARY, SECONDARY)
_OPTIME_STATES = (PRIMARY, SECONDARY, RECOVERING, ROLLBACK)  # states whose members report real optimes


class FakeClock:
    """Mimics `time.monotonic()` / `time.time()`: returns a number that moves only when the test advances it."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class MemberAsked:
    """What a test asks of one member; `snapshot` writes the status-document entry that makes the engine say it.

    `lag_ms` is the effective lag (beyond any delay), exactly what the engine computes. `reason` becomes the server's
    own message for a member that is not healthy or in a state without lag (`lastHeartbeatMessage`, `infoMessage`;
    the engine's "DOWN: " / "STATE: " in front is taken off, and its default words give no message). A lagging
    member's reason is the engine's alone: it only says which 8.0 written lag to report (`member` reads it).
    """

    name: str
    state: int = SECONDARY
    lag_ms: int | None = 0
    id: int = 0  # kept for the callers' signature: `_id`s follow the order members are given to `snapshot`
    healthy: bool = True
    reason: str = ""
    hidden: bool = False
    priority: float | None = None  # None: what a server requires (0 for hidden, delayed, arbiter), else 1
    votes: int = 1
    delay_ms: int = 0
    raw_lag_ms: int | None = None  # behind before the delay; default lag_ms + delay_ms (engine: max(0, raw - delay))
    precision: str | None = None  # "s": the server sends no wall times, so the engine falls back to optimeDate
    written_lag_ms: int | None = None  # 8.0: how far behind it is in writing the oplog
    sync_source: str | None = None  # None: the primary, as a secondary's default
    ping_ms: int = 1
    tags: tuple[tuple[str, str], ...] | dict[str, str] = field(default=())

    @property
    def is_primary(self) -> bool:
        return self.state == PRIMARY

    @property
    def behind_ms(self) -> int | None:
        """How far behind the reference its last applied op was written (before the delay), or None."""
        if self.raw_lag_ms is not None:
            return self.raw_lag_ms
        return None if self.lag_ms is None else self.lag_ms + self.delay_ms


def member(
    name: str,
    state: int = SECONDARY,
    lag_ms: int | None = 0,
    *,
    id: int = 0,
    healthy: bool = True,
    reason: str = "",
    **fields: Any,
) -> MemberAsked:
    """A member a test asks for: `snapshot` lets the engine judge it (RED by health/state, else by its lag).

    A `reason` naming the 8.0 written lag ("oplog written 0 ms behind, ...") asks for that written lag."""
    written = re.search(r"oplog written (\d+) ms behind", reason)
    if written and "written_lag_ms" not in fields:
        fields["written_lag_ms"] = int(written.group(1))
    return MemberAsked(name, state, lag_ms, id=id, healthy=healthy, reason=reason, **fields)


def primary(name: str = "db0:27017", **fields: Any) -> MemberAsked:
    return member(name, PRIMARY, 0, **fields)


def _date_of(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _server_message(asked: MemberAsked, state_words: str) -> str:
    """The server message that makes the engine say `asked.reason` of a member without lag ("" for its default)."""
    text = asked.reason
    for words in (state_words, "DOWN"):
        if text.startswith(f"{words}: "):
            return text[len(words) + 2 :]
    return "" if text in (state_words, "not reachable", "") else text


def _epoch_optimes() -> dict[str, Any]:
    """What a server reports for a member it has no optime of (down, starting, in initial sync)."""
    return {
        "optime": {"ts": Timestamp(0, 0), "t": Int64(-1)},
        "optimeDate": EPOCH,
        "lastAppliedWallTime": EPOCH,
    }


def _applied(reference_wall: dt.datetime, behind_ms: int, precision: str | None) -> dict[str, Any]:
    """Optime fields `behind_ms` behind the reference; with precision "s", no wall time, only whole-second dates."""
    if precision == "s":
        if behind_ms % 1000:
            raise ValueError(f"optimeDate has whole seconds: a lag of {behind_ms} ms cannot be measured from it")
        date = reference_wall.replace(microsecond=0) - dt.timedelta(milliseconds=behind_ms)
        return {"optime": optime_at(date), "optimeDate": date, "lastAppliedWallTime": DROP}
    wall = reference_wall - dt.timedelta(milliseconds=behind_ms)
    return {"optime": optime_at(wall), "optimeDate": wall.replace(microsecond=0), "lastAppliedWallTime": wall}


def _written(reference_wall: dt.datetime, behind_ms: int) -> dict[str, Any]:
    wall = reference_wall - dt.timedelta(milliseconds=behind_ms)
    return {"optimeWritten": optime_at(wall), "lastWrittenWallTime": wall}


def _entry(
    index: int, asked: MemberAsked, *, reference_wall: dt.datetime, is_self: bool, primary_name: str, writes: bool
) -> dict[str, Any]:
    """The members[] entry a 5.0+ server writes for `asked` (8.0 written fields when `writes`)."""
    state, words = asked.state, STATE_NAMES.get(asked.state, "UNKNOWN")
    fields: dict[str, Any] = {"name": asked.name, "pingMs": Int64(asked.ping_ms)}
    if is_self:
        fields.update(self=True, pingMs=DROP)  # the answering member reports no heartbeat of itself
    sync_source = asked.sync_source
    if sync_source is None:
        sync_source = primary_name if state == SECONDARY and asked.healthy and primary_name != asked.name else ""
    fields["syncSourceHost"] = sync_source
    if not asked.healthy:
        if state == ARBITER:  # a real server reports an unreachable arbiter as DOWN: only the config says arbiter
            state = DOWN
        fields.update(health=0.0, lastHeartbeatMessage=_server_message(asked, words), syncSourceHost="")
        if state == DOWN:
            fields["stateStr"] = "(not reachable/healthy)"
        fields.update(_epoch_optimes())
    elif state == ARBITER:
        pass  # entry() gives an arbiter no optime fields
    elif state not in _OPTIME_STATES:
        fields.update(_epoch_optimes(), infoMessage=_server_message(asked, words))
    elif state not in _LAG_STATES:
        behind = asked.behind_ms if asked.behind_ms is not None else _BEHIND_WHEN_NOT_SAID_MS
        fields.update(_applied(reference_wall, behind, None), infoMessage=_server_message(asked, words))
    elif asked.behind_ms is None:
        fields.update(_epoch_optimes())
    else:
        fields.update(_applied(reference_wall, asked.behind_ms, asked.precision))
        if writes:
            fields.update(_written(reference_wall, asked.written_lag_ms or 0))
    return entry(index, state, **fields)


def _config_member(index: int, asked: MemberAsked) -> dict[str, Any]:
    delay_s = asked.delay_ms / 1000
    priority = asked.priority
    if priority is None:
        priority = 0 if asked.hidden or asked.delay_ms or asked.state == ARBITER else 1
    return {
        "_id": index,
        "host": asked.name,
        "arbiterOnly": asked.state == ARBITER,
        "buildIndexes": True,
        "hidden": asked.hidden,
        "priority": priority,
        "tags": dict(asked.tags),
        "secondaryDelaySecs": Int64(delay_s) if delay_s.is_integer() else delay_s,
        "votes": asked.votes,
    }


def _answering(members: tuple[MemberAsked, ...]) -> int:
    """The index of the member that answers: the primary, else the first healthy data-bearing member."""
    for wanted in (
        lambda m: m.is_primary and m.healthy,
        lambda m: m.healthy and m.state != ARBITER,
        lambda m: True,
    ):
        found = next((i for i, m in enumerate(members) if wanted(m)), None)
        if found is not None:
            return found
    raise ValueError("a replica set needs at least one member")


def status_and_config(
    *members: MemberAsked, set_name: str = "rs0", collected_at_ms: int = COLLECTED_AT_MS, commit_lag_ms: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The replSetGetStatus document and the replSetGetConfig `config` a server would send for these members.

    `_id`s follow the order given; the primary (else the first healthy data-bearing member) answers. Lags are
    measured from the primary's last applied op, written `PRIMARY_WALL_BEFORE_DATE` before the document's `date`;
    without a primary the engine measures against the freshest member, so give one of them lag 0. An answering
    primary reports its majority commit point `commit_lag_ms` behind its last applied op.
    """
    date = _date_of(collected_at_ms)
    reference_wall = date - PRIMARY_WALL_BEFORE_DATE
    me = _answering(members)
    primary_name = next((m.name for m in members if m.is_primary and m.healthy), "")
    # 8.0 written progress, only where a test asks for it, and on the reference it is measured against.
    measured = [m for m in members if m.healthy and m.state in _LAG_STATES and m.behind_ms is not None]
    reference = primary_name or min(measured, key=lambda m: m.behind_ms, default=members[0]).name
    asks = any(m.written_lag_ms is not None for m in members)

    def writes(asked: MemberAsked) -> bool:
        return asks and (asked.written_lag_ms is not None or asked.name == reference)

    entries = [
        _entry(i, m, reference_wall=reference_wall, is_self=i == me, primary_name=primary_name, writes=writes(m))
        for i, m in enumerate(members)
    ]
    top: dict[str, Any] = {
        "set": set_name,
        "date": date,
        "myState": members[me].state,
        "term": Int64(3),
        "heartbeatIntervalMillis": Int64(2000),
    }
    if members[me].is_primary:
        applied, committed = entries[me], _applied(reference_wall, commit_lag_ms, None)
        top["optimes"] = {
            "lastCommittedOpTime": committed["optime"],
            "lastCommittedWallTime": committed["lastAppliedWallTime"],
            "appliedOpTime": applied["optime"],
            "lastAppliedWallTime": applied["lastAppliedWallTime"],
        }
    config = {
        "_id": set_name,
        "version": 7,
        "term": 3,
        "members": [_config_member(i, m) for i, m in enumerate(members)],
    }
    return status_document(*entries, **top), config


def snapshot(
    *members: MemberAsked,
    set_name: str = "rs0",
    collected_at_ms: int = COLLECTED_AT_MS,
    commit_lag_ms: int = 0,
    oplog: dict[str, OplogProbe] | None = None,
    evidence: Evidence | None = None,
) -> Snapshot:
    """The engine's snapshot of a set of these members (see `status_and_config`), with the oplog lookups and the
    danger evidence a poll would add when given. It never corrects the engine: a reader's test sees what the engine
    said (tests/test_view_factory.py checks that, on the real engine, it says what was asked)."""
    status, config = status_and_config(
        *members, set_name=set_name, collected_at_ms=collected_at_ms, commit_lag_ms=commit_lag_ms
    )
    return build_snapshot(status, config, oplog, evidence)


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
