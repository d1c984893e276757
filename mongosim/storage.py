"""Each member's own `local.oplog.rs` as its storage engine keeps it: where it ends, where it starts, how big it is.

A member's oplog ends at what it has written (applied, before 8.0). It starts at the set's first entry
("initiating set") until it is full. Every entry counts as `SetModel.entry_bytes` bytes; once the entries from
the start to the end would take more than the member's `maxSize`, the oldest are truncated, so the oplog then
holds the newest maxSize // entry_bytes entries. As on a real 4.4+ server it may grow past maxSize rather than
truncate the majority commit point, and it keeps `oplogMinRetentionHours` of entries when that is set. A member
that came out of an initial sync never holds anything older than where its copy began.

A real server truncates in chunks (oplog truncate markers, a few percent of maxSize each), so a real full oplog's
size saw-tooths just under and at maxSize; here it is truncated entry by entry, which is what lets a test know its
window to the millisecond.

Imports `.model` and `.wire` only.
"""

from __future__ import annotations

from typing import Any

from . import model as m
from .wire import append_number as _number


def holds_oplog(model: m.SetModel, member: m.Member) -> bool:
    """A member has entries to show once it is a data member of an initiated set, out of STARTUP/STARTUP2."""
    return (
        model.topology == "replset"
        and member.data_bearing
        and member.initial_sync is None
        and member.state not in (m.STARTUP, m.STARTUP2)
    )


def newest_n(model: m.SetModel, member: m.Member, now: int) -> int:
    """Ordinal of the newest entry in `member`'s oplog (0: it is empty)."""
    return model.applied_n(member, now, written=True) if holds_oplog(model, member) else 0


def capacity(model: m.SetModel, member: m.Member) -> int:
    """How many entries fit in the member's maxSize (at least one)."""
    return max(1, member.oplog_max_bytes // model.entry_bytes)


def oldest_n(model: m.SetModel, member: m.Member, now: int) -> int:
    """Ordinal of the oldest entry `member`'s oplog still holds (0: it is empty); never newer than the newest."""
    newest = newest_n(model, member, now)
    if newest == 0:
        return 0
    oldest = newest - capacity(model, member) + 1
    if model.profile_of(member).at_least("4.4"):
        committed = model.commit_n(now)
        if committed:
            oldest = min(oldest, committed)  # never truncate the majority commit point
        if member.oplog_min_retention_ms:
            oldest = min(oldest, model.oplog.count_le(now - member.oplog_min_retention_ms - 1) + 1)
    return min(newest, max(oldest, member.oplog_floor_n, 1))


def window_bytes(model: m.SetModel, window_ms: int, now: int) -> int:
    """A maxSize that holds `window_ms` of the current writes: the entries of the last window_ms, plus one,
    so that the newest minus the oldest wall is exactly window_ms under continuous traffic."""
    if window_ms <= 0:
        raise ValueError("an oplog window must be > 0 ms")
    entries = model.oplog.count_le(now) - model.oplog.count_le(now - window_ms)
    return (entries + 1) * model.entry_bytes


def storage_stats(model: m.SetModel, member: m.Member, now: int, scale: int = 1) -> dict[str, Any]:
    """The storage statistics of `member`'s oplog as collStats (and $collStats storageStats) give them, in the
    field order of the member's version (4.0 has sleepCount/sleepMS; 4.4 adds freeStorageSize, totalSize,
    indexBuilds and scaleFactor; 6.0 numOrphanDocs). No wiredTiger sub-document."""
    p = model.profile_of(member)
    newest, oldest = newest_n(model, member, now), oldest_n(model, member, now)
    count = newest - oldest + 1 if newest else 0
    size = count * model.entry_bytes
    storage = size // 2  # as if block compression halved it
    doc: dict[str, Any] = {"size": _number(size // scale), "count": _number(count)}
    if count:
        doc["avgObjSize"] = model.entry_bytes
    if p.at_least("6.0"):
        doc["numOrphanDocs"] = 0
    doc["storageSize"] = _number(storage // scale)
    if p.at_least("4.4"):
        doc["freeStorageSize"] = 0
    doc["capped"] = True
    doc["max"] = 0 if p.at_least("6.0") else -1  # cappedMaxDocs: unset for the oplog
    doc["maxSize"] = _number(member.oplog_max_bytes // scale)
    if not p.at_least("4.4"):
        doc.update({"sleepCount": 0, "sleepMS": 0})
    doc["nindexes"] = 0
    if p.at_least("4.4"):
        doc.update({"indexDetails": {}, "indexBuilds": []})
    doc["totalIndexSize"] = 0
    if p.at_least("4.4"):
        doc["totalSize"] = _number(storage // scale)
    doc["indexSizes"] = {}
    if p.at_least("4.4"):
        doc["scaleFactor"] = scale
    return doc
