"""Every endpoint in every state, driven in-process through WSGI, and end to end through the real server."""

from __future__ import annotations

import errno
import gc
import html
import http.client
import io
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from wsgiref.headers import Headers
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest
from service_util import headline_colour, read_line_matching
from view_factory import COLLECTED_AT_MS, failure, healthy_set, make_store, member, primary, snapshot

import bridge
from bridge import SERVICE_ID, status_document
from replicationlag.metrics import build_registry
from replicationlag.model import ARBITER, FRESHNESS_LIMIT_S, SECONDARY
from replicationlag.web import app as web
from replicationlag.web import charts as charts_module
from replicationlag.web import server as httpserver

ROOT = Path(__file__).resolve().parent.parent
ZP = "/mhp.zeroproblem.mongo.replcationlag"
DOWN = 8


@dataclass
class Answer:
    status: int
    headers: Headers
    body: bytes

    def json(self) -> dict:
        assert self.headers["Content-Type"] == "application/json"
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def call(
    app,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    validate: bool = True,
    errors: io.StringIO | None = None,
) -> Answer:
    """A tiny WSGI client: one request, through wsgiref's validator (so the app must follow PEP 3333) unless
    the test sends what a validating server would never pass on."""
    environ = {"REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": ""}
    environ["wsgi.input"] = io.BytesIO(body)
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_LENGTH", "CONTENT_TYPE") else "HTTP_" + key] = value
    setup_testing_defaults(environ)
    environ["wsgi.errors"] = errors or io.StringIO()  # the server log: where a traceback may go, never to the client
    started = {}

    def start_response(status, response_headers, exc_info=None):
        started["status"], started["headers"] = status, response_headers

    chunks = (validator(app) if validate else app)(environ, start_response)
    try:
        data = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return Answer(int(started["status"].split()[0]), Headers(started["headers"]), data)


def app_of(*results, age_s: float = 0.0, max_body_bytes: int = web.DEFAULT_MAX_BODY_BYTES):
    """The app over a real store that published `results`, `age_s` seconds ago."""
    store, clock = make_store(*results)
    clock.advance(age_s)
    return web.create_app(store, build_registry(store), bridge, max_body_bytes=max_body_bytes), store


STATES = {
    "green 4 999 ms": ((healthy_set(4_999),), 0, "GREEN", 200),
    "yellow 5 000 ms": ((healthy_set(5_000),), 0, "YELLOW", 200),
    "yellow 29 999 ms": ((healthy_set(29_999),), 0, "YELLOW", 200),
    "red 30 000 ms": ((healthy_set(30_000),), 0, "RED", 200),
    "member down": ((snapshot(primary(), member("db3:27017", DOWN, None, healthy=False)),), 0, "RED", 200),
    "no primary": ((snapshot(member("db1:27017"), member("db2:27017", lag_ms=6_316)),), 0, "RED", 200),
    "arbiter": ((snapshot(primary(), member("db1:27017"), member("arb:27017", ARBITER, None)),), 0, "GREEN", 200),
    "delayed member": (
        (snapshot(primary(), member("db2:27017", lag_ms=429, hidden=True, delay_ms=3_600_000)),),
        0,
        "GREEN",
        200,
    ),
    "auth failure": ((failure("auth"),), 0, "RED", 503),
    "not a replica set": ((failure("not_replica_set", "db0:27017 is not a replica set member"),), 0, "RED", 503),
    "stale by 1 ms": ((healthy_set(0),), FRESHNESS_LIMIT_S + 0.001, "RED", 503),
    "fresh by 1 ms": ((healthy_set(0),), FRESHNESS_LIMIT_S - 0.001, "GREEN", 200),
    "before the first poll": ((), 0, "RED", 503),
}


@pytest.mark.parametrize("state", STATES)
def test_the_zero_problem_put_answers_the_status_document_in_every_state(state):
    results, age_s, status, _ = STATES[state]
    app, store = app_of(*results, age_s=age_s)

    answer = call(app, "PUT", ZP, body=b'{"ask": "status"}', headers={"Content-Type": "application/json"})

    assert answer.status == 200
    assert answer.json() == status_document(store.view())
    assert answer.json()[SERVICE_ID]["status"] == status
    assert len(answer.json()[SERVICE_ID]["messages"]) == 1


@pytest.mark.parametrize("state", STATES)
def test_liveness_answers_200_or_503_with_reasons_in_every_state(state):
    results, age_s, _, http_status = STATES[state]
    app, _ = app_of(*results, age_s=age_s)

    answer = call(app, "GET", "/liveness")

    assert answer.status == http_status
    assert answer.json()["status"] == ("ok" if http_status == 200 else "failing")
    assert bool(answer.json().get("reasons")) == (http_status == 503)


@pytest.mark.parametrize("state", STATES)
def test_healthy_answers_200_in_every_state_even_when_liveness_fails(state):
    """The orchestrator's liveness: a pod whose cluster is unreachable must not be restarted for it."""
    results, age_s, _, _ = STATES[state]
    app, _ = app_of(*results, age_s=age_s)

    answer = call(app, "GET", "/-/healthy")

    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.text == "replicationlag is healthy.\n"


@pytest.mark.parametrize("state", STATES)
def test_ready_answers_503_until_the_first_poll_ends_then_200_whatever_it_found(state):
    results, age_s, _, _ = STATES[state]
    app, _ = app_of(*results, age_s=age_s)

    answer = call(app, "GET", "/-/ready")

    if results:  # one poll ended: a failure, stale data or a RED cluster are still worth serving
        assert (answer.status, answer.text) == (200, "replicationlag is ready.\n")
    else:
        assert answer.status == 503
        assert answer.text == "replicationlag is not ready: the first poll has not ended.\n"
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_ready_turns_200_when_the_first_poll_ends_even_if_it_failed():
    app, store = app_of()
    assert call(app, "GET", "/-/ready").status == 503
    assert call(app, "GET", "/liveness").status == 503

    store.publish(failure("unreachable", "no member of the set answered"), duration_s=10.0)

    assert call(app, "GET", "/-/ready").status == 200
    assert call(app, "GET", "/-/healthy").status == 200
    assert call(app, "GET", "/liveness").status == 503  # Zero Problem's answer is unchanged


@pytest.mark.parametrize("state", STATES)
def test_the_status_page_shows_the_cluster_status_in_its_colour_in_every_state(state):
    results, age_s, status, _ = STATES[state]
    app, _ = app_of(*results, age_s=age_s)

    answer = call(app, "GET", "/")

    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert headline_colour(answer.text) == status  # each member's row has a coloured span too
    assert "<script" not in answer.text.lower()


# What the engine says of each set that is not GREEN, as the page must show it (word for word, escaped once).
ENGINE_REASONS = {
    "green 4 999 ms": [],
    "yellow 5 000 ms": ["db1:27017: 5000 ms behind the primary"],
    "yellow 29 999 ms": ["db1:27017: 29999 ms behind the primary"],
    "red 30 000 ms": ["db1:27017: 30000 ms behind the primary"],
    "member down": ["db3:27017: DOWN: not reachable"],
    "no primary": ["no primary", "db2:27017: 6316 ms behind the freshest member db1:27017"],
    "arbiter": [],
    "delayed member": [],
}


@pytest.mark.parametrize("state", ENGINE_REASONS)
def test_the_status_page_says_why_a_set_is_not_green_in_the_engines_words(state):
    results, age_s, _, _ = STATES[state]
    app, _ = app_of(*results, age_s=age_s)

    page = call(app, "GET", "/").text

    # Each member's reason is the last cell of its row; the set's own ("no primary") is a line of the summary.
    why = {
        name: html.unescape(cell)
        for name, cell in re.findall(r"<tr><td>([^<]+)</td>(?:<td[^>]*>.*?</td>)*?<td>([^<]*)</td></tr>", page)
    }
    said = []
    for reason in ENGINE_REASONS[state]:
        name, colon, _ = reason.partition(": ")
        if colon and name in why:
            said.append(f"{name}: {why[name]}")
        elif re.search(rf'<li class="problem">RED: {re.escape(reason)} \(since', page):
            said.append(reason)
    assert said == ENGINE_REASONS[state]
    assert [f"{n}: {w}" for n, w in why.items() if w] == [r for r in ENGINE_REASONS[state] if r != "no primary"]


@pytest.mark.parametrize("state", STATES)
def test_metrics_are_served_in_every_state(state):
    results, age_s, status, _ = STATES[state]
    app, _ = app_of(*results, age_s=age_s)

    answer = call(app, "GET", "/metrics")

    assert answer.status == 200
    status_value = {"GREEN": 0, "YELLOW": 1, "RED": 2}[status]
    assert re.search(rf"^mongodb_replication_status\{{[^}}]*\}} {status_value}\.0$", answer.text, re.M)


def test_get_on_the_zero_problem_path_answers_the_same_document_as_put():
    app, _ = app_of(healthy_set(1_239))

    assert call(app, "GET", ZP).json() == call(app, "PUT", ZP).json()


def test_a_put_body_is_ignored_and_changes_nothing():
    app, store = app_of(healthy_set(1_239))
    before = store.view()

    answer = call(app, "PUT", ZP, body=b'{"mhp.zeroproblem.mongo.replcationlag": {"status": "GREEN"}}')

    assert answer.status == 200
    assert store.view() == before
    assert call(app, "GET", ZP).json() == status_document(before)


def test_a_put_body_at_the_size_limit_is_accepted_and_one_byte_more_is_413():
    app, store = app_of(healthy_set(0), max_body_bytes=1_000)

    assert call(app, "PUT", ZP, body=b"x" * 1_000).status == 200
    too_big = call(app, "PUT", ZP, body=b"x" * 1_001)

    assert too_big.status == 413
    assert too_big.json() == {
        "error": "request entity too large",
        "status": 413,
        "detail": "request body larger than 1000 bytes",
    }
    assert store.view().polls == 1


def test_a_content_length_that_is_not_a_number_is_a_400():
    app, _ = app_of(healthy_set(0))

    answer = call(app, "PUT", ZP, headers={"Content-Length": "ten"}, validate=False)

    assert answer.status == 400
    assert answer.json()["detail"] == "Content-Length must be a number of bytes"


def test_the_document_follows_the_store_between_requests():
    store, clock = make_store(healthy_set(0))
    app = web.create_app(store, build_registry(store), bridge)
    assert call(app, "PUT", ZP).json()[SERVICE_ID]["status"] == "GREEN"

    store.publish(healthy_set(5_000), duration_s=0.01)
    assert call(app, "PUT", ZP).json()[SERVICE_ID]["status"] == "YELLOW"

    clock.advance(FRESHNESS_LIMIT_S + 0.001)
    assert call(app, "PUT", ZP).json()[SERVICE_ID]["status"] == "RED"
    assert call(app, "GET", "/liveness").status == 503


def test_stale_data_makes_liveness_503_and_says_how_old_it_is():
    app, _ = app_of(healthy_set(0), age_s=FRESHNESS_LIMIT_S + 0.001)

    answer = call(app, "GET", "/liveness")

    assert answer.status == 503
    assert answer.json()["reasons"] == ["the last successful collection is 180 s old (limit 180 s)"]
    assert answer.json()["last_success_age_s"] == 180.001


def test_a_set_without_primary_is_red_but_alive():
    app, _ = app_of(snapshot(member("db1:27017", SECONDARY), member("db2:27017", SECONDARY)))

    assert call(app, "GET", ZP).json()[SERVICE_ID]["status"] == "RED"
    assert call(app, "GET", "/liveness").status == 200


def test_metrics_default_to_prometheus_text_and_follow_the_accept_header():
    app, _ = app_of(healthy_set(1_239))

    text = call(app, "GET", "/metrics")
    openmetrics = call(app, "GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})

    assert text.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert 'mongodb_replication_lag_seconds{infra="clusterKeeper",member="db1:27017",set="rs0"} 1.239' in text.text
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert openmetrics.text.endswith("# EOF\n")


def test_metrics_answers_say_that_they_vary_with_accept_so_caches_keep_them_apart():
    """Issue 17 item 10: /metrics chose its format by Accept but sent no `Vary: Accept`."""
    app, _ = app_of(healthy_set(1_239))
    for headers in ({}, {"Accept": "application/openmetrics-text; version=1.0.0"}):
        for method in ("GET", "HEAD"):
            assert call(app, method, "/metrics", headers=headers).headers["Vary"] == "Accept"


OPENMETRICS_1 = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("application/openmetrics-text; version=1.5.0", TEXT_0_0_4),
        ("application/openmetrics-text; version=2.0.0", TEXT_0_0_4),
        ("application/openmetrics-text; version=2.0.0, application/openmetrics-text; q=0.5", OPENMETRICS_1),
        ("application/openmetrics-text; version=1.0.0; escaping=allow-utf-8", OPENMETRICS_1),
        ("application/openmetrics-text; version=1.0.0; escaping=dots", OPENMETRICS_1),
        ("application/openmetrics-text", OPENMETRICS_1),
        ("text/plain; version=1.0.0; escaping=allow-utf-8", TEXT_0_0_4),
        ("text/plain; version=0.0.4", TEXT_0_0_4),
    ],
)
def test_metrics_answers_name_the_format_written_never_the_version_asked(accept, content_type):
    """Issue 22 item 2: `version=1.5.0` was answered `Content-Type: ...; version=1.5.0` (a format we do not write)."""
    app, _ = app_of(healthy_set(1_239))

    answer = call(app, "GET", "/metrics", headers={"Accept": accept})

    assert answer.status == 200
    assert answer.headers["Content-Type"] == content_type
    assert answer.text.endswith("# EOF\n") is (content_type == OPENMETRICS_1)
    assert 'member="db1:27017",set="rs0"} 1.239' in answer.text


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text; version=abc",
        "application/openmetrics-text; version=1.x",
        "application/openmetrics-text; version=",
        "application/openmetrics-text; version",
        "text/plain; version=abc",
        "text/plain; version=1.x.0; escaping=nonsense",
        "application/openmetrics-text;;;version==1;q=",
        ",,;,",
    ],
)
def test_a_malformed_accept_gets_an_ordinary_answer_and_no_traceback(accept):
    """Issue 22 item 3: `version=abc` answered 500 and wrote a 25-line traceback into the log."""
    app, _ = app_of(healthy_set(1_239))
    environ_errors = io.StringIO()

    answer = call(app, "GET", "/metrics", headers={"Accept": accept}, errors=environ_errors)

    assert answer.status == 200
    assert answer.headers["Content-Type"] in (TEXT_0_0_4, OPENMETRICS_1)
    assert environ_errors.getvalue() == ""


def test_1500_distinct_accept_versions_keep_no_copy_each():
    """Issue 22 item 2: each distinct OpenMetrics version= kept another rendered copy of /metrics (the demo grew
    from 45 to 90 MB in 1 500 requests). Bound: what two formats' copies and the app's own caches take (measured:
    well under 1 MiB here, where a copy per version would be several)."""
    app, _ = app_of(healthy_set(1_239))
    for accept in ("", "application/openmetrics-text"):  # warm: both formats rendered once, imports done
        call(app, "GET", "/metrics", headers={"Accept": accept})
    copy_bytes = len(call(app, "GET", "/metrics", headers={"Accept": "application/openmetrics-text"}).body)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for n in range(1_500):
            call(app, "GET", "/metrics", headers={"Accept": f"application/openmetrics-text; version=1.{n}.0"})
        gc.collect()
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()

    assert grown < max(256 * 1024, 20 * copy_bytes), (grown, copy_bytes)


def test_the_status_page_lists_every_member_with_role_state_lag_delay_and_reason():
    app, _ = app_of(
        snapshot(
            primary(),
            member("db1:27017", lag_ms=1_239),
            member("db2:27017", lag_ms=429, hidden=True, delay_ms=3_600_000),
            member("db3:27017", DOWN, None, healthy=False),
            member("arb:27017", ARBITER, None),
        )
    )

    page = call(app, "GET", "/").text

    rows = re.findall(r"<tr>(.*?)</tr>", page)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows[1:]]
    assert [c[0] for c in cells] == ["db0:27017", "db1:27017", "db2:27017", "db3:27017", "arb:27017"]
    assert cells[1][1:3] + cells[1][4:6] == ["Secondary", "SECONDARY", "1239ms", "-"]
    assert cells[2][1] == "Secondary (hidden)"
    assert cells[2][4:6] == ["429ms (raw 3600429ms)", "3600s"]
    assert cells[3][2] == "DOWN (unhealthy)"
    assert cells[3][-1] == "DOWN: not reachable"  # the last column: why, and where it goes
    assert cells[4][1] == "Arbiter"


def test_the_status_page_refreshes_itself_links_the_other_endpoints_and_shows_the_data_age():
    app, _ = app_of(healthy_set(0), age_s=42)

    page = call(app, "GET", "/").text

    assert '<meta http-equiv="refresh" content="30">' in page
    for link in ("/metrics", "/liveness", ZP):
        assert f'href="{link}"' in page
    assert "Data collected 2024-08-15T23:06:14.512+00:00 (42 s ago)" in page
    assert "Polled every 60 s." in page


def test_the_status_page_says_why_it_is_red_when_the_collection_failed_and_marks_the_last_known_members():
    app, _ = app_of(healthy_set(0), failure())

    page = call(app, "GET", "/").text

    assert headline_colour(page) == "RED"  # the name says it: RED, and why
    assert "RED: collection failed (auth): authentication failed for user &#x27;monitor&#x27; (since " in page
    assert "Last known members (not current)" in page


def test_the_status_page_before_the_first_poll_says_so():
    app, _ = app_of()

    assert '<p class="verdict">RED: no collection has finished yet</p>' in call(app, "GET", "/").text


def test_the_status_page_escapes_every_text_it_did_not_write():
    hostile = "<script>alert(1)</script>:27017"
    app, _ = app_of(snapshot(primary(), member(hostile, DOWN, None, healthy=False, reason="<b>&")))

    page = call(app, "GET", "/").text

    assert "<script>" not in page and "<b>&" not in page
    # Neutral for Markdown as in the document (text.neutral), then HTML-escaped.
    assert r"\&lt;script\&gt;alert(1)\&lt;/script\&gt;:27017" in page
    assert r"\&lt;b\&gt;\&amp;" in page


@pytest.mark.parametrize("path", ["/", "/metrics", "/liveness", "/-/healthy", "/-/ready", ZP])
def test_head_answers_the_get_headers_without_a_body(path):
    app, _ = app_of(healthy_set(0))

    head, get = call(app, "HEAD", path), call(app, "GET", path)

    assert head.status == get.status == 200
    assert head.body == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert head.headers["Content-Length"] == str(len(get.body))


def test_an_unknown_path_is_a_small_json_404():
    app, _ = app_of(healthy_set(0))

    answer = call(app, "GET", "/admin/../etc/passwd")

    assert answer.status == 404
    assert answer.json() == {"error": "not found", "status": 404}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/metrics", "GET,HEAD"),
        ("DELETE", ZP, "GET,HEAD,PUT"),
        ("PUT", "/liveness", "GET,HEAD"),
        ("POST", "/-/healthy", "GET,HEAD"),
        ("PUT", "/-/ready", "GET,HEAD"),
    ],
)
def test_a_wrong_method_is_a_405_that_says_which_methods_are_allowed(method, path, allowed):
    app, store = app_of(healthy_set(0))

    answer = call(app, method, path, body=b"{}")

    assert answer.status == 405
    assert answer.headers["Allow"] == allowed
    assert answer.json() == {"error": "method not allowed", "status": 405}
    assert store.view().polls == 1


class ExplodingRegistry:
    """Mimics a prometheus_client registry whose collector raises, with a credential in the exception text."""

    def collect(self):
        raise RuntimeError("cannot reach mongodb://monitor:s3cret@db0:27017 (Traceback follows)")


def test_an_internal_error_is_a_json_500_without_stack_trace_or_credentials():
    store, _ = make_store(healthy_set(0))
    app = web.create_app(store, ExplodingRegistry(), bridge)

    answer = call(app, "GET", "/metrics")

    assert answer.status == 500
    assert answer.json() == {"error": "internal server error", "status": 500}
    assert b"s3cret" not in answer.body and b"Traceback" not in answer.body


def test_every_answer_forbids_caching_and_content_sniffing():
    app, _ = app_of(healthy_set(0))

    for answer in (call(app, "GET", "/"), call(app, "PUT", ZP), call(app, "GET", "/nope")):
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


# --- End to end through the real threaded server ---------------------------------------------------------------


@pytest.fixture
def server():
    """The real waitress server on an ephemeral port, with ONE worker thread so that any blocking shows."""
    store, _ = make_store(healthy_set(1_239))
    app = web.create_app(store, build_registry(store), bridge, max_body_bytes=1_000)
    running = httpserver.serve(app, "127.0.0.1", 0, threads=1, max_body_bytes=1_000)
    yield running
    running.close()


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def test_the_real_server_answers_every_endpoint_and_sends_no_version_banner(server):
    for method, path, body in [
        ("PUT", ZP, b"{}"),
        ("GET", "/liveness", None),
        ("GET", "/metrics", None),
        ("GET", "/", None),
    ]:
        status, headers, data = request(server, method, path, body)

        assert status == 200, path
        assert headers["Server"] == "replicationlag"
        assert not re.search(r"\d", headers["Server"])
        assert data


def test_the_real_server_refuses_an_oversized_body_with_413(server):
    status, _, data = request(server, "PUT", ZP, body=b"x" * 1_001)

    assert status == 413
    assert b"Traceback" not in data


def test_the_real_server_answers_a_malformed_request_with_400_and_no_details(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"NONSENSE\r\n\r\n")
        reply = raw.recv(4096)

    assert reply.startswith(b"HTTP/1.0 400 Bad Request")
    assert b"waitress" not in reply.lower()
    assert b"Traceback" not in reply


def test_a_slow_client_that_dribbles_headers_does_not_delay_another_request(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Dribble: ")
        slow.sendall(b"a")

        status, _, data = request(server, "PUT", ZP, b"{}")

        assert status == 200
        assert json.loads(data)[SERVICE_ID]["status"] == "GREEN"
        slow.sendall(b"b\r\n\r\n")
        assert slow.recv(4096).startswith(b"HTTP/1.1 200 OK")


def test_a_port_in_use_is_reported_before_anything_runs():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        store, _ = make_store()
        threads_before = threading.active_count()

        with pytest.raises(OSError) as refused:
            httpserver.Server(web.create_app(store, build_registry(store), bridge), "127.0.0.1", taken.getsockname()[1])

    assert refused.value.errno == errno.EADDRINUSE
    assert threading.active_count() == threads_before


def test_close_stops_the_server_promptly_even_with_a_client_connected():
    store, _ = make_store(healthy_set(0))
    running = httpserver.serve(web.create_app(store, build_registry(store), bridge), "127.0.0.1", 0)
    assert request(running, "GET", "/liveness")[0] == 200
    idle = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    idle.sendall(b"GET / HTTP/1.1\r\n")

    closer = threading.Thread(target=running.close)
    closer.start()
    closer.join(timeout=10)

    assert not closer.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", running.port), timeout=10)
    idle.close()


def test_a_server_on_port_0_reports_the_port_it_got():
    store, _ = make_store(healthy_set(0))
    running = httpserver.Server(web.create_app(store, build_registry(store), bridge), "127.0.0.1", 0)
    try:
        worker = threading.Thread(target=running.run, daemon=True)
        worker.start()

        assert running.port > 0
        assert running.addresses == [("127.0.0.1", running.port)]
        assert request(running, "GET", "/liveness")[0] == 200
    finally:
        running.close()
    worker.join(timeout=10)
    assert not worker.is_alive()


# --- Where the exporter listens (issue 15.4) ---------------------------------------------------------------------


def _start_exporter(listen: str) -> tuple[subprocess.Popen, str]:
    """exporter.py on the demo set at `listen`; returns it and its "serving ..." log line (read with a deadline)."""
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "exporter.py"), "--demo", "--web.listen-address", listen],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = read_line_matching(child.stderr, "serving ", 30).string
    except AssertionError:
        child.kill()
        raise
    # Keep reading what it logs, so that a full pipe can never block it (on its "stopping" line, say).
    threading.Thread(target=child.stderr.read, daemon=True).start()
    return child, line


def _stop(child: subprocess.Popen) -> None:
    """SIGTERM, and a kill if it is still there after a generous wait: these tests are about listening, and a
    process left behind would hold its port for the rest of the run (stopping promptly is test_exporter_process's)."""
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=10)
        raise


def _get(host: str, port: int) -> int:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", "/liveness")
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.slow
def test_an_empty_listen_host_serves_ipv4_and_ipv6_and_the_log_names_both():
    child, line = _start_exporter(":0")
    try:
        port = int(re.search(r"serving http://\S+:(\d+)/", line).group(1))

        assert _get("127.0.0.1", port) in (200, 503)
        assert _get("::1", port) in (200, 503)
        assert f"serving http://0.0.0.0:{port}/ and http://[::]:{port}/ " in line
    finally:
        _stop(child)


@pytest.mark.slow
def test_an_ipv6_listen_address_is_logged_in_brackets():
    child, line = _start_exporter("[::1]:0")
    try:
        port = int(re.search(r"serving http://\[::1\]:(\d+)/ ", line).group(1))

        assert _get("::1", port) in (200, 503)
    finally:
        _stop(child)


def test_a_server_on_an_empty_host_listens_on_ipv4_and_ipv6_with_one_port():
    store, _ = make_store(healthy_set(0))
    running = httpserver.serve(web.create_app(store, build_registry(store), bridge), "", 0)
    try:
        assert running.addresses == [("0.0.0.0", running.port), ("::", running.port)]
        assert running.urls == [f"http://0.0.0.0:{running.port}/", f"http://[::]:{running.port}/"]
        assert _get("127.0.0.1", running.port) == _get("::1", running.port) == 200
    finally:
        running.close()


def test_the_metrics_move_to_the_telemetry_path_and_the_page_links_there():
    store, _ = make_store(healthy_set(0))
    app = web.create_app(store, build_registry(store), bridge, metrics_path="/prometheus/metrics")

    moved = call(app, "GET", "/prometheus/metrics")
    assert moved.status == 200 and "mongodb_replication_up" in moved.text
    assert call(app, "GET", "/metrics").status == 404
    assert '<a href="/prometheus/metrics">/prometheus/metrics</a>' in call(app, "GET", "/").text


def test_the_routes_the_telemetry_path_may_not_take_are_the_apps_other_routes():
    from replicationlag.config import DEFAULT_TELEMETRY_PATH, OTHER_ROUTES

    store, _ = make_store()
    routes = {route.rule for route in web.create_app(store, build_registry(store), bridge).routes}
    assert routes - {DEFAULT_TELEMETRY_PATH} == set(OTHER_ROUTES)


class KernelWithoutIPv6(socket.socket):
    """A socket as a kernel without IPv6 gives it: booted with ipv6.disable=1, creating an AF_INET6 socket fails
    with EAFNOSUPPORT; with IPv6 turned off by sysctl, it is created but binding it fails with EADDRNOTAVAIL."""

    fails_at = "socket"  # or "bind"

    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        if family == socket.AF_INET6 and self.fails_at == "socket":
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        super().__init__(family, type, proto, fileno)

    def bind(self, address):
        if self.family == socket.AF_INET6 and self.fails_at == "bind":
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        return super().bind(address)


@pytest.mark.parametrize("fails_at", ["socket", "bind"])
def test_without_ipv6_an_empty_host_serves_ipv4_alone_and_an_ipv6_host_is_a_clear_error(monkeypatch, fails_at):
    monkeypatch.setattr(KernelWithoutIPv6, "fails_at", fails_at)
    monkeypatch.setattr(socket, "socket", KernelWithoutIPv6)
    store, _ = make_store(healthy_set(0))
    app = web.create_app(store, build_registry(store), bridge)

    running = httpserver.serve(app, "", 0)
    try:
        assert running.addresses == [("0.0.0.0", running.port)]
        assert running.urls == [f"http://0.0.0.0:{running.port}/"]
        assert _get("127.0.0.1", running.port) == 200
    finally:
        running.close()
    with pytest.raises(OSError) as refused:  # asked for by name: not skipped, the caller reports it
        httpserver.serve(app, "::1", 0)
    assert refused.value.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)


def _polylines(svg: str) -> list[list[tuple[float, float]]]:
    return [
        [tuple(map(float, point.split(","))) for point in found.split()]
        for found in re.findall(r'<polyline points="([^"]*)"', svg)
    ]


@pytest.mark.parametrize(
    ("minutes", "title", "axis"), [(10, "last 10 min (all kept so far)", "10 min ago"), (90, "last hour", "1 h ago")]
)
def test_a_history_chart_spends_its_width_on_the_data_there_is(minutes, title, axis):
    """An exporter started ten minutes ago draws ten minutes across the chart, not a sliver at the right of an
    hour; with more than an hour kept, the hour's chart is the last hour and the day's chart all there is."""
    store, clock = make_store()
    for i in range(minutes + 1):  # a poll a minute on the store's clock, the history's time axis
        clock.advance(60 if i else 0)
        poll = snapshot(
            primary(), member("db1:27017", lag_ms=1_000 + 100 * i), collected_at_ms=COLLECTED_AT_MS + i * 60_000
        )
        store.publish(poll, duration_s=0.042)
    page = call(web.create_app(store, build_registry(store), bridge), "GET", "/").text
    charts = re.findall(r"<svg .*?</svg>", page)
    assert len(charts) == (1 if minutes <= 60 else 2)
    assert f"rs0: replication lag, {title}</title>" in charts[0]
    assert f">{axis}</text>" in charts[0]
    xs = [x for line in _polylines(charts[0]) for x, _ in line]
    left, right = charts_module.LEFT, charts_module.WIDTH - charts_module.RIGHT
    assert min(xs) == pytest.approx(left, abs=0.1)  # the oldest point kept is at the left edge
    assert max(xs) == pytest.approx(right, abs=0.1)  # the newest at the right
    if minutes > 60:
        assert f"rs0: replication lag, last {minutes // 60} h {minutes % 60} min (all kept so far)</title>" in charts[1]


def test_a_charts_title_and_its_axis_say_the_same_span():
    """110 s kept: the title said "last 1 min" (floored) over an axis saying "2 min ago" (rounded)."""
    store, clock = make_store()
    for i in range(3):
        clock.advance(55 if i else 0)
        store.publish(healthy_set(1_000 + 100 * i), duration_s=0.042)
    page = call(web.create_app(store, build_registry(store), bridge), "GET", "/").text
    (chart,) = re.findall(r"<svg .*?</svg>", page)
    assert "replication lag, last 2 min (all kept so far)" in chart
    assert ">2 min ago</text>" in chart
