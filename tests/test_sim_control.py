"""The simulator driven while it runs: commands on stdin and on a loopback control port (`python -m mongosim`), and
on the exporter's stdin with --demo; each change read back with real pymongo (replSetGetStatus, replSetGetConfig).
The command parser itself is checked in-process on a started set: every bad command gets one `error:` line."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import ReadPreference
from service_util import read_line, read_line_matching
from service_util import wait_until as wait_for

from mongosim import ManualClock
from mongosim.control import MAX_LINE, Controller

REPO = Path(__file__).resolve().parent.parent
EPOCH = dt.datetime(1970, 1, 1)
PP = ReadPreference.PRIMARY_PREFERRED
ANSWER_TIMEOUT_S = 10.0  # generous on a shared 2-core machine; an answer normally takes milliseconds


def _ms(value: dt.datetime) -> int:
    return round((value - EPOCH).total_seconds() * 1000)


def lag_of(client: Any, member: int) -> int:
    members = client.admin.command("replSetGetStatus", read_preference=PP)["members"]
    return _ms(members[0]["lastAppliedWallTime"]) - _ms(members[member]["lastAppliedWallTime"])


def status_lag(client: Any) -> tuple[int, int]:
    """(the status `date`, member 1's lag) from one replSetGetStatus: the set's own clock and the lag at it."""
    status = client.admin.command("replSetGetStatus", read_preference=PP)
    walls = [_ms(m["lastAppliedWallTime"]) for m in status["members"]]
    return _ms(status["date"]), walls[0] - walls[1]


def state_of(client: Any, member: int) -> str:
    return client.admin.command("replSetGetStatus", read_preference=PP)["members"][member]["stateStr"]


class Control:
    """A connection to the simulator's --control port: one command a line, one answer a line."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=ANSWER_TIMEOUT_S)
        self.file = self.sock.makefile("rb")

    def send(self, line: str | bytes) -> str:
        self.sock.sendall((line.encode() if isinstance(line, str) else line) + b"\n")
        return self.file.readline().decode().rstrip("\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def sim() -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], str, str]]]:
    """`python -m mongosim FLAGS`: (process, its URI, its commands line)."""
    procs: list[subprocess.Popen[bytes]] = []

    def run(*flags: str, stdin: int = subprocess.DEVNULL) -> tuple[subprocess.Popen[bytes], str, str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mongosim", *flags],
            cwd=REPO,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return proc, read_line(proc.stdout, 30).strip(), read_line(proc.stdout, 10).strip()

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        if proc.stdin is not None and proc.stdin.closed:
            proc.stdin = None  # the test closed it: communicate() would flush it
        proc.communicate(timeout=10)


def control_address(commands_line: str) -> str:
    match = re.search(r"control port (127\.0\.0\.1:\d+)", commands_line)
    assert match, commands_line
    return match[1]


# --- the command line -------------------------------------------------------------------------------------------

pytestmark_slow = pytest.mark.slow  # README "Tests": skipped by the quick run (each starts a process)


@pytestmark_slow
def test_commands_on_the_control_port_set_a_lag_take_a_member_down_and_bring_it_back(sim, connect, wait_until):
    proc, uri, commands = sim("--members", "3", "--control", "127.0.0.1:0")
    control = Control(control_address(commands))
    try:
        client = connect(uri)
        assert control.send("lag 1 45s") == "ok: rs0 member 1 lag 45000 ms"
        assert lag_of(client, 1) == 45_000
        assert control.send("lag rs0 2 1500ms") == "ok: rs0 member 2 lag 1500 ms"  # the set's name may be given
        assert lag_of(client, 2) == 1_500
        assert control.send("down 2").startswith("ok: ")
        assert wait_until(lambda: state_of(client, 2) == "(not reachable/healthy)")
        assert control.send("up 2").startswith("ok: ")
        assert wait_until(lambda: state_of(client, 2) == "SECONDARY")
        assert control.send("lag shard07 1 4s") == "error: no set 'shard07': the set is rs0"
        assert control.send("lag 7 4s") == "error: set rs0 has no member '7' (its _ids: 0, 1, 2)"
        assert control.send("lag 1 soon").startswith("error: expected a duration such as 45s")
        assert control.send(b"lag 1 " + b"9" * (2 * MAX_LINE)) == f"error: a command is at most {MAX_LINE} bytes"
        assert control.send("lag 1 2s") == "ok: rs0 member 1 lag 2000 ms"  # the long line was skipped whole
        assert lag_of(client, 1) == 2_000
        client.close()
    finally:
        control.close()
    assert proc.poll() is None  # no command stops it


@pytestmark_slow
def test_commands_on_stdin_are_answered_on_stdout_and_the_end_of_stdin_does_not_stop_it(sim, connect):
    proc, uri, commands = sim("--members", "3", stdin=subprocess.PIPE)
    assert commands == "# commands on stdin: `help` lists them"
    client = connect(uri)
    for line, answer in [
        ("lag 2 30s", "# ok: rs0 member 2 lag 30000 ms"),
        ("frobnicate 1", "# error: unknown command 'frobnicate': `help` lists the commands"),
        ("down 1", "# ok: rs0 member 1 is down"),
    ]:
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()
        assert read_line_matching(proc.stdout, r"^# (?:ok|error): .*", ANSWER_TIMEOUT_S)[0] == answer
    proc.stdin.close()
    assert lag_of(client, 2) == 30_000
    assert state_of(client, 1) == "(not reachable/healthy)"
    client.close()
    assert proc.poll() is None


@pytestmark_slow
def test_a_ramp_moves_the_lag_at_the_rate_asked_until_a_lag_is_set(sim, connect, wait_until):
    _, uri, commands = sim("--members", "3", "--lag", "1=10000", "--control", "127.0.0.1:0")
    control = Control(control_address(commands))
    try:
        client = connect(uri)
        assert control.send("ramp 1 30s/min") == "ok: rs0 member 1 lag 10000 ms, moving 30 s/min"
        first = status_lag(client)
        assert wait_until(lambda: status_lag(client)[1] >= first[1] + 1_500, 10)
        last = status_lag(client)
        rate = (last[1] - first[1]) / (last[0] - first[0])  # ms of lag per ms of the set's own clock (`date`)
        assert 0.35 <= rate <= 0.65, rate  # 0.5 asked; a ramp moves every 0.25 s, so either read may be 0.25 s old
        assert control.send("ramp 1 90s/min").startswith("error: a member cannot fall behind faster than time")
        assert control.send("lag 1 3s") == "ok: rs0 member 1 lag 3000 ms"
        assert wait_until(lambda: lag_of(client, 1) == 3_000)
        assert control.send("help").startswith("ok: commands")
        client.close()
    finally:
        control.close()


@pytestmark_slow
def test_pings_and_tags_set_by_flag_or_command_show_in_status_and_config(sim, connect):
    flags = ["--members", "3", "--zones", "a,b", "--tag", "2=rack:r9", "--ping", "1=120", "--control", "127.0.0.1:0"]
    _, uri, commands = sim(*flags)
    control = Control(control_address(commands))
    try:
        client = connect(uri)
        config = client.admin.command("replSetGetConfig")["config"]
        assert [m["tags"] for m in config["members"]] == [{"zone": "a"}, {"zone": "b"}, {"zone": "a", "rack": "r9"}]
        status = client.admin.command("replSetGetStatus", read_preference=PP)
        assert status["members"][1]["pingMs"] == 120
        assert control.send("ping 2 75") == "ok: rs0 member 2 pingMs 75"
        assert control.send("tag 1 zone=c dc=east") == "ok: rs0 member 1 tags zone=c, dc=east"
        status = client.admin.command("replSetGetStatus", read_preference=PP)
        assert status["members"][2]["pingMs"] == 75
        again = client.admin.command("replSetGetConfig")["config"]
        assert again["members"][1]["tags"] == {"zone": "c", "dc": "east"}
        assert again["version"] > config["version"]  # a reconfig, as a real tag change is
        client.close()
    finally:
        control.close()


@pytestmark_slow
def test_down_zone_takes_down_a_whole_zone_of_a_100_shard_cluster_at_once(sim, connect, wait_until):
    flags = ["--shards", "100", "--members", "3", "--zones", "us-east-1a,us-east-1b,us-east-1c"]
    _, uri, commands = sim(*flags, "--control", "127.0.0.1:0")
    control = Control(control_address(commands))
    try:
        assert control.send("lag shard07 2 45s") == "ok: shard07 member 2 lag 45000 ms"
        assert control.send("down-zone zone=us-east-1b") == "ok: 101 member(s) down in 101 set(s) (zone=us-east-1b)"
        router = connect(uri)
        shard_map = router.admin.command("getShardMap")["map"]
        for set_id in ("shard07", "shard88", "config"):
            hosts = shard_map[set_id].split("/", 1)[1].split(",")
            client = connect(hosts[0].rsplit(":", 1)[0], port=int(hosts[0].rsplit(":", 1)[1]), directConnection=True)
            members = client.admin.command("replSetGetStatus", read_preference=PP)["members"]
            assert [m["stateStr"] for m in members] == ["PRIMARY", "(not reachable/healthy)", "SECONDARY"], set_id
            if set_id == "shard07":
                assert _ms(members[0]["lastAppliedWallTime"]) - _ms(members[2]["lastAppliedWallTime"]) == 45_000
            client.close()
        assert control.send("up-zone zone=us-east-1b") == "ok: 101 member(s) up in 101 set(s) (zone=us-east-1b)"
        assert control.send("down shard88 1") == "ok: shard88 member 1 is down"
        assert control.send("lag 1 4s") == "error: name the set first: sets are shard01 to shard100 and config"
        router.close()
    finally:
        control.close()


@pytestmark_slow
def test_the_control_channel_listens_on_loopback_only():
    proc = subprocess.run(
        [sys.executable, "-m", "mongosim", "--members", "1", "--control", "0.0.0.0:0"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "mongosim: the control channel listens on a loopback address only, not '0.0.0.0'"


@pytestmark_slow
def test_the_exporter_demo_takes_commands_on_stdin():
    exporter = subprocess.Popen(
        [sys.executable, "exporter.py", "--demo", "--web.listen-address", "127.0.0.1:0"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        said = read_line_matching(exporter.stdout, r'msg="demo: (commands on stdin[^"]*)"', 30)
        assert said[1] == "commands on stdin change the simulated set while it runs: `help` lists them"
        port = int(read_line_matching(exporter.stdout, r"serving http://127\.0\.0\.1:(\d+)/", 30)[1])
        exporter.stdin.write(b"lag demo 1 40s\nlag 9 1s\n")
        exporter.stdin.flush()
        assert (
            read_line_matching(exporter.stdout, r'msg="demo: (ok: [^"]*)"', 10)[1] == "ok: demo member 1 lag 40000 ms"
        )
        error = read_line_matching(exporter.stdout, r'msg="demo: (error: [^"]*)"', 10)[1]
        assert error == "error: set demo has no member '9' (its _ids: 0, 1, 2, 3, 4)"

        def document() -> dict[str, Any]:
            put = urllib.request.Request(
                f"http://127.0.0.1:{port}/mhp.zeroproblem.mongo.replcationlag", b"{}", method="PUT"
            )
            with urllib.request.urlopen(put, timeout=ANSWER_TIMEOUT_S) as answer:
                return json.load(answer)["mhp.zeroproblem.mongo.replcationlag"]

        # The demo polls every 5 s and its cycle moves member 1 every 0.25 s unless a command set it: three polls
        # in a row must show the lag asked for.
        seen: dict[int, dict[str, Any]] = {}

        def three_polls_held() -> bool:
            nonlocal seen
            doc = document()
            held = " replication lag 40000ms" in doc["messages"][0]["actionBody"]
            seen = {**seen, doc["timestamp"]: doc} if held else {}
            return len(seen) >= 3

        wait_for(three_polls_held, 60, "three polls in a row showing the lag asked for", 0.5)
        assert {doc["status"] for doc in seen.values()} == {"RED"}
    finally:
        exporter.terminate()
        exporter.communicate(timeout=20)


@pytestmark_slow
def test_the_cli_help_documents_the_commands_and_where_they_are_read():
    run = subprocess.run(
        [sys.executable, "-m", "mongosim", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    for words in ("lag [SET] MEMBER DURATION", "ramp [SET]", "down-zone KEY=VALUE", "--control", "--zones", "stdin"):
        assert words in run.stdout


# --- the command parser, in-process -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("", "error: an empty command: `help` lists the commands"),
        ("LAG 1 2s", "ok: rs0 member 1 lag 2000 ms"),  # verbs in any case
        ("lag", "error: missing words: `help` lists the commands"),
        ("lag 1", "error: missing words: `help` lists the commands"),
        ("lag 0 2s", "error: 127.0.0.1:PORT0 is the primary or an arbiter: it has no lag"),
        ("lag 1 -2s", "error: a lag is >= 0"),
        ("ramp 1 fast", "error: expected a rate such as 30s/min or -500ms/s, got 'fast'"),
        ("ramp 0 1s/min", "error: 127.0.0.1:PORT0 is the primary: it has no lag"),
        ("ping 1 -3", "error: pingMs must be >= 0"),
        ("tag 1 zone", "error: expected KEY=VALUE, got 'zone'"),
        ("down-zone zone", "error: expected KEY=VALUE, got 'zone'"),
        ("down-zone", "error: expected one KEY=VALUE, e.g. zone=us-east-1a"),
        ("down-zone zone=nowhere", "ok: 0 member(s) down in 0 set(s) (zone=nowhere)"),
        ("help me", "error: `help` takes no arguments"),
        ("lag 127.0.0.1:1 2s", "error: set rs0 has no member '127.0.0.1:1' (its _ids: 0, 1, 2)"),
        ("lag " + "x" * 500 + " 1 2s", "error: no set '" + "x" * 40 + "': the set is rs0"),  # quoted at most 40
    ],
)
def test_every_bad_command_gets_a_one_line_error(start_set, line, answer):
    rs = start_set(3, clock=ManualClock(1_723_763_174_512))
    controller = Controller(rs)
    try:
        said = controller.execute(line).replace(rs.members[0].name, "127.0.0.1:PORT0")
    finally:
        controller.close()
    assert said == answer
    assert "\n" not in said and "Traceback" not in said


def test_a_member_is_named_by_host_and_port_too(start_set):
    rs = start_set(3, clock=ManualClock(1_723_763_174_512))
    controller = Controller(rs)
    try:
        assert controller.execute(f"lag {rs.members[2].name} 7s") == "ok: rs0 member 2 lag 7000 ms"
    finally:
        controller.close()
    assert rs.member(2).lag_ms == 7_000 and rs.manual == {2}
