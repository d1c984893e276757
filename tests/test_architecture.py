"""The import rules of README "Layout", enforced: a wrong import fails the build.

Every top-level module must be listed in `ALLOWED` with the modules of ours it may import, so a new module has to
be placed in the architecture before it can land; each third-party package has exactly one importing module; no
module imports `exporter`; the product imports the simulator only in exporter.py's demo path.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = {path.stem for path in ROOT.glob("*.py")}

# Who may import whom (ours only). Read top to bottom: the pure core first, then the edges, then the wiring.
ALLOWED: dict[str, set[str]] = {
    "kinds": set(),
    "version": set(),
    "replset": {"kinds"},
    "shardmap": {"kinds"},
    "history": set(),
    "trend": {"danger", "replset"},
    "store": {"history", "kinds", "replset", "shardmap", "trend"},
    "bridge": {"danger", "kinds", "replset", "store", "trend"},
    "charts": {"replset"},
    "page": {"bridge", "charts", "danger", "kinds", "replset", "store", "trend"},
    "metrics": {"kinds", "replset", "store", "version"},
    "httpserver": set(),
    "web": {"bridge", "httpserver", "metrics", "page", "store", "webconfig"},
    "config": {"kinds", "version"},
    "webconfig": set(),
    "logs": {"config"},
    "driver": {"kinds"},
    "keeper": {"driver", "kinds"},
    "danger": {"kinds", "replset"},
    "reader": {"danger", "driver", "keeper", "replset"},
    "source": {"danger", "driver", "keeper", "reader", "replset", "store"},
    "cluster": {"driver", "keeper", "kinds", "replset", "shardmap", "source", "store"},
    "poller": {"kinds", "replset", "store"},
    "service": {
        "cluster",
        "config",
        "driver",
        "httpserver",
        "keeper",
        "kinds",
        "metrics",
        "poller",
        "reader",
        "shardmap",
        "source",
        "store",
        "web",
        "webconfig",
    },
    "exporter": {"config", "driver", "logs", "mongosim", "service", "webconfig"},
}

# Each third-party package and the one module of ours that may import it.
THIRD_PARTY_OWNER = {
    "pymongo": "driver",
    "bson": "driver",
    "schedule": "poller",
    "prometheus_client": "metrics",
    "bottle": "web",
    "waitress": "httpserver",
    "yaml": "webconfig",
    "bcrypt": "webconfig",
}


def imported_roots(module: str) -> set[str]:
    """The top-level names `module` imports, at any depth of its code (imports inside functions count)."""
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def ours(roots: set[str]) -> set[str]:
    return {root for root in roots if root in PRODUCT or root == "mongosim"}


def third_party(roots: set[str]) -> set[str]:
    return {root for root in roots if root not in sys.stdlib_module_names and root not in PRODUCT | {"mongosim"}}


def test_every_top_level_module_has_a_place_in_the_import_rules():
    assert set(ALLOWED) == PRODUCT, "add the new module to ALLOWED (and README's layout table)"


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_a_module_imports_only_what_the_rules_allow(module):
    unexpected = ours(imported_roots(module)) - ALLOWED[module] - {module}
    assert not unexpected, f"{module} imports {sorted(unexpected)}, which the import rules do not allow"


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_a_third_party_package_is_imported_only_by_its_one_owner(module):
    for package in third_party(imported_roots(module)):
        assert package in THIRD_PARTY_OWNER, f"{module} imports {package}: give it one owning module first"
        assert THIRD_PARTY_OWNER[package] == module, f"{package} belongs to {THIRD_PARTY_OWNER[package]}.py"


def test_nothing_imports_the_entry_point_and_only_it_may_start_the_simulator():
    for module in sorted(PRODUCT - {"exporter"}):
        roots = imported_roots(module)
        assert "exporter" not in roots, module
        assert "mongosim" not in roots, module


def test_the_rules_catch_a_wrong_import(tmp_path, monkeypatch):
    """The check is real: a pure module that imported the driver would fail it."""
    (tmp_path / "replset.py").write_text("import driver\nimport pymongo\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert ours(imported_roots("replset")) - ALLOWED["replset"] == {"driver"}
    assert third_party(imported_roots("replset")) == {"pymongo"}
