"""Soak: the exporter for a bounded time against a simulated set whose faults come and go at random, while
clients scrape every endpoint continuously. Reports the process's RSS, threads, open file descriptors and poll
durations at the start and at the end, and whether they grew.

    .venv/bin/python bench/soak.py                 # 10 minutes (the figures in bench/SOAK.md)
    .venv/bin/python bench/soak.py --seconds 30 --interval 0.5 --timeout 0.3   # CI (tests/test_soak_short.py)

Phases: a warm-up that injects every kind of fault once (so that code paths and caches loaded on first use are
not counted as growth), a settle with no fault, the START figures; then random faults until the end is near, a
settle with every fault cleared, the END figures. Figures of a phase are medians of one sample a second over its
last seconds, while the scrapers pause (an answer in flight holds a descriptor for a moment, and a poll's worker
thread lives for a few ms: a median does not count it). Limits: RSS growth
under 5 %, no more threads, no more descriptors. Exit status 0 when they hold, 1 when not; `--json` prints the
result as one JSON object on the last line.

The exporter is the real exporter.py (tests/service_util.py starts it); the set runs in this process.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from service_util import ENDPOINTS, SERVICE_PATH, Exporter, Scrape, uri_with_credentials, wait_until  # noqa: E402

from mongosim import ReplicaSet  # noqa: E402

USER, PASSWORD = "monitor", "soak-Pa55:w@rd/%"
RSS_GROWTH_LIMIT_PCT = 5.0
WINDOW_S = 5  # the last seconds of a phase whose samples make its figures
SCRAPERS = 4
# A scrape that gets no answer within this counts as an error: a hang, not slowness. The slowest answer is reported
# (slowest_answer_ms); at 1 s, other work on 2 shared cores (the simulator, the scrapers, pytest) made errors.
SCRAPE_TIMEOUT_S = 5.0
RECOVERY_S = 15.0  # after the faults are cleared, the set must be GREEN again within this


@dataclass
class Sample:
    at_s: float
    rss_kb: int
    threads: int
    fds: int
    poll_s: float | None
    polls: int
    status: str
    descriptors: list[str]


@dataclass
class Scrapes:
    """What the scraping clients saw: answers, errors (a timeout is one) and the slowest answer."""

    answers: int = 0
    errors: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultySet:
    """The simulated set and the faults the soak injects, each with the way to clear it."""

    def __init__(self, rs: ReplicaSet) -> None:
        self.rs = rs
        self.extra: str | None = None
        self.faults: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
            "secondary down": (lambda: rs.take_down(2), lambda: rs.bring_up(2)),
            "secondary hung after accept": (lambda: rs.hang(1, "after_accept"), lambda: rs.hang(1, None)),
            "secondary hung before accept": (lambda: rs.hang(2, "before_accept"), lambda: rs.hang(2, None)),
            "primary down": (self._primary_down, self._primary_back),
            "primary hung": (lambda: rs.hang(0, "after_accept"), lambda: rs.hang(0, None)),
            "no primary": (rs.no_primary, lambda: rs.elect(0)),
            "election": (lambda: rs.elect(1), lambda: rs.elect(0)),
            "lag spike": (lambda: rs.set_lag(1, random.randrange(1_000, 45_000)), lambda: rs.set_lag(1, 0)),
            "member added": (self._add, self._remove),
            "wrong password": (lambda: rs.add_user(USER, "not-the-password"), lambda: rs.add_user(USER, PASSWORD)),
            "not a replica set": (lambda: rs.set_topology("standalone"), lambda: rs.set_topology("replset")),
            "rolling restart": (lambda: rs.set_version("8.0", 1), lambda: rs.set_version("7.0", 1)),
        }

    def _primary_down(self) -> None:
        # no_primary() first: mongosim's take_down of the primary can wait forever on a held hello (see SOAK.md).
        self.rs.no_primary()
        self.rs.take_down(0)

    def _primary_back(self) -> None:
        self.rs.bring_up(0)
        self.rs.elect(0)

    def _add(self) -> None:
        self.extra = self.rs.add_member()

    def _remove(self) -> None:
        if self.extra is not None:
            self.rs.remove_member(self.extra)
            self.extra = None


def scrape_forever(exporter: Exporter, scrapes: Scrapes, stop: threading.Event, quiet: threading.Event) -> None:
    index = 0
    while not stop.is_set():
        if quiet.is_set():
            stop.wait(0.05)
            continue
        path = ENDPOINTS[index % len(ENDPOINTS)]
        index += 1
        started = time.monotonic()
        try:
            answer = exporter.get(path, "PUT" if path == SERVICE_PATH else "GET")
            error = "" if answer.status in (200, 503) else f"{path}: HTTP {answer.status}"
        except OSError as exc:  # TimeoutError included: the answer took longer than the client timeout
            error = f"{path}: {type(exc).__name__}"
        took = time.monotonic() - started
        with scrapes.lock:
            scrapes.answers += 1
            scrapes.slowest_s = max(scrapes.slowest_s, took)
            if error:
                scrapes.errors.append(error)


def sample(exporter: Exporter, started: float) -> Sample:
    stats = exporter.stats()
    descriptors = exporter.descriptors()
    scrape = Scrape.parse(exporter.get("/metrics").text)
    liveness = exporter.get("/liveness").json()
    return Sample(
        at_s=round(time.monotonic() - started, 1),
        rss_kb=stats["rss_kb"],
        threads=stats["threads"],
        fds=stats["fds"],
        poll_s=scrape.value("mongodb_replication_collection_duration_seconds", infra="clusterKeeper"),
        polls=liveness["polls"],
        status=liveness["cluster_status"],
        descriptors=descriptors,
    )


def figures(samples: list[Sample]) -> dict[str, Any]:
    window = samples[-WINDOW_S:]
    polls = [s.poll_s for s in window if s.poll_s is not None]
    return {
        "at_s": window[-1].at_s,
        "rss_kb": int(statistics.median(s.rss_kb for s in window)),
        "threads": int(statistics.median(s.threads for s in window)),
        "fds": int(statistics.median(s.fds for s in window)),
        "poll_ms_median": round(statistics.median(polls) * 1000, 1) if polls else None,
        "poll_ms_max": round(max(polls) * 1000, 1) if polls else None,
        "descriptors": window[-1].descriptors,  # what they are, to explain a difference
    }


def run(seconds: float, interval_s: float, timeout_s: float, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    rng = random.Random(seed)
    random.seed(seed)
    settle_s = max(WINDOW_S + 2 * interval_s, 6.0)
    rs = ReplicaSet(3, arbiter=True, users=[(USER, PASSWORD)]).start()
    faulty = FaultySet(rs)
    exporter = Exporter(
        "--mongodb.uri",
        uri_with_credentials(rs.uri, USER, PASSWORD),
        "--collect.interval",
        f"{interval_s:g}",
        "--collect.timeout",
        f"{timeout_s:g}",
        keep_answers=False,
        http_timeout_s=SCRAPE_TIMEOUT_S,
    )
    stop, quiet = threading.Event(), threading.Event()
    scrapes = Scrapes()
    threads = [
        threading.Thread(target=scrape_forever, args=(exporter, scrapes, stop, quiet), daemon=True)
        for _ in range(SCRAPERS)
    ]
    samples: list[Sample] = []
    injected: dict[str, int] = {}
    started = time.monotonic()
    try:
        wait_until(lambda: exporter.get("/liveness").status == 200, 15, "the first successful poll")
        for thread in threads:
            thread.start()

        def fault(name: str, hold_s: float) -> None:
            inject, clear = faulty.faults[name]
            injected[name] = injected.get(name, 0) + 1
            inject()
            pause(hold_s)
            clear()

        def pause(span_s: float) -> None:
            end = time.monotonic() + span_s
            while time.monotonic() < end:
                samples.append(sample(exporter, started))
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))

        def settle() -> None:
            wait_until(lambda: exporter.get("/liveness").json()["cluster_status"] == "GREEN", RECOVERY_S, "GREEN again")
            pause(settle_s - WINDOW_S)
            # The figures are the resting process: an answer in flight holds a descriptor for a moment.
            quiet.set()
            pause(WINDOW_S + 0.5)
            quiet.clear()

        # Warm-up: every fault once, briefly.
        warmup_each_s = max(0.5, min(3.0, seconds * 0.2 / len(faulty.faults)))
        for name in faulty.faults:
            fault(name, warmup_each_s)
        settle()
        start = figures(samples)
        log(f"start figures at {start['at_s']} s: {start}")

        # Random faults until the end is near, then every fault cleared.
        faults_until = started + seconds - settle_s - 2 * interval_s
        while time.monotonic() < faults_until:
            pause(rng.uniform(0.5, 3.0))
            left = faults_until - time.monotonic()
            if left > 0.5:
                fault(rng.choice(list(faulty.faults)), rng.uniform(0.5, min(6.0, left)))
        settle()
        end = figures(samples)
        log(f"end figures at {end['at_s']} s: {end}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        code = exporter.stop()
        rs.stop()

    rss_growth_pct = round((end["rss_kb"] - start["rss_kb"]) * 100 / start["rss_kb"], 2)
    limits = {
        "rss_growth_under_5_pct": rss_growth_pct < RSS_GROWTH_LIMIT_PCT,
        "no_thread_growth": end["threads"] <= start["threads"],
        "no_fd_growth": end["fds"] <= start["fds"],
        "no_scrape_error_or_timeout": not scrapes.errors,
        "clean_exit": code == 0,
    }
    fault_polls = [s.poll_s for s in samples if s.poll_s is not None]
    return {
        "seconds": round(time.monotonic() - started, 1),
        "interval_s": interval_s,
        "timeout_s": timeout_s,
        "seed": seed,
        "start": start,
        "end": end,
        "rss_growth_pct": rss_growth_pct,
        # One sample a minute (faults or not), to tell a plateau from a slope.
        "rss_kb_each_minute": [s.rss_kb for s in samples[:: max(1, int(60 / interval_s))]],
        "poll_ms_max_overall": round(max(fault_polls) * 1000, 1) if fault_polls else None,
        "polls": samples[-1].polls if samples else 0,
        "faults_known": list(faulty.faults),
        "faults_injected": injected,
        "scrapes": scrapes.answers,
        "scrape_errors": scrapes.errors[:20],
        "slowest_answer_ms": round(scrapes.slowest_s * 1000, 1),
        "limits": limits,
        "ok": all(limits.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long the whole run lasts (default 600)")
    parser.add_argument("--interval", type=float, default=1.0, help="--collect.interval of the exporter (default 1)")
    parser.add_argument("--timeout", type=float, default=0.5, help="--collect.timeout of the exporter (default 0.5)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the random fault schedule")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        print(f"[soak] {text}", file=sys.stderr, flush=True)

    result = run(args.seconds, args.interval, args.timeout, args.seed, log)
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(json.dumps(result, indent=2), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
