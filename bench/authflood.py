"""Issue 15.1: a valid scraper's latency while another client sends wrong passwords on 20 connections.

For each git ref given (WORKTREE: the files as they are), the exporter of that ref runs as a child process on the
built-in simulated set, with a web config whose one user has a bcrypt hash of cost 10 (exporter-toolkit's
examples use 10). A scraper whose credential the exporter already accepted scrapes /metrics every 100 ms; first
alone for `--quiet-seconds`, then while 20 threads, each on its own keep-alive connection from 127.0.0.2, send
distinct wrong passwords back to back for `--seconds`. Prints one markdown row per ref and phase. Bounded: every
request has a client timeout, every phase a duration. Measures, asserts nothing.

    .venv/bin/python bench/authflood.py --refs 3591a02 WORKTREE
"""

from __future__ import annotations

import argparse
import base64
import http.client
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import bcrypt

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "prometheus", "s3cret-Scrape"
SCRAPE_EVERY_S = 0.1
SCRAPE_TIMEOUT_S = 10.0
ATTACK_TIMEOUT_S = 30.0


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()}


def source_tree(ref: str, where: Path) -> Path:
    if ref == "WORKTREE":
        return ROOT
    target = where / ref
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def start_exporter(tree: Path, config: Path) -> tuple[subprocess.Popen, int]:
    flags = ["--demo", "--web.listen-address", "127.0.0.1:0", "--web.config.file", str(config)]
    log_path = config.parent / f"exporter-{time.monotonic_ns()}.log"
    with log_path.open("w") as log:  # a file, so that a chatty child can never block on a pipe
        child = subprocess.Popen([sys.executable, "exporter.py", *flags], cwd=tree, stderr=log, stdout=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if found := re.search(r"serving http://127\.0\.0\.1:(\d+)/", log_path.read_text()):
            return child, int(found.group(1))
        if child.poll() is not None:
            raise RuntimeError(f"exporter exited: {log_path.read_text()}")
        time.sleep(0.05)
    child.kill()
    raise RuntimeError("exporter did not say where it serves within 30 s")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def scrape_for(port: int, seconds: float) -> tuple[list[float], Counter]:
    latencies: list[float] = []
    outcomes: Counter = Counter()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=SCRAPE_TIMEOUT_S)
        try:
            connection.request("GET", "/metrics", headers=basic(PASSWORD))
            response = connection.getresponse()
            response.read()
            outcomes[response.status] += 1
            if response.status == 200:
                latencies.append((time.monotonic() - started) * 1000)
        except OSError as error:
            outcomes[type(error).__name__] += 1
        finally:
            connection.close()
        time.sleep(max(0.0, SCRAPE_EVERY_S - (time.monotonic() - started)))
    return latencies, outcomes


def attack(port: int, worker: int, stop: threading.Event, seen: Counter) -> None:
    attempt = 0
    connection = None
    while not stop.is_set():
        if connection is None:
            connection = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=ATTACK_TIMEOUT_S, source_address=("127.0.0.2", 0)
            )
        attempt += 1
        try:
            connection.request("GET", "/metrics", headers=basic(f"guess-{worker}-{attempt}"))
            response = connection.getresponse()
            response.read()
            seen[response.status] += 1
            if response.will_close:
                connection.close()
                connection = None
        except (OSError, http.client.HTTPException) as error:
            seen[type(error).__name__] += 1
            connection.close()
            connection = None
    if connection is not None:
        connection.close()


def summary(latencies: list[float]) -> tuple[str, str, str]:
    if not latencies:
        return "-", "-", "-"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.1f}", f"{p99:.1f}", f"{ordered[-1]:.1f}"


def measure(ref: str, tree: Path, config: Path, args: argparse.Namespace) -> list[str]:
    child, port = start_exporter(tree, config)
    rows = []
    try:
        scrape_for(port, 1.0)  # the first scrape pays bcrypt: Prometheus's credential is known before the flood
        cpu_before = cpu_s(child.pid)
        latencies, outcomes = scrape_for(port, args.quiet_seconds)
        quiet_cores = (cpu_s(child.pid) - cpu_before) / args.quiet_seconds
        rows.append(_row(ref, "alone", latencies, outcomes, Counter(), cores=quiet_cores))

        stop, seen = threading.Event(), Counter()
        attackers = [
            threading.Thread(target=attack, args=(port, n, stop, seen), daemon=True) for n in range(args.connections)
        ]
        cpu_before = cpu_s(child.pid)
        for thread in attackers:
            thread.start()
        try:
            latencies, outcomes = scrape_for(port, args.seconds)
        finally:
            stop.set()
            for thread in attackers:
                thread.join(ATTACK_TIMEOUT_S + 5)
        flood_cores = (cpu_s(child.pid) - cpu_before) / args.seconds
        phase = f"{args.connections} connections guessing"
        rows.append(_row(ref, phase, latencies, outcomes, seen, cores=flood_cores))
    finally:
        child.terminate()
        child.wait(10)
    return rows


def _row(ref: str, phase: str, latencies: list[float], outcomes: Counter, seen: Counter, *, cores: float) -> str:
    p50, p99, worst = summary(latencies)
    failed = sum(count for key, count in outcomes.items() if key != 200)
    guesses = ", ".join(f"{key}: {count}" for key, count in sorted(seen.items(), key=str)) or "-"
    return (
        f"| {ref} | {phase} | {sum(outcomes.values())} | {failed} | {p50} | {p99} | {worst} | {guesses} | {cores:.2f} |"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", nargs="+", default=["WORKTREE"], help="git refs to compare; WORKTREE: as is")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the flood")
    parser.add_argument("--quiet-seconds", type=float, default=10.0, help="scraping alone before the flood")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--cost", type=int, default=10, help="bcrypt cost of the user's hash")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="authflood-") as scratch:
        where = Path(scratch)
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=args.cost)).decode()
        config = where / "web.yml"
        config.write_text(f"basic_auth_users:\n  {USER}: {hashed}\n")
        print(
            "| code | phase | scrapes | failed (not 200 or no answer in 10 s) | p50 ms | p99 ms | max ms "
            "| answers to the guesses | exporter CPU (cores) |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for ref in args.refs:
            for row in measure(ref, source_tree(ref, where), config, args):
                print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
