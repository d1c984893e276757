"""The status page: one `View` in, one self-refreshing HTML page out, with no script and nothing loaded.

PURE: no I/O. The words come from `bridge`, so the page, the document and /liveness never disagree; every piece
of text from outside is HTML-escaped. Imports `bridge`, `kinds`, `replset` and `store`.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

import bridge
from kinds import Reference
from replset import Member, Snapshot
from store import View

ZERO_PROBLEM_PATH = "/" + bridge.SERVICE_ID

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; padding: 0 1em; color: #1f2328; }
.status { padding: .1em .5em; border-radius: .3em; font-weight: bold; }
.GREEN { background: #dafbe1; color: #116329; } .YELLOW { background: #fff8c5; color: #7d4e00; }
.RED { background: #ffebe9; color: #a40e26; }
table { border-collapse: collapse; margin: 1em 0; } caption { text-align: left; font-weight: bold; }
th, td { border-bottom: 1px solid #d0d7de; padding: .3em .8em; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.problem { color: #a40e26; font-weight: bold; } .muted { color: #656d76; }
"""


def render_status_page(view: View) -> str:
    """The whole status page for one view; every piece of text from outside is HTML-escaped."""
    status = view.status.name
    snapshot = view.snapshot
    title = f"{status} · replication lag · {view.infra}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{_refresh_s(view)}">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f'<h1>Replication lag <span class="status {status}">{status}</span></h1>',
        f"<p>Infra <b>{_e(view.infra)}</b>{_set_sentence(snapshot)}</p>",
    ]
    problems = bridge.collection_problems(view)
    parts += [f'<p class="problem">{_e(p)}</p>' for p in problems]
    if view.current is not None and view.current.reasons:
        parts.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in view.current.reasons) + "</ul>")
    if snapshot is not None:
        parts.append(_members_table(snapshot, last_known=view.current is None))
        parts += [f'<p class="muted">{_e(note)}</p>' for note in snapshot.notes]
    parts.append(f'<p class="muted">{_e(_collection_sentence(view))}</p>')
    parts.append(
        '<p>Also: <a href="/metrics">/metrics</a> (Prometheus) · <a href="/liveness">/liveness</a> · '
        f'<a href="{ZERO_PROBLEM_PATH}">{ZERO_PROBLEM_PATH}</a> (Zero Problem document)</p>'
    )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _set_sentence(snapshot: Snapshot | None) -> str:
    if snapshot is None:
        return ""
    text = f", replica set <b>{_e(snapshot.set_name)}</b>"
    if snapshot.reference_member:
        against = "the primary" if snapshot.reference is Reference.PRIMARY else "the freshest member (no primary)"
        text += f"; lag measured against {against} {_e(snapshot.reference_member)}"
    return text + "."


def _members_table(snapshot: Snapshot, *, last_known: bool) -> str:
    caption = "Last known members (not current)" if last_known else "Members"
    head = "".join(
        f'<th class="num">{h}</th>' if h in ("Lag", "Delay") else f"<th>{h}</th>"
        for h in ("Member", "Role", "State", "Status", "Lag", "Delay", "Reason")
    )
    rows = [_member_row(m) for m in snapshot.members]
    return f"<table><caption>{caption}</caption><tr>{head}</tr>{''.join(rows)}</table>"


def _member_row(member: Member) -> str:
    state = member.state_str + ("" if member.healthy else " (unhealthy)")
    role = bridge.role(member) + (" (hidden)" if member.hidden else "")
    cells = [
        f"<td>{_e(member.name)}</td>",
        f"<td>{_e(role)}</td>",
        f"<td>{_e(state)}</td>",
        f'<td><span class="status {member.status.name}">{member.status.name}</span></td>',
        f'<td class="num">{_e(bridge.lag_text(member) or "-")}</td>',
        f'<td class="num">{_e(bridge.duration_text(member.delay_ms)) if member.delay_ms else "-"}</td>',
        f"<td>{_e(member.reason)}</td>",
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
