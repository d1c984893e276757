"""Section 7: scale. Sharded clusters of 10, 100 and 300 shards (3 members each, a 3-member config server set,
one mongos) on the simulator, our exporter at its default interval, and the peer's cost for the same clusters.

The simulated cluster runs in a process of its own (`python -m mongosim --shards N`), so its CPU (the MongoDB
side's cost) is read apart from ours; our exporter is `exporter.py` as a user runs it, given the router's URI.
For each size:

1. start to first full picture: from spawning the exporter to the first /metrics answer in which every
   secondary of every set has a lag series (2 per set) and every set is up, probed every 0.2 s;
2. between polls: CPU over IDLE_S seconds in which nobody asks anything, resident memory and threads;
3. answers: the exposition, the Zero Problem document and the status page, each asked SCRAPES times in a row
   (a new connection each, like a scraper): size, wall time, CPU per answer;
4. one steady poll cycle (the second poll, a minute after the first): its wall time (the exporter's own
   `collection_duration_seconds`), and the CPU it took, ours and the simulator's: CPU over a window around the
   poll minus the between-polls rate over that window;
5. SIGTERM to exit.

The peer needs one process per member (it reads one mongod; it cannot reach a shard's members through mongos).
For each size a handful of peer processes (PEER_PROCESSES: every member of two shards, `connect=direct`) run
against the same cluster: their memory, threads and CPU between scrapes, and each scraped PEER_SCRAPES times.
The figures for the whole cluster multiply those per-process means by the number of members: an extrapolation,
and the tables say so.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from bench import procs
from bench.procs import ZERO_PROBLEM_PATH, Proc
from bench.report import Section, Table

SIZES = (10, 100, 300)
QUICK_SIZES = (10, 30)
MEMBERS = 3  # per shard, and in the config server set
CONFIG_SET = "configRepl"  # the simulator's name for the config server set
SETTLE_S = 3.0
IDLE_S = 20.0
SCRAPES = 20
PAGE_ASKS = 5
PROBE_EVERY_S = 0.2
FULL_PICTURE_TIMEOUT_S = 120.0
BEFORE_POLL_S = 5.0  # the CPU window of the steady poll opens this long before it is due
PEER_PROCESSES = 6
PEER_IDLE_S = 10.0
PEER_SCRAPES = 10
STOP_TIMEOUT_S = 30.0
RETRIES = 1  # a size disturbed by other processes (>= QUIET_CORES while idle or polling) is measured again once

_LAG = re.compile(rb"^mongodb_replication_lag_seconds\{", re.MULTILINE)
_SET_UP = re.compile(rb"^mongodb_replication_set_up\{[^}]*\} 1\.0$", re.MULTILINE)
_DURATION = re.compile(rb"^mongodb_replication_collection_duration_seconds\{[^}]*\} (\S+)$", re.MULTILINE)
_PEER_DATA = re.compile(rb"^mongodb_replset_member_optime_date\{", re.MULTILINE)
_SET_LINE = re.compile(r"^# (?:config servers|shard \S+) \(set (\S+)\): (.*)$")


@dataclass
class Cluster:
    """The simulated cluster's process, its router URI and every set's members (host:port, state)."""

    popen: subprocess.Popen
    uri: str
    start_s: float
    sets: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_s(self) -> float:
        return procs.read_cpu_s(self.pid)

    def stop(self) -> None:
        procs.stop_process(self.popen, STOP_TIMEOUT_S)


def start_cluster(shards: int) -> Cluster:
    argv = [sys.executable, "-m", "mongosim", "--shards", str(shards), "--members", str(MEMBERS)]
    started = time.monotonic()
    popen = subprocess.Popen(argv, cwd=procs.ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    lines = procs.Lines(popen)
    try:
        uri = lines.next(timeout_s=300)
        start_s = time.monotonic() - started
        cluster = Cluster(popen, uri or "", start_s)
        while len(cluster.sets) < shards + 1:  # the config servers and every shard, after the router lines
            line = lines.next(timeout_s=30)
            if line is None:
                raise RuntimeError("the simulator stopped printing before naming every set")
            found = _SET_LINE.match(line)
            if found:
                members = [tuple(m.strip().split(" ")[:2]) for m in found.group(2).split(",")]
                cluster.sets[found.group(1)] = members
    except BaseException:
        popen.kill()
        popen.wait(procs.STOP_WAIT_S)
        raise
    return cluster


def _full_picture(body: bytes, shards: int) -> bool:
    sets = shards + 1
    return len(_LAG.findall(body)) >= (MEMBERS - 1) * sets and len(_SET_UP.findall(body)) >= sets


def _duration_s(body: bytes) -> float | None:
    found = _DURATION.search(body)
    return float(found.group(1)) if found else None


def _asks(proc: Proc, method: str, path: str, count: int) -> dict:
    """`count` requests in a row, each on a new connection: size, wall times, CPU per answer (idle rate not
    subtracted here)."""
    walls, size, failed = [], 0, 0
    cpu0, started = proc.cpu_s(), time.monotonic()
    for _ in range(count):
        reply = procs.request(method, proc.port, path, timeout_s=30)
        walls.append(reply.seconds)
        size = max(size, len(reply.body))
        failed += reply.status != 200
    return {
        "bytes": size,
        "p50_ms": 1000 * statistics.median(walls),
        "max_ms": 1000 * max(walls),
        "cpu_s": proc.cpu_s() - cpu0,
        "seconds": time.monotonic() - started,
        "count": count,
        "failed": failed,
    }


def _ours(cluster: Cluster, shards: int, interval_s: float | None) -> dict:
    proc = procs.start_ours(cluster.uri, f"scale-{shards}", interval_s=interval_s)
    interval = interval_s or 60.0
    m: dict = {"command": proc.command()}
    try:

        def full() -> float | None:
            proc.check_alive()
            reply = proc.get("/metrics", timeout_s=10)
            if reply.status == 200 and _full_picture(reply.body, shards):
                m["first_poll_s"] = _duration_s(reply.body)
                return time.monotonic()
            return None

        m["first_full_s"] = procs.wait_until(full, FULL_PICTURE_TIMEOUT_S, PROBE_EVERY_S, "a full picture") - (
            proc.started_mono
        )

        time.sleep(SETTLE_S)
        cpu0, sim0, busy0, t0 = proc.cpu_s(), cluster.cpu_s(), procs.system_busy_s(), time.monotonic()
        time.sleep(IDLE_S)
        cpu1, sim1, busy1, t1 = proc.cpu_s(), cluster.cpu_s(), procs.system_busy_s(), time.monotonic()
        m["idle_cores"] = (cpu1 - cpu0) / (t1 - t0)
        m["sim_idle_cores"] = (sim1 - sim0) / (t1 - t0)
        m["idle_other_cores"] = max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - (sim1 - sim0)) / (t1 - t0)
        memory = proc.memory()
        m["rss_kb"], m["threads"] = memory["VmRSS"], memory["Threads"]

        for name, method, path, count in (
            ("metrics", "GET", "/metrics", SCRAPES),
            ("document", "PUT", ZERO_PROBLEM_PATH, SCRAPES),
            ("page", "GET", "/", PAGE_ASKS),
        ):
            asked = _asks(proc, method, path, count)
            asked["cpu_ms"] = 1000 * (asked["cpu_s"] - m["idle_cores"] * asked["seconds"]) / count
            m[name] = asked

        # The steady poll: the second, due one interval after the scheduler was made (just before the first poll
        # began); later ones are due one interval after the previous one ended.
        polls, due = _next_poll(proc, interval, m.get("first_poll_s") or 0.0)
        if due - time.monotonic() < BEFORE_POLL_S + 0.5:  # too close to open the window before it: the one after
            _wait_for_poll(proc, polls, interval)
            polls, due = _next_poll(proc, interval, 0.0)
        time.sleep(max(0.0, due - BEFORE_POLL_S - time.monotonic()))
        cpu0, sim0, busy0, t0 = proc.cpu_s(), cluster.cpu_s(), procs.system_busy_s(), time.monotonic()
        _wait_for_poll(proc, polls, interval)
        cpu1, sim1, busy1, t1 = proc.cpu_s(), cluster.cpu_s(), procs.system_busy_s(), time.monotonic()
        window = t1 - t0
        m["poll_cpu_s"] = (cpu1 - cpu0) - m["idle_cores"] * window
        m["sim_poll_cpu_s"] = (sim1 - sim0) - m["sim_idle_cores"] * window
        m["poll_other_cores"] = max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - (sim1 - sim0)) / window
        after = proc.get("/metrics", timeout_s=30).body
        m["poll_s"] = _duration_s(after)
        m["sets_up_after_poll"] = len(_SET_UP.findall(after))
        memory = proc.memory()
        m["rss_after_poll_kb"], m["hwm_kb"] = memory["VmRSS"], memory["VmHWM"]
        m["log_warnings"] = _warnings(proc)
    finally:
        m["stop_s"] = procs.stop_process(proc.popen, STOP_TIMEOUT_S)  # SIGTERM to exit; None if killed
    return m


def _next_poll(proc: Proc, interval_s: float, first_poll_s: float) -> tuple[int, float]:
    """(polls so far, the monotonic moment the next poll is due). The `schedule` job is created with the service,
    so the first scheduled poll is due one interval after the first poll began (`first_poll_s` before it was
    published); each later one is due one interval after the previous one ended."""
    alive = procs.liveness(proc)
    polls = alive.get("polls", 0)
    published = time.monotonic() - alive.get("last_success_age_s", 0.0)
    return polls, published + interval_s - (first_poll_s if polls == 1 else 0.0)


def _wait_for_poll(proc: Proc, polls: int, interval_s: float) -> None:
    procs.wait_until(
        lambda: procs.liveness(proc).get("polls", 0) > polls,
        timeout_s=interval_s + 60,
        step_s=0.25,
        what="the next poll",
    )


def _warnings(proc: Proc) -> int:
    try:
        text = proc.log_path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if "level=warn" in line or "level=error" in line)


def _peer(cluster: Cluster, shards: int) -> dict:
    """A handful of peer processes, one per member of the first two shards."""
    shards_first = sorted(cluster.sets, key=lambda name: (name == CONFIG_SET, name))
    members = [host for name in shards_first for host, _ in cluster.sets[name]][:PEER_PROCESSES]
    peers = [
        procs.start_peer(f"mongodb://{host}/?connect=direct", f"scale-{shards}-{i}") for i, host in enumerate(members)
    ]
    try:
        first = [procs.wait_for_data(p) for p in peers]
        time.sleep(SETTLE_S)
        cpu0 = sum(p.cpu_s() for p in peers)
        sim0, t0 = cluster.cpu_s(), time.monotonic()
        time.sleep(PEER_IDLE_S)
        t1 = time.monotonic()
        idle = (sum(p.cpu_s() for p in peers) - cpu0) / (t1 - t0)
        sim_idle = (cluster.cpu_s() - sim0) / (t1 - t0)
        memory = [p.memory() for p in peers]
        walls, sizes, failed = [], [], 0
        cpu0, sim0, t0 = sum(p.cpu_s() for p in peers), cluster.cpu_s(), time.monotonic()
        for _ in range(PEER_SCRAPES):
            for p in peers:
                reply = p.get("/metrics", timeout_s=30)
                walls.append(reply.seconds)
                sizes.append(len(reply.body))
                failed += reply.status != 200 or not _PEER_DATA.search(reply.body)
        seconds = time.monotonic() - t0
        scrapes = len(walls)
        cpu = sum(p.cpu_s() for p in peers) - cpu0 - idle * seconds
        sim = cluster.cpu_s() - sim0 - sim_idle * seconds
        for p in peers:
            p.check_alive()
    finally:
        for p in peers:
            p.stop()
    n = len(peers)
    return {
        "processes": n,
        "members": members,
        "command": peers[0].command(),
        "first_data_s": statistics.median(first),
        "rss_kb": statistics.fmean(mem["VmRSS"] for mem in memory),
        "threads": statistics.fmean(mem["Threads"] for mem in memory),
        "idle_cores": idle / n,
        "scrape_cpu_ms": 1000 * cpu / scrapes,
        "sim_scrape_cpu_ms": 1000 * sim / scrapes,
        "scrape_p50_ms": 1000 * statistics.median(walls),
        "scrape_max_ms": 1000 * max(walls),
        "bytes": statistics.fmean(sizes),
        "failed": failed,
    }


def _one_size(shards: int, interval_s: float | None, with_peer: bool) -> dict:
    cluster = start_cluster(shards)
    try:
        result = {"shards": shards, "sets": len(cluster.sets), "sim_start_s": cluster.start_s}
        result["members"] = sum(len(m) for m in cluster.sets.values())
        result["ours"] = _ours(cluster, shards, interval_s)
        if with_peer:
            result["peer"] = _peer(cluster, shards)
    finally:
        cluster.stop()
    return result


def _disturbed(result: dict) -> bool:
    ours = result["ours"]
    return max(ours.get("idle_other_cores", 0.0), ours.get("poll_other_cores", 0.0)) >= procs.QUIET_CORES


def run_scale(sizes: tuple[int, ...], interval_s: float | None, with_peer: bool) -> Section:
    section = Section(7, f"Scale: sharded clusters of {', '.join(map(str, sizes))} shards")
    started = time.monotonic()
    results = []
    for shards in sizes:
        for attempt in range(RETRIES + 1):
            procs.wait_for_quiet(max_wait_s=60)
            result = _one_size(shards, interval_s, with_peer)
            result["attempts"] = attempt + 1
            if not _disturbed(result):
                break
        results.append(result)
        section.command(result["ours"]["command"])
        if with_peer:
            section.command(result["peer"]["command"])
    section.command(f"python -m mongosim --shards N --members {MEMBERS}    # N = {', '.join(map(str, sizes))}")
    interval_text = f"{interval_s:g} s (not the default)" if interval_s else "the default 60 s"
    ours = Table(
        f"Our exporter on one simulated cluster per size (N shards of {MEMBERS} members, a {MEMBERS}-member config "
        f"server set, one mongos), polling at {interval_text}",
        ["figure", *(f"{r['shards']} shards" for r in results)],
    )

    def row(label: str, get) -> None:
        ours.rows.append([label, *(get(r) for r in results)])

    row("replica sets polled (shards + config servers)", lambda r: r["sets"])
    row("members", lambda r: r["members"])
    row("simulator start (its own process), s", lambda r: r["sim_start_s"])
    row("start to first full picture (every secondary measured), s", lambda r: r["ours"]["first_full_s"])
    row("first poll cycle wall time (connections made), s", lambda r: r["ours"].get("first_poll_s"))
    row("poll cycle wall time (the second poll), s", lambda r: r["ours"].get("poll_s"))
    row("sets collected in that poll", lambda r: r["ours"].get("sets_up_after_poll"))
    row("CPU per poll cycle, exporter, s", lambda r: r["ours"].get("poll_cpu_s"))
    row("CPU per poll cycle, simulated MongoDB, s", lambda r: r["ours"].get("sim_poll_cpu_s"))
    row("CPU between polls, cores", lambda r: r["ours"].get("idle_cores"))
    row("resident memory between polls, MiB", lambda r: _mib(r["ours"].get("rss_kb")))
    row("resident memory after the poll / peak (VmHWM), MiB", lambda r: _pair_mib(r["ours"]))
    row("threads", lambda r: r["ours"].get("threads"))
    row("exposition size, KiB", lambda r: r["ours"]["metrics"]["bytes"] / 1024)
    row(f"scrape time, median / max of {SCRAPES}, ms", lambda r: _pair(r["ours"]["metrics"]))
    row("CPU per scrape, ms", lambda r: r["ours"]["metrics"]["cpu_ms"])
    row("Zero Problem document size, KiB", lambda r: r["ours"]["document"]["bytes"] / 1024)
    row(f"Zero Problem PUT time, median / max of {SCRAPES}, ms", lambda r: _pair(r["ours"]["document"]))
    row("status page size, KiB", lambda r: r["ours"]["page"]["bytes"] / 1024)
    row(f"status page time, median / max of {PAGE_ASKS}, ms", lambda r: _pair(r["ours"]["page"]))
    row("SIGTERM to exit, s", lambda r: r["ours"].get("stop_s"))
    row("warning or error log lines", lambda r: r["ours"].get("log_warnings"))
    row(
        "other processes' CPU while idle / while polling, cores",
        lambda r: f"{r['ours'].get('idle_other_cores', 0):.2f} / {r['ours'].get('poll_other_cores', 0):.2f}",
    )
    row("measured (1 = first attempt)", lambda r: r["attempts"])
    section.tables.append(ours)
    if with_peer:
        _peer_tables(section, results)
    section.data["results"] = results
    hundred = next((r for r in results if r["shards"] == 100), None)
    if hundred is not None:
        o = hundred["ours"]
        section.target(
            "issue 12, 100 shards: every secondary measured within 10 s of start",
            o["first_full_s"] < 10,
            f"{o['first_full_s']:.1f} s",
        )
        section.target(
            "issue 12, 100 shards: under 0.05 of a core between polls",
            o["idle_cores"] < 0.05,
            f"{o['idle_cores']:.3f} cores",
        )
        peak = o.get("hwm_kb", o["rss_kb"])
        section.target(
            "issue 12, 100 shards: resident memory under 200 MiB",
            peak < 200 * 1024,
            f"{o['rss_kb'] / 1024:.0f} MiB between polls, peak {peak / 1024:.0f} MiB",
        )
    section.notes.append(
        "The simulator answers every member of the cluster from one Python process on the same 2 cores, so wall "
        "times (first picture, poll cycle) include waiting for it; its CPU is reported apart. 'CPU per poll "
        "cycle' is the process's CPU over a window around the second poll minus its between-polls rate over the "
        "same window; the /liveness probes that watched for the poll (4 a second) are included."
    )
    section.notes.append(
        "Scrape, document and page times are one request at a time from this process on a new connection (as a "
        "scraper asks), body read to the end; CPU per answer is the exporter's CPU over the requests minus its "
        "between-polls rate."
    )
    section.seconds = time.monotonic() - started
    return section


def _peer_tables(section: Section, results: list[dict]) -> None:
    measured = Table(
        f"The peer, measured: {PEER_PROCESSES} processes (one per member of two shards, -mongodb.uri "
        f"'mongodb://HOST:PORT/?connect=direct'), each scraped {PEER_SCRAPES} times in a row",
        [
            "cluster",
            "start to first data, s",
            "RSS per process, MiB",
            "threads per process",
            "CPU between scrapes per process, cores",
            "CPU per scrape, ms",
            "simulated MongoDB CPU per scrape, ms",
            "exposition size, KiB",
            "scrape time median / max, ms",
            "failed scrapes",
        ],
    )
    for r in results:
        p = r["peer"]
        measured.rows.append(
            [
                f"{r['shards']} shards",
                p["first_data_s"],
                p["rss_kb"] / 1024,
                p["threads"],
                p["idle_cores"],
                p["scrape_cpu_ms"],
                p["sim_scrape_cpu_ms"],
                p["bytes"] / 1024,
                f"{p['scrape_p50_ms']:.1f} / {p['scrape_max_ms']:.1f}",
                p["failed"],
            ]
        )
    section.tables.append(measured)
    side = Table(
        "Ours against the peer for the whole cluster (peer: the per-process means above times one process per "
        "member: EXTRAPOLATED, not measured with that many processes; a poll cycle of the peer is one scrape of "
        "each of its processes)",
        [
            "cluster",
            "tool",
            "processes",
            "resident memory, MiB",
            "threads",
            "CPU between polls, cores",
            "CPU per poll cycle, s",
            "simulated MongoDB CPU per poll cycle, s",
            "exposition per cycle, KiB",
        ],
    )
    for r in results:
        o, p, n = r["ours"], r["peer"], r["members"]
        side.rows.append(
            [
                f"{r['shards']} shards",
                "ours (measured)",
                1,
                _mib(o.get("hwm_kb")),
                o.get("threads"),
                o.get("idle_cores"),
                o.get("poll_cpu_s"),
                o.get("sim_poll_cpu_s"),
                o["metrics"]["bytes"] / 1024,
            ]
        )
        side.rows.append(
            [
                f"{r['shards']} shards",
                "peer (extrapolated)",
                n,
                n * p["rss_kb"] / 1024,
                round(n * p["threads"]),
                n * p["idle_cores"],
                n * p["scrape_cpu_ms"] / 1000,
                n * p["sim_scrape_cpu_ms"] / 1000,
                n * p["bytes"] / 1024,
            ]
        )
    section.tables.append(side)
    section.notes.append(
        "Why one peer process per member: it reads one mongod (serverStatus, replSetGetStatus and the oplog of the "
        "member it is connected to) and nothing through mongos, and it is deployed beside each mongod. One process "
        "per replica set would see every member's optime (replSetGetStatus lists them) but not the other members' "
        "oplogs; that would be a third of the processes above. Its lag is whole seconds, computed in PromQL."
    )


def _mib(kb: float | None) -> float | None:
    return None if kb is None else kb / 1024


def _pair(asked: dict) -> str:
    return f"{asked['p50_ms']:.1f} / {asked['max_ms']:.1f}"


def _pair_mib(o: dict) -> str:
    if "rss_after_poll_kb" not in o:
        return "-"
    return f"{o['rss_after_poll_kb'] / 1024:.0f} / {o['hwm_kb'] / 1024:.0f}"
