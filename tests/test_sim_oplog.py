"""The simulator's lazily computed oplog keeps the promises a real oplog keeps, whatever mix of write traffic,
idle no-ops, rates, writes, elections and stops produced it: ts strictly increasing, ts.time the wall's second,
an entry once seen never changes, and `{ts: {$gt: X}}` finds exactly the next entry."""

from __future__ import annotations

import random

from bson import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from mongosim.model import Entry, Oplog

START_MS = 1_723_763_000_000

step = st.one_of(
    st.tuples(st.just("advance"), st.integers(0, 25_000)),
    st.tuples(st.just("mode"), st.sampled_from(["traffic", "idle", "stopped"])),
    st.tuples(st.just("rate"), st.sampled_from([0.5, 3, 100, 1000, 2500])),
    st.tuples(st.just("write"), st.integers(1, 3)),
    st.tuples(st.just("term"), st.just(0)),
)


def _sample(total: int, rng: random.Random) -> list[int]:
    if total <= 400:
        return list(range(1, total + 1))
    return sorted({1, total, *rng.sample(range(1, total + 1), 300)})


@settings(max_examples=120, deadline=None)
@given(st.lists(step, max_size=10), st.sampled_from(["traffic", "idle"]), st.randoms(use_true_random=False))
def test_the_oplog_is_ordered_stable_and_searchable_by_ts(steps, mode, rng):
    oplog = Oplog(START_MS, mode)
    now, term = START_MS + 500, 1
    seen: dict[int, Entry] = {}
    for kind, value in steps:
        if kind == "advance":
            now += value
        elif kind in ("mode", "rate"):
            oplog.switch("rate" if kind == "rate" else value, now, rate=value if kind == "rate" else 0.0)
        elif kind == "write":
            for _ in range(value):
                oplog.write(now)
        else:
            term += 1
            oplog.new_term(term, now)
            oplog.write(now, kind="new_primary", ns="", o={"msg": "new primary"})
        last = oplog.last_at_or_before(now)
        if last is not None:
            seen[last.n] = last

    total = oplog.count_le(now)
    for entry in seen.values():  # what a client saw earlier is still there, unchanged
        assert oplog.entry(entry.n, now) == entry
    previous = None
    for n in _sample(total, rng):
        entry = oplog.entry(n, now)
        assert entry.ts.time == entry.wall // 1000
        assert oplog.count_le(entry.wall - 1) < n <= oplog.count_le(entry.wall)
        assert oplog.ordinal_after(entry.ts) == n + 1
        assert oplog.ordinal_after(Timestamp(entry.ts.time, entry.ts.inc - 1)) == n
        if previous is not None:
            assert previous.ts < entry.ts and previous.wall <= entry.wall and previous.term <= entry.term
        previous = entry


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["traffic", "idle"]), st.integers(1, 40_000), st.integers(1, 60_000))
def test_a_member_with_apply_delay_l_has_applied_everything_older_than_l_and_nothing_newer(mode, lag, elapsed):
    oplog = Oplog(START_MS, mode)
    now = START_MS + 100_000 + elapsed
    n = oplog.position(now, lag)
    applied = oplog.entry(n, now)
    assert applied.wall <= now - lag
    nxt = oplog.ordinal_after(applied.ts)
    if nxt <= oplog.count_le(now):
        assert oplog.entry(nxt, now).wall >= now - lag  # the oldest unapplied op is at most `lag` old
    if mode == "traffic":  # two entries per ms: the lookup and the wall times agree to the ms
        assert applied.wall == now - lag == oplog.entry(nxt, now).wall
