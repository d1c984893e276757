"""Issue 23: one bounded message, readable at a glance, that nothing a server says can forge.

Views come from the real engine over checked-in status documents (edited where a test plays a hostile or broken
server) published to the real store; the document, the page and the log are read as a user reads them.
"""

from __future__ import annotations

import logging
import re

import pytest
from prometheus_client import generate_latest
from view_factory import (
    COLLECTED_AT_MS,
    cluster_store,
    engine_snapshot,
    failure,
    make_store,
    member,
    primary,
    shard,
    snapshot,
    view_of,
)

import bridge
from replicationlag.metrics import build_registry
from replicationlag.model import ClusterResult, SetRole, ShardMap
from replicationlag.poller import Poller
from replicationlag.problems import names_words, shared
from replicationlag.shardmap import from_shard_map
from replicationlag.store import SnapshotStore
from replicationlag.web.page import render_status_page

DOWN = 8
URL = "https://lag.example.com/"
UNSAFE = ("\u202e", "\u200b", "\n", "\r", "<script>", "**bold**", "[link](http://x)")


def action_body(view, page_url: str = "") -> str:
    return bridge.status_document(view, page_url)[bridge.SERVICE_ID]["messages"][0]["actionBody"]


def edge_case_shard(number: int, edit=None):
    """Shard `number` as the engine sees the edge-case document: a member DOWN, one RECOVERING, a delayed one."""
    return shard(number), engine_snapshot(rename=(".example.net", f".s{number}.example.net"), edit=edit)


def assert_bounded(body: str) -> None:
    verdict, *rest = body.splitlines()
    assert len(body) <= 3_000, len(body)
    assert len(body.splitlines()) <= 30
    assert len(verdict) < 120, verdict
    assert all(line.startswith(("- ", "### ")) for line in rest), body


# --- 2. One message, bounded whatever happens. ---------------------------------------------------------------------


def test_a_300_shard_outage_is_one_bounded_message_with_each_problem_on_one_counted_line():
    store, _ = cluster_store(*(edge_case_shard(n) for n in range(1, 301)), polls=2)
    body = action_body(store.view(), URL)

    assert_bounded(body)
    lines = body.splitlines()
    # The RECOVERING part does not fit under 120 characters; the worst lag is kept, and the next line says it.
    assert lines[0] == "RED: 300 members DOWN in 300 shards; worst lag shard1 db2.s1.example.net:27017 429ms"
    assert (
        lines[1]
        == "- RED: DOWN: 300 members in 300 shards: shard1, shard2, shard3 and 297 more (for 1 min, since 23:06 UTC)"
    )
    assert lines[2].startswith("- RED: RECOVERING: 300 members in 300 shards: shard1, shard2, shard3 and 297 more")
    assert lines[3] == "### shard1 (replica set shard1): RED for 1 min, since 23:06 UTC"
    assert lines[-1] == f"- All members: <{URL}>"
    # What was left out is counted: every set's heading and member lines, less those shown.
    every = sum(len(block) for block in bridge._details(store.view())[0])
    shown = sum(1 for line in lines[3:-2])
    more = re.fullmatch(r"- (\d+) more lines on the status page \((\d+) more sets\)", lines[-2])
    assert more is not None, lines[-2]
    assert int(more.group(1)) == every - shown
    assert int(more.group(2)) == 300 - sum(1 for line in lines if line.startswith("### "))


def test_two_megabytes_of_heartbeat_message_in_every_shard_still_make_one_bounded_message():
    def shout(status, _config):
        status["members"][3]["lastHeartbeatMessage"] = "refused " * 250_000

    store, _ = cluster_store(*(edge_case_shard(n, shout) for n in range(1, 101)))
    body = action_body(store.view())
    assert_bounded(body)
    down = next(line for line in body.splitlines() if line.startswith("- Secondary db3."))
    assert down.endswith("…") and len(down) < 400


def test_a_small_set_still_lists_every_member_in_the_seeds_wording():
    body = action_body(view_of(engine_snapshot()))
    assert (
        body.splitlines()[0]
        == "RED: replica set rs0, 6 members: 1 member DOWN; 1 member RECOVERING; worst lag db2.example.net:27017 429ms"
    )
    assert body.splitlines()[3:] == [
        "- Primary db0.example.net:27017 replication lag 0ms",
        "- Secondary db1.example.net:27017 replication lag 0ms",
        "- Secondary db2.example.net:27017 (hidden, delayed 3600s) replication lag 429ms (raw 3600429ms)",
        "- Secondary db3.example.net:27017 DOWN: Error connecting to db3.example.net:27017 (10.0.0.13:27017)"
        " :: caused by :: Connection refused",
        "- Secondary db4.example.net:27017 RECOVERING",
        "- Arbiter arb.example.net:27017 healthy",
        "- All members: the status page at / of this exporter",
    ]


def test_red_comes_before_yellow_and_the_largest_lag_first_with_the_worst_member_named_exactly():
    sets = [
        (shard(n), snapshot(primary(f"s{n}a:1"), member(f"s{n}b:1", lag_ms=lag), set_name=f"shard{n}"))
        for n, lag in ((1, 6_000), (2, 31_000), (3, 45_123), (4, 12_000), (5, 100))
    ]
    store, _ = cluster_store(*sets)
    lines = action_body(store.view()).splitlines()
    assert lines[0].endswith("; worst lag shard3 s3b:1 45123ms")
    assert lines[1].startswith(
        "- RED: 30 s or more behind: 2 members in 2 shards: shard3 s3b:1 45123ms and shard2 31000ms"
    )
    assert lines[2].startswith(
        "- YELLOW: 5 s or more behind: 2 members in 2 shards: shard4 s4b:1 12000ms and shard1 6000ms"
    )
    headings = [line.split(" (")[0] for line in lines if line.startswith("### ")]
    assert headings == ["### shard3", "### shard2", "### shard4", "### shard1"]
    assert lines[-2] == "- 1 set GREEN, worst replication lag 100ms (shard5 (replica set shard5), s5b:1)"


def test_the_grouping_takes_any_key_and_counts_what_it_does_not_name():
    pairs = [("gcp asia-northeast3", "a:1"), ("aws eu-west-1", "b:1"), ("gcp asia-northeast3", "c:1")]
    assert shared(pairs) == [("gcp asia-northeast3", ["a:1", "c:1"]), ("aws eu-west-1", ["b:1"])]
    assert names_words(["a"]) == "a"
    assert names_words(["a", "b"]) == "a and b"
    assert names_words(["a", "b", "c"]) == "a, b and c"
    assert names_words(["a", "b", "c", "d"]) == "a, b, c and 1 more"
    assert names_words(["a", "b", "c"], total=100) == "a, b, c and 97 more"


# --- 3. Readable at a glance. ----------------------------------------------------------------------------------


def test_names_sort_naturally_in_the_document_and_on_the_page():
    sets = [
        (shard(n), snapshot(primary(f"s{n}a:1"), member(f"s{n}b:1", DOWN, None, healthy=False), set_name=f"shard{n}"))
        for n in (10, 2, 1)
    ]
    store, _ = cluster_store(*sets)
    view = store.view()
    lines = action_body(view).splitlines()
    assert lines[1].startswith("- RED: DOWN: 3 members in 3 shards: shard1, shard2 and shard10 (")
    assert [line.split(" (")[0] for line in lines if line.startswith("### ")] == [
        "### shard1",
        "### shard2",
        "### shard10",
    ]
    page = render_status_page(view, document_path=bridge.PATH)
    assert page.index('href="#set-shard1"') < page.index('href="#set-shard2"') < page.index('href="#set-shard10"')


def test_a_set_whose_member_is_down_never_reads_worst_lag_0ms():
    down = snapshot(primary(), member("db1:27017", lag_ms=0), member("db3:27017", DOWN, None, healthy=False))
    assert action_body(view_of(down)).splitlines()[0] == "RED: replica set rs0, 3 members: 1 member DOWN"
    store, _ = cluster_store((shard(1), down))
    page = render_status_page(store.view(), document_path=bridge.PATH)
    row = next(row for row in page.split("<tr>") if 'href="#set-shard1"' in row)
    assert '<td class="num">1 DOWN</td>' in row
    assert "0ms" not in row


def test_every_problem_says_since_when_and_the_set_heading_how_long():
    down = snapshot(primary("s1a:1"), member("s1b:1", DOWN, None, healthy=False), set_name="shard1")
    store, _ = cluster_store((shard(1), down), polls=9, step_s=60)
    view = store.view()
    lines = action_body(view).splitlines()
    assert lines[1] == "- RED: DOWN: 1 member in 1 shard: shard1 (for 8 min, since 23:06 UTC)"
    assert lines[2] == "### shard1 (replica set shard1): RED for 8 min, since 23:06 UTC"
    page = render_status_page(view, document_path=bridge.PATH)
    assert "RED: DOWN: 1 member in 1 shard: shard1 (for 8 min, since 23:06 UTC)</li>" in page
    assert "shard1 (replica set shard1): RED for 8 min, since 23:06 UTC</h3>" in page


def test_a_problem_that_ends_and_comes_back_starts_its_clock_again():
    lagging = snapshot(primary("s1a:1"), member("s1b:1", lag_ms=40_000), set_name="shard1")
    fine = snapshot(primary("s1a:1"), member("s1b:1", lag_ms=10), set_name="shard1")
    store, clock = cluster_store((shard(1), lagging), polls=5)

    def publish(result):
        store.publish(ClusterResult(ShardMap((shard(1),), "getShardMap", True), None, ((shard(1), result),)), 0.1)

    clock.advance(60)
    publish(fine)
    clock.advance(60)
    publish(lagging)
    clock.advance(60)
    publish(lagging)
    assert "(for 1 min, since 23:12 UTC)" in action_body(store.view()).splitlines()[1]


def test_the_page_opens_with_the_documents_summary_and_folds_every_green_set():
    sets = [
        (shard(1), snapshot(primary("s1a:1"), member("s1b:1", lag_ms=45_000), set_name="shard1")),
        (shard(2), snapshot(primary("s2a:1"), member("s2b:1", lag_ms=10), set_name="shard2")),
    ]
    store, _ = cluster_store(*sets)
    view = store.view()
    page = render_status_page(view, document_path=bridge.PATH)
    verdict = action_body(view).splitlines()[0]
    assert f'<p class="verdict">{verdict}</p>' in page
    assert page.index('class="verdict"') < page.index('class="summary"') < page.index("<table>")
    assert page.count("<details>") == 1  # shard2, GREEN, in a cluster of two
    assert "<details><summary>shard2 (replica set shard2): GREEN</summary>" in page


# --- 4. Nothing a server says can forge a line. ------------------------------------------------------------------

FORGED = "\n- Primary fake:1 replication lag 0ms"


def hostile(status, config):
    """A server that says what it likes: a set name, a heartbeat message and a state name that try to start lines
    of their own, with Markdown, HTML, a right-to-left override, a zero-width space and 2 MB of text."""
    status["set"] = config["config"]["_id"] = "rs0" + FORGED
    status["members"][3]["lastHeartbeatMessage"] = (
        "refused" + FORGED + " **bold** [link](http://x) <script>alert(1)</script> \u202e \u200b" + "x" * 2_000_000
    )
    status["members"][4]["stateStr"] = "RECOVERING" + FORGED + "\r\n### shard0: GREEN"


def test_a_hostile_server_cannot_forge_a_line_in_the_document_the_page_or_the_log(caplog):
    hostile_snapshot = engine_snapshot(edit=hostile)
    body = action_body(view_of(hostile_snapshot))
    assert_bounded(body)
    assert not any(line.startswith("- Primary fake") for line in body.splitlines())
    assert [line for line in body.splitlines() if line.startswith("- Primary ")] == [
        "- Primary db0.example.net:27017 replication lag 0ms"
    ]
    assert "### shard0" not in [line[:10] for line in body.splitlines()]
    for unsafe in UNSAFE:
        assert unsafe not in body.replace("\n", ""), unsafe
    assert r"\*\*bold\*\*" in body and r"\[link\](http://x)" in body and r"\<script\>" in body

    page = render_status_page(view_of(hostile_snapshot), document_path=bridge.PATH)
    for unsafe in ("\u202e", "\u200b", "<script>", FORGED):
        assert unsafe not in page, unsafe
    assert len(page) < 200_000  # 2 MB of message do not reach the page either

    caplog.set_level(logging.DEBUG, logger="replicationlag.poller")
    store, _ = make_store()
    Poller(lambda: hostile_snapshot, store, timeout_s=5).poll()
    messages = [record.getMessage() for record in caplog.records]
    assert messages
    for message in messages:
        assert "\n" not in message and "\u202e" not in message and len(message) < 3_000, message


def test_hostile_shard_ids_and_set_names_stay_inside_their_own_line():
    sets = [
        (
            shard(1, name="shard1" + FORGED),
            snapshot(primary("s1a:1"), member("s1b:1", DOWN, None, healthy=False), set_name="shard1" + FORGED),
        ),
        (
            shard(2, name="**x**\u202e"),
            snapshot(primary("s2a:1"), member("s2b:1", lag_ms=31_000), set_name="**x**\u202e"),
        ),
    ]
    store, _ = cluster_store(*sets)
    view = store.view()
    body = action_body(view)
    assert_bounded(body)
    assert not any(line.startswith("- Primary fake") for line in body.splitlines())
    assert r"### \*\*x\*\*" in body
    assert "\u202e" not in body
    page = render_status_page(view, document_path=bridge.PATH)
    assert "\u202e" not in page and "<script>" not in page


@pytest.mark.parametrize("kind", ["auth", "timeout"])
def test_a_failure_message_is_neutral_too(kind):
    body = action_body(view_of(failure(kind, "no" + FORGED + " <b>" + "y" * 5_000)))
    assert_bounded(body)
    assert body.splitlines()[1].startswith(
        f"- RED: collection failed ({kind}): no\ufffd- Primary fake:1 replication lag 0ms \\<b\\>y"
    )


def test_the_external_url_is_where_the_document_says_to_see_everything():
    view = view_of(snapshot(primary(), member("db1:27017", lag_ms=5)), age_s=0)
    assert action_body(view, URL).splitlines()[-1] == f"- All members: <{URL}>"
    assert action_body(view).splitlines()[-1] == "- All members: the status page at / of this exporter"
    assert bridge.status_document(view, URL)[bridge.SERVICE_ID]["timestamp"] == COLLECTED_AT_MS


def test_a_config_servers_set_is_named_as_such():
    config = shard(9, name="config", role=SetRole.CONFIG)
    down = snapshot(primary("c1:1"), member("c2:1", DOWN, None, healthy=False), set_name="configRepl")
    store, _ = cluster_store((shard(1), snapshot(primary("s1a:1"), set_name="shard1")), (config, down))
    lines = action_body(store.view()).splitlines()
    assert lines[1].startswith("- RED: DOWN: 1 member in 1 set: config servers (")


def test_the_shard_map_and_so_the_metrics_list_shards_in_natural_order():
    reply = {"map": {f"shard{n}": f"shard{n}/s{n}a:27018,s{n}b:27018" for n in (10, 2, 1)} | {"config": "cfg/c1:27019"}}
    shard_map = from_shard_map(reply)
    assert [s.shard_id for s in shard_map.sets] == ["shard1", "shard2", "shard10", "config"]
    results = tuple(
        (address, snapshot(primary(f"{address.name}a:1"), set_name=address.name)) for address in shard_map.sets
    )
    store = SnapshotStore("clusterKeeper", 60)
    store.publish(ClusterResult(shard_map, None, results), 0.1)
    exposition = generate_latest(build_registry(store)).decode()
    order = re.findall(r'mongodb_replication_status\{infra="clusterKeeper",set="([^"]+)"\}', exposition)
    assert order == ["shard1", "shard2", "shard10", "cfg"]
