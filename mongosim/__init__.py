"""mongosim: a simulated MongoDB replica set, or sharded cluster, that the real driver (pymongo 4.x) cannot tell
from a real one.

For tests, benchmarks and the exporter's demo; no mongod needed. Each member (and each mongos) listens on its own
127.0.0.1 port and speaks the wire protocol (OP_MSG, OP_QUERY/OP_REPLY); one asyncio loop in one daemon thread
serves a whole set, or a whole cluster.

Public API (details, the lag model and where a real server differs: mongosim/README.md):

    ReplicaSet(members=3, *, arbiter=False, version="7.0", name="rs0", clock=None, users=(), mode="traffic",
               rate=0.0, topology="replset", initiated_ago_ms=7 days)   start() / stop() / context manager
        uri, name, members, member(ref), primary, address(ref), clock, command(ref, cmd, db="admin")
        set_lag(ref, ms, written_ms=None)   set_delay(ref, secs)   set_sync_source(ref, source)
        set_hidden(ref, hidden=True)   set_priority(ref, p)   set_votes(ref, v)   set_role(ref, role)
        set_state(ref, state)   elect(ref)   no_primary()   take_down(ref)   bring_up(ref)   hang(ref, mode)
        set_topology(kind)   set_version(version, ref=None)   add_member(role, **spec)   remove_member(ref)
        rename(ref, name)   add_user(name, password, roles, db, mechanisms)   remove_user(name, db)
        traffic()   idle()   write_rate(ops_per_s)   write(ns, doc)
        set_oplog(ref, *, max_size_bytes=None, window_ms=None, min_retention_hours=None)   set_oplog_entry_bytes(n)
        set_commit_lag(ms)   set_flow_control(enabled=None, target_lag_s=None)
        start_initial_sync(ref, total_bytes, bytes_per_s, source=None)
    ShardedCluster(shards=2, *, members=3, config_members=3, routers=1, version="7.0", clock=None, users=(),
                   shard_users=(), config_shard=False, auth=None, mode="traffic", rate=0.0, router_port=0)
        uri, router_uri(i), routers, router(i), shard_ids, shard(id_or_index), config, clock, version
        add_shard(members=None, *, version=None, users=None)   drain_shard(id)   remove_shard(id)
        refuse_shard_map("atlas" | "unauthorized" | None)
        add_cluster_user(...)   remove_cluster_user(name)   add_shard_user(..., shard=None)   remove_shard_user(...)
    Router                            take_down()  bring_up()  hang(mode)  command(cmd, db)  name, address, uri
    MemberSpec, MemberInfo           how to build a member / a snapshot of one
    ManualClock(start_ms), RealClock  the injectable clock (advance(ms), set(ms), now_ms())
    PROFILES                          the version profiles: 4.0, 4.4, 5.0, 6.0, 7.0, 8.0
    mongosim.demo.start_demo_set(clock=None) -> (ReplicaSet, stop)
    mongosim.demo.start_demo_cluster(clock=None) -> (ShardedCluster, stop)
    python -m mongosim --help         the command line

A member reference `ref` is its `_id` (its index in the initial list) or its name "127.0.0.1:PORT".
Imports `bson` (shipped with pymongo) and the standard library; never pymongo itself.
"""

from .model import PROFILES, ManualClock, RealClock
from .replicaset import MemberInfo, MemberSpec, ReplicaSet
from .sharded import Router, ShardedCluster

__all__ = ["PROFILES", "ManualClock", "MemberInfo", "MemberSpec", "RealClock", "ReplicaSet", "Router", "ShardedCluster"]
