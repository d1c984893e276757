"""The exporter's command line, run as a user runs it: bad settings stop it before anything starts."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # README "Tests": skipped by the quick run

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "hunter2-Secret"


def run_exporter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "exporter.py"), *args],
        capture_output=True,
        text=True,
        timeout=20,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=ROOT,
        check=False,
    )


def test_help_documents_every_flag_with_its_environment_variable():
    result = run_exporter("--help")
    assert result.returncode == 0
    for flag, env in [
        ("--mongodb.uri", "MONGODB_URI"),
        ("--infra.label", "INFRA_LABEL"),
        ("--config.file", "CONFIG_FILE"),
        ("--web.listen-address", "WEB_LISTEN_ADDRESS"),
        ("--collect.interval", "COLLECT_INTERVAL"),
        ("--collect.timeout", "COLLECT_TIMEOUT"),
        ("--log.level", "LOG_LEVEL"),
        ("--log.format", "LOG_FORMAT"),
    ]:
        assert flag in result.stdout
        assert env in result.stdout
    assert "--demo" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ((), {}, "no MongoDB URI for infra label 'clusterKeeper'"),
        (("--mongodb.uri", f"mongo://u:{PASSWORD}@db0"), {}, "malformed MongoDB URI"),
        (("--mongodb.uri", f"mongodb://u:{PASSWORD}@db0:70000"), {}, "bad host"),
        ((), {"MONGODB_URI": f"mongodb://u:{PASSWORD}@db0", "COLLECT_INTERVAL": "0"}, "--collect.interval"),
        (("--mongodb.uri", f"mongodb://u:{PASSWORD}@db0", "--collect.interval", "-1"), {}, "positive"),
        (("--mongodb.uri", f"mongodb://u:{PASSWORD}@db0/?replicaSet=rs0&tls=maybe"), {}, "URI was rejected"),
        (("--mongodb.uri", "mongodb://db0", "--infra.label", "bad label"), {}, "--infra.label"),
    ],
)
def test_bad_settings_exit_non_zero_with_one_clear_line_and_no_password(args, env, expected):
    result = run_exporter(*args, env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("replicationlag: error: ")
    assert expected in lines[0]
    assert PASSWORD not in result.stderr + result.stdout


def test_an_unknown_infra_label_in_the_config_file_is_refused(tmp_path):
    config = tmp_path / "infra.toml"
    config.write_text(f'[infra.reporting]\nuri = "mongodb://u:{PASSWORD}@db0:27017"\n')
    config.chmod(0o600)
    result = run_exporter("--config.file", str(config))
    assert result.returncode == 1
    assert "unknown infra label 'clusterKeeper' (labels in the file: reporting)" in result.stderr
    assert PASSWORD not in result.stderr


def test_a_port_in_use_is_refused_before_anything_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_exporter(
            "--mongodb.uri",
            f"mongodb://u:{PASSWORD}@127.0.0.1:1/?replicaSet=rs0",
            "--web.listen-address",
            f"127.0.0.1:{port}",
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Address already in use" in result.stderr
    assert "collection failed" not in result.stderr
    assert PASSWORD not in result.stderr
