"""replicationlag: MongoDB replication lag in exact milliseconds, for Zero Problem, Prometheus and on-call people.

The entry point: parse and validate the settings, set up logging, start the demo simulator when asked, build the
service (`service.build_service`), then serve and poll until SIGTERM or SIGINT; SIGHUP re-reads the web config
(in a thread of its own, so that no reload ever holds up a stop), SIGUSR1 and SIGUSR2 are logged and ignored. No
business logic lives here.
Run `python exporter.py --help`.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import signal
import sys
import threading
from collections.abc import Sequence

import bridge
from replicationlag.config import ConfigError, load_settings
from replicationlag.logs import configure_logging
from replicationlag.mongo.driver import ClientError, skip_driver_exit_joins
from replicationlag.service import Service, build_service
from replicationlag.web.webconfig import WebConfigError

log = logging.getLogger("replicationlag")

SHUTDOWN_STEP_S = 0.5  # closing the clients gets this long; SIGTERM to exit stays under 2 s (bench section 7)
SIGNAL_WAKE_S = 0.5  # the main thread looks for signals at least this often (see _next_signal)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Stray signals whose default would end the process silently: logged and ignored. SIGPIPE is ignored by Python
# itself (a closed socket is an OSError instead).
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def fail(message: str) -> int:
    """One clear line on stderr, exit status 1."""
    print(f"replicationlag: error: {message}", file=sys.stderr, flush=True)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except ConfigError as error:
        return fail("; ".join(str(error).splitlines()))
    configure_logging(settings)
    for warning in settings.warnings:
        log.warning(warning)

    stop_demo = None
    if settings.demo:  # config ignores any URI given with --demo, and says so
        from mongosim.control import commands_on_stdin  # the product imports the simulator only here
        from mongosim.demo import start_demo_cluster, start_demo_set

        simulated, stop_demo = start_demo_cluster() if settings.demo_cluster else start_demo_set()
        stop_demo = commands_on_stdin(simulated, stop_demo, lambda answer: log.info("demo: %s", answer))
        settings = dataclasses.replace(settings, uri=simulated.uri)

    try:
        service = build_service(settings, bridge)
    except (ClientError, WebConfigError) as error:
        return _stop_demo(stop_demo, fail(str(error)))
    except OSError as error:
        reason = error.strerror or str(error)
        return _stop_demo(stop_demo, fail(f"cannot listen on {settings.listen_host}:{settings.listen_port}: {reason}"))

    signals: queue.SimpleQueue[int] = queue.SimpleQueue()  # put() is safe in a signal handler
    for signum in (*STOP_SIGNALS, signal.SIGHUP, *IGNORED_SIGNALS):
        signal.signal(signum, lambda signum, _frame: signals.put(signum))

    service.start()
    server = service.server
    simulation = "sharded cluster (its mongos)" if settings.demo_cluster else "replica set"
    target = f"the built-in simulated {simulation} {settings.uri}" if stop_demo else settings.redacted_uri
    log.info(
        "serving %s for infra %s, polling %s every %g s (deadline %g s)",
        " and ".join(server.urls),
        settings.infra_label,
        target,
        settings.interval_s,
        settings.timeout_s,
    )
    reloads = _Reloads(service)
    while (signum := _next_signal(signals)) not in STOP_SIGNALS:
        if signum == signal.SIGHUP:
            reloads.request()
        elif signum is not None:
            log.info("ignoring signal %s (SIGTERM or SIGINT stops the exporter)", signal.Signals(signum).name)

    log.info("stopping")
    service.stop(SHUTDOWN_STEP_S)
    skip_driver_exit_joins()  # the clients are closed: exiting must not wait for their threads again
    return _stop_demo(stop_demo, 0)


def _next_signal(signals: queue.SimpleQueue[int]) -> int | None:
    """The next signal caught, or None after SIGNAL_WAKE_S. Never block for good: the kernel may deliver a signal
    to another thread, and Python runs its handler only when the main thread runs bytecode again (seen: a SIGTERM
    left the exporter waiting for ever, one stop in three in a test)."""
    try:
        return signals.get(timeout=SIGNAL_WAKE_S)
    except queue.Empty:
        return None


class _Reloads:
    """SIGHUP's work, done off the main thread: the main thread only handles signals, so that no reload (a file
    that hangs, a slow certificate) ever holds up a SIGTERM. One reload runs at a time; a SIGHUP that arrives
    during one makes one more run after it, so the last signal always reads the file as it is then."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._lock = threading.Lock()
        self._pending = self._running = False

    def request(self) -> None:
        with self._lock:
            self._pending = True
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="reload", daemon=True).start()  # not waited for at exit

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._running = False
                    return
                self._pending = False
            try:
                _reload(self._service)
            except Exception as error:  # one reload's failure must not stop the later ones
                log.error("SIGHUP: web config not reloaded, the one in force is kept: %s", error)


def _reload(service: Service) -> None:
    """SIGHUP (`systemctl reload`, a closed terminal): re-read what can be re-read, the web config; one log line."""
    path = service.settings.web_config_file
    if not path:
        log.info("SIGHUP: no --web.config.file to reload; other settings need a restart")
        return
    try:
        summary, removed = service.reload_web_config()
    except WebConfigError as error:
        log.error("SIGHUP: web config not reloaded, the one in force is kept: %s", error)
    else:
        applies = "TLS settings apply to new connections"
        if removed:  # on purpose, since the file is valid: but never silently
            log.warning(
                "SIGHUP: reloaded web config %s: %s; it removes %s (%s)", path, summary, "; ".join(removed), applies
            )
        else:
            log.info("SIGHUP: reloaded web config %s: %s (%s)", path, summary, applies)


def _stop_demo(stop_demo, status: int) -> int:
    if stop_demo is not None:
        stop_demo()
    return status


if __name__ == "__main__":
    sys.exit(main())
