"""The public face of the simulator: `ReplicaSet`, a running set you start, steer and stop from tests.

Every control is a thread-safe method that returns once the change is in place: it runs on the simulator's
event-loop thread, so no command ever sees half a change, and the next hello (held awaitable hellos are woken at
once) already shows it. Members are addressed by `_id` (their index in the initial list) or by name
("127.0.0.1:PORT").

Imports `.model`, `.server`, `.commands`, `.storage`, `.scram` and `.wire`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import ObjectId

from . import commands, model, storage, wire
from .model import ManualClock, Member, RealClock, SetModel
from .scram import User
from .server import Dispatch, LoopThread, Server

MemberRef = int | str

ROLES = ("primary", "secondary", "arbiter")
HANGS = (None, "after_accept", "before_accept")
TOPOLOGIES = ("replset", "standalone", "uninitialized")
WRITE_MODES = ("traffic", "idle", "rate")


@dataclass(frozen=True)
class MemberSpec:
    """How to build one member. `role` is "primary", "secondary" or "arbiter"; `port` 0 lets the OS choose."""

    role: str = "secondary"
    priority: float | None = None  # default 1, or 0 for arbiters, hidden and delayed members
    votes: int = 1
    hidden: bool = False
    delay_secs: int = 0
    lag_ms: int = 0
    state: str = "SECONDARY"
    version: str | None = None  # default: the set's version
    port: int = 0
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MemberInfo:
    """A read-only snapshot of one member, as the simulator holds it."""

    id: int
    name: str
    port: int
    role: str  # "primary", "secondary" or "arbiter"
    state: str  # the member's own state: PRIMARY, SECONDARY, ARBITER, RECOVERING, ...
    up: bool
    hang: str | None
    hidden: bool
    priority: float
    votes: int
    delay_secs: int
    lag_ms: int  # the raw lag it applies with: set_lag's value, never less than its delay nor its sync source's
    version: str
    tags: dict[str, str] = field(default_factory=dict)  # replSetGetConfig members[].tags
    ping_ms: int | None = None  # the pingMs the others report for it; None: the default (its _id % 3)


class ReplicaSet:
    """A simulated MongoDB replica set on 127.0.0.1, one port per member.

    >>> with ReplicaSet(3, arbiter=True, version="7.0") as rs:
    ...     client = MongoClient(rs.uri, serverSelectionTimeoutMS=2000)
    ...     rs.set_lag(1, 1500)
    """

    def __init__(
        self,
        members: int | Sequence[MemberSpec] = 3,
        *,
        arbiter: bool = False,
        version: str = "7.0",
        name: str = "rs0",
        clock: Any = None,
        users: Iterable[tuple[str, str] | tuple[str, str, Sequence[str]]] = (),
        mode: str = "traffic",
        rate: float = 0.0,
        topology: str = "replset",
        host: str = "127.0.0.1",
        loop: LoopThread | None = None,
        dispatch: Dispatch = commands.dispatch,
        initiated_ago_ms: int = model.HISTORY_MS,
    ) -> None:
        """`loop` and `dispatch` are for a ShardedCluster: a loop thread its sets share, and what a member of a
        shard or of the config server set answers."""
        model.profile(version)
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {', '.join(TOPOLOGIES)}")
        specs = (
            [MemberSpec(role="primary" if i == 0 else "secondary") for i in range(members)]
            if isinstance(members, int)
            else list(members)
        )
        if arbiter:
            specs.append(MemberSpec(role="arbiter"))
        if not specs:
            raise ValueError("a replica set needs at least one member")
        if mode not in WRITE_MODES:
            raise ValueError(f"mode must be one of {', '.join(WRITE_MODES)}")
        self.clock = clock if clock is not None else RealClock()
        self._version_default = version
        self._model = SetModel(name, self.clock, version, mode=mode, rate=rate, initiated_ago_ms=initiated_ago_ms)
        self._model.topology = topology
        self._server = Server(self._model, host, loop, dispatch)
        self._host = host
        self._specs = specs
        self._started = False
        # Members whose lag a person set by hand (mongosim.control): a driver such as the demo's leaves them alone.
        self.manual: set[int] = set()
        # A set dropped without stop() still closes its ports and thread (at the latest when Python exits).
        weakref.finalize(self, self._server.stop)
        for user in users:
            self.add_user(*user)

    # -- lifecycle --

    def start(self) -> ReplicaSet:
        """Bind every member's port and start serving. Returns self. A set starts once."""
        if self._started:
            return self
        self._started = True
        m = self._model
        try:
            primary_given = any(s.role == "primary" for s in self._specs)
            for i, spec in enumerate(self._specs):
                member = self._member_from_spec(i, spec)
                member.port = self._server.bind(member, spec.port)
                member.name = f"{self._host}:{member.port}"
                m.add(member)
                member.started_ms = m.initiated_ms
            if not primary_given:
                eligible = [x for x in m.members.values() if x.data_bearing and x.priority > 0]
                if eligible and eligible[0].state == model.SECONDARY:
                    eligible[0].state = model.PRIMARY
            primaries = [x for x in m.members.values() if x.state == model.PRIMARY]
            if len(primaries) > 1:
                raise ValueError("at most one member can start as primary")
            m.primary_id = primaries[0].id if primaries else None
            if m.primary_id is None:
                m.oplog.switch("stopped", m.now())
            self._server.start()
        except BaseException:
            self._server.stop()
            raise
        return self

    def stop(self) -> None:
        """Close every listener and connection and join the simulator's thread. Safe to call twice."""
        self._server.stop()

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _member_from_spec(self, i: int, spec: MemberSpec) -> Member:
        if spec.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        arbiter = spec.role == "arbiter"
        quiet = arbiter or spec.hidden or spec.delay_secs > 0 or spec.votes == 0
        priority = spec.priority if spec.priority is not None else (0.0 if quiet else 1.0)
        if spec.role == "primary":
            if quiet or priority <= 0:
                raise ValueError("a primary cannot be hidden, delayed, non-voting or of priority 0")
            state = model.PRIMARY
        elif arbiter:
            state = model.ARBITER
        else:
            state = _state_code(spec.state)
        version = spec.version or self._version_default
        model.profile(version)
        return Member(
            id=i,
            port=spec.port,
            name="",
            arbiter=arbiter,
            priority=float(priority),
            votes=spec.votes,
            hidden=spec.hidden,
            delay_secs=spec.delay_secs,
            lag_ms=0 if spec.role == "primary" else spec.lag_ms,
            state=state,
            version=version,
            tags=dict(spec.tags),
        )

    # -- what the set looks like --

    @property
    def name(self) -> str:
        return self._model.name

    @property
    def uri(self) -> str:
        """A connection string without credentials: every non-hidden member, and `replicaSet=` (or, for a
        standalone or an uninitialised set, the first member with `directConnection=true`)."""
        members = self._call(lambda: list(self._model.members.values()))
        if self._model.topology != "replset":
            return f"mongodb://{members[0].name}/?directConnection=true"
        seeds = ",".join(x.name for x in members if not x.hidden)
        return f"mongodb://{seeds}/?replicaSet={self._model.name}"

    @property
    def members(self) -> list[MemberInfo]:
        return self._call(lambda: [_info(self._model, x) for x in self._model.members.values()])

    def member(self, ref: MemberRef) -> MemberInfo:
        return self._call(lambda: _info(self._model, self._model.member(ref)))

    @property
    def primary(self) -> str | None:
        """The primary's name, or None."""
        return self._call(lambda: self._model.primary.name if self._model.primary else None)

    def address(self, ref: MemberRef) -> tuple[str, int]:
        info = self.member(ref)
        return self._host, info.port

    def command(self, ref: MemberRef, cmd: str | dict[str, Any], db: str = "admin") -> dict[str, Any]:
        """Run one command in-process as member `ref` answers it (no socket, authenticated as root).

        Handy to look at a document without a driver (e.g. the 4.0 profile, which pymongo 4.20 refuses); the reply
        is what the wire would carry, decoded as a client decodes it.
        """
        body = {cmd: 1} if isinstance(cmd, str) else dict(cmd)
        body.setdefault("$db", db)
        request = wire.Request(request_id=0, opcode=wire.OP_MSG, body=body, db=db)

        def run() -> dict[str, Any]:
            session = commands.Session(connection_id=0, superuser=True)
            return self._server.dispatch(self._model, self._model.member(ref), session, request)

        return bson.decode(bson.encode(self._call(run)))  # exactly the types a client decodes

    # -- controls: lag and delay --

    def set_lag(self, ref: MemberRef, ms: int, written_ms: int | None = None) -> None:
        """Replication lag of a secondary in exact ms (an apply delay: it has applied the first oplog entry
        written `ms` ago). `written_ms` (8.0: optimeWritten/lastWrittenWallTime) defaults to the same."""
        if ms < 0 or (written_ms is not None and written_ms < 0):
            raise ValueError("lag must be >= 0 ms")

        def change() -> None:
            member = self._model.member(ref)
            if member.arbiter or member.id == self._model.primary_id:
                raise ValueError(f"{member.name} is the primary or an arbiter: it has no lag")
            member.lag_ms = int(ms)
            member.written_lag_ms = None if written_ms is None else int(written_ms)

        self._call(change)

    def set_clock_offset(self, ref: MemberRef, ms: int) -> None:
        """Step one member's own clock by `ms` against the set's (negative: back): from now on it reports the
        set's time plus `ms` as its `date` in replSetGetStatus and its `localTime` in hello and serverStatus, as
        a mongod reports its host's clock. The oplog keeps the set's wall times, so this is a clock stepped after
        the writes shown (on the primary: a `date` behind its own newest writes when `ms` is negative). 0 undoes it."""

        def change() -> None:
            self._model.member(ref).clock_offset_ms = int(ms)

        self._call(change)

    def fail_command(self, ref: MemberRef, name: str, code: int | None = 2) -> None:
        """Make one member answer every `name` command (e.g. "find") with error `code`, as mongod's failCommand
        failpoint does (`configureFailPoint` on a test server; errmsg "Failing command via 'failCommand'
        failpoint"), after authentication; `code=None` lifts it."""

        def change() -> None:
            failing = self._model.member(ref).fail_commands
            if code is None:
                failing.pop(name, None)
            else:
                failing[name] = int(code)

        self._call(change)

    def set_delay(self, ref: MemberRef, secs: int) -> None:
        """secondaryDelaySecs (slaveDelay before 5.0) in the config; a delayed member gets priority 0, as a
        real reconfig demands, and is from then on at least `secs` behind (set_lag can put it further back)."""

        def change() -> None:
            member = self._data_secondary(ref)
            member.delay_secs = int(secs)
            if secs > 0:
                member.priority = 0.0
            self._model.reconfigured()

        self._call(change)

    # -- controls: oplog size, majority commit point, flow control, initial sync --

    def set_oplog(
        self,
        ref: MemberRef,
        *,
        max_size_bytes: int | None = None,
        window_ms: int | None = None,
        min_retention_hours: float | None = None,
    ) -> None:
        """Resize a member's oplog (replSetResizeOplog): `max_size_bytes` (maxSize), or `window_ms`, a maxSize
        that holds the last window_ms of writes (exactly that window, newest wall - oldest wall, under continuous
        traffic); `min_retention_hours` is oplogMinRetentionHours (0: none). Unlike a real server, any size of at
        least one entry is accepted (a real one refuses less than 990 MB)."""
        if max_size_bytes is not None and window_ms is not None:
            raise ValueError("give max_size_bytes or window_ms, not both")
        if min_retention_hours is not None and min_retention_hours < 0:
            raise ValueError("min_retention_hours must be >= 0")

        def change() -> None:
            m = self._model
            member = m.member(ref)
            if member.arbiter:
                raise ValueError(f"{member.name} is an arbiter: it has no oplog")
            size = max_size_bytes
            if window_ms is not None:
                size = storage.window_bytes(m, window_ms, m.now())
            if size is not None:
                if size < m.entry_bytes:
                    raise ValueError(f"an oplog holds at least one entry ({m.entry_bytes} bytes)")
                member.oplog_max_bytes = int(size)
            if min_retention_hours is not None:
                member.oplog_min_retention_ms = round(min_retention_hours * 3_600_000)

        self._call(change)

    def set_oplog_entry_bytes(self, entry_bytes: int) -> None:
        """How many bytes every oplog entry counts for (set-wide, history included; default 143)."""
        if entry_bytes < 1:
            raise ValueError("an oplog entry takes at least one byte")
        self._call(lambda: setattr(self._model, "entry_bytes", int(entry_bytes)))

    def set_commit_lag(self, ms: int | None) -> None:
        """Hold the majority commit point at least `ms` behind the newest write (None: derive it only from what
        the members have made durable). The commit point never moves back: after this it stays where it is until
        the newest write is `ms` ahead of it, so advance the clock by `ms` to see it trail by exactly `ms`."""
        if ms is not None and ms < 0:
            raise ValueError("a commit lag is >= 0 ms")
        self._call(lambda: setattr(self._model, "commit_lag_ms", None if ms is None else int(ms)))

    def set_flow_control(self, enabled: bool | None = None, target_lag_s: int | None = None) -> None:
        """The enableFlowControl and flowControlTargetLagSeconds parameters, on every member (4.2+ profiles).
        Flow control engages once the commit point trails the primary's last write by half the target."""
        if target_lag_s is not None and target_lag_s <= 0:
            raise ValueError("flowControlTargetLagSeconds must be > 0")

        def change() -> None:
            settings = self._model.flow_settings
            if enabled is not None:
                settings.enabled = bool(enabled)
            if target_lag_s is not None:
                settings.target_lag_s = int(target_lag_s)

        self._call(change)

    def start_initial_sync(
        self, ref: MemberRef, total_bytes: int, bytes_per_s: int, source: MemberRef | None = None
    ) -> None:
        """A secondary starts a logical initial sync of `total_bytes` at `bytes_per_s` from `source` (default:
        its sync source, else the primary). It is STARTUP2 (the others see epoch optimes) and reports
        initialSyncStatus until the last byte is copied, total_bytes / bytes_per_s seconds later; then it is a
        SECONDARY again, applying with its set_lag, with an oplog that starts where the copy began."""
        self._call(lambda: self._model.start_initial_sync(ref, total_bytes, bytes_per_s, source))

    # -- controls: configuration --

    def set_hidden(self, ref: MemberRef, hidden: bool = True) -> None:
        """Hide a secondary (priority becomes 0) or unhide it (priority stays 0 until set_priority)."""

        def change() -> None:
            member = self._data_secondary(ref)
            member.hidden = bool(hidden)
            if hidden:
                member.priority = 0.0
            self._model.reconfigured()

        self._call(change)

    def set_priority(self, ref: MemberRef, priority: float) -> None:
        def change() -> None:
            member = self._model.member(ref)
            if member.arbiter and priority:
                raise ValueError("an arbiter has priority 0")
            if priority > 0 and (member.hidden or member.delay_secs or member.votes == 0):
                raise ValueError("hidden, delayed and non-voting members must keep priority 0")
            if priority <= 0 and member.id == self._model.primary_id:
                raise ValueError("the primary cannot get priority 0; elect another member first")
            member.priority = float(priority)
            self._model.reconfigured()

        self._call(change)

    def set_votes(self, ref: MemberRef, votes: int) -> None:
        """0 or 1; a non-voting member gets priority 0, as a real reconfig demands."""
        if votes not in (0, 1):
            raise ValueError("votes is 0 or 1")

        def change() -> None:
            member = self._model.member(ref)
            if votes == 0 and member.id == self._model.primary_id:
                raise ValueError("the primary must vote; elect another member first")
            member.votes = votes
            if votes == 0:
                member.priority = 0.0
            self._model.reconfigured()

        self._call(change)

    def set_role(self, ref: MemberRef, role: str) -> None:
        """ "primary" (an election), "secondary" (a primary steps down, an arbiter becomes a data member) or
        "arbiter" (a data member becomes an arbiter; the config changes)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if role == "primary":
            self.elect(ref)
            return

        def change() -> None:
            m = self._model
            member = m.member(ref)
            if member.id == m.primary_id:
                m.step_down()
            if role == "arbiter" and not member.arbiter:
                member.arbiter, member.state, member.priority = True, model.ARBITER, 0.0
                member.hidden, member.delay_secs, member.lag_ms = False, 0, 0
                m.reconfigured()
            elif role == "secondary" and member.arbiter:
                member.arbiter, member.state, member.priority = False, model.SECONDARY, 1.0
                m.reconfigured()

        self._call(change)

    def set_sync_source(self, ref: MemberRef, source: MemberRef | None) -> None:
        """Chain a secondary through another member (None: sync from the primary). A chained member is never
        ahead of its source: its lag behind the primary is the larger of its own set_lag and its source's. While
        the chosen source cannot serve (down, hung, not PRIMARY/SECONDARY) it syncs from the primary, as a real
        member picks another source."""

        def change() -> None:
            m = self._model
            member = self._data_secondary(ref)
            if source is None:
                member.sync_source = None
                return
            chosen = m.member(source)
            if chosen.arbiter or chosen.id == member.id:
                raise ValueError("a sync source is another data-bearing member")
            hop: Member | None = chosen
            while hop is not None and hop.sync_source is not None and hop.id != m.primary_id:
                if hop.sync_source == member.id:
                    raise ValueError(f"{chosen.name} syncs (through others) from {member.name}: no cycles")
                hop = m.members.get(hop.sync_source)
            member.sync_source = chosen.id

        self._call(change)

    def set_ping(self, ref: MemberRef, ms: int | None) -> None:
        """The heartbeat round trip (`pingMs`) the other members report for this one; None: the default."""
        if ms is not None and ms < 0:
            raise ValueError("pingMs must be >= 0")

        def change() -> None:
            self._model.member(ref).ping_ms = None if ms is None else int(ms)

        self._call(change)

    def set_tags(self, ref: MemberRef, tags: dict[str, str]) -> None:
        """Replace the member's tags in the config (`replSetGetConfig` members[].tags); advances the version."""

        def change() -> None:
            self._model.member(ref).tags = {str(k): str(v) for k, v in tags.items()}
            self._model.reconfigured()

        self._call(change)

    def rename(self, ref: MemberRef, new_name: str) -> None:
        """Change a member's host:port name in the config (the member keeps listening on its port; a driver
        only reaches it if the new name resolves to that port, e.g. "localhost:PORT")."""

        def change() -> None:
            self._model.member(ref).name = new_name
            self._model.reconfigured()

        self._call(change)

    # -- controls: states, elections, faults --

    def set_state(self, ref: MemberRef, state: str) -> None:
        """STARTUP, STARTUP2, RECOVERING, ROLLBACK or SECONDARY. Setting it on the primary steps it down."""
        self._call(lambda: self._model.set_state(ref, state))

    def elect(self, ref: MemberRef) -> None:
        """`ref` becomes primary: term and electionId advance, the old primary becomes a caught-up secondary,
        the config (setVersion) is unchanged."""
        self._call(lambda: self._model.elect(ref))

    def no_primary(self) -> None:
        """The primary steps down and nobody is elected: writes stop until elect()."""
        self._call(self._model.step_down)

    def take_down(self, ref: MemberRef) -> None:
        """The member's port is closed and its connections dropped; the others report it DOWN (health 0, state
        8, epoch optimes). A primary taken down leaves the set without a primary until elect()."""

        async def change() -> None:
            m = self._model
            member = m.member(ref)
            if not member.up:
                return
            if member.id == m.primary_id:
                m.step_down()
            member.up = False
            member.down_since_ms = m.now()
            await self._server.close_member(member.id)
            m.changed()

        self._call(change)

    def bring_up(self, ref: MemberRef) -> None:
        """Listen again on the same port; the member comes back as a SECONDARY with a new process id."""

        def change() -> None:
            m = self._model
            member = m.member(ref)
            if member.up:
                return
            self._server.reopen_member(member)
            member.up = True
            member.process_id = ObjectId()
            member.started_ms = m.now()
            if member.state == model.PRIMARY:
                member.state = model.SECONDARY
            m.changed()

        self._call(change)

    def hang(self, ref: MemberRef, mode: str | None) -> None:
        """ "after_accept": connections are accepted and read, never answered. "before_accept": the port listens
        but nothing is accepted (the kernel backlog fills) and open connections are never answered either.
        None: answer again. The others report a hung member DOWN at once (a real set takes
        heartbeatTimeoutSecs, 10 s)."""
        if mode not in HANGS:
            raise ValueError(f"hang mode must be one of {HANGS}")

        def change() -> None:
            m = self._model
            member = m.member(ref)
            if mode is not None and member.hang is None:
                member.down_since_ms = m.now()
            member.hang = mode
            if member.up:
                self._server.set_accepting(member.id, mode != "before_accept")
            m.changed()

        self._call(change)

    def set_topology(self, kind: str) -> None:
        """ "replset", "standalone" (replSetGetStatus answers 76 NoReplicationEnabled) or "uninitialized"
        (94 NotYetInitialized; hello says isreplicaset)."""
        if kind not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {', '.join(TOPOLOGIES)}")

        def change() -> None:
            self._model.topology = kind
            self._model.changed()

        self._call(change)

    def set_version(self, version: str, ref: MemberRef | None = None) -> None:
        """Change the server version profile of one member (a step of a rolling upgrade) or of all. Each
        changed member restarts: its connections drop and it gets a new process id."""
        model.profile(version)

        async def change() -> None:
            m = self._model
            targets = [m.member(ref)] if ref is not None else list(m.members.values())
            for member in targets:
                member.version = version
                member.process_id = ObjectId()
                await self._server.drop_connections(member.id)
            if ref is None:
                self._version_default = version
            m.changed()

        self._call(change)

    # -- controls: membership and users --

    def add_member(self, role: str = "secondary", **spec: Any) -> str:
        """Add a member (MemberSpec fields as keywords) on a new port; the config version advances.
        Returns its name."""
        member_spec = MemberSpec(role=role, **spec)
        if role == "primary":
            raise ValueError("add a secondary, then elect() it")

        def change() -> str:
            m = self._model
            member = self._member_from_spec(max(m.members, default=-1) + 1, member_spec)
            member.port = self._server.bind(member, member_spec.port)
            member.name = f"{self._host}:{member.port}"
            m.add(member)
            m.reconfigured()
            return member.name

        return self._call(change)

    def remove_member(self, ref: MemberRef) -> None:
        """Remove a member from the config; its port is closed. Removing the primary leaves no primary."""

        async def change() -> None:
            m = self._model
            member = m.member(ref)
            if member.id == m.primary_id:
                m.step_down()
            await self._server.close_member(member.id)
            self._server.forget_member(member.id)
            del m.members[member.id]
            m.reconfigured()

        self._call(change)

    def add_user(
        self,
        name: str,
        password: str,
        roles: Sequence[str] = ("clusterMonitor", "read@local"),
        db: str = "admin",
        mechanisms: Sequence[str] = ("SCRAM-SHA-1", "SCRAM-SHA-256"),
    ) -> None:
        """Add a user; with at least one user the set requires authentication (code 13 without it)."""
        user = User.create(name, password, roles, db=db, mechanisms=mechanisms)
        if not self._started:
            self._model.users[(db, name)] = user
            return
        self._call(lambda: self._model.users.__setitem__((db, name), user))

    def remove_user(self, name: str, db: str = "admin") -> None:
        self._call(lambda: self._model.users.pop((db, name), None))

    # -- controls: write traffic --

    def traffic(self) -> None:
        """Continuous writes (the default): two oplog entries every wall millisecond."""
        self._call(self._set_mode_now, "traffic", 0.0)

    def idle(self) -> None:
        """Only the primary's periodic no-op every 10 s, plus explicit write() calls."""
        self._call(self._set_mode_now, "idle", 0.0)

    def write_rate(self, ops_per_s: float) -> None:
        """Writes at a fixed rate (ops per second, up to 10 000)."""
        self._call(self._set_mode_now, "rate", float(ops_per_s))

    def write(self, ns: str = "app.events", doc: dict[str, Any] | None = None) -> dict[str, Any]:
        """One write on the primary now; returns {"ts": Timestamp, "wall_ms": int} of its oplog entry."""

        def change() -> dict[str, Any]:
            m = self._model
            if m.primary_id is None:
                raise ValueError("there is no primary to write to")
            entry = m.oplog.write(m.now(), ns=ns, o=doc)
            return {"ts": entry.ts, "wall_ms": entry.wall}

        return self._call(change)

    def _set_mode_now(self, mode: str, rate: float) -> None:
        if mode not in WRITE_MODES:
            raise ValueError(f"mode must be one of {', '.join(WRITE_MODES)}")
        self._model.set_write_mode(mode, rate)

    # -- helpers --

    def _call(self, fn: Any, *args: Any) -> Any:
        if not self._started:
            raise RuntimeError("start() the set first: members get their ports when it starts")

        def settled(*fn_args: Any) -> Any:
            self._model.settle(self._model.now())  # what the clock did so far happened before this control
            return fn(*fn_args)

        return self._server.call(settled, *args)

    def _data_secondary(self, ref: MemberRef) -> Member:
        member = self._model.member(ref)
        if member.arbiter:
            raise ValueError(f"{member.name} is an arbiter")
        if member.id == self._model.primary_id:
            raise ValueError(f"{member.name} is the primary; elect another member first")
        return member


def _state_code(state: str) -> int:
    try:
        return model.SETTABLE_STATES[state.upper()]
    except KeyError:
        raise ValueError(f"state must be one of {', '.join(model.SETTABLE_STATES)}") from None


def _info(m: SetModel, x: Member) -> MemberInfo:
    role = "arbiter" if x.arbiter else "primary" if x.id == m.primary_id else "secondary"
    return MemberInfo(
        id=x.id,
        name=x.name,
        port=x.port,
        role=role,
        state=model.STATE_NAMES[x.state] if x.up else "DOWN",
        up=x.up,
        hang=x.hang,
        hidden=x.hidden,
        priority=x.priority,
        votes=x.votes,
        delay_secs=x.delay_secs,
        lag_ms=0 if x.arbiter or x.id == m.primary_id else m.delay_ms(x),
        version=x.version,
        tags=dict(x.tags),
        ping_ms=x.ping_ms,
    )


__all__ = ["ManualClock", "MemberInfo", "MemberSpec", "RealClock", "ReplicaSet"]
