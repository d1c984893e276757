"""Every failure kind is known to every reader: metrics export it from the start, /liveness judges it by its own
meaning, and the document explains it. A kind added to `kinds.FailureKind` is covered here without an edit, and
a reader that kept its own list of kinds would fail.
"""

from __future__ import annotations

import pytest
from view_factory import healthy_set, make_store

from bridge import status_document
from replicationlag.liveness import liveness_document
from replicationlag.metrics import build_registry
from replicationlag.model import FRESHNESS_LIMIT_S, Failure, FailureKind

KINDS = list(FailureKind)


@pytest.mark.parametrize("kind", KINDS)
def test_metrics_export_every_kind_at_zero_before_it_first_happens_and_count_it_after(kind):
    store, _ = make_store(healthy_set(0))
    registry = build_registry(store)
    labels = {"infra": "clusterKeeper", "kind": kind.value}
    assert registry.get_sample_value("mongodb_replication_collection_failures_total", labels) == 0

    store.publish(Failure(kind, "what went wrong", at_ms=1), duration_s=0.1)
    assert registry.get_sample_value("mongodb_replication_collection_failures_total", labels) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_liveness_fails_at_once_exactly_for_the_kinds_that_stop_collecting(kind):
    store, clock = make_store(healthy_set(0), Failure(kind, "what went wrong", at_ms=1))
    status, document = liveness_document(store.view())
    assert status == (503 if kind.stops_collecting else 200)
    assert document["last_failure_kind"] == kind.value

    clock.advance(FRESHNESS_LIMIT_S)  # every kind fails liveness once the data is stale
    assert liveness_document(store.view())[0] == 503


@pytest.mark.parametrize("kind", KINDS)
def test_the_document_is_red_and_says_why_for_every_kind(kind):
    store, _ = make_store(healthy_set(0), Failure(kind, "what went wrong", at_ms=1))
    document = status_document(store.view())["mhp.zeroproblem.mongo.replcationlag"]
    assert document["status"] == "RED"
    assert document["messages"][0]["actionBody"].startswith(
        f"RED: replica set rs0: collection failed ({kind})\n- RED: collection failed ({kind}): what went wrong ("
    )


def test_the_kinds_that_stop_collecting_are_the_ones_no_retry_can_fix_soon():
    stopping = {kind.value for kind in FailureKind if kind.stops_collecting}
    assert stopping == {"auth", "unauthorized", "not_replica_set", "unreachable"}
