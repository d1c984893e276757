"""Lag charts as inline SVG for the status page: no JavaScript, no external assets, one `<svg>` per chart.

PURE: points in, markup out; every name is XML-escaped. Each member is one line of its effective lag over the
chart's span, drawn against the 5 s (YELLOW) and 30 s (RED) lines, with its current value at the right. Lines
are thinned to at most `max_points` per member by keeping each time bucket's largest lag, so a spike is never
averaged away and a 24 h chart stays small. Imports `model` (the thresholds) only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from replicationlag.model import RED_AT_MS, YELLOW_AT_MS
from replicationlag.words import duration_words

WIDTH, HEIGHT = 560, 150
LEFT, RIGHT, TOP, BOTTOM = 44, 200, 18, 22  # room for the axis labels and the current values
MIN_TOP_MS = 35_000  # the scale always shows the RED line
PALETTE = ("#0969da", "#8250df", "#1a7f37", "#bc4c00", "#cf222e", "#6e7781", "#116329", "#953800")

Points = Sequence[tuple[float, int | None]]  # (time in s, lag in ms or None), oldest first


def thinned(points: Points, start_s: float, end_s: float, max_points: int) -> list[tuple[float, int | None]]:
    """At most `max_points` points in [start_s, end_s]: each bucket's largest lag (a gap stays a gap)."""
    inside = [(t, lag) for t, lag in points if start_s <= t <= end_s]
    if len(inside) <= max_points:
        return inside
    width = (end_s - start_s) / max_points
    buckets: dict[int, tuple[float, int | None]] = {}
    for t, lag in inside:
        key = min(max_points - 1, int((t - start_s) / width))
        kept = buckets.get(key)
        if kept is None or (lag is not None and (kept[1] is None or lag > kept[1])):
            buckets[key] = (t, lag)
    return [buckets[k] for k in sorted(buckets)]


def lag_chart(
    title: str, lines: Sequence[tuple[str, Points]], start_s: float, end_s: float, *, max_points: int = 240
) -> str:
    """One chart: `title`, one line per (member, points), time from `start_s` to `end_s`."""
    series = [(name, thinned(points, start_s, end_s, max_points)) for name, points in lines]
    top = max([MIN_TOP_MS] + [lag * 1.1 for _, pts in series for _, lag in pts if lag is not None])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(end_s - start_s, 1e-9)

    def x(t: float) -> float:
        return LEFT + (t - start_s) / span * plot_w

    def y(lag_ms: float) -> float:
        return TOP + plot_h - lag_ms / top * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="12" font-size="11" fill="#1f2328">{escape(title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#d0d7de"/>',
    ]
    for level, colour, label in ((YELLOW_AT_MS, "#bf8700", "5 s"), (RED_AT_MS, "#cf222e", "30 s")):
        parts.append(
            f'<line x1="{LEFT}" y1="{y(level):.1f}" x2="{LEFT + plot_w}" y2="{y(level):.1f}" stroke="{colour}" '
            f'stroke-dasharray="4 3" stroke-width="1"/>'
            f'<text x="{LEFT - 4}" y="{y(level) + 4:.1f}" font-size="10" text-anchor="end" fill="{colour}">'
            f"{label}</text>"
        )
    parts.append(
        f'<text x="{LEFT - 4}" y="{TOP + 8}" font-size="10" text-anchor="end" fill="#656d76">{_seconds(top)}</text>'
        f'<text x="{LEFT}" y="{HEIGHT - 6}" font-size="10" fill="#656d76">{_ago(span)}</text>'
        f'<text x="{LEFT + plot_w}" y="{HEIGHT - 6}" font-size="10" text-anchor="end" fill="#656d76">now</text>'
    )
    for index, (name, points) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        for run in _runs(points):
            coords = " ".join(f"{x(t):.1f},{y(lag):.1f}" for t, lag in run)
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        current = points[-1][1] if points else None
        label = f"{escape(name)} {'-' if current is None else f'{current}ms'}"
        parts.append(
            f'<text x="{LEFT + plot_w + 4}" y="{TOP + 10 + 12 * index}" font-size="10" fill="{colour}">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _runs(points: list[tuple[float, int | None]]) -> list[list[tuple[float, int]]]:
    """The stretches of points that have a lag: a poll without one breaks the line."""
    runs: list[list[tuple[float, int]]] = [[]]
    for t, lag in points:
        if lag is None:
            runs.append([])
        else:
            runs[-1].append((t, lag))
    return [run if len(run) > 1 else run * 2 for run in runs if run]


def _seconds(ms: float) -> str:
    return f"{math.ceil(ms / 1000)} s"


def span_words(span_s: float) -> str:
    """A chart's span as its axis and its title both say it: `45 s`, `2 min`, `1 h 30 min`, `24 h`: to the nearest
    minute (never floored, so a title and the axis under it agree)."""
    return duration_words(round(span_s / 60) * 60_000) if span_s >= 60 else f"{round(span_s)} s"


def _ago(span_s: float) -> str:
    return f"{span_words(span_s)} ago"


def first_point_s(lines: Sequence[tuple[str, Points]], start_s: float) -> float | None:
    """The time of the oldest point at or after `start_s` among the lines; None when they hold none."""
    return min((points[0][0] for _, points in lines if points and points[0][0] >= start_s), default=None)
