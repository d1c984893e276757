"""SIGTERM to exit of the exporter watching a simulated sharded cluster, the signal sent during a poll (issue 26).

    .venv/bin/python bench/stoptime.py                          # 100 shards, 4 delays x 3 runs
    .venv/bin/python bench/stoptime.py --shards 300 --runs 2

One `python -m mongosim --shards N` (its URI from its first line), then, per run, `python exporter.py --mongodb.uri
URI` as a user starts it; SIGTERM goes `delay` seconds after its "serving" line, while the first poll (which starts
at once and takes about 2.4 s at 100 shards) is still running: a run whose poll had already ended before the signal
is marked so. The figure is from the signal to the process's exit, as `docker stop` and the kubelet wait for it.
Prints one line per run and the worst; asserts nothing. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DELAYS_S = (0.1, 0.5, 1.0, 2.0)
START_WITHIN_S = 60.0
EXIT_WITHIN_S = 30.0
POLL_ENDED = (" is GREEN", " is YELLOW", " is RED", "collection of ")  # lines a poll's end logs


def read_until(stream: int, needle: str, within_s: float) -> str:
    """What the child wrote to `stream` until `needle` appeared (raises when it did not within `within_s`)."""
    text, deadline = "", time.monotonic() + within_s
    while needle not in text:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise TimeoutError(f"no {needle!r} within {within_s:g} s: {text[-500:]}")
        chunk = os.read(stream, 65536).decode(errors="replace")
        if not chunk:
            raise RuntimeError(f"the child ended before {needle!r}: {text[-500:]}")
        text += chunk
    return text


def one_run(uri: str, delay_s: float) -> tuple[float, int, bool]:
    """(seconds from SIGTERM to exit, exit status, whether the first poll was still running at the signal)."""
    argv = [sys.executable, "exporter.py", "--mongodb.uri", uri, "--web.listen-address", "127.0.0.1:0"]
    child = subprocess.Popen(
        argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        seen = read_until(child.stderr.fileno(), "serving", START_WITHIN_S)
        time.sleep(delay_s)  # the point of the measurement: a signal at this moment of the poll
        while select.select([child.stderr], [], [], 0)[0]:
            chunk = os.read(child.stderr.fileno(), 65536).decode(errors="replace")
            if not chunk:
                break
            seen += chunk
        during_poll = not any(marker in seen.split("serving", 1)[1] for marker in POLL_ENDED)
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=EXIT_WITHIN_S)
        return time.monotonic() - started, child.returncode, during_poll
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(EXIT_WITHIN_S)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3, help="runs per delay")
    args = parser.parse_args(argv)
    sim = subprocess.Popen(
        [sys.executable, "-m", "mongosim", "--shards", str(args.shards)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        uri = sim.stdout.readline().strip()
        print(f"python -m mongosim --shards {args.shards}: {uri}", flush=True)
        worst = 0.0
        for delay_s in DELAYS_S:
            for run in range(args.runs):
                took, status, during_poll = one_run(uri, delay_s)
                worst = max(worst, took)
                when = "during the first poll" if during_poll else "after the first poll ended"
                print(f"delay {delay_s:g} s, run {run + 1}: {when}; exit {status} after {took:.2f} s", flush=True)
        print(f"worst: {worst:.2f} s", flush=True)
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            sim.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
