"""Logging: logfmt-like text or JSON lines on stderr, one line per event whoever reports it (our code, a library's
logger, Python's warnings, a thread that dies), with credentials redacted where they occur.

Imports `config` (the settings and their `Secrets`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
import warnings
from collections.abc import Callable
from types import TracebackType

from replicationlag.config import Settings

log = logging.getLogger("replicationlag")


class RedactingFormatter(logging.Formatter):
    """Formats a record as logfmt-like text or JSON, its message passed through `redact` (credentials.Secrets.redact).

    Only the message can hold a credential (a URI, or a driver text quoting one); the time, level and source are
    ours and are never touched, so a one-character password cannot make a line unreadable.
    """

    def __init__(self, log_format: str, redact: Callable[[str], str]) -> None:
        super().__init__()
        self._json = log_format == "json"
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            # Exception texts can quote a URI; the type is enough for the log, never a traceback.
            message += f" ({record.exc_info[0].__name__ if record.exc_info[0] else 'error'})"
        message = self._redact(message)
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
        level = "warn" if record.levelname == "WARNING" else record.levelname.lower()
        source = record.name.removeprefix("replicationlag").lstrip(".") or "main"
        if self._json:
            return json.dumps({"ts": stamp, "level": level, "source": source, "msg": message})
        return f"ts={stamp} level={level} source={source} msg={json.dumps(message)}"


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(settings.log_format, settings.redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # third-party libraries only speak up when something is wrong
    log.setLevel(settings.log_level.upper())
    # waitress warns "Task queue depth is N" for every request that waits for a worker: under a burst of scrapes
    # that is thousands of lines a minute saying nothing the metrics do not.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # Python prints these on stderr itself, as plain text that the redaction never sees: make them log lines.
    warnings.showwarning = _log_warning
    threading.excepthook = _log_thread_death
    sys.excepthook = _log_uncaught


def _log_warning(message: Warning | str, category: type[Warning], *_where: object) -> None:
    # pymongo warns about DocumentDB or CosmosDB hosts, duplicate URI options, ...: one line, in the log's format.
    logging.getLogger("py.warnings").warning("%s: %s", category.__name__, message)


def _log_thread_death(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    log.error("thread %s stopped: %s: %s", name, args.exc_type.__name__, args.exc_value)


def _log_uncaught(exc_type: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, value, traceback)
        return
    log.critical("stopped by an unexpected %s: %s", exc_type.__name__, value)
