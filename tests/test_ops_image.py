"""The image, built from the Dockerfile and run in a real Docker engine (slow: one build, three containers).

No image can be pulled here, so the Dockerfile is built on a Debian 12 base made on this machine and passed as its
`PYTHON_IMAGE` build argument: `debootstrap --variant=minbase` with python3, python3-venv, python-is-python3 and
ca-certificates (Python 3.11, as in python:3.11-slim-bookworm), plus this machine's own extra CA certificates so
that pip inside the build trusts the TLS proxy the machine's own pip goes through (PIP_CERT, as on the machine; the
machine's find-links and extra-index-url are local folders the build never sees, so the build's pip asks PyPI
itself, over `--network host`). That base is made once per machine and kept under the tag BASE_IMAGE; the engine
also keeps its build cache of the pip stage. Everything else a test makes (the built image, its containers) is
removed, and a dockerd the tests started is stopped.

Checked on the running containers:
- `--demo`, run as Kubernetes runs it (read-only root, no capabilities, no privilege escalation): the HEALTHCHECK
  turns healthy, /metrics and the Zero Problem document answer, the process runs as uid 10001, and `docker stop -t
  10` (SIGTERM) ends it with exit status 0: by itself, within the grace period, not killed.
- The rendered Kubernetes Deployment's init container and exporter, with the Secret and emptyDir volumes as the
  kubelet lays them out, against a simulated replica set: the copied config is uid 10001's own with mode 0400, the
  exporter turns healthy and does not warn about its password file (which it does when it reads the Secret's file).
- The exporter pointed at a cluster nobody answers for (a closed port), probed as the rendered Deployment's
  probes and the image's HEALTHCHECK probe it: the container turns healthy, `/-/healthy` 200, `/-/ready` 200 once
  the first poll ended, while `/liveness` (Zero Problem's) is 503 and the document RED: no restart for it.

Without a Docker engine (none running, and not root or no dockerd to start one) these tests skip with the reason.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_util import REPO, unavailable
from service_util import uri_with_credentials, wait_until
from test_ops_kubernetes import KUBERNETES, of_kind, render

pytestmark = pytest.mark.slow

BASE_IMAGE = "replicationlag-base:bookworm-1"  # bump the suffix when the recipe below changes
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
MACHINE_CAS = Path("/usr/local/share/ca-certificates")
IMAGE_UID = 10001
SERVICE_PATH = "/mhp.zeroproblem.mongo.replcationlag"
ENGINE_START_S = 60.0
HEALTHY_WITHIN_S = 90.0
STOP_GRACE_S = 10
PASSWORD_WARNING = "readable by others"


class Docker:
    """The docker CLI against one engine; `docker(*args)` raises with the engine's words when a command fails."""

    def __init__(self, cli: str) -> None:
        self.cli = cli

    def __call__(self, *args: object, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # no buildx plugin here: the classic builder
        result = subprocess.run(
            [self.cli, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(map(str, args))} exited {result.returncode}: {result.stderr}")
        return result

    def answers(self) -> bool:
        return self("info", "--format", "{{.ServerVersion}}", timeout=20, check=False).returncode == 0


@pytest.fixture(scope="module")
def docker(tmp_path_factory) -> Iterator[Docker]:
    cli = shutil.which("docker")
    if cli is None:
        unavailable("no docker CLI on this machine: the image cannot be built here")
    engine = Docker(cli)
    if engine.answers():
        yield engine
        return
    dockerd = shutil.which("dockerd")
    if os.geteuid() != 0 or dockerd is None:
        unavailable(
            "no Docker engine runs and none can be started here "
            f"({'not root' if os.geteuid() != 0 else 'no dockerd: ./run tests installs docker.io when root'})"
        )
    log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with open(log_path, "wb") as log:
        # No bridge and no iptables: the machine has neither to give; containers use the host's network.
        process = subprocess.Popen(
            [dockerd, "--iptables=false", "--bridge=none"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + ENGINE_START_S
        while not engine.answers():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").splitlines()[-5:]
                unavailable(f"dockerd did not start (exit {process.poll()}): {' | '.join(tail)}")
            time.sleep(0.2)
        yield engine
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def make_base_image(docker: Docker, workdir: Path) -> None:
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None or os.geteuid() != 0:
        unavailable(f"{BASE_IMAGE} is missing and cannot be made: debootstrap needs root and ./run's debootstrap")
    root = workdir / "rootfs"
    made = subprocess.run(
        [debootstrap, "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", root, DEBIAN_MIRROR],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    for certificate in MACHINE_CAS.glob("*.crt"):
        shutil.copy(certificate, root / "usr/local/share/ca-certificates" / certificate.name)
    subprocess.run(["chroot", root, "update-ca-certificates"], capture_output=True, check=True, timeout=120)
    for leftover in [*root.glob("var/cache/apt/archives/*.deb"), *root.glob("var/lib/apt/lists/*_*")]:
        leftover.unlink()
    tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
    # PIP_CERT as on this machine: pip in the build verifies the proxy's certificate against the system bundle.
    changes = ("--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt", "--change", 'CMD ["python3"]')
    imported = subprocess.run(
        [docker.cli, "import", *changes, "-", BASE_IMAGE],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    tar.stdout.close()
    assert tar.wait(timeout=60) == 0 and imported.returncode == 0, imported.stderr
    shutil.rmtree(root)


@pytest.fixture(scope="module")
def image(docker, tmp_path_factory) -> Iterator[str]:
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        make_base_image(docker, tmp_path_factory.mktemp("base"))
    tag = f"replicationlag-test:{uuid.uuid4().hex[:12]}"
    docker("build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}", "-t", tag, REPO, timeout=600)
    try:
        yield tag
    finally:
        docker("rmi", "-f", tag, check=False)


@contextlib.contextmanager
def container(docker: Docker, *args: object) -> Iterator[str]:
    name = f"replicationlag-test-{uuid.uuid4().hex[:12]}"
    docker("run", "-d", "--name", name, *args)
    try:
        yield name
    finally:
        docker("rm", "-f", name, check=False)


def free_port() -> int:
    """A port nothing listens on now (the containers share the host's network: 9218 may be taken)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def state(docker: Docker, name: str) -> dict:
    return json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)


def wait_healthy(docker: Docker, name: str) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    status = ""
    while status != "healthy":
        current = state(docker, name)
        status = current.get("Health", {}).get("Status", "")
        if status == "unhealthy" or not current["Running"] or time.monotonic() > deadline:
            logs = docker("logs", name, check=False)
            raise AssertionError(f"{name} is {status or current['Status']}: {logs.stdout}{logs.stderr}")
        time.sleep(0.2)


def request(port: int, method: str, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


# Run as deploy/kubernetes's securityContext asks: read-only root, no capabilities, no privilege escalation.
HARDENED = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")
FAST_HEALTHCHECK = ("--health-interval", "1s", "--health-start-period", "60s", "--health-retries", "3")


def test_the_image_serves_the_demo_healthy_as_uid_10001_and_stops_on_sigterm(docker, image):
    port = free_port()
    with container(
        docker,
        "--network", "host", *HARDENED, *FAST_HEALTHCHECK,
        "-e", f"HEALTHCHECK_URL=http://127.0.0.1:{port}/-/healthy",  # the image's documented override of the port
        image, "--demo", "--web.listen-address", f"127.0.0.1:{port}",
    ) as name:  # fmt: skip
        wait_healthy(docker, name)

        status, metrics = request(port, "GET", "/metrics")
        assert status == 200
        assert 'mongodb_replication_up{infra="clusterKeeper"} 1.0' in metrics
        status, body = request(port, "PUT", SERVICE_PATH)
        assert status == 200
        assert json.loads(body)[SERVICE_PATH[1:]]["status"] in {"GREEN", "YELLOW", "RED"}

        pid = state(docker, name)["Pid"]
        ids = Path(f"/proc/{pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{IMAGE_UID}\s+{IMAGE_UID}\s+{IMAGE_UID}\s+{IMAGE_UID}$", ids, re.M), ids
        assert re.search(rf"^Gid:\s+{IMAGE_UID}\s", ids, re.M), ids

        started = time.monotonic()
        docker("stop", "-t", STOP_GRACE_S, name, timeout=STOP_GRACE_S + 30)
        took = time.monotonic() - started
        final = state(docker, name)
        print(f"docker stop -t {STOP_GRACE_S}: the container exited {final['ExitCode']} after {took:.2f} s")
        # 0 is the exporter's own clean exit on SIGTERM; a container still running at the deadline is SIGKILLed: 137.
        assert final["ExitCode"] == 0 and not final["OOMKilled"], final
        assert "stopping" in docker("logs", name).stderr


def test_the_kubernetes_pod_runs_in_the_image_and_its_config_copy_keeps_the_password_private(
    docker, image, start_set, tmp_path
):
    if os.geteuid() != 0:
        unavailable("laying the volumes out as the kubelet does (files owned by root and group 10001) needs root")
    (deployment,) = of_kind(render(KUBERNETES / "base"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (exporter,) = pod["containers"]
    fs_group = pod["securityContext"]["fsGroup"]
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    secret_volume = next(v for v in pod["volumes"] if "secret" in v)
    config_volume = next(v for v in pod["volumes"] if "emptyDir" in v)
    args = exporter["args"]
    label = args[args.index("--infra.label") + 1]

    # The volumes as the kubelet lays them out with fsGroup: the Secret's file root-owned, group fsGroup, its
    # defaultMode plus group read (0440); the emptyDir world-writable with the setgid bit, group fsGroup.
    replica_set = start_set(3, users=[("monitor", "s3cret-pw")])
    secret = tmp_path / "secret"
    secret.mkdir()
    config_file = secret / "replicationlag.toml"
    config_file.write_text(
        f'[infra.{label}]\nuri = "{uri_with_credentials(replica_set.uri, "monitor", "s3cret-pw")}"\n'
    )
    os.chown(config_file, 0, fs_group)
    config_file.chmod(secret_volume["secret"]["defaultMode"] | 0o440)
    empty_dir = tmp_path / "emptydir"
    empty_dir.mkdir()
    os.chown(empty_dir, 0, fs_group)
    empty_dir.chmod(0o2777)
    as_the_pod = ("--user", user, "--group-add", str(fs_group), *HARDENED)

    docker(
        "run", "--rm", "--network", "none", *as_the_pod,
        "-v", f"{secret}:{mounts[secret_volume['name']]}:ro", "-v", f"{empty_dir}:{mounts[config_volume['name']]}",
        "--entrypoint", init["command"][0], image, *init["command"][1:],
    )  # fmt: skip
    copied = empty_dir / config_file.name
    assert (copied.stat().st_uid, copied.stat().st_mode & 0o7777) == (IMAGE_UID, 0o400)

    port = free_port()
    (config_mount,) = [m["mountPath"] for m in exporter["volumeMounts"] if m["name"] == config_volume["name"]]
    with container(
        docker,
        "--network", "host", *as_the_pod, *FAST_HEALTHCHECK, "-v", f"{empty_dir}:{config_mount}:ro",
        "-e", f"HEALTHCHECK_URL=http://127.0.0.1:{port}/-/healthy",
        image, *args, "--web.listen-address", f"127.0.0.1:{port}",
    ) as name:  # fmt: skip
        wait_healthy(docker, name)
        assert request(port, "GET", "/liveness")[0] == 200
        logs = docker("logs", name).stderr
        assert PASSWORD_WARNING not in logs and "s3cret-pw" not in logs, logs

    # The control: the same exporter reading the Secret's own file (group-readable) warns, so the copy is needed.
    with container(
        docker,
        "--network", "host", *as_the_pod, "-v", f"{secret}:/run/secret:ro",
        image, "--config.file", f"/run/secret/{config_file.name}", "--infra.label", label,
        "--web.listen-address", f"127.0.0.1:{free_port()}",
    ) as name:  # fmt: skip
        deadline = time.monotonic() + HEALTHY_WITHIN_S
        while "serving" not in (logs := docker("logs", name).stderr) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert PASSWORD_WARNING in logs, logs


def healthcheck_path() -> str:
    """The path the Dockerfile's HEALTHCHECK asks by default (HEALTHCHECK_URL only moves it to another port here)."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    return re.search(r"HEALTHCHECK_URL', 'http://127\.0\.0\.1:\d+(/[^']*)'", text).group(1)


def test_the_image_answers_its_probes_while_the_cluster_is_unreachable(docker, image):
    (deployment,) = of_kind(render(KUBERNETES / "base"), "Deployment")
    (exporter,) = deployment["spec"]["template"]["spec"]["containers"]
    liveness_path = exporter["livenessProbe"]["httpGet"]["path"]
    readiness_path = exporter["readinessProbe"]["httpGet"]["path"]
    port, unreachable = free_port(), free_port()  # nothing listens on `unreachable`: connections are refused
    with container(
        docker,
        "--network", "host", *HARDENED, *FAST_HEALTHCHECK,
        "-e", f"HEALTHCHECK_URL=http://127.0.0.1:{port}{healthcheck_path()}",
        image, "--mongodb.uri", f"mongodb://127.0.0.1:{unreachable}/?replicaSet=rs0",
        "--collect.interval", "2", "--collect.timeout", "1", "--web.listen-address", f"127.0.0.1:{port}",
    ) as name:  # fmt: skip
        wait_healthy(docker, name)  # the image's HEALTHCHECK: healthy although nothing is collected
        # Ready once the first (failed) poll ended.
        wait_until(lambda: request(port, "GET", readiness_path)[0] == 200, HEALTHY_WITHIN_S, "/-/ready", 0.2)

        assert request(port, "GET", liveness_path)[0] == 200
        status, body = request(port, "GET", "/liveness")
        assert status == 503, body
        assert json.loads(body)["last_failure_kind"] == "unreachable", body
        status, body = request(port, "PUT", SERVICE_PATH)
        assert status == 200 and json.loads(body)[SERVICE_PATH[1:]]["status"] == "RED"
        assert state(docker, name)["Health"]["Status"] == "healthy"
