"""Log lines: logfmt or JSON, one line each whoever emits them (our code, a library's logger, Python's warnings, a
thread that dies), with credentials redacted where they occur and nothing else touched (issues 15 and 17)."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest

from replicationlag.config import Settings, load_settings
from replicationlag.logs import configure_logging

LONG_PASSWORD = "correct-horse-battery-staple-is-40-chars"
PASSWORDS = ["e", "1", "lag", "127", "the", "info", LONG_PASSWORD]


def uri_with(password: str) -> str:
    return f"mongodb://monitor:{quote(password, safe='')}@127.0.0.1:27017/?replicaSet=rs0"


REDACTED_URI = "mongodb://monitor:***@127.0.0.1:27017/?replicaSet=rs0"


@pytest.fixture
def configure() -> Iterator[Callable[..., Settings]]:
    """configure_logging() as exporter.py calls it; the process-wide logging and hooks are put back afterwards."""
    root = logging.getLogger()
    ours = logging.getLogger("replicationlag")
    saved = (root.handlers[:], root.level, ours.level, warnings.showwarning, threading.excepthook, sys.excepthook)

    def run(uri: str, *flags: str) -> Settings:
        settings = load_settings(["--mongodb.uri", uri, *flags], env={})
        configure_logging(settings)
        return settings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        yield run
    root.handlers[:], _, _, warnings.showwarning, threading.excepthook, sys.excepthook = saved
    root.setLevel(saved[1])
    ours.setLevel(saved[2])


def err_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_password_of_any_length_leaves_every_text_line_readable_and_unrevealed(configure, capsys, password):
    settings = configure(uri_with(password))
    logging.getLogger("replicationlag").info(
        "serving http://127.0.0.1:9218/ for infra clusterKeeper, polling %s every 60 s", settings.redacted_uri
    )
    logging.getLogger("replicationlag.poller").warning("collection failed (unreachable): cannot use %s", settings.uri)

    serving, failed = err_lines(capsys)
    assert re.fullmatch(
        r'ts=\d{4}-\d\d-\d\dT[0-9:.]+\+00:00 level=info source=main msg="serving http://127\.0\.0\.1:9218/ for '
        rf'infra clusterKeeper, polling {re.escape(REDACTED_URI)} every 60 s"',
        serving,
    )
    assert failed.endswith(
        f' level=warn source=poller msg="collection failed (unreachable): cannot use {REDACTED_URI}"'
    )


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_password_of_any_length_leaves_every_json_line_readable_and_unrevealed(configure, capsys, password):
    settings = configure(uri_with(password), "--log.format", "json")
    logging.getLogger("replicationlag.keeper").info("renewed the client for %s at level info", settings.uri)

    [line] = err_lines(capsys)
    record = json.loads(line)
    assert (record["level"], record["source"]) == ("info", "keeper")
    assert record["msg"] == f"renewed the client for {REDACTED_URI} at level info"


def test_a_long_password_that_a_library_quotes_bare_is_hidden(configure, capsys):
    configure(uri_with(LONG_PASSWORD))
    logging.getLogger("pymongo.client").warning("SASL said %s", LONG_PASSWORD)
    [line] = err_lines(capsys)
    assert line.endswith(' level=warn source=pymongo.client msg="SASL said ***"')


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_python_warnings_are_log_lines_in_the_chosen_format_and_redacted(configure, capsys, log_format):
    configure(uri_with("pw"), "--log.format", log_format)
    text = "You appear to be connected to a DocumentDB cluster (mongodb://monitor:pw@x.docdb.amazonaws.com/)"
    warnings.warn(text, UserWarning, stacklevel=1)

    [line] = err_lines(capsys)
    message = (
        "UserWarning: You appear to be connected to a DocumentDB cluster (mongodb://monitor:***@x.docdb.amazonaws.com/)"
    )
    if log_format == "json":
        record = json.loads(line)
        assert (record["level"], record["source"], record["msg"]) == ("warn", "py.warnings", message)
    else:
        assert line.endswith(f" level=warn source=py.warnings msg={json.dumps(message)}")


def test_a_thread_that_dies_is_one_log_line_without_a_traceback(configure, capsys):
    configure(uri_with("pw"), "--log.format", "json")

    def fail() -> None:
        raise RuntimeError("cannot use mongodb://monitor:pw@db0/")

    thread = threading.Thread(target=fail, name="worker")
    thread.start()
    thread.join()
    [line] = err_lines(capsys)
    record = json.loads(line)
    assert record["level"] == "error"
    assert record["msg"] == "thread worker stopped: RuntimeError: cannot use mongodb://monitor:***@db0/"
