"""The whole service built from `Settings`: connection keeper, reader, source, store, metrics registry, web app,
HTTP server, poller and scheduler. Used by `exporter.main()`, the tests and the benchmarks, so all three run the
same wiring.

`build_service()` binds the port and makes the MongoDB client (which connects lazily), and raises
`driver.ClientError`, `webconfig.WebConfigError` or `OSError` (the port) before anything runs; `start()` serves
and polls; `reload_web_config()` re-reads the web config (SIGHUP); `stop()` ends everything within a few short
steps. Imports every product module except `exporter`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpserver
import metrics
import web
from config import Settings
from driver import Connection
from keeper import ClientKeeper
from poller import Poller, PollScheduler
from reader import SetReader
from source import ReplicaSetSource
from store import SnapshotStore
from webconfig import WebAccess

MAX_BODY_BYTES = httpserver.DEFAULT_MAX_BODY_BYTES  # the same cap for the app and the server, given to both


@dataclass
class Service:
    """Everything one infra label needs, built and not yet running."""

    settings: Settings
    store: SnapshotStore
    source: ReplicaSetSource
    poller: Poller
    scheduler: PollScheduler
    registry: object
    app: Callable
    server: httpserver.Server
    access: WebAccess

    def start(self) -> None:
        """Serve HTTP in a thread of its own, and poll now and then every interval."""
        threading.Thread(target=self.server.run, name="http", daemon=True).start()
        self.scheduler.start()

    def poll(self) -> None:
        """One poll now, as the scheduler runs it (for tests and benchmarks that drive the polls themselves)."""
        self.poller.poll()

    def reload_web_config(self) -> str:
        """Re-read --web.config.file: its users and open paths apply from the next request, its TLS settings from
        the next connection; polls, the snapshot and open connections go on. Raises WebConfigError (the settings
        in force stay) and returns a phrase for the log otherwise."""
        config = self.access.reload()
        self.server.use_tls(config.tls)
        return config.summary()

    def stop(self, step_s: float = 0.5) -> None:
        """Stop serving, polling and the MongoDB client; each part gets at most about `step_s`."""
        self.server.close()
        self.scheduler.stop(step_s)
        self.poller.stop()
        self.source.close(step_s)


def build_service(settings: Settings, *, monotonic: Callable[[], float] = time.monotonic) -> Service:
    """Build the service for `settings` (the URI, the label, the address, the intervals, the web config).

    `monotonic` is the store's clock for the data age (tests move it). Raises before anything runs.
    """
    access = WebAccess(settings.web_config_file)

    def connect() -> Connection:
        return Connection(settings.uri, settings.timeout_s, settings.scrub, interval_s=settings.interval_s)

    keeper = ClientKeeper(connect)
    source = ReplicaSetSource(keeper, SetReader(settings.timeout_s))
    store = SnapshotStore(settings.infra_label, settings.interval_s, monotonic=monotonic)
    registry = metrics.build_registry(store)
    app = web.create_app(
        store,
        registry,
        max_body_bytes=MAX_BODY_BYTES,
        access=access,
    )
    try:
        server = httpserver.Server(
            app, settings.listen_host, settings.listen_port, max_body_bytes=MAX_BODY_BYTES, tls=access.config.tls
        )
    except OSError:
        source.close(0)
        raise
    poller = Poller(source.collect, store, settings.timeout_s)
    scheduler = PollScheduler(poller.poll, settings.interval_s)
    return Service(settings, store, source, poller, scheduler, registry, app, server, access)
