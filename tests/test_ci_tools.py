"""Under CI=true a tool the suite relies on (kubectl here; the Docker engine and debootstrap go through the same
`ops_util.unavailable`) fails the run with its reason instead of skipping; elsewhere the test skips, saying why.
Checked by running pytest itself on one kubectl test with a PATH that holds no kubectl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a pytest subprocess

ROOT = Path(__file__).resolve().parent.parent
KUBECTL_TEST = "tests/test_ops_kubernetes.py::test_kubectl_renders_the_base_the_monitoring_and_the_two_cluster_overlay"
REASON = "kubectl is not installed (it comes with the machine image): the manifests cannot be rendered"


def pytest_without_kubectl(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", KUBECTL_TEST],
        cwd=ROOT,
        env={"PATH": str(empty), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_missing_kubectl_fails_the_run_with_its_reason(tmp_path, ci):
    run = pytest_without_kubectl(tmp_path, CI=ci)

    assert run.returncode == 1, run.stdout + run.stderr
    assert f"CI=true and {REASON}" in run.stdout
    assert "1 error" in run.stdout or "1 failed" in run.stdout, run.stdout


@pytest.mark.parametrize("env", [{}, {"CI": "false"}], ids=["no CI", "CI=false"])
def test_elsewhere_a_missing_kubectl_skips_saying_why(tmp_path, env):
    run = pytest_without_kubectl(tmp_path, **env)

    assert run.returncode == 0, run.stdout + run.stderr
    assert REASON in run.stdout and "1 skipped" in run.stdout, run.stdout
