"""The processes the bench starts and what it reads about them.

Our exporter (`exporter.py`, the real entry point) and the peer (Debian's `prometheus-mongodb-exporter`) run as
subprocesses on 127.0.0.1 ports; their RSS and CPU come from /proc/PID/status and /proc/PID/stat. HTTP goes to
127.0.0.1 only, and every wait polls with a monotonic deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import resource
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PEER = "prometheus-mongodb-exporter"
ZERO_PROBLEM_PATH = "/mhp.zeroproblem.mongo.replcationlag"
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STOP_WAIT_S = 5.0

T = TypeVar("T")


def free_port() -> int:
    """A port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(probe: Callable[[], T | None], timeout_s: float, step_s: float = 0.01, what: str = "") -> T:
    """The first truthy value of `probe()`, polled every `step_s` until the monotonic deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {timeout_s:g} s waiting for {what or 'a condition'}")
        time.sleep(step_s)


@dataclass
class Reply:
    status: int  # 0 when there was no HTTP answer (refused, timed out)
    body: bytes
    seconds: float
    error: str = ""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request(method: str, port: int, path: str, timeout_s: float = 5.0) -> Reply:
    """One HTTP request to 127.0.0.1:port on a new connection; never raises."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, path, body=b"" if method in ("PUT", "POST") else None)
        answer = conn.getresponse()
        body = answer.read()
        return Reply(answer.status, body, time.monotonic() - started)
    except (OSError, http.client.HTTPException) as error:
        return Reply(0, b"", time.monotonic() - started, f"{type(error).__name__}: {error}")
    finally:
        conn.close()


class Lines:
    """A child's stdout (a text pipe) read line by line on a thread of its own, so that every wait for a line has
    a deadline and the child never blocks on a full pipe."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self._popen = popen
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, name="bench-lines", daemon=True).start()

    def _pump(self) -> None:
        for line in self._popen.stdout or ():
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next(self, timeout_s: float) -> str | None:
        """The next line, None once the child closed its stdout; TimeoutError after `timeout_s`."""
        try:
            return self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no line from {self._popen.args[0]} within {timeout_s:g} s") from None


def read_proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads from /proc/PID/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            values[key] = int(rest.split()[0])
    return values


def read_cpu_s(pid: int) -> float:
    """utime + stime of the process (all its threads, not its children) in seconds, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS_PER_S


def system_busy_s() -> float:
    """CPU seconds all processes on the machine have spent (user, nice, system; all cores), from /proc/stat.

    Interrupt and softirq time are left out: loopback TCP is processed there and would count our own traffic.
    """
    user, nice, system = (int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:4])
    return (user + nice + system) / CLOCK_TICKS_PER_S


def steal_s() -> float:
    """CPU seconds the hypervisor gave to other guests while this machine's vCPUs wanted to run (/proc/stat
    steal): a virtual machine's neighbours, which no process list shows."""
    return int(Path("/proc/stat").read_text().splitlines()[0].split()[8]) / CLOCK_TICKS_PER_S


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (wrk, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def busy_cores(seconds: float) -> float:
    """How many cores the machine kept busy over the next `seconds`."""
    busy0, started = system_busy_s(), time.monotonic()
    time.sleep(seconds)
    return (system_busy_s() - busy0) / (time.monotonic() - started)


QUIET_CORES = 0.3
QUIET_SAMPLES = 2  # consecutive quiet samples needed


def wait_for_quiet(max_wait_s: float = 120.0, sample_s: float = 2.0) -> tuple[float, float]:
    """Wait (bounded) until other work on the machine keeps less than QUIET_CORES busy, twice in a row.

    Returns (seconds waited, busy cores in the last sample). Other sessions share this machine; a section that
    starts while they run would measure them too, so the bench waits for a quiet moment and reports it.
    """
    started = time.monotonic()
    quiet = 0
    while True:
        busy = busy_cores(sample_s)
        quiet = quiet + 1 if busy < QUIET_CORES else 0
        waited = time.monotonic() - started
        if quiet >= QUIET_SAMPLES or waited >= max_wait_s:
            return waited, busy


@dataclass
class Proc:
    """A server the bench started: our exporter or the peer."""

    tool: str  # "ours" or "peer"
    argv: list[str]
    port: int
    log_path: Path
    popen: subprocess.Popen
    started_mono: float
    shown_argv: list[str] = field(default_factory=list)  # argv with the simulator's URI as <URI>

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_s(self) -> float:
        return read_cpu_s(self.pid)

    def memory(self) -> dict[str, int]:
        return read_proc_status(self.pid)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout_s: float = 5.0) -> Reply:
        return request("GET", self.port, path, timeout_s)

    def log_lines(self) -> int:
        try:
            with self.log_path.open("rb") as log:
                return sum(1 for _ in log)
        except OSError:
            return 0

    def command(self) -> str:
        return shlex.join(self.shown_argv or self.argv)

    def stop(self) -> None:
        stop_process(self.popen)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{self.tool} exited with status {self.popen.returncode}; log tail:\n{tail}")


def stop_process(popen: subprocess.Popen, wait_s: float = STOP_WAIT_S) -> float | None:
    """SIGTERM, then a kill if the child is still there after `wait_s`. Seconds from the signal to the exit; None
    when it had to be killed or had already exited."""
    if popen.poll() is not None:
        return None
    started = time.monotonic()
    popen.terminate()
    try:
        popen.wait(wait_s)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(STOP_WAIT_S)
        return None
    return time.monotonic() - started


def _spawn(tool: str, argv: list[str], port: int, tag: str, uri: str) -> Proc:
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{tool}-{tag}.log"
    with log_path.open("wb") as log:
        started = time.monotonic()
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT)
    shown = ["<URI>" if arg == uri else arg for arg in argv]
    if shown and shown[0] == sys.executable:
        shown[0] = ".venv/bin/python"
    return Proc(tool, argv, port, log_path, popen, started, shown)


def start_ours(uri: str, tag: str, interval_s: float | None = None, timeout_s: float | None = None) -> Proc:
    """`exporter.py` as a user runs it; no --collect.interval means the default (60 s)."""
    port = free_port()
    argv = [sys.executable, "exporter.py", "--mongodb.uri", uri, "--web.listen-address", f"127.0.0.1:{port}"]
    if interval_s is not None:
        argv += ["--collect.interval", f"{interval_s:g}"]
    if timeout_s is not None:
        argv += ["--collect.timeout", f"{timeout_s:g}"]
    return _spawn("ours", argv, port, tag, uri)


def start_peer(uri: str, tag: str) -> Proc:
    """The peer with its two flags; -logtostderr keeps glog's files out of /tmp (its log goes to our file)."""
    port = free_port()
    argv = [PEER, "-mongodb.uri", uri, "-web.listen-address", f"127.0.0.1:{port}", "-logtostderr"]
    return _spawn("peer", argv, port, tag, uri)


_OUR_UP = re.compile(rb"^mongodb_replication_up\{[^}]*\} 1\.0$", re.MULTILINE)
_PEER_DATA = re.compile(rb"^mongodb_replset_member_optime_date\{", re.MULTILINE)


def has_data(proc: Proc) -> bool:
    """True once the server's /metrics carries replica-set data (ours: up 1; the peer: member optimes)."""
    reply = proc.get("/metrics", timeout_s=2.0)
    if reply.status != 200:
        return False
    return bool((_OUR_UP if proc.tool == "ours" else _PEER_DATA).search(reply.body))


def wait_for_data(proc: Proc, timeout_s: float = 30.0, step_s: float = 0.01) -> float:
    """Seconds from spawning the process to the first /metrics answer with data."""

    def ready() -> float | None:
        proc.check_alive()
        return time.monotonic() if has_data(proc) else None

    return wait_until(ready, timeout_s, step_s, f"{proc.tool} to serve data") - proc.started_mono


def liveness(proc: Proc) -> dict[str, Any]:
    reply = proc.get("/liveness", timeout_s=2.0)
    return reply.json() if reply.body else {}
