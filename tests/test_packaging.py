"""`pip install .`: pyproject.toml lists every top-level product module (and none that is gone), and the built wheel,
installed into a fresh virtual environment, gives a `replicationlag` command with the flags of `python exporter.py`
that serves the demo (the simulator package ships in the wheel).

The slow test builds the wheel from a copy of the source tree (setuptools writes build/ and *.egg-info/ beside the
sources) with `--no-build-isolation`, so the build uses the setuptools pinned in requirements-dev.txt and needs no
network, and installs it with `--no-deps`. The runtime dependencies then come from this test run's own environment
through a .pth file; that the wheel *declares* them is checked on its metadata, against requirements.txt.
"""

from __future__ import annotations

import ast
import http.client
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from ops_util import REPO

from version import VERSION

PYPROJECT = REPO / "pyproject.toml"
SIMULATOR_PACKAGE = "mongosim"
BUILD_TIMEOUT_S = 120
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def setuptools_settings() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]


def top_level_modules() -> set[str]:
    """Every top-level *.py of the repository is a product module (tests, bench and tools live in folders)."""
    return {path.stem for path in REPO.glob("*.py")}


def runtime_pins() -> list[str]:
    """requirements.txt's requirements, comments dropped: what the wheel must declare as Requires-Dist."""
    lines = (line.split("#", 1)[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines())
    return [line for line in lines if line]


def flags(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][\w.-]*", help_text))


def test_py_modules_lists_every_top_level_module_and_nothing_that_is_gone():
    listed = set(setuptools_settings()["py-modules"])
    modules = top_level_modules()
    assert not modules - listed, f"add to [tool.setuptools] py-modules in pyproject.toml: {sorted(modules - listed)}"
    assert not listed - modules, f"listed in py-modules but not in the repository: {sorted(listed - modules)}"


def test_the_module_list_check_sees_a_new_module(tmp_path, monkeypatch):
    """The check above is not vacuous: a module added at the top level and not listed is noticed."""
    fake_repo = tmp_path / "repo"
    fake_repo.mkdir()
    for name in [*setuptools_settings()["py-modules"], "routes"]:
        (fake_repo / f"{name}.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "REPO", fake_repo)
    with pytest.raises(AssertionError, match="routes"):
        test_py_modules_lists_every_top_level_module_and_nothing_that_is_gone()


def test_the_simulator_package_ships_for_the_demo_and_the_command_is_exporter_main():
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert setuptools_settings()["packages"] == [SIMULATOR_PACKAGE]
    assert (REPO / SIMULATOR_PACKAGE / "__init__.py").is_file()
    assert project["project"]["scripts"] == {"replicationlag": "exporter:main"}
    tree = ast.parse((REPO / "exporter.py").read_text(encoding="utf-8"))
    (main,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
    assert [arg.arg for arg in main.args.args] == ["argv"] and main.args.defaults, "main(argv=None) expected"
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}


def _copy_sources(destination: Path) -> Path:
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "tests", "bench", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
    )
    shutil.copytree(REPO, destination, ignore=ignore)
    return destination


def _build_wheel(tmp_path: Path) -> Path:
    source = _copy_sources(tmp_path / "src")
    dist = tmp_path / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, source]
    result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = dist.glob("replicationlag-*.whl")
    return wheel


def _fresh_venv_with(wheel: Path, where: Path) -> Path:
    """A new venv holding only the wheel; the pinned dependencies are borrowed from this run's environment."""
    subprocess.run([sys.executable, "-m", "venv", where], check=True, timeout=BUILD_TIMEOUT_S)
    python = where / "bin" / "python"
    install = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check", wheel]
    result = subprocess.run(install, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    (Path(site) / "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return where / "bin" / "replicationlag"


@pytest.mark.slow
def test_the_wheel_installs_a_replicationlag_command_that_serves_the_demo(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        requires = re.findall(r"^Requires-Dist: (.+)$", archive.read(metadata).decode(), flags=re.MULTILINE)
        scripts = archive.read(entry_points).decode()
    for module in top_level_modules():
        assert f"{module}.py" in names, f"{module}.py is not in the wheel"
    for path in (REPO / SIMULATOR_PACKAGE).glob("*.py"):
        assert f"{SIMULATOR_PACKAGE}/{path.name}" in names, f"{SIMULATOR_PACKAGE}/{path.name} is not in the wheel"
    assert not {n for n in names if n.startswith(("tests/", "bench/"))}
    assert requires == runtime_pins()
    assert "replicationlag = exporter:main" in scripts

    command = _fresh_venv_with(wheel, tmp_path / "venv")
    # Run from an empty folder so nothing of the repository is importable but the installed wheel.
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "MONGODB_URI", "CONFIG_FILE"}}
    installed = subprocess.run(
        [command, "--help"], capture_output=True, text=True, timeout=60, cwd=elsewhere, env=env, check=False
    )
    assert installed.returncode == 0, installed.stderr
    assert "--mongodb.uri" in installed.stdout
    source = subprocess.run(
        [sys.executable, REPO / "exporter.py", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert flags(installed.stdout) == flags(source.stdout)
    version = subprocess.run(
        [command, "--version"], capture_output=True, text=True, timeout=60, cwd=elsewhere, env=env, check=False
    )
    assert (version.returncode, version.stdout.strip()) == (0, f"replicationlag {VERSION}")
    assert wheel.name.startswith(f"replicationlag-{VERSION}-")  # the package's version is version.py's

    _serve_the_demo_and_stop(command, elsewhere, env)


def _serve_the_demo_and_stop(command: Path, cwd: Path, env: dict[str, str]) -> None:
    """The installed command with --demo (its simulator comes from the wheel): /liveness turns 200, the Zero Problem
    document answers, and SIGTERM ends it with status 0."""
    process = subprocess.Popen(
        [command, "--demo", "--web.listen-address", "127.0.0.1:0"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    try:
        port, seen = None, []
        deadline = time.monotonic() + START_TIMEOUT_S
        while port is None and time.monotonic() < deadline and process.poll() is None:
            try:
                seen.append(lines.get(timeout=0.2))
            except queue.Empty:
                continue
            match = re.search(r"serving http://127\.0\.0\.1:(\d+)/", seen[-1])
            port = int(match.group(1)) if match else None
        assert port, f"no 'serving' line within {START_TIMEOUT_S:g} s: {seen}"

        def get(method: str, path: str) -> tuple[int, bytes]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                connection.request(method, path)
                response = connection.getresponse()
                return response.status, response.read()
            finally:
                connection.close()

        status = 0
        while status != 200 and time.monotonic() < deadline:
            status, _ = get("GET", "/liveness")
            if status != 200:
                time.sleep(0.1)
        assert status == 200, "/liveness never answered 200 on the demo"
        status, body = get("PUT", "/mhp.zeroproblem.mongo.replcationlag")
        assert status == 200 and b'"status"' in body
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    assert code == 0
