"""The lag engine: a replSetGetStatus document (plus the cached replSetGetConfig and the oplog lookups) in,
one immutable snapshot of the replica set out.

PURE: no I/O, no clock, no logging. Imports `danger`, `model` and `values`, and no third-party package: the bson values
pymongo hands over (Timestamp, Int64, datetime) are read by their shape. A status document is read once (`read_status`);
the collector asks that reading which members to look up in the oplog and whether its cached config is stale,
then `build_snapshot` judges it. Every reader (metrics, the Zero Problem document, /liveness, the status page)
reads the values defined here, and facts come as `Note`s with a kind and values, so no reader parses words.
The rules, numbered, with their sources: docs/domain.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from replicationlag.danger import Evidence, assess
from replicationlag.model import (
    ARBITER,
    MAX_TAG_CHARS,
    MAX_TAGS_PER_MEMBER,
    PRIMARY,
    SECONDARY,
    STATE_NAMES,
    Member,
    Note,
    NoteKind,
    OplogProbe,
    Reference,
    Snapshot,
    Status,
    status_for_lag,
)
from replicationlag.values import as_int, as_number, as_text, clean_text, date_ms

_LAG_STATES = (PRIMARY, SECONDARY)
# Clocks that disagree by more than this are said to (docs/domain.md §17): heartbeats come every 2 s, and NTP keeps
# the clocks of one data centre within milliseconds, so a larger gap is a clock that is wrong, not noise.
CLOCK_TOLERANCE_MS = 2_000
_SOURCE_WORDS = {"wall": "wall times", "optimeDate": "optimeDate (whole seconds)", None: "nothing comparable"}


@dataclass(frozen=True)
class _OpTime:
    time: int  # Timestamp seconds
    inc: int  # Timestamp ordinal within the second: never milliseconds
    term: int | None
    ts: Any  # the Timestamp object as the server sent it, handed back to the collector unchanged

    @property
    def order(self) -> tuple[int, int, int]:
        # MongoDB orders optimes by term first, then by timestamp (OpTime::operator<).
        return (self.term if self.term is not None else -1, self.time, self.inc)

    def same_as(self, other: _OpTime) -> bool:
        return (self.time, self.inc, self.term) == (other.time, other.inc, other.term)


def _optime(value: Any) -> _OpTime | None:
    """`{ts: Timestamp, t: term}` (or a bare Timestamp, protocol version 0); None when it is not usable."""
    term = None
    if isinstance(value, Mapping):
        term = as_int(value.get("t"))
        value = value.get("ts")
    time, inc = as_int(getattr(value, "time", None)), as_int(getattr(value, "inc", None))
    if time is None or inc is None or time <= 0:
        return None  # missing, junk, or Timestamp(0, 0): the optime of a member nobody has heard from
    return _OpTime(time, inc, term, value)


@dataclass(frozen=True)
class _Reported:
    """One `members[]` entry of replSetGetStatus, read defensively."""

    index: int  # position in the document, for a stable order
    id: int
    name: str
    state: int | None
    state_name: str
    health: int | float | None  # None when missing or not a number
    is_self: bool
    optime: _OpTime | None
    optime_date_ms: int | None
    wall_ms: int | None  # lastAppliedWallTime
    written_optime: _OpTime | None  # 8.0 optimeWritten
    written_wall_ms: int | None  # 8.0 lastWrittenWallTime
    sync_source: str
    ping_ms: int | None
    uptime_s: int | None  # seconds since the member's process started, as the answering member knows it
    message: str  # lastHeartbeatMessage, else infoMessage
    config_version: int | None
    config_term: int | None

    @property
    def healthy(self) -> bool:
        return self.health == 1

    @property
    def usable(self) -> bool:
        """Has an optime lag can be measured from (docs/domain.md §3): healthy, PRIMARY/SECONDARY, real optime."""
        return (
            self.healthy
            and self.state in _LAG_STATES
            and self.optime is not None
            and (self.wall_ms is not None or self.optime_date_ms is not None)
        )


def _read_member(index: int, entry: Mapping[str, Any]) -> _Reported:
    state = as_int(entry.get("state"))
    name = as_text(entry.get("name")) or f"members[{index}]"
    member_id = as_int(entry.get("_id"))
    state_name = STATE_NAMES.get(state) if state is not None else None
    if state_name is None:
        state_name = as_text(entry.get("stateStr")) or ("UNKNOWN" if state is None else f"state {state}")
    return _Reported(
        index=index,
        id=member_id if member_id is not None else -1,
        name=name,
        state=state,
        state_name=state_name,
        health=as_number(entry.get("health")),
        is_self=entry.get("self") is True,
        optime=_optime(entry.get("optime")),
        optime_date_ms=date_ms(entry.get("optimeDate")),
        wall_ms=date_ms(entry.get("lastAppliedWallTime")),
        written_optime=_optime(entry.get("optimeWritten")),
        written_wall_ms=date_ms(entry.get("lastWrittenWallTime")),
        # 4.0 still names the sync source `syncingTo`; 4.4 removed it (docs/domain.md §1).
        sync_source=as_text(entry.get("syncSourceHost")) or as_text(entry.get("syncingTo")),
        ping_ms=as_int(entry.get("pingMs")),
        uptime_s=as_int(entry.get("uptime")),
        message=as_text(entry.get("lastHeartbeatMessage")) or as_text(entry.get("infoMessage")),
        config_version=as_int(entry.get("configVersion")),
        config_term=as_int(entry.get("configTerm")),
    )


def _read_members(status_doc: Any) -> tuple[list[_Reported] | None, list[str]]:
    """The members of a status document and what was wrong with it; None when there is no members list."""
    if not isinstance(status_doc, Mapping):
        return None, ["the replSetGetStatus answer is not a document"]
    entries = status_doc.get("members")
    if not isinstance(entries, list | tuple):
        return None, ["the replSetGetStatus answer has no members list"]
    if not entries:
        return None, ["the replSetGetStatus answer lists no members"]
    members, problems = [], []
    for index, entry in enumerate(entries):
        if isinstance(entry, Mapping):
            members.append(_read_member(index, entry))
        else:
            problems.append(f"members[{index}] is not a document, so one member cannot be judged")
    return members, problems


def _unique_names(members: list[_Reported]) -> tuple[list[_Reported], tuple[Note, ...]]:
    """The members with a name each: a name several members report becomes `name#_id` for each of them.

    A server forbids two members with one host:port, but a broken reconfig or a proxy can still show it, and every
    reader keys members by name (series labels, oplog lookups, document lines).
    """
    counts: dict[str, int] = {}
    for member in members:
        counts[member.name] = counts.get(member.name, 0) + 1
    if all(count == 1 for count in counts.values()):
        return members, ()
    taken, shown_as = set(counts), {}
    unique = []
    for member in members:
        if counts[member.name] > 1:
            name = f"{member.name}#{member.id}"
            while name in taken:  # the same _id twice too, or a real name that looks like this
                name += f"#{member.index}"
            taken.add(name)
            shown_as.setdefault(member.name, []).append(name)
            unique.append(replace(member, name=name))
        else:
            unique.append(member)
    notes = tuple(
        Note(
            NoteKind.DUPLICATE_NAME,
            f"{len(names)} members report the name {name} (a server forbids it: a broken reconfig or a proxy?); "
            f"shown as {' and '.join(names)}",
            values=(("name", name), ("shown_as", tuple(names))),
        )
        for name, names in shown_as.items()
    )
    return unique, notes


def _choose_reference(members: list[_Reported]) -> tuple[_Reported | None, Reference, int]:
    """(reference member, its kind, how many members report PRIMARY) following docs/domain.md §4."""
    usable = [m for m in members if m.usable]

    def freshest(candidates: list[_Reported]) -> _Reported:
        # Largest optime; on a tie the lowest _id, so the choice does not depend on the document order.
        return max(candidates, key=lambda m: (m.optime.order if m.optime else (-1, 0, 0), -m.id))

    primaries = [m for m in usable if m.state == PRIMARY]
    if primaries:
        return freshest(primaries), Reference.PRIMARY, len(primaries)
    if usable:
        return freshest(usable), Reference.FRESHEST, 0
    return None, Reference.NONE, 0


def _is_behind(member: _Reported, reference: _Reported) -> bool:
    return member.optime is not None and reference.optime is not None and member.optime.order < reference.optime.order


@dataclass(frozen=True)
class StatusReport:
    """One replSetGetStatus document, read once: its members, the reference chosen, what was wrong with it."""

    set_name: str
    date_ms: int | None  # the answering server's clock, ms since the epoch
    members: tuple[_Reported, ...] | None  # None when the document has no usable members list
    problems: tuple[str, ...]  # what could not be read, in words
    reference: _Reported | None
    reference_kind: Reference
    primaries_reported: int  # members that report PRIMARY (more than one right after an election)
    majority_commit_lag_ms: int | None = None  # the answering member's applied minus its last committed wall
    notes: tuple[Note, ...] = ()  # facts about the document itself, e.g. two members reporting one name

    @property
    def answered_by(self) -> _Reported | None:
        return next((m for m in self.members or () if m.is_self), None)

    def probe_targets(self) -> list[_Reported]:
        """Members whose lag the primary's oplog can measure exactly (docs/domain.md §6).

        Only when the primary is the reference AND answered the command: the oplog entry's `wall` is the
        primary's clock, and so must be the document's `date` it is aged against, or clock skew enters (§2).
        """
        reference = self.reference
        if reference is None or self.reference_kind is not Reference.PRIMARY or not reference.is_self:
            return []
        return [m for m in self.members or () if m is not reference and m.usable and _is_behind(m, reference)]

    def oplog_probes_wanted(self) -> dict[str, Any]:
        """Member name -> its optime `ts` (a bson.Timestamp), for each member the collector should look up in the
        primary's oplog (`{ts: {$gt: ts}}`, natural order, limit 1). Empty without a primary, when a secondary
        answered, or when everyone has caught up."""
        return {m.name: m.optime.ts for m in self.probe_targets() if m.optime is not None}

    def newest_write(self) -> tuple[_Reported, int] | None:
        """The member whose applied op is the newest, and that op's wall time (ms; optimeDate before 4.4): the
        primary's clock when it wrote it. None when no member has one."""
        stamped = [
            (m, m.wall_ms if m.wall_ms is not None else m.optime_date_ms)
            for m in self.members or ()
            if m.usable and (m.wall_ms is not None or m.optime_date_ms is not None)
        ]
        return max(stamped, key=lambda pair: (pair[1], -pair[0].id), default=None)  # type: ignore[arg-type]

    @property
    def reports_a_healthy_primary(self) -> bool:
        return any(m.state == PRIMARY and m.healthy for m in self.members or ())

    @property
    def answered_by_primary(self) -> bool:
        me = self.answered_by
        return me is not None and me.state == PRIMARY


def read_status(status_doc: Any) -> StatusReport:
    """Read a replSetGetStatus document once. Pure and never raises on any shape a server can produce."""
    doc: Mapping[str, Any] = status_doc if isinstance(status_doc, Mapping) else {}
    members, problems = _read_members(status_doc)
    members, name_notes = _unique_names(members) if members else (members, ())
    reference, kind, primaries = _choose_reference(members) if members else (None, Reference.NONE, 0)
    return StatusReport(
        majority_commit_lag_ms=_commit_lag(doc.get("optimes")),
        set_name=as_text(doc.get("set")),
        date_ms=date_ms(doc.get("date")),
        members=tuple(members) if members is not None else None,
        problems=tuple(problems),
        reference=reference,
        reference_kind=kind,
        primaries_reported=primaries,
        notes=name_notes,
    )


def _commit_lag(optimes: Any) -> int | None:
    """`optimes.lastAppliedWallTime - optimes.lastCommittedWallTime` (4.2+), 0 when both optimes are the same."""
    if not isinstance(optimes, Mapping):
        return None
    applied, committed = _optime(optimes.get("appliedOpTime")), _optime(optimes.get("lastCommittedOpTime"))
    if applied is not None and committed is not None and applied.same_as(committed):
        return 0
    applied_ms, committed_ms = (
        date_ms(optimes.get("lastAppliedWallTime")),
        date_ms(optimes.get("lastCommittedWallTime")),
    )
    if applied_ms is None or committed_ms is None:
        return None
    return max(0, applied_ms - committed_ms)


def _report(status: StatusReport | Any) -> StatusReport:
    return status if isinstance(status, StatusReport) else read_status(status)


def members_needing_oplog_probe(status: StatusReport | dict[str, Any]) -> dict[str, Any]:
    """`read_status(status).oplog_probes_wanted()`; takes a document or its reading."""
    return _report(status).oplog_probes_wanted()


def _config_body(config_doc: Any) -> Mapping[str, Any] | None:
    if not isinstance(config_doc, Mapping):
        return None
    # Accept the whole replSetGetConfig reply too: a wrapper that slipped through must not drop the delays.
    inner = config_doc.get("config")
    if "members" not in config_doc and isinstance(inner, Mapping):
        return inner
    return config_doc


def config_is_stale(status: StatusReport | dict[str, Any], config_doc: dict[str, Any] | None) -> bool:
    """True when the cached replSetGetConfig no longer describes the set, so the collector re-reads it:
    none yet, another set, or another config version (or, 4.4+, config term) than the answering member's."""
    config = _config_body(config_doc)
    if config is None:
        return True
    report = _report(status)
    config_set = as_text(config.get("_id"))
    if report.set_name and config_set and report.set_name != config_set:
        return True
    me = report.answered_by
    if me is None or me.config_version is None:
        return False  # nothing to compare with; the next good document decides
    if as_int(config.get("version")) != me.config_version:
        return True
    config_term = as_int(config.get("term"))
    return me.config_term is not None and config_term is not None and config_term != me.config_term


@dataclass(frozen=True)
class _Settings:
    """Per-member settings from replSetGetConfig."""

    hidden: bool = False
    priority: float = 1.0
    votes: int = 1
    delay_ms: int = 0
    tags: tuple[tuple[str, str], ...] = ()
    arbiter_only: bool = False


def _read_tags(value: Any) -> tuple[tuple[str, str], ...]:
    """members[].tags: string pairs set by operators or Atlas; other values are no tags. Server-controlled text, so
    cleaned and bounded (MAX_TAGS_PER_MEMBER pairs, MAX_TAG_CHARS each)."""
    if not isinstance(value, Mapping):
        return ()
    pairs = {clean_text(k, MAX_TAG_CHARS): clean_text(v, MAX_TAG_CHARS) for k, v in value.items() if isinstance(v, str)}
    return tuple(sorted((k, v) for k, v in pairs.items() if k and v))[:MAX_TAGS_PER_MEMBER]


def _read_settings(config_doc: Any) -> tuple[dict[str, _Settings], dict[int, _Settings], str]:
    """Settings by host and by _id, and a note when a config was given but could not be read."""
    config = _config_body(config_doc)
    if config is None:
        unusable = config_doc is not None
        return {}, {}, "the replica-set config is not a document; delays are not subtracted" if unusable else ""
    entries = config.get("members")
    if not isinstance(entries, list | tuple):
        return {}, {}, "the replica-set config has no members list; delays are not subtracted"
    by_host: dict[str, _Settings] = {}
    by_id: dict[int, _Settings] = {}
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        # 5.0+ (FCV 5.0) says secondaryDelaySecs, earlier servers slaveDelay (docs/domain.md §5).
        delay_s = as_number(entry.get("secondaryDelaySecs"))
        if delay_s is None:
            delay_s = as_number(entry.get("slaveDelay"))
        priority, votes = as_number(entry.get("priority")), as_int(entry.get("votes"))
        delay_ms = delay_s * 1000 if delay_s is not None else 0
        settings = _Settings(
            hidden=entry.get("hidden") is True,
            priority=float(priority) if priority is not None else 1.0,
            votes=votes if votes is not None else 1,
            delay_ms=max(0, round(delay_ms)) if math.isfinite(delay_ms) else 0,
            tags=_read_tags(entry.get("tags")),
            arbiter_only=entry.get("arbiterOnly") is True,
        )
        host, member_id = as_text(entry.get("host")), as_int(entry.get("_id"))
        if host:
            by_host[host] = settings
        if member_id is not None:
            by_id[member_id] = settings
    return by_host, by_id, ""


@dataclass(frozen=True)
class _Lag:
    raw_ms: int | None = None
    source: str | None = None
    problem: str = ""  # why the exact (oplog) measure was not used


def _measure(
    member: _Reported,
    reference: _Reported,
    probe: OplogProbe | None,
    date_ms: int | None,
    *,
    date_stepped: bool = False,
    date_ahead: bool = False,
) -> _Lag:
    """Raw lag of a usable member behind the reference, in ms, never negative (docs/domain.md §2, §4, §6, §17).

    The oplog entry's age (date - wall) reads the status date; the wall-time difference reads no clock. When the
    date is in doubt, the wall-time lag bounds the age from the side the date errs on: `date_stepped` (the date
    is behind the set's newest write) makes the age too small by at least the step, so the wall-time lag is kept
    (it is then always the larger: a real lag is never clamped away); `date_ahead` (the date is ahead of this
    exporter's clock) may make it too large, so the age is capped at the wall-time lag."""
    both_walls = member.wall_ms is not None and reference.wall_ms is not None
    if member.optime is not None and reference.optime is not None and member.optime.same_as(reference.optime):
        return _Lag(0, "wall" if both_walls else "optimeDate")
    if both_walls:
        naive = _Lag(max(0, reference.wall_ms - member.wall_ms), "wall")
    elif member.optime_date_ms is not None and reference.optime_date_ms is not None:
        naive = _Lag(max(0, reference.optime_date_ms - member.optime_date_ms), "optimeDate")
    else:
        naive = _Lag()
    if probe is None:
        return naive
    if probe.error:
        problem = f"oplog lookup failed ({probe.error})"
    elif date_stepped:
        problem = (
            "the status date is behind the set's newest write (a clock was stepped back), "
            "so the oplog entry's age is not used"
        )
    elif probe.oldest_unapplied_wall_ms is None:
        # Probes are used only for members behind the primary (a caught-up member is 0 by the same-optime
        # rule above), so "nothing unapplied" contradicts the document: trust neither, keep the naive value.
        problem = "the oplog shows nothing unapplied although the optime is behind the primary's"
    elif date_ms is None:
        problem = "the status document has no date to age the oplog entry against"
    else:
        oldest_ms = as_int(probe.oldest_unapplied_wall_ms)
        if oldest_ms is not None:
            age = max(0, date_ms - oldest_ms)
            if not (date_ahead and naive.raw_ms is not None and age > naive.raw_ms):
                return _Lag(age, "oplog")
            return _Lag(
                naive.raw_ms,
                naive.source,
                f"the status date is ahead of this exporter's clock, so the oplog entry's age ({age} ms) is capped "
                "at the wall-time lag",
            )
        problem = "the oplog lookup gave no usable wall time"
    return _Lag(naive.raw_ms, naive.source, problem)


def _written_lag(member: _Reported, reference: _Reported) -> int | None:
    """8.0: how far behind the member is in *writing* the oplog (docs/domain.md §7); None before 8.0."""
    if member.written_wall_ms is None or reference.written_wall_ms is None:
        return None
    written, reference_written = member.written_optime, reference.written_optime
    if written is not None and reference_written is not None and written.same_as(reference_written):
        return 0
    return max(0, reference.written_wall_ms - member.written_wall_ms)


def _unhealthy(member: _Reported) -> Note:
    if member.health is None:
        return Note(NoteKind.NO_HEALTH, "no health reported", member.name)
    message = member.message or "not reachable"
    return Note(NoteKind.DOWN, f"DOWN: {message}", member.name, (("message", message),))


def _state_note(member: _Reported) -> Note:
    text = f"{member.state_name}: {member.message}" if member.message else member.state_name
    return Note(NoteKind.STATE, text, member.name, (("state", member.state_name), ("message", member.message)))


def _behind(member: _Reported, lag_ms: int, reference: _Reported, kind: Reference, delay_ms: int) -> Note:
    target = "the primary" if kind is Reference.PRIMARY else f"the freshest member {reference.name}"
    text = f"{lag_ms} ms behind {target}"
    if delay_ms:
        text += f" beyond its {delay_ms / 1000:g} s delay"
    values = (("lag_ms", lag_ms), ("reference", kind), ("reference_member", reference.name), ("delay_ms", delay_ms))
    return Note(NoteKind.BEHIND, text, member.name, values)


def _judge(
    member: _Reported,
    reference: _Reported | None,
    kind: Reference,
    *,
    settings: _Settings,
    probe: OplogProbe | None,
    date_ms: int | None,
    date_stepped: bool = False,
    date_ahead: bool = False,
) -> Member:
    """The member as judged, with its notes: why it is not GREEN, and facts beside its lag."""
    raw = lag = written = None
    precision = source = None
    notes: list[Note] = []
    status = Status.RED
    if member.state == ARBITER or settings.arbiter_only:
        # Arbiters hold no data: no lag, but their health counts (docs/domain.md §3).
        status = Status.GREEN if member.healthy else Status.RED
        notes += [] if member.healthy else [_unhealthy(member)]
    elif not member.healthy:
        notes.append(_unhealthy(member))
    elif member.state is None:
        notes.append(Note(NoteKind.NO_STATE, "no valid state reported", member.name))
    elif member.state not in _LAG_STATES:
        notes.append(_state_note(member))
    elif not member.usable or reference is None:
        notes.append(Note(NoteKind.NO_OPTIME, "no usable optime", member.name))
    else:
        measured = _measure(member, reference, probe, date_ms, date_stepped=date_stepped, date_ahead=date_ahead)
        if measured.raw_ms is None:
            text = "no wall time or optimeDate comparable with the reference's"
            notes.append(Note(NoteKind.NO_COMPARABLE_TIME, text, member.name))
        else:
            raw, source = measured.raw_ms, measured.source
            lag = max(0, raw - settings.delay_ms)
            precision = "s" if source == "optimeDate" else "ms"
            written = _written_lag(member, reference)
            status = status_for_lag(lag)
            if status is not Status.GREEN:
                notes.append(_behind(member, lag, reference, kind, settings.delay_ms))
                if written is not None and written < lag:
                    text = f"oplog written {written} ms behind, so applying is the bottleneck"
                    notes.append(Note(NoteKind.APPLY_BOTTLENECK, text, member.name, (("written_lag_ms", written),)))
        if measured.problem:
            text = f"{measured.problem}; lag from {_SOURCE_WORDS[measured.source]}"
            values = (("problem", measured.problem), ("source", measured.source))
            notes.append(Note(NoteKind.OPLOG_FALLBACK, text, member.name, values))
    return Member(
        id=member.id,
        name=member.name,
        state=member.state if member.state is not None else -1,
        state_str=member.state_name,
        healthy=member.healthy,
        is_self=member.is_self,
        hidden=settings.hidden,
        priority=settings.priority,
        votes=settings.votes,
        delay_ms=settings.delay_ms,
        raw_lag_ms=raw,
        lag_ms=lag,
        precision=precision,
        lag_source=source,
        written_lag_ms=written,
        sync_source=member.sync_source,
        ping_ms=member.ping_ms,
        uptime_s=member.uptime_s,
        tags=settings.tags,
        arbiter_only=settings.arbiter_only,
        status=status,
        notes=tuple(notes),
    )


def build_snapshot(
    status: StatusReport | dict[str, Any],
    config_doc: dict[str, Any] | None = None,
    oplog: dict[str, OplogProbe] | None = None,
    evidence: Evidence | None = None,
    *,
    asked_between_ms: tuple[int, int] | None = None,
) -> Snapshot:
    """Judge one replSetGetStatus document (or its `read_status` reading, so the collector reads it once).

    `config_doc` is the `config` sub-document of replSetGetConfig (members with hidden/priority/votes/delay);
    `oplog` maps a member name to what the primary's oplog said about it; `evidence` is what the danger reads found
    (oplog windows, flow control, initial sync), judged by `danger.assess` before the set's one verdict. Never
    raises on any document shape a server can produce: odd fields become reasons, not exceptions.
    `asked_between_ms` is this exporter's wall clock just before and just after it asked for the status, to
    compare the document's `date` with (docs/domain.md §17); the engine reads no clock itself.
    """
    report = _report(status)
    date_ms = report.date_ms
    notes: list[Note] = list(report.notes)
    if date_ms is None:
        notes.append(Note(NoteKind.NO_DATE, "the status document has no usable date; collected_at_ms is 0"))
    clock_notes = clock_skew(report, asked_between_ms)
    notes += clock_notes
    date_stepped = any(note.value("between") == "members" for note in clock_notes)
    date_ahead = any(note.value("offset_ms", 0) > 0 for note in clock_notes)
    reported, problems = report.members, list(report.problems)
    if reported is None:
        return Snapshot(
            set_name=report.set_name,
            answered_by="",
            reference=Reference.NONE,
            reference_member="",
            has_primary=False,
            status=Status.RED,
            reasons=tuple(problems),
            members=(),
            collected_at_ms=date_ms or 0,
            notes=tuple(notes),
        )

    reference, kind = report.reference, report.reference_kind
    if report.primaries_reported > 1 and reference is not None:
        # A member's heartbeat view can briefly show the old primary after an election.
        count = report.primaries_reported
        text = f"{count} members report PRIMARY; lag is measured against {reference.name}, the newest"
        notes.append(Note(NoteKind.SEVERAL_PRIMARIES, text, values=(("count", count), ("chosen", reference.name))))
    by_host, by_id, config_note = _read_settings(config_doc)
    if config_note:
        notes.append(Note(NoteKind.CONFIG_UNREADABLE, config_note))
    probes = oplog if isinstance(oplog, Mapping) else {}
    probed = {m.index for m in report.probe_targets()}

    judged = []
    for member in reported:
        probe = probes.get(member.name) if member.index in probed else None
        judgement = _judge(
            member,
            reference,
            kind,
            settings=by_host.get(member.name) or by_id.get(member.id) or _Settings(),
            probe=probe if isinstance(probe, OplogProbe) else None,
            date_ms=date_ms,
            date_stepped=date_stepped,
            date_ahead=date_ahead,
        )
        judged.append((member.index, judgement))
        notes += [note for note in judgement.notes if note.kind is NoteKind.OPLOG_FALLBACK]

    # Primary first, then by _id; the document order breaks ties so equal ids stay put.
    members = tuple(m for _, m in sorted(judged, key=lambda pair: (not pair[1].is_primary, pair[1].id, pair[0])))
    # Only the primary's commit point is the set's (a secondary's view trails by a heartbeat).
    commit_lag = report.majority_commit_lag_ms if report.answered_by_primary else None
    control = None
    if evidence is not None:
        danger = assess(
            members,
            evidence,
            reference=kind,
            reference_member=reference.name if reference else "",
            majority_commit_lag_ms=commit_lag,
        )
        members, control = danger.members, danger.flow_control
        notes += danger.notes
    has_primary = report.reports_a_healthy_primary
    status, reasons = verdict(members, tuple(problems), has_primary)
    answered_by = report.answered_by
    return Snapshot(
        set_name=report.set_name,
        answered_by=answered_by.name if answered_by is not None else "",
        reference=kind,
        reference_member=reference.name if reference is not None else "",
        has_primary=has_primary,
        status=status,
        reasons=reasons,
        problems=tuple(problems),
        members=members,
        collected_at_ms=date_ms or 0,
        notes=tuple(notes),
        majority_commit_lag_ms=commit_lag,
        flow_control=control,
    )


def clock_skew(report: StatusReport, asked_between_ms: tuple[int, int] | None = None) -> list[Note]:
    """The clocks that disagree, as notes of kind CLOCK_SKEW (docs/domain.md §17); empty when they agree.

    Between members: every wall time was stamped by the primary's clock at its write, and `date` is the answering
    member's clock now, so a `date` behind the newest write (beyond CLOCK_TOLERANCE_MS) is a clock stepped back on
    the answering member or two members' clocks apart. Between the poll and the server: `date` outside the span in
    which this exporter asked (its own wall clock, give or take CLOCK_TOLERANCE_MS): one of the two clocks is wrong.
    Neither changes a colour by itself: wall-time lags need no clock, the oplog age is bounded by the wall-time
    lag on the side the date errs (`_measure`), and ages and the history use the exporter's monotonic clock."""
    date_ms = report.date_ms
    if date_ms is None:
        return []
    me = report.answered_by
    who = me.name if me is not None else "the answering member"
    notes = []
    newest = report.newest_write()
    if newest is not None and newest[1] - date_ms > CLOCK_TOLERANCE_MS:
        writer, wall_ms = newest
        behind = wall_ms - date_ms
        whose = "its own" if me is not None and writer.name == me.name else f"{writer.name}'s"
        text = (
            f"the status date of {who} is {behind} ms behind the newest write the set reports ({whose}): a clock "
            "was stepped back or the members' clocks disagree; lags are from wall times, which no clock enters"
        )
        values = (("between", "members"), ("behind_ms", behind), ("member", who), ("writer", writer.name))
        notes.append(Note(NoteKind.CLOCK_SKEW, text, values=values))
    if asked_between_ms is not None:
        start_ms, end_ms = asked_between_ms
        offset = date_ms - start_ms if date_ms < start_ms else date_ms - end_ms if date_ms > end_ms else 0
        if abs(offset) > CLOCK_TOLERANCE_MS:
            side = "ahead of" if offset > 0 else "behind"
            text = (
                f"the status date of {who} is {abs(offset)} ms {side} this exporter's clock during the poll: one of "
                "the two clocks is wrong (check NTP on both); the data age and the lag history use the exporter's "
                "own monotonic clock"
            )
            values = (("between", "poll_and_server"), ("offset_ms", offset), ("member", who))
            notes.append(Note(NoteKind.CLOCK_SKEW, text, values=values))
    return notes


def verdict(
    members: tuple[Member, ...], problems: tuple[str, ...], has_primary: bool
) -> tuple[Status, tuple[str, ...]]:
    """The set's status and its reasons, worst first: no primary, unreadable parts, then each member not GREEN."""
    ranked: list[tuple[Status, str]] = [(Status.RED, "no primary")] if not has_primary else []
    ranked += [(Status.RED, problem) for problem in problems]
    ranked += [(m.status, f"{m.name}: {m.reason}") for m in members if m.status is not Status.GREEN]
    ranked.sort(key=lambda pair: -pair[0])  # stable: equal severities keep the member order
    return max((status for status, _ in ranked), default=Status.GREEN), tuple(text for _, text in ranked)
