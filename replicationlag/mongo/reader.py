"""One poll's commands against one replica set, and the documents they return.

`replSetGetStatus` (PRIMARY_PREFERRED, asked once more if the connection broke under it, and asked of the primary
when a secondary answered while a primary is up), `replSetGetConfig` only when the set's configuration changed
(cached here), and one lookup in the primary's oplog per lagging member (docs/domain.md §6): these make the poll,
and their errors leave as `driver.DriverError`. Then the reads that say how dangerous the lag is (§12-14), each
of which may fail alone without failing the poll: on each data-bearing member (reads aimed at it over the set's
own connection, or a direct one for a member the driver does not read from), its oldest and newest oplog entries
and its oplog's storage statistics (three small reads), `replSetGetStatus` on a member in initial sync, and
`serverStatus` on the primary for flow control. Everything runs under the one poll deadline; a member
read gets at most a quarter of it, so a member that hangs cannot starve the others. Imports `danger`, `model`,
`mongo.driver`, `mongo.keeper` and `replset`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from replicationlag.danger import Evidence, MemberEvidence
from replicationlag.model import PRIMARY, RECOVERING, SECONDARY, STARTUP2, OplogProbe, wall_now_ms
from replicationlag.mongo.driver import UNAUTHORIZED, ClientError, Connection, DriverError
from replicationlag.mongo.keeper import ClientKeeper
from replicationlag.replset import StatusReport, config_is_stale, date_ms, read_status
from replicationlag.text import neutral

log = logging.getLogger("replicationlag.reader")


@dataclass(frozen=True)
class SetDocuments:
    """What one poll read from a replica set: the status (read once), the config in force, the oplog probes."""

    status: StatusReport
    config: dict[str, Any] | None
    probes: dict[str, OplogProbe]
    evidence: Evidence = field(default_factory=Evidence)
    asked_between_ms: tuple[int, int] | None = None  # this exporter's wall clock around the status read (§17)


class SetReader:
    """Reads one replica set per poll and caches its config between polls.

    `danger_reads=False` leaves out the reads of how dangerous the lag is: only for bench/dangercost.py, which
    measures what they cost per poll."""

    def __init__(self, timeout_s: float, *, danger_reads: bool = True, now_ms: Callable[[], int] = wall_now_ms) -> None:
        self._timeout_s = timeout_s
        self._now_ms = now_ms  # this exporter's wall clock, to compare the status date with (docs/domain.md §17)
        self._danger_reads = danger_reads
        self._config: dict[str, Any] | None = None
        self._config_key: tuple[str, ...] | None = None

    def read(self, keeper: ClientKeeper) -> SetDocuments:
        """Ask the set once, within the deadline. Raises `DriverError` when the status cannot be read."""
        connection = keeper.connection
        deadline = time.monotonic() + self._timeout_s
        with connection.deadline(self._timeout_s):
            asked_from = self._now_ms()
            status = read_status(self._replset_get_status(connection))
            asked = (asked_from, self._now_ms())
            if not status.answered_by_primary and status.reports_a_healthy_primary:
                asked_from = self._now_ms()
                from_primary = self._ask_the_primary(connection)
                if from_primary is not None:
                    status, asked = from_primary, (asked_from, self._now_ms())
            config = self._config_for(connection, status)
            probes = self._probe_oplog(connection, status)
            evidence = (
                _EvidenceReader(keeper, deadline, self._timeout_s / 4).read(status)
                if self._danger_reads
                else Evidence()
            )
        return SetDocuments(status, config, probes, evidence, asked)

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
            log.warning("replSetGetConfig failed, %s: %s", known, neutral(error.message))
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
    wall = date_ms(entry.get("wall"))
    if wall is None:
        return OplogProbe(error="the oplog entry has no wall time (server older than 4.2?)")
    return OplogProbe(oldest_unapplied_wall_ms=wall)


# Members whose own oplog says how far back they can serve (a RECOVERING member still holds its oplog).
_OPLOG_STATES = frozenset({PRIMARY, SECONDARY, RECOVERING})
_READ_STATES = _OPLOG_STATES | {STARTUP2}  # and a member in initial sync, for its progress
# serverStatus sections left out: flow control is all that is read, and these are the large ones.
_SERVER_STATUS_LEFT_OUT = {"wiredTiger": 0, "metrics": 0, "locks": 0, "tcmalloc": 0, "repl": 0, "opcounters": 0}
_FIND, _STATS = "find on local.oplog.rs", "$collStats on local.oplog.rs"
_GRANTS = {
    _FIND: "oplog windows need read on the local database: grant the monitoring user read on local",
    _STATS: "oplog sizes need the collStats privilege on local.oplog.rs: grant clusterMonitor",
    "serverStatus": "flow control needs serverStatus: grant the monitoring user clusterMonitor",
    "replSetGetStatus": "initial-sync progress needs replSetGetStatus on that member: grant clusterMonitor",
}


class _EvidenceReader:
    """The danger reads of one poll; each failure becomes words, never an exception."""

    def __init__(self, keeper: ClientKeeper, deadline: float, member_budget_s: float) -> None:
        self._keeper = keeper
        self._deadline = deadline
        self._member_budget_s = member_budget_s
        self._denied: dict[str, str] = {}  # command -> what to grant, once per poll

    def read(self, status: StatusReport) -> Evidence:
        members = [m for m in status.members or () if m.healthy and m.state in _READ_STATES]
        found = {m.name: self._member(m.name, m.state) for m in members}
        self._keeper.keep_members({m.name for m in members})
        server_status = self._primary_server_status() if status.reports_a_healthy_primary else None
        return Evidence(found, server_status, tuple(dict.fromkeys(self._denied.values())))

    def _member(self, name: str, state: int | None) -> MemberEvidence:
        try:
            connection = self._keeper.reads_of(name)
        except ClientError as error:
            return MemberEvidence(unread=str(error))
        if connection is None:
            return MemberEvidence()
        budget = min(self._member_budget_s, self._deadline - time.monotonic())
        if budget <= 0:
            return MemberEvidence(unread="no time left in the poll to read its oplog")
        reads: dict[str, Any] = {}
        problems: list[str] = []
        with connection.deadline(budget), connection.aimed_at(name):
            if state == STARTUP2:
                reads["own_status"] = self._try(
                    "replSetGetStatus", problems, lambda: connection.command("replSetGetStatus")
                )
            if state in _OPLOG_STATES:
                reads["oldest"] = self._try(_FIND, problems, lambda: connection.oplog_end(newest=False))
                reads["newest"] = self._try(_FIND, problems, lambda: connection.oplog_end(newest=True))
                reads["stats"] = self._try(_STATS, problems, connection.oplog_storage)
        return MemberEvidence(unread="; ".join(dict.fromkeys(problems)), **reads)

    def _try(self, command: str, problems: list[str], call: Callable[[], Any]) -> Any:
        """`call()`, or None with the reason kept: a refusal once per poll (what to grant), else in `problems`."""
        if command in self._denied:
            return None
        try:
            return call()
        except DriverError as error:
            if error.code == UNAUTHORIZED:
                self._denied[command] = _GRANTS[command]
            elif error.timeout:
                problems.append("its oplog could not be read in time")
            else:
                # The driver's words name the command when the server refused it ("find on local.oplog.rs failed
                # with code 2 BadValue"); name it once.
                named = error.message.startswith(command)
                problems.append(error.message if named else f"{command} failed: {error.message}")
            return None

    def _primary_server_status(self) -> dict[str, Any] | None:
        if self._deadline - time.monotonic() <= 0:
            return None
        connection = self._keeper.connection
        try:
            return connection.command("serverStatus", primary_only=True, **_SERVER_STATUS_LEFT_OUT)
        except DriverError as error:
            if error.code == UNAUTHORIZED:
                self._denied["serverStatus"] = _GRANTS["serverStatus"]
            return None
