"""The status page: one `View` in, one self-refreshing HTML page out, with no script and nothing loaded; a
sharded cluster is drawn set by set, problems first.

PURE: no I/O. The words come from `words`, which the Zero Problem document shares, so the two never disagree;
every piece of text from outside is HTML-escaped; lag history is drawn as inline SVG by `web.charts`. Imports
`model`, `trend`, `view`, `web.charts` and `words`.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

from replicationlag import words
from replicationlag.model import Member, Reference, SetRole, Snapshot, Status
from replicationlag.trend import Trend
from replicationlag.view import SetView, View
from replicationlag.web.charts import lag_chart
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
    ]
    if view.sharded:
        parts += _cluster_body(view)
        parts += _footer(view, document_path, metrics_path)
        return "\n".join(parts)
    parts.append(f"<p>Infra <b>{_e(view.infra)}</b>{_set_sentence(snapshot)}</p>")
    problems = words.collection_problems(view)
    parts += [f'<p class="problem">{_e(p)}</p>' for p in problems]
    if view.current is not None and view.current.reasons:
        parts.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in view.current.reasons) + "</ul>")
    if snapshot is not None:
        parts.append(_members_table(snapshot, last_known=view.current is None, trends=view.single))
        parts.append(_history_charts(view, snapshot, HISTORY_POINTS))
    parts += _footer(view, document_path, metrics_path)
    return "\n".join(parts)


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
    since_s = now_s - HOUR_S
    lines = [(f"{name} ({set_name})", view.history.points(set_name, name, since_s)) for _, set_name, name in worst]
    title = f"the {len(worst)} most lagging members, last hour"
    return f'<div class="charts">{lag_chart(title, lines, since_s, now_s)}</div>'


def _history_charts(view: View, snapshot: Snapshot, max_points: int) -> str:
    """The set's replicating members over the last hour and the last 24 hours, against the 5 s and 30 s lines."""
    if view.history is None:
        return ""
    now_s = view.taken_at_s  # the history's time axis is the store's monotonic clock (docs/domain.md §17)
    members = [m.name for m in snapshot.members if m.is_data_bearing and not m.is_primary]
    charts = []
    for title, span_s in (("last hour", HOUR_S), ("last 24 h", 24 * HOUR_S)):
        lines = [(name, view.history.points(snapshot.set_name, name, now_s - span_s)) for name in members]
        label = f"{snapshot.set_name}: replication lag, {title}"
        charts.append(lag_chart(label, lines, now_s - span_s, now_s, max_points=max_points))
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
    ranked = sorted(view.sets, key=lambda s: -s.status)
    shards = sum(1 for s in view.sets if s.address.role is SetRole.SHARD)
    parts = [f"<p>Infra <b>{_e(view.infra)}</b>: a sharded cluster, {shards} shard{'s' if shards != 1 else ''}"]
    parts[0] += " and the config servers.</p>" if view.config_watched else " (config servers not watched).</p>"
    # Coloured by what they make the set: a YELLOW set's lag is a warning, not an alarm.
    problems = [(p, "problem") for p in words.cluster_problems(view)]
    problems += [(p, _PROBLEM_CLASS[each.status]) for each in ranked for p in words.set_problems(each)]
    if problems:
        parts.append("<ul>" + "".join(f'<li class="{css}">{_e(p)}</li>' for p, css in problems) + "</ul>")
    head = _header_row(_SET_COLUMNS, numeric={"Worst lag", "Data age"})
    rows = "".join(_set_row(each) for each in ranked)
    parts.append(f"<table><caption>Replica sets</caption><tr>{head}</tr>{rows}</table>")
    parts.append(_worst_members_chart(view))
    for each in ranked:
        if each.snapshot is None:
            continue
        table = _members_table(each.snapshot, last_known=each.current is None, caption=each.address.label, trends=each)
        # A small cluster shows every set; a large one folds its GREEN sets away, as the document sums them up.
        folded = each.status is Status.GREEN and len(view.sets) > words.FULL_LISTING_MAX_SETS
        table += _history_charts(view, each.snapshot, HISTORY_POINTS_FOLDED if folded else HISTORY_POINTS)
        if folded:
            table = f"<details><summary>{_e(each.address.label)}: GREEN</summary>{table}</details>"
        parts.append(f'<section id="set-{_e(each.name)}">{table}</section>')
    return parts


def _set_row(each: SetView) -> str:
    snapshot = each.snapshot
    shard = "config servers" if each.address.role is SetRole.CONFIG else each.address.shard_id
    if each.address.draining:
        shard += " (draining)"
    members = str(len(snapshot.members)) if snapshot is not None else "-"
    worst = snapshot.max_lag_ms if each.current is not None and snapshot is not None else None
    age = f"{int(each.age_s)} s" if each.age_s is not None else "-"
    cells = [
        f'<td><a href="#set-{_e(each.name)}">{_e(each.name)}</a></td>',
        f"<td>{_e(shard)}</td>",
        f'<td><span class="status {each.status.name}">{each.status.name}</span></td>',
        f"<td>{members}</td>",
        f'<td class="num">{f"{worst}ms" if worst is not None else "-"}</td>',
        f'<td class="num">{age}</td>',
    ]
    return f"<tr>{''.join(cells)}</tr>"


def _set_sentence(snapshot: Snapshot | None) -> str:
    if snapshot is None:
        return ""
    text = f", replica set <b>{_e(snapshot.set_name)}</b>"
    if snapshot.reference_member:
        against = "the primary" if snapshot.reference is Reference.PRIMARY else "the freshest member (no primary)"
        text += f"; lag measured against {against} {_e(snapshot.reference_member)}"
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


def _members_table(snapshot: Snapshot, *, last_known: bool, caption: str = "", trends: SetView | None = None) -> str:
    if caption:
        caption = _e(caption) + (": last known members (not current)" if last_known else "")
    else:
        caption = "Last known members (not current)" if last_known else "Members"
    head = _header_row(_MEMBER_COLUMNS, numeric={"Lag", "Delay", "Oplog window", "Headroom"})
    rows = [_member_row(m, trends.trend_of(m.name) if trends is not None else None) for m in snapshot.members]
    table = f"<table><caption>{caption}</caption><tr>{head}</tr>{''.join(rows)}</table>"
    # What endangers the whole set (the majority commit point, flow control, a refused read) stands out; the rest
    # of the engine's notes (an oplog lookup that fell back) is for the curious.
    for note in snapshot.notes:
        style = "warn" if note.kind in words.SET_DANGER else "muted"
        table += f'<p class="{style}">{_e(str(note))}</p>'
    return table


def _member_row(member: Member, trend: Trend | None) -> str:
    state = member.state_str + ("" if member.healthy else " (unhealthy)")
    role = words.role(member) + (" (hidden)" if member.hidden else "")
    oplog = member.oplog
    window = "-" if oplog is None else duration_words(oplog.window_ms) + (" (filling)" if oplog.full is False else "")
    headroom = "-" if member.headroom_ms is None else duration_words(member.headroom_ms)
    if member.headroom_ms is not None and member.sync_source_full is False:
        headroom += " (no limit yet)"
    why = "; ".join(words.danger_words(member, trend) + [n.text for n in member.notes])
    cells = [
        f"<td>{_e(member.name)}</td>",
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
            f"({int(view.age_s)} s ago), answered by {view.snapshot.answered_by}."
        )
    if view.last_duration_s is not None:
        text += f" The last poll took {view.last_duration_s:.3f} s."
    return text


def _refresh_s(view: View) -> int:
    # Often enough to notice a change soon after a poll, never so often that the page flickers.
    return max(5, min(30, round(view.interval_s)))


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
