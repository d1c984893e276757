"""Sections 3 and 4: how right the reported lags are, on a simulated set whose ManualClock makes the truth exact.

Ours runs in this process, built as exporter.py builds it (client, store, collector, registry); each poll is
triggered by hand, and the figures are read from what the HTTP handlers return: `bridge.status_document` (the
Zero Problem document) and `metrics.render` (/metrics). The peer runs as a subprocess against the same set and is
scraped over HTTP at the same instant of the set's clock. Its lag is what a user computes from its metrics:

    scalar(mongodb_replset_member_optime_date and on(name) (mongodb_replset_member_state == 1))
      - mongodb_replset_member_optime_date

(the primary's optimeDate minus the member's), computed here in Python the same way.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import statistics
import time
from dataclasses import dataclass
from typing import Any

import bridge
from bench import procs
from bench.procs import Proc
from bench.report import Section, Table
from mongosim import ManualClock, ReplicaSet
from replicationlag import metrics
from replicationlag.config import load_settings
from replicationlag.service import build_service

START_MS = 1_723_763_174_512  # 2024-08-15T23:06:14.512Z, the test suite's ManualClock start
YELLOW_AT_MS, RED_AT_MS = 5_000, 30_000
COLOURS = ("GREEN", "YELLOW", "RED")
MAX_LAG_MS = 120_000
POLL_TIMEOUT_S = 5.0


def colour(lag_ms: float) -> str:
    if lag_ms >= RED_AT_MS:
        return "RED"
    if lag_ms >= YELLOW_AT_MS:
        return "YELLOW"
    return "GREEN"


class InProcessExporter:
    """Our exporter built as exporter.py builds it (`build_service`); the bench runs the polls itself and reads
    the store, so the scheduler and the HTTP server are never started."""

    def __init__(self, uri: str, interval_s: float = 60.0, wall_ms: Any = None) -> None:
        flags = [
            "--mongodb.uri",
            uri,
            "--collect.interval",
            f"{interval_s:g}",
            "--collect.timeout",
            f"{POLL_TIMEOUT_S:g}",
        ]
        settings = load_settings([*flags, "--web.listen-address", "127.0.0.1:0"], env={})
        # The simulated set's clock is the exporter's wall clock too, so its `date` agrees with the poll (§17).
        self.service = build_service(settings, bridge, **({"wall_ms": wall_ms} if wall_ms else {}))
        self.store = self.service.store
        self.registry = self.service.registry

    def poll(self) -> None:
        self.service.poll()

    def document(self) -> dict[str, Any]:
        return bridge.status_document(self.store.view())[bridge.SERVICE_ID]

    def exposition(self) -> str:
        body, _ = metrics.render(self.registry, None)
        return body.decode()

    def close(self) -> None:
        self.service.stop()


_MEMBER_LINE = re.compile(r"^- (?:Last known: )?(Primary|Secondary|Arbiter) (\S+) .*?replication lag ~?(\d+)ms")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def document_lags(document: dict[str, Any]) -> dict[str, int]:
    """Member name -> lag in ms, read from the Zero Problem document's member lines."""
    lags = {}
    for line in document["messages"][0]["actionBody"].splitlines():
        found = _MEMBER_LINE.match(line)
        if found and found.group(1) == "Secondary":
            lags[found.group(2)] = int(found.group(3))
    return lags


def samples(exposition: str, name: str, key: str) -> dict[str, float]:
    """Label `key` -> value of every sample of metric `name` in a text exposition."""
    found = {}
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == name:
            labels = dict(_LABEL.findall(match.group(2)))
            found[labels.get(key, "")] = float(match.group(3))
    return found


def our_metric_lags(exposition: str) -> dict[str, float]:
    return {k: v * 1000 for k, v in samples(exposition, "mongodb_replication_lag_seconds", "member").items()}


def our_member_colours(exposition: str) -> dict[str, str]:
    return {k: COLOURS[int(v)] for k, v in samples(exposition, "mongodb_replication_member_status", "member").items()}


def peer_lags(exposition: str) -> dict[str, float]:
    """The PromQL above, in Python: the primary's optime_date minus each other data member's, in ms."""
    optimes = samples(exposition, "mongodb_replset_member_optime_date", "name")
    states = samples(exposition, "mongodb_replset_member_state", "name")
    primaries = [name for name, state in states.items() if state == 1 and name in optimes]
    if len(primaries) != 1:
        return {}
    reference = optimes[primaries[0]]
    return {name: (reference - value) * 1000 for name, value in optimes.items() if states.get(name) == 2}


def _scrape_peer(peer: Proc) -> str:
    reply = peer.get("/metrics", timeout_s=15)
    if reply.status != 200:
        raise RuntimeError(f"the peer answered {reply.status} {reply.error}")
    return reply.text


@dataclass
class Errors:
    """Absolute errors and colour mistakes of one reader of the lag."""

    errors: list[float]
    wrong: int = 0
    missing: int = 0

    def row(self, reader: str, draw_set: str, lags: int) -> list[Any]:
        if not self.errors:
            return [reader, draw_set, lags, self.missing, None, None, None, self.wrong]
        return [
            reader,
            draw_set,
            lags,
            self.missing,
            round(max(self.errors), 3),
            round(statistics.fmean(self.errors), 3),
            sum(1 for e in self.errors if e > 1),
            self.wrong,
        ]


def run_accuracy(draws: int, boundary_draws: int, seed: int, with_peer: bool) -> Section:
    section = Section(3, "Accuracy against the simulator's exact lag")
    started = time.monotonic()
    rng = random.Random(seed)
    clock = ManualClock(START_MS)
    readers = ("ours, Zero Problem document", "ours, /metrics lag_seconds", "peer, optime_date difference")
    results: dict[str, dict[str, Errors]] = {}
    overall_wrong: dict[str, dict[str, int]] = {}
    member_status_wrong = {"uniform": 0, "near thresholds": 0}
    with ReplicaSet(4, arbiter=True, clock=clock) as rs:
        secondaries = [m.name for m in rs.members if m.role == "secondary"]
        ours = InProcessExporter(rs.uri, wall_ms=clock.now_ms)
        peer = procs.start_peer(rs.uri, "accuracy") if with_peer else None
        try:
            if peer is not None:
                procs.wait_for_data(peer)
                section.command(peer.command())
            for kind, count in (("uniform", draws), ("near thresholds", boundary_draws)):
                errs = {r: Errors([]) for r in readers}
                wrong_overall = dict.fromkeys(("ours", "peer"), 0)
                for _ in range(count):
                    clock.advance(rng.randint(1, 60_000))  # moves the sub-second phase of the set's clock too
                    truth = {name: _draw(rng, kind) for name in secondaries}
                    for name, lag in truth.items():
                        rs.set_lag(name, lag)
                    ours.poll()
                    document, exposition = ours.document(), ours.exposition()
                    seen = {
                        readers[0]: document_lags(document),
                        readers[1]: our_metric_lags(exposition),
                    }
                    if peer is not None:
                        seen[readers[2]] = peer_lags(_scrape_peer(peer))
                    for reader, lags in seen.items():
                        for name, lag in truth.items():
                            if name not in lags:
                                errs[reader].missing += 1
                                continue
                            errs[reader].errors.append(abs(lags[name] - lag))
                            errs[reader].wrong += colour(lags[name]) != colour(lag)
                    statuses = our_member_colours(exposition)
                    member_status_wrong[kind] += sum(statuses.get(n) != colour(lag) for n, lag in truth.items())
                    true_overall = max((colour(v) for v in truth.values()), key=COLOURS.index)
                    wrong_overall["ours"] += document["status"] != true_overall
                    if peer is not None:
                        peer_seen = seen[readers[2]]
                        peer_overall = max((colour(v) for v in peer_seen.values()), key=COLOURS.index, default="?")
                        wrong_overall["peer"] += peer_overall != true_overall
                results[kind] = errs
                overall_wrong[kind] = wrong_overall
        finally:
            ours.close()
            if peer is not None:
                peer.stop()
    table = Table(
        f"{len(secondaries)} secondaries, lags drawn with random.Random({seed}); 'uniform': {draws} draws of "
        f"0-{MAX_LAG_MS:,} ms; 'near thresholds': {boundary_draws} draws within ±1 000 ms of 5 000 and 30 000 ms",
        [
            "reader",
            "draw set",
            "member lags",
            "missing",
            "max |error| ms",
            "mean |error| ms",
            "errors > 1 ms",
            "wrong colour",
        ],
    )
    for kind, errs in results.items():
        for reader in readers:
            if reader in errs and (errs[reader].errors or errs[reader].missing):
                n = len(errs[reader].errors) + errs[reader].missing
                table.rows.append(errs[reader].row(reader, kind, n))
    section.tables.append(table)
    overall = Table(
        "Whole-set colour (worst member) against the truth, per draw",
        ["draws", "ours: wrong document status", "ours: wrong member_status series", "peer: wrong colour"],
    )
    for kind in results:
        overall.rows.append(
            [
                f"{kind} ({draws if kind == 'uniform' else boundary_draws})",
                overall_wrong[kind]["ours"],
                member_status_wrong[kind],
                overall_wrong[kind]["peer"] if with_peer else None,
            ]
        )
    section.tables.append(overall)
    ours_uniform = [results["uniform"][r] for r in readers[:2]]
    worst = max(max(e.errors, default=0.0) for e in ours_uniform)
    wrong = sum(e.wrong for e in ours_uniform)
    missing = sum(e.missing for e in ours_uniform)
    section.target(
        "error <= 1 ms and zero wrong colours (ours, uniform draws, document and /metrics)",
        worst <= 1 and wrong == 0 and missing == 0,
        f"max error {worst:.3f} ms, {wrong} wrong colours, {missing} missing",
    )
    edge = [results["near thresholds"][r] for r in readers[:2]]
    section.target(
        "the same near the thresholds",
        max(max(e.errors, default=0.0) for e in edge) <= 1 and sum(e.wrong for e in edge) == 0,
        f"max error {max(max(e.errors, default=0.0) for e in edge):.3f} ms, {sum(e.wrong for e in edge)} wrong colours",
    )
    section.notes.append(
        "Truth: the simulator's apply delay set with rs.set_lag (mongosim's lag model: a secondary with lag L has "
        "applied the primary's entry of millisecond now - L). Before each draw the clock advances 1-60 000 ms, so "
        "the sub-second phase differs from draw to draw. The colour of a reported lag uses our thresholds for every "
        "reader (GREEN < 5 000 ms <= YELLOW < 30 000 ms <= RED)."
    )
    section.seconds = time.monotonic() - started
    return section


def _draw(rng: random.Random, kind: str) -> int:
    if kind == "uniform":
        return rng.randint(0, MAX_LAG_MS)
    centre = rng.choice((YELLOW_AT_MS, RED_AT_MS))
    return centre + rng.randint(-1_000, 1_000)


def run_idle(minutes: int, seed: int, with_peer: bool) -> Section:
    section = Section(4, "False alarms on a quiet cluster")
    started = time.monotonic()
    rng = random.Random(seed)
    clock = ManualClock(START_MS)
    counts = {"ours": 0, "peer": 0, "naive": 0}
    worst = {"ours": 0.0, "peer": 0.0, "naive": 0.0}
    polls = writes = 0
    with ReplicaSet(3, clock=clock) as rs:
        secondaries = [m.name for m in rs.members if m.role == "secondary"]
        primary = rs.primary
        # The mongosim README's post-idle recipe: secondaries 2 s behind, an idle primary, every member caught up.
        for name in secondaries:
            rs.set_lag(name, 2_000)
        rs.idle()
        clock.advance(10_000)
        ours = InProcessExporter(rs.uri, wall_ms=clock.now_ms)
        peer = procs.start_peer(rs.uri, "idle") if with_peer else None
        try:
            if peer is not None:
                procs.wait_for_data(peer)
                section.command(peer.command())
            end = clock.now_ms() + minutes * 60_000
            next_write = clock.now_ms() + rng.randint(1_000, 60_000)
            while clock.now_ms() < end:
                tick = clock.now_ms() + 1_000
                if next_write <= tick:
                    clock.set(next_write)
                    rs.write()
                    writes += 1
                    next_write += rng.randint(1_000, 60_000)
                clock.set(tick)
                polls += 1
                ours.poll()
                document = ours.document()
                lag = max(document_lags(document).values(), default=0)
                worst["ours"] = max(worst["ours"], lag)
                counts["ours"] += document["status"] != "GREEN"
                naive = _naive_wall_lag(rs.command(primary, "replSetGetStatus"))
                worst["naive"] = max(worst["naive"], naive)
                counts["naive"] += colour(naive) != "GREEN"
                if peer is not None:
                    peer_lag = max(peer_lags(_scrape_peer(peer)).values(), default=0.0)
                    worst["peer"] = max(worst["peer"], peer_lag)
                    counts["peer"] += colour(peer_lag) != "GREEN"
        finally:
            ours.close()
            if peer is not None:
                peer.stop()
    table = Table(
        f"{minutes} simulated minutes (ManualClock), idle primary (no-op every 10 s), {writes} single writes "
        f"{'1-60 s'} apart (random.Random({seed})), 2 secondaries applying 2 000 ms behind; one poll per "
        f"simulated second = {polls} polls. True lag never exceeds 2 000 ms, so every poll is truly GREEN.",
        ["tool (what it computes)", "polls", "polls YELLOW or worse", "max reported lag ms"],
    )
    table.rows = [
        ["ours (Zero Problem document: oldest unapplied op, docs/domain.md §6)", polls, counts["ours"], worst["ours"]],
        [
            "peer (primary optime_date - member's, whole seconds)",
            polls if with_peer else None,
            counts["peer"] if with_peer else None,
            worst["peer"] if with_peer else None,
        ],
        ["naive ms (primary lastAppliedWallTime - member's)", polls, counts["naive"], worst["naive"]],
    ]
    section.tables.append(table)
    section.target("zero polls YELLOW or worse for us", counts["ours"] == 0, f"{counts['ours']} of {polls}")
    section.notes.append(
        "A poll every simulated second samples every phase of the write/no-op cycle; at the default 60 s interval "
        "a poll would land in a false-alarm window with the same probability per poll, just 60 times less often."
    )
    section.seconds = time.monotonic() - started
    section.data = {"polls": polls, "writes": writes, "counts": counts, "worst_ms": worst}
    return section


def _naive_wall_lag(status: dict[str, Any]) -> float:
    members = status.get("members", [])
    primary = next((m for m in members if m.get("state") == 1), None)
    if primary is None:
        return 0.0
    top = _ms(primary["lastAppliedWallTime"])
    return max((top - _ms(m["lastAppliedWallTime"]) for m in members if m.get("state") == 2), default=0.0)


def _ms(value: Any) -> float:
    """A BSON date as ms since the epoch: the simulator's in-process answers hold bson.DatetimeMS."""
    if isinstance(value, dt.datetime):
        return value.timestamp() * 1000
    return float(int(value))
