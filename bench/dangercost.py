"""Section 8: what the reads of "how dangerous is the lag" cost per poll (issue 13), and the memory of the 24 h
lag history at 300 shards.

Per poll: the exporter is built in this process as exporter.py builds it (`build_service`), once with the danger
reads and once without (`danger_reads=False`, a switch that exists for this benchmark only), against the same
simulated 3-member set, which runs in a process of its own so that its CPU (the MongoDB side's cost) is read
apart. The bench runs the polls itself, back to back, in alternating blocks; CPU per poll is this process's CPU
over the block divided by the polls (the driver's heartbeat threads run meanwhile, in both modes alike). Each
block is a fresh exporter (connections made during a few warm-up polls that are not counted).

History: `history.LagHistory` fed directly with one point per replicating member per poll, for a simulated day,
as the store feeds it: 300 shards of 3 members plus a 3-member config server set is 602 replicating members.
Memory is what tracemalloc sees allocated by the history (the arrays and their holders).
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import time
import tracemalloc

import bridge
from bench import procs
from bench.report import Section, Table
from replicationlag.config import load_settings
from replicationlag.history import MAX_POINTS, LagHistory
from replicationlag.service import build_service

SET_LAG_MS = 1_500  # one secondary behind, so that a poll also looks up its oldest unapplied op
WARM_UP_POLLS = 5
HISTORY_SHARDS = 300
DAY_S = 24 * 3600
DEFAULT_INTERVAL_S = 60
TIMED_POLLS = 100


def _start_set() -> tuple[subprocess.Popen, str]:
    """`python -m mongosim --members 3` in a process of its own; returns it and its URI (first line)."""
    argv = [sys.executable, "-m", "mongosim", "--members", "3", "--lag", f"1={SET_LAG_MS}"]
    sim = subprocess.Popen(argv, cwd=procs.ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    uri = procs.Lines(sim).next(timeout_s=30)
    if not uri:
        raise RuntimeError("the simulator printed no URI")
    return sim, uri


def _block(service, sim_pid: int, polls: int) -> dict:
    walls = []
    cpu0, sim0, busy0 = time.process_time(), procs.read_cpu_s(sim_pid), procs.system_busy_s()
    started = time.monotonic()
    for _ in range(polls):
        began = time.monotonic()
        service.poll()
        walls.append(time.monotonic() - began)
    seconds = time.monotonic() - started
    cpu, sim = time.process_time() - cpu0, procs.read_cpu_s(sim_pid) - sim0
    others = procs.system_busy_s() - busy0 - cpu - sim
    return {"walls": walls, "cpu_s": cpu, "sim_cpu_s": sim, "seconds": seconds, "other_cpu_s": max(0.0, others)}


def _per_poll(uri: str, sim_pid: int, polls_per_block: int, blocks: int) -> dict[bool, dict]:
    flags = ["--mongodb.uri", uri, "--web.listen-address", "127.0.0.1:0"]
    results: dict[bool, list[dict]] = {True: [], False: []}
    for _ in range(blocks):
        for mode in (True, False):
            # A fresh exporter per block: back-to-back polls would otherwise fill the history with hundreds of
            # points, which a poll a minute never has.
            service = build_service(load_settings(flags, env={}), bridge, danger_reads=mode)
            try:
                for _ in range(WARM_UP_POLLS):
                    service.poll()
                block = _block(service, sim_pid, polls_per_block)
                view = service.store.view()
                block["status"], block["members"] = view.status.name, len(view.snapshot.members)
                results[mode].append(block)
            finally:
                service.stop()
    summary = {}
    for mode, runs in results.items():
        walls = [w for r in runs for w in r["walls"]]
        n = len(walls)
        seconds = sum(r["seconds"] for r in runs)
        summary[mode] = {
            "polls": n,
            "cpu_ms": 1000 * sum(r["cpu_s"] for r in runs) / n,
            "sim_cpu_ms": 1000 * sum(r["sim_cpu_s"] for r in runs) / n,
            "wall_p50_ms": 1000 * statistics.median(walls),
            "wall_p99_ms": 1000 * sorted(walls)[min(n - 1, round(0.99 * (n - 1)))],
            "wall_mean_ms": 1000 * statistics.fmean(walls),
            "other_cores": sum(r["other_cpu_s"] for r in runs) / seconds,
            "status": runs[-1]["status"],
            "members": runs[-1]["members"],
        }
    return summary


def _history_memory(shards: int, interval_s: float, day_s: int) -> dict:
    """A simulated day of polls fed to a LagHistory: 2 replicating members per set (shards + the config set)."""
    sets = [f"shard{n:03d}" for n in range(1, shards + 1)] + ["configRepl"]
    members = {name: [f"{name}-m{i}:27018" for i in (1, 2)] for name in sets}
    polls = int(day_s / interval_s)
    gc.collect()
    tracemalloc.start()
    history = LagHistory()
    at = 1_723_763_174.512
    for poll in range(polls):
        for name in sets:
            history.record(name, at, {member: 1_000 + poll % 5_000 for member in members[name]})
        at += interval_s
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    points = history.point_count()
    # What one poll's bookkeeping costs once the day is full (old points trimmed), timed without tracemalloc.
    began = time.perf_counter()
    for poll in range(TIMED_POLLS):
        for name in sets:
            history.record(name, at, {member: 2_000 + poll for member in members[name]})
        at += interval_s
    record_s = (time.perf_counter() - began) / TIMED_POLLS
    return {
        "interval_s": interval_s,
        "polls": polls,
        "members": sum(len(m) for m in members.values()),
        "points": points,
        "bytes": current,
        "peak_bytes": peak,
        "bytes_per_point": current / points if points else None,
        "record_ms_per_poll": 1000 * record_s,
    }


def run_danger(polls_per_block: int, blocks: int) -> Section:
    section = Section(8, "Cost of the danger reads per poll, and the 24 h history's memory")
    started = time.monotonic()
    sim, uri = _start_set()
    try:
        per_poll = _per_poll(uri, sim.pid, polls_per_block, blocks)
    finally:
        procs.stop_process(sim)
    table = Table(
        f"One simulated 3-member set (one secondary {SET_LAG_MS} ms behind), polls back to back in this process: "
        f"{blocks} alternating blocks of {polls_per_block} polls per mode, a fresh exporter per block",
        [
            "poll",
            "polls",
            "CPU ms per poll (exporter)",
            "CPU ms per poll (simulated MongoDB)",
            "wall p50 ms",
            "wall p99 ms",
            "other processes' CPU (cores)",
        ],
    )
    labels = {True: "with the danger reads (as shipped)", False: "without them (danger_reads=False)"}
    for mode in (False, True):
        m = per_poll[mode]
        table.rows.append(
            [
                labels[mode],
                m["polls"],
                m["cpu_ms"],
                m["sim_cpu_ms"],
                m["wall_p50_ms"],
                m["wall_p99_ms"],
                m["other_cores"],
            ]
        )
    with_, without = per_poll[True], per_poll[False]
    table.rows.append(
        [
            "difference: what the danger reads cost",
            None,
            with_["cpu_ms"] - without["cpu_ms"],
            with_["sim_cpu_ms"] - without["sim_cpu_ms"],
            with_["wall_p50_ms"] - without["wall_p50_ms"],
            with_["wall_p99_ms"] - without["wall_p99_ms"],
            None,
        ]
    )
    section.tables.append(table)
    section.command(f"{sys.executable} -m mongosim --members 3 --lag 1={SET_LAG_MS}".replace(sys.executable, "python"))
    section.notes.append(
        "What the danger reads are, per poll of a set of 3 data-bearing members: on each member its oldest and "
        "newest oplog entry (two finds of one document) and $collStats of its oplog, aimed at it over the set's "
        "own connection, plus serverStatus on the primary: 10 small commands, beside replSetGetStatus and the "
        "oplog lookup of each lagging member (replSetGetConfig only when the configuration changed). Both modes "
        f"ended on a {with_['status']} set of {with_['members']} members."
    )
    section.data["per_poll"] = {str(k): v for k, v in per_poll.items()}

    memory = [_history_memory(HISTORY_SHARDS, DEFAULT_INTERVAL_S, DAY_S), _history_memory(HISTORY_SHARDS, 30, DAY_S)]
    mem_table = Table(
        f"history.LagHistory after a simulated day of polls at {HISTORY_SHARDS} shards (3 members each, plus a "
        f"3-member config server set: {memory[0]['members']} replicating members)",
        [
            "interval s",
            "polls",
            "points held",
            "points per member",
            "memory (tracemalloc), MiB",
            "bytes per point",
            "recording one poll of every set (history full), ms",
        ],
    )
    for m in memory:
        mem_table.rows.append(
            [
                m["interval_s"],
                m["polls"],
                m["points"],
                m["points"] // m["members"],
                m["bytes"] / 2**20,
                m["bytes_per_point"],
                m["record_ms_per_poll"],
            ]
        )
    section.tables.append(mem_table)
    section.data["history"] = memory
    members = memory[0]["members"]  # the two days above hold the same members
    bound_mib = members * MAX_POINTS * 16 / 2**20
    worst = max(memory, key=lambda m: m["bytes"])
    section.target(
        f"the 24 h history at 300 shards within its stated bound (at most {MAX_POINTS:,} points per member, 16 bytes "
        f"each: {bound_mib:.1f} MiB for {members} members)",
        worst["bytes"] <= bound_mib * 2**20 * 1.25,
        f"{worst['bytes'] / 2**20:.1f} MiB at a {worst['interval_s']:g} s interval, "
        f"{worst['bytes_per_point']:.1f} bytes per point",
    )
    section.notes.append(
        "At the default 60 s interval a day is 1 440 points per member; 2 880 (the cap) is a day at a 30 s interval "
        "or less. Bytes per point above 16 are the arrays' spare capacity (they grow by about an eighth) and the "
        "per-member holders."
    )
    section.seconds = time.monotonic() - started
    return section
