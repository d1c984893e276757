"""What a simulated sharded cluster costs: start time, threads, resident memory and idle CPU with no client.

    python -m mongosim.scale                     # 10 and 100 shards of 3 members, a 3-member CSRS, 1 router
    python -m mongosim.scale --shards 100 --idle 10 --per-set-loops

Each size runs in a fresh interpreter (so memory figures do not add up across runs) and prints one line. With
--per-set-loops the same sets also run the way a lone ReplicaSet does, each with its own loop thread, for
comparison. Idle CPU is the process's user+system time over `--idle` seconds in which nobody connects.

Imports `.sharded` and `.replicaset` only.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from .replicaset import ReplicaSet
from .sharded import ShardedCluster


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(shards: int, idle_s: float, per_set_loops: bool) -> dict[str, Any]:
    """Start, idle, stop one cluster (or, with `per_set_loops`, as many lone sets) in this process."""
    rss_before = _rss_mib()
    began = time.monotonic()
    if per_set_loops:
        sets = [ReplicaSet(3, name=f"s{i}").start() for i in range(shards + 1)]
        stop = lambda: [rs.stop() for rs in sets]  # noqa: E731
    else:
        cluster = ShardedCluster(shards=shards, members=3, config_members=3, routers=1).start()
        stop = cluster.stop
    start_s = time.monotonic() - began
    threads = threading.active_count()
    rss = _rss_mib()
    cpu_before, idle_began = _cpu_s(), time.monotonic()
    time.sleep(idle_s)
    idle_cpu = (_cpu_s() - cpu_before) / (time.monotonic() - idle_began)
    began = time.monotonic()
    stop()
    return {
        "shards": shards,
        "loops": "per set" if per_set_loops else "one",
        "start_s": round(start_s, 3),
        "threads": threads,
        "rss_mib": round(rss, 1),
        "rss_added_mib": round(rss - rss_before, 1),
        "idle_cpu_percent": round(100 * idle_cpu, 2),
        "stop_s": round(time.monotonic() - began, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mongosim.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, nargs="+", default=[10, 100], help="cluster sizes (default 10 100)")
    p.add_argument("--idle", type=float, default=5.0, metavar="S", help="seconds of idle CPU measurement")
    p.add_argument("--per-set-loops", action="store_true", help="also measure one loop thread per set")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a single run, in this process
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.shards[0], args.idle, args.per_set_loops)))
        return 0
    for shards in args.shards:
        for per_set in (False, True) if args.per_set_loops else (False,):
            cmd = [sys.executable, "-m", "mongosim.scale", "--one", "--shards", str(shards), "--idle", str(args.idle)]
            run = subprocess.run(cmd + ["--per-set-loops"] * per_set, capture_output=True, text=True, check=True)
            print(run.stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
