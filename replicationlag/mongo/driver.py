"""The MongoDB driver, wrapped: the only importer of pymongo.

A `Connection` is one long-lived `MongoClient` with every wait bounded (server selection, connect, socket, and a
per-poll deadline), commands sent with an explicit read preference, and a heartbeat observer that remembers what
each server said it is. Every driver error leaves this module as a `DriverError` carrying a `FailureKind` and a
message in words with no credential in it, so nothing else needs to know pymongo's exception classes.
Imports `model` only.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import difflib
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pymongo
from pymongo import MongoClient, ReadPreference, common
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

from replicationlag.model import FailureKind

APP_NAME = "replicationlag"
HEARTBEAT_MS = 2_000  # how soon the driver notices an election or a member coming back
MAX_CONNECT_TIMEOUT_MS = 5_000
# Polls reuse the primary's connection; one to a secondary that a fault sent polls to would otherwise stay open
# for good (a descriptor more per member, seen in the soak). Heartbeat connections are not pooled.
POOL_IDLE_INTERVALS = 3

UNAUTHORIZED, AUTH_FAILED, COMMAND_NOT_FOUND, NO_REPLICATION, NOT_YET_INITIALIZED = 13, 18, 59, 76, 94
MECHANISM_UNAVAILABLE = 334

Scrub = Callable[[str], str]


class ClientError(Exception):
    """The URI was rejected by the driver; the text carries no credential."""


class DriverError(Exception):
    """A driver or server error, classified. `message` is in words and carries no credential.

    `code` is the server's error code when the server answered with one; `timeout` is true when the deadline
    (or a driver timeout) ended the operation; `broken` when an established connection broke under the command
    (the member went down or hung), so asking once more may reach another member.
    """

    def __init__(
        self, kind: FailureKind, message: str, *, code: int | None = None, timeout: bool = False, broken: bool = False
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.timeout = timeout
        self.broken = broken


def classify(
    error: BaseException, timeout_s: float, scrub: Scrub, command: str = "replSetGetStatus", *, replica_set: bool = True
) -> tuple[FailureKind, str]:
    """A driver error as (kind, message in words); `command` is what was being run, and `replica_set` whether the
    URI named a replica set (else its servers may be mongos routers), for the words."""
    # First: the driver raises the server's MaxTimeMSExpired (code 50) itself when too little of the deadline is
    # left to send a command (a retry after a member failed mid-poll); that is the deadline, not an odd failure.
    if isinstance(error, OperationFailure) and error.timeout:
        return FailureKind.TIMEOUT, f"the poll did not finish within its {timeout_s:g} s deadline"
    if isinstance(error, OperationFailure):
        code = error.code
        if code is None and (error.details or {}).get("info") == "mongos":
            # A mongos refuses replSetGetStatus with `info: "mongos"` and no code (docs/domain.md §8).
            return FailureKind.NOT_REPLICA_SET, "this is a mongos: remove replicaSet= from the URI to watch the cluster"
        if code == UNAUTHORIZED:
            return (
                FailureKind.UNAUTHORIZED,
                f"not authorized to run {command}: the user needs the clusterMonitor role",
            )
        if code == AUTH_FAILED:
            return FailureKind.AUTH, "authentication failed: check the user name, password and authSource"
        if code == MECHANISM_UNAVAILABLE:
            # "Received authentication for mechanism PLAIN which is not enabled" (or "unknown or not enabled").
            named = re.search(r"mechanism ([A-Z0-9-]+)", str((error.details or {}).get("errmsg", "")))
            mechanism = f"authMechanism={named.group(1)}" if named else "the URI's authMechanism"
            return (
                FailureKind.AUTH,
                f"the server does not offer {mechanism} (MechanismUnavailable): remove authMechanism from the URI "
                "to use SCRAM, the default, or enable that mechanism on the server",
            )
        if code == NO_REPLICATION:
            return (
                FailureKind.NOT_REPLICA_SET,
                "not a replica set: the server runs without --replSet (NoReplicationEnabled)",
            )
        if code == NOT_YET_INITIALIZED:
            return (
                FailureKind.NOT_REPLICA_SET,
                "the replica set is not initialised yet (NotYetInitialized): run rs.initiate()",
            )
        if code == COMMAND_NOT_FOUND:
            return (
                FailureKind.NOT_REPLICA_SET,
                f"{command} is not supported here (is this a mongos? point at a replica set)",
            )
        name = (error.details or {}).get("codeName", "")
        return FailureKind.ERROR, scrub(f"{command} failed with code {code} {name}".strip())
    if isinstance(error, ConfigurationError) and _failed_in_dns(error):
        # A mongodb+srv:// URI is resolved at the first command; the driver hands DNS failures over as a
        # ConfigurationError (PyMongo's srv_resolver), but no member can be found: unreachable, not a bad setting.
        message = (
            f"the SRV record of the mongodb+srv:// host could not be resolved ({scrub(str(error))}): check the host "
            "name in the URI and that this machine's DNS can resolve it"
        )
        return FailureKind.UNREACHABLE, message[:400]
    if isinstance(error, ServerSelectionTimeoutError):
        detail = scrub(str(error).split(", Timeout:")[0].split(" (configured timeouts")[0])
        servers = "no usable member of the replica set" if replica_set else "none of the URI's servers answered"
        return FailureKind.UNREACHABLE, f"{servers} within {timeout_s:g} s: {detail}"[:400]
    if isinstance(error, PyMongoError) and error.timeout:
        return FailureKind.TIMEOUT, f"the poll did not finish within its {timeout_s:g} s deadline"
    if isinstance(error, ConnectionFailure):
        return FailureKind.UNREACHABLE, scrub(f"connection failed: {error}")[:400]
    if isinstance(error, PyMongoError):
        return FailureKind.ERROR, scrub(f"{type(error).__name__}: {error}")[:400]
    return FailureKind.ERROR, f"unexpected {type(error).__name__} while collecting"


def _failed_in_dns(error: BaseException) -> bool:
    """True when a DNS lookup (dnspython, which the driver uses for SRV and TXT records) caused `error`."""
    cause = error.__cause__
    return cause is not None and type(cause).__module__.split(".")[0] == "dns"


def _translated(error: PyMongoError, timeout_s: float, scrub: Scrub, command: str, *, replica_set: bool) -> DriverError:
    kind, message = classify(error, timeout_s, scrub, command, replica_set=replica_set)
    broken = isinstance(error, ConnectionFailure) and not isinstance(error, ServerSelectionTimeoutError)
    return DriverError(
        kind,
        message,
        code=error.code if isinstance(error, OperationFailure) else None,
        timeout=bool(error.timeout),
        broken=broken and not error.timeout,
    )


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

    def diagnosis(self, expected_set: str | None, *, from_map: bool = False) -> tuple[FailureKind, str] | None:
        """(kind, message) when a server answered but is not a usable member of the expected set. `from_map`: the
        set's name and hosts came from the routers' shard map, not from a URI the user wrote."""
        with self._lock:
            seen = dict(self._seen)
        for address, (server_type, set_name) in sorted(seen.items()):
            if server_type == SERVER_TYPE.Standalone:
                return _not_a_set(f"not a replica set: {address} runs without --replSet (a standalone)")
            if server_type == SERVER_TYPE.RSGhost:
                return _not_a_set(f"the replica set is not initialised yet: run rs.initiate() ({address})")
            if server_type == SERVER_TYPE.Mongos and expected_set:
                if from_map:
                    return _not_a_set(
                        f"{address} is a mongos, but the routers' shard map names it as a member of replica set "
                        f"{expected_set!r}: correct the shard's entry in config.shards"
                    )
                return _not_a_set(f"{address} is a mongos: remove replicaSet= from the URI to watch the whole cluster")
            if expected_set and set_name and set_name != expected_set:
                if from_map:
                    return _not_a_set(
                        f"{address} answers as a member of replica set {set_name!r}, but the routers' shard map names "
                        f"it for replica set {expected_set!r}: the map's entry (sh.status(), config.shards) lists "
                        "hosts of another set, or their names now lead elsewhere (DNS)"
                    )
                return _not_a_set(
                    f"{address} belongs to replica set {set_name!r}, not {expected_set!r}: fix replicaSet= in the URI"
                )
        return None


def _not_a_set(message: str) -> tuple[FailureKind, str]:
    return FailureKind.NOT_REPLICA_SET, message


def _unknown_options(uri: str) -> str:
    """Which options of the URI the driver does not know, and the known ones they are closest to; "" if unsure.

    For a URI the driver names no option: a malformed URI could put password text there (an unencoded '?' in
    the password, then the '@' after it). Without an '@' after the host list, a key is the user's own option name.
    """
    rest = uri.partition("://")[2]
    host_list_end = re.search(r"[/?]", rest)
    if host_list_end is not None and "@" in rest[host_list_end.start() :]:
        return ""
    known = {*common.URI_OPTIONS_VALIDATOR_MAP, *common.URI_OPTIONS_DEPRECATION_MAP, *common.URI_OPTIONS_ALIAS_MAP}
    keys = [part.partition("=")[0] for part in re.split("[&;]", uri.partition("?")[2]) if part]
    unknown = [key for key in keys if key.lower() not in known and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key)]
    if not unknown:
        return ""
    named = []
    for key in unknown:
        close = difflib.get_close_matches(key.lower(), sorted(common.URI_OPTIONS_VALIDATOR_MAP), n=3, cutoff=0.6)
        named.append(f"{key!r} (did you mean {' or '.join(close)}?)" if close else repr(key))
    return f"unknown option{'s' if len(named) > 1 else ''} {', '.join(named)}"


class Connection:
    """One long-lived client whose every wait is bounded by the poll deadline. Connects lazily, in the driver's
    threads. With `interval_s`, a pooled connection that no poll used for POOL_IDLE_INTERVALS intervals is closed.
    """

    def __init__(
        self,
        uri: str,
        timeout_s: float,
        scrub: Scrub,
        *,
        interval_s: float | None = None,
        heartbeat_ms: int = HEARTBEAT_MS,
        polled_heartbeats: bool = False,
        set_from_map: bool = False,
    ) -> None:
        self.timeout_s = timeout_s
        self._set_from_map = set_from_map  # the URI's replicaSet= and hosts came from the routers' shard map
        self._scrub = scrub
        self._observer = HelloObserver()
        timeout_ms = max(100, int(timeout_s * 1000))
        idle = {"maxIdleTimeMS": int(interval_s * POOL_IDLE_INTERVALS * 1000)} if interval_s else {}
        # Polled heartbeats: one monitor thread per server instead of two (stream + round-trip), for clusters of
        # many sets where nobody needs to hear of an election within a second.
        monitoring = {"serverMonitoringMode": "poll"} if polled_heartbeats else {}
        try:
            if not uri.startswith("mongodb+srv://"):  # an SRV URI is resolved by the client, in its own threads
                # Strict: the driver only warns about a bad or unknown option and then ignores it.
                parse_uri(uri, warn=False)
            self._client: MongoClient = MongoClient(
                uri,
                appname=APP_NAME,
                connect=False,
                tz_aware=True,
                serverSelectionTimeoutMS=timeout_ms,
                connectTimeoutMS=min(timeout_ms, MAX_CONNECT_TIMEOUT_MS),
                socketTimeoutMS=timeout_ms,
                heartbeatFrequencyMS=heartbeat_ms,
                maxPoolSize=4,
                retryReads=False,
                retryWrites=False,
                event_listeners=[self._observer],
                server_selector=_only_the_aimed_member,
                **idle,
                **monitoring,
            )
        except (ConfigurationError, ValueError, TypeError) as error:
            reason = _unknown_options(uri) if str(error).startswith("Unknown option") else ""
            raise ClientError(f"the MongoDB URI was rejected: {scrub(reason or str(error))}") from None

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Every driver wait inside the block (selection, connect, send, receive) ends by `seconds` from now."""
        with pymongo.timeout(seconds):
            yield

    def command(self, name: str, *, primary_only: bool = False, db: str = "admin", **arguments: Any) -> dict[str, Any]:
        """Run `{name: 1, **arguments}`: on the primary only, or PRIMARY_PREFERRED (so a set with no primary still
        answers; on a direct connection, the one member).

        `Database.command()` ignores the client's read preference and defaults to PRIMARY: always pass one.
        """
        preference = ReadPreference.PRIMARY if primary_only else ReadPreference.PRIMARY_PREFERRED
        try:
            return self._client[db].command(name, read_preference=preference, **arguments)
        except PyMongoError as error:
            raise self._translated(error, name) from None

    @contextlib.contextmanager
    def aimed_at(self, member: str) -> Iterator[None]:
        """Every read inside the block goes to this one member (host:port), primary or secondary: a member's own
        oplog is read over the set's connection, with no client (and no monitor threads) of its own."""
        token = _AIMED_AT.set(member.lower())
        try:
            yield
        finally:
            _AIMED_AT.reset(token)

    def serves(self, member: str) -> bool:
        """The driver knows `member` as a primary or a secondary it may read from (not hidden, not recovering)."""
        readable = (SERVER_TYPE.RSPrimary, SERVER_TYPE.RSSecondary, SERVER_TYPE.Standalone)
        return any(
            _address_text(address) == member.lower() and description.server_type in readable
            for address, description in self._client.topology_description.server_descriptions().items()
        )

    def oplog_end(self, *, newest: bool) -> dict[str, Any] | None:
        """The aimed-at member's oldest (or newest) oplog entry, natural order, with its `ts` and `wall`."""
        oplog = self._client.local.get_collection("oplog.rs", read_preference=ReadPreference.NEAREST)
        try:
            return oplog.find_one({}, projection={"ts": 1, "wall": 1}, sort=[("$natural", -1 if newest else 1)])
        except PyMongoError as error:
            raise self._translated(error, "find on local.oplog.rs") from None

    def oplog_storage(self) -> dict[str, Any] | None:
        """`$collStats` storage statistics of the aimed-at member's oplog (size, maxSize, count): allowed directly
        on a shard member from 8.0, where the collStats command is not."""
        oplog = self._client.local.get_collection("oplog.rs", read_preference=ReadPreference.NEAREST)
        try:
            found = list(oplog.aggregate([{"$collStats": {"storageStats": {}}}]))
        except PyMongoError as error:
            raise self._translated(error, "$collStats on local.oplog.rs") from None
        stats = found[0].get("storageStats") if found else None
        return stats if isinstance(stats, dict) else None

    def find(self, db: str, collection: str, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` documents of `db.collection` (PRIMARY_PREFERRED), e.g. `config.shards` on a router."""
        source = self._client[db].get_collection(collection, read_preference=ReadPreference.PRIMARY_PREFERRED)
        try:
            return list(source.find({}, limit=limit))
        except PyMongoError as error:
            raise self._translated(error, f"find on {db}.{collection}") from None

    def first_oplog_entry_after(self, ts: Any) -> dict[str, Any] | None:
        """The primary's first oplog entry after `ts` (natural order), with its `ts` and `wall`; None if none."""
        oplog = self._client.local.get_collection("oplog.rs", read_preference=ReadPreference.PRIMARY)
        try:
            return oplog.find_one({"ts": {"$gt": ts}}, projection={"ts": 1, "wall": 1})
        except PyMongoError as error:
            raise self._translated(error, "find on local.oplog.rs") from None

    def server_states(self) -> tuple[tuple[str, bool], ...]:
        """Each server the driver knows, as (host:port, reachable at its last heartbeat), sorted."""
        descriptions = self._client.topology_description.server_descriptions()
        return tuple(
            sorted(
                (f"{host}:{port}", description.server_type != SERVER_TYPE.Unknown)
                for (host, port), description in descriptions.items()
            )
        )

    def _translated(self, error: PyMongoError, command: str) -> DriverError:
        return _translated(error, self.timeout_s, self._scrub, command, replica_set=self.names_a_replica_set)

    @property
    def names_a_replica_set(self) -> bool:
        """The URI says `replicaSet=`: it names one replica set, not mongos routers."""
        return self._client.options.replica_set_name is not None

    @property
    def knows_no_server(self) -> bool:
        """True when the driver's topology holds no server at all (it dropped every seed)."""
        return not self._client.topology_description.server_descriptions()

    def diagnosis(self) -> tuple[FailureKind, str] | None:
        """What the heartbeats say when no usable member was found: a standalone, a mongos, another set."""
        return self._observer.diagnosis(self._client.options.replica_set_name, from_map=self._set_from_map)

    def close_in_background(self) -> threading.Thread:
        """close() may wait for a server to end sessions on; nobody should have to wait for that."""
        closer = threading.Thread(target=self._client.close, name="client-close", daemon=True)
        closer.start()
        return closer


def skip_driver_exit_joins() -> None:
    """Keep pymongo from joining its monitor threads when the interpreter exits.

    pymongo registers an atexit hook that closes every client's monitors and then joins their threads one after
    the other, up to 1 s each; a thread in the middle of a connect or a heartbeat takes that second. At 100 shards,
    a SIGTERM during a poll spent 0.4 to 1.5 s in that hook after the service had stopped (up to 4.3 s to exit on a
    loaded machine: bench/RESULTS.md, "Stopping at 100 shards"). The service has already closed its clients,
    waiting as long as it chose to; the threads are daemons and end with the process. Call it only when the process
    is about to exit.
    """
    from pymongo.synchronous import monitor  # the hook lives here in pymongo 4.9+; absent elsewhere: nothing to do

    hook = getattr(monitor, "_shutdown_resources", None)
    if hook is not None:
        atexit.unregister(hook)


# The member the current thread's reads are aimed at (Connection.aimed_at); each set is polled on its own thread.
_AIMED_AT: contextvars.ContextVar[str | None] = contextvars.ContextVar("replicationlag_aimed_at", default=None)


def _address_text(address: tuple[str, int]) -> str:
    host, port = address
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").lower()


def _only_the_aimed_member(servers: list[Any]) -> list[Any]:
    """The driver's custom server selector: while a read is aimed at a member, only that member is eligible."""
    aimed = _AIMED_AT.get()
    return servers if aimed is None else [s for s in servers if _address_text(s.address) == aimed]
