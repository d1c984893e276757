"""`pip install .`: the wheel adds four top-level names (exporter, bridge, the replicationlag package, the mongosim
simulator), declares compatible ranges that admit the pins of the lock (constraints.txt), and `pip install .` run
in a copy of the source tree, into a fresh virtual environment, resolves those ranges and gives a `replicationlag`
command with the flags of `python exporter.py` that serves the demo.

The slow test builds the wheel from a copy of the source tree (setuptools writes build/ and *.egg-info/ beside the
sources) to check what it holds. Then it runs `pip install .` as a user does, but offline: `--no-index` with
`--find-links` to a wheelhouse repacked from the distributions this test run has installed (the runtime
dependencies, theirs, and the pinned setuptools, which `--no-build-isolation` builds with), so pip resolves the
declared ranges itself and needs no network.
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


def _wheelhouse_from_this_environment(where: Path) -> Path:
    """Wheels repacked from what this run has installed: every runtime requirement (and theirs, markers applied)
    and setuptools, each from its installed files and dist-info, named with its own WHEEL tag."""
    where.mkdir()
    wanted = [Requirement(r) for r in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    wanted.append(Requirement("setuptools"))
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        dist = importlib.metadata.distribution(requirement.name)
        wanted += [Requirement(r) for r in dist.requires or []]
        tags = [line.split(": ", 1)[1].split("-") for line in dist.read_text("WHEEL").splitlines() if "Tag: " in line]
        tag = "-".join(".".join(dict.fromkeys(part)) for part in zip(*tags, strict=True))  # py2.py3-none-any
        stem = f"{re.sub(r'[-_.]+', '_', dist.metadata['Name'])}-{dist.version}"
        files = [f for f in dist.files or [] if not str(f).startswith("..") and "__pycache__" not in str(f)]
        files = [f for f in files if f.name not in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")]
        info = next(str(f).split("/")[0] for f in files if ".dist-info/" in str(f))
        with zipfile.ZipFile(where / f"{stem}-{tag}.whl", "w", zipfile.ZIP_DEFLATED) as wheel:
            for file in files:
                wheel.write(dist.locate_file(file), str(file))
            wheel.writestr(f"{info}/RECORD", "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n")
    return where


def _pip_install_dot(source: Path, where: Path, wheelhouse: Path) -> Path:
    """`pip install .` in the source tree into a new venv, offline: the dependencies come from the wheelhouse."""
    # Without pip of its own (ensurepip takes seconds): this run's pip installs into it (`--python`), as its own would.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", where], check=True, timeout=BUILD_TIMEOUT_S)
    pip = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        where / "bin" / "python",
        "--disable-pip-version-check",
        "--isolated",
    ]
    offline = ["--no-index", "--find-links", wheelhouse]
    pinned = f"setuptools=={_pin('setuptools')}"  # what --no-build-isolation builds with: the pyproject's pin
    for args in (["install", "-q", *offline, pinned], ["install", "-q", *offline, "--no-build-isolation", "."]):
        result = subprocess.run(
            [*pip, *args], cwd=source, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    checked = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout  # every declared dependency is installed, in a declared range
    frozen = subprocess.run([*pip, "freeze"], capture_output=True, text=True, timeout=60, check=True).stdout
    installed = dict(line.split("==", 1) for line in frozen.splitlines() if "==" in line)
    installed = {canonicalize_name(name): version for name, version in installed.items()}
    for requirement in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]:
        name = canonicalize_name(Requirement(requirement).name)
        assert installed.get(name) == _pin(name), (name, installed.get(name))  # resolved to the lock's pin
    return where / "bin" / "replicationlag"


def _pin(name: str) -> str:
    """The exact version constraints.txt pins for `name`."""
    for line in (REPO / "constraints.txt").read_text().splitlines():
        pinned, _, version = line.partition("==")
        if version and canonicalize_name(pinned) == canonicalize_name(name):
            return version.strip()
    raise AssertionError(f"{name} is not pinned in constraints.txt")


@pytest.mark.slow
def test_pip_install_dot_into_a_fresh_venv_gives_a_replicationlag_command_that_serves_the_demo(tmp_path):
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

    source = _copy_sources(tmp_path / "user-checkout")
    command = _pip_install_dot(source, tmp_path / "venv", _wheelhouse_from_this_environment(tmp_path / "wheelhouse"))
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
