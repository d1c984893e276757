"""The words people read, in one place: the sentences the Zero Problem document (bridge.py) and the status page
share, so the two never disagree about a member, a set or the collection.

PURE: no I/O, no clock. Imports `model`, `trend` (its words) and `view`.
"""

from __future__ import annotations

from replicationlag.model import COMMON_LOCATION_TAGS, RED_AT_MS, Member, NoteKind, Status
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
        return "healthy" if member.healthy else f"not healthy: {member.reason or member.state_str}"
    return member.reason or member.state_str or f"state {member.state}"


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
        sentences.append(f"Collection failed: {view.failure.message}")
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
        if view.sets:
            age = f", read {int(view.map_age_s)} s ago" if view.map_age_s is not None else ""
            sentences.append(f"Shard map not read: {view.map_failure.message}; polling the last known map{age}")
        else:
            sentences.append(f"Shard map not read: {view.map_failure.message}")
    if not view.config_watched:
        sentences.append(
            f"The config server replica set is not watched: the routers gave the shards by {view.map_source}, "
            "which does not name it (getShardMap was refused)"
        )
    down = [r.address for r in view.routers if not r.reachable]
    if down:
        sentences.append(f"Router{'s' if len(down) > 1 else ''} not reachable: {', '.join(down)}")
    return sentences


def set_problems(each: SetView) -> list[str]:
    """Which set, which member, why: the collection's problems or the engine's reasons, each naming the set."""
    sentences = collection_problems(each) or (list(each.current.reasons) if each.current is not None else [])
    return [f"{each.address.label}: {sentence}" for sentence in sentences]


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
