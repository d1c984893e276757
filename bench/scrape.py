"""Sections 1 and 2: scrape speed with wrk, on a healthy simulated set and while members hang.

Both tools run side by side against the same simulated set (real clock, continuous traffic). Ours polls every
5 s here (the default is 60 s) so that polls, and during faults stuck polls, happen under the load. The peer
queries MongoDB on every scrape; that is its design, so its figures include the simulator answering it, and the
simulator's CPU is reported beside them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench import load, procs
from bench.procs import ZERO_PROBLEM_PATH, Proc
from bench.report import Section, Table, ratio
from mongosim import ReplicaSet

CONNECTIONS = (1, 10, 50)
OUR_INTERVAL_S = 5
SLOW_PEER_S = 2.0  # a single peer scrape slower than this: measure it with the long run below
SLOW_RUN_S = 22  # long enough for two 10.5 s scrapes per connection
SLOW_TIMEOUT_S = 21


@dataclass(frozen=True)
class Target:
    tool: str
    endpoint: str
    method: str
    path: str


def _targets(ours: Proc, peer: Proc | None) -> list[tuple[Target, Proc]]:
    found = [
        (Target("ours", "/metrics", "GET", "/metrics"), ours),
        (Target("ours", "PUT Zero Problem", "PUT", ZERO_PROBLEM_PATH), ours),
    ]
    if peer is not None:
        found.append((Target("peer", "/metrics", "GET", "/metrics"), peer))
    return found


RETRIES = 2  # a run disturbed by other processes is measured again (after waiting for quiet) up to this often


def _measure(target: Target, proc: Proc, connections: int, duration_s: float, timeout_s: float = 2.0) -> dict:
    """One wrk run; again (at most RETRIES times) when other processes used more than QUIET_CORES meanwhile."""
    for attempt in range(RETRIES + 1):
        m = _measure_once(target, proc, connections, duration_s, timeout_s)
        m["attempts"] = attempt + 1
        if m["other_cpu_s"] / max(m["seconds"], 1e-9) < procs.QUIET_CORES or attempt == RETRIES:
            return m
        procs.wait_for_quiet(max_wait_s=60)
    return m


def _measure_once(target: Target, proc: Proc, connections: int, duration_s: float, timeout_s: float) -> dict:
    cpu0, sim0, log0 = proc.cpu_s(), time.process_time(), proc.log_lines()
    busy0, wrk0, steal0 = procs.system_busy_s(), procs.children_cpu_s(), procs.steal_s()
    result = load.wrk(proc.url(target.path), connections, duration_s, method=target.method, timeout_s=timeout_s)
    cpu = proc.cpu_s() - cpu0
    sim = time.process_time() - sim0  # this process = the simulator (and an idle main thread)
    others = procs.system_busy_s() - busy0 - cpu - sim - (procs.children_cpu_s() - wrk0)
    proc.check_alive()
    return {
        "tool": target.tool,
        "endpoint": target.endpoint,
        **result.as_dict(),
        "server_cpu_s": cpu,
        "sim_cpu_s": sim,
        "other_cpu_s": max(0.0, others),
        "steal_s": procs.steal_s() - steal0,
        "log_lines": proc.log_lines() - log0,
    }


def _row(m: dict, scenario: str | None = None) -> list:
    per_k = 1000 * m["server_cpu_s"] / m["requests"] if m["requests"] else None
    row = [m["tool"], m["endpoint"], m["connections"], m["requests"], m["rps"], m["p50_ms"], m["p99_ms"]]
    seconds = m["seconds"] or None
    row += [m["max_ms"], m["errors"] + m["timeouts"], per_k]
    row += [m["sim_cpu_s"] / seconds if seconds else None, m["other_cpu_s"] / seconds if seconds else None]
    row += [m["steal_s"] / seconds if seconds else None]
    return ([scenario] if scenario else []) + row


HEADERS = [
    "tool",
    "endpoint",
    "conns",
    "requests",
    "req/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "errors+timeouts",
    "server CPU s / 1000 req",
    "simulator CPU (cores)",
    "other processes' CPU (cores)",
    "hypervisor steal (cores)",
]


def _start(rs: ReplicaSet, tag: str, with_peer: bool) -> tuple[Proc, Proc | None]:
    ours = procs.start_ours(rs.uri, tag, interval_s=OUR_INTERVAL_S)
    peer = procs.start_peer(rs.uri, tag) if with_peer else None
    procs.wait_for_data(ours)
    if peer is not None:
        procs.wait_for_data(peer)
    return ours, peer


def _warm_up(ours: Proc, peer: Proc | None) -> None:
    for target, proc in _targets(ours, peer):
        load.wrk(proc.url(target.path), 10, 1, method=target.method, max_requests=2_000)


def run_speed(duration_s: float, with_peer: bool) -> Section:
    section = Section(1, "Scrape speed (healthy set)")
    started = time.monotonic()
    with ReplicaSet(3, arbiter=True) as rs:
        rs.set_lag(1, 1_500)
        rs.set_lag(2, 12_000)  # one YELLOW member, so the document carries a reason line
        ours, peer = _start(rs, "speed", with_peer)
        try:
            _warm_up(ours, peer)
            measured = []
            for connections in CONNECTIONS:
                for target, proc in _targets(ours, peer):
                    m = _measure(target, proc, connections, duration_s)
                    measured.append(m)
                    section.command(m["command"].replace(proc.url(target.path), f"http://127.0.0.1:PORT{target.path}"))
            section.command(ours.command())
            if peer is not None:
                section.command(peer.command())
        finally:
            ours.stop()
            if peer is not None:
                peer.stop()
    table = Table(
        f"wrk -t1, {duration_s:g} s per run, 3-member set + arbiter (simulated, real clock); "
        f"ours polls every {OUR_INTERVAL_S} s, the peer queries the set on every scrape",
        HEADERS,
    )
    table.rows = [_row(m) for m in measured]
    section.tables.append(table)
    section.data["runs"] = measured
    if peer is not None:
        _ratios(section, measured)
    else:
        section.target("throughput >= 3x the peer's at 10 connections", None, "the peer was not run (--no-peer)")
    section.notes.append(
        "Throughput and latency come from the same run on the same 2 cores, shared by wrk, the server and, for "
        "the peer only, the simulator that answers its 4 MongoDB commands per scrape (last column: simulator "
        "CPU in cores during the run). Against a real mongod the peer's per-scrape server work would differ."
    )
    logged = {t: sum(m["log_lines"] for m in measured if m["tool"] == t) for t in ("ours", "peer")}
    section.notes.append(
        f"Log lines written during these runs: ours {logged['ours']:,}, peer {logged['peer']:,} (6 glog info lines "
        "per scrape)."
    )
    section.notes.append(
        "Hypervisor steal (last column) is CPU time the host gave to other virtual machines while ours wanted it "
        "(/proc/stat): no process here shows it, and it slows every figure of that run alike."
    )
    section.notes.append(
        "wrk keeps every connection busy (a closed loop), so at 50 connections the mean latency is 50 / throughput "
        "(Little's law): p99 there reflects throughput more than responsiveness."
    )
    _retry_note(section, measured)
    section.seconds = time.monotonic() - started
    return section


def _retry_note(section: Section, measured: list[dict]) -> None:
    again = sum(m["attempts"] > 1 for m in measured)
    still = sum(m["other_cpu_s"] / max(m["seconds"], 1e-9) >= procs.QUIET_CORES for m in measured)
    section.notes.append(
        f"Runs measured again because other processes kept >= {procs.QUIET_CORES} cores busy meanwhile: {again} of "
        f"{len(measured)}; rows still disturbed after {RETRIES} retries: {still} (last column)."
    )


def _ratios(section: Section, measured: list[dict]) -> None:
    by = {(m["tool"], m["endpoint"], m["connections"]): m for m in measured}
    table = Table(
        "Ours against the peer's /metrics (throughput ratio: higher is better for us; p99 ratio: ours / peer's)",
        ["our endpoint", "conns", "req/s ours / peer", "p99 ours / peer"],
    )
    for endpoint in ("/metrics", "PUT Zero Problem"):
        for c in CONNECTIONS:
            ours, peer = by[("ours", endpoint, c)], by[("peer", "/metrics", c)]
            table.rows.append([endpoint, c, ratio(ours["rps"], peer["rps"]), ratio(ours["p99_ms"], peer["p99_ms"])])
    section.tables.append(table)
    for endpoint in ("/metrics", "PUT Zero Problem"):
        ours, peer = by[("ours", endpoint, 10)], by[("peer", "/metrics", 10)]
        r = ratio(ours["rps"], peer["rps"]) or 0.0
        section.target(
            f"{endpoint}: throughput >= 3x the peer's at 10 connections",
            r >= 3,
            f"{ours['rps']:.0f} vs {peer['rps']:.0f} req/s = {r:.2f}x",
        )
        q = ratio(ours["p99_ms"], peer["p99_ms"]) or 0.0
        section.target(
            f"{endpoint}: p99 under a third of the peer's at 10 connections",
            q < 1 / 3,
            f"{ours['p99_ms']:.1f} vs {peer['p99_ms']:.1f} ms = {q:.2f}",
        )


def _peer_answerer(exposition: str) -> str:
    """Which member answered the peer's replSetGetStatus, from its mongodb_replset_my_state sample."""
    states = {"1": "PRIMARY", "2": "SECONDARY", "7": "ARBITER"}
    for line in exposition.splitlines():
        if line.startswith("mongodb_replset_my_state{"):
            value = line.rsplit(" ", 1)[1]
            return f"answered by a member in state {states.get(value, value)}"
    return "no replSetGetStatus data in its answer"


def _hang_and_wait(rs: ReplicaSet, members: list[str], ours: Proc) -> str:
    """Hang the members, then wait until ours has finished a poll that met the hang; returns what it reports."""
    before = procs.liveness(ours).get("polls", 0)
    for name in members:
        rs.hang(name, "after_accept")
    # A poll running at the moment of the hang may still succeed: wait for the one after it.
    procs.wait_until(
        lambda: procs.liveness(ours).get("polls", 0) >= before + 2,
        timeout_s=2 * OUR_INTERVAL_S + 10,
        step_s=0.1,
        what="two polls of ours during the hang",
    )
    document = procs.request("PUT", ours.port, ZERO_PROBLEM_PATH).json()
    doc = next(iter(document.values()))
    first = doc["messages"][0]["actionBody"].splitlines()[0] if doc["messages"][0]["actionBody"] else ""
    return f"{doc['status']}: {first}"


def run_faults(duration_s: float, with_peer: bool) -> Section:
    section = Section(2, "Scrapes during faults (members hung after accept)")
    started = time.monotonic()
    measured: list[dict] = []
    reported: dict[str, str] = {}
    peer_probe: dict[str, float] = {}
    peer_answerer: dict[str, str] = {}
    with ReplicaSet(3, arbiter=True) as rs:
        rs.set_lag(1, 1_500)
        scenarios = {
            "primary hangs": [rs.primary],
            "every member hangs": [m.name for m in rs.members],
        }
        ours = procs.start_ours(rs.uri, "faults", interval_s=OUR_INTERVAL_S)
        procs.wait_for_data(ours)
        section.command(ours.command())
        try:
            for scenario, members in scenarios.items():
                peer = procs.start_peer(rs.uri, f"faults-{len(members)}") if with_peer else None
                if peer is not None:
                    procs.wait_for_data(peer)
                    section.command(peer.command())
                try:
                    reported[scenario] = _hang_and_wait(rs, members, ours)
                    for connections in CONNECTIONS:
                        for target, proc in _targets(ours, None):
                            m = _measure(target, proc, connections, duration_s)
                            measured.append({**m, "scenario": scenario})
                            section.command(
                                m["command"].replace(proc.url(target.path), f"http://127.0.0.1:PORT{target.path}")
                            )
                    if peer is not None:
                        probe = peer.get("/metrics", timeout_s=30)
                        peer_probe[scenario] = probe.seconds
                        peer_answerer[scenario] = _peer_answerer(probe.text)
                        slow = probe.seconds > SLOW_PEER_S or probe.status != 200
                        run_s, timeout_s = (SLOW_RUN_S, SLOW_TIMEOUT_S) if slow else (duration_s, 2.0)
                        for connections in CONNECTIONS:
                            target = Target("peer", "/metrics", "GET", "/metrics")
                            m = _measure(target, peer, connections, run_s, timeout_s)
                            measured.append({**m, "scenario": scenario})
                            section.command(m["command"].replace(peer.url("/metrics"), "http://127.0.0.1:PORT/metrics"))
                finally:
                    for name in members:
                        rs.hang(name, None)
                    if peer is not None:
                        peer.stop()
        finally:
            ours.stop()
    table = Table(
        f"wrk -t1 while members hang (rs.hang(member, 'after_accept')); ours {duration_s:g} s per run; the peer "
        f"{duration_s:g} s, or {SLOW_RUN_S} s with --timeout {SLOW_TIMEOUT_S}s when a single scrape took over "
        f"{SLOW_PEER_S:g} s",
        ["scenario", *HEADERS],
    )
    table.rows = [_row(m, m["scenario"]) for m in measured]
    section.tables.append(table)
    section.data["runs"] = measured
    for scenario in scenarios:
        for endpoint in ("/metrics", "PUT Zero Problem"):
            runs = [
                m for m in measured if m["scenario"] == scenario and m["tool"] == "ours" and m["endpoint"] == endpoint
            ]
            failed = sum(m["errors"] + m["timeouts"] for m in runs)
            p99s = ", ".join(f"c={m['connections']}: {m['p99_ms']:.1f} ms" for m in runs)
            section.target(
                f"{scenario}, our {endpoint}: p99 under 50 ms at 1, 10 and 50 connections",
                all(m["p99_ms"] < 50 for m in runs) and failed == 0,
                f"p99 {p99s}; {failed} errors",
            )
    for scenario in scenarios:
        line = f"{scenario}: our document said {reported[scenario]!r}"
        if scenario in peer_probe:
            line += f"; one peer scrape took {peer_probe[scenario]:.2f} s ({peer_answerer[scenario]})"
        section.notes.append(line)
    section.notes.append(
        "The simulator reports a hung member DOWN to the others at once (a real set waits 10 s) and elects nobody. "
        "The peer's driver sends replSetGetStatus to whichever member it picked (its mongodb_replset_my_state says "
        "which), so a hung primary alone need not stall it; with every member hung each scrape waits for its "
        "driver's timeout."
    )
    _retry_note(section, measured)
    section.seconds = time.monotonic() - started
    return section
