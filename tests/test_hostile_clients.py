"""Hostile and careless clients against the real threaded server on 127.0.0.1.

Idle and slow connections must not delay anyone, bad requests get small answers with the right status (400,
405, 413, 431), and none of them carries a stack trace or a server banner with a version. "Does not delay" is
enforced by client timeouts, never by measuring time. The burst test runs the server in a child process so that
its memory, threads and descriptors are the server's alone.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from http import HTTPStatus
from pathlib import Path

import pytest
from service_util import read_line, wait_until
from view_factory import healthy_set, make_store

import bridge
from replicationlag.metrics import build_registry
from replicationlag.web import app as web
from replicationlag.web import server as httpserver

pytestmark = pytest.mark.slow  # README "Tests": skipped by the quick run

ROOT = Path(__file__).resolve().parent.parent
ZP = "/mhp.zeroproblem.mongo.replcationlag"
MAX_BODY = 1_000
CLIENT_TIMEOUT_S = 5  # an answer later than this counts as delayed
IDLE_CONNECTIONS = 500


@pytest.fixture
def start_server() -> Iterator[Callable[..., httpserver.Server]]:
    """Starts the real server over a green set with a small body cap and these `Server` options; closes them all."""
    running: list[httpserver.Server] = []

    def start(registry: object = None, **options) -> httpserver.Server:
        store, _ = make_store(healthy_set(1_239))
        app = web.create_app(store, registry or build_registry(store), bridge, max_body_bytes=MAX_BODY)
        running.append(httpserver.serve(app, "127.0.0.1", 0, max_body_bytes=MAX_BODY, **options))
        return running[-1]

    yield start
    for server in running:
        server.close()


@pytest.fixture
def server(start_server) -> httpserver.Server:
    """Two workers: fewer than the hostile clients."""
    return start_server(threads=2)


@contextmanager
def connections(port: int, count: int, first_bytes: bytes = b"") -> Iterator[list[socket.socket]]:
    """`count` open connections to `port` that have sent `first_bytes`, closed on leaving."""
    with ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S))
            if first_bytes:
                sock.sendall(first_bytes)
            socks.append(sock)
        yield socks


@pytest.fixture
def many_descriptors() -> None:
    """This process holds both ends of every test connection: make sure it may open them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * IDLE_CONNECTIONS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def get(port: int, path: str = "/liveness") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes; a reset after its answer (it closed with our bytes unread) ends it too."""
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except ConnectionResetError:
        if not reply:
            raise
    return reply


def exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a fresh connection, half-close, and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S) as raw:
        raw.sendall(data)
        raw.shutdown(socket.SHUT_WR)
        return read_all(raw)


def assert_no_leak(reply: bytes) -> None:
    """No stack trace, no server software name or version anywhere in an answer."""
    head = reply.split(b"\r\n\r\n", 1)[0]
    servers = re.findall(rb"(?im)^server:\s*(.*?)\r?$", head)
    assert servers in ([], [b"replicationlag"])
    for word in (b"Traceback", b'File "', b"waitress", b"bottle", b"Python/", b"cheroot", b"WSGIServer"):
        assert word not in reply


# --- Idle and slow clients --------------------------------------------------------------------------------------


def test_500_idle_connections_do_not_delay_new_requests(server, many_descriptors):
    half = IDLE_CONNECTIONS // 2
    with (
        connections(server.port, half),
        connections(server.port, half, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),  # stopped mid-headers
    ):
        for path in ("/liveness", "/metrics", ZP, "/"):
            assert get(server.port, path)[0] == 200


def test_idle_connections_are_closed_by_the_server_after_the_channel_timeout(start_server):
    running = start_server(channel_timeout_s=1)
    with connections(running.port, 10) as idle, connections(running.port, 10, b"GET / HTTP/1.1\r\n") as unfinished:
        deadline = time.monotonic() + 30
        for sock in idle + unfinished:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            assert sock.recv(1) == b""  # the server closed it (a timeout here raises instead)


def test_clients_dribbling_their_headers_byte_by_byte_do_not_delay_others_and_are_answered(server):
    request = b"GET /liveness HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\nConnection: close\r\n\r\n"
    with connections(server.port, 20) as slow:
        for index in range(len(request)):
            for sock in slow:
                sock.sendall(request[index : index + 1])
            assert get(server.port)[0] == 200  # between every byte the slow ones send
        for sock in slow:
            assert read_all(sock).startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_client_that_never_reads_its_answers_does_not_hold_a_worker(start_server):
    running = start_server(threads=1)
    with connections(running.port, 1) as (greedy,):
        greedy.setblocking(False)
        pipeline = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 5_000  # megabytes of status pages, never read
        sent = 0
        while sent < len(pipeline):
            try:
                sent += greedy.send(pipeline[sent:])
            except BlockingIOError:
                break  # the server stopped reading it: its answers are queued, not a worker

        for path in ("/liveness", "/metrics"):
            assert get(running.port, path)[0] == 200


# --- Slowloris: connections that trickle into a request head that never ends (issue 22 item 5) ------------------


class Tricklers:
    """`count` connections per source address, each sending one byte of a request head that never ends every
    `every_s`; a connection the server closes is opened again at once, as the attack does. Counts the closes."""

    HEAD = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Trickle: "

    def __init__(self, port: int, sources: list[str], count: int, every_s: float = 0.5) -> None:
        self.port, self.sources, self.count, self.every_s = port, sources, count, every_s
        self.opened = self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tricklers", daemon=True)

    def _open(self, source: str) -> socket.socket | None:
        try:
            sock = socket.create_connection(
                ("127.0.0.1", self.port), timeout=CLIENT_TIMEOUT_S, source_address=(source, 0)
            )
            sock.sendall(self.HEAD)
            sock.setblocking(False)
            self.opened += 1
            return sock
        except OSError:
            return None  # not accepted yet: tried again at the next turn

    def _run(self) -> None:
        socks: dict[str, list[socket.socket]] = {source: [] for source in self.sources}
        try:
            while not self._stop.is_set():
                for source, held in socks.items():
                    for sock in list(held):
                        try:
                            sock.send(b"a")
                            if sock.recv(1024) == b"":
                                raise ConnectionResetError
                        except BlockingIOError:
                            continue  # nothing to read: still open
                        except OSError:
                            held.remove(sock)
                            sock.close()
                            self.closed_by_server += 1
                    while len(held) < self.count and not self._stop.is_set():
                        sock = self._open(source)
                        if sock is None:
                            break
                        held.append(sock)
                self._stop.wait(self.every_s)
        finally:
            for held in socks.values():
                for sock in held:
                    sock.close()

    def __enter__(self) -> Tricklers:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def scrape(port: int) -> int:
    """One scrape as Prometheus makes it: a fresh connection, a whole request, a client timeout."""
    return get(port, "/metrics")[0]


def test_a_request_head_trickled_without_end_is_closed_at_its_deadline(start_server):
    """Issue 22 item 5: the idle timer restarted with each byte, so a head that never ends held its connection
    for ever. Here the deadline is 1 s (10 s by default); bytes keep coming every 0.1 s."""
    running = start_server(head_deadline_s=1.0)
    with socket.create_connection(("127.0.0.1", running.port), timeout=CLIENT_TIMEOUT_S) as sock:
        sock.sendall(Tricklers.HEAD)

        def closed_after_one_more_byte() -> bool:
            try:
                sock.sendall(b"a")
                readable, _, _ = select.select([sock], [], [], 0.1)
                return bool(readable) and sock.recv(1024) == b""
            except OSError:
                return True  # reset: the server closed it while we wrote

        wait_until(closed_after_one_more_byte, 30, "the server to close the trickling connection", 0)
    assert get(running.port)[0] == 200


def test_a_scraper_is_answered_while_trickling_connections_fill_the_connection_cap(start_server, many_descriptors):
    """Issue 22 item 5: 1 000 trickling connections reached the connection cap, and waitress stopped accepting:
    every scraper was shut out while they trickled. Here the cap is 40 (1 000 by default) and 60 connections
    from one address trickle: at the cap, the connection that has waited longest for its request is closed to
    let the new one in."""
    running = start_server(threads=2, connection_limit=40)
    with Tricklers(running.port, ["127.0.0.1"], 60) as tricklers:
        assert wait_for(lambda: tricklers.opened >= 60)  # 20 beyond the cap
        assert [scrape(running.port) for _ in range(5)] == [200] * 5
        assert wait_for(lambda: tricklers.closed_by_server >= 60)  # the flood pushes itself out, and goes on
        assert [scrape(running.port) for _ in range(5)] == [200] * 5
        assert running.guard.count() <= 40


def test_one_address_holds_at_most_its_share_and_a_scraper_from_another_is_answered(start_server, many_descriptors):
    """10 addresses trickle 20 connections each; each address may hold 5 (100 by default) and all together 30
    (1 000): a scraper from its own address is answered, and no address held more than its share."""
    running = start_server(threads=2, connection_limit=30, per_address_limit=5)
    sources = [f"127.0.3.{n}" for n in range(1, 11)]
    with Tricklers(running.port, sources, 20) as tricklers:
        assert wait_for(lambda: tricklers.opened >= 200)
        assert [scrape(running.port) for _ in range(5)] == [200] * 5
        assert wait_for(lambda: tricklers.closed_by_server >= 200)
        assert [scrape(running.port) for _ in range(5)] == [200] * 5
        assert max(running.guard.count(source) for source in sources) <= 5
        assert running.guard.count() <= 30


# --- Bad requests -----------------------------------------------------------------------------------------------

OVERSIZED = {
    "a declared body far over the cap": b"PUT "
    + ZP.encode()
    + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
    "a chunked body over the cap": b"PUT "
    + ZP.encode()
    + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7D0\r\n"
    + b"x" * 2_000
    + b"\r\n0\r\n\r\n",
    "a body one byte over the cap": b"PUT "
    + ZP.encode()
    + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n"
    + b"x" * 1001,
}

MALFORMED = {
    "a start line that is no request": b"NONSENSE\r\n\r\n",
    "a method with a bad character": b"G(T /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    "a lowercase method": b"get /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    "a header without colon": b"GET /metrics HTTP/1.1\r\nHost: x\r\nBroken header\r\n\r\n",
    "a space before the colon": b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",
    "a Content-Length that is no number": b"PUT "
    + ZP.encode()
    + b" HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n",
    "a negative Content-Length": b"PUT " + ZP.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "two Content-Lengths": b"PUT "
    + ZP.encode()
    + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "a chunk size that is no number": b"PUT "
    + ZP.encode()
    + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "binary junk": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
    "a path that is not UTF-8": b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
}

UNKNOWN_METHODS = {
    "FOO": b"FOO /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    "PATCH": b"PATCH " + ZP.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    "OPTIONS": b"OPTIONS /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    "TRACE": b"TRACE / HTTP/1.1\r\nHost: x\r\nX-Secret: echo-me\r\n\r\n",
    "DELETE": b"DELETE /liveness HTTP/1.1\r\nHost: x\r\n\r\n",
}

# Exactly the cap and no end of headers: the server has read every byte when it refuses, so it closes without a
# reset that could discard its answer before the client reads it.
_HEADERS_START = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: "
OVERSIZED_HEADERS = _HEADERS_START + b"a" * (64 * 1024 - len(_HEADERS_START))

BAD_REQUESTS = (
    [(name, raw, 413) for name, raw in OVERSIZED.items()]
    + [(name, raw, 400) for name, raw in MALFORMED.items()]
    + [(name, raw, 405) for name, raw in UNKNOWN_METHODS.items()]
    + [("headers of 64 KiB", OVERSIZED_HEADERS, 431)]
)


@pytest.mark.parametrize(
    ("raw", "status"), [(raw, status) for _, raw, status in BAD_REQUESTS], ids=[name for name, _, _ in BAD_REQUESTS]
)
def test_a_bad_request_gets_its_status_a_small_answer_and_no_stack_trace_or_banner(server, raw, status):
    reply = exchange(server.port, raw)

    assert re.match(rb"HTTP/1\.[01] (\d{3}) ", reply).group(1) == str(status).encode()
    assert len(reply) < 2_000
    assert_no_leak(reply)
    assert b"echo-me" not in reply
    assert b"GREEN" not in reply and b"mongodb_" not in reply
    assert_json_error(reply, status)


def assert_json_error(reply: bytes, status: int) -> None:
    """One error format, whoever wrote the answer (the app or the server): small JSON, no banner, no caching."""
    head, _, body = reply.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
    document = json.loads(body)
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert document["status"] == status
    assert document["error"] == HTTPStatus(status).phrase.lower()
    assert set(document) <= {"error", "status", "detail"}
    assert b"generated by" not in reply


def test_the_server_keeps_serving_after_every_bad_request(server):
    for _, raw, _ in BAD_REQUESTS:
        exchange(server.port, raw)

    assert get(server.port, "/metrics")[0] == 200


class ExplodingRegistry:
    """Mimics a prometheus_client registry whose collector raises, with a path and a credential in the text."""

    def collect(self):
        raise RuntimeError('File "/app/metrics.py", line 1: mongodb://monitor:s3cret@db0:27017')


def test_an_internal_error_through_the_real_server_is_a_json_500_without_stack_trace_or_banner(start_server):
    running = start_server(ExplodingRegistry())

    reply = exchange(running.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")

    assert reply.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1]) == {"error": "internal server error", "status": 500}
    assert_no_leak(reply)
    assert b"s3cret" not in reply


# --- A burst of 10 000 requests ---------------------------------------------------------------------------------

SERVER_SCRIPT = """
import sys
import bridge
from view_factory import healthy_set, make_store
from replicationlag.web import server as httpserver
from replicationlag.web import app as web
from replicationlag.metrics import build_registry
store, _ = make_store(healthy_set(1_239))
server = httpserver.Server(web.create_app(store, build_registry(store), bridge), "127.0.0.1", 0)
print(server.port, flush=True)
import threading
threading.Thread(target=server.run, daemon=True).start()
sys.stdin.read()  # until the test closes our stdin
server.close()
"""


def process_usage(pid: int) -> dict[str, int]:
    """Resident memory (KiB), threads and open descriptors of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        "rss_kib": int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)),
        "threads": int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1)),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def pipelined(port: int, path: str, count: int, batch: int = 50) -> Counter:
    """`count` keep-alive GETs of `path` on one connection, sent `batch` at a time; the statuses seen."""
    statuses: Counter = Counter()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S) as sock:
        buffer = b""
        for start in range(0, count, batch):
            wanted = min(batch, count - start)
            sock.sendall(request * wanted)
            while wanted:
                end = buffer.find(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: (\d+)", buffer[:end]) if end >= 0 else None
                if length is None or len(buffer) < end + 4 + int(length.group(1)):
                    chunk = sock.recv(262_144)
                    assert chunk, "the server closed a keep-alive connection"
                    buffer += chunk
                    continue
                statuses[int(buffer[9:12])] += 1
                buffer = buffer[end + 4 + int(length.group(1)) :]
                wanted -= 1
    return statuses


def burst(port: int, total: int) -> Counter:
    """`total` requests: 80 % pipelined on 8 keep-alive connections in parallel, 20 % each on a new connection."""
    fresh = total // 5
    per_connection = (total - fresh) // 8
    results: list[Counter] = []
    paths = ["/metrics", "/liveness", ZP, "/"] * 2

    def run(path: str) -> None:
        results.append(pipelined(port, path, per_connection))

    workers = [threading.Thread(target=run, args=(path,)) for path in paths]
    for worker in workers:
        worker.start()
    singles: Counter = Counter(get(port, "/liveness")[0] for _ in range(fresh))
    for worker in workers:
        worker.join()
    return sum(results, singles)


def wait_for(condition, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_burst_of_10000_requests_leaves_memory_threads_and_descriptors_where_they_were():
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"},
    )
    try:
        port = int(read_line(child.stdout, 30))
        idle_fds = process_usage(child.pid)["fds"]
        assert burst(port, 2_000) == Counter({200: 2_000})  # warm-up: imports, caches, the thread pool
        assert wait_for(lambda: process_usage(child.pid)["fds"] == idle_fds)
        before = process_usage(child.pid)

        assert burst(port, 10_000) == Counter({200: 10_000})

        # The server closes the fresh connections as their clients go; give it until the count is back.
        assert wait_for(lambda: process_usage(child.pid)["fds"] == idle_fds)
        after = process_usage(child.pid)
        assert after["threads"] == before["threads"]
        assert after["rss_kib"] - before["rss_kib"] < 2_048, (before, after)  # measured: 150-250 KiB
    finally:
        child.stdin.close()
        child.wait(timeout=10)
