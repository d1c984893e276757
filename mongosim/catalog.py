"""A sharded cluster's metadata, as its config servers hold it and its routers serve it.

A `Catalog` knows the config server replica set and the shards (id, replica set, when it was added, whether it is
draining) and builds from them the documents a router answers:

- `shard_map()`: getShardMap's `map` (shard id -> "rsName/h:p,h:p", then `config` -> the config server set),
  `hosts` (host -> shard id) and `connStrings` (connection string -> shard id), as `ShardRegistry::toBSON` does;
- `list_shards()`: listShards's `shards`, fields in `ShardType::toBSON` order (_id, host, draining, state,
  topologyTime, replSetConfigVersion);
- `shard_documents()`: the raw `config.shards` documents, where `draining` comes last because removeShard adds it
  with `$set` to a document that already exists;
- `sharding_status()`: serverStatus's `sharding` section of routers, shard and config server members.

Version differences (the cluster's version): `topologyTime` from 5.0, `replSetConfigVersion: -1` from 8.0 (as
8.0's sh.status() and listShards show it), chunks of 128 MiB from 6.0 (64 MiB before).

Host strings are read from each set's members when asked: the members that are neither hidden nor arbiters, as a
replica set's connection string lists them, so a member added, removed or renamed shows at once (a real router
learns it from its replica set monitor within seconds). Everything here is read on the cluster's loop thread.

Imports `bson` and `.model` only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from bson import Int64, Timestamp

from .model import PROFILES, SetModel, profile

CONFIG_ID = "config"  # ShardId::kConfigServerId: the config server set in getShardMap, and a config shard's _id
CHUNK_BYTES = {True: 128 * 1024 * 1024, False: 64 * 1024 * 1024}  # by "6.0 or later"


@dataclass
class ShardEntry:
    """One shard as config.shards holds it."""

    id: str
    model: SetModel
    topology_time: Timestamp  # the cluster time at which it was added
    draining: bool = False


def connection_string(model: SetModel) -> str:
    """ "rsName/h1:p1,h2:p2": the set's members that are neither hidden nor arbiters."""
    hosts = [x.name for x in model.members.values() if x.data_bearing and not x.hidden]
    return f"{model.name}/{','.join(hosts)}"


class Catalog:
    """The config server set and the shards of one cluster; the documents routers build from them."""

    def __init__(self, version: str) -> None:
        self.profile = profile(version)
        self.config: SetModel | None = None  # attached once the config server set exists
        self.shards: dict[str, ShardEntry] = {}  # in config.shards natural order: the order they were added
        self.shard_map_refusal: str | None = None  # None, "unauthorized" or "atlas"
        self.list_shards_refusal: str | None = None  # the same, for listShards
        self.config_shards_refusal: str | None = None  # the same, for reads of config.shards
        self._incs = itertools.count(1)

    @property
    def config_model(self) -> SetModel:
        if self.config is None:
            raise RuntimeError("the catalog has no config server set yet")
        return self.config

    # -- changes --

    def add(self, shard_id: str, model: SetModel, now_ms: int) -> ShardEntry:
        if shard_id in self.shards:
            raise ValueError(f"there is already a shard {shard_id!r}")
        entry = ShardEntry(shard_id, model, Timestamp(now_ms // 1000, next(self._incs)))
        self.shards[shard_id] = entry
        return entry

    def entry(self, shard_id: str) -> ShardEntry:
        try:
            return self.shards[shard_id]
        except KeyError:
            raise KeyError(f"no shard {shard_id!r}; shards: {', '.join(self.shards) or 'none'}") from None

    # -- what routers and members report --

    def config_string(self) -> str:
        return connection_string(self.config_model)

    def config_reachable(self) -> bool:
        """Whether a router can read from the config servers (any member up and answering: reads go to the
        nearest)."""
        return any(x.reachable and x.data_bearing for x in self.config_model.members.values())

    def shard_map(self) -> dict[str, Any]:
        """getShardMap's map, hosts and connStrings: the shards sorted by id, then the config server set."""
        sets = [(e.id, e.model) for e in sorted(self.shards.values(), key=lambda e: e.id) if e.id != CONFIG_ID]
        sets.append((CONFIG_ID, self.config_model))
        mapping: dict[str, str] = {}
        hosts: dict[str, str] = {}
        conn_strings: dict[str, str] = {}
        for shard_id, model in sets:
            conn = connection_string(model)
            mapping[shard_id] = conn
            for host in conn.partition("/")[2].split(","):
                if host:
                    hosts[host] = shard_id
            conn_strings[conn] = shard_id
        return {"map": mapping, "hosts": hosts, "connStrings": conn_strings}

    def list_shards(self) -> list[dict[str, Any]]:
        """listShards's shards (ShardType::toBSON order: draining right after host)."""
        docs = []
        for e in self.shards.values():
            doc: dict[str, Any] = {"_id": e.id, "host": connection_string(e.model)}
            if e.draining:
                doc["draining"] = True
            doc.update(self._tail(e))
            docs.append(doc)
        return docs

    def shard_documents(self) -> list[dict[str, Any]]:
        """config.shards as stored: removeShard's `$set: {draining: true}` appends the field at the end."""
        docs = []
        for e in self.shards.values():
            doc: dict[str, Any] = {"_id": e.id, "host": connection_string(e.model), **self._tail(e)}
            if e.draining:
                doc["draining"] = True
            docs.append(doc)
        return docs

    def _tail(self, e: ShardEntry) -> dict[str, Any]:
        doc: dict[str, Any] = {"state": 1}
        if self.profile.at_least("5.0"):
            doc["topologyTime"] = e.topology_time
        if self.profile.at_least("8.0"):
            doc["replSetConfigVersion"] = Int64(-1)
        return doc

    def sharding_status(self, now_ms: int, version: str) -> dict[str, Any]:
        """serverStatus's `sharding` section (routers, shard and config server members)."""
        last = self.config_model.oplog.last_at_or_before(now_ms)
        return {
            "configsvrConnectionString": self.config_string(),
            "lastSeenConfigServerOpTime": {"ts": last.ts if last else Timestamp(0, 0), "t": Int64(-1)},
            "maxChunkSizeInBytes": Int64(CHUNK_BYTES[PROFILES[version].at_least("6.0")]),
        }
