"""The simulator's command line (URI first, clean exit on a signal) and the demo set the exporter's --demo uses."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pymongo import ReadPreference
from service_util import read_line

from mongosim import ManualClock
from mongosim.demo import DEMO_PERIOD_MS, demo_lag_ms, start_demo_set

pytestmark = pytest.mark.slow  # README "Tests": skipped by the quick run

REPO = Path(__file__).resolve().parent.parent
EPOCH = dt.datetime(1970, 1, 1)
PP = ReadPreference.PRIMARY_PREFERRED


def _ms(value: dt.datetime) -> int:
    return round((value - EPOCH).total_seconds() * 1000)


def _first_line(proc: subprocess.Popen[str], timeout_s: float = 10) -> str:
    return read_line(proc.stdout, timeout_s).strip()  # communicate() still gets every line after it


@pytest.fixture
def cli():
    procs: list[subprocess.Popen[str]] = []

    def run(*flags: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mongosim", *flags],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_cli_prints_its_uri_first_and_exits_cleanly_on_a_signal(cli, connect, signum):
    flags = ["--members", "3", "--arbiter", "--lag", "1=1500", "--delay", "2=3600", "--hidden", "2"]
    proc = cli(*flags, "--version", "7.0", "--auth", "monitor:s3cret")
    uri = _first_line(proc)
    assert re.fullmatch(r"mongodb://127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+){2}/\?replicaSet=rs0", uri)
    client = connect(uri, username="monitor", password="s3cret")
    client.admin.command("ping")
    status = client.admin.command("replSetGetStatus", read_preference=PP)
    walls = [_ms(m["lastAppliedWallTime"]) for m in status["members"][:3]]
    assert (walls[0] - walls[1], walls[0] - walls[2]) == (1500, 3_600_000)
    config = client.admin.command("replSetGetConfig")["config"]
    assert [(m["hidden"], m["secondaryDelaySecs"], m["arbiterOnly"]) for m in config["members"]] == [
        (False, 0, False),
        (False, 0, False),
        (True, 3600, False),
        (False, 0, True),
    ]
    client.close()  # before the set goes away: closing a client with no server left waits for one
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "s3cret" not in uri + out + err


def test_the_cli_refuses_a_member_that_does_not_exist(cli):
    proc = cli("--members", "2", "--lag", "5=100")
    out, err = proc.communicate(timeout=10)
    assert (proc.returncode, out) == (2, "")
    assert "no member 5" in err


DEMO_COLOURS = [(0, "GREEN"), (30, "GREEN"), (40, "YELLOW"), (60, "YELLOW"), (95, "RED"), (125, "RED")]
DEMO_COLOURS += [(150, "YELLOW"), (170, "GREEN"), (180, "GREEN"), (220, "YELLOW")]


@pytest.mark.parametrize("second, colour", DEMO_COLOURS)
def test_the_demo_lag_cycles_green_yellow_red_and_back_in_three_minutes(second, colour):
    lag = demo_lag_ms(second * 1000)
    assert colour == ("RED" if lag >= 30_000 else "YELLOW" if lag >= 5_000 else "GREEN")


def test_the_demo_lag_never_grows_faster_than_time_passes():
    lags = [demo_lag_ms(t) for t in range(0, DEMO_PERIOD_MS + 1, 100)]
    assert max(b - a for a, b in itertools.pairwise(lags)) < 100


def test_the_demo_set_moves_its_lag_along_its_clock_and_stops_at_once(connect, wait_until):
    clock = ManualClock(1_723_763_174_512)
    rs, stop = start_demo_set(clock=clock)
    try:
        client = connect(rs)
        client.admin.command("ping")
        status = client.admin.command("replSetGetStatus")
        states = [m["stateStr"] for m in status["members"]]
        assert states == ["PRIMARY", "SECONDARY", "SECONDARY", "ARBITER", "SECONDARY"]
        walls = [_ms(m.get("lastAppliedWallTime", EPOCH)) for m in status["members"]]
        assert walls[0] - walls[1] < 5_000
        assert 3_600_000 < walls[0] - walls[4] < 3_605_000
        delayed = client.admin.command("replSetGetConfig")["config"]["members"][4]
        assert (delayed["hidden"], delayed["secondaryDelaySecs"]) == (True, 3600)
        clock.advance(120_000)

        def lag_1() -> int:
            members = client.admin.command("replSetGetStatus")["members"]
            return _ms(members[0]["lastAppliedWallTime"]) - _ms(members[1]["lastAppliedWallTime"])

        assert wait_until(lambda: lag_1() >= 30_000)
        client.close()
    finally:
        stop()
    assert [t for t in threading.enumerate() if t.name.startswith("mongosim")] == []
    stop()
