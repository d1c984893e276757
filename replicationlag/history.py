"""Each member's lag at every poll, kept in memory for 24 hours: what the trend and the status page's charts read.

Bounded and stated: at most `MAX_POINTS` points per member (24 h at one poll every 30 s; 1 440 points at the
default interval of 60 s) and nothing older than `KEEP_S`; 16 bytes a point (two arrays of doubles), so 300
members at the default interval hold about 7 MiB. A set or member that leaves the cluster is forgotten. Beside its
points each member keeps one "regime" value the caller chooses (its state, sync source, primary) and when it last
changed: a trend starts over there. Lost on restart: the user asked for memory only. Thread-safe. Standard library
only; imports nothing of ours.
"""

from __future__ import annotations

import bisect
import math
import threading
from array import array
from collections.abc import Hashable, Iterable, Mapping

KEEP_S = 24 * 3600
MAX_POINTS = 2_880
_TRIM_EVERY = MAX_POINTS // 10  # drop old points in batches: one memmove per batch, not one per poll


class _Series:
    """Times (s) and lags (ms; NaN for "no lag value") of one member, oldest first."""

    def __init__(self) -> None:
        self.times = array("d")
        self.lags = array("d")
        self.added = 0  # points ever added: counts the regime's start even across trims and clock steps
        self.regime: Hashable = None
        self.regime_from = 0  # the count of points added before the regime last changed

    def add(self, at_s: float, lag_ms: int | None, regime: Hashable = None) -> None:
        if regime != self.regime:
            self.regime, self.regime_from = regime, self.added
        self.added += 1
        self.times.append(at_s)
        self.lags.append(math.nan if lag_ms is None else float(lag_ms))
        old = bisect.bisect_left(self.times, at_s - KEEP_S)
        excess = len(self.times) - MAX_POINTS
        if old or excess > 0:
            cut = max(old, excess + _TRIM_EVERY if excess > 0 else 0)
            del self.times[:cut]
            del self.lags[:cut]

    def since(self, from_s: float) -> list[tuple[float, int | None]]:
        # Points come in poll order, so a chart's last hour is found without reading the day before it
        # (should the set's clock step back, the cut is off by at most the points inside the step).
        return self.tail(bisect.bisect_left(self.times, from_s))

    def tail(self, first: int) -> list[tuple[float, int | None]]:
        return [
            (t, None if math.isnan(lag) else int(lag))
            for t, lag in zip(self.times[first:], self.lags[first:], strict=True)
        ]


class LagHistory:
    """Lags by replica set and member, one point per poll."""

    def __init__(self) -> None:
        self._sets: dict[str, dict[str, _Series]] = {}
        self._lock = threading.Lock()

    def record(
        self,
        set_name: str,
        at_s: float,
        lags: Mapping[str, int | None],
        regimes: Mapping[str, Hashable] | None = None,
    ) -> None:
        """One poll of a set: each member's lag (None when it has none) and, optionally, what its trend must start
        over after a change of (e.g. its state and sync source); members not listed are forgotten."""
        regimes = regimes or {}
        with self._lock:
            known = self._sets.setdefault(set_name, {})
            for gone in set(known) - set(lags):
                del known[gone]
            for member, lag_ms in lags.items():
                known.setdefault(member, _Series()).add(at_s, lag_ms, regimes.get(member))

    def keep_sets(self, names: Iterable[str]) -> None:
        with self._lock:
            keep = set(names)
            for gone in set(self._sets) - keep:
                del self._sets[gone]

    def points(self, set_name: str, member: str, since_s: float) -> list[tuple[float, int | None]]:
        """(time in s, lag in ms or None) of one member from `since_s` on, oldest first."""
        with self._lock:
            series = self._sets.get(set_name, {}).get(member)
            return series.since(since_s) if series is not None else []

    def recent(self, set_name: str, member: str, count: int) -> list[tuple[float, int | None]]:
        """The newest `count` points of one member since its regime last changed, oldest first."""
        with self._lock:
            series = self._sets.get(set_name, {}).get(member)
            if series is None:
                return []
            held = len(series.times)
            first = max(held - count, series.regime_from - (series.added - held), 0)
            return series.tail(first)

    def members(self, set_name: str) -> list[str]:
        with self._lock:
            return list(self._sets.get(set_name, {}))

    def point_count(self) -> int:
        """How many points are held in all (for the memory bound's benchmark)."""
        with self._lock:
            return sum(len(s.times) for members in self._sets.values() for s in members.values())
