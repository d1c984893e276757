"""The Zero Problem document and the /liveness answer, for every state the store can be in."""

from __future__ import annotations

import json

import pytest
from view_factory import (
    COLLECTED_AT_MS,
    failure,
    fixture_snapshot,
    healthy_set,
    member,
    primary,
    snapshot,
    view_of,
)

from bridge import SERVICE_ID, status_document
from replicationlag.liveness import liveness_document
from replicationlag.model import ARBITER, FRESHNESS_LIMIT_S, SECONDARY

DOWN, RECOVERING = 8, 3


def body(view) -> dict:
    return status_document(view)[SERVICE_ID]


def whole(view, page_url: str = "") -> list[str]:
    return status_document(view, page_url)[SERVICE_ID]["messages"][0]["actionBody"].splitlines()


SUMMARY = ("- RED: ", "- YELLOW: ", "- NOTE: ", "- All members: ")


def lines(view) -> list[str]:
    """The details: the lines after the verdict that are not the summary's problem lines nor the footer."""
    return [line for line in whole(view)[1:] if not line.startswith(SUMMARY)]


EVERY_STATE = {
    "green": view_of(healthy_set(0, 1_239)),
    "yellow": view_of(healthy_set(5_000)),
    "red by lag": view_of(healthy_set(30_000)),
    "member down": view_of(snapshot(primary(), member("db3:27017", DOWN, None, healthy=False))),
    "no primary": view_of(snapshot(member("db1:27017"), member("db2:27017", lag_ms=6_316))),
    "failed": view_of(failure()),
    "failed after a success": view_of(healthy_set(0), failure()),
    "stale": view_of(healthy_set(0), age_s=FRESHNESS_LIMIT_S + 0.001),
    "before the first poll": view_of(),
}


@pytest.mark.parametrize("state", EVERY_STATE)
def test_the_document_has_the_consumers_shape_and_exactly_one_message_in_every_state(state):
    document = status_document(EVERY_STATE[state])

    assert list(document) == ["mhp.zeroproblem.mongo.replcationlag"]
    inner = document["mhp.zeroproblem.mongo.replcationlag"]
    assert set(inner) == {"status", "timestamp", "messages"}
    assert inner["status"] in {"GREEN", "YELLOW", "RED"}
    assert isinstance(inner["timestamp"], int)
    [message] = inner["messages"]
    assert message["statusCode"] == "" and message["actionCode"] == ""
    assert message["statusBody"] == "mhp.zeroproblem.mongo.replcationlag"
    verdict, *rest = message["actionBody"].splitlines()
    assert verdict.startswith(f"{inner['status']}: ") and len(verdict) < 120
    assert all(line.startswith(("- ", "### ")) for line in rest)
    assert rest[-1] == "- All members: the status page at / of this exporter"
    assert json.loads(json.dumps(document)) == document


@pytest.mark.parametrize("state", EVERY_STATE)
def test_the_document_is_the_same_every_time_for_the_same_view(state):
    assert status_document(EVERY_STATE[state]) == status_document(EVERY_STATE[state])


@pytest.mark.parametrize(
    ("lag_ms", "status"),
    [(0, "GREEN"), (4_999, "GREEN"), (5_000, "YELLOW"), (29_999, "YELLOW"), (30_000, "RED")],
)
def test_the_status_follows_the_worst_lag_on_both_sides_of_each_threshold(lag_ms, status):
    view = view_of(healthy_set(0, lag_ms))

    assert body(view)["status"] == status
    assert lines(view)[2] == f"- Secondary db2:27017 replication lag {lag_ms}ms"


def test_a_healthy_set_lists_every_member_primary_first_with_its_lag_in_ms():
    view = view_of(healthy_set(0, 1_239))

    assert body(view)["timestamp"] == COLLECTED_AT_MS
    assert lines(view) == [
        "- Primary db0:27017 replication lag 0ms",
        "- Secondary db1:27017 replication lag 0ms",
        "- Secondary db2:27017 replication lag 1239ms",
    ]


def test_a_down_member_says_why_it_has_no_lag_and_makes_the_set_red():
    view = view_of(snapshot(primary(), member("db3:27017", DOWN, None, healthy=False, reason="DOWN: not reachable")))

    assert body(view)["status"] == "RED"
    assert lines(view)[1] == "- Secondary db3:27017 DOWN: not reachable"


def test_a_member_without_lag_or_reason_shows_its_state():
    view = view_of(snapshot(primary(), member("db4:27017", RECOVERING, None)))

    assert body(view)["status"] == "RED"
    assert lines(view)[1] == "- Secondary db4:27017 RECOVERING"


def test_an_arbiter_says_it_is_an_arbiter_and_whether_it_is_healthy():
    healthy = view_of(snapshot(primary(), member("arb:27017", ARBITER, None)))
    sick = view_of(snapshot(primary(), member("arb:27017", ARBITER, None, healthy=False, reason="DOWN: no route")))

    assert lines(healthy)[1] == "- Arbiter arb:27017 healthy"
    assert body(healthy)["status"] == "GREEN"
    assert lines(sick)[1] == "- Arbiter arb:27017 not healthy: DOWN: no route"
    assert body(sick)["status"] == "RED"


def test_a_delayed_hidden_member_shows_its_delay_and_its_raw_lag():
    delayed = member("db2:27017", lag_ms=429, hidden=True, delay_ms=3_600_000)

    view = view_of(snapshot(primary(), delayed))

    assert body(view)["status"] == "GREEN"
    assert lines(view)[1] == "- Secondary db2:27017 (hidden, delayed 3600s) replication lag 429ms (raw 3600429ms)"


def test_a_member_measured_in_whole_seconds_says_so():
    view = view_of(snapshot(primary(), member("db1:27017", lag_ms=12_000, precision="s")))

    assert lines(view)[1] == ("- Secondary db1:27017 replication lag ~12000ms, whole seconds: server has no wall times")


def test_a_lagging_member_line_keeps_the_consumers_shape_and_only_adds_notes_beyond_the_number():
    lagging = member("db1:27017", lag_ms=12_486, reason="12486 ms behind the primary")
    bottleneck = member(
        "db2:27017",
        lag_ms=31_208,
        reason="31208 ms behind the primary; oplog written 0 ms behind, so applying is the bottleneck",
    )

    body = lines(view_of(snapshot(primary(), lagging, bottleneck)))
    assert body[1] == "- Secondary db1:27017 replication lag 12486ms"
    assert body[2] == (
        "- Secondary db2:27017 replication lag 31208ms (oplog written 0 ms behind, so applying is the bottleneck)"
    )


def test_a_set_without_primary_is_red_and_names_the_reference_member_first():
    view = view_of(
        snapshot(
            member("db0:27017", DOWN, None, healthy=False, reason="DOWN: not reachable"),
            member("db1:27017", lag_ms=0),
            member("db2:27017", lag_ms=6_316),
        )
    )

    assert body(view)["status"] == "RED"
    assert lines(view) == [
        "- No primary: lag measured against the freshest member db1:27017",
        "- Secondary db0:27017 DOWN: not reachable",
        "- Secondary db1:27017 (reference) replication lag 0ms",
        "- Secondary db2:27017 replication lag 6316ms",
    ]


def test_a_set_with_no_member_to_measure_against_says_so():
    view = view_of(snapshot(member("db0:27017", DOWN, None, healthy=False)))

    assert lines(view)[0] == "- No primary and no healthy data-bearing member to measure lag against"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("auth", "authentication failed for user 'monitor'"),
        ("not_replica_set", "db0:27017 is not a replica set member (NoReplicationEnabled)"),
    ],
)
def test_a_failed_first_collection_is_red_says_why_and_carries_the_failure_time(kind, message):
    failed = failure(kind, message)

    view = view_of(failed)

    assert body(view)["status"] == "RED"
    assert body(view)["timestamp"] == failed.at_ms
    assert whole(view) == [
        f"RED: the replica set: collection failed ({kind})",
        f"- RED: collection failed ({kind}): {message} (since 23:06 UTC)",
        "- All members: the status page at / of this exporter",
    ]


def test_a_failure_after_a_success_is_red_and_shows_the_last_known_members_marked_as_such():
    view = view_of(healthy_set(1_239), failure(), age_s=60)

    assert body(view)["status"] == "RED"
    assert body(view)["timestamp"] == COLLECTED_AT_MS
    assert whole(view) == [
        "RED: replica set rs0: collection failed (auth)",
        "- RED: collection failed (auth): authentication failed for user 'monitor' (since 23:06 UTC)",
        "- Last successful collection 60 s ago",
        "- Last known: Primary db0:27017 replication lag 0ms",
        "- Last known: Secondary db1:27017 replication lag 1239ms",
        "- All members: the status page at / of this exporter",
    ]


def test_data_older_than_the_freshness_limit_is_red_and_says_it_is_stale_first():
    view = view_of(healthy_set(0), age_s=FRESHNESS_LIMIT_S + 0.001)

    assert body(view)["status"] == "RED"
    assert body(view)["timestamp"] == COLLECTED_AT_MS
    assert whole(view) == [
        "RED: replica set rs0: data stale",
        "- RED: data stale: last successful collection 180 s ago (since 23:09 UTC)",
        "- Last known: Primary db0:27017 replication lag 0ms",
        "- Last known: Secondary db1:27017 replication lag 0ms",
        "- All members: the status page at / of this exporter",
    ]


def test_data_just_inside_the_freshness_limit_is_still_shown_as_current():
    view = view_of(healthy_set(0), age_s=FRESHNESS_LIMIT_S - 0.001)

    assert body(view)["status"] == "GREEN"
    assert lines(view)[0] == "- Primary db0:27017 replication lag 0ms"


def test_before_the_first_collection_the_document_is_red_with_timestamp_zero():
    view = view_of()

    assert body(view)["status"] == "RED"
    assert body(view)["timestamp"] == 0
    assert whole(view) == [
        "RED: no collection has finished yet",
        "- All members: the status page at / of this exporter",
    ]


def test_liveness_is_ok_while_collections_succeed():
    status, document = liveness_document(view_of(healthy_set(0), age_s=12.5))

    assert status == 200
    assert document["status"] == "ok"
    assert document["last_success_age_s"] == 12.5
    assert "reasons" not in document


def test_a_set_without_primary_is_red_in_the_document_but_not_a_liveness_failure():
    view = view_of(snapshot(member("db1:27017", SECONDARY), member("db2:27017", SECONDARY)))

    status, document = liveness_document(view)

    assert body(view)["status"] == "RED"
    assert status == 200
    assert document["cluster_status"] == "RED"


def test_an_authentication_failure_fails_liveness_with_its_reason_and_kind():
    status, document = liveness_document(view_of(healthy_set(0), failure()))

    assert status == 503
    assert document["status"] == "failing"
    assert document["reasons"] == ["authentication failed for user 'monitor'"]
    assert document["last_failure_kind"] == "auth"
    assert document["last_success_age_s"] == 0


def test_a_single_timeout_with_fresh_data_does_not_fail_liveness():
    status, document = liveness_document(view_of(healthy_set(0), failure("timeout", "timed out after 5 s")))

    assert status == 200
    assert document["last_failure_kind"] == "timeout"


@pytest.mark.parametrize("kind", ["auth", "unauthorized", "not_replica_set", "unreachable"])
def test_a_failure_that_stops_collecting_fails_liveness_at_once(kind):
    status, document = liveness_document(view_of(healthy_set(0), failure(kind, "it failed")))

    assert status == 503
    assert document["reasons"] == ["it failed"]


def test_stale_data_fails_liveness():
    status, document = liveness_document(view_of(healthy_set(0), age_s=FRESHNESS_LIMIT_S + 0.001))

    assert status == 503
    assert document["reasons"] == ["the last successful collection is 180 s old (limit 180 s)"]


def test_liveness_fails_before_the_first_collection_has_finished():
    status, document = liveness_document(view_of())

    assert status == 503
    assert document["reasons"] == ["no collection has finished yet"]
    assert document["last_success_age_s"] is None


def test_the_engines_edge_case_set_reads_as_one_clear_line_per_member():
    snapshot_ = fixture_snapshot("replSetGetStatus-7.0-primary-edge-cases.json", "replSetGetConfig-7.0-edge-cases.json")

    assert body(view_of(snapshot_))["status"] == "RED"
    assert lines(view_of(snapshot_)) == [
        "- Primary db0.example.net:27017 replication lag 0ms",
        "- Secondary db1.example.net:27017 replication lag 0ms",
        "- Secondary db2.example.net:27017 (hidden, delayed 3600s) replication lag 429ms (raw 3600429ms)",
        "- Secondary db3.example.net:27017 DOWN: Error connecting to db3.example.net:27017 (10.0.0.13:27017)"
        " :: caused by :: Connection refused",
        "- Secondary db4.example.net:27017 RECOVERING",
        "- Arbiter arb.example.net:27017 healthy",
    ]


def test_the_engines_no_primary_set_names_the_freshest_member_first():
    view = view_of(fixture_snapshot("replSetGetStatus-7.0-no-primary.json"))

    assert lines(view)[0] == "- No primary: lag measured against the freshest member db1.example.net:27017"
    assert lines(view)[2] == "- Secondary db1.example.net:27017 (reference) replication lag 0ms"


def test_the_engines_whole_second_fallback_is_marked_on_every_member():
    view = view_of(fixture_snapshot("replSetGetStatus-4.0-primary.json"))

    assert all(line.endswith("~0ms, whole seconds: server has no wall times") for line in lines(view))


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        # Names as consumers parse them today stay byte for byte.
        ("db1:27017", "db1:27017"),
        ("db-1.example.net:27017", "db-1.example.net:27017"),
        ("mongo_1:27017", "mongo_1:27017"),  # docker's service names: an intraword _ is no emphasis
        ("[::1]:27017", "[::1]:27017"),
        ("[fe80::1%eth0]:27017", "[fe80::1%eth0]:27017"),
        ("db1:27017#3", "db1:27017#3"),  # the engine's name for one of two members reporting one name
        # What Markdown would read is escaped.
        ("*db*:27017", r"\*db\*:27017"),
        ("_db_:27017", r"\_db\_:27017"),
        ("`db`:27017", r"\`db\`:27017"),
        ("[click](https://evil.example):1", r"\[click\](https://evil.example):1"),
        ("<img src=x onerror=alert(1)>:1", r"\<img src=x onerror=alert(1)\>:1"),
        ("a&amp;b:1", r"a\&amp;b:1"),
        ("~~db~~:1", r"\~\~db\~\~:1"),
        ("db|x:1", r"db\|x:1"),
        ("![x](y):1", r"\!\[x\](y):1"),
        ("back\\slash:1", r"back\\slash:1"),
        ("two\nlines:1", "two\ufffdlines:1"),  # a line break would start a line of its own
        ("two\u2028lines\x85:1", "two\ufffdlines\ufffd:1"),  # so would these, for str.splitlines()
    ],
)
def test_member_names_are_escaped_where_markdown_would_read_them(name, shown):
    """Issue 17 item 9: a member name went raw into actionBody."""
    view = view_of(snapshot(primary(), member(name, lag_ms=1_239)))
    assert lines(view) == ["- Primary db0:27017 replication lag 0ms", f"- Secondary {shown} replication lag 1239ms"]


def test_the_reference_member_of_a_set_without_primary_is_escaped_too():
    view = view_of(snapshot(member("*ref*:1"), member("db2:27017", lag_ms=10)))
    assert lines(view)[0] == r"- No primary: lag measured against the freshest member \*ref\*:1"
