"""replicationlag: MongoDB replication lag in exact milliseconds, for Zero Problem, Prometheus and on-call people.

The entry point and composition root: parse and validate the settings, build the MongoDB client, the store, the
metrics registry and the web app, bind the port, then run the scheduled collector and the threaded HTTP server
until SIGTERM or SIGINT. No business logic lives here. Run `python exporter.py --help`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence

import collector
import metrics
import web
from config import ConfigError, Settings, load_settings
from store import SnapshotStore
from webconfig import WebConfigError, load_web_config

log = logging.getLogger("replicationlag")

SHUTDOWN_STEP_S = 0.5  # each part gets this long to stop; SIGTERM to exit stays well under 2 s


class ScrubbingFormatter(logging.Formatter):
    """Formats a record as logfmt-like text or JSON, with every spelling of the URI's password removed."""

    def __init__(self, log_format: str, scrub: Callable[[str], str]) -> None:
        super().__init__()
        self._json = log_format == "json"
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            # Exception texts can quote a URI; the type is enough for the log, never a traceback.
            message += f" ({record.exc_info[0].__name__ if record.exc_info[0] else 'error'})"
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
        level = "warn" if record.levelname == "WARNING" else record.levelname.lower()
        source = record.name.removeprefix("replicationlag").lstrip(".") or "main"
        if self._json:
            line = json.dumps({"ts": stamp, "level": level, "source": source, "msg": message})
        else:
            line = f"ts={stamp} level={level} source={source} msg={json.dumps(message)}"
        return self._scrub(line)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter(settings.log_format, settings.scrub))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # third-party libraries only speak up when something is wrong
    logging.getLogger("replicationlag").setLevel(settings.log_level.upper())
    # waitress warns "Task queue depth is N" for every request that waits for a worker: under a burst of scrapes
    # that is thousands of lines a minute saying nothing the metrics do not.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def fail(message: str) -> int:
    """One clear line on stderr, exit status 1."""
    print(f"replicationlag: error: {message}", file=sys.stderr, flush=True)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except ConfigError as error:
        return fail("; ".join(str(error).splitlines()))
    try:
        web_config = load_web_config(settings.web_config_file)
    except WebConfigError as error:
        return fail(str(error))
    configure_logging(settings)
    for warning in settings.warnings:
        log.warning(warning)

    uri, stop_demo = settings.uri, None
    if settings.demo and not uri:
        from mongosim.demo import start_demo_set  # the product imports the simulator only here

        demo_set, stop_demo = start_demo_set()
        uri = demo_set.uri

    def new_client() -> collector.MongoClient:
        return collector.make_client(uri, settings.timeout_s, settings.scrub, interval_s=settings.interval_s)

    try:
        client = new_client()
    except collector.ClientError as error:
        return fail(str(error))

    store = SnapshotStore(settings.infra_label, settings.interval_s)
    app = web.create_app(
        store, metrics.build_registry(store), auth=web_config.basic_auth(), open_paths=web_config.excluded_paths
    )
    try:
        server = web.Server(app, settings.listen_host, settings.listen_port, tls=web_config.tls)
    except OSError as error:
        client.close()
        if stop_demo:
            stop_demo()
        reason = error.strerror or str(error)
        return fail(f"cannot listen on {settings.listen_host}:{settings.listen_port}: {reason}")

    poller = collector.Collector(client, store, settings.timeout_s, settings.scrub, renew=new_client)
    scheduler = collector.PollScheduler(poller.poll, settings.interval_s)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    threading.Thread(target=server.run, name="http", daemon=True).start()
    scheduler.start()
    target = f"the built-in simulated replica set {uri}" if stop_demo else settings.redacted_uri
    log.info(
        "serving %s://%s:%d/ for infra %s, polling %s every %g s (deadline %g s)",
        server.scheme,
        server.host,
        server.port,
        settings.infra_label,
        target,
        settings.interval_s,
        settings.timeout_s,
    )
    while not stop.wait(SHUTDOWN_STEP_S):
        pass

    log.info("stopping")
    server.close()
    scheduler.stop(SHUTDOWN_STEP_S)
    poller.stop(SHUTDOWN_STEP_S)  # closes the client it holds (the first one, or a fresh one it made)
    if stop_demo:
        stop_demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
