"""A mongos: what a router answers, in front of its cluster's `Catalog`.

A `RouterModel` is one router process: one `Member` (port, up or down, hang, version, process id, counters) and the
catalog it routes with. It has the few attributes `Server` reads from a replica set's model, so the same server
code serves it (wire protocol, hangs, awaitable hello). `dispatch()` answers as a real mongos of its version:

- hello / isMaster: `isWritablePrimary` (`ismaster`) true, `msg: "isdbgrid"`, `topologyVersion` (4.4+), no
  setName and no hosts, so a driver sees a Sharded topology. MongosHelloResponse's field order.
- getShardMap and listShards (admin only; clusterMonitor), find on `config.shards` (read on config, which
  clusterMonitor has): from the catalog. listShards and the find read the config servers: with none of them
  answering they fail with 133 FailedToSatisfyReadPreference, while getShardMap answers from the router's cache.
  `Catalog.shard_map_refusal` makes getShardMap refused as Atlas does ("atlas": 8000 AtlasError) or as for a user
  without the privilege ("unauthorized": 13); `list_shards_refusal` and `config_shards_refusal` do the same for
  listShards and for reads of `config.shards`.
- replSetGetStatus: `{info: "mongos", ok: 0, errmsg: "replSetGetStatus is not supported through mongos"}` with no
  code: mongos registers the command only to refuse it (it needs no privilege, but with authentication on it needs
  a logged-in user, like every command that does not opt out).
- serverStatus: a small one with `process: "mongos"` and a `sharding` section.
- ping, buildInfo, SASL (SCRAM against the cluster users, who live on the config servers), endSessions, getnonce:
  as a mongod answers them (`commands.dispatch` on this model). Any other command: 59 CommandNotFound.

Authorization is mongod's own check (commands.py's `_require`, `_can_monitor`, `_can_read`) run on this model.
Imports `bson`, `.catalog`, `.commands`, `.model`, `.scram` (a type) and `.wire`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bson import Int64, Timestamp
from bson.datetime_ms import DatetimeMS

from . import commands, wire
from .catalog import Catalog
from .commands import CommandError, Session
from .model import PROFILES, Member, Oplog
from .scram import User

ISDBGRID = "isdbgrid"
NOT_THROUGH_MONGOS = "replSetGetStatus is not supported through mongos"
ATLAS_REFUSAL = "{} is not allowed or the syntax is incorrect, see the Atlas documentation for more information"
REFUSALS = (None, "unauthorized", "atlas")
CODE_NAMES = {**commands.CODE_NAMES, 133: "FailedToSatisfyReadPreference", 8000: "AtlasError"}
_AS_MONGOD = ("ping", "buildInfo", "buildinfo", "saslStart", "saslContinue", "endSessions", "getnonce")
_ADMIN_ONLY = ("replSetGetStatus", "getShardMap", "listShards", "listshards")


class RouterModel:
    """One mongos process, seen the way `Server` sees a replica set's model (one member, `_id` 0)."""

    def __init__(self, name: str, catalog: Catalog, clock: Any, version: str) -> None:
        self.name = name
        self.catalog = catalog
        self.clock = clock
        self.topology = "replset"  # commands.dispatch gossips $clusterTime only in a replica set or a cluster
        self.members = {0: Member(id=0, port=0, name="", version=version, started_ms=clock.now_ms())}
        self.connection_ids = 0
        self.topology_counter = 0  # a mongos changes it only when it starts to shut down
        self.on_change: Callable[[], None] = lambda: None

    @property
    def member(self) -> Member:
        return self.members[0]

    @property
    def users(self) -> dict[tuple[str, str], User]:
        """Cluster users live on the config servers (a mongos only caches them)."""
        return self.catalog.config_model.users

    @property
    def oplog(self) -> Oplog:
        """The config servers' oplog: the router's $clusterTime is the newest config server optime."""
        return self.catalog.config_model.oplog

    def now(self) -> int:
        return self.clock.now_ms()

    def settle(self, now: int) -> None:
        """Nothing to fold in: a mongos has no replication of its own (commands.dispatch settles every model)."""


Handler = Callable[[RouterModel, Session, wire.Request], dict[str, Any]]


def dispatch(model: RouterModel, member: Member, session: Session, request: wire.Request) -> dict[str, Any]:
    """Answer one command as this mongos would. Errors are error documents, never exceptions."""
    name = next(iter(request.body), "")
    handler = _COMMANDS.get(name)
    if handler is None and name in _AS_MONGOD:
        return commands.dispatch(model, member, session, request)
    try:
        if handler is None:
            raise CommandError(59, f"no such command: '{name}'")
        if not request.db and not request.legacy:
            raise CommandError(40571, "OP_MSG requests require a $db argument")
        if name in _ADMIN_ONLY and request.db != "admin":
            raise CommandError(13, f"{name} may only be run against the admin database.")
        return handler(model, session, request)
    except CommandError as exc:
        doc = {"ok": 0.0, "errmsg": str(exc), "code": exc.code, "codeName": CODE_NAMES.get(exc.code, "UnknownError")}
        return {**doc, **_cluster_time(model)}


def _cluster_time(model: RouterModel) -> dict[str, Any]:
    last = model.oplog.last_at_or_before(model.now())
    ts = last.ts if last else Timestamp(0, 0)
    signature = {"hash": bytes(20), "keyId": Int64(0)}
    return {"$clusterTime": {"clusterTime": ts, "signature": signature}, "operationTime": ts}


def _ok(model: RouterModel, doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "ok": 1.0, **_cluster_time(model)}


def _require(model: RouterModel, session: Session, request: wire.Request, allowed: Callable[[User], bool]) -> None:
    """mongod's check (commands.py): authentication is on once the cluster has users (on a real one: a keyFile)."""
    name = next(iter(request.body), "")
    ctx = commands._Ctx(model, model.member, session, request, model.now())
    commands._require(ctx, name, request.db, allowed)


def _can_read(db: str) -> Callable[[User], bool]:
    """As on mongod, and clusterMonitor also reads the config database (its built-in privileges say so)."""
    return lambda user: commands._can_read(db)(user) or (db == "config" and commands._can_monitor(user))


def _require_config_servers(model: RouterModel) -> None:
    if not model.catalog.config_reachable():
        name = model.catalog.config_model.name
        raise CommandError(133, f'Could not find host matching read preference {{ mode: "nearest" }} for set {name}')


# --- the commands ---------------------------------------------------------------------------------------------


def _hello(model: RouterModel, session: Session, request: wire.Request) -> dict[str, Any]:
    body, me = request.body, model.member
    p = PROFILES[me.version]
    doc: dict[str, Any] = {"isWritablePrimary" if next(iter(body)) == "hello" else "ismaster": True, "msg": ISDBGRID}
    if p.streaming:
        doc["topologyVersion"] = {"processId": me.process_id, "counter": Int64(model.topology_counter)}
    if body.get("helloOk"):
        doc["helloOk"] = True
    doc.update(
        {
            "maxBsonObjectSize": commands.MAX_BSON,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": DatetimeMS(model.now()),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": session.connection_id,
            "maxWireVersion": p.max_wire,
            "minWireVersion": 0,
        }
    )
    mechs = body.get("saslSupportedMechs")
    if isinstance(mechs, str) and "." in mechs:
        db, _, name = mechs.partition(".")
        user = model.users.get((db, name))
        if user is not None:
            doc["saslSupportedMechs"] = user.mechanisms
    speculative = body.get("speculativeAuthenticate")
    if isinstance(speculative, dict) and "saslStart" in speculative:
        db = str(speculative.get("db", "admin"))
        start = wire.Request(request_id=0, opcode=wire.OP_MSG, body=dict(speculative), db=db)
        reply = commands.dispatch(model, me, session, start)
        if reply.get("ok") == 1.0:
            doc["speculativeAuthenticate"] = {k: reply[k] for k in ("conversationId", "done", "payload")}
        else:
            session.conversation = None  # a failed speculation is silent: the driver authenticates normally
    return _ok(model, doc)


def _repl_set_get_status(model: RouterModel, session: Session, request: wire.Request) -> dict[str, Any]:
    _require(model, session, request, lambda user: True)  # no privilege needed, but with auth on, a login
    return {"info": "mongos", "ok": 0.0, "errmsg": NOT_THROUGH_MONGOS, **_cluster_time(model)}


def _refuse_if(refusal: str | None, command: str, db: str, before_login: bool) -> None:
    """A refusal the test asked for: Atlas's (8000) before any privilege check, a missing privilege's (13) after."""
    if refusal == "atlas" and before_login:
        raise CommandError(8000, ATLAS_REFUSAL.format(command))
    if refusal == "unauthorized" and not before_login:
        raise CommandError(13, f"not authorized on {db} to execute command {{ {command}: ... }}")


def _get_shard_map(model: RouterModel, session: Session, request: wire.Request) -> dict[str, Any]:
    _refuse_if(model.catalog.shard_map_refusal, "getShardMap", "admin", before_login=True)
    _require(model, session, request, commands._can_monitor)
    _refuse_if(model.catalog.shard_map_refusal, "getShardMap", "admin", before_login=False)
    return _ok(model, model.catalog.shard_map())


def _list_shards(model: RouterModel, session: Session, request: wire.Request) -> dict[str, Any]:
    _refuse_if(model.catalog.list_shards_refusal, "listShards", "admin", before_login=True)
    _require(model, session, request, commands._can_monitor)
    _refuse_if(model.catalog.list_shards_refusal, "listShards", "admin", before_login=False)
    _require_config_servers(model)
    return _ok(model, {"shards": model.catalog.list_shards()})


def _find(model: RouterModel, session: Session, request: wire.Request) -> dict[str, Any]:
    body, db = request.body, request.db
    coll = body.get("find")
    if not isinstance(coll, str):
        raise CommandError(2, "collection name has invalid type")
    shards = (db, coll) == ("config", "shards")
    if shards:
        _refuse_if(model.catalog.config_shards_refusal, 'find: "shards"', db, before_login=True)
    _require(model, session, request, _can_read(db))
    batch: list[dict[str, Any]] = []
    if shards:
        _refuse_if(model.catalog.config_shards_refusal, 'find: "shards"', db, before_login=False)
        _require_config_servers(model)
        flt = body.get("filter") or {}
        batch = [d for d in model.catalog.shard_documents() if _matches(d, flt)]
        limit = abs(int(body.get("limit") or 0))
        batch = batch[:limit] if limit else batch
        if body.get("projection"):
            batch = [_project(d, body["projection"]) for d in batch]
    return _ok(model, {"cursor": {"firstBatch": batch, "id": Int64(0), "ns": f"{db}.{coll}"}})


def _matches(doc: dict[str, Any], flt: Any) -> bool:
    """Equality, $eq, $ne, $in, $exists on top-level fields: enough to ask config.shards who is draining."""
    if not isinstance(flt, dict):
        raise CommandError(2, "filter must be an object")
    for field, cond in flt.items():
        value, present = doc.get(field), field in doc
        ops = cond if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond) else {"$eq": cond}
        for op, arg in ops.items():
            if op == "$eq":
                ok = present and value == arg
            elif op == "$ne":
                ok = not present or value != arg
            elif op == "$in":
                ok = present and value in arg
            elif op == "$exists":
                ok = present == bool(arg)
            else:
                raise CommandError(2, f"mongosim: config.shards filters support $eq, $ne, $in, $exists, not {op}")
            if not ok:
                return False
    return True


def _project(doc: dict[str, Any], projection: Any) -> dict[str, Any]:
    if not isinstance(projection, dict):
        raise CommandError(2, "projection must be an object")
    include = {k for k, v in projection.items() if v}
    if include:
        return {k: v for k, v in doc.items() if k in include or (k == "_id" and projection.get("_id", 1))}
    return {k: v for k, v in doc.items() if k not in projection}


def _server_status(model: RouterModel, session: Session, request: wire.Request) -> dict[str, Any]:
    _require(model, session, request, commands._can_monitor)
    me, now = model.member, model.now()
    stats = me.stats
    doc = commands.server_status_head(me, now, PROFILES[me.version].version, "mongos") | {
        "mem": {"bits": 64, "resident": 48, "virtual": 1024, "supported": True},
        "network": {
            "bytesIn": Int64(stats["bytes_in"]),
            "bytesOut": Int64(stats["bytes_out"]),
            "numRequests": Int64(stats["requests"]),
        },
        "opcounters": {k: Int64(stats["requests"] if k == "command" else 0) for k in _OPCOUNTERS},
        "sharding": model.catalog.sharding_status(now, me.version),
    }
    return _ok(model, doc)


_OPCOUNTERS = ("insert", "query", "update", "delete", "getmore", "command")

_COMMANDS: dict[str, Handler] = {
    "hello": _hello,
    "isMaster": _hello,
    "ismaster": _hello,
    "replSetGetStatus": _repl_set_get_status,
    "getShardMap": _get_shard_map,
    "listShards": _list_shards,
    "listshards": _list_shards,
    "find": _find,
    "serverStatus": _server_status,
}
