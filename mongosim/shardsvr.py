"""What a member of a shard or of the config server set answers: a replica-set member's reply plus the markers a
real one carries.

`member_dispatch()` wraps `commands.dispatch` (the server's dispatch hook), so every replica-set document stays the
one commands.py builds and only what a real sharded member adds is put in, where the real server puts it:

- config server members: `configsvr: 2` in hello (before maxBsonObjectSize, as mongod's hello appends it after the
  replication fields), `configsvr: true` in replSetGetStatus (right after syncSourceId, before
  heartbeatIntervalMillis, as TopologyCoordinator::prepareStatusResponse does) and in replSetGetConfig's config
  (before protocolVersion, where the layout of the simulator's config documents has it);
- shard and config server members: serverStatus's `sharding` section (configsvrConnectionString,
  lastSeenConfigServerOpTime, maxChunkSizeInBytes), before storageEngine as sections come in name order.

A shard member's hello, replSetGetStatus and config carry no marker, as on a real one.

Imports `.catalog`, `.commands`, `.model`, `.server` (a type) and `.wire` (a type).
"""

from __future__ import annotations

from typing import Any

from . import commands, wire
from .catalog import Catalog
from .model import Member, SetModel
from .server import Dispatch

_HELLO_NAMES = ("hello", "isMaster", "ismaster")


def member_dispatch(catalog: Catalog, config_server: bool) -> Dispatch:
    """The dispatch of a shard member (`config_server=False`) or of a config server member."""

    def dispatch(model: SetModel, member: Member, session: commands.Session, request: wire.Request) -> dict[str, Any]:
        doc = commands.dispatch(model, member, session, request)
        if doc.get("ok") != 1.0:
            return doc
        name = next(iter(request.body), "")
        if config_server:
            if name in _HELLO_NAMES:
                doc = insert(doc, "configsvr", 2, before="maxBsonObjectSize")
            elif name == "replSetGetStatus":
                doc = insert(doc, "configsvr", True, after="syncSourceId")
            elif name == "replSetGetConfig":
                doc["config"] = insert(doc["config"], "configsvr", True, before="protocolVersion")
        if name == "serverStatus":
            section = catalog.sharding_status(model.now(), member.version)
            doc = insert(doc, "sharding", section, before="storageEngine")
        return doc

    return dispatch


def insert(doc: dict[str, Any], key: str, value: Any, *, before: str = "", after: str = "") -> dict[str, Any]:
    """A copy of `doc` with `key` placed before or after another field (at the end when that field is absent)."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if k == before:
            out[key] = value
        out[k] = v
        if k == after:
            out[key] = value
    out.setdefault(key, value)
    return out
