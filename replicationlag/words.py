"""The words people read, in one place: the sentences the Zero Problem document (bridge.py) and the status page
share, so the two never disagree about a member, a set or the collection.

Every string a server or a router wrote goes through `text.neutral` once, here or where a reader shows it, so
nothing a server says can forge a line. The summary (`summary`) is the verdict and one line per kind of problem
with its count, its first few names and since when: the document, the status page and the log open with it.

PURE: no I/O, no clock. Imports `model`, `problems`, `text`, `trend` (its words) and `view`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from replicationlag.model import COMMON_LOCATION_TAGS, RED_AT_MS, Member, NoteKind, SetRole, Snapshot, Status
from replicationlag.problems import (
    NOT_COLLECTED,
    RED_BEHIND,
    STALE,
    YELLOW_BEHIND,
    Problem,
    failure_problem,
    names_words,
    plural,
    shared,
    snapshot_problems,
)
from replicationlag.text import NAME_LIMIT, natural_key, neutral
from replicationlag.trend import Trend
from replicationlag.view import SetView, View


def duration_words(ms: int) -> str:
    """A duration as people say it: `45 s`, `12 min`, `5 h 12 min`, `3 d 4 h`."""
    seconds = max(0, ms) // 1000
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


# A cluster of up to this many sets lists every set's members; a larger one lists the sets that are not GREEN
# and sums the GREEN ones up in one line, so the document stays readable at 100 shards.
FULL_LISTING_MAX_SETS = 4


def role(member: Member) -> str:
    """The member's role in words. Any other data-bearing member (down, recovering, ...) is a secondary."""
    if member.is_primary:
        return "Primary"
    if member.is_arbiter:
        return "Arbiter"
    return "Secondary"


def attributes(member: Member) -> list[str]:
    """Configuration facts a reader needs to judge the lag: hidden, and the configured delay."""
    facts = []
    if member.hidden:
        facts.append("hidden")
    if member.delay_ms:
        facts.append(f"delayed {duration_text(member.delay_ms)}")
    return facts


def lag_text(member: Member) -> str:
    """The lag as a reader should read it: exact ms, or "~" and a note when only whole seconds are known."""
    if member.lag_ms is None:
        return ""
    if member.precision == "s":
        text = f"~{member.lag_ms}ms, whole seconds: server has no wall times"
    else:
        text = f"{member.lag_ms}ms"
    if member.delay_ms and member.raw_lag_ms is not None:
        text += f" (raw {member.raw_lag_ms}ms)"
    return text


def condition(member: Member) -> str:
    """What stands in for the lag of a member that has none: an arbiter's health, else why (e.g. `DOWN: ...`).

    The engine's reason already names the state when the state is the cause, so it is shown as it is.
    """
    if member.is_arbiter:
        return "healthy" if member.healthy else f"not healthy: {neutral(member.reason or member.state_str)}"
    return neutral(member.reason or member.state_str or f"state {member.state}")


def danger_words(member: Member, trend: Trend | None) -> list[str]:
    """For a YELLOW or RED member: which way its lag goes and when that matters, and its oplog headroom."""
    if member.status is Status.GREEN or member.lag_ms is None:
        return []
    full_source = member.sync_source_full is True
    words = [trend_words(trend, member.lag_ms, member.headroom_ms if full_source else None)] if trend else []
    if member.headroom_ms is not None and not member.has_note(NoteKind.HEADROOM_LOW):
        words.append(f"oplog headroom {duration_words(member.headroom_ms)}" + ("" if full_source else _NOT_FULL))
    return words


_NOT_FULL = " (the oplog is not full yet: not a limit)"


def collection_problems(view: View | SetView) -> list[str]:
    """The sentences that explain a RED caused by the exporter rather than the set: no data, failed or stale.

    Empty when the view (of a replica set, or of one set of a cluster) has current data. These come first in the
    document and on the status page.
    """
    if view.current is not None:
        return []
    if view.snapshot is None and view.failure is None:
        return ["No collection has finished yet"]
    sentences = []
    if view.failure is not None:
        sentences.append(f"Collection failed: {neutral(view.failure.message)}")
    if view.snapshot is not None and view.age_s is not None:
        age = int(view.age_s)
        if view.is_stale:
            sentences.append(f"Data is stale: last successful collection {age} s ago")
        else:
            sentences.append(f"Last successful collection {age} s ago")
    return sentences


# The set's notes a reader must see beside its members: what endangers it, a read it may not make, clocks that
# disagree (docs/domain.md §17).
SET_DANGER = frozenset(
    {NoteKind.MAJORITY_COMMIT_LAG, NoteKind.FLOW_CONTROL_ENGAGED, NoteKind.PRIVILEGE_MISSING, NoteKind.CLOCK_SKEW}
)


def cluster_problems(view: View) -> list[str]:
    """Sentences about the cluster as a whole: no poll yet, the map not read, sets or routers not watched."""
    if view.polls == 0:
        return ["No collection has finished yet"]
    sentences = []
    if view.map_failure is not None:
        message = neutral(view.map_failure.message)
        if view.sets:
            age = f", read {int(view.map_age_s)} s ago" if view.map_age_s is not None else ""
            sentences.append(f"Shard map not read: {message}; polling the last known map{age}")
        else:
            sentences.append(f"Shard map not read: {message}")
    if not view.config_watched:
        sentences.append(
            f"The config server replica set is not watched: the routers gave the shards by {view.map_source}, "
            "which does not name it (getShardMap was refused)"
        )
    down = sorted((r.address for r in view.routers if not r.reachable), key=natural_key)
    if down:
        names = names_words([neutral(name, NAME_LIMIT) for name in down])
        sentences.append(f"Router{'s' if len(down) > 1 else ''} not reachable: {names}")
    return sentences


def duration_text(ms: int) -> str:
    """A configured delay as people write it: whole seconds when it is whole seconds."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def changing_sentences(view: View) -> tuple:
    """What a view shows that changes between polls, ages in whole seconds aside: the poll, the colour and the
    sentences that print an age. Two views with the same key read the same, so answers are rendered once per key."""
    if view.sharded:
        moving = [*cluster_problems(view), *(p for each in view.sets for p in collection_problems(each))]
    else:
        moving = collection_problems(view)
    return (view.polls, view.status, tuple(moving))


def minutes_words(minutes: float) -> str:
    """`about 4 min`, `about 2 h 10 min`, `under a minute`."""
    if minutes < 1:
        return "under a minute"
    return "about " + duration_words(round(minutes) * 60_000)


def trend_words(found: Trend, lag_ms: int, headroom_ms: int | None = None) -> str:
    """`rising 2.1 s/min, RED in about 4 min`: the direction, the rate, and the time that means something.

    Rising below RED: when it turns RED. Rising with headroom known (and the source's oplog full): when it would
    fall off the oplog, if that comes first or it is RED already. Falling: when it has caught up. Each only within
    the trend's horizon; beyond it the rate alone (the caller shows the headroom beside it).
    """
    direction = found.direction
    if direction == "steady":
        return "steady"
    rate = abs(found.ms_per_min)
    text = f"{direction} {rate / 1000:.1f} s/min"

    def within(minutes: float | None) -> float | None:
        return minutes if minutes is not None and minutes <= found.horizon_min else None

    if direction == "falling":
        to_zero = within(lag_ms / rate)
        return text if to_zero is None else f"{text}, caught up in {minutes_words(to_zero)}"
    to_red = within((RED_AT_MS - lag_ms) / rate if lag_ms < RED_AT_MS else None)
    to_off = within(headroom_ms / rate if headroom_ms is not None and headroom_ms > 0 else None)
    if to_off is not None and (to_red is None or to_off < to_red):
        return f"{text}, off the oplog in {minutes_words(to_off)}"
    if to_red is not None:
        return f"{text}, RED in {minutes_words(to_red)}"
    return text


def location_keys(view: View) -> tuple[str, ...]:
    """The member tag keys members are grouped by: --topology.tags, else the first of the common location keys that
    some member of the cluster carries (docs/domain.md §16); () when members carry none."""
    if view.location_tags:
        return view.location_tags
    carried = {key for each in view.sets if each.snapshot for m in each.snapshot.members for key, _ in m.tags}
    return next(((key,) for key in COMMON_LOCATION_TAGS if key in carried), ())


def location(member: Member, keys: tuple[str, ...]) -> str:
    """Where the member lives, in words: `cloud gcp (asia-northeast3)` for the keys cloud and region; "" when it does
    not carry the first key."""
    values = [member.tag(key) for key in keys]
    if not values or not values[0]:
        return ""
    rest = [value for value in values[1:] if value]
    return f"{keys[0]} {values[0]}" + (f" ({', '.join(rest)})" if rest else "")


# --- The summary: the verdict, then one line per kind of problem. -------------------------------------------------

VERDICT_MAX_CHARS = 119  # under 120: what a pager's title (Opsgenie's message: 130) shows of the first line
NAMES_SHOWN = 3  # the first few names of a shared problem; the rest are counted
DETAIL_LIMIT = 160  # a failure's message inside a summary line
_LAG_KINDS = (RED_BEHIND, YELLOW_BEHIND)  # named with their exact lag, the largest first


@dataclass(frozen=True)
class Found:
    """One problem of one set, with since when it has lasted (wall s), when known."""

    problem: Problem
    where: SetView
    since_s: float | None


@dataclass(frozen=True)
class Summary:
    """What the document, the page and the log open with. `lines` are (colour, text) without a list marker; a
    cluster-wide note that changes no colour has colour None and reads `NOTE: ...`."""

    verdict: str
    lines: tuple[tuple[Status | None, str], ...]


def set_name(each: SetView) -> str:
    """How a summary names a set: its shard id, `config servers`, or its replica-set name; neutral."""
    if each.address.role is SetRole.SHARD:
        return neutral(each.address.shard_id or each.name, NAME_LIMIT)
    if each.address.role is SetRole.CONFIG:
        return "config servers"
    return neutral(each.name, NAME_LIMIT)


def set_label(each: SetView) -> str:
    """How a heading names a set: `shard03 (replica set shard03rs)`, `config servers (replica set configRepl)`,
    or a replica set's own name; neutral."""
    name = neutral(each.address.name, NAME_LIMIT)
    if each.address.role is SetRole.REPLICA_SET:
        return name
    return f"{set_name(each)} (replica set {name})"


def set_problems(each: SetView) -> list[Found]:
    """The set's problems now: why it could not be collected (failed, stale, not yet), else its snapshot's."""
    if each.current is None:
        if each.failure is not None:
            found = failure_problem(each.failure)
            return [Found(found, each, each.since_of(found.kind))]
        if each.snapshot is not None:  # stale: it turned RED when its data turned stale
            age = f"last successful collection {int(each.age_s)} s ago" if each.age_s is not None else ""
            return [Found(Problem(Status.RED, STALE, detail=age), each, each.status_since_s)]
        return [Found(Problem(Status.RED, NOT_COLLECTED), each, None)]
    return [Found(p, each, each.since_of(p.kind, p.member)) for p in snapshot_problems(each.current)]


def worst_set_order(each: SetView) -> tuple:
    """Sets worst first: RED, then YELLOW, then GREEN; the largest lag first; then by name, naturally."""
    current = each.current
    worst = current.max_lag_ms if current is not None else None
    return (-each.status, -(worst if worst is not None else -1), natural_key(each.name))


def since_words(since_s: float | None, now_s: float | None) -> str:
    """`for 8 min, since 03:12 UTC` (a date too once it is nearly a day ago); "" when not known."""
    if since_s is None:
        return ""
    at = datetime.fromtimestamp(since_s, UTC)
    if now_s is None or now_s - since_s < 1:  # seen first by this poll (or it turned stale since): no "for 0 s"
        return f"since {at:%H:%M} UTC"
    lasted = now_s - since_s
    clock = f"{at:%d %b %H:%M} UTC" if lasted >= 20 * 3600 else f"{at:%H:%M} UTC"
    return f"for {duration_words(int(lasted * 1000))}, since {clock}"


def _group_order(group: tuple[tuple[Status, str, bool], list[Found]]) -> tuple:
    (status, _, _), found = group
    lags = [f.problem.lag_ms for f in found if f.problem.lag_ms is not None]
    # RED before YELLOW; within a colour what has no lag (DOWN, a state, a failed collection) before the lags,
    # then the largest lag first, then the most widespread.
    return (-status, bool(lags), -max(lags, default=0), -len(found))


def _subject_order(found: Found) -> tuple:
    lag = found.problem.lag_ms
    return (-(lag if lag is not None else -1), natural_key(found.where.name), natural_key(found.problem.member))


def problem_groups(view: View) -> list[tuple[Status, str, bool, list[Found]]]:
    """Every set's problems, one group per (colour, kind): (colour, kind, about members, problems), in the
    order a reader should take them (RED first, then the largest lag), each group's problems worst first."""
    found = [f for each in view.sets for f in set_problems(each)]
    groups = shared(((f.problem.status, f.problem.kind, bool(f.problem.member)), f) for f in found)
    groups.sort(key=_group_order)
    return [(status, kind, members, sorted(items, key=_subject_order)) for (status, kind, members), items in groups]


def _set_noun(found: list[Found]) -> str:
    return "shard" if all(f.where.address.role is SetRole.SHARD for f in found) else "set"


def _distinct_sets(found: list[Found]) -> list[SetView]:
    seen: dict[str, SetView] = {}
    for f in found:
        seen.setdefault(f.where.name, f.where)
    return list(seen.values())


def _lag_name(f: Found, first: bool, sharded: bool) -> str:
    member = neutral(f.problem.member, NAME_LIMIT)
    if not sharded:
        return f"{member} {f.problem.lag_ms}ms"
    # The worst is named with its member; the next ones by their set, which is enough to find them below.
    return " ".join([set_name(f.where), *([member] if first else []), f"{f.problem.lag_ms}ms"])


def group_line(view: View, status: Status, kind: str, members: bool, found: list[Found]) -> str:
    """`RED: DOWN: 100 members in 100 shards: shard01, shard02, shard03 and 97 more (for 8 min, since 03:12 UTC)`.

    A lag names its worst member with its exact lag first; a failed collection says the first set's message."""
    sets = _distinct_sets(found)
    if kind in _LAG_KINDS and members:
        names = [_lag_name(f, i == 0, view.sharded) for i, f in enumerate(found[:NAMES_SHOWN])]
        listed = names_words(names, NAMES_SHOWN, total=len(found))
    elif members and not view.sharded:
        listed = names_words([neutral(f.problem.member, NAME_LIMIT) for f in found], NAMES_SHOWN)
    elif view.sharded:
        listed = names_words([set_name(s) for s in sets], NAMES_SHOWN)
    else:
        listed = ""  # the one replica set: the verdict names it
    if members and (view.sharded or len(found) > 1):
        where = f" in {plural(len(sets), _set_noun(found))}" if view.sharded else ""
        text = f"{plural(len(found), 'member')}{where}: {listed}"
    elif view.sharded and len(sets) > 1:
        text = f"{plural(len(sets), _set_noun(found))}: {listed}"
    else:
        text = listed
    detail = neutral(found[0].problem.detail, DETAIL_LIMIT) if found[0].problem.detail else ""
    if detail and view.sharded and len(sets) > 1:
        detail = f"{set_name(found[0].where)}: {detail}"  # the first set's words stand for the others'
    # One set: its message follows its name; several: the first set's message after the list.
    text = ("; " if len(sets) > 1 else ": ").join(part for part in (text, detail) if part)
    line = f"{status.name}: {kind}: {text}" if text else f"{status.name}: {kind}"
    since = since_words(min((f.since_s for f in found if f.since_s is not None), default=None), view.published_wall_s)
    return f"{line} ({since})" if since else line


def _verdict_part(view: View, kind: str, members: bool, found: list[Found]) -> str:
    sets = _distinct_sets(found)
    where = ""
    if view.sharded:
        where = f" in {set_name(sets[0])}" if len(sets) == 1 else f" in {plural(len(sets), _set_noun(found))}"
    if members:
        return f"{plural(len(found), 'member')} {kind}{where}"
    return f"{kind}{where}"


def worst_lag(view: View) -> tuple[int, SetView, Member] | None:
    """The most lagging member of the sets collected now, with its set; None when no member lags at all."""
    lagging = [
        (m.lag_ms, -i, each, m)
        for i, each in enumerate(view.sets)
        if each.current is not None
        for m in each.current.members
        if m.lag_ms
    ]
    if not lagging:
        return None
    lag, _, each, member = max(lagging, key=lambda item: (item[0], item[1]))
    return lag, each, member


def verdict(view: View, groups: list[tuple[Status, str, bool, list[Found]]]) -> str:
    """The first line, under 120 characters: the colour, the worst problems counted, and the most lagging member
    with its exact lag (`RED: 100 members DOWN in 100 shards; worst lag shard07 db7b:27018 45000ms`)."""
    status = view.status.name
    if view.polls == 0:
        return f"{status}: no collection has finished yet"
    if not view.sets:
        first = cluster_problems(view)
        return _fit(f"{status}: {first[0] if first else 'no replica set known'}", [])
    if view.sharded:
        shards = sum(1 for s in view.sets if s.address.role is SetRole.SHARD)
        whole = plural(shards, "shard") + (" and the config servers" if view.config_watched else "")
    else:
        members = len(view.current.members) if view.current is not None else 0
        name = neutral(view.sets[0].name, NAME_LIMIT)
        whole = f"replica set {name}" if name else "the replica set"  # named by its first snapshot
        whole += f", {plural(members, 'member')}" if members else ""
    worst = worst_lag(view)
    lag_part = []
    if worst is not None:
        lag, each, member = worst
        at = f"{set_name(each)} " if view.sharded else ""
        lag_part = [f"worst lag {at}{neutral(member.name, NAME_LIMIT)} {lag}ms"]
    if not groups:
        return _fit(f"{status}: {whole}", lag_part or ["no lag"])
    parts = [_verdict_part(view, kind, members, found) for _, kind, members, found in groups]
    head = f"{status}: {parts[0]}" if view.sharded else f"{status}: {whole}: {parts[0]}"
    return _fit(head, [*parts[1:], *lag_part], keep_last=bool(lag_part))


def _fit(head: str, parts: list[str], *, keep_last: bool = False) -> str:
    """`head; part; part` in at most VERDICT_MAX_CHARS: parts that do not fit are left out (the lines below say
    them), the last kept first when asked (the worst lag), and a head too long is cut."""
    if len(head) > VERDICT_MAX_CHARS:
        return head[: VERDICT_MAX_CHARS - 1].rstrip("\\") + "…"
    last = parts[-1:] if keep_last else []
    middle = parts[:-1] if keep_last else parts
    chosen: list[str] = []
    budget = VERDICT_MAX_CHARS - len(head) - sum(len(p) + 2 for p in last)
    for part in middle:
        if len(part) + 2 <= budget:
            chosen.append(part)
            budget -= len(part) + 2
    if budget < 0:
        last = []
    return "; ".join([head, *chosen, *last])


def summary(view: View) -> Summary:
    """The verdict, then one line per kind of problem (RED first, then the largest lag), then the cluster's notes.
    Where every member of a location (two or more) shares a problem, that location is one line of its own
    (`RED: cloud gcp (asia-northeast3): 2 of 2 members DOWN`) and its members leave the kind's line."""
    groups = problem_groups(view)
    keys = location_keys(view)
    places = _places(view, keys) if keys else {}
    lines: list[tuple[Status | None, str]] = []
    for status, kind, members, found in groups:
        whole, rest = _whole_locations(places, found) if members and places else ([], found)
        for where, total, items in whole:
            lines.append((status, location_line(view, status, kind, where=where, total=total, found=items)))
        if rest:
            lines.append((status, group_line(view, status, kind, members, rest)))
    if view.sharded:
        colour = Status.RED if not view.sets else None
        lines += [(colour, f"{'RED' if colour else 'NOTE'}: {sentence}") for sentence in cluster_problems(view)]
    return Summary(verdict(view, groups), tuple(lines))


# --- Where members live (docs/domain.md §16). --------------------------------------------------------------------


def _places(view: View, keys: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """(set, member) -> where it lives, in words, for every member of the sets collected now ("" without the tag)."""
    return {
        (each.name, m.name): neutral(location(m, keys), NAME_LIMIT)
        for each in view.sets
        if each.current is not None
        for m in each.current.members
    }


def _whole_locations(
    places: dict[tuple[str, str], str], found: list[Found]
) -> tuple[list[tuple[str, int, list[Found]]], list[Found]]:
    """The locations (of two members or more) whose every member has this problem, with their size and problems,
    and the problems left for the kind's own line."""
    size: dict[str, int] = {}
    for where in places.values():
        if where:
            size[where] = size.get(where, 0) + 1
    by_place = shared((places.get((f.where.name, f.problem.member), ""), f) for f in found)
    whole = [
        (where, size[where], items)
        for where, items in by_place
        if where and size[where] >= 2 and len(items) == size[where]
    ]
    taken = {id(f) for _, _, items in whole for f in items}
    return whole, [f for f in found if id(f) not in taken]


def location_line(view: View, status: Status, kind: str, *, where: str, total: int, found: list[Found]) -> str:
    """`RED: cloud gcp (asia-northeast3): 2 of 2 members DOWN (for 3 min, since 03:12 UTC)`."""
    line = f"{status.name}: {where}: {len(found)} of {plural(total, 'member')} {kind}"
    since = since_words(min((f.since_s for f in found if f.since_s is not None), default=None), view.published_wall_s)
    return f"{line} ({since})" if since else line


@dataclass(frozen=True)
class Place:
    """One location's members now: how many are up and down, the worst lag and the slowest round trip there."""

    name: str  # `cloud gcp (asia-northeast3)`, or `no cloud tag` for members without it; neutral
    up: int
    down: int
    worst_lag: tuple[int, str] | None  # (ms, member)
    slowest_ping: tuple[int, str] | None  # (ms, member), as the member that answered saw it


def place_rows(view: View) -> list[Place]:
    """Every location of the sets collected now, worst first (most members down, then the largest lag), for the
    status page; [] when members carry no location tag."""
    keys = location_keys(view)
    if not keys:
        return []
    rows: dict[str, list[Member]] = {}
    for each in view.sets:
        if each.current is not None:
            for m in each.current.members:
                where = neutral(location(m, keys), NAME_LIMIT) or f"no {keys[0]} tag"
                rows.setdefault(where, []).append(m)
    places = []
    for name, members in rows.items():
        lags = [(m.lag_ms, m.name) for m in members if m.lag_ms is not None]
        pings = [(m.ping_ms, m.name) for m in members if m.ping_ms is not None and m.healthy and not m.is_self]
        up = sum(1 for m in members if m.healthy)
        places.append(Place(name, up, len(members) - up, max(lags, default=None), max(pings, default=None)))
    return sorted(places, key=lambda p: (-p.down, -(p.worst_lag or (0, ""))[0], natural_key(p.name)))


def source_elsewhere(member: Member, snapshot: Snapshot, keys: tuple[str, ...]) -> str:
    """Where the member's sync source lives, when that is another location than its own (it pays the round trip
    between them on every batch it copies); "" otherwise."""
    if not keys or not member.sync_source:
        return ""
    source = next((m for m in snapshot.members if m.name == member.sync_source), None)
    here, there = location(member, keys), location(source, keys) if source is not None else ""
    return neutral(there, NAME_LIMIT) if here and there and here != there else ""
