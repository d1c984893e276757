"""The owner of a replica set's connection: makes it, renews it when the driver forgot every seed, closes it, and
explains a failure from the heartbeats it observed.

With `replicaSet=` in the URI the driver drops a seed that answers as a standalone (or for another set) and never
looks at the URI's hosts again, so once every seed was dropped it cannot recover even when the servers are fixed.
The keeper then starts over with a fresh connection from the URI. Imports `driver` and `kinds`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from driver import Connection, DriverError
from kinds import FailureKind

log = logging.getLogger("replicationlag.keeper")


class ClientKeeper:
    """Holds one `Connection`, made by `connect` (which raises `driver.ClientError` for a URI it rejects)."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._connection = connect()
        self._forgotten = False
        self._renewed_since_success = False

    @property
    def connection(self) -> Connection:
        """The connection to use now; renewed first when the last poll left the driver knowing no server."""
        if self._forgotten:
            self._renew()
        return self._connection

    def explain(self, error: DriverError) -> tuple[FailureKind, str]:
        """The failure in words; "no member reachable" is made precise from what the heartbeats saw."""
        self._forgotten = self._connection.knows_no_server
        if error.kind is FailureKind.UNREACHABLE and (diagnosis := self._connection.diagnosis()) is not None:
            return diagnosis
        return error.kind, error.message

    def succeeded(self) -> None:
        self._renewed_since_success = False

    def close(self, wait_s: float) -> None:
        """Close the connection held now, waiting at most `wait_s` for it."""
        self._connection.close_in_background().join(wait_s)

    def _renew(self) -> None:
        self._forgotten = False
        try:
            fresh = self._connect()
        except Exception as error:
            log.warning("could not make a fresh MongoDB client: %s", type(error).__name__)
            return
        # Said once per outage; while the servers stay wrong, every poll starts over again.
        log.log(
            logging.DEBUG if self._renewed_since_success else logging.INFO,
            "the driver knows no member of the set any more; starting over from the hosts of the URI",
        )
        self._renewed_since_success = True
        old, self._connection = self._connection, fresh
        old.close_in_background()
