"""The owner of a replica set's connections: makes the set's, renews it when the driver forgot every seed, keeps a
direct connection for each member the set's connection cannot read from (hidden, recovering, in initial sync) for
what only that member can answer (its own oplog, its initial sync), closes them all, and explains a failure from
the heartbeats it observed.

With `replicaSet=` in the URI the driver drops a seed that answers as a standalone (or for another set) and never
looks at the URI's hosts again, so once every seed was dropped it cannot recover even when the servers are fixed.
The keeper then starts over with a fresh connection from the URI. Imports `model` and `mongo.driver`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from replicationlag.model import FailureKind
from replicationlag.mongo.driver import Connection, DriverError

log = logging.getLogger("replicationlag.keeper")


class ClientKeeper:
    """Holds the set's `Connection`, made by `connect` (which raises `driver.ClientError` for a URI it rejects),
    and the members' direct connections, made by `connect_member(host:port)` when first needed."""

    def __init__(
        self, connect: Callable[[], Connection], connect_member: Callable[[str], Connection] | None = None
    ) -> None:
        self._connect = connect
        self._connect_member = connect_member
        self._connection = connect()
        self._members: dict[str, Connection] = {}
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

    def reads_of(self, name: str) -> Connection | None:
        """Where to read what only one member can answer (aim the reads at it with `Connection.aimed_at`): the
        set's own connection when the driver reads from that member anyway (a primary or a secondary), else a
        direct connection kept for it (a hidden member, one recovering or in initial sync); None when members
        are not read directly. Raises `driver.ClientError` when the member's address makes no URI."""
        if self._connection.serves(name):
            return self._connection
        if self._connect_member is None:
            return None
        if name not in self._members:
            self._members[name] = self._connect_member(name)
        return self._members[name]

    def keep_members(self, names: set[str]) -> None:
        """Close the direct connections of members that no longer need one (gone, or readable through the set's
        connection again): a direct connection costs two threads that wake twice a second."""
        for name in set(self._members) - {n for n in names if not self._connection.serves(n)}:
            self._members.pop(name).close_in_background()

    def close(self, wait_s: float) -> None:
        """Close every connection held now, waiting at most `wait_s` for the set's."""
        for member in self._members.values():
            member.close_in_background()
        self._members = {}
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
