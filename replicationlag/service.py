"""The whole service built from `Settings`: connection keeper, reader, source, store, metrics registry, web app,
HTTP server, poller and scheduler. Used by `exporter.main()`, the tests and the benchmarks, so all three run the
same wiring.

`build_service()` binds the port and makes the MongoDB client (which connects lazily), and raises
`driver.ClientError`, `webconfig.WebConfigError` or `OSError` (the port) before anything runs; `start()` serves
and polls; `reload_web_config()` re-reads the web config (SIGHUP); `stop()` ends everything within a few short
steps. Imports the package's modules; never `exporter` or `bridge` (the process hands the bridge over).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from replicationlag import metrics
from replicationlag.config import Settings
from replicationlag.credentials import connectable, member_uri, set_uri
from replicationlag.model import SetAddress, SetRole, wall_now_ms
from replicationlag.mongo.cluster import ShardedSource
from replicationlag.mongo.driver import ClientError, Connection
from replicationlag.mongo.keeper import ClientKeeper
from replicationlag.mongo.reader import SetReader
from replicationlag.mongo.source import DetectingSource, ReplicaSetSource, Source
from replicationlag.poller import Poller, PollScheduler
from replicationlag.store import SnapshotStore
from replicationlag.web.access import WebAccess
from replicationlag.web.app import DocumentBridge, create_app
from replicationlag.web.server import DEFAULT_MAX_BODY_BYTES, Server
from replicationlag.web.webconfig import removals

MAX_BODY_BYTES = DEFAULT_MAX_BODY_BYTES  # the same cap for the app and the server, given to both
# Behind mongos routers, each set's client hears from its members this often, in polled mode (one thread per
# member): a cluster of 100 sets costs little between polls (measured: bench/RESULTS.md). Elections are still
# followed at poll time: a command that meets a stale view makes the driver look again at once.
CLUSTER_HEARTBEAT_MS = 30_000
# The few direct connections to single members (hidden, in initial sync) are used once a poll: their monitor need
# not look more often than that.
MEMBER_HEARTBEAT_MS = 60_000


@dataclass
class Service:
    """Everything one infra label needs, built and not yet running."""

    settings: Settings
    store: SnapshotStore
    source: Source
    poller: Poller
    scheduler: PollScheduler
    registry: object
    app: Callable
    server: Server
    access: WebAccess

    def start(self) -> None:
        """Serve HTTP in a thread of its own, and poll now and then every interval."""
        threading.Thread(target=self.server.run, name="http", daemon=True).start()
        self.scheduler.start()

    def poll(self) -> None:
        """One poll now, as the scheduler runs it (for tests and benchmarks that drive the polls themselves)."""
        self.poller.poll()

    def reload_web_config(self) -> tuple[str, list[str]]:
        """Re-read --web.config.file: its users and open paths apply from the next request, its TLS settings from
        the next connection; polls, the snapshot and open connections go on. Raises WebConfigError (the settings
        in force stay; an empty or comment-only file is refused too) and returns a phrase for the log and what the
        new file removed that protected the port (TLS, users, ...: `webconfig.removals`) otherwise."""
        old = self.access.config
        config = self.access.reload()
        self.server.use_tls(config.tls)
        return config.summary(), removals(old, config)

    def stop(self, step_s: float = 0.5) -> None:
        """Stop serving, polling and the MongoDB client; closing the client gets at most about `step_s`. A poll
        still running publishes nothing and is not waited for."""
        self.server.close()
        self.poller.stop()
        self.scheduler.stop()
        self.source.close(step_s)


def build_service(
    settings: Settings,
    bridge: DocumentBridge,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    wall_ms: Callable[[], int] = wall_now_ms,
    danger_reads: bool = True,
) -> Service:
    """Build the service for `settings` (the URI, the label, the address, the intervals, the web config), serving
    the Zero Problem document that `bridge` makes (bridge.py, which the package does not import).

    `monotonic` is the store's clock for the data age and the lag history (tests move it); `wall_ms` is the wall
    clock each status `date` is compared with (docs/domain.md §17) and since when a problem lasts (tests on a
    simulated clock give that clock); `danger_reads=False` polls a replica set without the reads of how dangerous
    the lag is (only for the benchmark of their cost). Raises before anything runs.
    """
    access = WebAccess(settings.web_config_file)

    def connect() -> Connection:
        return Connection(settings.uri, settings.timeout_s, settings.redact, interval_s=settings.interval_s)

    def replica_set(keeper: ClientKeeper) -> ReplicaSetSource:
        return ReplicaSetSource(keeper, SetReader(settings.timeout_s, danger_reads=danger_reads, now_ms=wall_ms))

    def connect_member(host: str) -> Connection:
        return _member_connection(settings, settings.uri, host)

    def sharded(router: ClientKeeper) -> ShardedSource:
        return ShardedSource(
            router,
            lambda address: _set_source(settings, address, wall_ms),
            settings.timeout_s,
            infra=settings.infra_label,
            shard_tables=tuple(shard_id for shard_id, _ in settings.shard_credentials_by_id),
        )

    source = DetectingSource(ClientKeeper(connect, connect_member), replica_set, sharded)
    store = SnapshotStore(
        settings.infra_label,
        settings.interval_s,
        monotonic=monotonic,
        wall=lambda: wall_ms() / 1000,
        location_tags=settings.topology_tags,
    )
    registry = metrics.build_registry(store)
    app = create_app(
        store,
        registry,
        bridge,
        max_body_bytes=MAX_BODY_BYTES,
        access=access,
        metrics_path=settings.telemetry_path,
        page_url=settings.web_external_url,
    )
    try:
        server = Server(
            app, settings.listen_host, settings.listen_port, max_body_bytes=MAX_BODY_BYTES, tls=access.config.tls
        )
    except OSError:
        source.close(0)
        raise
    poller = Poller(source.collect, store, settings.timeout_s)
    scheduler = PollScheduler(poller.poll, settings.interval_s)
    return Service(settings, store, source, poller, scheduler, registry, app, server, access)


def _set_source(settings: Settings, address: SetAddress, wall_ms: Callable[[], int] = wall_now_ms) -> ReplicaSetSource:
    """The source of one set behind the routers: its seeds and name, with the router URI's credentials and
    options or the config file's credentials for shards / config servers."""
    credentials = settings.credentials_for(address.shard_id, config_servers=address.role is SetRole.CONFIG)
    login = {}
    if credentials is not None:
        login = {
            "username": credentials.username,
            "password": credentials.password,
            "auth_source": credentials.auth_source,
        }
    odd = [host for host in address.hosts if not connectable(host)]
    if odd:
        # The driver would read such a name as a user name, a database or an option and give advice about those.
        raise ClientError(
            f"the routers' shard map names host {odd[0]!r} for {address.label}, which is not a host:port a client can "
            "connect to: correct the shard's entry in config.shards"
        )
    uri = set_uri(settings.uri, address.name, address.hosts, **login)

    def connect() -> Connection:
        return Connection(
            uri,
            settings.timeout_s,
            settings.redact,
            interval_s=settings.interval_s,
            heartbeat_ms=CLUSTER_HEARTBEAT_MS,
            polled_heartbeats=True,
            set_from_map=True,
        )

    def connect_member(host: str) -> Connection:
        return _member_connection(settings, uri, host)

    return ReplicaSetSource(ClientKeeper(connect, connect_member), SetReader(settings.timeout_s, now_ms=wall_ms))


def _member_connection(settings: Settings, set_uri_: str, host: str) -> Connection:
    """A direct connection to one member, for what only it can answer: its own oplog, its initial sync. Raises
    `ClientError` (about the host name: the driver's words would be about escaping a user name and password)
    when the member's name is no host:port a client can connect to."""
    if not connectable(host):
        raise ClientError(
            f"its host name {host!r} is not a host:port a client can connect to (a DNS name or an IP address, and "
            "a port): give the member such a name in the replica-set config"
        )
    return Connection(
        member_uri(set_uri_, host),
        settings.timeout_s,
        settings.redact,
        interval_s=settings.interval_s,
        heartbeat_ms=MEMBER_HEARTBEAT_MS,
        polled_heartbeats=True,
    )
