"""Prometheus exposition: a custom collector over the snapshot store, and content-negotiated rendering.

The only module that imports prometheus_client. `collect()` reads one `store.view()` and yields fresh metric
families, so a member that left the set simply stops being exported and a scrape never sees a half-updated set.
No I/O and no global gauges: the data comes from the last scheduled collection, as every HELP text says.
Imports `liveness`, `model`, `store`, `version` and `view` only. The names and labels are documented in docs/metrics.md.

Sample exposition::

    mongodb_replication_up{infra="clusterKeeper"} 1.0
    mongodb_replication_lag_seconds{infra="clusterKeeper",member="db1:27017",set="rs0"} 1.239
"""

from __future__ import annotations

import functools
import math
import platform
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from replicationlag.liveness import liveness_problems
from replicationlag.model import MAX_TAG_CHARS, MAX_TAGS_PER_MEMBER, FailureKind, Member, Snapshot
from replicationlag.store import SnapshotStore
from replicationlag.version import VERSION
from replicationlag.view import View

PREFIX = "mongodb_replication_"


def _replicating(member: Member) -> bool:
    """Lag series belong to data-bearing members that copy from a primary; the primary itself has none."""
    return member.is_data_bearing and not member.is_primary


def _data_bearing(member: Member) -> bool:
    return member.is_data_bearing


def _every(member: Member) -> bool:
    return True


# One gauge per member: (name, HELP, the member's value or None for no series, which members).
_MEMBER_GAUGES: tuple[tuple[str, str, Callable[[Member], float | None], Callable[[Member], bool]], ...] = (
    (
        "lag_seconds",
        "Effective replication lag (raw lag minus the configured delay, never negative), ms precision",
        lambda m: _seconds(m.lag_ms),
        _replicating,
    ),
    (
        "raw_lag_seconds",
        "Replication lag before subtracting the configured delay, ms precision",
        lambda m: _seconds(m.raw_lag_ms),
        _replicating,
    ),
    (
        "written_lag_seconds",
        "MongoDB 8.0+: lag in oplog written (not yet applied), ms precision",
        lambda m: _seconds(m.written_lag_ms),
        _replicating,
    ),
    (
        "member_delay_seconds",
        "Configured secondaryDelaySecs / slaveDelay (0 when none)",
        lambda m: m.delay_ms / 1000,
        _data_bearing,
    ),
    (
        "member_state",
        "replSetGetStatus state code: 1 PRIMARY, 2 SECONDARY, 3 RECOVERING, 7 ARBITER, 8 DOWN, ...",
        lambda m: m.state,
        _every,
    ),
    ("member_health", "1 when the member is healthy, else 0", lambda m: 1 if m.healthy else 0, _every),
    ("member_status", "Member status: 0 GREEN, 1 YELLOW, 2 RED", lambda m: int(m.status), _every),
    (
        "oplog_window_seconds",
        "Span of the member's own oplog: wall of its newest entry minus its oldest, ms precision",
        lambda m: _seconds(m.oplog.window_ms) if m.oplog else None,
        _data_bearing,
    ),
    (
        "oplog_full",
        "1 when the member's oplog has reached its configured maximum size, 0 while it is still filling "
        "(then its window is only its age, not a limit)",
        lambda m: None if m.oplog is None or m.oplog.full is None else int(m.oplog.full),
        _data_bearing,
    ),
    (
        "oplog_size_bytes",
        "Size of the member's oplog",
        lambda m: m.oplog.size_bytes if m.oplog else None,
        _data_bearing,
    ),
    (
        "oplog_max_size_bytes",
        "Configured maximum size of the member's oplog",
        lambda m: m.oplog.max_size_bytes if m.oplog else None,
        _data_bearing,
    ),
    (
        "headroom_seconds",
        "How much further the member can fall behind before its sync source's oplog no longer holds what it needs "
        "(the source's window plus the source's lag minus the member's raw lag); see oplog_full of the source",
        lambda m: _seconds(m.headroom_ms),
        _replicating,
    ),
    (
        "initial_sync_progress_ratio",
        "Initial sync: bytes copied of the total (5.2+), else databases cloned of the total",
        lambda m: m.initial_sync.progress if m.initial_sync else None,
        _data_bearing,
    ),
    (
        "initial_sync_remaining_seconds",
        "Initial sync: the server's estimate of the time left (5.2+)",
        lambda m: _seconds(m.initial_sync.remaining_ms) if m.initial_sync else None,
        _data_bearing,
    ),
)


class ReplicationCollector:
    """Yields the replication metrics from the store's current view; never touches MongoDB.

    `ReplicationCollector(store)` yields what changes only when a poll publishes (or data turns stale): render it
    once per poll. `ReplicationCollector(store, ages=True)` yields the data ages, which change every second.
    """

    def __init__(self, store: SnapshotStore, *, ages: bool = False) -> None:
        self._store = store
        self._families = _age_families if ages else _families

    def describe(self) -> list[Metric]:
        # Which series exist depends on the data; an empty describe keeps registration from calling collect().
        return []

    def collect(self) -> Iterator[Metric]:
        view = self._store.view()
        for metric in self._families(view):
            # A family with no series (e.g. written lag before 8.0) would only add HELP/TYPE noise.
            if metric.samples:
                yield metric


def _age_families(view: View) -> Iterator[Metric]:
    """How old the data is: the only families that change between two polls."""
    family = _Families(view)
    infra = view.infra
    yield family.gauge(
        "snapshot_age_seconds",
        f"Seconds since the last successful collection (stale from {view.freshness_limit_s:g} s)",
        ["infra"],
        [([infra], view.age_s)],
    )
    yield family.gauge(
        "set_snapshot_age_seconds",
        "Seconds since the set's last successful poll",
        ["infra", "set"],
        [([infra, each.name], each.age_s) for each in view.sets if each.name],
    )
    if view.sharded:
        yield family.gauge(
            "shard_map_age_seconds",
            "Seconds since the shard map was last read through the routers",
            ["infra"],
            [([infra], view.map_age_s)],
        )


def _families(view: View) -> Iterator[Metric]:
    """The exporter's own families, then each set's while its data is current."""
    family = _Families(view)
    infra = view.infra
    up = not liveness_problems(view) if view.sharded else view.current is not None

    yield family.gauge(
        "up",
        "1 when the last collection succeeded and its data is fresh (behind mongos routers: the shard map or some "
        "set was read within the freshness limit), else 0",
        ["infra"],
        [([infra], 1 if up else 0)],
    )
    yield family.gauge(
        "status",
        "Replica set status: 0 GREEN, 1 YELLOW, 2 RED (2 also when its data is failed or stale)",
        ["infra", "set"],
        [([infra, each.name], int(each.status)) for each in view.sets] or [([infra, ""], int(view.status))],
    )
    yield family.gauge(
        "exporter_build_info",
        "The exporter's version (value 1)",
        ["version", "python_version"],
        [([VERSION, platform.python_version()], 1)],
    )
    yield family.gauge(
        "set_info",
        'Each watched replica set: role="replica_set", "shard" or "config", and its shard id',
        ["infra", "set", "shard", "role"],
        [([infra, each.name, each.address.shard_id, each.address.role.value], 1) for each in view.sets if each.name],
    )
    yield family.gauge(
        "set_up",
        "1 when the set's last poll succeeded and its data is fresh, else 0",
        ["infra", "set"],
        [([infra, each.name], 1 if each.current is not None else 0) for each in view.sets if each.name],
    )
    yield family.gauge(
        "collection_duration_seconds",
        "How long the last collection took",
        ["infra"],
        [([infra], view.last_duration_s)],
    )
    yield family.gauge(
        "last_success_timestamp_seconds",
        "Wall-clock time of the last successful collection",
        ["infra"],
        [([infra], view.last_success_wall_s)],
    )
    # Every kind at 0 from the start, so that rate() and increase() see the first failure of each kind.
    failures = dict.fromkeys(FailureKind, 0) | dict(view.failures_by_kind)
    yield family.counter(
        "collection_failures",
        "Failed collections by kind (behind mongos routers: each set that failed, and the shard map)",
        ["infra", "kind"],
        [([infra, kind], count) for kind, count in sorted(failures.items())],
    )
    if view.sharded:
        yield from _cluster_families(family, view)
    yield from _set_families(family, infra, [each.current for each in view.sets if each.current is not None])


def _cluster_families(family: _Families, view: View) -> Iterator[Metric]:
    """What only a sharded cluster has: its routers, its map, draining shards."""
    infra = view.infra
    yield family.gauge(
        "router_up",
        "1 when the mongos router answered its last heartbeat, else 0",
        ["infra", "router"],
        [([infra, router.address], 1 if router.reachable else 0) for router in view.routers],
    )
    yield family.gauge(
        "shard_draining",
        "1 while the shard is being removed (removeShard), else 0",
        ["infra", "set"],
        [([infra, each.name], 1 if each.address.draining else 0) for each in view.sets if each.address.shard_id],
    )


def _set_families(family: _Families, infra: str, snapshots: list[Snapshot]) -> Iterator[Metric]:
    """The per-set and per-member families of the current snapshots, one family per name across every set."""
    member_labels = ["infra", "set", "member"]
    yield family.gauge(
        "primary_present",
        "1 when the set has a primary, else 0",
        ["infra", "set"],
        [([infra, s.set_name], 1 if s.has_primary else 0) for s in snapshots],
    )
    yield family.gauge(
        "reference_info",
        'What lag is measured against: reference="primary", or "freshest" when the set has no primary',
        ["infra", "set", "reference", "member"],
        [([infra, s.set_name, s.reference, s.reference_member], 1) for s in snapshots if s.reference_member],
    )
    for name, help_text, value, which in _MEMBER_GAUGES:
        samples = [([infra, s.set_name, m.name], value(m)) for s in snapshots for m in s.members if which(m)]
        yield family.gauge(name, help_text, member_labels, samples)
    yield family.gauge(
        "majority_commit_lag_seconds",
        "On the primary: its last applied write minus the majority commit point (w: majority writes wait this long)",
        ["infra", "set"],
        [([infra, s.set_name], _seconds(s.majority_commit_lag_ms)) for s in snapshots],
    )
    controls = [(s.set_name, s.flow_control) for s in snapshots if s.flow_control is not None]
    yield family.gauge(
        "flow_control_enabled",
        "1 when flow control is enabled on the primary (enableFlowControl)",
        ["infra", "set"],
        [([infra, name], int(fc.enabled)) for name, fc in controls],
    )
    yield family.gauge(
        "flow_control_engaged",
        "1 while flow control throttles writes on the primary (serverStatus flowControl.isLagged)",
        ["infra", "set"],
        [([infra, name], int(fc.engaged)) for name, fc in controls],
    )
    yield family.gauge(
        "flow_control_target_rate",
        "Tickets (about write operations) per second flow control allows on the primary (targetRateLimit)",
        ["infra", "set"],
        [([infra, name], fc.target_rate) for name, fc in controls],
    )
    yield family.counter(
        "flow_control_lagged",
        "Times the primary's flow control found the majority commit point lagging (isLaggedCount); resets when "
        "another member becomes primary",
        ["infra", "set"],
        [([infra, name], fc.lagged_count) for name, fc in controls],
    )
    yield family.counter(
        "flow_control_lagged_seconds",
        "Time flow control spent lagged on the primary (isLaggedTimeMicros, counted when a lagged period ends)",
        ["infra", "set"],
        [([infra, name], fc.lagged_time_s) for name, fc in controls],
    )
    yield family.counter(
        "flow_control_ticket_wait_seconds",
        "Time writes on the primary waited for a flow control ticket (timeAcquiringMicros)",
        ["infra", "set"],
        [([infra, name], fc.acquiring_time_s) for name, fc in controls],
    )
    yield family.gauge(
        "member_tag",
        "1 for each tag of each member in the replica-set config (members[].tags: where it lives); join on set and "
        f"member. At most {MAX_TAGS_PER_MEMBER} tags a member, keys and values cut at {MAX_TAG_CHARS} characters",
        ["infra", "set", "member", "key", "value"],
        [([infra, s.set_name, m.name, key, value], 1) for s in snapshots for m in s.members for key, value in m.tags],
    )
    yield family.gauge(
        "member_ping_seconds",
        "Heartbeat round trip to the member as the observer (the member that answered replSetGetStatus) sees it: "
        "pingMs, smoothed by mongod, a few seconds old; none for the observer itself or a member that is not healthy",
        ["infra", "set", "member", "observer"],
        [
            ([infra, s.set_name, m.name, s.answered_by], _seconds(m.ping_ms))
            for s in snapshots
            for m in s.members
            if m.ping_ms is not None and m.healthy and not m.is_self
        ],
    )
    yield family.gauge(
        "member_info",
        'Member attributes; precision="ms" (wall times, oplog), "s" (optimeDate fallback) or "" (no lag)',
        ["infra", "set", "member", "id", "hidden", "arbiter", "precision"],
        [
            ([infra, s.set_name, m.name, str(m.id), _bool(m.hidden), _bool(m.is_arbiter), m.precision or ""], 1)
            for s in snapshots
            for m in s.members
        ],
    )


class _Families:
    """Builds fresh families with the common prefix and a HELP that says where the data comes from."""

    def __init__(self, view: View) -> None:
        self._source = f" (MongoDB is polled every {view.interval_s:g} s, not at scrape time)"

    def gauge(self, name: str, help_text: str, labels: list[str], samples: list) -> GaugeMetricFamily:
        return _fill(GaugeMetricFamily(PREFIX + name, help_text + self._source, labels=labels), samples)

    def counter(self, name: str, help_text: str, labels: list[str], samples: list) -> CounterMetricFamily:
        return _fill(CounterMetricFamily(PREFIX + name, help_text + self._source, labels=labels), samples)


def _fill(metric, samples: list[tuple[list[str], float | None]]):
    for label_values, value in samples:
        if value is not None:  # no value, no series: e.g. no lag for a down member
            metric.add_metric(label_values, value)
    return metric


class ReplicationRegistry(CollectorRegistry):
    """Every family of the exporter: the data, its ages, and prometheus-client's process and platform collectors.

    Read like any registry (`get_sample_value`), and rendered by `render_cached`: the data families from bytes
    rendered once per published poll (and again only when data turns stale), in each of the two formats written
    (text 0.0.4, OpenMetrics 1.0.0) when first asked for, so at most two copies whatever clients send; the ages,
    process and platform families (about 20 lines) from bytes at most `LIVE_FOR_S` old, so
    `process_cpu_seconds_total` and the ages stay live while a burst of scrapes renders them once a second. A
    scrape's cost no longer grows with the cluster.
    """

    def __init__(self, store: SnapshotStore) -> None:
        super().__init__()
        self._store = store
        data, ages = ReplicationCollector(store), ReplicationCollector(store, ages=True)
        process, platform = ProcessCollector(registry=None), PlatformCollector(registry=None)
        self._data, self._live = CollectorRegistry(), CollectorRegistry()
        self._data.register(data)
        for collector in (data, ages, process, platform):
            self.register(collector)
        for collector in (ages, process, platform):
            self._live.register(collector)
        self._kept: dict[str, _Kept] = {}  # one of the two content types written -> what is served
        self._lock = threading.Lock()

    def render_cached(self, accept_header: str | None) -> tuple[bytes, str]:
        encoder, content_type = _encoder_for(accept_header or "")
        key = self._store.freshness_key()
        now = time.monotonic()
        kept = self._kept.get(content_type)  # a lookup, no lock: a scrape between two renders waits for nobody
        if kept is not None and kept.key == key and now - kept.live_at < LIVE_FOR_S:
            return kept.body, content_type
        with self._lock:
            kept = self._kept.get(content_type)
            if kept is None or kept.key != key:
                # OpenMetrics ends with "# EOF": only the live part, which comes last, keeps it.
                data = encoder(self._data).removesuffix(_EOF)
            elif now - kept.live_at >= LIVE_FOR_S:
                data = kept.data
            else:
                return kept.body, content_type  # another scrape rendered it meanwhile
            live = encoder(self._live)  # a publish renders the ages again too (sets come and go)
            kept = _Kept(key, now, data, data + live)
            self._kept[content_type] = kept
        return kept.body, content_type


@dataclass(frozen=True)
class _Kept:
    """One format's exposition as served: the data part kept per freshness key, the live part `LIVE_FOR_S`."""

    key: tuple
    live_at: float  # when the live part was rendered (time.monotonic)
    data: bytes
    body: bytes  # data + live, joined once rather than per scrape (1.4 MiB at 300 shards)


_EOF = b"# EOF\n"
LIVE_FOR_S = 1.0  # the process, platform and age families are at most this old


def build_registry(store: SnapshotStore) -> ReplicationRegistry:
    """A fresh registry with our collectors and the process/platform collectors; never the global REGISTRY."""
    return ReplicationRegistry(store)


def render(registry: ReplicationRegistry, accept_header: str | None) -> tuple[bytes, str]:
    """The exposition and its content type: OpenMetrics 1.0.0 when the scraper prefers it, else text 0.0.4; the
    content type is always one of those two strings, never a version the client asked for."""
    return registry.render_cached(accept_header)


# The two formats written, and the Content-Type each answer carries: these exact strings, whatever a client asked.
TEXT_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = openmetrics.CONTENT_TYPE_LATEST  # "application/openmetrics-text; version=1.0.0; ..."
_ENCODERS: dict[str, Callable[[CollectorRegistry], bytes]] = {
    TEXT_CONTENT_TYPE: generate_latest,
    OPENMETRICS_CONTENT_TYPE: functools.partial(
        openmetrics.generate_latest, escaping=openmetrics.UNDERSCORES, version="1.0.0"
    ),
}
_OPENMETRICS_VERSIONS = ("", "1.0.0")  # an OpenMetrics entry naming another version is passed over


def _encoder_for(accept: str) -> tuple[Callable[[CollectorRegistry], bytes], str]:
    """The encoder and Content-Type of the one format `accept` prefers among the two written. Nothing the client
    sends is echoed or kept: the answer names one of two fixed strings, so a cache keyed by it holds two entries."""
    content_type = OPENMETRICS_CONTENT_TYPE if _prefers_openmetrics(accept) else TEXT_CONTENT_TYPE
    return _ENCODERS[content_type], content_type


def _prefers_openmetrics(accept: str) -> bool:
    """Whether the best Accept entry we can write is OpenMetrics 1.0.0: the highest q first, the listed order on a
    tie; q=0 refuses. `text/plain` (any version: 0.0.4 is the text we write), `text/*` and `*/*` mean text, as does
    an Accept naming nothing we write. Any parameter may be malformed (`version=abc`, `q=`, `;;`): an unreadable q
    counts as 1, an unreadable version is not 1.0.0; nothing here raises."""
    ranked = []
    for index, entry in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in entry.split(";"))
        quality, version = 1.0, ""
        for param in params:
            key, _, value = param.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"')
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 1.0  # unreadable: as if absent
                if math.isnan(quality):
                    quality = 1.0
            elif key == "version":
                version = value if value else "?"  # "version=" asks for something, and not 1.0.0
        if quality > 0:
            ranked.append((-quality, index, media.lower(), version))
    for _, _, media, version in sorted(ranked):
        if media == "application/openmetrics-text":
            if version in _OPENMETRICS_VERSIONS:
                return True
        elif media in ("text/plain", "text/*", "*/*"):
            return False
    return False


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def _bool(flag: bool) -> str:
    return "true" if flag else "false"
