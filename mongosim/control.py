"""Commands a person (or a test) gives a running simulator: `lag shard07 2 45s`, `down shard88 1`, `ramp rs0 1
30s/min`, `down-zone zone=us-east-1a`, `help`. One command a line, one answer a line (`ok: ...` or `error: ...`),
never a traceback.

`Controller(target).execute(line)` runs one command on a ReplicaSet or a ShardedCluster. `read_stream` feeds it the
lines of a stream (stdin: `stdin_takes_commands` says whether stdin is a terminal or a pipe); `ControlServer` on a
loopback TCP port, for tests and scripts. Input is bounded: `MAX_LINE` bytes a line (a longer one is answered with
an error and skipped), `MAX_CONNECTIONS` control connections at once, each closed after `IDLE_S` without a line.

Imports `.replicaset` and `.sharded` only (and the standard library).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socketserver
import stat
import threading
from collections.abc import Callable
from typing import IO

from .replicaset import ReplicaSet
from .sharded import ShardedCluster

MAX_LINE = 1024  # bytes of one command
MAX_CONNECTIONS = 8
IDLE_S = 300.0  # a control connection that sends nothing for this long is closed
RAMP_TICK_S = 0.25  # how often a ramping lag is moved
MAX_RAMP_MS_PER_MIN = 60_000  # a member cannot fall behind faster than time passes

HELP = """commands (SET: a shard id such as shard07, config, or the set's name; a plain set's name may be left out;
MEMBER: its _id or host:port; durations in ms, s, m or h, seconds without a unit):
  lag [SET] MEMBER DURATION      set its replication lag, e.g. `lag shard07 2 45s` (ends a ramp)
  ramp [SET] MEMBER RATE         let its lag grow or shrink from where it is, e.g. `ramp shard07 2 30s/min`, `-10s/min`
  auto [SET] MEMBER              give its lag back (to the demo's cycle; ends a ramp)
  down [SET] MEMBER              take it down (its port closes; the others report it DOWN)
  up [SET] MEMBER                bring it back up on the same port
  ping [SET] MEMBER MS           the pingMs the other members report for it
  tag [SET] MEMBER [KEY=VALUE ...]   replace its tags in replSetGetConfig (none: no tags)
  down-zone KEY=VALUE            take down every member of every set whose tag KEY is VALUE, e.g. `down-zone zone=a`
  up-zone KEY=VALUE              bring them back up
  help                           this list"""

_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_PER_MS = {"s": 1000, "sec": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}


class CommandError(ValueError):
    """A command that cannot be run: the answer says why."""


def duration_ms(text: str) -> int:
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise CommandError(f"expected a duration such as 45s, 1500ms or 2m, got {text[:40]!r}")
    return round(float(match[1]) * _UNITS_MS[match[2] or "s"])


def rate_ms_per_min(text: str) -> float:
    """`30s/min` -> 30 000; `-10s/min`; `500ms/s` -> 30 000."""
    amount, sep, per = text.partition("/")
    if not sep or per.strip() not in _PER_MS:
        raise CommandError(f"expected a rate such as 30s/min or -500ms/s, got {text[:40]!r}")
    return duration_ms(amount) * 60_000 / _PER_MS[per.strip()]


class Controller:
    """Runs commands on one simulated replica set or sharded cluster; thread-safe (one command at a time)."""

    def __init__(self, target: ReplicaSet | ShardedCluster) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._ramps: dict[tuple[str, int], tuple[ReplicaSet, float, int, int]] = {}  # (rs, ms/min, from lag, at)
        self._stopping = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- the sets a command can name --

    def _sets(self) -> dict[str, ReplicaSet]:
        if isinstance(self._target, ReplicaSet):
            return {self._target.name: self._target}
        sets = {shard_id: self._target.shard(shard_id) for shard_id in self._target.shard_ids}
        sets.setdefault("config", self._target.config)
        sets[self._target.config.name] = self._target.config
        return sets

    def _set_and_member(self, args: list[str], rest: int) -> tuple[ReplicaSet, int, list[str]]:
        """[SET] MEMBER followed by `rest` more words (at least)."""
        sets = self._sets()
        named = len(args) >= 2 + rest  # a SET word is there
        if named and args[0] in sets:
            rs, args = sets[args[0]], args[1:]
        elif named and not (args[0].isdigit() or ":" in args[0]):
            raise CommandError(f"no set {args[0][:40]!r}: {self._set_names()}")
        elif isinstance(self._target, ReplicaSet):
            rs = self._target
        else:
            raise CommandError(f"name the set first: {self._set_names()}")
        if len(args) < 1 + rest:
            raise CommandError("missing words: `help` lists the commands")
        ref: int | str = int(args[0]) if args[0].isdigit() else args[0]
        try:
            member = rs.member(ref)
        except (KeyError, ValueError, TypeError):
            ids = ", ".join(str(m.id) for m in rs.members)
            raise CommandError(f"set {rs.name} has no member {args[0][:40]!r} (its _ids: {ids})") from None
        return rs, member.id, args[1:]

    def _set_names(self) -> str:
        if isinstance(self._target, ReplicaSet):
            return f"the set is {self._target.name}"
        shards = self._target.shard_ids
        if len(shards) > 4:
            return f"sets are {shards[0]} to {shards[-1]} and config"
        return f"sets are {', '.join([*shards, 'config'])}"

    # -- running a command --

    def execute(self, line: str) -> str:
        """One command line -> one answer line. Never raises."""
        words = line.split()
        if not words:
            return "error: an empty command: `help` lists the commands"
        verb, args = words[0].lower(), words[1:]
        handler = _COMMANDS.get(verb)
        if handler is None:
            return f"error: unknown command {verb[:40]!r}: `help` lists the commands"
        try:
            with self._lock:
                return "ok: " + handler(self, args)
        except CommandError as exc:
            return f"error: {exc}"
        except (KeyError, ValueError, TypeError, OSError, RuntimeError) as exc:  # the simulator refused it
            return f"error: {str(exc).strip(chr(34) + chr(39))[:300] or type(exc).__name__}"

    def _help(self, args: list[str]) -> str:
        if args:
            raise CommandError("`help` takes no arguments")
        return HELP  # its lines after the first are indented where they are said

    def _lag(self, args: list[str]) -> str:
        rs, member, rest = self._set_and_member(args, 1)
        ms = duration_ms(rest[0])
        if ms < 0:
            raise CommandError("a lag is >= 0")
        self._ramps.pop((rs.name, member), None)
        rs.manual.add(member)
        rs.set_lag(member, ms)
        return f"{rs.name} member {member} lag {ms} ms"

    def _ramp(self, args: list[str]) -> str:
        rs, member, rest = self._set_and_member(args, 1)
        per_min = rate_ms_per_min(rest[0])
        if per_min > MAX_RAMP_MS_PER_MIN:
            raise CommandError("a member cannot fall behind faster than time passes (60s/min)")
        info = rs.member(member)
        if info.role != "secondary":
            raise CommandError(f"{info.name} is the {info.role}: it has no lag")
        rs.manual.add(member)
        self._ramps[(rs.name, member)] = (rs, per_min, info.lag_ms, rs.clock.now_ms())
        self._start_ticker()
        return f"{rs.name} member {member} lag {info.lag_ms} ms, moving {per_min / 1000:g} s/min"

    def _auto(self, args: list[str]) -> str:
        rs, member, _ = self._set_and_member(args, 0)
        self._ramps.pop((rs.name, member), None)
        rs.manual.discard(member)
        return f"{rs.name} member {member}: its lag is no longer set by hand"

    def _down(self, args: list[str]) -> str:
        rs, member, _ = self._set_and_member(args, 0)
        rs.take_down(member)
        return f"{rs.name} member {member} is down"

    def _up(self, args: list[str]) -> str:
        rs, member, _ = self._set_and_member(args, 0)
        rs.bring_up(member)
        return f"{rs.name} member {member} is up"

    def _ping(self, args: list[str]) -> str:
        rs, member, rest = self._set_and_member(args, 1)
        ms = int(rest[0]) if rest[0].isdigit() else duration_ms(rest[0])
        rs.set_ping(member, ms)
        return f"{rs.name} member {member} pingMs {ms}"

    def _tag(self, args: list[str]) -> str:
        rs, member, rest = self._set_and_member(args, 0)
        tags = dict(_pair(word) for word in rest)
        rs.set_tags(member, tags)
        return f"{rs.name} member {member} tags {', '.join(f'{k}={v}' for k, v in tags.items()) or 'none'}"

    def _zone(self, args: list[str], down: bool) -> str:
        if len(args) != 1:
            raise CommandError("expected one KEY=VALUE, e.g. zone=us-east-1a")
        key, value = _pair(args[0])
        changed, sets = 0, 0
        for rs in dict.fromkeys(self._sets().values()):  # the config set once, whatever its names
            members = [m for m in rs.members if m.tags.get(key) == value and m.up == down]
            for m in members:
                rs.take_down(m.id) if down else rs.bring_up(m.id)
            changed += len(members)
            sets += bool(members)
        return f"{changed} member(s) {'down' if down else 'up'} in {sets} set(s) ({key}={value})"

    # -- ramps --

    def _start_ticker(self) -> None:
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="mongosim-ramps", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stopping.wait(RAMP_TICK_S):
            with self._lock:
                ramps = list(self._ramps.items())
            for key, (rs, per_min, from_ms, at_ms) in ramps:
                lag = max(0, round(from_ms + per_min * (rs.clock.now_ms() - at_ms) / 60_000))
                try:
                    rs.set_lag(key[1], lag)
                except (KeyError, ValueError, RuntimeError):  # the member was elected, removed, the set stopped
                    with self._lock:
                        self._ramps.pop(key, None)

    def close(self) -> None:
        self._stopping.set()
        if self._ticker is not None:
            self._ticker.join()


def _pair(word: str) -> tuple[str, str]:
    key, sep, value = word.partition("=")
    if not sep or not key or not value:
        raise CommandError(f"expected KEY=VALUE, got {word[:40]!r}")
    return key, value


_COMMANDS: dict[str, Callable[[Controller, list[str]], str]] = {
    "help": Controller._help,
    "lag": Controller._lag,
    "ramp": Controller._ramp,
    "auto": Controller._auto,
    "down": Controller._down,
    "up": Controller._up,
    "ping": Controller._ping,
    "tag": Controller._tag,
    "down-zone": lambda c, args: c._zone(args, down=True),
    "up-zone": lambda c, args: c._zone(args, down=False),
}


# -- where commands come from --


def stdin_takes_commands(stream: IO[bytes] | None = None) -> bool:
    """Whether stdin is a terminal or a pipe (not /dev/null, a file, or closed)."""
    try:
        fd = (stream or os.fdopen(0, "rb", closefd=False)).fileno()
        return os.isatty(fd) or stat.S_ISFIFO(os.fstat(fd).st_mode)
    except (OSError, ValueError):
        return False


def read_line(stream: IO[bytes]) -> tuple[str | None, bool]:
    """(one line without its newline, or None at the end; whether it was too long and skipped)."""
    data = stream.readline(MAX_LINE + 1)
    if not data:
        return None, False
    if len(data) > MAX_LINE and not data.endswith(b"\n"):
        while (more := stream.readline(MAX_LINE)) and not more.endswith(b"\n"):
            pass
        return "", True
    return data.decode("utf-8", "replace").strip(), False


def answer(controller: Controller, stream: IO[bytes], say: Callable[[str], None]) -> None:
    """Run every command line of `stream` until it ends, saying each answer."""
    while True:
        line, too_long = read_line(stream)
        if line is None:
            return
        if too_long:
            say(f"error: a command is at most {MAX_LINE} bytes")
        elif line:
            say(controller.execute(line))


def read_stream(controller: Controller, stream: IO[bytes], say: Callable[[str], None]) -> threading.Thread:
    """A daemon thread answering the commands of `stream` (stdin) until it ends; the simulator keeps serving."""
    thread = threading.Thread(target=answer, args=(controller, stream, say), name="mongosim-stdin", daemon=True)
    thread.start()
    return thread


def commands_on_stdin(
    target: ReplicaSet | ShardedCluster, stop: Callable[[], None], say: Callable[[str], None]
) -> Callable[[], None]:
    """Answer commands from stdin when it is a terminal or a pipe (the exporter's --demo); returns the stop callable
    to use instead of `stop` (it ends the ramps too)."""
    if not stdin_takes_commands():
        return stop
    controller = Controller(target)

    def say_lines(text: str) -> None:  # a log line each (help is several)
        for line in text.splitlines():
            say(line)

    read_stream(controller, os.fdopen(0, "rb", closefd=False), say_lines)
    say("commands on stdin change the simulated set while it runs: `help` lists them")

    def stop_both() -> None:
        controller.close()
        stop()

    return stop_both


class _Handler(socketserver.StreamRequestHandler):
    timeout = IDLE_S

    def handle(self) -> None:
        server: ControlServer = self.server  # type: ignore[assignment]
        if not server.slots.acquire(blocking=False):
            self.wfile.write(b"error: too many control connections\n")
            return
        try:

            def say(text: str) -> None:
                self.wfile.write(text.replace("\n", "\n  ").encode() + b"\n")

            answer(server.controller, self.rfile, say)
        except OSError:  # the client went away, or went quiet (TimeoutError)
            pass
        finally:
            server.slots.release()


class ControlServer(socketserver.ThreadingTCPServer):
    """Commands on a loopback TCP port: one a line, one answer a line."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, controller: Controller, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ValueError(f"the control channel listens on a loopback address only, not {host!r}")
        self.controller = controller
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, name="mongosim-control", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join()
