"""How dangerous a lag is (docs/domain.md §12-14): each member's oplog window and whether its oplog is full yet,
each replicating member's headroom before it falls off its sync source's oplog, the majority commit point, flow
control, and the progress of an initial sync, judged from what the reader found beside the status document.

PURE: no I/O, no clock. Imports `model`, `values` and `words`. The engine (`replset.build_snapshot`) calls
`assess(members, evidence, ...)` after judging the members' lag and before its one verdict on the set: it returns the
members with these facts, a member made at least YELLOW (or RED) when its headroom is small against a full oplog's
window, and the set's notes that say why. A not-yet-full oplog is not a limit: its headroom never raises an alarm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from replicationlag.model import (
    FlowControl,
    InitialSync,
    Member,
    Note,
    NoteKind,
    OplogWindow,
    Reference,
    Status,
)
from replicationlag.values import as_int, date_ms
from replicationlag.words import duration_words

# Headroom under this share of the sync source's (full) oplog window makes a member at least YELLOW, under the
# second RED: the member would need a full resync if it fell that much further behind (README, "How dangerous").
HEADROOM_YELLOW_SHARE = 0.25
HEADROOM_RED_SHARE = 0.10
MAJORITY_COMMIT_NOTE_AT_MS = 5_000  # a document line from here: w: "majority" writes wait this long


@dataclass(frozen=True)
class MemberEvidence:
    """What the reader found on one member itself (a direct connection), or why it found nothing."""

    oldest: Mapping[str, Any] | None = None  # its first oplog entry (natural order)
    newest: Mapping[str, Any] | None = None  # its last oplog entry
    stats: Mapping[str, Any] | None = None  # storage statistics of its local.oplog.rs (size, maxSize)
    own_status: Mapping[str, Any] | None = None  # replSetGetStatus answered by the member (initial sync)
    unread: str = ""  # why some of these could not be read, in words ("" when all went well)


@dataclass(frozen=True)
class Evidence:
    """The extra reads of one poll of one set."""

    members: Mapping[str, MemberEvidence] = field(default_factory=dict)
    server_status: Mapping[str, Any] | None = None  # the primary's serverStatus (flowControl)
    missing: tuple[str, ...] = ()  # reads refused for want of a privilege: what to grant, each said once


def oplog_window(evidence: MemberEvidence) -> OplogWindow | None:
    """The member's window from its own oldest and newest entries' `wall`, and whether the oplog is full yet."""
    oldest = date_ms(evidence.oldest.get("wall")) if evidence.oldest else None
    newest = date_ms(evidence.newest.get("wall")) if evidence.newest else None
    if oldest is None or newest is None:
        return None
    stats = evidence.stats or {}
    size, max_size = as_int(stats.get("size")), as_int(stats.get("maxSize"))
    full = size >= max_size if size is not None and max_size else None
    return OplogWindow(max(0, newest - oldest), full, size, max_size)


def initial_sync(own_status: Mapping[str, Any] | None) -> InitialSync | None:
    """`initialSyncStatus` of a member's own replSetGetStatus (4.2.1+; bytes and an estimate from 5.2)."""
    found = own_status.get("initialSyncStatus") if isinstance(own_status, Mapping) else None
    if not isinstance(found, Mapping):
        return None
    databases = found.get("databases")
    cloned = total = None
    if isinstance(databases, Mapping):
        cloned = as_int(databases.get("databasesCloned"))
        total = as_int(databases.get("databasesToClone"))
        if total is not None and cloned is not None:
            total = max(total, cloned)
    return InitialSync(
        elapsed_ms=as_int(found.get("totalInitialSyncElapsedMillis")),
        copied_bytes=as_int(found.get("approxTotalBytesCopied")),
        total_bytes=as_int(found.get("approxTotalDataSize")),
        remaining_ms=as_int(found.get("remainingInitialSyncEstimatedMillis")),
        databases_cloned=cloned,
        databases_total=total,
        failed_attempts=as_int(found.get("failedInitialSyncAttempts")),
    )


def flow_control(server_status: Mapping[str, Any] | None) -> FlowControl | None:
    """The primary's flowControl section (4.2+); None before 4.2 or when it could not be read."""
    found = server_status.get("flowControl") if isinstance(server_status, Mapping) else None
    if not isinstance(found, Mapping) or not isinstance(found.get("enabled"), bool):
        return None
    lagged_us, acquiring_us = as_int(found.get("isLaggedTimeMicros")), as_int(found.get("timeAcquiringMicros"))
    return FlowControl(
        enabled=found["enabled"],
        engaged=found.get("isLagged") is True,
        target_rate=as_int(found.get("targetRateLimit")),
        lagged_count=as_int(found.get("isLaggedCount")),
        lagged_time_s=None if lagged_us is None else lagged_us / 1e6,
        acquiring_time_s=None if acquiring_us is None else acquiring_us / 1e6,
    )


def initial_sync_words(sync: InitialSync) -> str:
    """`initial sync 43%, about 2 h left`, or what is known when the server gives no estimate."""
    progress = sync.progress
    text = "initial sync"
    if progress is not None:
        text += f" {int(progress * 100)}%"
        if sync.copied_bytes is None and sync.databases_total:
            text += f" ({sync.databases_cloned} of {sync.databases_total} databases cloned)"
    if sync.remaining_ms is not None:
        text += f", about {duration_words(sync.remaining_ms)} left"
    elif sync.elapsed_ms is not None:
        text += f", running for {duration_words(sync.elapsed_ms)} (the server gives no estimate)"
    if sync.failed_attempts:
        text += f"; {sync.failed_attempts} failed attempt{'s' if sync.failed_attempts > 1 else ''} so far"
    return text


@dataclass(frozen=True)
class Assessment:
    """What the danger reads add to one poll of a set: its members with their facts, and the set's notes."""

    members: tuple[Member, ...]
    notes: tuple[Note, ...]
    flow_control: FlowControl | None


def assess(
    members: tuple[Member, ...],
    evidence: Evidence,
    *,
    reference: Reference,
    reference_member: str,
    majority_commit_lag_ms: int | None,
) -> Assessment:
    """Every danger fact the evidence holds on the members (statuses raised by small headroom) and the set's notes:
    the majority commit point, flow control, a read the user may not make."""
    found = [_with_own_facts(m, evidence.members.get(m.name)) for m in members]
    by_name = {m.name: m for m in found}
    primary = next((m for m in found if m.is_primary), None)
    judged = tuple(_with_headroom(m, by_name, primary, reference, reference_member) for m in found)
    notes = []
    lag = majority_commit_lag_ms
    if lag is not None and lag >= MAJORITY_COMMIT_NOTE_AT_MS:
        text = (
            f'majority commit point {lag}ms behind the primary\'s last write: w: "majority" writes wait about '
            f"that long and majority reads are that stale"
        )
        notes.append(Note(NoteKind.MAJORITY_COMMIT_LAG, text, values=(("lag_ms", lag),)))
    control = flow_control(evidence.server_status)
    if control is not None and control.engaged:
        rate = f" (target {control.target_rate} ops/s)" if control.target_rate is not None else ""
        text = f"flow control is throttling writes on the primary{rate} to let the majority commit point catch up"
        notes.append(Note(NoteKind.FLOW_CONTROL_ENGAGED, text, values=(("target_rate", control.target_rate),)))
    notes += [Note(NoteKind.PRIVILEGE_MISSING, text) for text in evidence.missing]
    return Assessment(judged, tuple(notes), control)


def _with_own_facts(member: Member, evidence: MemberEvidence | None) -> Member:
    """The member's own oplog window and initial-sync progress, or a note saying why they are unknown."""
    if evidence is None or not member.is_data_bearing:
        return member
    notes = list(member.notes)
    sync = initial_sync(evidence.own_status)
    if sync is not None:
        words = initial_sync_words(sync)
        values = (("progress", sync.progress), ("remaining_ms", sync.remaining_ms))
        # The progress replaces the bare state: "STARTUP2: initial sync 43%, about 2 h left".
        notes = [n for n in notes if n.kind is not NoteKind.STATE]
        notes.insert(0, Note(NoteKind.INITIAL_SYNC, f"{member.state_str}: {words}", member.name, values))
    if evidence.unread:
        notes.append(Note(NoteKind.DANGER_UNREAD, evidence.unread, member.name, (("why", evidence.unread),)))
    return replace(member, oplog=oplog_window(evidence), initial_sync=sync, notes=tuple(notes))


def _with_headroom(
    member: Member, by_name: dict[str, Member], primary: Member | None, reference: Reference, reference_member: str
) -> Member:
    """Headroom = the sync source's window + the source's own lag - the member's raw lag: how much further the
    member can fall behind before the entries it still needs are gone from its source's oplog. A delayed member's
    raw lag includes its delay, which it needs room for too."""
    if member.is_primary or not member.is_data_bearing or member.raw_lag_ms is None:
        return member
    source = by_name.get(member.sync_source) if member.sync_source else primary
    if source is None and reference is Reference.FRESHEST:
        source = by_name.get(reference_member)
    if source is None or source.oplog is None or source is member:
        return member
    source_lag = source.raw_lag_ms or 0
    headroom = source.oplog.window_ms + source_lag - member.raw_lag_ms
    judged = replace(member, headroom_ms=headroom, sync_source_full=source.oplog.full)
    if source.oplog.full is not True or source.oplog.window_ms <= 0:
        return judged  # a not-yet-full oplog is not a limit: no alarm from it
    share = headroom / source.oplog.window_ms
    if share >= HEADROOM_YELLOW_SHARE:
        return judged
    colour = Status.RED if share < HEADROOM_RED_SHARE else Status.YELLOW
    where = "the primary's" if source is primary else f"{source.name}'s"
    text = (
        f"oplog headroom {duration_words(headroom)}, {max(0, int(share * 100))}% of {where} "
        f"{duration_words(source.oplog.window_ms)} window: a full resync is needed if it falls that much further behind"
    )
    values = (("headroom_ms", headroom), ("window_ms", source.oplog.window_ms), ("source", source.name))
    note = Note(NoteKind.HEADROOM_LOW, text, member.name, values)
    return replace(judged, status=max(member.status, colour), notes=(*member.notes, note))
