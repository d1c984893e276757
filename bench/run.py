"""Benchmarks of replicationlag against the peer (Debian's prometheus-mongodb-exporter), issues 8, 12, 13 and 14.

    ./run bench                       # everything, about 20 minutes
    ./run bench --only accuracy,idle  # some sections: speed, faults, accuracy, idle, cost, detection, scale, danger
    ./run bench --quick               # shorter runs and fewer draws, to try the bench out (not for RESULTS.md)

Everything runs on 127.0.0.1 against the replica-set simulator (mongosim); every load is bounded in time and
in count. The bench prints figures and asserts nothing about time. Tables go to stdout and, with the machine and
the commands, to bench/out/results.md and bench/out/results.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root: mongosim and our modules

from bench import accuracy, cost, dangercost, detection, machine, scale, scrape
from bench.procs import OUT, QUIET_CORES, wait_for_quiet
from bench.report import Section

SECTIONS = ("speed", "faults", "accuracy", "idle", "cost", "detection", "scale", "danger")
FULL = {
    "duration_s": 5.0,
    "draws": 500,
    "boundary_draws": 200,
    "idle_minutes": 30,
    "scrapes": 100_000,
    "idle_s": 20.0,
    "windows_5s": 4,
    "with_60s": True,
    "scale_sizes": scale.SIZES,
    "scale_interval_s": None,  # the default, 60 s
    "danger_polls": 50,
    "danger_blocks": 6,
}
QUICK = {
    "duration_s": 2.0,
    "draws": 40,
    "boundary_draws": 20,
    "idle_minutes": 3,
    "scrapes": 5_000,
    "idle_s": 5.0,
    "windows_5s": 1,
    "with_60s": False,
    "scale_sizes": scale.QUICK_SIZES,
    "scale_interval_s": 15.0,
    "danger_polls": 20,
    "danger_blocks": 2,
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="./run bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="short runs to try the bench; not the published figures")
    parser.add_argument("--seed", type=int, default=8, help="seed of the random draws (default 8)")
    parser.add_argument("--no-peer", action="store_true", help="measure ours only (when the peer cannot be installed)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each section, wait up to this many seconds for other processes to go quiet (default 120)",
    )
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def run_section(name: str, p: dict, seed: int, with_peer: bool) -> list[Section]:
    if name == "speed":
        return [scrape.run_speed(p["duration_s"], with_peer)]
    if name == "faults":
        return [scrape.run_faults(p["duration_s"], with_peer)]
    if name == "accuracy":
        return [accuracy.run_accuracy(p["draws"], p["boundary_draws"], seed, with_peer)]
    if name == "idle":
        return [accuracy.run_idle(p["idle_minutes"], seed, with_peer)]
    if name == "cost":
        return [cost.run_cost(p["scrapes"], p["idle_s"], with_peer)]
    if name == "scale":
        return [scale.run_scale(p["scale_sizes"], p["scale_interval_s"], with_peer)]
    if name == "danger":
        return [dangercost.run_danger(p["danger_polls"], p["danger_blocks"])]
    return [detection.run_detection(p["windows_5s"], seed, p["with_60s"])]


def main(argv: list[str]) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.ERROR)  # the simulator and the driver speak up only when something breaks
    problems = machine.ensure_tools(need_peer=not args.no_peer)
    if problems:
        for problem in problems:
            print(f"bench: {problem}", file=sys.stderr)
        return 2
    params = QUICK if args.quick else FULL
    about = machine.describe()
    command = shlex.join(["./run", "bench", *argv])
    header = [
        "# Benchmark results" + (" (QUICK run: not the published figures)" if args.quick else ""),
        "",
        f"Command: `{command}` (seed {args.seed}), started {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "Machine:",
        "",
        machine.markdown(about),
        "",
    ]
    print("\n".join(header), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sections: list[Section] = []
    for name in args.sections:
        print(f"<!-- running {name} -->", flush=True)
        waited, busy = wait_for_quiet(max_wait_s=args.quiet_wait)
        for section in run_section(name, params, args.seed, not args.no_peer):
            section.notes.append(
                f"Before this section other work on the machine kept {busy:.2f} cores busy (the bench waited "
                f"{waited:.0f} s for less than {QUIET_CORES} cores; other sessions share this machine)."
            )
            sections.append(section)
            print(section.markdown(), flush=True)
    total = time.monotonic() - started
    footer = f"_Total bench time: {total / 60:.1f} min._\n"
    print(footer)
    body = "\n".join(header) + "\n" + "\n".join(s.markdown() for s in sections) + "\n" + footer
    (OUT / "results.md").write_text(body)
    (OUT / "results.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": about,
                "params": params,
                "seconds": total,
                "sections": [
                    {
                        "number": s.number,
                        "title": s.title,
                        "tables": [{"caption": t.caption, "headers": t.headers, "rows": t.rows} for t in s.tables],
                        "targets": s.targets,
                        "notes": s.notes,
                        "commands": s.commands,
                        "data": s.data,
                    }
                    for s in sections
                ],
            },
            indent=1,
            default=str,
        )
    )
    print(f"bench: wrote {OUT / 'results.md'} and {OUT / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
