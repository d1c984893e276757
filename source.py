"""One replica set as a source of snapshots: its connection's keeper and its reader, judged by the engine.

`collect()` asks the set once (the reader bounds every command by the poll deadline) and returns one `Snapshot`
or one `Failure` in words; it raises only on a bug, which the poller turns into a failure. Imports `driver`,
`keeper`, `reader`, `replset` and `store` (its clock).
"""

from __future__ import annotations

from collections.abc import Callable

from driver import DriverError
from keeper import ClientKeeper
from reader import SetReader
from replset import Failure, Snapshot, build_snapshot
from store import wall_now_ms


class ReplicaSetSource:
    """Snapshots of one replica set, one per `collect()`."""

    def __init__(self, keeper: ClientKeeper, reader: SetReader, now_ms: Callable[[], int] = wall_now_ms) -> None:
        self._keeper = keeper
        self._reader = reader
        self._now_ms = now_ms

    def collect(self) -> Snapshot | Failure:
        try:
            documents = self._reader.read(self._keeper.connection)
        except DriverError as error:
            kind, message = self._keeper.explain(error)
            return Failure(kind, message, self._now_ms())
        self._keeper.succeeded()
        return build_snapshot(documents.status, documents.config, documents.probes)

    def close(self, wait_s: float) -> None:
        self._keeper.close(wait_s)
