"""HTTP load with wrk: one bounded run (a duration and a response cap), read back as numbers.

wrk runs with one thread (it shares the two cores with the servers) and bench/wrk.lua, which sets the method,
stops the thread after `max_requests` responses and prints the figures as one JSON line.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import threading
from dataclasses import asdict, dataclass

from bench.procs import ROOT

WRK_SCRIPT = ROOT / "bench" / "wrk.lua"
DEFAULT_CAP = 200_000  # responses per run; a 5 s run never gets near it, it only makes the bound explicit


@dataclass(frozen=True)
class LoadResult:
    command: str
    connections: int
    seconds: float
    requests: int
    errors: int  # connect/read/write errors and HTTP statuses > 399
    timeouts: int  # requests that got no answer within wrk's --timeout (not in the latencies)
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def wrk(
    url: str,
    connections: int,
    duration_s: float,
    *,
    method: str = "GET",
    timeout_s: float = 2.0,
    max_requests: int = DEFAULT_CAP,
) -> LoadResult:
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        method,
        str(max_requests),
    ]
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(duration_s + timeout_s + 30, popen.kill)  # the run's hard time bound
    watchdog.start()
    line = None
    try:
        for out in popen.stdout or ():
            if out.startswith("WRKCAP"):
                popen.send_signal(signal.SIGINT)  # the cap is reached: end the run now
            elif out.startswith("WRKJSON "):
                line = out
        stderr = popen.stderr.read() if popen.stderr else ""
        returncode = popen.wait()
    finally:
        watchdog.cancel()
    if returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({returncode}): {stderr.strip()}")
    figures = json.loads(line.removeprefix("WRKJSON "))
    seconds = figures["duration_us"] / 1e6
    requests = figures["requests"]
    shown = [*argv]
    shown[6] = "bench/wrk.lua"
    return LoadResult(
        command=shlex.join(shown),
        connections=connections,
        seconds=seconds,
        requests=requests,
        errors=sum(figures[k] for k in ("connect", "read", "write", "status")),
        timeouts=figures["timeout"],
        rps=requests / seconds if seconds else 0.0,
        p50_ms=figures["p50_us"] / 1000,
        p90_ms=figures["p90_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
        mean_ms=figures["mean_us"] / 1000,
    )
