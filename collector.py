"""Collection: the only importer of pymongo and schedule.

One long-lived `MongoClient` per cluster with explicit timeouts. Each poll runs `replSetGetStatus` (PRIMARY_PREFERRED,
so a set with no primary still answers), re-reads `replSetGetConfig` only when the set's configuration changed,
looks up the primary's oplog once per lagging member (DOMAIN §6), and publishes one `Snapshot` or one `Failure` to
the store. The poll runs on its own daemon thread with a deadline, so a driver that misbehaves can neither delay
the next poll nor keep the process from exiting. Nothing here raises into the scheduler.
Imports `replset` and `store`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pymongo
import schedule
from pymongo import MongoClient, ReadPreference
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.monitoring import ServerHeartbeatListener
from pymongo.server_type import SERVER_TYPE
from pymongo.uri_parser import parse_uri

from replset import Failure, OplogProbe, Snapshot, build_snapshot, config_is_stale, members_needing_oplog_probe
from store import SnapshotStore

log = logging.getLogger("replicationlag.collector")

APP_NAME = "replicationlag"
HEARTBEAT_MS = 2_000  # how soon the driver notices an election or a member coming back
MAX_CONNECT_TIMEOUT_MS = 5_000
# Polls reuse the primary's connection; one to a secondary that a fault sent polls to would otherwise stay open
# for good (a descriptor more per member, seen in the soak). Heartbeat connections are not pooled.
POOL_IDLE_INTERVALS = 3
WATCHDOG_GRACE_S = 1.0  # the driver honours the deadline itself; the watchdog is the last line of defence
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

PRIMARY_STATE = 1
UNAUTHORIZED, AUTH_FAILED, COMMAND_NOT_FOUND, NO_REPLICATION, NOT_YET_INITIALIZED = 13, 18, 59, 76, 94


class HelloObserver(ServerHeartbeatListener):
    """Remembers what each server said in its last heartbeat, to explain a failure in words.

    With `replicaSet=` in the URI the driver drops a standalone, an uninitialised member or a mongos from its
    topology and then only reports "no replica set members available"; its heartbeats still say what it is.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, str]] = {}
        self._lock = threading.Lock()

    def started(self, event: Any) -> None:
        pass

    def succeeded(self, event: Any) -> None:
        address = "{}:{}".format(*event.connection_id)
        with self._lock:
            self._seen[address] = (event.reply.server_type, event.reply.replica_set_name or "")

    def failed(self, event: Any) -> None:
        with self._lock:
            self._seen.pop("{}:{}".format(*event.connection_id), None)

    def diagnosis(self, expected_set: str | None) -> tuple[str, str] | None:
        """(kind, message) when a server answered but is not a usable member of the expected set."""
        with self._lock:
            seen = dict(self._seen)
        for address, (server_type, set_name) in sorted(seen.items()):
            if server_type == SERVER_TYPE.Standalone:
                return "not_replica_set", f"not a replica set: {address} runs without --replSet (a standalone)"
            if server_type == SERVER_TYPE.RSGhost:
                return "not_replica_set", f"the replica set is not initialised yet: run rs.initiate() ({address})"
            if server_type == SERVER_TYPE.Mongos:
                return "not_replica_set", f"{address} is a mongos: point the exporter at a shard's replica set"
            if expected_set and set_name and set_name != expected_set:
                return "not_replica_set", (
                    f"{address} belongs to replica set {set_name!r}, not {expected_set!r}: fix replicaSet= in the URI"
                )
        return None


class ClientError(Exception):
    """The URI was rejected by the driver; the text carries no credential."""


def make_client(
    uri: str, timeout_s: float, scrub: Callable[[str], str], *, interval_s: float | None = None
) -> MongoClient:
    """A client whose every wait is bounded by the poll deadline. Connects lazily, in the driver's threads.

    With `interval_s`, a pooled connection that no poll used for POOL_IDLE_INTERVALS intervals is closed.
    """
    timeout_ms = max(100, int(timeout_s * 1000))
    idle = {"maxIdleTimeMS": int(interval_s * POOL_IDLE_INTERVALS * 1000)} if interval_s else {}
    try:
        if not uri.startswith("mongodb+srv://"):  # an SRV URI is resolved by the client, in its own threads
            # Strict: the driver only warns about a bad or unknown option and then ignores it.
            parse_uri(uri, warn=False)
        return MongoClient(
            uri,
            appname=APP_NAME,
            connect=False,
            tz_aware=True,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=min(timeout_ms, MAX_CONNECT_TIMEOUT_MS),
            socketTimeoutMS=timeout_ms,
            heartbeatFrequencyMS=HEARTBEAT_MS,
            maxPoolSize=4,
            retryReads=False,
            retryWrites=False,
            event_listeners=[HelloObserver()],
            **idle,
        )
    except (ConfigurationError, ValueError, TypeError) as error:
        raise ClientError(f"the MongoDB URI was rejected: {scrub(str(error))}") from None


def classify(error: BaseException, timeout_s: float, scrub: Callable[[str], str]) -> tuple[str, str]:
    """A driver error as (kind, message in words). Kinds are the `Failure.kind` values of replset."""
    # First: the driver raises the server's MaxTimeMSExpired (code 50) itself when too little of the deadline is
    # left to send a command (a retry after a member failed mid-poll); that is the deadline, not an odd failure.
    if isinstance(error, OperationFailure) and error.timeout:
        return "timeout", f"the poll did not finish within its {timeout_s:g} s deadline"
    if isinstance(error, OperationFailure):
        code = error.code
        if code == UNAUTHORIZED:
            return (
                "unauthorized",
                "not authorized to run replSetGetStatus: the user needs the clusterMonitor role",
            )
        if code == AUTH_FAILED:
            return "auth", "authentication failed: check the user name, password and authSource"
        if code == NO_REPLICATION:
            return (
                "not_replica_set",
                "not a replica set: the server runs without --replSet (NoReplicationEnabled)",
            )
        if code == NOT_YET_INITIALIZED:
            return (
                "not_replica_set",
                "the replica set is not initialised yet (NotYetInitialized): run rs.initiate()",
            )
        if code == COMMAND_NOT_FOUND:
            return (
                "not_replica_set",
                "replSetGetStatus is not supported here (is this a mongos? point at a replica set)",
            )
        name = (error.details or {}).get("codeName", "")
        return "error", scrub(f"replSetGetStatus failed with code {code} {name}".strip())
    if isinstance(error, ServerSelectionTimeoutError):
        detail = scrub(str(error).split(", Timeout:")[0].split(" (configured timeouts")[0])
        return "unreachable", f"no usable member of the replica set within {timeout_s:g} s: {detail}"[:400]
    if isinstance(error, PyMongoError) and error.timeout:
        return "timeout", f"the poll did not finish within its {timeout_s:g} s deadline"
    if isinstance(error, ConnectionFailure):
        return "unreachable", scrub(f"connection failed: {error}")[:400]
    if isinstance(error, PyMongoError):
        return "error", scrub(f"{type(error).__name__}: {error}")[:400]
    return "error", f"unexpected {type(error).__name__} while collecting"


class Collector:
    """Polls one cluster and publishes the result to its store."""

    def __init__(
        self,
        client: MongoClient,
        store: SnapshotStore,
        timeout_s: float,
        scrub: Callable[[str], str] = lambda text: text,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        *,
        renew: Callable[[], MongoClient] | None = None,
    ) -> None:
        self._client = client
        self._renew = renew  # makes a fresh client from the URI; see _renew_if_forgotten
        self._forgotten = False
        self._renewed_since_success = False
        self._store = store
        self._timeout_s = timeout_s
        self._scrub = scrub
        self._now_ms = now_ms
        self._config: dict[str, Any] | None = None
        self._config_key: tuple[str, ...] | None = None
        self._running: threading.Thread | None = None
        self._last_status: str | None = None
        self._stopped = threading.Event()

    def stop(self, timeout_s: float = 0.5) -> None:
        """From now on polls do nothing; the client this collector holds is closed, waited for at most
        `timeout_s` (close() may look for a server to end sessions on, and nobody should wait for that)."""
        self._stopped.set()
        _close_in_background(self._client).join(timeout_s)

    def poll(self) -> None:
        """One scheduled poll: bounded by the deadline, publishes exactly one result, never raises."""
        if self._stopped.is_set():
            return
        started = time.monotonic()
        try:
            result = self._run_bounded()
        except Exception as error:  # the scheduler must never see an exception
            result = Failure("error", f"unexpected {type(error).__name__} while collecting", self._now_ms())
        if self._stopped.is_set():
            return
        self._store.publish(result, time.monotonic() - started)
        self._log(result)

    def _run_bounded(self) -> Snapshot | Failure:
        if self._running is not None and self._running.is_alive():
            return Failure("timeout", "the previous poll is still running; skipped this one", self._now_ms())
        box: list[Snapshot | Failure] = []
        worker = threading.Thread(target=lambda: box.append(self.collect_once()), name="poll", daemon=True)
        self._running = worker
        worker.start()
        worker.join(self._timeout_s + WATCHDOG_GRACE_S)
        if box:
            return box[0]
        return Failure("timeout", f"the poll did not finish within its {self._timeout_s:g} s deadline", self._now_ms())

    def collect_once(self) -> Snapshot | Failure:
        """Ask the cluster once. All I/O of a poll happens here, under one deadline."""
        self._renew_if_forgotten()
        try:
            with pymongo.timeout(self._timeout_s):
                status = self._replset_get_status()
                if status.get("myState") != PRIMARY_STATE and _reports_a_healthy_primary(status):
                    status = self._ask_the_primary() or status
                config = self._config_for(status)
                probes = self._probe_oplog(status)
            return build_snapshot(status, config, probes)
        except Exception as error:
            kind, message = classify(error, self._timeout_s, self._scrub)
            if kind == "unreachable" and (diagnosis := self._diagnose()) is not None:
                kind, message = diagnosis
            self._forgotten = not self._client.topology_description.server_descriptions()
            return Failure(kind, message, self._now_ms())

    def _replset_get_status(self) -> dict[str, Any]:
        """replSetGetStatus, asked once more if the connection broke under it (the member went down or hung and
        the driver's heartbeat gave up on it). The driver has then marked that member unknown, so the second try
        goes to another member, within the same deadline: one member failing mid-poll costs no poll."""
        try:
            return self._client.admin.command("replSetGetStatus", read_preference=ReadPreference.PRIMARY_PREFERRED)
        except ConnectionFailure as error:
            if isinstance(error, ServerSelectionTimeoutError) or error.timeout:
                raise  # no member to ask, or no time left to ask one
            log.debug("the connection broke during replSetGetStatus (%s); asking another member", type(error).__name__)
        return self._client.admin.command("replSetGetStatus", read_preference=ReadPreference.PRIMARY_PREFERRED)

    def _renew_if_forgotten(self) -> None:
        """Replace the client when the last poll failed with no server left in the driver's topology.

        With `replicaSet=` in the URI the driver drops a seed that answers as a standalone (or for another set)
        and never looks at the URI's hosts again, so once every seed was dropped it cannot recover even when the
        servers are fixed. A fresh client starts over from the URI; the old one is closed in the background.
        """
        if not self._forgotten or self._renew is None:
            return
        self._forgotten = False
        try:
            fresh = self._renew()
        except Exception as error:
            log.warning("could not make a fresh MongoDB client: %s", type(error).__name__)
            return
        # Said once per outage; while the servers stay wrong, every poll starts over again.
        log.log(
            logging.DEBUG if self._renewed_since_success else logging.INFO,
            "the driver knows no member of the set any more; starting over from the hosts of the URI",
        )
        self._renewed_since_success = True
        old, self._client = self._client, fresh
        _close_in_background(old)

    def _ask_the_primary(self) -> dict[str, Any] | None:
        """A secondary answered although a primary is up: the driver may not have found the primary yet (just
        started, just elected). The primary's view is the fresh one (DOMAIN §4), so ask it once, with half the
        deadline, keeping the secondary's answer if the primary cannot be reached from here."""
        try:
            with pymongo.timeout(self._timeout_s / 2):
                return self._client.admin.command("replSetGetStatus", read_preference=ReadPreference.PRIMARY)
        except PyMongoError:
            return None

    def _diagnose(self) -> tuple[str, str] | None:
        observers = [o for o in self._client.options.event_listeners if isinstance(o, HelloObserver)]
        expected = self._client.options.replica_set_name
        return next((found for o in observers if (found := o.diagnosis(expected)) is not None), None)

    def _config_for(self, status: dict[str, Any]) -> dict[str, Any] | None:
        """The cached replSetGetConfig `config`, re-read when the members or the config version change."""
        key = _member_names(status)
        if key == self._config_key and not config_is_stale(status, self._config):
            return self._config
        try:
            reply = self._client.admin.command("replSetGetConfig", read_preference=ReadPreference.PRIMARY_PREFERRED)
        except PyMongoError as error:
            if error.timeout:
                raise
            # The last config read keeps delayed members judged on their delay (a member added since has none);
            # without any, there are no delays or hidden flags, and the snapshot is still right otherwise.
            known = "the last known delays are used" if self._config is not None else "delays are unknown"
            log.warning("replSetGetConfig failed, %s: %s", known, classify(error, 0, self._scrub)[1])
            return self._config
        config = reply.get("config") if isinstance(reply, dict) else None
        self._config, self._config_key = (config, key) if isinstance(config, dict) else (None, None)
        return self._config

    def _probe_oplog(self, status: dict[str, Any]) -> dict[str, OplogProbe]:
        """For each lagging member, the `wall` of the first primary oplog entry it has not applied."""
        if status.get("myState") != PRIMARY_STATE:
            return {}  # only the primary's own oplog tells what it has that others lack
        oplog = self._client.local.get_collection("oplog.rs", read_preference=ReadPreference.PRIMARY)
        probes: dict[str, OplogProbe] = {}
        denied = ""
        for name, applied_ts in members_needing_oplog_probe(status).items():
            if denied:
                probes[name] = OplogProbe(error=denied)
                continue
            try:
                entry = oplog.find_one({"ts": {"$gt": applied_ts}}, projection={"ts": 1, "wall": 1})
            except OperationFailure as error:
                if error.code == UNAUTHORIZED:
                    denied = "no read on the local database: grant the monitoring user read on local"
                    probes[name] = OplogProbe(error=denied)
                else:
                    probes[name] = OplogProbe(error=f"oplog lookup failed with code {error.code}")
                continue
            except PyMongoError as error:
                probes[name] = OplogProbe(error="oplog lookup timed out" if error.timeout else "oplog lookup failed")
                continue
            probes[name] = _probe_from_entry(entry)
        return probes

    def _log(self, result: Snapshot | Failure) -> None:
        if isinstance(result, Failure):
            log.warning("collection failed (%s): %s", result.kind, result.message)
            self._last_status = None
            return
        summary = ", ".join(
            f"{m.name} {m.lag_ms}ms" if m.lag_ms is not None else f"{m.name} {m.state_str}"
            for m in result.members
            if not m.is_primary
        )
        self._renewed_since_success = False
        status = result.status.name
        if status != self._last_status:
            reasons = "; ".join(result.reasons) or "all members healthy and in time"
            log.info("replica set %s is %s: %s", result.set_name, status, reasons)
        self._last_status = status
        log.debug("collected %s: %s", result.set_name, summary)


def _close_in_background(client: MongoClient) -> threading.Thread:
    """close() may wait for a server to end sessions on; nobody should have to wait for that."""
    closer = threading.Thread(target=client.close, name="client-close", daemon=True)
    closer.start()
    return closer


def _reports_a_healthy_primary(status: dict[str, Any]) -> bool:
    members = status.get("members")
    return isinstance(members, list) and any(
        isinstance(m, dict) and m.get("state") == PRIMARY_STATE and m.get("health") == 1 for m in members
    )


def _probe_from_entry(entry: dict[str, Any] | None) -> OplogProbe:
    if entry is None:
        return OplogProbe(oldest_unapplied_wall_ms=None)
    wall = entry.get("wall")
    if not isinstance(wall, dt.datetime):
        return OplogProbe(error="the oplog entry has no wall time (server older than 4.2?)")
    if wall.tzinfo is None:
        wall = wall.replace(tzinfo=dt.UTC)
    return OplogProbe(oldest_unapplied_wall_ms=(wall - EPOCH) // dt.timedelta(milliseconds=1))


def _member_names(status: dict[str, Any]) -> tuple[str, ...]:
    """The members the status lists; a member added, removed or renamed means the cached config is old."""
    members = status.get("members")
    members = members if isinstance(members, list) else []
    return tuple(sorted(str(m.get("name")) for m in members if isinstance(m, dict)))


class PollScheduler:
    """Runs the poll once at start, then every interval, on its own thread; `stop()` returns at once."""

    def __init__(self, poll: Callable[[], None], interval_s: float) -> None:
        self._poll = poll
        self._scheduler = schedule.Scheduler()
        self._scheduler.every(interval_s).seconds.do(poll)  # type: ignore[arg-type]  # accepts a float
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poll-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self._poll()
        while not self._stop.is_set():
            idle = self._scheduler.idle_seconds
            if self._stop.wait(timeout=max(0.0, min(idle if idle is not None else 1.0, 1.0))):
                break
            self._scheduler.run_pending()

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
