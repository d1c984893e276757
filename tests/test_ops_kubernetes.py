"""deploy/kubernetes: what `kubectl kustomize` renders from the base, the monitoring kustomization and the example
overlay is checked, never the YAML as written.

- The Kubernetes kinds pass kubernetes-validate's strict schemas (offline, the schemas ship in the package); its
  only tolerated warnings are "no schema" for the two Prometheus Operator kinds, which are checked instead against
  the hand-written subset schemas of tests/fixtures/crd-subset (README there says what they can and cannot see).
- The pods keep their promises: non-root uid 10001 (the Dockerfile's user), read-only root, no privilege
  escalation, no capabilities, RuntimeDefault seccomp, liveness on /-/healthy and readiness on /-/ready (never
  /liveness, Zero Problem's), requests and limits from bench/RESULTS.md's measured RSS, the URI only in a Secret's
  file, and the image tagged with the version, as every documented `docker build` tags it.
- The PrometheusRule's groups are prometheus/alerts.yml's, and promtool checks and unit-tests (alerts_test.yml) the
  groups taken from the rendered PrometheusRule.
- Broken copies (a missing probe, a privileged container, a rule that differs, a misspelt field) fail these checks.

kubectl (with kustomize) comes with the machine image, not from ./run: without it these tests skip, saying so.
"""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ops_util import REPO, run_promtool, unavailable

from replicationlag.version import VERSION

pytestmark = pytest.mark.slow  # every test here runs kubectl, kubernetes-validate or promtool

KUBERNETES = REPO / "deploy" / "kubernetes"
OVERLAY = Path("overlays") / "two-clusters"
SYNC_RULES = KUBERNETES / "sync-rules"
ALERTS = REPO / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "prometheus" / "alerts_test.yml"
CRD_SCHEMAS = REPO / "tests" / "fixtures" / "crd-subset"
CRD_KINDS = {"ServiceMonitor": "servicemonitor", "PrometheusRule": "prometheusrule"}
# The oldest Kubernetes still supported upstream when this was written, and the kubectl on the machine image.
KUBERNETES_VERSIONS = ("1.31.0", "1.32.0")
IMAGE_UID = 10001
PORT = 9218


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        unavailable("kubectl is not installed (it comes with the machine image): the manifests cannot be rendered")
    return path


def render(directory: Path) -> list[dict]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def copy_tree(destination: Path, *, with_config_files: bool = True) -> Path:
    """deploy/kubernetes and prometheus/ in a repository-shaped folder, each example config file copied to the name
    the overlay's secretGenerator reads (what a user does before `kubectl apply -k`)."""
    shutil.copytree(KUBERNETES, destination / "deploy" / "kubernetes")
    shutil.copytree(REPO / "prometheus", destination / "prometheus")
    if with_config_files:
        for example in (destination / "deploy" / "kubernetes").rglob("replicationlag.toml.example"):
            shutil.copy(example, example.with_suffix(""))
    return destination / "deploy" / "kubernetes"


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= count, f"mutation target {old!r} is not in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    tree = copy_tree(tmp_path_factory.mktemp("k8s"))
    return {
        "base": render(KUBERNETES / "base"),
        "monitoring": render(KUBERNETES / "monitoring"),
        "overlay": render(tree / OVERLAY),
    }


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


# ---------------------------------------------------------------------------------------------- what is rendered


def test_kubectl_renders_the_base_the_monitoring_and_the_two_cluster_overlay(rendered):
    kinds = {name: sorted(doc["kind"] for doc in docs) for name, docs in rendered.items()}
    assert kinds == {
        "base": ["Deployment", "Service"],
        "monitoring": ["PrometheusRule", "ServiceMonitor"],
        "overlay": sorted(
            [*("Namespace", "Secret", "Secret", "Service", "Service", "Deployment", "Deployment"), *CRD_KINDS]
        ),
    }
    assert {doc["metadata"].get("namespace") for doc in rendered["overlay"] if doc["kind"] != "Namespace"} == {
        "replicationlag"
    }


def test_the_overlay_needs_the_config_files_that_are_not_committed(tmp_path):
    """Without the files made from the examples, kustomize refuses: no manifest can carry a placeholder password."""
    tree = copy_tree(tmp_path, with_config_files=False)
    result = subprocess.run(
        [kubectl(), "kustomize", str(tree / OVERLAY)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "replicationlag.toml" in result.stderr


def test_the_real_config_files_are_ignored_by_git_and_none_is_committed():
    for cluster in ("orders", "billing"):
        path = f"deploy/kubernetes/{OVERLAY}/{cluster}/replicationlag.toml"
        ignored = subprocess.run(["git", "-C", REPO, "check-ignore", "-q", path], timeout=30, check=False)
        assert ignored.returncode == 0, f"{path} would be committed"
    tracked = subprocess.run(
        ["git", "-C", REPO, "ls-files", "deploy"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.split()
    assert not [name for name in tracked if name.endswith(".toml")], "a config file is committed"


# ------------------------------------------------------------------------------------------- schema validation


def validation_problems(docs: list[dict], version: str, tmp_path: Path) -> list[str]:
    """kubernetes-validate --strict on the documents: its errors, and any resource it could not check other than
    the two Prometheus Operator kinds (an apiVersion typo only gets a warning and exit status 0 from it)."""
    manifest = tmp_path / f"rendered-{version}.yaml"
    manifest.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = (result.stdout + result.stderr).splitlines()
    problems = [line for line in lines if not line.startswith(("INFO ", "WARN "))]
    unchecked = [line for line in lines if line.startswith("WARN ")]
    problems += [line for line in unchecked if not any(f"kind {kind} " in line for kind in CRD_KINDS)]
    passed = sum(" passed for resource " in line for line in lines)
    if result.returncode != 0 and not problems:
        problems.append(f"kubernetes-validate exited {result.returncode}")
    if passed != sum(doc["kind"] not in CRD_KINDS for doc in docs):
        problems.append(f"only {passed} resources passed")
    return problems


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", ["base", "monitoring", "overlay"])
def test_kubernetes_validate_passes_every_rendered_resource(rendered, name, version, tmp_path):
    assert validation_problems(rendered[name], version, tmp_path) == []


@pytest.mark.parametrize(
    ("breakage", "change"),
    [
        ("a misspelt field", lambda d: d["spec"]["template"]["spec"].update(restartPolicies="Always")),
        (
            "a port that is no number",
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(containerPort="9218"),
        ),
        ("an apiVersion that does not exist", lambda d: d.update(apiVersion="apps/v1beta3")),
    ],
)
def test_kubernetes_validate_rejects_a_broken_deployment(rendered, breakage, change, tmp_path):
    docs = copy.deepcopy(rendered["base"])
    change(of_kind(docs, "Deployment")[0])
    assert validation_problems(docs, KUBERNETES_VERSIONS[-1], tmp_path), f"not noticed: {breakage}"


def crd_problems(doc: dict) -> list[str]:
    schema = yaml.safe_load((CRD_SCHEMAS / f"{CRD_KINDS[doc['kind']]}.schema.yaml").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    if doc["kind"] == "PrometheusRule":  # groups is a list-map keyed by name in the CRD
        names = [group["name"] for group in doc["spec"].get("groups", [])]
        problems += [f"group {name!r} appears twice" for name in set(names) if names.count(name) > 1]
    return problems


@pytest.mark.parametrize("name", ["monitoring", "overlay"])
def test_the_custom_resources_match_the_prometheus_operator_api(rendered, name):
    docs = [doc for doc in rendered[name] if doc["kind"] in CRD_KINDS]
    assert sorted(doc["kind"] for doc in docs) == sorted(CRD_KINDS)
    for doc in docs:
        assert crd_problems(doc) == [], doc["kind"]


@pytest.mark.parametrize(
    ("kind", "breakage", "change"),
    [
        ("ServiceMonitor", "interval '15 s'", lambda s: s["endpoints"][0].update(interval="15 s")),
        ("ServiceMonitor", "misspelt scrapeTimeout", lambda s: s["endpoints"][0].update(scrapeTimout="10s")),
        ("ServiceMonitor", "no selector", lambda s: s.pop("selector")),
        ("PrometheusRule", "for: 90 seconds", lambda s: s["groups"][0]["rules"][0].update({"for": "90 seconds"})),
        ("PrometheusRule", "a rule with no expr", lambda s: s["groups"][0]["rules"][0].pop("expr")),
        ("PrometheusRule", "a group twice", lambda s: s["groups"].append(copy.deepcopy(s["groups"][0]))),
    ],
)
def test_the_custom_resource_check_rejects_a_broken_copy(rendered, kind, breakage, change):
    (doc,) = copy.deepcopy(of_kind(rendered["monitoring"], kind))
    change(doc["spec"])
    assert crd_problems(doc), f"not noticed: {breakage}"


# ------------------------------------------------------------------------------------------------ the pods


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(Ki|Mi|Gi|k|M|G)?", str(quantity)).groups()
    factor = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "k": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    return float(number) * factor.get(unit, 1 / 2**20)


def measured_peak_rss_mib() -> float:
    """bench/RESULTS.md's peak RSS of our exporter after 100 000 scrapes (the cost table)."""
    text = (REPO / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    return float(re.search(r"^\| peak RSS \(VmHWM\) after the scrapes, MiB \| ([\d.]+) \|", text, re.M).group(1))


def security_problems(pod: dict, name: str, container: dict) -> list[str]:
    """The restricted Pod Security Standard and the image's user, for one container (pod settings inherited)."""
    pod_context = pod.get("securityContext", {})
    context = {**pod_context, **container.get("securityContext", {})}
    problems = []
    if context.get("runAsNonRoot") is not True:
        problems.append(f"{name}: runAsNonRoot is not true")
    if context.get("runAsUser") != IMAGE_UID:
        problems.append(f"{name}: runAsUser is {context.get('runAsUser')}, not the image's {IMAGE_UID}")
    if context.get("privileged"):
        problems.append(f"{name}: privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{name}: allowPrivilegeEscalation is not false")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{name}: the root filesystem is writable")
    capabilities = context.get("capabilities", {})
    if capabilities.get("drop") != ["ALL"] or capabilities.get("add"):
        problems.append(f"{name}: capabilities are not all dropped")
    if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: seccompProfile is not RuntimeDefault")
    return problems


def deployment_problems(deployment: dict, secrets: dict[str, dict] | None = None) -> list[str]:
    """Every broken promise of one rendered Deployment, as a list; `secrets` are the rendered Secrets by name (the
    base has none: it expects one created by hand)."""
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod.get("initContainers", []) + pod["containers"]}
    problems = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{flag} is on")
    if any("hostPath" in volume for volume in pod.get("volumes", [])):
        problems.append("a hostPath volume")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("a service account token is mounted (the exporter never calls the Kubernetes API)")
    for name, container in containers.items():
        problems += security_problems(pod, name, container)
        image, _, tag = container.get("image", "").rpartition(":")
        if image.rpartition("/")[2] != "replicationlag" or tag != VERSION:
            problems.append(f"{name}: image {container.get('image')}, not replicationlag:{VERSION} (version.py)")
        env = " ".join(str(e.get("value", "")) + e.get("name", "") for e in container.get("env", []))
        if "mongodb://" in env or "MONGODB_URI" in env or "mongodb://" in " ".join(container.get("args", [])):
            problems.append(f"{name}: the URI is in an env var or an argument")
        if "--mongodb.uri" in container.get("args", []):
            problems.append(f"{name}: --mongodb.uri on the command line")
        limits, requests = (
            container.get("resources", {}).get("limits", {}),
            container.get("resources", {}).get("requests", {}),
        )
        if not {"cpu", "memory"} <= set(requests) or "memory" not in limits:
            problems.append(f"{name}: no cpu and memory requests and memory limit")

    exporter = containers.get("exporter")
    if exporter is None:
        return [*problems, "no container named exporter"]
    args = exporter.get("args", [])
    ports = {p.get("name"): p["containerPort"] for p in exporter.get("ports", [])}
    if ports.get("http") != PORT:
        problems.append(f"the exporter's port http is not {PORT}")
    # The orchestrator's probes are Prometheus's: /-/healthy (the process serves) and /-/ready (the first poll
    # ended). /liveness is Zero Problem's; it is 503 while the cluster is unreachable, which no restart fixes.
    liveness = exporter.get("livenessProbe", {}).get("httpGet", {})
    if liveness.get("path") == "/liveness":
        problems.append("liveness on /liveness: an unreachable cluster would restart the pod and wipe its history")
    elif liveness.get("path") != "/-/healthy" or liveness.get("port") not in {"http", PORT}:
        problems.append("no livenessProbe on /-/healthy")
    readiness = exporter.get("readinessProbe", {}).get("httpGet", {})
    if readiness.get("path") != "/-/ready" or readiness.get("port") not in {"http", PORT}:
        problems.append("no readinessProbe on /-/ready")
    if pod.get("terminationGracePeriodSeconds", 30) < 2:  # the exporter stops within 2 s of SIGTERM
        problems.append("the grace period is shorter than the exporter's 2 s stop")

    peak = measured_peak_rss_mib()
    resources = exporter.get("resources", {})
    memory_request = mebibytes(resources.get("requests", {}).get("memory", "0"))
    memory_limit = mebibytes(resources.get("limits", {}).get("memory", "0"))
    if memory_request < 1.25 * peak or memory_limit < 2 * peak or memory_limit < memory_request:
        problems.append(f"memory {memory_request:g}/{memory_limit:g} MiB does not fit the measured {peak} MiB")

    # The config file: --config.file in a volume that holds the Secret's file, directly or copied by an init
    # container from the Secret's volume; the Secret (when rendered) holds [infra.<--infra.label>].
    if "--config.file" not in args or "--infra.label" not in args:
        return [*problems, "no --config.file and --infra.label"]
    config_file, label = args[args.index("--config.file") + 1], args[args.index("--infra.label") + 1]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in exporter.get("volumeMounts", [])}
    config_volume = mounts.get(str(Path(config_file).parent))
    secret_volumes = [v for v in volumes.values() if "secret" in v]
    if config_volume is None or len(secret_volumes) != 1:
        return [*problems, "the config file is not mounted from one Secret"]
    secret_name = secret_volumes[0]["secret"]["secretName"]
    if "secret" not in volumes[config_volume]:
        copiers = [c for c in pod.get("initContainers", []) if config_file in c.get("command", [])]
        if not copiers or secret_volumes[0]["name"] not in {m["name"] for m in copiers[0].get("volumeMounts", [])}:
            problems.append("the config volume is neither the Secret nor filled from it by an init container")
    if secrets is not None:
        secret = secrets.get(secret_name)
        if secret is None:
            return [*problems, f"the Secret {secret_name} is not rendered"]
        toml = base64.b64decode(secret["data"][Path(config_file).name]).decode()
        if not tomllib.loads(toml).get("infra", {}).get(label, {}).get("uri", "").startswith("mongodb://"):
            problems.append(f"the Secret {secret_name} has no [infra.{label}] uri")
    return problems


@pytest.mark.parametrize("name", ["base", "overlay"])
def test_every_deployment_keeps_its_promises(rendered, name):
    deployments = of_kind(rendered[name], "Deployment")
    secrets = {s["metadata"]["name"]: s for s in of_kind(rendered[name], "Secret")} if name == "overlay" else None
    assert deployments
    for deployment in deployments:
        assert deployment_problems(deployment, secrets) == [], deployment["metadata"]["name"]


# Where a user reads how to build and name the image: each must tag it with the version, as the manifests ask.
BUILD_DOCS = ("README.md", "docs/operations.md", "deploy/kubernetes/README.md", "Dockerfile")


def image_tag_problems(texts: dict[str, str], version: str) -> list[str]:
    """Every `docker build` that does not tag replicationlag:<version>, every replicationlag image named with
    another tag or none in a docker command, and every kustomize newTag that is not the version."""
    problems = []
    for name, text in texts.items():
        builds = re.findall(r"docker build\s+-[^\n`]*", text)  # a command, not prose naming `docker build`
        if not builds and name in BUILD_DOCS:
            problems.append(f"{name}: no docker build command")
        for build in builds:
            if f"-t replicationlag:{version} " not in f"{build} ":
                problems.append(f"{name}: {build!r} does not tag replicationlag:{version}")
        for command in re.findall(r"docker (?:run|push|tag)\b[^\n`]*", text):
            for image in re.findall(r"(?<![\w./:-])((?:[\w.-]+/)*replicationlag(?::[\w.-]+)?)(?![\w/.-])", command):
                if not image.endswith(f":{version}"):
                    problems.append(f"{name}: {command!r} names {image}, not :{version}")
        for tag in re.findall(r"newTag:\s*\"?([\w.-]+)", text):
            if tag != version:
                problems.append(f"{name}: newTag {tag}, not {version}")
    return problems


def test_the_version_the_build_commands_and_the_manifests_name_one_image(rendered):
    texts = {name: (REPO / name).read_text(encoding="utf-8") for name in BUILD_DOCS}
    texts.update({str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in KUBERNETES.rglob("*.yaml")})
    assert image_tag_problems(texts, VERSION) == []
    images = {
        c["image"]
        for name in ("base", "overlay")
        for d in of_kind(rendered[name], "Deployment")
        for c in d["spec"]["template"]["spec"]["initContainers"] + d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"replicationlag:{VERSION}", f"registry.example.internal/replicationlag:{VERSION}"}


def test_the_image_tag_check_notices_a_build_or_a_manifest_left_behind():
    old = "docker build -t replicationlag:0.1.0 .\ndocker run --rm replicationlag --demo\nnewTag: 0.1.0\n"
    assert image_tag_problems({"README.md": old}, "0.2.0") == [
        "README.md: 'docker build -t replicationlag:0.1.0 .' does not tag replicationlag:0.2.0",
        "README.md: 'docker run --rm replicationlag --demo' names replicationlag, not :0.2.0",
        "README.md: newTag 0.1.0, not 0.2.0",
    ]
    assert image_tag_problems({"README.md": "docker build -t replicationlag ."}, "0.2.0") != []
    assert image_tag_problems({"README.md": "build it with `docker build`"}, "0.2.0") == [
        "README.md: no docker build command"
    ]
    good = "docker build -t replicationlag:0.2.0 .\ndocker push registry.example.internal/replicationlag:0.2.0\n"
    assert image_tag_problems({"README.md": good}, "0.2.0") == []


def test_the_uid_is_the_images_user():
    users = re.findall(r"^USER\s+(\S+)", (REPO / "Dockerfile").read_text(encoding="utf-8"), re.M)
    assert users[-1].split(":")[0] == str(IMAGE_UID)


@pytest.mark.parametrize(
    ("breakage", "old", "new", "problem"),
    [
        ("no liveness probe", "livenessProbe:", "startupProbe:", "no livenessProbe on /-/healthy"),
        ("liveness on /liveness", "path: /-/healthy", "path: /liveness", "liveness on /liveness"),
        ("readiness on /liveness", "path: /-/ready", "path: /liveness", "no readinessProbe on /-/ready"),
        (
            "readiness on the TCP port (ready before the first poll ended)",
            "httpGet:\n              path: /-/ready\n              port: http",
            "tcpSocket:\n              port: http",
            "no readinessProbe on /-/ready",
        ),
        ("an old image", f"image: replicationlag:{VERSION}", "image: replicationlag:0.1.0", "0.1.0"),
        ("a privileged container", "allowPrivilegeEscalation: false", "privileged: true", "privileged"),
        (
            "privilege escalation",
            "allowPrivilegeEscalation: false",
            "allowPrivilegeEscalation: true",
            "allowPrivilegeEscalation is not",
        ),
        ("a writable root", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "writable"),
        ("a capability kept", "drop: [ALL]", "drop: [NET_RAW]", "capabilities"),
        ("root", "runAsUser: 10001", "runAsUser: 0", "runAsUser is 0"),
        ("no seccomp", "type: RuntimeDefault", "type: Unconfined", "seccompProfile"),
        (
            "the URI in an env var",
            "          ports:\n",
            "          env:\n            - name: MONGODB_URI\n              value: mongodb://u:p@db/\n"
            "          ports:\n",
            "env var",
        ),
        ("too little memory", "memory: 64Mi", "memory: 32Mi", "does not fit"),
    ],
)
def test_a_broken_deployment_is_noticed_after_rendering(tmp_path, breakage, old, new, problem):
    tree = copy_tree(tmp_path)
    edit(tree / "base" / "deployment.yaml", old, new)
    (deployment,) = of_kind(render(tree / "base"), "Deployment")
    problems = deployment_problems(deployment)
    assert any(problem in p for p in problems), f"not noticed: {breakage}; problems: {problems}"


def test_each_cluster_of_the_overlay_has_its_own_label_secret_and_service(rendered):
    docs = rendered["overlay"]
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    labels = {}
    for name, deployment in deployments.items():
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        labels[name] = args[args.index("--infra.label") + 1]
    assert labels == {"replicationlag-orders": "orders", "replicationlag-billing": "billing"}
    secret_names = {
        v["secret"]["secretName"]
        for d in deployments.values()
        for v in d["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }
    assert len(secret_names) == 2 and secret_names == {s["metadata"]["name"] for s in of_kind(docs, "Secret")}
    for secret in of_kind(docs, "Secret"):
        toml = base64.b64decode(secret["data"]["replicationlag.toml"]).decode()
        assert "PLACEHOLDER" in toml and "CHANGE-ME" in toml  # the committed example, clearly marked
    for service in of_kind(docs, "Service"):
        selected = [
            name
            for name, d in deployments.items()
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected == [service["metadata"]["name"]], "a Service must select exactly its own cluster's pods"
    assert deployments["replicationlag-orders"]["spec"]["replicas"] == 2
    billing = deployments["replicationlag-billing"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert mebibytes(billing["requests"]["memory"]) > mebibytes("64Mi")


def test_the_service_monitor_scrapes_every_exporter_as_the_job_the_alert_rules_select(rendered):
    docs = rendered["overlay"]
    (monitor,) = of_kind(docs, "ServiceMonitor")
    job = set(re.findall(r'job="([^"]+)"', ALERTS.read_text(encoding="utf-8")))
    assert job == {"replicationlag"}
    services = of_kind(docs, "Service")
    for service in services:
        labels = service["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert labels[monitor["spec"]["jobLabel"]] == "replicationlag"
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports["http"]["port"] == PORT and ports["http"]["targetPort"] == "http"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


# ------------------------------------------------------------------------------------------------ alert rules


def rule_groups(docs: list[dict]) -> list[dict]:
    (rule,) = of_kind(docs, "PrometheusRule")
    return rule["spec"]["groups"]


@pytest.mark.parametrize("name", ["monitoring", "overlay"])
def test_the_prometheus_rule_has_exactly_the_groups_of_alerts_yml(rendered, name):
    assert rule_groups(rendered[name]) == yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]


def test_sync_rules_check_passes_on_the_committed_prometheus_rule():
    result = subprocess.run(
        [sys.executable, SYNC_RULES, "--check"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


def test_an_edited_alerts_yml_fails_the_check_until_sync_rules_runs(tmp_path):
    tree = copy_tree(tmp_path)
    edit(
        tmp_path / "prometheus" / "alerts.yml",
        "mongodb_replication_lag_seconds >= 30",
        "mongodb_replication_lag_seconds >= 20",
    )
    sync = tree / "sync-rules"
    check = subprocess.run([sys.executable, sync, "--check"], capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 1 and "sync-rules" in check.stderr
    stale = rule_groups(render(tree / "monitoring"))
    assert stale != yaml.safe_load((tmp_path / "prometheus" / "alerts.yml").read_text())["groups"]
    subprocess.run([sys.executable, sync], check=True, capture_output=True, timeout=30)
    assert subprocess.run([sys.executable, sync, "--check"], timeout=30, check=False).returncode == 0
    assert (
        rule_groups(render(tree / "monitoring"))
        == yaml.safe_load((tmp_path / "prometheus" / "alerts.yml").read_text())["groups"]
    )


def rules_from(groups: list[dict], where: Path) -> Path:
    """The groups as a rule file beside a copy of alerts_test.yml (which loads `alerts.yml`)."""
    where.mkdir(exist_ok=True)
    (where / "alerts.yml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    shutil.copy(ALERT_TESTS, where / "alerts_test.yml")
    return where


def test_promtool_checks_and_unit_tests_the_rules_of_the_rendered_prometheus_rule(rendered, tmp_path):
    groups = rule_groups(rendered["overlay"])
    where = rules_from(groups, tmp_path / "rules")
    checked = run_promtool("check", "rules", where / "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    count = sum(len(group["rules"]) for group in groups)
    assert f"SUCCESS: {count} rules found" in checked.stdout
    tested = run_promtool("test", "rules", where / "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_a_prometheus_rule_that_differs_fails_the_comparison_and_the_unit_tests(rendered, tmp_path):
    groups = copy.deepcopy(rule_groups(rendered["overlay"]))
    (yellow,) = [r for r in groups[0]["rules"] if r.get("alert") == "MongoReplicationLagYellow"]
    yellow["expr"] = yellow["expr"].replace(">= 5", ">= 4.9")
    assert groups != yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    tested = run_promtool("test", "rules", rules_from(groups, tmp_path / "rules") / "alerts_test.yml")
    assert tested.returncode != 0 and "FAILED" in tested.stdout + tested.stderr
