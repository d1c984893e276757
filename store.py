"""The in-memory store of the latest collection, and the read-only view every endpoint answers from.

The scheduled job publishes one `Snapshot` or one `Failure` per poll (a reference swap under a lock); readers
take a `View`, an immutable value with the data age computed from an injected monotonic clock. Nothing here
does I/O and nothing is written to disk: the user asked for memory only. Imports `kinds` and `replset`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kinds import FRESHNESS_LIMIT_S, FailureKind
from replset import Failure, Snapshot, Status


def wall_now_ms() -> int:
    """The wall clock in ms since the epoch: when a failure happened."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class View:
    """What one reader sees at one instant."""

    infra: str
    interval_s: float
    snapshot: Snapshot | None  # the last successful snapshot, None before the first success
    failure: Failure | None  # the last poll's failure; None when the last poll succeeded
    age_s: float | None  # seconds since the last success, None before the first success
    last_duration_s: float | None  # how long the last poll took
    last_success_wall_s: float | None  # wall clock of the last success, for the *_timestamp_seconds metric
    polls: int  # how many polls have ended (success or failure)
    failures_by_kind: tuple[tuple[FailureKind, int], ...]  # cumulative failed polls per kind, sorted by kind

    @property
    def is_stale(self) -> bool:
        return self.age_s is None or self.age_s >= FRESHNESS_LIMIT_S

    @property
    def current(self) -> Snapshot | None:
        """The snapshot readers may present as the state now: the last poll succeeded and it is fresh."""
        if self.failure is None and self.snapshot is not None and not self.is_stale:
            return self.snapshot
        return None

    @property
    def status(self) -> Status:
        current = self.current
        return current.status if current is not None else Status.RED

    def liveness_problems(self) -> list[str]:
        """Why the exporter is not doing its job; empty when it is. No primary is RED, not a problem here."""
        problems = []
        # Failures that stop collecting are 503 at once; a missed deadline waits for staleness (kinds.FailureKind).
        if self.failure is not None and self.failure.kind.stops_collecting:
            problems.append(self.failure.message)
        if self.snapshot is None:
            if self.polls == 0:
                problems.append("no collection has finished yet")
            elif not problems:
                problems.append("no collection has succeeded yet")
        elif self.is_stale:
            problems.append(f"the last successful collection is {self.age_s:.0f} s old (limit {FRESHNESS_LIMIT_S} s)")
        return problems


class SnapshotStore:
    """Holds the latest poll result for one infra label. Thread-safe; readers never block the writer long."""

    def __init__(
        self,
        infra: str,
        interval_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.infra = infra
        self.interval_s = interval_s
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._failure: Failure | None = None
        self._success_mono: float | None = None
        self._success_wall: float | None = None
        self._duration: float | None = None
        self._polls = 0
        self._failures: dict[FailureKind, int] = {}

    def publish(self, result: Snapshot | Failure, duration_s: float) -> None:
        now_mono, now_wall = self._monotonic(), self._wall()
        with self._lock:
            self._polls += 1
            self._duration = duration_s
            if isinstance(result, Snapshot):
                self._snapshot, self._failure = result, None
                self._success_mono, self._success_wall = now_mono, now_wall
            else:
                self._failure = result
                self._failures[result.kind] = self._failures.get(result.kind, 0) + 1

    def view(self) -> View:
        now = self._monotonic()
        with self._lock:
            age = None if self._success_mono is None else max(0.0, now - self._success_mono)
            return View(
                infra=self.infra,
                interval_s=self.interval_s,
                snapshot=self._snapshot,
                failure=self._failure,
                age_s=age,
                last_duration_s=self._duration,
                last_success_wall_s=self._success_wall,
                polls=self._polls,
                failures_by_kind=tuple(sorted(self._failures.items())),
            )
