"""The monitoring password, wherever it comes from (a flag, the environment, a config file), appears in no log line
at any level, no HTTP answer, no metric, no error text and not in --help; a config file that holds a password and
is readable by others draws a warning. exporter.py runs as a subprocess against a simulated set. (Each row of the
fault matrix, tests/test_faults.py, also greps its whole log and every answer for the password.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from service_util import ENDPOINTS, ROOT, SERVICE_PATH, Exporter, uri_with_credentials

from mongosim import ReplicaSet

pytestmark = pytest.mark.slow  # README "Tests": skipped by the quick run

USER, PASSWORD = "monitor", "cred-Pa55:w@rd/%?&="
SPELLINGS = {PASSWORD, quote(PASSWORD, safe=""), quote_plus(PASSWORD), "cred-Pa55"}
WAIT_S = 12.0
WARNING = "holds a password and is readable by others: chmod 600 it"


def assert_no_password(text: str) -> None:
    for spelling in SPELLINGS:
        assert spelling not in text, f"the password leaked as {spelling!r}"


@pytest.fixture
def secured(start_set: Callable[..., ReplicaSet]) -> ReplicaSet:
    return start_set(3, arbiter=True, users=[(USER, PASSWORD)])


@pytest.fixture
def exporters() -> Iterator[Callable[..., Exporter]]:
    started: list[Exporter] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Exporter:
        exporter = Exporter("--collect.interval", "1", "--collect.timeout", "0.5", *args, env=env)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.kill()


def read_everything(exporter: Exporter) -> None:
    for path in ENDPOINTS:
        exporter.get(path, "PUT" if path == SERVICE_PATH else "GET")
    exporter.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    exporter.get("/no-such-page")


def config_file(tmp_path: Path, uri: str, mode: int) -> Path:
    path = tmp_path / "replicationlag.toml"
    path.write_text(f'[infra.clusterKeeper]\nuri = "{uri}"\n')
    path.chmod(mode)
    return path


def test_help_never_shows_the_password_given_in_the_environment():
    result = subprocess.run(
        [sys.executable, str(ROOT / "exporter.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=20,
        env={"PATH": "/usr/bin:/bin", "MONGODB_URI": f"mongodb://{USER}:{quote(PASSWORD, safe='')}@db0:27017/"},
        check=False,
    )
    assert result.returncode == 0
    assert "--mongodb.uri" in result.stdout
    assert_no_password(result.stdout + result.stderr)


def test_through_failing_and_working_polls_at_debug_level_the_password_is_nowhere(secured, exporters, tmp_path):
    """From the config file, JSON logs (the fault matrix runs text logs with the URI flag): authentication fails
    first (the user has another password), then the user gets this one and the set is GREEN, then a member goes
    down; every endpoint is read in each state."""
    secured.add_user(USER, "another-password")
    uri = uri_with_credentials(secured.uri, USER, PASSWORD)
    path = config_file(tmp_path, uri, 0o600)
    exporter = exporters("--config.file", str(path), "--log.level", "debug", "--log.format", "json")
    exporter.wait_for(lambda look: look.liveness.get("last_failure_kind") == "auth", WAIT_S, "auth failing")
    read_everything(exporter)

    secured.add_user(USER, PASSWORD)
    exporter.wait_for(lambda look: look.status == "GREEN", WAIT_S, "GREEN")
    read_everything(exporter)
    secured.take_down(2)
    exporter.wait_for(lambda look: "DOWN" in look.action_body, WAIT_S, "a member down")
    read_everything(exporter)

    assert exporter.stop() == 0
    everything = exporter.log_text + "\n".join(exporter.transcript)
    assert_no_password(everything)
    assert "authentication failed" in everything
    assert f"{USER}:***@" in exporter.log_text
    assert WARNING not in exporter.log_text  # 0600: nobody else can read it


def test_a_password_in_the_environment_is_not_shown_when_the_host_does_not_resolve(exporters):
    uri = f"mongodb://{USER}:{quote(PASSWORD, safe='')}@no-such-host.invalid:27017/?replicaSet=rs0&authSource=admin"
    exporter = exporters("--log.level", "debug", env={"MONGODB_URI": uri})
    exporter.wait_for(lambda look: look.liveness.get("last_failure_kind") == "unreachable", WAIT_S, "unreachable")
    read_everything(exporter)
    assert exporter.stop() == 0
    everything = exporter.log_text + "\n".join(exporter.transcript)
    assert "no-such-host.invalid:27017" in everything
    assert_no_password(everything)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604], ids=["0644", "0640", "0604"])
def test_a_config_file_with_a_password_readable_by_others_draws_a_warning_without_the_password(
    secured, exporters, tmp_path, mode
):
    path = config_file(tmp_path, uri_with_credentials(secured.uri, USER, PASSWORD), mode)
    exporter = exporters("--config.file", str(path), "--log.level", "debug")
    exporter.wait_for(lambda look: look.status == "GREEN", WAIT_S, "GREEN")  # a warning, not a refusal
    assert exporter.stop() == 0
    [line] = [line for line in exporter.lines() if WARNING in line]
    assert "level=warn" in line and str(path) in line
    assert_no_password(exporter.log_text)


def test_a_config_file_without_a_password_draws_no_warning_whoever_can_read_it(start_set, exporters, tmp_path):
    rs = start_set(3)
    path = config_file(tmp_path, rs.uri, 0o644)
    exporter = exporters("--config.file", str(path))
    exporter.wait_for(lambda look: look.status == "GREEN", WAIT_S, "GREEN")
    assert exporter.stop() == 0
    assert "readable by others" not in exporter.log_text


@pytest.mark.parametrize("password", ["e", "127", "lag", "correct-horse-battery-staple-is-40-chars"])
def test_a_password_of_any_length_leaves_the_whole_log_readable_and_unrevealed(start_set, exporters, password):
    """Issue 15: with the password `e`, every line read `l***v***l=info sourc***=main msg="s***rving ..."`."""
    rs = start_set(3, users=[(USER, password)])
    exporter = exporters("--mongodb.uri", uri_with_credentials(rs.uri, USER, password), "--log.level", "debug")
    exporter.wait_for(lambda look: look.status == "GREEN", WAIT_S, "GREEN")
    rs.take_down(2)
    exporter.wait_for(lambda look: "DOWN" in look.action_body, WAIT_S, "a member down")
    assert exporter.stop() == 0

    for line in exporter.lines():
        assert re.fullmatch(r'ts=\S+ level=(debug|info|warn|error) source=[a-z.]+ msg=".*"', line), line
    text = exporter.log_text
    assert text.count("***") == text.count(f"{USER}:***@")  # starred only where the password was
    assert 'msg="serving http://127.0.0.1:' in text
    assert "replica set rs0 is RED: 127.0.0.1:" in text
    if len(password) > 3:
        assert password not in text
