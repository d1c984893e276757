"""Command line: start a simulated replica set, or a sharded cluster with --shards, print its URI on the first line
of stdout, serve until SIGINT or SIGTERM, exit 0.

    python -m mongosim --members 3 --arbiter --lag 1=1500 --delay 2=3600 --hidden 2 --version 7.0 \\
        --auth monitor:secret:clusterMonitor,read@local
    python -m mongosim --shards 3 --routers 2 --members 3 --lag 1=1500 --version 8.0 \\
        --auth monitor:secret --shard-auth local:secret
    python -m mongosim --members 3 --oplog-window 1=3600s --commit-lag 6000 --initial-sync 2=2GiB@10MiB

Durations take ms, s, m or h (seconds without a unit); sizes take KB, MB, GB, KiB, MiB or GiB (bytes without).

While it runs it takes commands, one a line: `lag shard07 2 45s`, `ramp shard07 2 30s/min`, `down shard88 1`,
`up shard88 1`, `ping rs0 2 80`, `tag rs0 2 zone=b`, `down-zone zone=us-east-1a`, `help` (for a plain replica set the
set's name may be left out). It reads them from stdin when stdin is a terminal or a pipe, and from a loopback TCP
port with --control 127.0.0.1:PORT (0: any port); the second line of stdout says where. Each command gets one
answer line, `ok: ...` or `error: ...` (on stdout after "# "; on the control port as it is).

Members are numbered by `_id`: the data members 0..N-1 (0 starts as primary), then the arbiter. With --shards the
member flags (--members, --arbiter, --lag, --delay, --hidden, --priority, --votes, --state) shape every shard, the
URI is the routers' (no replicaSet=), --auth makes cluster users (they log in on routers and config servers) and
--shard-auth shard-local users of every shard; --port is then the first router's port. The URI never carries a
password: give the username and password to the client separately. Lines after the first start with "# " and
describe the set, or the routers, the config server set and the shards.

Imports `.replicaset`, `.sharded`, `.demo`, `.control` and `.model` only.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .control import HELP, Controller, ControlServer, read_stream, stdin_takes_commands
from .demo import start_demo_cluster, start_demo_set
from .model import HISTORY_MS, PROFILES, SETTABLE_STATES
from .replicaset import TOPOLOGIES, MemberSpec, ReplicaSet
from .sharded import ShardedCluster

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_UNITS_BYTES = {"": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
INITIAL_SYNC_DEFAULT = (2 * 1024**3, 10 * 1024**2)  # 2 GiB at 10 MiB/s: about three and a half minutes


def _pair(text: str) -> tuple[int, str]:
    member, sep, value = text.partition("=")
    if not sep or not member.strip().isdigit() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected ID=VALUE (a member _id), got {text!r}")
    return int(member), value.strip()


def _duration_ms(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration such as 3600s, 90m or 1500ms, got {text!r}")
    return round(float(match[1]) * _UNITS_MS[match[2] or "s"])


def _size_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([KMG]i?B)?", text.strip(), flags=re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size such as 2GiB, 990MB or 1048576, got {text!r}")
    return int(match[1]) * _UNITS_BYTES[(match[2] or "").upper()]


def _window(text: str) -> tuple[int, int]:
    member, value = _pair(text)
    return member, _duration_ms(value)


def _oplog_mb(text: str) -> tuple[int, float]:
    member, value = _pair(text)
    try:
        return member, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ID=MB, got {text!r}") from None


def _initial_sync(text: str) -> tuple[int, int, int]:
    """ID or ID=SIZE@RATE (RATE per second)."""
    member, _, spec = text.partition("=")
    if not member.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected ID or ID=SIZE@RATE, got {text!r}")
    if not spec:
        return int(member), *INITIAL_SYNC_DEFAULT
    size, sep, rate = spec.partition("@")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected ID=SIZE@RATE (e.g. 2=2GiB@10MiB), got {text!r}")
    return int(member), _size_bytes(size), _size_bytes(rate)


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:0, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _tag(text: str) -> tuple[int, str, str]:
    member, value = _pair(text)
    key, sep, tag = value.partition(":")
    if not sep or not key or not tag:
        raise argparse.ArgumentTypeError(f"expected ID=KEY:VALUE (e.g. 1=zone:us-east-1b), got {text!r}")
    return member, key, tag


def _user(text: str) -> tuple[str, str, list[str]]:
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD[:ROLE,ROLE...] (the password holds no ':')")
    roles = [r for r in parts[2].split(",") if r] if len(parts) == 3 else ["clusterMonitor", "read@local"]
    return parts[0], parts[1], roles


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m mongosim",
        description=__doc__.split("\n\n")[0],
        epilog="While it runs, " + HELP + "\nOn stdin when it is a terminal or a pipe, and on --control HOST:PORT.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--members", type=int, default=3, help="data-bearing members (default 3; _id 0 is primary)")
    p.add_argument("--arbiter", action="store_true", help="add an arbiter after the data members")
    p.add_argument("--version", default="7.0", choices=sorted(PROFILES), help="server version profile")
    p.add_argument("--set-name", default="rs0", help="replica set name (default rs0)")
    p.add_argument(
        "--port",
        type=int,
        default=0,
        help="port of member 0, then +1 per member; with --shards, of router 0 (default: any)",
    )
    p.add_argument("--lag", type=_pair, action="append", default=[], metavar="ID=MS", help="replication lag, ms")
    p.add_argument("--delay", type=_pair, action="append", default=[], metavar="ID=SECS", help="secondaryDelaySecs")
    p.add_argument("--hidden", type=int, action="append", default=[], metavar="ID", help="a hidden member")
    p.add_argument("--priority", type=_pair, action="append", default=[], metavar="ID=P")
    p.add_argument("--votes", type=_pair, action="append", default=[], metavar="ID=V")
    states = ", ".join(SETTABLE_STATES)
    p.add_argument("--state", type=_pair, action="append", default=[], metavar="ID=STATE", help=states)
    p.add_argument(
        "--auth",
        type=_user,
        action="append",
        default=[],
        metavar="USER:PASS[:ROLES]",
        help="require authentication (with --shards: a cluster user); roles default to clusterMonitor,read@local",
    )
    writes = p.add_mutually_exclusive_group()
    writes.add_argument("--idle", action="store_true", help="only a no-op every 10 s (no write traffic)")
    writes.add_argument("--write-rate", type=float, metavar="OPS", help="writes per second instead of traffic")
    p.add_argument("--topology", default="replset", choices=TOPOLOGIES, help="replset, standalone, uninitialized")
    danger = p.add_argument_group("oplog window, majority commit point, flow control, initial sync")
    danger.add_argument(
        "--initiated-ago",
        type=_duration_ms,
        default=HISTORY_MS,
        metavar="DURATION",
        help="when the set was initiated, i.e. its first oplog entry (default 7 days; lags up to that are possible)",
    )
    danger.add_argument(
        "--oplog-window",
        type=_window,
        action="append",
        default=[],
        metavar="ID=DURATION",
        help="size the member's oplog to hold exactly that window of the write traffic (default: 1 day)",
    )
    danger.add_argument(
        "--oplog-size", type=_oplog_mb, action="append", default=[], metavar="ID=MB", help="--oplogSize in MB"
    )
    danger.add_argument(
        "--commit-lag", type=int, metavar="MS", help="hold the majority commit point at least MS behind the last write"
    )
    danger.add_argument("--no-flow-control", action="store_true", help="enableFlowControl false (default: true)")
    danger.add_argument(
        "--flow-control-target-lag",
        type=int,
        metavar="SECS",
        help="flowControlTargetLagSeconds (default 10; flow control engages at half of it)",
    )
    danger.add_argument(
        "--initial-sync",
        type=_initial_sync,
        action="append",
        default=[],
        metavar="ID[=SIZE@RATE]",
        help="the member starts an initial sync (default 2GiB@10MiB), then becomes SECONDARY",
    )
    p.add_argument("--tag", type=_tag, action="append", default=[], metavar="ID=KEY:VALUE", help="a member tag")
    p.add_argument(
        "--zones",
        type=lambda text: [z for z in text.split(",") if z],
        default=[],
        metavar="Z1,Z2,...",
        help="tag member i of every set (shards and config servers too) zone=Z(i mod N)",
    )
    p.add_argument("--ping", type=_pair, action="append", default=[], metavar="ID=MS", help="pingMs reported for it")
    p.add_argument(
        "--control",
        type=_address,
        metavar="HOST:PORT",
        help="also take commands on this loopback TCP port (0: any); see `help` on stdin",
    )
    p.add_argument("--demo", action="store_true", help="the exporter's demo set, or with --shards its demo cluster")
    cluster = p.add_argument_group("sharded cluster (--shards N starts one; the member flags shape every shard)")
    cluster.add_argument(
        "--shards", type=int, default=0, metavar="N", help="shard replica sets (default 0: no cluster)"
    )
    cluster.add_argument("--routers", type=int, default=1, metavar="R", help="mongos routers (default 1)")
    cluster.add_argument("--config-members", type=int, default=3, metavar="C", help="config servers (default 3)")
    cluster.add_argument(
        "--shard-auth",
        type=_user,
        action="append",
        default=[],
        metavar="USER:PASS[:ROLES]",
        help="a shard-local user on every shard (--auth users are cluster users: routers and config servers)",
    )
    cluster.add_argument("--config-shard", action="store_true", help="8.0+: the config servers also hold data")
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> ReplicaSet:
    """The ReplicaSet the flags describe (not started). Raises ValueError for a contradiction."""
    mode, rate = _writes(args)
    return ReplicaSet(
        member_specs(args, ports=bool(args.port)),
        version=args.version,
        name=args.set_name,
        users=[(u, pw, roles) for u, pw, roles in args.auth],
        mode=mode,
        rate=rate,
        topology=args.topology,
        initiated_ago_ms=args.initiated_ago,
    )


def build_cluster(args: argparse.Namespace) -> ShardedCluster:
    """The ShardedCluster the flags describe (not started). Raises ValueError for a contradiction."""
    if args.set_name != "rs0" or args.topology != "replset":
        raise ValueError("--set-name and --topology are for a replica set; shards are named shard01, shard02, ...")
    mode, rate = _writes(args)
    return ShardedCluster(
        args.shards,
        members=member_specs(args, ports=False),
        config_members=_config_members(args.zones, args.config_members),
        routers=args.routers,
        version=args.version,
        users=[(u, pw, roles) for u, pw, roles in args.auth],
        shard_users=[(u, pw, roles) for u, pw, roles in args.shard_auth],
        config_shard=args.config_shard,
        mode=mode,
        rate=rate,
        router_port=args.port,
    )


def _config_members(zones: list[str], count: int) -> int | list[MemberSpec]:
    """The config server set: a count, or with --zones its members tagged like every shard's."""
    if not zones:
        return count
    return [
        MemberSpec(role="primary" if i == 0 else "secondary", tags={"zone": zones[i % len(zones)]})
        for i in range(count)
    ]


def _writes(args: argparse.Namespace) -> tuple[str, float]:
    return ("idle", 0.0) if args.idle else ("rate", args.write_rate) if args.write_rate else ("traffic", 0.0)


def member_specs(args: argparse.Namespace, ports: bool) -> list[MemberSpec]:
    """The members the member flags describe; `ports`: member i listens on --port + i."""
    count = args.members + (1 if args.arbiter else 0)
    if args.members < 1:
        raise ValueError("--members must be at least 1")
    specs = [MemberSpec(role="primary" if i == 0 else "secondary") for i in range(args.members)]
    if args.arbiter:
        specs.append(MemberSpec(role="arbiter"))
    fields: dict[int, dict[str, Any]] = {i: {} for i in range(count)}

    def put(member: int, **values: Any) -> None:
        if member not in fields:
            raise ValueError(f"there is no member {member} (ids are 0..{count - 1})")
        fields[member].update(values)

    for member, value in args.lag:
        put(member, lag_ms=int(value))
    for member, value in args.delay:
        put(member, delay_secs=int(value))
    for member in args.hidden:
        put(member, hidden=True)
    for member, value in args.priority:
        put(member, priority=float(value))
    for member, value in args.votes:
        put(member, votes=int(value))
    for member, value in args.state:
        put(member, state=value.upper())
    tags: dict[int, dict[str, str]] = {i: {} for i in range(count)}
    for i in range(count) if args.zones else ():
        tags[i]["zone"] = args.zones[i % len(args.zones)]
    for member, key, value in args.tag:
        put(member)
        tags[member][key] = value
    for i, member_tags in tags.items():
        if member_tags:
            put(i, tags=member_tags)
    if ports:
        for i in range(count):
            put(i, port=args.port + i)
    return [replace(spec, **fields[i]) for i, spec in enumerate(specs)]


def describe_set(rs: ReplicaSet) -> list[str]:
    lines = []
    for m in rs.members:
        extra = [f"lag {m.lag_ms} ms"] if m.role == "secondary" else []
        extra += ["hidden"] * m.hidden + [f"delay {m.delay_secs} s"] * bool(m.delay_secs)
        lines.append(f"# member {m.id} {m.name} {m.state} ({', '.join([m.version, *extra])})")
    return lines


def describe_cluster(cluster: ShardedCluster) -> list[str]:
    """One line per router, for the config server set and per shard (a 100-shard cluster stays readable)."""

    def members(rs: ReplicaSet) -> str:
        return ", ".join(f"{m.name} {m.state}" + (f" lag {m.lag_ms} ms" if m.lag_ms else "") for m in rs.members)

    lines = [f"# router {r.index} {r.name} (mongos {r.version})" for r in cluster.routers]
    lines.append(f"# config servers (set {cluster.config.name}): {members(cluster.config)}")
    lines += [f"# shard {s} (set {cluster.shard(s).name}): {members(cluster.shard(s))}" for s in cluster.shard_ids]
    return lines


def configure(rs: ReplicaSet, args: argparse.Namespace) -> list[str]:
    """Apply the flags that need a running set; returns a "# " line for each. Raises ValueError."""
    lines = []
    for member, window_ms in args.oplog_window:
        rs.set_oplog(member, window_ms=window_ms)
        lines.append(f"# member {member}: oplog holds {window_ms} ms of writes")
    for member, value in args.oplog_size:
        rs.set_oplog(member, max_size_bytes=round(value * 1024 * 1024))
        lines.append(f"# member {member}: oplog maxSize {value} MB")
    if args.commit_lag is not None:
        rs.set_commit_lag(args.commit_lag)
        lines.append(f"# the majority commit point trails by at least {args.commit_lag} ms")
    if args.no_flow_control or args.flow_control_target_lag is not None:
        rs.set_flow_control(enabled=not args.no_flow_control, target_lag_s=args.flow_control_target_lag)
    for member, total, rate in args.initial_sync:
        rs.start_initial_sync(member, total, rate)
        lines.append(f"# member {member}: initial sync of {total} bytes at {rate} bytes/s")
    return lines


def set_pings(target: ReplicaSet | ShardedCluster, pings: list[tuple[int, str]]) -> None:
    """--ping: on the set, or on every set of the cluster."""
    sets = [target] if isinstance(target, ReplicaSet) else [target.shard(s) for s in target.shard_ids]
    for rs in sets:
        for member, value in pings:
            rs.set_ping(member, int(value))


def _say(text: str) -> None:
    """An answer on stdout, every line after "# " (the URI stays the only line without)."""
    with _PRINTING:
        print("\n".join("# " + line for line in text.splitlines()), flush=True)


_PRINTING = threading.Lock()
_NO_COMMANDS = "# commands: none (stdin is not a terminal or a pipe; --control 127.0.0.1:0 takes them on a port)"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    target: ReplicaSet | ShardedCluster
    try:
        if args.demo:
            target, stop = start_demo_cluster() if args.shards else start_demo_set()
        else:
            target = (build_cluster(args) if args.shards else build(args)).start()
            stop = target.stop
    except (ValueError, OSError) as exc:
        print(f"mongosim: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    controller = Controller(target)
    control: ControlServer | None = None
    try:
        # The danger-signal flags shape a replica set; a cluster's sets are shaped through the Python API.
        lines = configure(target, args) if isinstance(target, ReplicaSet) and not args.demo else []
        set_pings(target, args.ping)
        if args.control:
            control = ControlServer(controller, *args.control)
    except (ValueError, KeyError, OSError) as exc:
        controller.close()
        stop()
        print(f"mongosim: {exc}", file=sys.stderr)
        return 2 if not isinstance(exc, OSError) else 1
    try:
        print(target.uri)
        takes = [
            *(["on stdin"] if stdin_takes_commands() else []),
            *([f"on the control port {control.address}"] if control else []),
        ]
        print(f"# commands {' and '.join(takes)}: `help` lists them" if takes else _NO_COMMANDS)
        print("\n".join(describe_cluster(target) if isinstance(target, ShardedCluster) else describe_set(target)))
        for line in lines:
            print(line)
        users = [("cluster user" if args.shards else "user", "", u) for u in args.auth]
        users += [("shard-local user", " on every shard", u) for u in args.shard_auth]
        for kind, where, (name, _pw, roles) in users:
            print(f"# auth required: {kind} {name!r}{where} (roles {', '.join(roles)}); the password is not in the URI")
        sys.stdout.flush()
        if stdin_takes_commands():
            read_stream(controller, sys.stdin.buffer, _say)
        stopping.wait()
    finally:
        if control is not None:
            control.close()
        controller.close()
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
