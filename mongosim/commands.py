"""What a member answers: one command document in, one reply document out, shaped like the real server of the
member's version profile (field sets and order follow the replSetGetStatus / replSetGetConfig documents the
project keeps as fixtures).

`dispatch()` is synchronous and pure over the `SetModel` (plus the per-connection `Session`); the only waiting a
command needs, the awaitable hello, is decided by `hello_hold_ms()` and done by the server.

Imports `bson`, `.model`, `.storage` and `.scram`.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bson import Binary, Int64, ObjectId, Timestamp
from bson.datetime_ms import DatetimeMS

from . import model as m
from . import storage
from .scram import AuthFailed, Conversation, User
from .wire import Request

CODE_NAMES = {
    1: "InternalError",
    2: "BadValue",
    13: "Unauthorized",
    14: "TypeMismatch",
    17: "ProtocolError",
    18: "AuthenticationFailed",
    26: "NamespaceNotFound",
    59: "CommandNotFound",
    76: "NoReplicationEnabled",
    94: "NotYetInitialized",
    334: "MechanismUnavailable",
    13435: "NotPrimaryNoSecondaryOk",
    40571: "OpMsgNoDb",
}
MAX_BSON = 16 * 1024 * 1024
CHECKPOINT_MS = 60_000  # WiredTiger checkpoints (syncdelay) and so the stable recovery timestamp
MAX_FIND_BATCH = 10_000
EPOCH = DatetimeMS(0)
_NULL_OPTIME = {"ts": Timestamp(0, 0), "t": Int64(-1)}
_APP_UUID = Binary(uuid.UUID("6f1e0a52-6b1c-4c8a-9d43-5a1f0c2e7b91").bytes, 4)
_HELLO_NAMES = ("hello", "isMaster", "ismaster")
_MONITOR_ROLES = (("clusterMonitor", "admin"), ("clusterAdmin", "admin"), ("root", "admin"), ("__system", "admin"))


class CommandError(Exception):
    """Answered as {ok: 0, errmsg, code, codeName}."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Session:
    """Per-connection state: who authenticated, and a SCRAM conversation in progress."""

    connection_id: int
    # (db, name) of the authenticated user, looked up on every check, so a grant or a revoke applies to open
    # connections at once, as mongod's user cache does
    user: tuple[str, str] | None = None
    superuser: bool = False  # ReplicaSet.command(), in-process
    conversation: Conversation | None = None
    conversation_id: int = 0
    skip_empty_exchange: bool = False


@dataclass
class _Ctx:
    model: m.SetModel
    member: m.Member
    session: Session
    request: Request
    now: int

    @property
    def profile(self) -> m.Profile:
        return m.PROFILES[self.member.version]

    @property
    def local_now(self) -> int:
        """The answering member's own clock: what it reports as the time now (`date`, `localTime`)."""
        return self.now + self.member.clock_offset_ms

    @property
    def replset(self) -> bool:
        return self.model.topology == "replset" and self.member.state != m.STARTUP


# --- small builders -------------------------------------------------------------------------------------------


def _optime(e: m.Entry | None) -> dict[str, Any]:
    return {"ts": e.ts, "t": Int64(e.term)} if e else dict(_NULL_OPTIME)


def _optime_date(e: m.Entry | None) -> DatetimeMS:
    return DatetimeMS(e.ts.time * 1000) if e else EPOCH  # whole seconds, as the server derives it from ts


def _wall(e: m.Entry | None) -> DatetimeMS:
    return DatetimeMS(e.wall) if e else EPOCH


def election_id(term: int) -> ObjectId:
    """What mongod puts in hello.electionId: 0x7fffffff then the term (OID::fromTerm)."""
    return ObjectId(b"\x7f\xff\xff\xff" + term.to_bytes(8, "big"))


def _cluster_time(ctx: _Ctx) -> dict[str, Any]:
    if ctx.model.topology != "replset":
        return {}
    last = ctx.model.oplog.last_at_or_before(ctx.now)
    ts = last.ts if last else Timestamp(0, 0)
    return {
        "$clusterTime": {"clusterTime": ts, "signature": {"hash": Binary(b"\x00" * 20), "keyId": Int64(0)}},
        "operationTime": ts,
    }


def _ok(ctx: _Ctx, doc: dict[str, Any]) -> dict[str, Any]:
    doc["ok"] = 1.0
    doc.update(_cluster_time(ctx))
    return doc


def error_doc(code: int, message: str) -> dict[str, Any]:
    return {"ok": 0.0, "errmsg": message, "code": code, "codeName": CODE_NAMES.get(code, "UnknownError")}


def _visible_state(ctx: _Ctx, other: m.Member) -> tuple[float, int]:
    """(health, state) of `other` as the answering member sees it."""
    if other.id == ctx.member.id:
        return 1.0, other.state
    if not other.reachable:
        return 0.0, m.DOWN
    return 1.0, (m.ARBITER if other.arbiter else other.state)


def _sync_source(ctx: _Ctx, member: m.Member) -> m.Member | None:
    return ctx.model.sync_source_of(member)


def _wall_times(p: m.Profile, applied: m.Entry | None, written: m.Entry | None) -> dict[str, Any]:
    """lastAppliedWallTime [, lastWrittenWallTime], lastDurableWallTime: exact ms, 4.4 on (written: 8.0, where
    what is durable is what is written)."""
    if not p.wall_times:
        return {}
    doc = {"lastAppliedWallTime": _wall(applied)}
    if p.written:
        doc["lastWrittenWallTime"] = _wall(written)
    doc["lastDurableWallTime"] = _wall(written if p.written else applied)
    return doc


def _has_optimes(state: int) -> bool:
    return state not in (m.STARTUP, m.STARTUP2, m.DOWN)


# --- hello ----------------------------------------------------------------------------------------------------


def hello_hold_ms(model: m.SetModel, member: m.Member, body: dict[str, Any]) -> int:
    """How long to hold this hello (the awaitable form: topologyVersion + maxAwaitTimeMS, 4.4+); 0 = answer now."""
    if next(iter(body), "") not in _HELLO_NAMES or not m.PROFILES[member.version].streaming:
        return 0
    tv, wait = body.get("topologyVersion"), body.get("maxAwaitTimeMS")
    if not isinstance(tv, dict) or not isinstance(wait, int) or wait <= 0:
        return 0
    if tv.get("processId") != member.process_id or tv.get("counter") != model.topology_counter:
        return 0
    return wait


def _hello(ctx: _Ctx, body: dict[str, Any]) -> dict[str, Any]:
    model, me, p = ctx.model, ctx.member, ctx.profile
    primary_key = "isWritablePrimary" if next(iter(body)) == "hello" else "ismaster"
    doc: dict[str, Any] = {}
    if p.streaming:
        doc["topologyVersion"] = {"processId": me.process_id, "counter": Int64(model.topology_counter)}
    if model.topology == "standalone":
        doc[primary_key] = True
    elif not ctx.replset:
        doc.update({primary_key: False, "secondary": False})
        doc["info"] = "Does not have a valid replica set config"
        doc["isreplicaset"] = True
    else:
        members = list(model.members.values())
        doc["hosts"] = [x.name for x in members if x.data_bearing and not x.hidden and x.priority > 0]
        passives = [x.name for x in members if x.data_bearing and not x.hidden and x.priority <= 0]
        if passives:
            doc["passives"] = passives
        arbiters = [x.name for x in members if x.arbiter]
        if arbiters:
            doc["arbiters"] = arbiters
        doc["setName"] = model.name
        doc["setVersion"] = model.config_version
        doc[primary_key] = me.state == m.PRIMARY
        doc["secondary"] = me.state == m.SECONDARY
        primary = model.primary
        if primary is not None and (primary.id == me.id or primary.reachable):
            doc["primary"] = primary.name
        if me.priority <= 0 and me.data_bearing:
            doc["passive"] = True
        if me.hidden:
            doc["hidden"] = True
        if me.arbiter:
            doc["arbiterOnly"] = True
        doc["me"] = me.name
        if me.state == m.PRIMARY:
            doc["electionId"] = election_id(model.term)
        if me.data_bearing:
            usable = _has_optimes(me.state)  # a member in STARTUP2 has written nothing yet
            mine = model.applied(me, ctx.now) if usable else None
            committed = model.commit_point(ctx.now) if usable else None
            doc["lastWrite"] = {
                "opTime": _optime(mine),
                "lastWriteDate": _optime_date(mine),
                "majorityOpTime": _optime(committed),
                "majorityWriteDate": _optime_date(committed),
            }
    if body.get("helloOk"):
        doc["helloOk"] = True
    doc.update(
        {
            "maxBsonObjectSize": MAX_BSON,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": DatetimeMS(ctx.local_now),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": ctx.session.connection_id,
            "minWireVersion": 0,
            "maxWireVersion": p.max_wire,
            "readOnly": False,
        }
    )
    mechs = body.get("saslSupportedMechs")
    if isinstance(mechs, str) and "." in mechs:
        db, _, name = mechs.partition(".")
        user = _user_here(ctx, name, db)
        if user is not None:
            doc["saslSupportedMechs"] = user.mechanisms
    speculative = body.get("speculativeAuthenticate")
    if isinstance(speculative, dict) and "saslStart" in speculative:
        try:
            doc["speculativeAuthenticate"] = _sasl_start(ctx, speculative, str(speculative.get("db", "admin")))
        except (AuthFailed, CommandError):
            ctx.session.conversation = None  # a failed speculation is silent: the driver authenticates normally
    return _ok(ctx, doc)


# --- authentication -------------------------------------------------------------------------------------------


def _user_here(ctx: _Ctx, name: str, db: str) -> User | None:
    if ctx.member.arbiter:
        return None  # arbiters hold no data, so no users: nobody can authenticate to one
    return ctx.model.users.get((db, name))


def _sasl_start(ctx: _Ctx, body: dict[str, Any], db: str) -> dict[str, Any]:
    mechanism = body.get("mechanism")
    payload = body.get("payload")
    if not isinstance(mechanism, str) or not isinstance(payload, bytes):
        raise CommandError(2, "saslStart needs a mechanism and a binary payload")
    conversation = Conversation(mechanism, db, lambda name, source: _user_here(ctx, name, source))
    server_first = conversation.start(payload)
    session = ctx.session
    session.conversation = conversation
    session.conversation_id += 1
    options = body.get("options")
    session.skip_empty_exchange = isinstance(options, dict) and bool(options.get("skipEmptyExchange"))
    return {"conversationId": session.conversation_id, "done": False, "payload": Binary(server_first)}


def _sasl_continue(ctx: _Ctx, body: dict[str, Any]) -> dict[str, Any]:
    session = ctx.session
    conversation = session.conversation
    if conversation is None or body.get("conversationId") != session.conversation_id:
        raise CommandError(17, "No SASL session state found")
    payload = body.get("payload")
    if not isinstance(payload, bytes):
        raise CommandError(2, "saslContinue needs a binary payload")
    if conversation.done:  # the empty third step of drivers that do not skip it
        session.conversation = None
        return {"conversationId": session.conversation_id, "done": True, "payload": Binary(b"")}
    try:
        server_final = conversation.finish(payload)
    except AuthFailed:
        session.conversation = None
        raise
    assert conversation.user is not None
    session.user = (conversation.user.db, conversation.user.name)
    done = session.skip_empty_exchange
    if done:
        session.conversation = None
    return {"conversationId": session.conversation_id, "done": done, "payload": Binary(server_final)}


def _require(ctx: _Ctx, name: str, db: str, allowed: Callable[[User], bool]) -> None:
    if not ctx.model.users or ctx.session.superuser:
        return  # auth is off
    if ctx.session.user is None:
        raise CommandError(13, f"Command {name} requires authentication")
    user = ctx.model.users.get(ctx.session.user)
    if user is None or not allowed(user):
        raise CommandError(13, f"not authorized on {db} to execute command {{ {name}: ... }}")


def _can_monitor(user: User) -> bool:
    return user.has_role(*_MONITOR_ROLES)


def _can_read(db: str) -> Callable[[User], bool]:
    def check(user: User) -> bool:
        if user.has_role(("read", db), ("readWrite", db), ("dbOwner", db), ("root", "admin"), ("__system", "admin")):
            return True
        # Since 3.4 the *AnyDatabase roles leave out local and config.
        any_db = user.has_role(("readAnyDatabase", "admin"), ("readWriteAnyDatabase", "admin"))
        return any_db and db not in ("local", "config")

    return check


# --- replSetGetStatus -----------------------------------------------------------------------------------------


def _member_status(ctx: _Ctx, other: m.Member) -> dict[str, Any]:
    model, p, now = ctx.model, ctx.profile, ctx.now
    is_self = other.id == ctx.member.id
    health, state = _visible_state(ctx, other)
    doc: dict[str, Any] = {
        "_id": other.id,
        "name": other.name,
        "health": health,
        "state": state,
        "stateStr": m.STATE_NAMES[state],
        "uptime": max(0, (now - other.started_ms) // 1000) if health else 0,
    }
    if other.data_bearing:
        usable = _has_optimes(state)
        applied = model.applied(other, ctx.now) if usable else None
        written = model.applied(other, ctx.now, written=True) if usable and p.written else None
        doc["optime"] = _optime(applied)
        if p.written:
            doc["optimeWritten"] = _optime(written)
        durable = written if p.written else applied  # 8.0: durable = written
        if not is_self or p.at_least("6.0"):  # the 7.0/8.0 manual samples show it on self too; 5.0 does not
            doc["optimeDurable"] = _optime(durable)
        doc["optimeDate"] = _optime_date(applied)
        if p.written:
            doc["optimeWrittenDate"] = _optime_date(written)
        if not is_self:
            doc["optimeDurableDate"] = _optime_date(durable)
        doc.update(_wall_times(p, applied, written))
    if not is_self:
        if health:
            doc["lastHeartbeat"] = DatetimeMS(now - (now + 613 * other.id) % 2000)
            doc["lastHeartbeatRecv"] = DatetimeMS(now - (now + 911 * other.id) % 2000)
            doc["pingMs"] = Int64(other.id % 3 if other.ping_ms is None else other.ping_ms)
            doc["lastHeartbeatMessage"] = ""
        else:
            doc["lastHeartbeat"] = DatetimeMS(now - (now + 613 * other.id) % 2000)
            doc["lastHeartbeatRecv"] = DatetimeMS(other.down_since_ms)
            doc["pingMs"] = Int64(0)
            doc["lastHeartbeatMessage"] = (
                f"Error connecting to {other.name} :: caused by :: Connection refused"
                if not other.up
                else f"Request timed out, deadline was exceeded -- target:[{other.name}] db:admin"
            )
    source = _sync_source(ctx, other) if health else None
    if p.syncing_to:
        doc["syncingTo"] = source.name if source else ""
    doc["syncSourceHost"] = source.name if source else ""
    doc["syncSourceId"] = source.id if source else -1
    doc["infoMessage"] = ""
    if state == m.PRIMARY:
        doc["electionTime"] = Timestamp(model.election_ms // 1000, 1)
        doc["electionDate"] = DatetimeMS(model.election_ms // 1000 * 1000)
    doc["configVersion"] = model.config_version
    if p.wall_times:
        doc["configTerm"] = model.config_term
    if is_self:
        doc["self"] = True
        doc["lastHeartbeatMessage"] = ""
    return doc


def _optimes(ctx: _Ctx) -> dict[str, Any]:
    """The answering member's optimes: its commit point (the set's, as it sees it), what majority reads see
    (never past what it applied), applied, written (8.0) and durable. A member in STARTUP/STARTUP2 has none of
    them yet and no majority snapshot, so readConcernMajority* is absent (manual, initial sync sample)."""
    model, p, me = ctx.model, ctx.profile, ctx.member
    usable = me.data_bearing and _has_optimes(me.state)
    mine = model.applied(me, ctx.now) if usable else None
    written = model.applied(me, ctx.now, written=True) if mine and p.written else mine
    committed = model.commit_point(ctx.now) if usable or me.arbiter else None
    readable = committed if committed is None or mine is None or committed.n <= mine.n else mine
    doc: dict[str, Any] = {"lastCommittedOpTime": _optime(committed)}
    if p.wall_times:
        doc["lastCommittedWallTime"] = _wall(committed)
    if usable or me.arbiter:
        doc["readConcernMajorityOpTime"] = _optime(readable)
        if p.wall_times:
            doc["readConcernMajorityWallTime"] = _wall(readable)
    doc["appliedOpTime"] = _optime(mine)
    if p.written:
        doc["writtenOpTime"] = _optime(written)
    doc["durableOpTime"] = _optime(written if p.written else mine)
    doc.update(_wall_times(p, mine, written))
    return doc


def _stable_timestamp(ctx: _Ctx) -> Timestamp:
    """lastStableRecoveryTimestamp: the commit point as of the last checkpoint (every 60 s since the member
    started), never past what the member itself applied."""
    model, me, now = ctx.model, ctx.member, ctx.now
    if not (me.data_bearing and _has_optimes(me.state)):
        return Timestamp(0, 0)
    checkpoint_ms = now - (now - me.started_ms) % CHECKPOINT_MS
    n = min(model.commit_n(now), model.applied_n(me, now), model.oplog.count_le(checkpoint_ms))
    return model.oplog.entry(n, now).ts if n else Timestamp(0, 0)


def _election_metrics(ctx: _Ctx) -> dict[str, Any]:
    model, p, me = ctx.model, ctx.profile, ctx.member
    at_election = _optime(model.oplog.entry(model.election_n, model.election_ms) if model.election_n else None)
    majority = len(model.voting()) // 2 + 1
    if me.state == m.PRIMARY:
        doc: dict[str, Any] = {
            "lastElectionReason": "electionTimeout" if model.prior_primary_id is None else "stepUpRequestSkipDryRun",
            "lastElectionDate": DatetimeMS(model.election_ms),
            "electionTerm": Int64(model.term),
            "lastCommittedOpTimeAtElection": _optime(
                model.oplog.entry(model.election_commit_n, model.election_ms) if model.election_commit_n else None
            ),
            "lastSeenOpTimeAtElection": at_election,
        }
        if p.written:
            doc["lastSeenWrittenOpTimeAtElection"] = at_election
        doc.update({"numVotesNeeded": majority, "priorityAtElection": me.priority})
        doc["electionTimeoutMillis"] = Int64(10_000)
        if model.prior_primary_id is not None:
            doc["priorPrimaryMemberId"] = model.prior_primary_id
        doc["numCatchUpOps"] = Int64(0)
        doc["newTermStartDate"] = DatetimeMS(model.election_ms)  # when the "new primary" entry was written
        if model.w_majority_ms is not None:  # absent until that entry is majority-committed
            doc["wMajorityWriteAvailabilityDate"] = DatetimeMS(model.w_majority_ms)
        return {"electionCandidateMetrics": doc}
    if me.arbiter or model.primary_id is None or me.votes == 0 or not _has_optimes(me.state):
        return {}
    return {
        "electionParticipantMetrics": {
            "votedForCandidate": True,
            "electionTerm": Int64(model.term),
            "lastVoteDate": DatetimeMS(model.election_ms - 15),
            "electionCandidateMemberId": model.primary_id,
            "voteReason": "",
            "lastAppliedOpTimeAtElection": at_election,
            "maxAppliedOpTimeInSet": at_election,
            "priorityAtElection": me.priority,
            "newTermStartDate": DatetimeMS(model.election_ms),
            "newTermAppliedDate": DatetimeMS(model.election_ms + model.delay_ms(me)),
        }
    }


def _repl_set_get_status(ctx: _Ctx, body: dict[str, Any]) -> dict[str, Any]:
    _check_replset(ctx)
    _require(ctx, "replSetGetStatus", ctx.request.db, _can_monitor)
    model, p, me = ctx.model, ctx.profile, ctx.member
    asked = body.get("initialSync")
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int | float)):
        raise CommandError(14, "Expected initialSync to be a number")
    source = _sync_source(ctx, me)
    doc: dict[str, Any] = {
        "set": model.name,
        "date": DatetimeMS(ctx.local_now),
        "myState": me.state,
        "term": Int64(model.term),
    }
    if p.syncing_to:
        doc["syncingTo"] = source.name if source else ""
    doc["syncSourceHost"] = source.name if source else ""
    doc["syncSourceId"] = source.id if source else -1
    doc["heartbeatIntervalMillis"] = Int64(2000)
    if p.wall_times:
        voting = model.voting()
        majority = len(voting) // 2 + 1
        writable = [x for x in voting if x.data_bearing]
        doc["majorityVoteCount"] = majority
        doc["writeMajorityCount"] = min(majority, len(writable))
        doc["votingMembersCount"] = len(voting)
        doc["writableVotingMembersCount"] = len(writable)
    doc["optimes"] = _optimes(ctx)
    doc["lastStableRecoveryTimestamp" if p.wall_times else "lastStableCheckpointTimestamp"] = _stable_timestamp(ctx)
    if p.wall_times:
        doc.update(_election_metrics(ctx))
    sync = me.initial_sync
    # 4.2.1+ reports it by default during the sync; 4.0 only when asked with initialSync: 1
    if sync is not None and (asked if asked is not None else p.wall_times):
        start = model.oplog.entry(sync.oplog_start_n, ctx.now).ts if sync.oplog_start_n else Timestamp(0, 0)
        doc["initialSyncStatus"] = sync.status_document(ctx.now, p, start)
    doc["members"] = [_member_status(ctx, x) for x in model.members.values()]
    return _ok(ctx, doc)


def _check_replset(ctx: _Ctx) -> None:
    if ctx.model.topology == "standalone":
        raise CommandError(76, "not running with --replSet")
    if not ctx.replset:
        raise CommandError(94, "no replset config has been received")


# --- replSetGetConfig -----------------------------------------------------------------------------------------


def config_document(model: m.SetModel) -> dict[str, Any]:
    p = model.fcv_profile
    members = []
    for x in model.members.values():
        members.append(
            {
                "_id": x.id,
                "host": x.name,
                "arbiterOnly": x.arbiter,
                "buildIndexes": True,
                "hidden": x.hidden,
                "priority": float(x.priority),
                "tags": dict(x.tags),
                p.delay_field: Int64(x.delay_secs),
                "votes": x.votes,
            }
        )
    doc: dict[str, Any] = {"_id": model.name, "version": model.config_version}
    if p.wall_times:
        doc["term"] = model.config_term
    doc["protocolVersion"] = Int64(1)
    doc["writeConcernMajorityJournalDefault"] = True
    doc["members"] = members
    doc["settings"] = {
        "chainingAllowed": True,
        "heartbeatIntervalMillis": 2000,
        "heartbeatTimeoutSecs": 10,
        "electionTimeoutMillis": 10000,
        "catchUpTimeoutMillis": -1,
        "catchUpTakeoverDelayMillis": 30000,
        "getLastErrorModes": {},
        "getLastErrorDefaults": {"w": 1, "wtimeout": 0},
        "replicaSetId": model.replica_set_id,
    }
    return doc


def _repl_set_get_config(ctx: _Ctx, body: dict[str, Any]) -> dict[str, Any]:
    _check_replset(ctx)
    _require(ctx, "replSetGetConfig", ctx.request.db, _can_monitor)
    return _ok(ctx, {"config": config_document(ctx.model)})


# --- find on local.oplog.rs -----------------------------------------------------------------------------------


def oplog_document(entry: m.Entry, p: m.Profile) -> dict[str, Any]:
    """One oplog entry as the server of profile `p` stores it."""
    if entry.kind == "traffic":
        op, ns = "i", "app.events"
        o: dict[str, Any] = {"_id": ObjectId(struct.pack(">I", entry.wall // 1000) + entry.n.to_bytes(8, "big"))}
        o["n"] = Int64(entry.n)
    elif entry.kind == "noop":
        op, ns, o = "n", "", {"msg": "periodic noop"}
    elif entry.kind == "initiate":
        op, ns, o = "n", "", {"msg": "initiating set"}
    else:
        assert entry.doc is not None
        ns, o = entry.doc["ns"], dict(entry.doc["o"])
        op = "n" if entry.kind == "new_primary" else "i"
        if op == "i":
            o.setdefault("_id", ObjectId(struct.pack(">I", entry.wall // 1000) + entry.n.to_bytes(8, "big")))
    if p.at_least("5.0"):
        doc: dict[str, Any] = {"op": op, "ns": ns}
        if op == "i":
            doc["ui"] = _APP_UUID
        doc.update({"o": o, "ts": entry.ts, "t": Int64(entry.term), "v": Int64(2), "wall": DatetimeMS(entry.wall)})
        return doc
    # 4.0 carries a random hash `h`; from 4.2 it is always 0.
    h = (entry.n * 0x9E3779B97F4A7C15) % (1 << 63) if not p.at_least("4.4") else 0
    doc = {"ts": entry.ts, "t": Int64(entry.term), "h": Int64(h), "v": 2, "op": op, "ns": ns}
    if op == "i":
        doc["ui"] = _APP_UUID
    doc.update({"wall": DatetimeMS(entry.wall), "o": o})
    return doc


def _secondary_ok(request: Request, body: dict[str, Any]) -> bool:
    if request.legacy:
        return bool(request.query_flags & 4)  # OP_QUERY SecondaryOk
    pref = body.get("$readPreference")
    return isinstance(pref, dict) and pref.get("mode", "primary") != "primary"


def _project(doc: dict[str, Any], projection: Any) -> dict[str, Any]:
    if not isinstance(projection, dict) or not projection:
        return doc
    include = {k for k, v in projection.items() if v}
    if include:
        return {k: v for k, v in doc.items() if k in include}
    return {k: v for k, v in doc.items() if k not in projection}


def _find(ctx: _Ctx, body: dict[str, Any]) -> dict[str, Any]:
    db, coll = ctx.request.db, body.get("find")
    if not isinstance(coll, str):
        raise CommandError(2, "collection name has invalid type")
    ns = f"{db}.{coll}"
    _require(ctx, "find", db, _can_read(db))
    me = ctx.member
    if ctx.replset and me.state != m.PRIMARY and not _secondary_ok(ctx.request, body):
        raise CommandError(13435, "not primary and secondaryOk=false")
    batch: list[dict[str, Any]] = []
    if ns == "local.oplog.rs" and storage.holds_oplog(ctx.model, me):
        batch = [oplog_document(e, ctx.profile) for e in _scan_oplog(ctx, body)]
    if "projection" in body:
        batch = [_project(d, body["projection"]) for d in batch]
    return _ok(ctx, {"cursor": {"firstBatch": batch, "id": Int64(0), "ns": ns}})


def _scan_oplog(ctx: _Ctx, body: dict[str, Any]) -> list[m.Entry]:
    """Entries of this member's own oplog (what it has written, back to its oldest) matching a ts range, in
    natural order."""
    model, oplog = ctx.model, ctx.model.oplog
    top = storage.newest_n(model, ctx.member, ctx.now)
    flt, sort = body.get("filter") or {}, body.get("sort") or body.get("hint") or {}
    # One first batch and never a getMore: up to `limit` (101 without one, 10 000 at most) entries.
    limit = min(abs(int(body.get("limit") or 0)) or 101, MAX_FIND_BATCH)
    if not isinstance(sort, dict) or set(sort) - {"$natural"} or sort.get("$natural", 1) not in (1, -1):
        raise CommandError(2, "mongosim: local.oplog.rs supports only natural order ({$natural: 1 | -1})")
    if not isinstance(flt, dict) or set(flt) - {"ts"}:
        raise CommandError(2, "mongosim: local.oplog.rs supports only a filter on ts")
    low, high = storage.oldest_n(model, ctx.member, ctx.now), top
    cond = flt.get("ts", {})
    if isinstance(cond, Timestamp):
        cond = {"$eq": cond}
    if not isinstance(cond, dict) or set(cond) - {"$gt", "$gte", "$lt", "$lte", "$eq"}:
        raise CommandError(2, "mongosim: the ts filter supports $gt, $gte, $lt, $lte and equality")
    for op, value in cond.items():
        if not isinstance(value, Timestamp):
            raise CommandError(2, f"mongosim: {op} on ts needs a Timestamp")
        # ordinal of the first entry with ts > value (or >= value), and of the last with ts < value (or <=)
        after = _first_after(oplog, value, top)
        at_or_after = _first_after(oplog, Timestamp(value.time, value.inc - 1), top) if value.inc else after
        if op == "$gt":
            low = max(low, after)
        elif op == "$gte":
            low = max(low, at_or_after)
        elif op == "$lt":
            high = min(high, at_or_after - 1)
        elif op == "$lte":
            high = min(high, after - 1)
        else:
            low, high = max(low, at_or_after), min(high, after - 1)
    if low > high:
        return []
    ordinals = range(low, min(high, low + limit - 1) + 1) if sort.get("$natural", 1) == 1 else None
    if ordinals is None:
        ordinals = range(high, max(low, high - limit + 1) - 1, -1)
    return [oplog.entry(n, ctx.now) for n in ordinals]


def _first_after(oplog: m.Oplog, ts: Timestamp, top: int) -> int:
    return min(oplog.ordinal_after(ts), top + 1)


# --- collStats and $collStats on local.oplog.rs ---------------------------------------------------------------


def _can_coll_stats(db: str) -> Callable[[User], bool]:
    """The collStats action: `read` (and up) or `dbAdmin` on the database, or clusterMonitor, which grants it on
    every database, `local` included (manual, built-in roles)."""
    can_read = _can_read(db)

    def check(user: User) -> bool:
        return can_read(user) or user.has_role(("dbAdmin", db)) or _can_monitor(user)

    return check


def _scale(spec: dict[str, Any]) -> int:
    scale = spec.get("scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or scale < 1:
        raise CommandError(2, "scale has to be a number >= 1")
    return int(scale)


def _oplog_collection(ctx: _Ctx, ns: str) -> None:
    """The one collection with statistics: local.oplog.rs, on a data member of an initiated set (empty while it
    starts or syncs). Every other namespace answers as a missing collection does."""
    if ns != "local.oplog.rs" or not (ctx.replset and ctx.member.data_bearing):
        raise CommandError(26, f"Collection [{ns}] not found.")


def _coll_stats(ctx: _Ctx, body: dict[str, Any]) -> dict[str, Any]:
    db, coll = ctx.request.db, next(iter(body.values()))
    if not isinstance(coll, str) or not coll:
        raise CommandError(2, "collection name has invalid type")
    _require(ctx, "collStats", db, _can_coll_stats(db))
    ns = f"{db}.{coll}"
    _oplog_collection(ctx, ns)
    return _ok(ctx, {"ns": ns, **storage.storage_stats(ctx.model, ctx.member, ctx.now, _scale(body))})


def _aggregate(ctx: _Ctx, body: dict[str, Any]) -> dict[str, Any]:
    """Only `[{$collStats: {storageStats: {[scale]}, count: {}}}]`, the non-deprecated collStats of 6.2+."""
    db, coll, pipeline = ctx.request.db, body.get("aggregate"), body.get("pipeline")
    stage = pipeline[0] if isinstance(pipeline, list) and len(pipeline) == 1 else None
    spec = stage.get("$collStats") if isinstance(stage, dict) and list(stage) == ["$collStats"] else None
    if not isinstance(coll, str) or not isinstance(spec, dict) or set(spec) - {"storageStats", "count"}:
        raise CommandError(2, "mongosim: aggregate supports only [{$collStats: {storageStats: {}, count: {}}}]")
    _require(ctx, "aggregate", db, _can_coll_stats(db))
    me = ctx.member
    if ctx.replset and me.state != m.PRIMARY and not _secondary_ok(ctx.request, body):
        raise CommandError(13435, "not primary and secondaryOk=false")
    ns = f"{db}.{coll}"
    _oplog_collection(ctx, ns)
    stats_spec = spec.get("storageStats", {})
    stats = storage.storage_stats(ctx.model, me, ctx.now, _scale(stats_spec if isinstance(stats_spec, dict) else {}))
    out: dict[str, Any] = {"ns": ns, "host": me.name, "localTime": DatetimeMS(ctx.local_now)}
    if "storageStats" in spec:
        out["storageStats"] = stats
    if "count" in spec:
        out["count"] = stats["count"]
    return _ok(ctx, {"cursor": {"firstBatch": [out], "id": Int64(0), "ns": ns}})


# --- the rest -------------------------------------------------------------------------------------------------


def _build_info(ctx: _Ctx, body: dict[str, Any]) -> dict[str, Any]:
    p = ctx.profile
    parts = [int(x) for x in p.version.split(".")]
    return _ok(
        ctx,
        {
            "version": p.version,
            "gitVersion": "mongosim" + "0" * 32,
            "modules": [],
            "allocator": "tcmalloc",
            "javascriptEngine": "mozjs",
            "sysInfo": "deprecated",
            "versionArray": [*parts, 0],
            "bits": 64,
            "debug": False,
            "maxBsonObjectSize": MAX_BSON,
            "storageEngines": ["devnull", "wiredTiger"],
        },
    )


def server_status_head(me: m.Member, now: int, version: str, process: str) -> dict[str, Any]:
    """The part of serverStatus a mongod and a mongos share: who, since when, connections."""
    stats, uptime_ms = me.stats, max(0, now - me.started_ms)
    return {
        "host": me.name,
        "version": version,
        "process": process,
        "pid": Int64(os.getpid()),
        "uptime": float(uptime_ms // 1000),
        "uptimeMillis": Int64(uptime_ms),
        "uptimeEstimate": Int64(uptime_ms // 1000),
        "localTime": DatetimeMS(now + me.clock_offset_ms),
        "asserts": {"regular": 0, "warning": 0, "msg": 0, "user": 0, "rollovers": 0},
        "connections": {
            "current": stats["current"],
            "available": 838_860 - stats["current"],
            "totalCreated": stats["total"],
            "active": 1,
        },
    }


def _server_status(ctx: _Ctx, body: dict[str, Any]) -> dict[str, Any]:
    _require(ctx, "serverStatus", ctx.request.db, _can_monitor)
    me, model, now = ctx.member, ctx.model, ctx.now
    stats = me.stats
    written = model.last_written(now) if me.state == m.PRIMARY else 0
    doc = server_status_head(me, now, ctx.profile.version, "mongod")
    if ctx.profile.at_least("4.4") and me.data_bearing:  # flow control exists from 4.2
        doc["flowControl"] = model.flow_section(me)
    doc |= {
        "network": {
            "bytesIn": Int64(stats["bytes_in"]),
            "bytesOut": Int64(stats["bytes_out"]),
            "numRequests": Int64(stats["requests"]),
        },
        "opcounters": {
            "insert": Int64(written),
            "query": Int64(0),
            "update": Int64(0),
            "delete": Int64(0),
            "getmore": Int64(0),
            "command": Int64(stats["requests"]),
        },
    }
    if ctx.replset:
        hello = _hello(ctx, {"hello": 1})
        keys = ("hosts", "passives", "arbiters", "setName", "setVersion", "isWritablePrimary", "secondary")
        repl = {k: hello[k] for k in (*keys, "primary", "me", "electionId") if k in hello}
        repl["rbid"] = 1
        doc["repl"] = repl
    doc["storageEngine"] = {"name": "wiredTiger", "supportsCommittedReads": True, "persistent": True}
    doc["mem"] = {"bits": 64, "resident": 96, "virtual": 1536, "supported": True}
    return _ok(ctx, doc)


def _simple(fields: dict[str, Any] | None = None) -> Callable[[_Ctx, dict[str, Any]], dict[str, Any]]:
    return lambda ctx, body: _ok(ctx, dict(fields or {}))


_COMMANDS: dict[str, Callable[[_Ctx, dict[str, Any]], dict[str, Any]]] = {
    "hello": _hello,
    "isMaster": _hello,
    "ismaster": _hello,
    "replSetGetStatus": _repl_set_get_status,
    "replSetGetConfig": _repl_set_get_config,
    "ping": _simple(),
    "buildInfo": _build_info,
    "buildinfo": _build_info,
    "serverStatus": _server_status,
    "collStats": _coll_stats,
    "collstats": _coll_stats,
    "aggregate": _aggregate,
    "getnonce": lambda ctx, body: _ok(ctx, {"nonce": os.urandom(8).hex()}),
    "saslStart": lambda ctx, body: _ok(ctx, _sasl_start(ctx, body, ctx.request.db)),
    "saslContinue": lambda ctx, body: _ok(ctx, _sasl_continue(ctx, body)),
    "endSessions": _simple(),
    "find": _find,
}


def dispatch(model: m.SetModel, member: m.Member, session: Session, request: Request) -> dict[str, Any]:
    """Answer one command as `member` would. Never raises for a client's mistake: errors are error documents."""
    body = request.body
    name = next(iter(body), "")
    ctx = _Ctx(model, member, session, request, model.now())
    model.settle(ctx.now)  # what happened since the last command (flow control ticks, finished initial syncs)
    handler = _COMMANDS.get(name)
    try:
        if handler is None:
            raise CommandError(59, f"no such command: '{name}'")
        if not request.db and not request.legacy:
            raise CommandError(40571, "OP_MSG requests require a $db argument")
        if name in member.fail_commands and (session.user is not None or session.superuser or not model.users):
            raise CommandError(member.fail_commands[name], "Failing command via 'failCommand' failpoint")
        return handler(ctx, body)
    except AuthFailed as exc:
        doc = error_doc(exc.code, str(exc))
    except CommandError as exc:
        doc = error_doc(exc.code, str(exc))
    doc.update(_cluster_time(ctx))
    return doc
