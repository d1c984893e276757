"""The import rules of README "Layout", enforced: a wrong import fails the build.

Modules are named by their place: `exporter` and `bridge` at the top of the repository, everything else inside the
`replicationlag` package (`model`, `mongo.driver`, `web.app`, ...). Every module must be listed in `ALLOWED` with the
modules of ours it may import, so a new module has to be placed in the architecture before it can land. The pure
core imports neither the MongoDB edge (`mongo.*`) nor the HTTP edge (`web.*`) nor any third-party package; each
third-party package has exactly one importing module; the package never imports `exporter` or `bridge` (the process
hands the bridge to the service); only exporter.py's demo path starts the simulator.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "replicationlag"
ROOT_MODULES = ("exporter", "bridge")  # the design card's two files
SIMULATOR = "mongosim"

# Who may import whom (ours only). Read top to bottom: the pure core, the MongoDB edge, the HTTP edge, the wiring.
ALLOWED: dict[str, set[str]] = {
    # The pure core: values and rules, no I/O, no third-party package.
    "version": set(),
    "values": set(),
    "model": set(),
    "credentials": set(),
    "history": set(),
    "trend": set(),
    "text": set(),
    "problems": {"model", "text"},
    "shardmap": {"model", "text"},
    "view": {"history", "model", "trend"},
    "words": {"model", "problems", "text", "trend", "view"},
    "danger": {"model", "values", "words"},
    "replset": {"danger", "model", "values"},
    "liveness": {"view"},
    "store": {"history", "model", "problems", "trend", "view"},
    "config": {"credentials", "model", "version"},
    # Edges that keep state or talk to libraries, each the only user of its library.
    "logs": {"config"},
    "poller": {"model", "store", "text", "words"},
    "metrics": {"liveness", "model", "store", "version", "view"},
    # The MongoDB edge.
    "mongo.driver": {"model"},
    "mongo.keeper": {"model", "mongo.driver"},
    "mongo.reader": {"danger", "model", "mongo.driver", "mongo.keeper", "replset", "text"},
    "mongo.source": {"model", "mongo.driver", "mongo.keeper", "mongo.reader", "replset"},
    "mongo.cluster": {"model", "mongo.driver", "mongo.keeper", "mongo.source", "shardmap", "text"},
    # The HTTP edge.
    "web.server": set(),
    "web.webconfig": set(),
    "web.access": {"web.webconfig"},
    "web.charts": {"model", "words"},
    "web.page": {"model", "problems", "text", "trend", "view", "web.charts", "words"},
    "web.app": {"liveness", "metrics", "store", "view", "web.access", "web.page", "web.server"},
    # The wiring, then the two files of the design card.
    "service": {
        "config",
        "credentials",
        "metrics",
        "model",
        "mongo.cluster",
        "mongo.driver",
        "mongo.keeper",
        "mongo.reader",
        "mongo.source",
        "poller",
        "store",
        "web.access",
        "web.app",
        "web.server",
        "web.webconfig",
    },
    "bridge": {"model", "text", "trend", "view", "words"},
    "exporter": {"bridge", "config", "logs", "mongo.driver", SIMULATOR, "service", "web.webconfig"},
}

# The core: no MongoDB or HTTP edge and no third-party package (config and logs read files and write logs, no more).
CORE = {
    "version",
    "values",
    "model",
    "credentials",
    "history",
    "trend",
    "text",
    "problems",
    "shardmap",
    "view",
    "words",
    "danger",
    "replset",
    "liveness",
    "store",
    "config",
    "logs",
    "bridge",
}

# Each third-party package and the one module of ours that may import it.
THIRD_PARTY_OWNER = {
    "pymongo": "mongo.driver",
    "bson": "mongo.driver",
    "schedule": "poller",
    "prometheus_client": "metrics",
    "bottle": "web.app",
    "waitress": "web.server",
    "yaml": "web.webconfig",
    "bcrypt": "web.access",
}


def module_paths(root: Path) -> dict[str, Path]:
    """Every module of the product by its name in the rules: `exporter`, `bridge`, `model`, `web.app`, ..."""
    found = {name: root / f"{name}.py" for name in ROOT_MODULES if (root / f"{name}.py").is_file()}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        if path.name != "__init__.py":
            found[".".join(path.relative_to(root / PACKAGE).with_suffix("").parts)] = path
    return found


def imports_of(path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(the modules of ours, the top-level third-party or stdlib names) that `path` imports, at any depth of its code
    (imports inside functions count)."""
    ours: set[str] = set()
    others: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            root = name.split(".")[0]
            if root == PACKAGE:
                inner = name.removeprefix(f"{PACKAGE}.")
                if inner in known:
                    ours.add(inner)
            elif root in ROOT_MODULES or root == SIMULATOR:
                ours.add(root)
            else:
                others.add(root)
    return ours, others


def third_party(names: set[str]) -> set[str]:
    return {name for name in names if name not in sys.stdlib_module_names and name != "__future__"}


MODULES = module_paths(ROOT)


def test_every_module_has_a_place_in_the_import_rules():
    assert set(ALLOWED) == set(MODULES), "add the new module to ALLOWED (and README's layout table)"


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_a_module_imports_only_what_the_rules_allow(module):
    ours, _ = imports_of(MODULES[module], set(MODULES))
    unexpected = ours - ALLOWED[module] - {module}
    assert not unexpected, f"{module} imports {sorted(unexpected)}, which the import rules do not allow"


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_a_third_party_package_is_imported_only_by_its_one_owner(module):
    _, others = imports_of(MODULES[module], set(MODULES))
    for package in third_party(others):
        assert package in THIRD_PARTY_OWNER, f"{module} imports {package}: give it one owning module first"
        assert THIRD_PARTY_OWNER[package] == module, f"{package} belongs to {THIRD_PARTY_OWNER[package]}"


def test_the_core_imports_no_edge_and_no_third_party_package():
    for module in sorted(CORE):
        ours, others = imports_of(MODULES[module], set(MODULES))
        assert not {m for m in ours if m.startswith(("mongo.", "web."))}, module
        assert not third_party(others), module


def test_the_package_never_imports_the_process_or_the_bridge_and_only_the_process_starts_the_simulator():
    for module in sorted(set(MODULES) - {"exporter"}):
        ours, _ = imports_of(MODULES[module], set(MODULES))
        assert SIMULATOR not in ours, module
        assert "exporter" not in ours, module
        if module != "bridge":
            assert "bridge" not in ours, f"{module} imports bridge: the process hands it over instead"


def test_the_rules_catch_a_wrong_import(tmp_path):
    """The check is real: a lag engine that imported bottle and the driver would fail it."""
    (tmp_path / PACKAGE).mkdir()
    (tmp_path / PACKAGE / "replset.py").write_text("import bottle\nfrom replicationlag.mongo import driver\n")
    (tmp_path / PACKAGE / "mongo").mkdir()
    (tmp_path / PACKAGE / "mongo" / "driver.py").write_text("")
    planted = module_paths(tmp_path)
    ours, others = imports_of(planted["replset"], set(planted))
    assert ours - ALLOWED["replset"] == {"mongo.driver"}
    assert third_party(others) == {"bottle"}
    assert THIRD_PARTY_OWNER["bottle"] != "replset"
