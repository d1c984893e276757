"""The replica sets of a sharded cluster, read from what a mongos router answers (docs/domain.md §11).

PURE: no I/O. `getShardMap` names every shard's set and the config server set; `listShards` (or the
`config.shards` collection) names the shards only, with `draining` while a shard is being removed. Sets are
deduplicated by replica-set name: from 8.0 the config server set can also be a shard (a "config shard") and is
then listed twice. The shards come in natural order of their ids (shard2 before shard10), which /metrics and the
readers keep. Imports `model` (where the address types live) and `text` (the natural order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from replicationlag.model import SetAddress, SetRole, ShardMap
from replicationlag.text import natural_key

CONFIG_SHARD_ID = "config"  # getShardMap's key for the config server set, and the _id of an 8.0 config shard


def parse_connection_string(text: Any) -> tuple[str, tuple[str, ...]] | None:
    """`"rsName/h1:p,h2:p"` as (rsName, hosts); None when it is not one (a standalone shard has no `rsName/`)."""
    if not isinstance(text, str) or "/" not in text:
        return None
    name, _, hosts = text.partition("/")
    seeds = tuple(h.strip() for h in hosts.split(",") if h.strip())
    return (name, seeds) if name and seeds else None


def from_shard_map(reply: Mapping[str, Any], shards: Iterable[Mapping[str, Any]] = ()) -> ShardMap | None:
    """The map from a `getShardMap` reply, with `draining` taken from `listShards` documents when given.

    None when the reply holds no usable `map`.
    """
    entries = reply.get("map") if isinstance(reply, Mapping) else None
    if not isinstance(entries, Mapping):
        return None
    draining = {doc.get("_id") for doc in shards if isinstance(doc, Mapping) and doc.get("draining") is True}
    found = []
    for shard_id, text in entries.items():
        parsed = parse_connection_string(text)
        if parsed is None:
            continue
        name, hosts = parsed
        role = SetRole.CONFIG if shard_id == CONFIG_SHARD_ID else SetRole.SHARD
        found.append(SetAddress(name, hosts, role, str(shard_id), str(shard_id) in draining))
    if not found:
        return None
    return ShardMap(_deduplicated(found), "getShardMap", config_watched=any(s.role is SetRole.CONFIG for s in found))


def from_shard_documents(documents: Iterable[Any], source: str) -> ShardMap | None:
    """The map from `listShards`' `shards` (or the `config.shards` documents): shards only, no config set."""
    found = []
    for doc in documents:
        if not isinstance(doc, Mapping):
            continue
        parsed = parse_connection_string(doc.get("host"))
        if parsed is None or not isinstance(doc.get("_id"), str):
            continue
        name, hosts = parsed
        # An 8.0 config shard is the config server set, listed here as the shard "config".
        role = SetRole.CONFIG if doc["_id"] == CONFIG_SHARD_ID else SetRole.SHARD
        found.append(SetAddress(name, hosts, role, doc["_id"], doc.get("draining") is True))
    if not found:
        return None
    return ShardMap(_deduplicated(found), source, config_watched=any(s.role is SetRole.CONFIG for s in found))


def _deduplicated(found: list[SetAddress]) -> tuple[SetAddress, ...]:
    """One address per replica-set name: an 8.0 config shard appears as a shard and as the config set."""
    by_name: dict[str, SetAddress] = {}
    for address in found:
        known = by_name.get(address.name)
        if known is None:
            by_name[address.name] = address
            continue
        # The config role wins (it is the config server set that also holds data); hosts are merged.
        hosts = tuple(dict.fromkeys(known.hosts + address.hosts))
        role = SetRole.CONFIG if SetRole.CONFIG in (known.role, address.role) else known.role
        shard_id = CONFIG_SHARD_ID if role is SetRole.CONFIG else known.shard_id
        by_name[address.name] = replace(
            known, hosts=hosts, role=role, shard_id=shard_id, draining=known.draining or address.draining
        )
    shards = sorted((s for s in by_name.values() if s.role is SetRole.SHARD), key=lambda s: natural_key(s.shard_id))
    configs = [s for s in by_name.values() if s.role is SetRole.CONFIG]
    return tuple(shards + configs)
