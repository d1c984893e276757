"""`ShardedCluster`: a simulated sharded cluster (shard replica sets, a config server replica set, mongos routers)
on 127.0.0.1, every member and every router on its own port, all served by ONE event loop in one thread.

Each shard and the config server set is a whole `ReplicaSet`, so every replica-set control works on it
(`cluster.shard("shard01").set_lag(1, 1500)`, `cluster.config.take_down(0)`). The cluster adds what belongs to the
cluster: routers and their faults, the shard map (add, drain, remove shards; a refused getShardMap), and users:

- cluster users (created through a mongos) live on the config servers: they log in on the routers and directly on
  config server members, never directly on a shard member (18 AuthenticationFailed there);
- shard-local users exist on one shard's members, or on every shard's (given once for all).

Authentication is on everywhere as soon as the cluster has a user, as with the keyFile a real cluster needs: every
set then holds the internal `__system@local` user (with a random password nobody is told).

Names follow the MongoDB manual's examples: shards `shard01`, `shard02`, ... (the shard id is also the set's
name), the config server set `configRepl`. With `config_shard=True` (8.0+) the config server set is also a shard,
`_id: "config"`, listed first.

The cluster reads its sets' models (`ReplicaSet._model`) on the shared loop thread: it is part of the package.

Imports `bson`, `.catalog`, `.commands`, `.model`, `.replicaset`, `.router`, `.scram`, `.server`, `.shardsvr`,
`.wire`.
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import bson
from bson import ObjectId

from . import commands, router, wire
from .catalog import CONFIG_ID, Catalog
from .model import RealClock, profile
from .replicaset import HANGS, MemberSpec, ReplicaSet
from .router import REFUSALS, RouterModel
from .scram import MECHANISMS, User
from .server import LoopThread, Server
from .shardsvr import member_dispatch

CONFIG_SET_NAME = "configRepl"
DEFAULT_ROLES = ("clusterMonitor", "read@local")
UserSpec = tuple[str, str] | tuple[str, str, Sequence[str]]
T = TypeVar("T")


def shard_name(n: int) -> str:
    """The id (and replica set name) of the n-th shard: shard01, shard02, ..., shard100."""
    return f"shard{n:02d}"


class Router:
    """One mongos of a cluster: where it listens, and its faults (down, hang) as a member has them."""

    def __init__(self, index: int, model: RouterModel, *, host: str, port: int, loop: LoopThread) -> None:
        self.index = index
        self._model = model
        self._server = Server(model, host, loop, router.dispatch)
        self._host = host
        self._port = port

    def start(self) -> None:
        member = self._model.member
        member.port = self._server.bind(member, self._port)
        member.name = f"{self._host}:{member.port}"
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    @property
    def name(self) -> str:
        """ "127.0.0.1:PORT" """
        if not self._model.member.port:
            raise RuntimeError("start() the cluster first: routers get their ports when it starts")
        return self._model.member.name

    @property
    def address(self) -> tuple[str, int]:
        return self._host, int(self.name.rpartition(":")[2])

    @property
    def uri(self) -> str:
        return f"mongodb://{self.name}/"

    @property
    def version(self) -> str:
        return self._model.member.version

    @property
    def up(self) -> bool:
        return self._model.member.up

    def take_down(self) -> None:
        """Close its port and drop its connections (a router that is down is not a shard that is down)."""

        async def change() -> None:
            member = self._model.member
            if member.up:
                member.up = False
                member.down_since_ms = self._model.now()
                await self._server.close_member(member.id)

        self._server.call(change)

    def bring_up(self) -> None:
        """Listen again on the same port, as a new process (new topologyVersion processId)."""

        def change() -> None:
            member = self._model.member
            if not member.up:
                self._server.reopen_member(member)
                member.up = True
                member.process_id = ObjectId()
                member.started_ms = self._model.now()

        self._server.call(change)

    def hang(self, mode: str | None) -> None:
        """ "after_accept" (reads, never answers), "before_accept" (never accepts) or None, as for a member."""
        if mode not in HANGS:
            raise ValueError(f"hang mode must be one of {HANGS}")

        def change() -> None:
            member = self._model.member
            member.hang = mode
            if member.up:
                self._server.set_accepting(member.id, mode != "before_accept")

        self._server.call(change)

    def command(self, cmd: str | dict[str, Any], db: str = "admin") -> dict[str, Any]:
        """One command answered in-process by this router, as root (e.g. for the 4.0 profile pymongo refuses)."""
        body = {cmd: 1} if isinstance(cmd, str) else dict(cmd)
        request = wire.Request(request_id=0, opcode=wire.OP_MSG, body={**body, "$db": db}, db=db)
        session = commands.Session(connection_id=0, superuser=True)
        reply = self._server.call(router.dispatch, self._model, self._model.member, session, request)
        return bson.decode(bson.encode(reply))


class ShardedCluster:
    """A simulated sharded cluster; `uri` is the routers' connection string.

    >>> with ShardedCluster(shards=2, version="7.0") as cluster:
    ...     client = MongoClient(cluster.uri, serverSelectionTimeoutMS=2000)
    ...     client.admin.command("getShardMap")["map"]["shard01"]     # 'shard01/127.0.0.1:...,...'
    ...     cluster.shard("shard01").set_lag(1, 1500)
    """

    def __init__(
        self,
        shards: int = 2,
        *,
        members: int | Sequence[MemberSpec] = 3,
        config_members: int | Sequence[MemberSpec] = 3,
        routers: int = 1,
        version: str = "7.0",
        clock: Any = None,
        users: Iterable[UserSpec] = (),
        shard_users: Iterable[UserSpec] = (),
        config_shard: bool = False,
        auth: bool | None = None,
        mode: str = "traffic",
        rate: float = 0.0,
        host: str = "127.0.0.1",
        router_port: int = 0,
    ) -> None:
        """`users` are cluster users, `shard_users` shard-local users of every shard, both `(name, password[,
        roles])`. `auth` defaults to "on when there is a user". `router_port`: the first router's port (then +1
        each; 0 lets the OS choose). `mode`/`rate`: the write traffic of every set, as for a ReplicaSet."""
        if shards < 0 or routers < 1:
            raise ValueError("a cluster has zero or more shards and at least one router")
        if config_shard and not profile(version).at_least("8.0"):
            raise ValueError("a config shard (the config server set holding data) needs 8.0 or later")
        users, shard_users = list(users), list(shard_users)
        self.clock = clock if clock is not None else RealClock()
        self.version = version
        self._members = members
        self._set_options: dict[str, Any] = {"clock": self.clock, "mode": mode, "rate": rate, "host": host}
        self._config_shard = config_shard
        self._loop = LoopThread("mongosim-cluster")
        self._catalog = Catalog(version)
        self.config = ReplicaSet(
            config_members,
            name=CONFIG_SET_NAME,
            version=version,
            loop=self._loop,
            dispatch=member_dispatch(self._catalog, config_server=True),
            **self._set_options,
        )
        self._catalog.config = self.config._model
        self._shards: dict[str, ReplicaSet] = {}
        self._shard_count = 0
        self._keyfile_user: User | None = None
        self._shard_users = [_user(*spec) for spec in shard_users]
        self._routers = [
            Router(
                i,
                RouterModel(f"router{i}", self._catalog, self.clock, version),
                host=host,
                port=router_port + i if router_port else 0,
                loop=self._loop,
            )
            for i in range(routers)
        ]
        self._started = False
        # A cluster dropped without stop() still closes its ports and its thread (at the latest when Python exits).
        weakref.finalize(self, _stop_all, self._routers, self._shards, self.config, self._loop)
        if auth or (auth is None and (users or shard_users)):
            self._enable_auth()
        for spec in users:
            self.config.add_user(*spec)
        for _ in range(shards):
            self._new_shard(members, version, self._shard_users)

    # -- lifecycle --

    def start(self) -> ShardedCluster:
        """Bind every port and start serving: the config servers, the shards, then the routers. Returns self."""
        if self._started:
            return self
        self._started = True
        try:
            self._loop.start()
            self.config.start()
            for rs in list(self._shards.values()):
                rs.start()
            self._loop.call(self._register_initial_shards, self.clock.now_ms())
            for r in self._routers:
                r.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close every port and connection and join the cluster's thread. Safe to call twice."""
        _stop_all(self._routers, self._shards, self.config, self._loop)

    def __enter__(self) -> ShardedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _register_initial_shards(self, now_ms: int) -> None:
        if self._config_shard:
            self._catalog.add(CONFIG_ID, self.config._model, now_ms)
        for shard_id, rs in self._shards.items():
            self._catalog.add(shard_id, rs._model, now_ms)

    def _new_shard(self, members: int | Sequence[MemberSpec], version: str, users: Sequence[User]) -> str:
        """A shard's replica set, not started and not yet in the shard map; returns its id."""
        self._shard_count += 1
        shard_id = shard_name(self._shard_count)
        rs = ReplicaSet(
            members,
            name=shard_id,
            version=version,
            loop=self._loop,
            dispatch=member_dispatch(self._catalog, config_server=False),
            **self._set_options,
        )
        for user in [*([self._keyfile_user] if self._keyfile_user else []), *users]:
            rs._model.users[(user.db, user.name)] = user
        self._shards[shard_id] = rs
        return shard_id

    # -- what the cluster looks like --

    @property
    def uri(self) -> str:
        """mongodb://ROUTER1,ROUTER2/ : the routers, no replicaSet, no password."""
        return f"mongodb://{','.join(r.name for r in self._routers)}/"

    def router_uri(self, index: int) -> str:
        return self._routers[index].uri

    @property
    def routers(self) -> list[Router]:
        return list(self._routers)

    def router(self, index: int) -> Router:
        return self._routers[index]

    @property
    def shard_ids(self) -> list[str]:
        """The shards as listShards lists them (`config` first with a config shard)."""
        return ([CONFIG_ID] if self._config_shard else []) + list(self._shards)

    def shard(self, ref: str | int) -> ReplicaSet:
        """A shard's replica set by id ("shard01"; "config" for a config shard) or by index in `shard_ids`."""
        shard_id = self.shard_ids[ref] if isinstance(ref, int) else ref
        if shard_id == CONFIG_ID and self._config_shard:
            return self.config
        try:
            return self._shards[shard_id]
        except KeyError:
            raise KeyError(f"no shard {ref!r}; shards: {', '.join(self.shard_ids) or 'none'}") from None

    # -- controls: the shard map --

    def add_shard(
        self,
        members: int | Sequence[MemberSpec] | None = None,
        *,
        version: str | None = None,
        users: Iterable[UserSpec] | None = None,
    ) -> str:
        """Start a new shard set and add it to the map (addShard); returns its id. Its shard-local users are the
        cluster's shard-wide users unless `users` names others."""
        self._require_started()
        own_users = self._shard_users if users is None else [_user(*spec) for spec in users]
        shard_id = self._new_shard(self._members if members is None else members, version or self.version, own_users)
        rs = self._shards[shard_id]
        try:
            rs.start()
            self._loop.call(self._catalog.add, shard_id, rs._model, self.clock.now_ms())
        except BaseException:
            del self._shards[shard_id]
            rs.stop()
            raise
        return shard_id

    def drain_shard(self, shard_id: str) -> None:
        """removeShard's first step: listShards and config.shards show `draining: true`."""
        self._require_started()
        self._loop.call(lambda: setattr(self._catalog.entry(shard_id), "draining", True))

    def remove_shard(self, shard_id: str) -> None:
        """The shard leaves the map and its set stops (its ports are free). Removing "config" turns a config shard
        back into a dedicated config server set, which keeps running."""
        self._require_started()
        self._loop.call(lambda: self._catalog.shards.pop(self._catalog.entry(shard_id).id))
        if shard_id == CONFIG_ID:
            self._config_shard = False
            return
        self._shards.pop(shard_id).stop()

    def refuse_shard_map(self, kind: str | None) -> None:
        """Make getShardMap fail on every router: "atlas" (8000 AtlasError, as Atlas's shared tiers and
        serverless answer), "unauthorized" (13, a user without the getShardMap privilege), or None (answer)."""
        if kind not in REFUSALS:
            raise ValueError(f"refusal must be one of {REFUSALS}")
        self._on_loop(setattr, self._catalog, "shard_map_refusal", kind)

    def refuse_list_shards(self, kind: str | None) -> None:
        """Make listShards fail on every router, as `refuse_shard_map` does getShardMap (a user without
        clusterMonitor gets 13 for both)."""
        if kind not in REFUSALS:
            raise ValueError(f"refusal must be one of {REFUSALS}")
        self._on_loop(setattr, self._catalog, "list_shards_refusal", kind)

    def refuse_config_shards(self, kind: str | None) -> None:
        """Make every read of `config.shards` through a router fail, as `refuse_shard_map` does getShardMap (13
        for a user without read on the config database)."""
        if kind not in REFUSALS:
            raise ValueError(f"refusal must be one of {REFUSALS}")
        self._on_loop(setattr, self._catalog, "config_shards_refusal", kind)

    # -- controls: users --

    def add_cluster_user(
        self,
        name: str,
        password: str,
        roles: Sequence[str] = DEFAULT_ROLES,
        db: str = "admin",
        mechanisms: Sequence[str] = MECHANISMS,
    ) -> None:
        """A user created through a mongos: it lives on the config servers (routers and config members accept
        it, shard members do not). Again for the same name: a grant or revoke, at once on open connections."""
        self._enable_auth()
        self.config.add_user(name, password, roles, db, mechanisms)

    def remove_cluster_user(self, name: str, db: str = "admin") -> None:
        self._on_loop(self.config._model.users.pop, (db, name), None)

    def add_shard_user(
        self,
        name: str,
        password: str,
        roles: Sequence[str] = DEFAULT_ROLES,
        *,
        shard: str | int | None = None,
        db: str = "admin",
        mechanisms: Sequence[str] = MECHANISMS,
    ) -> None:
        """A shard-local user on one shard's members, or (`shard=None`) on every shard's, shards added later
        included. A config shard's own users are cluster users: add those with add_cluster_user."""
        user = User.create(name, password, roles, db=db, mechanisms=mechanisms)
        if shard is None:
            self._shard_users = [u for u in self._shard_users if (u.db, u.name) != (db, name)] + [user]
        self._enable_auth()
        self._install(user, self._shard_sets(shard))

    def remove_shard_user(self, name: str, *, shard: str | int | None = None, db: str = "admin") -> None:
        if shard is None:
            self._shard_users = [u for u in self._shard_users if (u.db, u.name) != (db, name)]
        sets = self._shard_sets(shard)
        self._on_loop(lambda: [rs._model.users.pop((db, name), None) for rs in sets])

    def _shard_sets(self, shard: str | int | None) -> list[ReplicaSet]:
        return list(self._shards.values()) if shard is None else [self.shard(shard)]

    def _enable_auth(self) -> None:
        """The keyFile's internal user on every set: from now on every member and router requires a login."""
        if self._keyfile_user is None:
            self._keyfile_user = User.create("__system", secrets.token_urlsafe(24), ("__system",), db="local")
            self._install(self._keyfile_user, [self.config, *self._shards.values()])

    def _install(self, user: User, sets: list[ReplicaSet]) -> None:
        """One User object (its SCRAM keys derived once) for many sets: PBKDF2 per set would cost seconds."""
        self._on_loop(lambda: [rs._model.users.__setitem__((user.db, user.name), user) for rs in sets])

    # -- helpers --

    def _on_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run on the cluster's loop once it runs (no command sees half a change), right here before."""
        return self._loop.call(fn, *args) if self._loop.running else fn(*args)

    def _require_started(self) -> None:
        if not self._started or not self._loop.running:
            raise RuntimeError("start() the cluster first")


def _user(name: str, password: str, roles: Sequence[str] = DEFAULT_ROLES) -> User:
    return User.create(name, password, roles)


def _stop_all(routers: list[Router], shards: dict[str, ReplicaSet], config: ReplicaSet, loop: LoopThread) -> None:
    for r in routers:
        r.stop()
    for rs in list(shards.values()):
        rs.stop()
    config.stop()
    loop.stop()


__all__ = ["CONFIG_SET_NAME", "Router", "ShardedCluster", "shard_name"]
