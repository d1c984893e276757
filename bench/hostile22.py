"""Issue 22 items 2, 4 and 5, through the real exporter process (`--demo`), for each git ref given.

- accept: RSS of the exporter before and after 1 500 GET /metrics, each with its own OpenMetrics `version=`.
- proxy: a scraper at 127.0.0.1 whose credential is accepted; 20 connections from the same address send wrong
  passwords for its user and for unknown users; SIGHUP (the file unchanged); then 5 scrapes, each on a new
  connection: how many got 200.
- spread: the exporter just started (nothing remembered); 20 connections send wrong passwords for the scraper's
  user from 300 other loopback addresses in turn; then 8 scrapes from 127.0.0.1: how many got 200.
- slowloris: `--trickle` connections (100 per loopback address) each send a byte of a request head that never
  ends every 2 s, re-opened as soon as the exporter closes one; meanwhile a scraper on new connections for
  `--seconds`: answers, failures (no answer within 10 s) and latencies.

The user's bcrypt cost is 10. Measures, asserts nothing; every request has a client timeout, every phase a
duration.

    .venv/bin/python bench/hostile22.py --refs 12534dc WORKTREE
"""

from __future__ import annotations

import argparse
import base64
import http.client
import resource
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import bcrypt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.authflood import source_tree, start_exporter

USER, PASSWORD = "prometheus", "s3cret-Scrape"
TIMEOUT_S = 10.0


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def get(port: int, headers: dict[str, str], source: str = "127.0.0.1", timeout_s: float = TIMEOUT_S) -> int | str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s, source_address=(source, 0))
    try:
        connection.request("GET", "/metrics", headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError as error:
        return type(error).__name__
    finally:
        connection.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Flood:
    def __init__(self, port: int, sources: list[str], users: list[str], connections: int = 20) -> None:
        self.seen: Counter = Counter()
        self._stop, self._lock, self._turn = threading.Event(), threading.Lock(), 0
        self._args = port, sources, users
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(connections)]

    def _run(self, worker: int) -> None:
        port, sources, users = self._args
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            with self._lock:
                self._turn += 1
                source = sources[self._turn % len(sources)]
            status = get(port, basic(users[attempt % len(users)], f"guess-{worker}-{attempt}"), source, 30)
            with self._lock:
                self.seen[status] += 1

    def __enter__(self) -> Flood:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def accept_memory(port: int, pid: int, headers: dict[str, str]) -> str:
    for accept in ("", "application/openmetrics-text"):
        get_with_accept(port, headers, accept)
    before = rss_mib(pid)
    statuses = Counter(
        get_with_accept(port, headers, f"application/openmetrics-text; version=1.{n}.0") for n in range(1_500)
    )
    return f"RSS {before:.1f} -> {rss_mib(pid):.1f} MiB after 1 500 distinct version= ({dict(statuses)})"


def get_with_accept(port: int, headers: dict[str, str], accept: str) -> int | str:
    return get(port, {**headers, "Accept": accept} if accept else headers)


def proxy(port: int, child) -> str:
    assert get(port, basic(USER, PASSWORD)) == 200
    with Flood(port, ["127.0.0.1"], [USER, "nobody"]) as flood:
        deadline = time.monotonic() + 30
        while flood.seen[429] < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGHUP)
        time.sleep(1.0)  # the reload is logged within milliseconds; a bench may wait
        statuses = [get(port, basic(USER, PASSWORD)) for _ in range(5)]
    return f"{statuses.count(200)} of 5 scrapes answered 200 ({statuses}); flood {dict(flood.seen)}"


def spread(port: int) -> str:
    sources = [f"127.0.{1 + n // 250}.{1 + n % 250}" for n in range(300)]
    with Flood(port, sources, [USER]) as flood:
        time.sleep(5.0)  # in full swing
        statuses = [get(port, basic(USER, PASSWORD)) for _ in range(8)]
    return f"{statuses.count(200)} of 8 scrapes answered 200 ({statuses}); flood {dict(flood.seen)}"


def slowloris(port: int, headers: dict[str, str], trickle: int, seconds: float) -> str:
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Trickle: "
    sources = [f"127.0.9.{1 + n}" for n in range((trickle + 99) // 100)]
    stop, opened, closed = threading.Event(), Counter(), Counter()

    def trickler(source: str, count: int) -> None:
        held: list[socket.socket] = []
        while not stop.is_set():
            for sock in list(held):
                try:
                    sock.send(b"a")
                    if sock.recv(64) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    held.remove(sock)
                    sock.close()
                    closed[source] += 1
            while len(held) < count and not stop.is_set():
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S, source_address=(source, 0))
                    sock.sendall(head)
                    sock.setblocking(False)
                except OSError:
                    break
                held.append(sock)
                opened[source] += 1
            stop.wait(2.0)
        for sock in held:
            sock.close()

    threads = [
        threading.Thread(target=trickler, args=(s, min(100, trickle - 100 * i)), daemon=True)
        for i, s in enumerate(sources)
    ]
    for thread in threads:
        thread.start()
    time.sleep(5.0)  # every trickler connected
    latencies, outcomes = [], Counter()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        status = get(port, headers)
        outcomes[status] += 1
        if status == 200:
            latencies.append((time.monotonic() - started) * 1000)
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(30)
    lat = f"p50 {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms" if latencies else "no answer"
    return (
        f"scrapes {dict(outcomes)}, {lat}; trickling connections opened {sum(opened.values())}, "
        f"closed by the exporter {sum(closed.values())}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", nargs="+", default=["WORKTREE"])
    parser.add_argument("--trickle", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="scraping time during the slowloris")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.trickle + 1_000)), hard))

    with tempfile.TemporaryDirectory(prefix="hostile22-") as scratch:
        where = Path(scratch)
        config = where / "web.yml"
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
        config.write_text(f"basic_auth_users:\n  {USER}: {hashed}\n")
        for ref in args.refs:
            tree = source_tree(ref, where)
            for phase in ("accept", "proxy", "spread", "slowloris"):
                child, port = start_exporter(tree, config)
                try:
                    if phase == "accept":
                        result = accept_memory(port, child.pid, basic(USER, PASSWORD))
                    elif phase == "proxy":
                        result = proxy(port, child)
                    elif phase == "spread":
                        result = spread(port)
                    else:
                        result = slowloris(port, basic(USER, PASSWORD), args.trickle, args.seconds)
                finally:
                    child.send_signal(signal.SIGTERM)
                    try:
                        child.wait(15)
                    except Exception:
                        child.kill()
                print(f"| {ref} | {phase} | {result} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
