"""The scheduled poll: the only importer of `schedule`.

`Poller.poll()` runs one collection on a thread of its own and waits for it at most the poll deadline plus a grace,
so a driver that misbehaves can neither delay the next poll nor keep the process from exiting; then it publishes
exactly one `Snapshot` or `Failure` to the store and logs it: for a replica set, its colour when it changes and a
failure at every poll; for a sharded cluster, one line per kind of problem per poll with its count and first names
(the document's summary lines: 100 shards down are one line, not a hundred), and the verdict when the cluster's
colour changes. Every string a server wrote is neutral (`text.neutral`) in the log too. Nothing here raises into
the scheduler. `PollScheduler` runs the poll at start and then every interval, and stops at once. Imports `model`,
`store`, `text` and `words`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import schedule

from replicationlag.model import ClusterResult, Failure, FailureKind, NoteKind, Snapshot, Status, wall_now_ms
from replicationlag.store import SnapshotStore
from replicationlag.text import NAME_LIMIT, neutral
from replicationlag.words import summary

log = logging.getLogger("replicationlag.poller")

WATCHDOG_GRACE_S = 1.0  # the driver honours the deadline itself; the watchdog is the last line of defence


class Poller:
    """Polls one source with a deadline and publishes the result to its store."""

    def __init__(
        self,
        collect: Callable[[], Snapshot | Failure | ClusterResult],
        store: SnapshotStore,
        timeout_s: float,
        now_ms: Callable[[], int] = wall_now_ms,
    ) -> None:
        self._collect = collect
        self._store = store
        self._timeout_s = timeout_s
        self._now_ms = now_ms
        self._running: threading.Thread | None = None
        self._last_status: dict[str, str] = {}  # a replica set's colour, logged when it changes
        self._cluster_status: Status | None = None  # a sharded cluster's colour, logged when it changes
        self._last_clocks: dict[str, tuple] = {}  # by set label: which clocks disagree, logged when it changes
        self._stopped = threading.Event()

    def stop(self) -> None:
        """From now on polls do nothing (a poll still running publishes nothing)."""
        self._stopped.set()

    def poll(self) -> None:
        """One scheduled poll: bounded by the deadline, publishes exactly one result, never raises."""
        if self._stopped.is_set():
            return
        started = time.monotonic()
        try:
            result = self._run_bounded()
        except Exception as error:  # the scheduler must never see an exception
            result = Failure(FailureKind.ERROR, f"unexpected {type(error).__name__} while collecting", self._now_ms())
        if self._stopped.is_set():
            return
        self._store.publish(result, time.monotonic() - started)
        self._log(result)

    def _run_bounded(self) -> Snapshot | Failure | ClusterResult:
        if self._running is not None and self._running.is_alive():
            return Failure(FailureKind.TIMEOUT, "the previous poll is still running; skipped this one", self._now_ms())
        box: list[Snapshot | Failure | ClusterResult] = []
        worker = threading.Thread(target=lambda: box.append(self._collect_safely()), name="poll", daemon=True)
        self._running = worker
        worker.start()
        worker.join(self._timeout_s + WATCHDOG_GRACE_S)
        if box:
            return box[0]
        message = f"the poll did not finish within its {self._timeout_s:g} s deadline"
        return Failure(FailureKind.TIMEOUT, message, self._now_ms())

    def _collect_safely(self) -> Snapshot | Failure | ClusterResult:
        try:
            return self._collect()
        except Exception as error:
            return Failure(FailureKind.ERROR, f"unexpected {type(error).__name__} while collecting", self._now_ms())

    def _log(self, result: Snapshot | Failure | ClusterResult) -> None:
        if isinstance(result, ClusterResult) or self._store.view().sharded:
            self._log_cluster()
            if isinstance(result, ClusterResult):
                for address, set_result in result.sets:
                    if isinstance(set_result, Snapshot):
                        self._log_clocks(address.label, address.label, set_result)
                shown = {address.label for address, _ in result.sets}
                for gone in set(self._last_clocks) - shown:
                    del self._last_clocks[gone]
            return
        self._log_set(result)

    def _log_cluster(self) -> None:
        """One line per kind of problem, with its count and first names (as the document says it), at every poll;
        the verdict when the cluster's colour changes; the rest at debug, one line."""
        view = self._store.view()
        found = summary(view)
        if view.status is not self._cluster_status:
            log.info("%s", found.verdict)
            self._cluster_status = view.status
        for colour, line in found.lines:
            (log.warning if colour is not None else log.info)("%s", line)
        log.debug("polled %d sets: %s", len(view.sets), found.verdict)

    def _log_set(self, result: Snapshot | Failure) -> None:
        if isinstance(result, Failure):
            log.warning("collection failed (%s): %s", result.kind, neutral(result.message))
            self._last_status.pop("", None)
            return
        summary_ = ", ".join(
            f"{neutral(m.name, NAME_LIMIT)} {m.lag_ms}ms"
            if m.lag_ms is not None
            else f"{neutral(m.name, NAME_LIMIT)} {neutral(m.state_str, NAME_LIMIT)}"
            for m in result.members
            if not m.is_primary
        )
        status = result.status.name
        name = neutral(result.set_name, NAME_LIMIT)
        if status != self._last_status.get(""):
            reasons = "; ".join(neutral(r) for r in result.reasons) or "all members healthy and in time"
            log.info("replica set %s is %s: %s", name, status, reasons)
        self._last_status[""] = status
        self._log_clocks(f"replica set {name}", "", result)
        log.debug("collected %s: %s", name, summary_)

    def _log_clocks(self, name: str, label: str, result: Snapshot) -> None:
        """A warning when clocks start to disagree (or disagree otherwise), a line when they agree again; not
        every poll: the document says it at every poll (docs/domain.md §17)."""
        notes = [note for note in result.notes if note.kind is NoteKind.CLOCK_SKEW]
        key = tuple((n.value("between"), (n.value("offset_ms") or 0) > 0) for n in notes)
        if key == self._last_clocks.get(label, ()):
            return
        if notes:
            log.warning("%s: clocks disagree: %s", name, "; ".join(note.text for note in notes))
        else:
            log.info("%s: the clocks agree again", name)
        self._last_clocks[label] = key


class PollScheduler:
    """Runs the poll once at start, then every interval, on its own thread; `stop()` returns at once."""

    def __init__(self, poll: Callable[[], None], interval_s: float) -> None:
        self._poll = poll
        self._scheduler = schedule.Scheduler()
        self._scheduler.every(interval_s).seconds.do(poll)  # type: ignore[arg-type]  # accepts a float
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poll-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self._poll()
        while not self._stop.is_set():
            idle = self._scheduler.idle_seconds
            if self._stop.wait(timeout=max(0.0, min(idle if idle is not None else 1.0, 1.0))):
                break
            self._scheduler.run_pending()

    def stop(self) -> None:
        """No poll starts from now on. One still running is not waited for (its threads are daemons): stop the
        `Poller` first, and it publishes nothing."""
        self._stop.set()
