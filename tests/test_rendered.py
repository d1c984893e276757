"""Answers served from bytes rendered once per published poll: they never show an old poll, they turn stale on
time, and what must stay live (ages, process metrics) does."""

from __future__ import annotations

import re

from test_web import ZP, call
from view_factory import failure, healthy_set, make_store

import bridge
from replicationlag.metrics import build_registry, render
from replicationlag.model import FRESHNESS_LIMIT_S
from replicationlag.web import app as web


def data_lines(body: bytes) -> list[str]:
    """The exposition without the families that are live by design (ages, process, platform)."""
    live = ("mongodb_replication_snapshot_age", "mongodb_replication_set_snapshot_age", "process_", "python_")
    return [
        line
        for line in body.decode().splitlines()
        if not any(line.startswith(p) or line.startswith(f"# HELP {p}") or line.startswith(f"# TYPE {p}") for p in live)
    ]


LAG_OF_DB1 = 'mongodb_replication_lag_seconds{infra="clusterKeeper",member="db1:27017",set="rs0"}'


def lag_cell_of(page: bytes, member: str) -> str:
    """The Lag cell of `member`'s row in the status page's members table (the charts print no lags)."""
    row = re.search(rf"<tr><td>{re.escape(member)}</td>(.*?)</tr>", page.decode())
    assert row is not None, f"no row for {member}"
    return re.findall(r'<td class="num">([^<]*)</td>', row[1])[0]


def test_every_answer_shows_the_newest_poll_as_soon_as_it_is_published():
    store, _ = make_store(healthy_set(1_000))
    app = web.create_app(store, build_registry(store), bridge)
    metrics, document, page = call(app, "GET", "/metrics").body, call(app, "PUT", ZP).body, call(app, "GET", "/").body
    # The whole line: a bare 1.0 is also the value of every *_up, *_info and health line.
    assert f"{LAG_OF_DB1} 1.0" in metrics.decode().splitlines()
    assert b"replication lag 1000ms" in document
    assert lag_cell_of(page, "db1:27017") == "1000ms"

    store.publish(healthy_set(2_500), duration_s=0.01)
    metrics, document, page = call(app, "GET", "/metrics").body, call(app, "PUT", ZP).body, call(app, "GET", "/").body
    assert f"{LAG_OF_DB1} 2.5" in metrics.decode().splitlines()
    assert b"replication lag 2500ms" in document
    assert lag_cell_of(page, "db1:27017") == "2500ms"


def test_between_polls_the_data_is_served_byte_for_byte_and_only_the_live_families_move():
    store, clock = make_store(healthy_set(1_000))
    registry = build_registry(store)
    app = web.create_app(store, registry, bridge)
    before = call(app, "GET", "/metrics").body
    document = call(app, "PUT", ZP).body
    clock.advance(30)
    after = call(app, "GET", "/metrics").body
    assert data_lines(after) == data_lines(before)
    assert call(app, "PUT", ZP).body == document
    assert registry.get_sample_value("mongodb_replication_snapshot_age_seconds", {"infra": "clusterKeeper"}) == 30


def test_data_that_turns_stale_without_a_poll_is_rendered_again_and_shows_it():
    store, clock = make_store(healthy_set(1_000))
    app = web.create_app(store, build_registry(store), bridge)
    assert b'mongodb_replication_up{infra="clusterKeeper"} 1.0' in call(app, "GET", "/metrics").body
    assert call(app, "PUT", ZP).json()[bridge.SERVICE_ID]["status"] == "GREEN"

    clock.advance(FRESHNESS_LIMIT_S)
    metrics = call(app, "GET", "/metrics").body
    assert b'mongodb_replication_up{infra="clusterKeeper"} 0.0' in metrics
    assert b"mongodb_replication_lag_seconds" not in metrics
    document = call(app, "PUT", ZP).json()[bridge.SERVICE_ID]
    assert document["status"] == "RED"
    assert "RED: data stale: last successful collection 180 s ago" in document["messages"][0]["actionBody"]


def test_openmetrics_and_text_are_each_kept_and_each_ends_as_its_format_requires():
    store, _ = make_store(healthy_set(1_000))
    registry = build_registry(store)
    for _ in range(2):
        text, text_type = render(registry, None)
        om, om_type = render(registry, "application/openmetrics-text; version=1.0.0")
    assert text_type.startswith("text/plain") and b"# EOF" not in text
    assert om_type.startswith("application/openmetrics-text")
    assert om.endswith(b"# EOF\n") and om.count(b"# EOF") == 1


def test_the_ages_an_answer_prints_move_with_the_clock_between_polls():
    store, clock = make_store(healthy_set(1_000), failure())
    app = web.create_app(store, build_registry(store), bridge)
    clock.advance(59.5)
    assert "Last successful collection 59 s ago" in call(app, "PUT", ZP).body.decode()
    assert "(59 s ago)" in call(app, "GET", "/").body.decode()

    clock.advance(0.5)
    assert "Last successful collection 60 s ago" in call(app, "PUT", ZP).body.decode()
    assert "(60 s ago)" in call(app, "GET", "/").body.decode()


def test_a_healthy_document_is_the_same_bytes_from_one_publish_to_the_next_whatever_the_clock():
    store, clock = make_store(healthy_set(1_000))
    app = web.create_app(store, build_registry(store), bridge)
    document = call(app, "PUT", ZP).body
    for _ in range(3):
        clock.advance(25.3)
        assert call(app, "PUT", ZP).body == document

    store.publish(healthy_set(1_200), duration_s=0.01)
    assert b"replication lag 1200ms" in call(app, "PUT", ZP).body
