"""Is the exporter doing its job: the rule (`liveness_problems`) and the answer of `GET /liveness`
(`liveness_document`), for Zero Problem and for the `mongodb_replication_up` metric of a sharded cluster.

Alive means connected, authenticated, watching a replica set (or a cluster), and holding data younger than the
freshness limit. A RED set is the cluster's problem, not the exporter's. PURE: imports `view` only.
"""

from __future__ import annotations

from typing import Any

from replicationlag.view import View


def liveness_problems(view: View) -> list[str]:
    """Why the exporter is not doing its job; empty when it is. A RED set is the cluster's problem, not this."""
    if view.sharded:
        return _cluster_liveness_problems(view)
    problems = []
    failure = view.failure
    # Failures that stop collecting are 503 at once; a missed deadline waits for staleness (kinds.FailureKind).
    if failure is not None and failure.kind.stops_collecting:
        problems.append(failure.message)
    if view.snapshot is None:
        if view.polls == 0:
            problems.append("no collection has finished yet")
        elif not problems:
            problems.append("no collection has succeeded yet")
    elif view.is_stale:
        problems.append(view.stale_sentence())
    return problems


def _cluster_liveness_problems(view: View) -> list[str]:
    """Sharded: alive while the map or some set was read within the freshness limit."""
    if view.polls == 0:
        return ["no collection has finished yet"]
    map_fresh = view.map_age_s is not None and view.map_age_s < view.freshness_limit_s
    if map_fresh or any(s.current is not None for s in view.sets):
        return []
    problems = [view.map_failure.message] if view.map_failure is not None else []
    if view.age_s is None:
        problems.append("nothing has been collected from the cluster yet")
    else:
        problems.append(view.stale_sentence())
    return problems


def liveness_document(view: View) -> tuple[int, dict[str, Any]]:
    """200 when the exporter is doing its job, else 503 with the reasons.

    A set with no primary or a lagging member is the cluster's problem, not the exporter's: still 200.
    """
    problems = liveness_problems(view)
    failure = view.failure
    document: dict[str, Any] = {
        "status": "failing" if problems else "ok",
        "infra": view.infra,
        "cluster_status": view.status.name,
        "last_success_age_s": None if view.age_s is None else round(view.age_s, 3),
        "freshness_limit_s": view.freshness_limit_s,
        "collection_interval_s": view.interval_s,
        "polls": view.polls,
        "last_failure_kind": None if failure is None else failure.kind,
        "last_failure": None if failure is None else failure.message,
    }
    if view.sharded:
        document["sets"] = len(view.sets)
        document["sets_collected"] = sum(1 for s in view.sets if s.current is not None)
        document["shard_map_age_s"] = None if view.map_age_s is None else round(view.map_age_s, 3)
    if problems:
        document["reasons"] = problems
        return 503, document
    return 200, document
