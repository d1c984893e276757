"""The poller's guards, each reached on purpose (issue 25 item 3): a collection that ignores its deadline is cut off
by the watchdog; a poll due while the previous one still runs is skipped, not stacked; a poll still running when
the service stops publishes nothing. What is checked is what a user sees: the store's view (the document, /liveness
and the page read it), the failure counters of /metrics and the log. The polls are driven by the test.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from view_factory import COLLECTED_AT_MS, FakeClock, healthy_set

import bridge
from replicationlag.metrics import build_registry
from replicationlag.model import Failure, Snapshot
from replicationlag.poller import Poller
from replicationlag.store import SnapshotStore

TIMEOUT_S = 0.1  # the poll deadline the driver is told; the watchdog waits this plus WATCHDOG_GRACE_S
WAIT_S = 10.0  # a generous bound on waits for a thread: a hang fails the test instead of blocking it


class HungDriver:
    """A collection that ignores its deadline, as a driver stuck in a C call or a socket without a timeout would:
    each call blocks until the test releases it, then returns the healthy snapshot it was collecting."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.entered = threading.Event()

    def __call__(self) -> Snapshot | Failure:
        self.calls += 1
        self.entered.set()
        self.release.wait(WAIT_S)
        return healthy_set(2_000)


@pytest.fixture
def hung() -> Iterator[HungDriver]:
    driver = HungDriver()
    yield driver
    driver.release.set()  # no poll thread outlives the test


def a_store() -> SnapshotStore:
    return SnapshotStore("clusterKeeper", 60, monotonic=FakeClock(), wall=lambda: COLLECTED_AT_MS / 1000)


def timeouts(store: SnapshotStore) -> float | None:
    registry = build_registry(store)
    return registry.get_sample_value(
        "mongodb_replication_collection_failures_total", {"infra": "clusterKeeper", "kind": "timeout"}
    )


def action_body(store: SnapshotStore) -> str:
    return bridge.status_document(store.view())[bridge.SERVICE_ID]["messages"][0]["actionBody"]


@pytest.mark.timeout(30)
def test_a_collection_that_ignores_its_deadline_is_cut_off_by_the_watchdog_and_published_as_a_timeout(hung, caplog):
    store = a_store()
    poller = Poller(hung, store, TIMEOUT_S, now_ms=lambda: COLLECTED_AT_MS)

    with caplog.at_level(logging.WARNING, logger="replicationlag.poller"):
        poller.poll()  # returns: the watchdog gave up on the hung collection

    view = store.view()
    assert view.polls == 1
    assert view.failure is not None and view.failure.kind == "timeout"
    assert view.failure.message == f"the poll did not finish within its {TIMEOUT_S:g} s deadline"
    assert hung.entered.is_set() and not hung.release.is_set()  # published while the collection still hung
    assert timeouts(store) == 1
    assert bridge.status_document(view)[bridge.SERVICE_ID]["status"] == "RED"
    assert f"did not finish within its {TIMEOUT_S:g} s deadline" in action_body(store)
    assert [r.getMessage() for r in caplog.records] == [
        f"collection failed (timeout): the poll did not finish within its {TIMEOUT_S:g} s deadline"
    ]


@pytest.mark.timeout(30)
def test_a_poll_due_while_the_last_one_still_runs_is_skipped_and_the_late_result_is_never_published(hung):
    store = a_store()
    poller = Poller(hung, store, TIMEOUT_S, now_ms=lambda: COLLECTED_AT_MS)
    poller.poll()  # cut off by the watchdog; its collection still hangs
    assert hung.calls == 1

    poller.poll()  # due while the collection still hangs: skipped, no second collection stacked on the first

    assert hung.calls == 1
    view = store.view()
    assert view.polls == 2
    assert view.failure is not None and view.failure.kind == "timeout"
    assert view.failure.message == "the previous poll is still running; skipped this one"
    assert timeouts(store) == 2

    hung.release.set()  # the first collection ends at last: its result is late and is dropped
    wait_for_no_poll_thread()
    assert store.view().polls == 2 and store.view().current is None

    poller.poll()  # the next one collects again and publishes
    view = store.view()
    assert hung.calls == 2
    assert view.polls == 3 and view.failure is None and view.current is not None
    assert "replication lag 2000ms" in action_body(store)


@pytest.mark.timeout(30)
def test_a_poll_still_running_when_the_service_stops_publishes_nothing_and_later_polls_do_nothing(hung, caplog):
    store = a_store()
    poller = Poller(hung, store, timeout_s=WAIT_S, now_ms=lambda: COLLECTED_AT_MS)
    polling = threading.Thread(target=poller.poll)
    with caplog.at_level(logging.DEBUG, logger="replicationlag.poller"):
        polling.start()
        assert hung.entered.wait(WAIT_S)  # the poll really runs: its collection is in flight

        poller.stop()
        hung.release.set()  # the collection returns a healthy snapshot, after the stop
        polling.join(WAIT_S)
        assert not polling.is_alive()
        poller.poll()  # a poll the scheduler started just before it stopped

    assert hung.calls == 1  # the poll after stop collected nothing
    view = store.view()
    assert view.polls == 0 and view.current is None
    assert caplog.records == []  # nor said anything


def wait_for_no_poll_thread() -> None:
    """Until the released collection's thread (named "poll") has ended, with a deadline."""
    for thread in threading.enumerate():
        if thread.name == "poll":
            thread.join(WAIT_S)
            assert not thread.is_alive()
