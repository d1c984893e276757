"""A sharded cluster as a source: the shard map read through the mongos routers at every poll, and every replica
set of it (each shard and the config servers) polled concurrently under the same deadline (docs/domain.md §11).

Each set has its own `ReplicaSetSource` (its own connection, reader and cached config), opened when the set enters
the map and closed when it leaves it. Each set is polled on a thread of its own, started at the beginning of the
poll, so a hung or failing set costs only its own result: the others publish fresh values in the same poll. The
map is read beside them; a set that appears in it is polled at once. When no router answers, the last known map
is polled and the result says why. Imports `model`, `mongo.driver`, `mongo.keeper`,
`mongo.source` and `shardmap`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from replicationlag.model import (
    ClusterResult,
    Failure,
    FailureKind,
    RouterState,
    SetAddress,
    SetRole,
    ShardMap,
    Snapshot,
    wall_now_ms,
)
from replicationlag.mongo.driver import COMMAND_NOT_FOUND, UNAUTHORIZED, ClientError, DriverError
from replicationlag.mongo.keeper import ClientKeeper
from replicationlag.mongo.source import ReplicaSetSource
from replicationlag.shardmap import from_shard_documents, from_shard_map
from replicationlag.text import neutral

log = logging.getLogger("replicationlag.cluster")

ATLAS_ERROR = 8000  # Atlas shared tiers refuse getShardMap with AtlasError "CMD_NOT_ALLOWED"
REFUSED_CODES = frozenset({UNAUTHORIZED, COMMAND_NOT_FOUND, ATLAS_ERROR})
SHARD_DOCUMENTS_LIMIT = 10_000  # config.shards holds one document per shard
# A set's thread gets this long past the deadline before its poll counts as timed out; less than the poller's
# watchdog grace, so that a cluster poll always ends with one result per set.
GRACE_S = 0.5


@dataclass
class _Watched:
    """One set of the map and its source; `running` is its poll thread while one runs."""

    address: SetAddress
    source: ReplicaSetSource | None  # None when its connection could not be made (the reason is in `broken`)
    broken: Failure | None = None
    running: threading.Thread | None = None
    box: list[Snapshot | Failure] = field(default_factory=list)


class ShardedSource:
    """Polls every replica set of a sharded cluster; `collect()` returns one `ClusterResult`."""

    def __init__(
        self,
        router: ClientKeeper,
        open_set: Callable[[SetAddress], ReplicaSetSource],
        timeout_s: float,
        *,
        infra: str = "",
        shard_tables: tuple[str, ...] = (),
        now_ms: Callable[[], int] = wall_now_ms,
    ) -> None:
        self._router = router
        self._open_set = open_set
        self._timeout_s = timeout_s
        self._infra = infra
        # The shard ids of the config file's [infra.<label>.shards.<id>] tables not yet seen in a map read; each
        # that a map read does not show is warned about once (a typo would otherwise go unnoticed).
        self._unseen_tables = set(shard_tables)
        self._now_ms = now_ms
        self._map: ShardMap | None = None
        self._watched: dict[str, _Watched] = {}
        self._lock = threading.Lock()  # collect() and close() may race at shutdown
        self._closed = False

    def collect(self) -> ClusterResult:
        deadline = time.monotonic() + self._timeout_s
        started = [self._start(watched) for watched in list(self._watched.values())]
        fresh_map, map_failure = self._read_map()
        if fresh_map is not None:
            self._map = fresh_map
            self._check_shard_tables(fresh_map)
        shard_map = self._map
        if shard_map is not None:
            for address in shard_map.sets:
                watched = self._watched.get(address.name)
                if watched is None:
                    started.append(self._start(self._open(address)))
                else:
                    watched.address = address  # draining, hosts: the map is the truth
        for thread in started:
            if thread is not None:
                thread.join(max(0.0, deadline + GRACE_S - time.monotonic()))
        results = tuple((a, self._result_of(self._watched[a.name])) for a in (shard_map.sets if shard_map else ()))
        self._forget_sets_not_in(shard_map)
        routers = tuple(RouterState(address, up) for address, up in self._router.connection.server_states())
        return ClusterResult(shard_map, map_failure, results, routers)

    def close(self, wait_s: float) -> None:
        """Close the router connection and every set's, waiting at most about `wait_s` in all. One thread closes
        the sets: starting a closing thread per set from here took 4.8 s at 300 shards during a poll, since each
        start waits for the new thread's turn among a thousand busy ones (bench/RESULTS.md, section 7)."""
        until = time.monotonic() + wait_s
        with self._lock:
            self._closed = True  # a poll still running opens no set from now on
            watched, self._watched = list(self._watched.values()), {}
        sources = [each.source for each in watched if each.source is not None]
        closer = threading.Thread(target=_close_all, args=(sources,), name="close-sets", daemon=True)
        closer.start()
        self._router.close(wait_s)
        closer.join(max(0.0, until - time.monotonic()))

    # --- the map ------------------------------------------------------------------------------------------------

    def _read_map(self) -> tuple[ShardMap | None, Failure | None]:
        """The map through any router: getShardMap (names the config set too), else listShards, else
        config.shards. Returns (map, None) or (None, why it could not be read)."""
        connection = self._router.connection
        try:
            with connection.deadline(self._timeout_s):
                try:
                    reply = connection.command("getShardMap")
                except DriverError as error:
                    if error.code not in REFUSED_CODES:
                        raise
                    return self._listed_shards(connection), None
                found = from_shard_map(reply, self._shard_documents_quietly(connection))
        except DriverError as error:
            kind, message = self._router.explain(error)
            return None, Failure(kind, f"cannot read the shard map through the routers: {message}", self._now_ms())
        except _MapRefused as refused:
            return None, Failure(FailureKind.UNAUTHORIZED, str(refused), self._now_ms())
        if found is None:
            return None, Failure(FailureKind.ERROR, "getShardMap named no replica set", self._now_ms())
        return found, None

    def _check_shard_tables(self, shard_map: ShardMap) -> None:
        """Warn, once each, of a per-shard credentials table whose name is no shard id of the map just read."""
        if not self._unseen_tables:
            return
        ids = [a.shard_id for a in shard_map.sets if a.role is SetRole.SHARD]
        for shard_id in sorted(self._unseen_tables - set(ids)):
            log.warning(
                "[infra.%s.shards.%s] names no shard of the routers' shard map (shards: %s): its credentials are "
                "not used; a table's name must be a shard id",
                self._infra,
                shard_id,
                ", ".join(ids) or "none",
            )
        self._unseen_tables = set()

    def _shard_documents_quietly(self, connection) -> list:
        """listShards' documents, for `draining`; the map is complete without them, so a refusal costs nothing."""
        try:
            reply = connection.command("listShards")
        except DriverError as error:
            if error.timeout:
                raise
            return []
        shards = reply.get("shards") if isinstance(reply, dict) else None
        return shards if isinstance(shards, list) else []

    def _listed_shards(self, connection) -> ShardMap | None:
        """getShardMap was refused (Atlas shared tiers, a user without it): the shards, without the config set."""
        for source in ("listShards", "config.shards"):
            try:
                if source == "listShards":
                    reply = connection.command("listShards")
                    documents = reply.get("shards") if isinstance(reply, dict) else None
                else:
                    documents = connection.find("config", "shards", SHARD_DOCUMENTS_LIMIT)
            except DriverError as error:
                if error.code in REFUSED_CODES:
                    continue
                raise
            found = from_shard_documents(documents if isinstance(documents, list) else [], source)
            if found is not None:
                return found
        raise _MapRefused(
            "the routers refuse getShardMap, listShards and reading config.shards: grant the monitoring user "
            "clusterMonitor (and read on the config database)"
        )

    # --- the sets -----------------------------------------------------------------------------------------------

    def _open(self, address: SetAddress) -> _Watched:
        if self._closed:  # a poll that was running when close() came opens nothing that nobody would close
            return self._stopping(address)
        try:
            watched = _Watched(address, self._open_set(address))
        except ClientError as error:
            watched = _Watched(address, None, Failure(FailureKind.ERROR, str(error), self._now_ms()))
        with self._lock:
            closed = self._closed
            if not closed:
                self._watched[address.name] = watched
        if closed:
            if watched.source is not None:
                watched.source.close(0)
            return self._stopping(address)
        log.info("watching %s: %s", neutral(address.label), neutral(",".join(address.hosts)))
        return watched

    def _stopping(self, address: SetAddress) -> _Watched:
        return _Watched(address, None, Failure(FailureKind.ERROR, "the exporter is stopping", self._now_ms()))

    def _start(self, watched: _Watched) -> threading.Thread | None:
        """Start the set's poll on its own thread; None (and no new poll) while its previous poll still runs."""
        if watched.source is None or (watched.running is not None and watched.running.is_alive()):
            return None
        box: list[Snapshot | Failure] = []
        source = watched.source
        thread = threading.Thread(
            target=lambda: box.append(_collect_safely(source, self._now_ms)),
            name=f"poll-{watched.address.name}",
            daemon=True,
        )
        watched.running, watched.box = thread, box
        thread.start()
        return thread

    def _result_of(self, watched: _Watched) -> Snapshot | Failure:
        if watched.broken is not None:
            return watched.broken
        if watched.box:
            result = watched.box[0]
            watched.box = []
            return _with_advice(watched.address, result, self._infra)
        if watched.running is not None and watched.running.is_alive():
            message = f"the poll did not finish within its {self._timeout_s:g} s deadline"
            return Failure(FailureKind.TIMEOUT, message, self._now_ms())
        return Failure(FailureKind.ERROR, "the set's poll ended without a result", self._now_ms())

    def _forget_sets_not_in(self, shard_map: ShardMap | None) -> None:
        keep = shard_map.names() if shard_map is not None else frozenset(self._watched)
        with self._lock:
            leaving = [w for name, w in self._watched.items() if name not in keep]
            for watched in leaving:
                del self._watched[watched.address.name]
        for watched in leaving:
            log.info("%s left the shard map; its connection is closed", neutral(watched.address.label))
            if watched.source is not None:
                watched.source.close(0)


class _MapRefused(Exception):
    """Every way of reading the shard map was refused; the text says what to grant."""


def _close_all(sources: list[ReplicaSetSource]) -> None:
    for source in sources:
        source.close(0)


def _collect_safely(source: ReplicaSetSource, now_ms: Callable[[], int]) -> Snapshot | Failure:
    try:
        return source.collect()
    except Exception as error:  # a bug must cost one set's result, not the thread's silence
        return Failure(FailureKind.ERROR, f"unexpected {type(error).__name__} while collecting", now_ms())


def _with_advice(address: SetAddress, result: Snapshot | Failure, infra: str) -> Snapshot | Failure:
    """A login or privilege failure on a set behind the routers, with what to create or grant, and where."""
    if not isinstance(result, Failure) or result.kind not in (FailureKind.AUTH, FailureKind.UNAUTHORIZED):
        return result
    section = "shards" if address.role is SetRole.SHARD else "config_servers"
    where = f"{address.shard_id}'s replica set" if address.role is SetRole.SHARD else "the config server replica set"
    if result.kind is FailureKind.AUTH:
        if address.role is SetRole.SHARD:
            advice = (
                f"create the monitoring user on {where} (a shard-local user: clusterMonitor, read on local), "
                f"or give its credentials in [infra.{infra}.{section}] of the config file"
            )
        else:
            advice = (
                f"the router's user should log in on {where}; give other credentials in "
                f"[infra.{infra}.{section}] of the config file"
            )
        message = f"authentication failed on {address.label}: {advice}"
    else:
        grant = "clusterMonitor and read on local"
        message = f"not authorized on {address.label}: grant the monitoring user on {where} {grant}"
    return Failure(result.kind, message, result.at_ms)
