"""replicationlag: MongoDB replication lag in exact milliseconds, for Zero Problem, Prometheus and on-call people.

The entry point: parse and validate the settings, set up logging, start the demo simulator when asked, build the
service (`service.build_service`), then serve and poll until SIGTERM or SIGINT. No business logic lives here.
Run `python exporter.py --help`.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from config import ConfigError, load_settings
from driver import ClientError
from logs import configure_logging
from service import build_service
from webconfig import WebConfigError

log = logging.getLogger("replicationlag")

SHUTDOWN_STEP_S = 0.5  # each part gets this long to stop; SIGTERM to exit stays well under 2 s


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
    if settings.demo and not settings.uri:
        from mongosim.demo import start_demo_set  # the product imports the simulator only here

        demo_set, stop_demo = start_demo_set()
        settings = dataclasses.replace(settings, uri=demo_set.uri)

    try:
        service = build_service(settings)
    except (ClientError, WebConfigError) as error:
        return _stop_demo(stop_demo, fail(str(error)))
    except OSError as error:
        reason = error.strerror or str(error)
        return _stop_demo(stop_demo, fail(f"cannot listen on {settings.listen_host}:{settings.listen_port}: {reason}"))

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    service.start()
    server = service.server
    target = f"the built-in simulated replica set {settings.uri}" if stop_demo else settings.redacted_uri
    log.info(
        "serving %s for infra %s, polling %s every %g s (deadline %g s)",
        " and ".join(server.urls),
        settings.infra_label,
        target,
        settings.interval_s,
        settings.timeout_s,
    )
    while not stop.wait(SHUTDOWN_STEP_S):
        pass

    log.info("stopping")
    service.stop(SHUTDOWN_STEP_S)
    return _stop_demo(stop_demo, 0)


def _stop_demo(stop_demo, status: int) -> int:
    if stop_demo is not None:
        stop_demo()
    return status


if __name__ == "__main__":
    sys.exit(main())
