"""The Dockerfile and .dockerignore: hadolint clean, our own structural checks (multi-stage, wheels only, non-root,
a healthcheck on /-/healthy without curl, exec form, port 9218), the allow-list, and the healthcheck command itself.
These need no Docker engine; tests/test_ops_image.py builds the image and runs it where an engine can start."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ops_util import REPO, hadolint

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PRODUCT_MODULES = tuple(sorted(path.name for path in REPO.glob("*.py")))  # every top-level module is product
HEALTHCHECK_URL = "http://127.0.0.1:9218/-/healthy"  # the process serves; never /liveness

CARELESS_DOCKERFILE = """\
FROM python:latest
RUN apt-get update && apt-get install -y curl
COPY . /app
RUN pip install -r /app/requirements.txt
HEALTHCHECK CMD curl -f http://localhost:9218/liveness
CMD python /app/exporter.py
"""


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments and blank lines dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The build stages; stages[0] holds the global ARGs before the first FROM."""
    result: list[list[tuple[str, str]]] = [[]]
    for keyword, args in instructions(text):
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, args))
    return result


def exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def dockerfile_problems(text: str) -> list[str]:
    """What our image promises and hadolint does not check, as a list of broken promises."""
    problems = []
    all_stages = stages(text)
    global_args = dict(a.partition("=")[::2] for k, a in all_stages[0] if k == "ARG")
    if len(all_stages) < 3:
        problems.append("not multi-stage")
    build, final = all_stages[1], all_stages[-1]
    base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m.group(1), ""), final[0][1].split()[0])
    if not re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base):
        problems.append(f"final base {base!r} is not a slim Python 3.11")
    installs = [a for k, a in build if k == "RUN" and "pip install" in a]
    if not any("--only-binary=:all:" in a and "-r " in a and "requirements.txt" in a for a in installs):
        problems.append("the build stage does not install the pinned requirements from wheels only")
    final_runs = " ".join(a for k, a in final if k == "RUN")
    if re.search(r"\b(apt-get|apk|pip)\b.*\binstall\b", final_runs):
        problems.append("the final stage installs packages")
    if not any(k == "COPY" and a.startswith("--from=") for k, a in final):
        problems.append("the final stage does not copy the built environment")
    users = [a for k, a in final if k == "USER"]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        problems.append("runs as root")
    checks = [a for k, a in final if k == "HEALTHCHECK"]
    check = checks[-1] if checks else ""
    if "/-/healthy" not in check or "urllib" not in check or re.search(r"\b(curl|wget)\b", check):
        problems.append("no HEALTHCHECK on /-/healthy with python's urllib")
    if "/liveness" in check:  # 503 while the cluster is unreachable: an orchestrator would restart for nothing
        problems.append("the HEALTHCHECK asks /liveness")
    if "9218" not in {port.split("/")[0] for k, a in final if k == "EXPOSE" for port in a.split()}:
        problems.append("does not EXPOSE 9218")
    for keyword in ("ENTRYPOINT", "CMD"):
        values = [a for k, a in final if k == keyword]
        if values and exec_form(values[-1]) is None:
            problems.append(f"{keyword} is not in exec form")
    if not any(k == "ENTRYPOINT" for k, _ in final) and not any(k == "CMD" for k, _ in final):
        problems.append("no ENTRYPOINT or CMD")
    return problems


def _docker_match(pattern: str, path: str) -> bool:
    """Docker's .dockerignore match of one cleaned pattern against one path: `*` and `?` never cross a `/`, and
    `**` matches any number of folders (moby/patternmatcher)."""
    regex = ""
    for part in re.split(r"(\*\*/?|\*|\?)", pattern):
        if part.startswith("**"):
            regex += "(?:.*/)?" if part.endswith("/") else ".*"
        elif part == "*":
            regex += "[^/]*"
        elif part == "?":
            regex += "[^/]"
        else:
            regex += re.escape(part)
    return re.fullmatch(regex, path) is not None


def dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule for a path: the last matching pattern wins; `!` lets in; a pattern that matches a folder
    covers everything under it; a trailing `/` and a leading `/` are dropped."""
    allowed = True
    parts = path.split("/")
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = (pattern[1:] if negated else pattern).strip("/")
        if any(_docker_match(body, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            allowed = negated
    return allowed


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_hadolint_passes_the_dockerfile():
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_careless_dockerfile(tmp_path):
    careless = tmp_path / "Dockerfile"
    careless.write_text(CARELESS_DOCKERFILE)
    result = subprocess.run([hadolint(), str(careless)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3025"):  # :latest, unpinned apt packages, shell-form CMD
        assert rule in result.stdout, result.stdout


def test_the_dockerfile_keeps_every_promise_of_the_image():
    assert dockerfile_problems(DOCKERFILE.read_text(encoding="utf-8")) == []


def test_the_dockerfile_check_lists_every_broken_promise_of_a_careless_dockerfile():
    assert dockerfile_problems(CARELESS_DOCKERFILE) == [
        "not multi-stage",
        "final base 'python:latest' is not a slim Python 3.11",
        "the build stage does not install the pinned requirements from wheels only",
        "the final stage installs packages",
        "the final stage does not copy the built environment",
        "runs as root",
        "no HEALTHCHECK on /-/healthy with python's urllib",
        "the HEALTHCHECK asks /liveness",
        "does not EXPOSE 9218",
        "CMD is not in exec form",
    ]


def test_the_image_listens_exposes_and_checks_the_exporters_default_port():
    from replicationlag.config import DEFAULT_LISTEN  # the exporter's own default, ":9218"

    text = DOCKERFILE.read_text(encoding="utf-8")
    port = DEFAULT_LISTEN.rpartition(":")[2]
    assert f"EXPOSE {port}" in text
    assert HEALTHCHECK_URL.replace("9218", port) in text


def test_the_dockerignore_lets_in_the_top_level_modules_the_package_the_simulator_and_the_pins_and_nothing_else():
    patterns = dockerignore_patterns()
    modules = sorted(path.name for path in REPO.glob("*.py"))
    assert set(PRODUCT_MODULES) <= set(modules)
    simulator = sorted(f"mongosim/{path.name}" for path in (REPO / "mongosim").glob("*.py"))
    assert "mongosim/demo.py" in simulator  # --demo imports it
    package = sorted(path.relative_to(REPO).as_posix() for path in (REPO / "replicationlag").rglob("*.py"))
    assert "replicationlag/web/app.py" in package
    for name in [*modules, *simulator, *package, "requirements.txt", "constraints.txt"]:
        assert dockerignore_allows(name, patterns), f"{name} is left out of the image"
    for name in (
        "tests/test_ops_docker.py",
        "tests/fixtures/README.md",
        "bench/run.py",
        "bench/__init__.py",
        "mongosim/__pycache__/demo.cpython-311.pyc",
        "__pycache__/exporter.cpython-311.pyc",
        "mongosim/README.md",
        "deploy/kubernetes/sync-rules",
        ".venv/bin/python",
        ".venv/lib/python3.11/site-packages/yaml/__init__.py",
        ".git/HEAD",
        "requirements-dev.txt",
        "docker-compose.yml",
        "docker/replicationlag.toml",
        "README.md",
    ):
        assert not dockerignore_allows(name, patterns), f"{name} gets into the image"


def test_a_new_top_level_module_gets_into_the_image_without_an_edit():
    assert dockerignore_allows("routes.py", dockerignore_patterns())


def test_the_dockerignore_check_follows_dockers_matching_rules():
    assert not dockerignore_allows("tests/x.py", ["*", "!*.py"])  # `*` does not cross a folder
    assert dockerignore_allows("tests/x.py", ["*", "!**/*.py"])
    assert not dockerignore_allows("web.py", ["*"])  # without `!*.py` the modules are left out
    assert not dockerignore_allows("mongosim/demo.py", ["*", "!*.py"])
    assert dockerignore_allows("mongosim/demo.py", ["*", "!mongosim/"])


class _Healthy(BaseHTTPRequestHandler):
    """Answers /-/healthy with the status the test sets: the exporter's 200, or an error a broken server might
    give."""

    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/-/healthy" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_the_healthcheck_command_passes_only_when_healthy_answers_200(status, exit_code):
    (check,) = [a for k, a in instructions(DOCKERFILE.read_text(encoding="utf-8")) if k == "HEALTHCHECK"]
    command = exec_form(check.partition(" CMD ")[2])
    assert command is not None and command[0] == "python"
    handler = type("Handler", (_Healthy,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/-/healthy"
        script = command[-1]
        assert HEALTHCHECK_URL in script
        result = subprocess.run(
            [sys.executable, *command[1:-1], script.replace(HEALTHCHECK_URL, url)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == exit_code, result.stderr
