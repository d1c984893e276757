"""The status page: one `View` in, one self-refreshing HTML page out, with no script and nothing loaded; a
sharded cluster is drawn set by set, problems first.

It opens with the same summary as the document (the verdict, one line per kind of problem), then the details:
the sets worst first, GREEN sets folded away. PURE: no I/O. The words come from `words`, which the Zero Problem
document shares, so the two never disagree; every string from a server goes through `text.neutral` like in the
document, and everything is HTML-escaped on top; lag history is drawn as inline SVG by `web.charts`, over the span
there is data for. Imports `model`, `problems`, `text`, `trend`, `view`, `web.charts` and `words`.
"""

from __future__ import annotations

import html
from collections import Counter
from datetime import UTC, datetime

from replicationlag import words
from replicationlag.model import Member, Reference, SetRole, Snapshot, Status
from replicationlag.problems import member_kind
from replicationlag.text import MESSAGE_LIMIT, NAME_LIMIT, neutral
from replicationlag.trend import Trend
from replicationlag.view import SetView, View
from replicationlag.web.charts import first_point_s, lag_chart, span_words
from replicationlag.words import duration_words

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 84em; padding: 0 1em; color: #1f2328; }
.status { padding: .1em .5em; border-radius: .3em; font-weight: bold; }
.GREEN { background: #dafbe1; color: #116329; } .YELLOW { background: #fff8c5; color: #7d4e00; }
.RED { background: #ffebe9; color: #a40e26; }
table { border-collapse: collapse; margin: 1em 0; } caption { text-align: left; font-weight: bold; }
th, td { border-bottom: 1px solid #d0d7de; padding: .3em .8em; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.problem { color: #a40e26; font-weight: bold; } .muted { color: #656d76; } .warn { color: #7d4e00; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; } .charts svg { background: #f6f8fa; }
.verdict { font-size: 1.1em; font-weight: bold; }
"""


def render_status_page(view: View, *, document_path: str, metrics_path: str = "/metrics") -> str:
    """The whole status page for one view, linking the Zero Problem document at `document_path` and the metrics at
    `metrics_path`; every piece of text from outside is HTML-escaped."""
    status = view.status.name
    snapshot = view.snapshot
    title = f"{status} · replication lag · {view.infra}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{_refresh_s(view)}">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f'<h1>Replication lag <span class="status {status}">{status}</span></h1>',
        *_summary(view),
        *_places_table(view),
    ]
    if view.sharded:
        parts += _cluster_body(view)
        parts += _footer(view, document_path, metrics_path)
        return "\n".join(parts)
    parts.append(f"<p>Infra <b>{_e(view.infra)}</b>{_set_sentence(snapshot)}</p>")
    # The summary said what is wrong; of a failed collection the page adds what follows (the last success's age).
    after = words.collection_problems(view)[1:] if view.failure is not None else []
    parts += [f'<p class="problem">{_e(p)}</p>' for p in after]
    if snapshot is not None:
        parts.append(
            _members_table(
                snapshot, last_known=view.current is None, trends=view.single, keys=words.location_keys(view)
            )
        )
        parts.append(_history_charts(view, snapshot, HISTORY_POINTS))
    parts += _footer(view, document_path, metrics_path)
    return "\n".join(parts)


_SUMMARY_CLASS = {Status.RED: "problem", Status.YELLOW: "warn", Status.GREEN: "", None: "muted"}


def _places_table(view: View) -> list[str]:
    """Where members live (docs/domain.md §16): per location, members up and down, the worst lag and the slowest
    round trip; nothing when members carry no location tag."""
    rows = words.place_rows(view)
    if not rows:
        return []
    head = _header_row(("Location", "Up", "Down", "Worst lag", "Slowest round trip"), {"Up", "Down"})
    cells = []
    for place in rows:
        down = f'<td class="num problem">{place.down}</td>' if place.down else '<td class="num">0</td>'
        cells.append(
            f'<tr><td>{_e(place.name)}</td><td class="num">{place.up}</td>{down}'
            f"<td>{_e(_member_value(place.worst_lag))}</td><td>{_e(_member_value(place.slowest_ping))}</td></tr>"
        )
    keys = " and ".join(words.location_keys(view))
    return [f"<table><caption>Where members live (by {_e(keys)})</caption><tr>{head}</tr>{''.join(cells)}</table>"]


def _member_value(value: tuple[int, str] | None) -> str:
    """`1239ms (db1:27017)`, or `-`."""
    return f"{value[0]}ms ({neutral(value[1], NAME_LIMIT)})" if value else "-"


def _summary(view: View) -> list[str]:
    """The same summary as the document's: the verdict, then one line per kind of problem in its colour."""
    found = words.summary(view)
    parts = [f'<p class="verdict">{_e(found.verdict)}</p>']
    if found.lines:
        items = "".join(f'<li class="{_SUMMARY_CLASS[colour]}">{_e(text)}</li>' for colour, text in found.lines)
        parts.append(f'<ul class="summary">{items}</ul>')
    return parts


HISTORY_POINTS = 240  # per member and chart: a 24 h chart at the default interval keeps every sixth poll's peak
HISTORY_POINTS_FOLDED = 60  # a GREEN set of a large cluster, folded away, draws fewer
_HISTORY_NOTE = (
    "Lag history, kept in memory only (up to 24 h, at most 2 880 polls per member): it starts again when the "
    "exporter restarts."
)


WORST_CHARTED = 8  # the members of a cluster drawn together at the top of its page
HOUR_S = 3600


def _worst_members_chart(view: View) -> str:
    """A cluster's most lagging members (now) over the last hour, drawn together: where to look first."""
    current = [each.current for each in view.sets if each.current is not None]
    if view.history is None or not current:
        return ""
    now_s = view.taken_at_s  # the history's time axis is the store's monotonic clock (docs/domain.md §17)
    members = [(m.lag_ms, s.set_name, m.name) for s in current for m in s.members if m.lag_ms is not None]
    worst = sorted(members, reverse=True)[:WORST_CHARTED]
    lines = [
        (
            f"{neutral(name, NAME_LIMIT)} ({neutral(set_name, NAME_LIMIT)})",
            view.history.points(set_name, name, now_s - HOUR_S),
        )
        for _, set_name, name in worst
    ]
    since_s, span = _charted_span(lines, now_s, HOUR_S)
    title = f"the {len(worst)} most lagging members, {span}"
    return f'<div class="charts">{lag_chart(title, lines, since_s, now_s)}</div>'


MIN_CHART_SPAN_S = 60.0


def _charted_span(lines: list[tuple[str, list]], now_s: float, span_s: float) -> tuple[float, str]:
    """Where a chart of the last `span_s` starts and how its title says it: at the oldest point kept when that
    is later (an exporter started ten minutes ago draws ten minutes across the whole width, not a sliver)."""
    first = first_point_s(lines, now_s - span_s)
    if first is None or first <= now_s - span_s + MIN_CHART_SPAN_S:
        return now_s - span_s, _SPAN_WORDS.get(span_s, f"last {duration_words(int(span_s * 1000))}")
    shown = max(MIN_CHART_SPAN_S, now_s - first)
    return now_s - shown, f"last {span_words(shown)} (all kept so far)"


_SPAN_WORDS = {3600: "last hour", 24 * 3600: "last 24 h"}


def _history_charts(view: View, snapshot: Snapshot, max_points: int) -> str:
    """The set's replicating members over the last hour and the last 24 hours, against the 5 s and 30 s lines."""
    if view.history is None:
        return ""
    now_s = view.taken_at_s  # the history's time axis is the store's monotonic clock (docs/domain.md §17)
    members = [m.name for m in snapshot.members if m.is_data_bearing and not m.is_primary]
    charts = []
    for span_s in (HOUR_S, 24 * HOUR_S):
        lines = [
            (neutral(name, NAME_LIMIT), view.history.points(snapshot.set_name, name, now_s - span_s))
            for name in members
        ]
        since_s, title = _charted_span(lines, now_s, span_s)
        if span_s > HOUR_S and since_s >= now_s - HOUR_S:
            break  # no more than an hour kept: the day's chart would draw the hour's again
        label = f"{neutral(snapshot.set_name, NAME_LIMIT)}: replication lag, {title}"
        charts.append(lag_chart(label, lines, since_s, now_s, max_points=max_points))
    return f'<div class="charts">{"".join(charts)}</div><p class="muted">{_e(_HISTORY_NOTE)}</p>'


def page_key(view: View) -> tuple:
    """What the page shows that changes between polls: the poll, the colour and every age it prints (whole
    seconds). Two views with the same key give the same page, so it is rendered once per key (web.py)."""
    ages = tuple(None if a is None else int(a) for a in (view.age_s, *(s.age_s for s in view.sets)))
    return (words.changing_sentences(view), ages)


def _footer(view: View, document_path: str, metrics_path: str) -> list[str]:
    return [
        f'<p class="muted">{_e(_collection_sentence(view))}</p>',
        f'<p>Also: <a href="{_e(metrics_path)}">{_e(metrics_path)}</a> (Prometheus) · '
        '<a href="/liveness">/liveness</a> · '
        f'<a href="{_e(document_path)}">{_e(document_path)}</a> (Zero Problem document)</p>',
        "</body></html>\n",
    ]


_PROBLEM_CLASS = {Status.RED: "problem", Status.YELLOW: "warn", Status.GREEN: ""}


def _cluster_body(view: View) -> list[str]:
    """A sharded cluster: its problems first, a table of every set (worst first), then each set's members; the
    members of GREEN sets are folded away (`<details>`), so the page stays usable at 100 shards."""
    ranked = sorted(view.sets, key=words.worst_set_order)
    shards = sum(1 for s in view.sets if s.address.role is SetRole.SHARD)
    parts = [f"<p>Infra <b>{_e(view.infra)}</b>: a sharded cluster, {shards} shard{'s' if shards != 1 else ''}"]
    parts[0] += " and the config servers.</p>" if view.config_watched else " (config servers not watched).</p>"
    head = _header_row(_SET_COLUMNS, numeric={"Worst lag", "Data age"})
    rows = "".join(_set_row(each) for each in ranked)
    parts.append(f"<table><caption>Replica sets</caption><tr>{head}</tr>{rows}</table>")
    parts.append(_worst_members_chart(view))
    for each in ranked:
        if each.snapshot is None:
            continue
        label = words.set_label(each)
        table = _members_table(
            each.snapshot, last_known=each.current is None, caption=label, trends=each, keys=words.location_keys(view)
        )
        # The sets with a problem are open; every GREEN set is folded away, one click from its members.
        folded = each.status is Status.GREEN
        table += _history_charts(view, each.snapshot, HISTORY_POINTS_FOLDED if folded else HISTORY_POINTS)
        if folded:
            table = f"<details><summary>{_e(label)}: GREEN</summary>{table}</details>"
        else:
            since = words.since_words(each.status_since_s, view.published_wall_s)
            heading = f"{label}: {each.status.name}" + (f" {since}" if since else "")
            table = f'<h3 class="{_PROBLEM_CLASS[each.status]}">{_e(heading)}</h3>{table}'
        parts.append(f'<section id="set-{_e(neutral(each.name, NAME_LIMIT))}">{table}</section>')
    return parts


def _set_row(each: SetView) -> str:
    snapshot = each.snapshot
    shard = words.set_name(each) if each.address.role is not SetRole.REPLICA_SET else ""
    if each.address.draining:
        shard += " (draining)"
    members = str(len(snapshot.members)) if snapshot is not None else "-"
    name = neutral(each.name, NAME_LIMIT)
    age = f"{int(each.age_s)} s" if each.age_s is not None else "-"
    cells = [
        f'<td><a href="#set-{_e(name)}">{_e(name)}</a></td>',
        f"<td>{_e(shard)}</td>",
        f'<td><span class="status {each.status.name}">{each.status.name}</span></td>',
        f"<td>{members}</td>",
        f'<td class="num">{_e(_worst_cell(each))}</td>',
        f'<td class="num">{age}</td>',
    ]
    return f"<tr>{''.join(cells)}</tr>"


def _worst_cell(each: SetView) -> str:
    """The set's worst lag, and the members that have none because they are DOWN (or in another state): a set
    whose member is DOWN never reads "0ms", as if all were well."""
    current = each.current
    if current is None:
        return "-"
    without = Counter(kind for m in current.members if m.lag_ms is None and (kind := member_kind(m)) is not None)
    parts = [f"{count} {kind}" for kind, count in without.items()]
    worst = current.max_lag_ms
    if worst is not None and (worst > 0 or not parts):
        parts.append(f"{worst}ms")
    return "; ".join(parts) or "-"


def _set_sentence(snapshot: Snapshot | None) -> str:
    if snapshot is None:
        return ""
    text = f", replica set <b>{_n(snapshot.set_name)}</b>"
    if snapshot.reference_member:
        against = "the primary" if snapshot.reference is Reference.PRIMARY else "the freshest member (no primary)"
        text += f"; lag measured against {against} {_n(snapshot.reference_member)}"
    return text + "."


_SET_COLUMNS = ("Replica set", "Shard", "Status", "Members", "Worst lag", "Data age")
_MEMBER_COLUMNS = (
    "Member",
    "Role",
    "State",
    "Status",
    "Lag",
    "Delay",
    "Oplog window",
    "Headroom",
    "Why, and where it goes",
)


def _header_row(columns: tuple[str, ...], numeric: set[str]) -> str:
    """The table's head cells; numeric columns are right-aligned like their values."""
    return "".join(f'<th class="num">{h}</th>' if h in numeric else f"<th>{h}</th>" for h in columns)


def _members_table(
    snapshot: Snapshot,
    *,
    last_known: bool,
    caption: str = "",
    trends: SetView | None = None,
    keys: tuple[str, ...] = (),
) -> str:
    """The set's members, one row each; with location keys (member tags), a Location column after the name."""
    if caption:
        caption = _e(caption) + (": last known members (not current)" if last_known else "")
    else:
        caption = "Last known members (not current)" if last_known else "Members"
    columns = (_MEMBER_COLUMNS[0], "Location", *_MEMBER_COLUMNS[1:]) if keys else _MEMBER_COLUMNS
    head = _header_row(columns, numeric={"Lag", "Delay", "Oplog window", "Headroom"})
    rows = [
        _member_row(m, trends.trend_of(m.name) if trends is not None else None, _where(m, snapshot, keys))
        for m in snapshot.members
    ]
    table = f"<table><caption>{caption}</caption><tr>{head}</tr>{''.join(rows)}</table>"
    # What endangers the whole set (the majority commit point, flow control, a refused read) stands out; the rest
    # of the engine's notes (an oplog lookup that fell back) is for the curious.
    for note in snapshot.notes:
        style = "warn" if note.kind in words.SET_DANGER else "muted"
        table += f'<p class="{style}">{_n(str(note))}</p>'
    return table


def _where(member: Member, snapshot: Snapshot, keys: tuple[str, ...]) -> str | None:
    """The Location cell: where the member lives, and where its sync source lives when that is elsewhere (it pays
    the round trip between the two on every batch); None without location keys (no column)."""
    if not keys:
        return None
    here = neutral(words.location(member, keys), NAME_LIMIT) or "-"
    there = words.source_elsewhere(member, snapshot, keys)
    return f"{here} (copies from {there})" if there else here


def _member_row(member: Member, trend: Trend | None, where: str | None = None) -> str:
    state = neutral(member.state_str, NAME_LIMIT) + ("" if member.healthy else " (unhealthy)")
    role = words.role(member) + (" (hidden)" if member.hidden else "")
    oplog = member.oplog
    window = "-" if oplog is None else duration_words(oplog.window_ms) + (" (filling)" if oplog.full is False else "")
    headroom = "-" if member.headroom_ms is None else duration_words(member.headroom_ms)
    if member.headroom_ms is not None and member.sync_source_full is False:
        headroom += " (no limit yet)"
    why = "; ".join(words.danger_words(member, trend) + [neutral(n.text) for n in member.notes])
    cells = [
        f"<td>{_n(member.name, NAME_LIMIT)}</td>",
        *([] if where is None else [f'<td class="{"warn" if "copies from" in where else ""}">{_e(where)}</td>']),
        f"<td>{_e(role)}</td>",
        f"<td>{_e(state)}</td>",
        f'<td><span class="status {member.status.name}">{member.status.name}</span></td>',
        f'<td class="num">{_e(words.lag_text(member) or "-")}</td>',
        f'<td class="num">{_e(words.duration_text(member.delay_ms)) if member.delay_ms else "-"}</td>',
        f'<td class="num">{_e(window)}</td>',
        f'<td class="num">{_e(headroom)}</td>',
        f"<td>{_e(why)}</td>",
    ]
    return f"<tr>{''.join(cells)}</tr>"


def _collection_sentence(view: View) -> str:
    text = f"Polled every {view.interval_s:g} s."
    if view.snapshot is not None and view.age_s is not None:
        collected = datetime.fromtimestamp(view.snapshot.collected_at_ms / 1000, UTC)
        text += (
            f" Data collected {collected.isoformat(timespec='milliseconds')} "
            f"({int(view.age_s)} s ago), answered by {neutral(view.snapshot.answered_by, NAME_LIMIT)}."
        )
    if view.last_duration_s is not None:
        text += f" The last poll took {view.last_duration_s:.3f} s."
    return text


def _refresh_s(view: View) -> int:
    # Often enough to notice a change soon after a poll, never so often that the page flickers.
    return max(5, min(30, round(view.interval_s)))


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _n(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A server's string as the page shows it: neutral (as in the document), then HTML-escaped."""
    return _e(neutral(text, limit))
