"""./run, the project's one entry point: its help is its opening comment and nothing else. Only `--help` and an
unknown command are run here: they are answered before anything is installed (no venv, no apt)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "run"


def opening_comment() -> str:
    lines = RUN.read_text(encoding="utf-8").splitlines()[1:]  # after the shebang
    comment = []
    for line in lines:
        if not line.startswith("#"):
            break
        comment.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(comment) + "\n"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(RUN), *args], capture_output=True, text=True, timeout=30, check=False)


def test_run_help_prints_only_its_help():
    result = run("--help")

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == opening_comment()
    assert "./run tests" in result.stdout
    assert "set -euo pipefail" not in result.stdout


def test_an_unknown_command_prints_the_help_on_stderr_and_fails():
    result = run("bogus")

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == opening_comment()
