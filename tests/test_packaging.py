"""`pip install .`: the wheel adds four top-level names (exporter, bridge, the replicationlag package, the mongosim
simulator), declares compatible ranges that admit the pins of the lock (constraints.txt), and, installed into a
fresh virtual environment, gives a `replicationlag` command with the flags of `python exporter.py` that serves the
demo.

The slow test builds the wheel from a copy of the source tree (setuptools writes build/ and *.egg-info/ beside the
sources) with `--no-build-isolation`, so the build uses the setuptools pinned in requirements-dev.txt and needs no
network, and installs it with `--no-deps`. The runtime dependencies then come from this test run's own environment
through a .pth file; that the wheel *declares* them is checked on its metadata, against pyproject.toml.
"""

from __future__ import annotations

import ast
import http.client
import importlib.metadata
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
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from replicationlag.version import VERSION

PYPROJECT = REPO / "pyproject.toml"
PRODUCT_PACKAGE = "replicationlag"
SIMULATOR_PACKAGE = "mongosim"
MAX_TOP_LEVEL_NAMES = 4
BUILD_TIMEOUT_S = 120
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def setuptools_settings() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]


def root_modules() -> set[str]:
    """Every top-level *.py of the repository: the design card's two (tests, bench and tools live in folders)."""
    return {path.stem for path in REPO.glob("*.py")}


def shipped_sources() -> set[str]:
    """Every Python file the wheel must hold, as a path inside it."""
    files = {f"{module}.py" for module in root_modules()}
    for package in (PRODUCT_PACKAGE, SIMULATOR_PACKAGE):
        files |= {path.relative_to(REPO).as_posix() for path in (REPO / package).rglob("*.py")}
    return files


def requirement_lines(name: str) -> list[str]:
    """A requirements file's requirements: comments and pip options (-c, -r) dropped."""
    lines = (line.split("#", 1)[0].strip() for line in (REPO / name).read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def locked_versions() -> dict[str, str]:
    """constraints.txt, the lock: canonical name -> exact version."""
    pins = {}
    for line in requirement_lines("constraints.txt"):
        name, _, version = line.partition("==")
        assert version, f"constraints.txt: {line!r} is not an exact pin"
        pins[canonicalize_name(name)] = version
    return pins


def flags(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][\w.-]*", help_text))


def test_only_the_design_cards_two_files_are_top_level_modules_and_every_package_is_found():
    assert root_modules() == set(setuptools_settings()["py-modules"]) == {"exporter", "bridge"}
    include = setuptools_settings()["packages"]["find"]["include"]
    assert include == [PRODUCT_PACKAGE, f"{PRODUCT_PACKAGE}.*", SIMULATOR_PACKAGE]
    for folder in (REPO / PRODUCT_PACKAGE).rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
            assert (folder / "__init__.py").is_file(), f"{folder} holds modules but is no package: the wheel skips it"


def test_the_package_declares_compatible_ranges_that_admit_the_locked_pins():
    """pyproject.toml says what we work with (ranges), constraints.txt what we install (exact pins): the same
    packages as requirements.txt, every range admits its pin, and no range is itself a pin."""
    declared = [Requirement(text) for text in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    locked = locked_versions()
    assert {canonicalize_name(r.name) for r in declared} == {
        canonicalize_name(line) for line in requirement_lines("requirements.txt")
    }
    for requirement in declared:
        assert not any(s.operator in {"==", "==="} for s in requirement.specifier), f"{requirement} is a pin"
        assert any(s.operator == "<" for s in requirement.specifier), f"{requirement} has no upper bound"
        assert requirement.specifier.contains(locked[canonicalize_name(requirement.name)]), requirement
    dev = {canonicalize_name(line) for line in requirement_lines("requirements-dev.txt")}
    assert dev | {canonicalize_name(r.name) for r in declared} <= set(locked), "constraints.txt pins what we install"
    for name in ("requirements.txt", "requirements-dev.txt"):
        text = (REPO / name).read_text()
        assert "-c constraints.txt" in text or "-r requirements.txt" in text, f"{name} installs outside the lock"


def test_everything_installed_here_is_pinned_by_the_lock():
    """The environment ./run made from requirements-dev.txt holds nothing that constraints.txt does not pin (at its
    version): a dependency of a dependency is locked too."""
    locked = locked_versions()
    unpinned = {
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in importlib.metadata.distributions()
        if canonicalize_name(dist.metadata["Name"]) not in {"pip", "replicationlag"}
        and locked.get(canonicalize_name(dist.metadata["Name"])) != dist.version
    }
    assert not unpinned, f"installed but not in constraints.txt at that version: {sorted(unpinned)}"


def test_the_command_is_exporter_main():
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert (REPO / SIMULATOR_PACKAGE / "__init__.py").is_file()
    assert project["project"]["scripts"] == {"replicationlag": "exporter:main"}
    tree = ast.parse((REPO / "exporter.py").read_text(encoding="utf-8"))
    (main,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
    assert [arg.arg for arg in main.args.args] == ["argv"] and main.args.defaults, "main(argv=None) expected"


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
    top_level = {name.split("/")[0].removesuffix(".py") for name in names if ".dist-info/" not in name}
    assert top_level == {"exporter", "bridge", PRODUCT_PACKAGE, SIMULATOR_PACKAGE}
    assert len(top_level) <= MAX_TOP_LEVEL_NAMES
    assert not shipped_sources() - names, f"not in the wheel: {sorted(shipped_sources() - names)}"
    assert not {n for n in names if n.startswith(("tests/", "bench/"))}
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    assert [Requirement(r) for r in requires] == [Requirement(r) for r in declared]
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
