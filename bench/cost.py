"""Section 5: what each tool costs: memory idle and after 100 000 scrapes, CPU per poll and per 1 000 scrapes,
and the time from process start to the first data it serves. Read from /proc/PID/status and /proc/PID/stat.

One tool at a time against the same simulated set (real clock, traffic), so that neither steals the other's CPU.
"""

from __future__ import annotations

import time

from bench import load, procs
from bench.procs import Proc
from bench.report import Section, Table, ratio
from mongosim import ReplicaSet

SETTLE_S = 3.0
SCRAPE_CONNECTIONS = 10
POLL_INTERVAL_S = 0.5  # the run that measures our CPU per poll polls twice a second (CPU is read in 10 ms ticks)


def _profile(proc: Proc, scrapes: int, idle_s: float) -> dict:
    first_data_s = procs.wait_for_data(proc)
    time.sleep(SETTLE_S)
    idle = proc.memory()
    cpu0 = proc.cpu_s()
    time.sleep(idle_s)
    idle_cpu_per_s = (proc.cpu_s() - cpu0) / idle_s
    cpu1, sim0 = proc.cpu_s(), time.process_time()
    busy0, wrk0 = procs.system_busy_s(), procs.children_cpu_s()
    # Bounded by count (the script stops at `scrapes`) and by time (-d): whichever comes first.
    result = load.wrk(proc.url("/metrics"), SCRAPE_CONNECTIONS, duration_s=600, max_requests=scrapes)
    scrape_cpu = proc.cpu_s() - cpu1
    sim_cpu = time.process_time() - sim0
    others = procs.system_busy_s() - busy0 - scrape_cpu - sim_cpu - (procs.children_cpu_s() - wrk0)
    proc.check_alive()
    after = proc.memory()
    return {
        "first_data_s": first_data_s,
        "rss_idle_kb": idle["VmRSS"],
        "threads_idle": idle["Threads"],
        "idle_cpu_per_s": idle_cpu_per_s,
        "scrapes": result.requests,
        "scrape_errors": result.errors + result.timeouts,
        "scrape_seconds": result.seconds,
        "scrape_rps": result.rps,
        "scrape_cpu_s": scrape_cpu,
        "sim_cpu_s": sim_cpu,
        "other_cores": max(0.0, others) / result.seconds if result.seconds else None,
        "rss_after_kb": after["VmRSS"],
        "hwm_after_kb": after["VmHWM"],
        "threads_after": after["Threads"],
        "command": result.command,
    }


def _our_cpu_per_poll(rs: ReplicaSet, window_s: float, idle_cpu_per_s: float) -> dict:
    proc = procs.start_ours(rs.uri, "cost-polls", interval_s=POLL_INTERVAL_S)
    try:
        procs.wait_for_data(proc)
        time.sleep(SETTLE_S)
        polls0, cpu0 = procs.liveness(proc)["polls"], proc.cpu_s()
        time.sleep(window_s)
        polls1, cpu1 = procs.liveness(proc)["polls"], proc.cpu_s()
        proc.check_alive()
    finally:
        proc.stop()
    polls = polls1 - polls0
    cpu = cpu1 - cpu0
    return {
        "polls": polls,
        "cpu_s": cpu,
        "window_s": window_s,
        "per_poll_raw_s": cpu / polls if polls else None,
        "per_poll_s": (cpu - idle_cpu_per_s * window_s) / polls if polls else None,
        "command": proc.command(),
    }


def run_cost(scrapes: int, idle_s: float, with_peer: bool) -> Section:
    section = Section(5, "Cost")
    started = time.monotonic()
    profiles: dict[str, dict] = {}
    with ReplicaSet(3, arbiter=True) as rs:
        rs.set_lag(1, 1_500)
        tools = [("ours", lambda: procs.start_ours(rs.uri, "cost"))]
        if with_peer:
            tools.append(("peer", lambda: procs.start_peer(rs.uri, "cost")))
        for tool, start in tools:
            proc = start()
            try:
                profiles[tool] = _profile(proc, scrapes, idle_s)
                section.command(proc.command())
                section.command(
                    profiles[tool]["command"].replace(proc.url("/metrics"), "http://127.0.0.1:PORT/metrics")
                )
            finally:
                proc.stop()
        per_poll = _our_cpu_per_poll(rs, 2 * idle_s, profiles["ours"]["idle_cpu_per_s"])
        section.command(per_poll["command"])
    table = Table(
        f"One tool at a time; /metrics scraped with wrk -t1 -c{SCRAPE_CONNECTIONS} until {scrapes:,} responses; "
        f"ours at its default 60 s interval; idle = {SETTLE_S:g} s after the first data, CPU over {idle_s:g} s idle",
        ["figure", "ours", "peer", "peer / ours"],
    )
    ours, peer = profiles["ours"], profiles.get("peer")

    def row(label: str, key: str, scale: float | None = None) -> list:
        a = ours[key] if scale is None else ours[key] * scale
        b = None if peer is None else peer[key] if scale is None else peer[key] * scale
        return [label, a, b, ratio(b, a)]

    table.rows.append(row("process start to first data, s", "first_data_s"))
    table.rows.append(row("RSS idle, MiB", "rss_idle_kb", 1 / 1024))
    table.rows.append(row(f"RSS after {scrapes:,} scrapes, MiB", "rss_after_kb", 1 / 1024))
    table.rows.append(row("peak RSS (VmHWM) after the scrapes, MiB", "hwm_after_kb", 1 / 1024))
    table.rows.append(row("threads idle", "threads_idle"))
    table.rows.append(row("CPU while idle, ms per s", "idle_cpu_per_s", 1000))
    for profile in profiles.values():
        profile["cpu_per_1000"] = 1000 * profile["scrape_cpu_s"] / profile["scrapes"] if profile["scrapes"] else None
        profile["sim_cpu_per_1000"] = 1000 * profile["sim_cpu_s"] / profile["scrapes"] if profile["scrapes"] else None
    table.rows.append(row("CPU s per 1 000 scrapes (process only)", "cpu_per_1000"))
    table.rows.append(row("simulator CPU s per 1 000 scrapes", "sim_cpu_per_1000"))
    table.rows.append(row("scrapes completed", "scrapes"))
    table.rows.append(row("scrape throughput during the run, req/s", "scrape_rps"))
    table.rows.append(row("other processes' CPU during the run, cores", "other_cores"))
    poll_ms = per_poll["per_poll_s"] * 1000 if per_poll["per_poll_s"] is not None else None
    peer_poll_ms = peer["cpu_per_1000"] if peer else None  # ms per poll = s per 1 000 polls
    meaningful = poll_ms is not None and poll_ms > 0.1
    table.rows.append(["CPU per poll, ms", poll_ms, peer_poll_ms, ratio(peer_poll_ms, poll_ms) if meaningful else None])
    section.tables.append(table)
    section.data = {"profiles": profiles, "per_poll": per_poll}
    errors = {t: p["scrape_errors"] for t, p in profiles.items()}
    section.notes.append(
        f"Our CPU per poll: an exporter polling every {POLL_INTERVAL_S} s made {per_poll['polls']} polls in "
        f"{per_poll['window_s']:g} s using {per_poll['cpu_s']:.3f} CPU s; minus its idle rate "
        f"({ours['idle_cpu_per_s'] * 1000:.1f} ms/s, measured at the 60 s interval) that is "
        f"{poll_ms if poll_ms is not None else float('nan'):.2f} ms per poll "
        f"({per_poll['per_poll_raw_s'] * 1000:.2f} ms without subtracting). A poll is replSetGetStatus, one "
        "oplog lookup per lagging member and the danger reads (section 8: three small reads per data-bearing member "
        "and serverStatus on the primary). The peer polls on every scrape (ServerStatus, replSetGetStatus, oplog "
        "collStats), so its CPU per poll is its CPU per scrape."
    )
    section.notes.append(
        f"Scrape errors: {errors}. 'Process start to first data' runs from spawning the process to the first "
        "/metrics answer carrying replica-set data (ours: mongodb_replication_up 1; the peer: member optime "
        "series), probed every 10 ms; ours includes starting the Python interpreter and importing pymongo."
    )
    section.seconds = time.monotonic() - started
    return section
