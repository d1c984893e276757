"""The machine the figures were measured on, and the two Debian tools the bench needs (wrk and the peer).

When a tool is missing and we are root, it is installed with apt as `./run` installs its test packages;
otherwise the bench says which command to run and stops.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from bench.procs import PEER, ROOT

APT_PACKAGES = {"wrk": "wrk", PEER: "prometheus-mongodb-exporter"}


def ensure_tools(need_peer: bool) -> list[str]:
    """Install what is missing when root; returns the problems that remain (empty when all is there)."""
    wanted = ["wrk"] + ([PEER] if need_peer else [])
    missing = [tool for tool in wanted if shutil.which(tool) is None]
    if not missing:
        return []
    packages = [APT_PACKAGES[tool] for tool in missing]
    if os.geteuid() == 0:
        print(f"bench: installing {' '.join(packages)} with apt-get (--no-install-recommends)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], check=False, env=env)
        if PEER in missing and shutil.which(PEER):
            print(
                "bench: note: the Debian package also enables a service on :9001 where systemd runs; "
                "`systemctl disable --now prometheus-mongodb-exporter` turns it off (the bench starts its own).",
                flush=True,
            )
    still = [tool for tool in wanted if shutil.which(tool) is None]
    if not still:
        return []
    return [
        f"missing: {', '.join(still)}. Install with: sudo apt-get install --no-install-recommends "
        + " ".join(APT_PACKAGES[t] for t in still)
        + (" (or run ./run bench --no-peer to measure only ours)" if PEER in still else "")
    ]


def _first(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "?"


def describe() -> dict[str, str]:
    mem_kb = _first("/proc/meminfo", "MemTotal").split()[0]
    mem = f"{int(mem_kb) / 1024 / 1024:.1f} GiB" if mem_kb.isdigit() else "?"
    commit = _output(["git", "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": _first("/proc/cpuinfo", "model name"),
        "memory": mem,
        "os": f"Debian {Path('/etc/debian_version').read_text().strip()}"
        if Path("/etc/debian_version").exists()
        else platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": _output(["wrk", "--version"]).split(" Copyright")[0],
        "peer": _output([PEER, "-version"]) if shutil.which(PEER) else "not installed",
        "commit": commit + (" (working tree has uncommitted changes)" if dirty not in ("", "?") else ""),
    }


def markdown(machine: dict[str, str]) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in machine.items())
