"""Section 6: detection latency, from the moment a secondary's lag passes 30 s to the moment our Zero Problem
document shows it RED, at the default 60 s interval and at 5 s. Real clock, our exporter as a subprocess.

Each window starts at an observed publication (a poll's result appearing in the document). Within it, each of
K secondaries is pushed from 0 to 30 000 ms of lag (`rs.set_lag`) at its own phase, spread over the window
(stratified, random within each stratum), and the document is read every 20 ms until every one of them shows a
lag >= 30 000 ms. The latency of a member is the first such reading minus the moment its lag was set. All K
are caught by the same next poll, so one 60 s window yields K samples; the phases cover the window, whose
uniform average is the expected latency for a lag that passes 30 s at a random moment.
"""

from __future__ import annotations

import random
import statistics
import time

from bench import procs
from bench.accuracy import RED_AT_MS, document_lags
from bench.procs import ZERO_PROBLEM_PATH, Proc
from bench.report import Section, Table
from mongosim import MemberSpec, ReplicaSet

SECONDARIES = 4
READ_EVERY_S = 0.02
SAFETY_S = {60: 4.0, 5: 0.4}  # no phase in the last part of a window, so no push races the next poll


def _document(proc: Proc) -> tuple[str, dict[str, int]]:
    reply = procs.request("PUT", proc.port, ZERO_PROBLEM_PATH, timeout_s=2.0)
    if reply.status != 200:
        return "", {}
    doc = next(iter(reply.json().values()))
    return doc["status"], document_lags(doc)


def _wait_for_publication(proc: Proc, timeout_s: float) -> float:
    """The monotonic moment at which a new poll result was first seen on /liveness."""
    before = procs.liveness(proc).get("polls", 0)
    return procs.wait_until(
        lambda: time.monotonic() if procs.liveness(proc).get("polls", 0) > before else None,
        timeout_s,
        READ_EVERY_S,
        "the next poll",
    )


def _window(
    rs: ReplicaSet, proc: Proc, members: list[str], *, interval: int, rng: random.Random, opened: float
) -> list:
    usable = interval - SAFETY_S[interval]
    width = usable / len(members)
    phases = sorted((k + rng.random()) * width for k in range(len(members)))
    pushed: dict[str, tuple[float, float]] = {}
    for name, phase in zip(members, phases, strict=True):
        delay = opened + phase - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        before = time.monotonic()
        rs.set_lag(name, RED_AT_MS)
        after = time.monotonic()
        pushed[name] = ((before + after) / 2, after - opened)
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 2 * interval + 10
    while len(seen) < len(members) and time.monotonic() < deadline:
        status, lags = _document(proc)
        now = time.monotonic()
        for name in members:
            if name not in seen and status == "RED" and lags.get(name, 0) >= RED_AT_MS:
                seen[name] = now
        time.sleep(READ_EVERY_S)
    return [
        {
            "member": name,
            "phase_s": pushed[name][1],
            "latency_s": seen[name] - pushed[name][0] if name in seen else None,
        }
        for name in members
    ]


def _run_interval(rs: ReplicaSet, members: list[str], interval: int, windows: int, rng: random.Random) -> dict:
    for name in members:
        rs.set_lag(name, 0)
    proc = procs.start_ours(rs.uri, f"detect-{interval}", interval_s=None if interval == 60 else interval)
    samples = []
    try:
        # The first window opens with the first poll (at start), which saw every member at lag 0.
        opened = proc.started_mono + procs.wait_for_data(proc, step_s=READ_EVERY_S)
        for window in range(windows):
            if window:
                for name in members:
                    rs.set_lag(name, 0)
                # The next window opens when a poll that saw every member back at lag 0 is published.
                opened = _wait_for_publication(proc, 2 * interval + 10)
                if any(_document(proc)[1].get(n, 0) for n in members):
                    opened = _wait_for_publication(proc, 2 * interval + 10)
            samples += _window(rs, proc, members, interval=interval, rng=rng, opened=opened)
        proc.check_alive()
    finally:
        proc.stop()
    return {"samples": samples, "command": proc.command()}


def run_detection(windows_5s: int, seed: int, include_60s: bool = True) -> Section:
    section = Section(6, "Detection latency (lag passes 30 s -> our document RED)")
    started = time.monotonic()
    rng = random.Random(seed)
    specs = [MemberSpec(role="primary")] + [MemberSpec() for _ in range(SECONDARIES)] + [MemberSpec(role="arbiter")]
    results: dict[int, dict] = {}
    with ReplicaSet(specs) as rs:
        members = [m.name for m in rs.members if m.role == "secondary"]
        plan = ([(60, 1)] if include_60s else []) + [(5, windows_5s)]
        for interval, windows in plan:
            results[interval] = _run_interval(rs, members, interval, windows, rng)
            section.command(results[interval]["command"])
    table = Table(
        f"{SECONDARIES} secondaries pushed 0 -> 30 000 ms at phases spread over each poll window "
        f"(real clock); the document read every {READ_EVERY_S * 1000:.0f} ms",
        ["interval", "samples", "missed", "min s", "mean s", "max s", "offset s", "expected mean s", "expected max s"],
    )
    for interval, result in results.items():
        got = [s for s in result["samples"] if s["latency_s"] is not None]
        latencies = [s["latency_s"] for s in got]
        # latency + phase = the time from the window's opening publication to the next one, plus the reading delay.
        offset = statistics.fmean(s["latency_s"] + s["phase_s"] for s in got) - interval if got else None
        table.rows.append(
            [
                f"{interval} s" + (" (default)" if interval == 60 else ""),
                len(got),
                len(result["samples"]) - len(got),
                min(latencies, default=None),
                statistics.fmean(latencies) if latencies else None,
                max(latencies, default=None),
                offset,
                interval / 2 + offset if offset is not None else None,
                interval + offset if offset is not None else None,
            ]
        )
    section.tables.append(table)
    detail = Table("Every sample", ["interval", "phase after the previous publication, s", "latency s"])
    for interval, result in results.items():
        detail.rows += [[f"{interval} s", s["phase_s"], s["latency_s"]] for s in result["samples"]]
    section.tables.append(detail)
    section.notes.append(
        "How the expected figures are computed: a lag that passes 30 s at a uniformly random moment waits for the "
        "next poll, uniform over one interval, plus the offset (poll duration, scheduling and reading delay, "
        "measured as mean(latency + phase) - interval). Expected mean = interval/2 + offset; worst = interval + "
        "offset. The measured samples cover the window by strata, so their mean is close to the expected mean."
    )
    section.data = results
    section.seconds = time.monotonic() - started
    return section
