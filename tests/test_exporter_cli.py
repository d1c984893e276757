"""The exporter's command line, run as a user runs it: bad settings stop it before anything starts."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from replicationlag.version import VERSION

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
        (
            ("--mongodb.uri", f"mongodb://u:{PASSWORD}@db0/?replicaSet=rs0&maxPoolSzie=3"),
            {},
            "unknown option 'maxPoolSzie' (did you mean maxpoolsize",
        ),
        (("--mongodb.uri", "mongodb://db0", "--infra.label", "bad label"), {}, "--infra.label"),
        # issue 17: out-of-range durations name their setting, never the URI, and never end in a traceback
        (("--mongodb.uri", f"mongodb://u:{PASSWORD}@db0", "--collect.interval", "200"), {}, "--collect.interval '200'"),
        (("--mongodb.uri", f"mongodb://u:{PASSWORD}@db0", "--collect.interval", "1e308"), {}, "--collect.interval"),
        (("--mongodb.uri", f"mongodb://u:{PASSWORD}@db0", "--collect.interval", "100h"), {}, "--collect.interval"),
        (("--mongodb.uri", f"mongodb://u:{PASSWORD}@db0", "--collect.interval", "0.0003"), {}, "--collect.interval"),
        (("--mongodb.uri", f"mongodb://u:{PASSWORD}@db0", "--collect.timeout", "288h"), {}, "--collect.timeout"),
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


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'# cl\xe9\n[infra.clusterKeeper]\nuri = "mongodb://db0/"\n', "not UTF-8 (byte 0xe9 at line 1, column 5)"),
        (b"[infra.clusterKeeper\n", "not valid TOML"),
        (b"x = " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "not valid TOML"),
    ],
    ids=["latin-1", "syntax", "nested"],
)
def test_a_bad_config_file_is_one_line_naming_the_file(tmp_path, content, expected):
    config = tmp_path / "infra.toml"
    config.write_bytes(content)
    result = run_exporter("--config.file", str(config))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line == f"replicationlag: error: --config.file {config}: {line.split(': ', 3)[3]}"
    assert expected in line


def test_a_config_file_with_a_byte_order_mark_is_read_like_any_utf8_file(tmp_path):
    config = tmp_path / "infra.toml"
    config.write_bytes('\ufeff[infra.clusterKeeper]\nuri = "mongodb://db0:27017/"\n'.encode())
    result = run_exporter("--config.file", str(config), "--web.listen-address", "127.0.0.1:99999")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    # The file was read: only the address is wrong.
    assert line.startswith("replicationlag: error: --web.listen-address")


def test_version_prints_the_exporter_version_and_exits_zero():
    result = run_exporter("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"replicationlag {VERSION}"
