"""Prometheus exposition: a custom collector over the snapshot store, and content-negotiated rendering.

The only module that imports prometheus_client. `collect()` reads one `store.view()` and yields fresh metric
families, so a member that left the set simply stops being exported and a scrape never sees a half-updated set.
No I/O and no global gauges: the data comes from the last scheduled collection, as every HELP text says.
Imports `kinds`, `replset` and `store` only. The names and labels are documented in docs/metrics.md.

Sample exposition::

    mongodb_replication_up{infra="clusterKeeper"} 1.0
    mongodb_replication_lag_seconds{infra="clusterKeeper",member="db1:27017",set="rs0"} 1.239
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from kinds import FailureKind
from replset import Member, Snapshot
from store import FRESHNESS_LIMIT_S, SnapshotStore, View

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
)


class ReplicationCollector:
    """Yields the replication metrics from the store's current view; never touches MongoDB."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    def describe(self) -> list[Metric]:
        # Which series exist depends on the data; an empty describe keeps registration from calling collect().
        return []

    def collect(self) -> Iterator[Metric]:
        view = self._store.view()
        for metric in _families(view):
            # A family with no series (e.g. written lag before 8.0) would only add HELP/TYPE noise.
            if metric.samples:
                yield metric


def _families(view: View) -> Iterator[Metric]:
    """The exporter's own families, then the set's while its data is current."""
    family = _Families(view)
    infra = view.infra
    last = view.snapshot
    current = view.current

    yield family.gauge(
        "up",
        "1 when the last collection succeeded and its data is fresh, else 0",
        ["infra"],
        [([infra], 1 if current is not None else 0)],
    )
    yield family.gauge(
        "status",
        "Cluster status: 0 GREEN, 1 YELLOW, 2 RED (2 also when the data is failed or stale)",
        ["infra", "set"],
        [([infra, last.set_name if last is not None else ""], int(view.status))],
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
    yield family.gauge(
        "snapshot_age_seconds",
        f"Seconds since the last successful collection (stale from {FRESHNESS_LIMIT_S} s)",
        ["infra"],
        [([infra], view.age_s)],
    )
    # Every kind at 0 from the start, so that rate() and increase() see the first failure of each kind.
    failures = dict.fromkeys(FailureKind, 0) | dict(view.failures_by_kind)
    yield family.counter(
        "collection_failures",
        "Failed collections by kind",
        ["infra", "kind"],
        [([infra, kind], count) for kind, count in sorted(failures.items())],
    )
    if current is not None:
        yield from _set_families(family, infra, current)


def _set_families(family: _Families, infra: str, snapshot: Snapshot) -> Iterator[Metric]:
    """The per-set and per-member families of one current snapshot."""
    labels = [infra, snapshot.set_name]
    members = snapshot.members
    member_labels = ["infra", "set", "member"]
    yield family.gauge(
        "primary_present",
        "1 when the set has a primary, else 0",
        ["infra", "set"],
        [(labels, 1 if snapshot.has_primary else 0)],
    )
    if snapshot.reference_member:
        yield family.gauge(
            "reference_info",
            'What lag is measured against: reference="primary", or "freshest" when the set has no primary',
            ["infra", "set", "reference", "member"],
            [([*labels, snapshot.reference, snapshot.reference_member], 1)],
        )
    for name, help_text, value, which in _MEMBER_GAUGES:
        of = [m for m in members if which(m)]
        yield family.gauge(name, help_text, member_labels, [([*labels, m.name], value(m)) for m in of])
    yield family.gauge(
        "member_info",
        'Member attributes; precision="ms" (wall times, oplog), "s" (optimeDate fallback) or "" (no lag)',
        ["infra", "set", "member", "id", "hidden", "arbiter", "precision"],
        [
            (
                [*labels, m.name, str(m.id), _bool(m.hidden), _bool(m.is_arbiter), m.precision or ""],
                1,
            )
            for m in members
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


def build_registry(store: SnapshotStore) -> CollectorRegistry:
    """A fresh registry with our collector and the process/platform collectors; never the global REGISTRY."""
    registry = CollectorRegistry()
    registry.register(ReplicationCollector(store))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry, accept_header: str | None) -> tuple[bytes, str]:
    """The exposition and its content type: OpenMetrics when the scraper prefers it, else text 0.0.4."""
    encoder, content_type = choose_encoder(_preferred(accept_header or ""))
    return encoder(registry), content_type


def _preferred(accept: str) -> str:
    """The one Accept entry to hand prometheus_client's `choose_encoder` (which takes the first entry it knows and
    ignores q-values): the highest q first, the listed order on a tie; q=0 refuses. An OpenMetrics version we
    cannot write is passed over; `text/*` and `*/*` mean our default, text. "" when nothing we write is asked for.
    """
    ranked = []
    for index, entry in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in entry.split(";"))
        quality, kept = 1.0, [media]
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() != "q":
                kept.append(param)
                continue
            try:
                quality = float(value)
            except ValueError:
                quality = 1.0  # unreadable: as if absent
        if quality > 0:
            ranked.append((-quality, index, media.lower(), ";".join(kept)))
    for _, _, media, entry in sorted(ranked):
        if media == "application/openmetrics-text":
            if choose_encoder(entry)[1].startswith("application/openmetrics-text"):
                return entry
        elif media == "text/plain":
            return entry
        elif media in ("text/*", "*/*"):
            return ""
    return ""


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def _bool(flag: bool) -> str:
    return "true" if flag else "false"
