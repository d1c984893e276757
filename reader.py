"""One poll's commands against one replica set, and the documents they return.

`replSetGetStatus` (PRIMARY_PREFERRED, asked once more if the connection broke under it, and asked of the primary
when a secondary answered while a primary is up), `replSetGetConfig` only when the set's configuration changed
(cached here), and one lookup in the primary's oplog per lagging member (docs/domain.md §6). Everything runs under
one deadline; errors leave as `driver.DriverError`. Imports `driver`, `kinds` and `replset`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from driver import UNAUTHORIZED, Connection, DriverError, wall_ms
from replset import OplogProbe, StatusReport, config_is_stale, read_status

log = logging.getLogger("replicationlag.reader")


@dataclass(frozen=True)
class SetDocuments:
    """What one poll read from a replica set: the status (read once), the config in force, the oplog probes."""

    status: StatusReport
    config: dict[str, Any] | None
    probes: dict[str, OplogProbe]


class SetReader:
    """Reads one replica set per poll and caches its config between polls."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._config: dict[str, Any] | None = None
        self._config_key: tuple[str, ...] | None = None

    def read(self, connection: Connection) -> SetDocuments:
        """Ask the set once, within the deadline. Raises `DriverError`."""
        with connection.deadline(self._timeout_s):
            status = read_status(self._replset_get_status(connection))
            if not status.answered_by_primary and status.reports_a_healthy_primary:
                status = self._ask_the_primary(connection) or status
            config = self._config_for(connection, status)
            probes = self._probe_oplog(connection, status)
        return SetDocuments(status, config, probes)

    def _replset_get_status(self, connection: Connection) -> dict[str, Any]:
        """replSetGetStatus, asked once more if the connection broke under it (the member went down or hung and
        the driver's heartbeat gave up on it). The driver has then marked that member unknown, so the second try
        goes to another member, within the same deadline: one member failing mid-poll costs no poll."""
        try:
            return connection.command("replSetGetStatus")
        except DriverError as error:
            if not error.broken:
                raise  # no member to ask, or no time left to ask one
            log.debug("the connection broke during replSetGetStatus; asking another member")
        return connection.command("replSetGetStatus")

    def _ask_the_primary(self, connection: Connection) -> StatusReport | None:
        """A secondary answered although a primary is up: the driver may not have found the primary yet (just
        started, just elected). The primary's view is the fresh one (docs/domain.md §4), so ask it once, with half
        the deadline, keeping the secondary's answer if the primary cannot be reached from here."""
        try:
            with connection.deadline(self._timeout_s / 2):
                return read_status(connection.command("replSetGetStatus", primary_only=True))
        except DriverError:
            return None

    def _config_for(self, connection: Connection, status: StatusReport) -> dict[str, Any] | None:
        """The cached replSetGetConfig `config`, re-read when the members or the config version change."""
        key = tuple(sorted(m.name for m in status.members or ()))
        if key == self._config_key and not config_is_stale(status, self._config):
            return self._config
        try:
            reply = connection.command("replSetGetConfig")
        except DriverError as error:
            if error.timeout:
                raise
            # The last config read keeps delayed members judged on their delay (a member added since has none);
            # without any, there are no delays or hidden flags, and the snapshot is still right otherwise.
            known = "the last known delays are used" if self._config is not None else "delays are unknown"
            log.warning("replSetGetConfig failed, %s: %s", known, error.message)
            return self._config
        config = reply.get("config") if isinstance(reply, dict) else None
        self._config, self._config_key = (config, key) if isinstance(config, dict) else (None, None)
        return self._config

    def _probe_oplog(self, connection: Connection, status: StatusReport) -> dict[str, OplogProbe]:
        """For each lagging member, the `wall` of the first primary oplog entry it has not applied."""
        if not status.answered_by_primary:
            return {}  # only the primary's own oplog tells what it has that others lack
        probes: dict[str, OplogProbe] = {}
        denied = ""
        for name, applied_ts in status.oplog_probes_wanted().items():
            if denied:
                probes[name] = OplogProbe(error=denied)
                continue
            try:
                entry = connection.first_oplog_entry_after(applied_ts)
            except DriverError as error:
                if error.code == UNAUTHORIZED:
                    denied = "no read on the local database: grant the monitoring user read on local"
                    probes[name] = OplogProbe(error=denied)
                elif error.code is not None:
                    probes[name] = OplogProbe(error=f"oplog lookup failed with code {error.code}")
                else:
                    probes[name] = OplogProbe(error=f"oplog lookup {'timed out' if error.timeout else 'failed'}")
                continue
            probes[name] = _probe_from_entry(entry)
        return probes


def _probe_from_entry(entry: dict[str, Any] | None) -> OplogProbe:
    if entry is None:
        return OplogProbe(oldest_unapplied_wall_ms=None)
    wall = wall_ms(entry.get("wall"))
    if wall is None:
        return OplogProbe(error="the oplog entry has no wall time (server older than 4.2?)")
    return OplogProbe(oldest_unapplied_wall_ms=wall)
