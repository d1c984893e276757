"""Sources of what the poller publishes: one replica set (its connection's keeper and its reader, judged by the
engine), and the source that decides at the first handshake whether the URI names a set or mongos routers.

`ReplicaSetSource.collect()` asks the set once (the reader bounds every command by the poll deadline) and returns
one `Snapshot` or one `Failure` in words; it raises only on a bug, which the poller turns into a failure.
Imports `model`, `mongo.driver`, `mongo.keeper`, `mongo.reader` and `replset`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from replicationlag.model import ClusterResult, Failure, Snapshot, wall_now_ms
from replicationlag.mongo.driver import DriverError
from replicationlag.mongo.keeper import ClientKeeper
from replicationlag.mongo.reader import SetReader
from replicationlag.replset import build_snapshot


class ReplicaSetSource:
    """Snapshots of one replica set, one per `collect()`."""

    def __init__(self, keeper: ClientKeeper, reader: SetReader, now_ms: Callable[[], int] = wall_now_ms) -> None:
        self._keeper = keeper
        self._reader = reader
        self._now_ms = now_ms

    def collect(self) -> Snapshot | Failure:
        try:
            documents = self._reader.read(self._keeper)
        except DriverError as error:
            kind, message = self._keeper.explain(error)
            return Failure(kind, message, self._now_ms())
        self._keeper.succeeded()
        return build_snapshot(
            documents.status,
            documents.config,
            documents.probes,
            documents.evidence,
            asked_between_ms=documents.asked_between_ms,
        )

    def close(self, wait_s: float) -> None:
        self._keeper.close(wait_s)


class Source(Protocol):
    def collect(self) -> Snapshot | Failure | ClusterResult: ...

    def close(self, wait_s: float) -> None: ...


class DetectingSource:
    """The URI's servers decide what is watched: a replica set, or (mongos routers) the whole sharded cluster.

    A URI with `replicaSet=` names a set. Otherwise the first handshake tells: a mongos answers `hello` with
    `msg: "isdbgrid"` (docs/domain.md §8, §11). Until a server answers, each poll fails as an unreachable set would.
    """

    def __init__(
        self,
        keeper: ClientKeeper,
        replica_set: Callable[[ClientKeeper], Source],
        sharded: Callable[[ClientKeeper], Source],
        now_ms: Callable[[], int] = wall_now_ms,
    ) -> None:
        self._keeper = keeper
        self._replica_set = replica_set
        self._sharded = sharded
        self._now_ms = now_ms
        self._chosen: Source | None = None

    def collect(self) -> Snapshot | Failure | ClusterResult:
        if self._chosen is None:
            connection = self._keeper.connection
            if connection.names_a_replica_set:
                self._chosen = self._replica_set(self._keeper)
            else:
                try:
                    with connection.deadline(connection.timeout_s):
                        hello = connection.command("hello")
                except DriverError as error:
                    kind, message = self._keeper.explain(error)
                    return Failure(kind, message, self._now_ms())
                is_router = isinstance(hello, dict) and hello.get("msg") == "isdbgrid"
                self._chosen = (self._sharded if is_router else self._replica_set)(self._keeper)
        return self._chosen.collect()

    def close(self, wait_s: float) -> None:
        (self._chosen or self._keeper).close(wait_s)
