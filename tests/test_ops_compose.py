"""docker-compose.yml: valid for Compose v2 and v1 (and a broken copy is not), services wired in order, the
exporter's password only in its mounted config file, and the two one-shot helpers (docker/prepare.sh,
docker/mongo-init.js) doing what they say. No Docker engine here: nothing is started, no MongoDB runs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from ops_util import COMPOSE_FILE, REPO, compose_v1, compose_v2, node

pytestmark = pytest.mark.slow  # README "Tests": skipped by the quick run

DOCKER_DIR = REPO / "docker"
EXPORTER_CONFIG = DOCKER_DIR / "replicationlag.toml"
MONGO_INIT = DOCKER_DIR / "mongo-init.js"
PREPARE = DOCKER_DIR / "prepare.sh"
MONGOD = ("mongo1", "mongo2", "mongo3")


def compose(binary: str, compose_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # An empty environment apart from PATH: the file's ${VAR:-default}s must be enough.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [binary, "-f", str(compose_file), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


@pytest.fixture(scope="module")
def model() -> dict:
    """The compose file as Compose v2 resolves it (anchors merged, defaults filled in)."""
    result = compose(compose_v2(), COMPOSE_FILE, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def monitoring_uri() -> str:
    return tomllib.loads(EXPORTER_CONFIG.read_text(encoding="utf-8"))["infra"]["clusterKeeper"]["uri"]


def test_compose_v2_accepts_the_compose_file():
    result = compose(compose_v2(), COMPOSE_FILE, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_v1_accepts_the_compose_file():
    result = compose(compose_v1(), COMPOSE_FILE, "config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("breakage", "old", "new", "named"),
    [
        (
            "a misspelled key",
            '    healthcheck:\n      test: ["CMD", "wget"',
            '    helthcheck:\n      test: ["CMD", "wget"',
            "helthcheck",
        ),
        (
            "an unknown start condition",
            "condition: service_completed_successfully",
            "condition: service_done",
            "condition",
        ),
        (
            "a dependency on a missing service",
            "      mongo-init:\n        condition:",
            "      mongo-setup:\n        condition:",
            "mongo-setup",
        ),
    ],
)
def test_both_compose_versions_reject_a_broken_compose_file(tmp_path, breakage, old, new, named):
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert old in text, breakage
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new), encoding="utf-8")
    for binary in (compose_v2(), compose_v1()):
        result = compose(binary, broken, "config", "-q")
        assert result.returncode != 0, f"{binary} accepted {breakage}"
        assert named in result.stderr, result.stderr


def test_the_replica_set_is_three_mongodb_7_0_members_of_rs0_with_access_control(model):
    services = model["services"]
    for name in MONGOD:
        mongod = services[name]
        assert mongod["image"] == "mongo:7.0"
        command = mongod["command"]
        assert command[0] == "mongod"
        assert command[command.index("--replSet") + 1] == "rs0"
        keyfile = command[command.index("--keyFile") + 1]
        assert any(v["target"] == str(Path(keyfile).parent) and v.get("read_only") for v in mongod["volumes"])
        assert mongod["healthcheck"]["test"][:2] == ["CMD", "mongosh"]
    assert services["mongo1"]["environment"]["MONGO_INITDB_ROOT_USERNAME"] == "root"


def test_services_start_in_order_through_healthchecks_and_completions(model):
    services = model["services"]

    def waits_for(name: str) -> dict[str, str]:
        return {dep: how["condition"] for dep, how in services[name].get("depends_on", {}).items()}

    for name in MONGOD:
        assert waits_for(name) == {"prepare": "service_completed_successfully"}
    assert waits_for("mongo-init") == dict.fromkeys(MONGOD, "service_healthy")
    assert waits_for("exporter") == {
        "prepare": "service_completed_successfully",
        "mongo-init": "service_completed_successfully",
    }
    assert waits_for("prometheus") == {"exporter": "service_started"}
    assert waits_for("grafana") == {"prometheus": "service_healthy"}
    for name in (*MONGOD, "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    for one_shot in ("prepare", "mongo-init"):
        assert services[one_shot]["restart"] == "no"


def test_the_exporter_takes_its_uri_from_the_mounted_config_file_not_the_command_line(model):
    exporter = model["services"]["exporter"]
    assert exporter["build"]["context"] == str(REPO)
    visible = json.dumps([exporter.get("command"), exporter.get("entrypoint"), exporter.get("environment")])
    assert "mongodb://" not in visible
    assert "change-me-monitoring" not in json.dumps(model["services"])
    command = exporter["command"]
    assert command[command.index("--infra.label") + 1] == "clusterKeeper"
    config_path = Path(command[command.index("--config.file") + 1])
    (mount,) = [v for v in exporter["volumes"] if v["target"] == str(config_path.parent)]
    assert mount["read_only"] is True
    prepare = model["services"]["prepare"]
    assert any(v["source"] == mount["source"] for v in prepare["volumes"]), "prepare fills the exporter's volume"
    assert exporter["init"] is True


def test_the_exporters_settings_loader_accepts_the_compose_command_with_its_config_file(model):
    # the exporter's own parser: the compose command must make sense to it
    from replicationlag.config import load_settings

    command = model["services"]["exporter"]["command"]
    path_at = command.index("--config.file") + 1
    argv = [*command[:path_at], str(EXPORTER_CONFIG), *command[path_at + 1 :]]
    settings = load_settings(argv, env={})
    assert settings.infra_label == "clusterKeeper"
    assert settings.uri == monitoring_uri()
    assert (settings.listen_host, settings.listen_port) in {("", 9218), ("0.0.0.0", 9218)}


def test_the_monitoring_uri_reaches_all_three_members_of_rs0_as_the_monitoring_user():
    uri = urlsplit(monitoring_uri())
    assert uri.scheme == "mongodb"
    assert unquote(uri.username or "") == "replicationlag" and uri.password
    assert uri.netloc.rpartition("@")[2] == "mongo1:27017,mongo2:27017,mongo3:27017"
    assert "replicaSet=rs0" in uri.query


def test_prometheus_and_grafana_get_the_rules_and_the_dashboard(model):
    services = model["services"]
    prometheus = services["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert {"source": str(REPO / "prometheus"), "target": "/etc/prometheus"}.items() <= next(
        v for v in prometheus["volumes"] if v["target"] == "/etc/prometheus"
    ).items()
    grafana_sources = {v["target"]: v["source"] for v in services["grafana"]["volumes"]}
    assert grafana_sources["/etc/grafana/provisioning"] == str(REPO / "grafana" / "provisioning")
    assert grafana_sources["/etc/grafana/dashboards"] == str(REPO / "grafana" / "dashboards")


def test_published_ports_listen_on_localhost_only(model):
    published = {
        name: [(p["host_ip"], p["published"], p["target"]) for p in service.get("ports", [])]
        for name, service in model["services"].items()
        if service.get("ports")
    }
    assert published == {
        "exporter": [("127.0.0.1", "9218", 9218)],
        "prometheus": [("127.0.0.1", "9090", 9090)],
        "grafana": [("127.0.0.1", "3000", 3000)],
    }


def test_prepare_hands_the_exporter_config_to_the_uid_the_image_runs_as():
    prepare = PREPARE.read_text(encoding="utf-8")
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert 'config_owner="${CONFIG_OWNER:-10001:10001}"' in prepare
    assert "USER 10001:10001" in dockerfile


def run_prepare(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    owner = f"{os.getuid()}:{os.getgid()}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KEYFILE": str(tmp_path / "keyfile"),
        "KEYFILE_OWNER": owner,
        "CONFIG_SOURCE": str(EXPORTER_CONFIG),
        "CONFIG_COPY": str(tmp_path / "replicationlag.toml"),
        "CONFIG_OWNER": owner,
    }
    return subprocess.run(["bash", str(PREPARE)], capture_output=True, text=True, timeout=30, env=env, check=False)


def test_prepare_makes_one_private_keyfile_and_a_private_config_copy_and_is_idempotent(tmp_path):
    first = run_prepare(tmp_path)
    assert first.returncode == 0, first.stderr
    keyfile, config = tmp_path / "keyfile", tmp_path / "replicationlag.toml"
    key = keyfile.read_text()
    assert 6 <= len(key) <= 1024 and key.strip() == key
    assert set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o400
    assert stat.S_IMODE(config.stat().st_mode) == 0o400
    assert config.read_bytes() == EXPORTER_CONFIG.read_bytes()
    assert "generated the replica set keyfile" in first.stdout

    second = run_prepare(tmp_path)
    assert second.returncode == 0, second.stderr
    assert keyfile.read_text() == key, "a second `up` must keep the set's keyfile"
    assert "generated" not in second.stdout


# --- docker/mongo-init.js under node, against a fake of the mongosh built-ins it uses --------------------------

FAKE_MONGOSH = r"""
// Runs a mongosh script under node with fakes of connect/print/sleep/quit on a fake replica set described by a
// JSON scenario, then prints what happened as JSON. Mimics mongosh: a failed command throws an error carrying
// code and codeName (MongoServerError); connect(uri) returns a database; quit(n) ends the script with status n.
const fs = require('fs');
const vm = require('vm');
const [scriptPath, scenarioPath] = process.argv.slice(2);
const scenario = JSON.parse(fs.readFileSync(scenarioPath, 'utf8'));
const state = { initiated: scenario.initiated, users: scenario.users || {}, hellos: 0 };
const record = { connects: [], initiate: null, created: [], updated: [], printed: [], exit: 0 };

function serverError(code, codeName) {
  const error = new Error(`${codeName} (fake)`);
  error.name = 'MongoServerError';
  error.code = code;
  error.codeName = codeName;
  return error;
}

function fakeDb(uri) {
  const host = uri.replace(/^mongodb:\/\/[^@]*@/, '').split('/')[0];
  return {
    adminCommand(spec) {
      if (scenario.authFails) throw serverError(18, 'AuthenticationFailed');
      if (spec.replSetGetStatus) {
        if (!state.initiated) throw serverError(94, 'NotYetInitialized');
        const syncing = scenario.stillSyncing ? 5 : 2;
        return { ok: 1, members: [{ health: 1, state: 1 }, { health: 1, state: syncing }, { health: 1, state: 2 }] };
      }
      if (spec.replSetInitiate) {
        if (state.initiated) throw serverError(23, 'AlreadyInitialized');
        state.initiated = true;
        record.initiate = spec.replSetInitiate;
        return { ok: 1 };
      }
      if (spec.hello) {
        state.hellos += 1;
        const elected = !scenario.neverElected && state.hellos >= (scenario.electedAfterHellos || 1);
        return { ok: 1, primary: elected ? scenario.primary : undefined };
      }
      throw serverError(59, 'CommandNotFound');
    },
    getSiblingDB(name) {
      if (name !== 'admin') throw new Error(`fake has no database ${name}`);
      return {
        getUser(user) { return state.users[user] ? { user } : null; },
        createUser(doc, writeConcern) {
          if (state.users[doc.user]) throw serverError(51003, 'Location51003');
          state.users[doc.user] = { pwd: doc.pwd, roles: doc.roles };
          record.created.push({ host, user: doc.user, pwd: doc.pwd, roles: doc.roles, writeConcern });
        },
        updateUser(user, update, writeConcern) {
          state.users[user] = { pwd: update.pwd, roles: update.roles };
          record.updated.push({ host, user, pwd: update.pwd, roles: update.roles, writeConcern });
        },
      };
    },
  };
}

class Quit extends Error {}
const sandbox = {
  connect(uri) { record.connects.push(uri); return fakeDb(uri); },
  print(...args) { record.printed.push(args.join(' ')); },
  sleep() {},
  quit(code) { record.exit = code || 0; throw new Quit(); },
  require,
  process: { env: scenario.env },
};
try {
  vm.runInNewContext(fs.readFileSync(scriptPath, 'utf8'), sandbox, { filename: scriptPath });
} catch (error) {
  if (!(error instanceof Quit)) throw error;
}
record.users = state.users;
console.log(JSON.stringify(record));
"""

ROOT_PASSWORD = "p@ss:w/rd"
ROLES = [{"role": "clusterMonitor", "db": "admin"}, {"role": "read", "db": "local"}]


def run_mongo_init(tmp_path: Path, config: Path = EXPORTER_CONFIG, **scenario: object) -> dict:
    harness = tmp_path / "fake_mongosh.js"
    harness.write_text(FAKE_MONGOSH, encoding="utf-8")
    env = {"MONGO_ROOT_USERNAME": "root", "MONGO_ROOT_PASSWORD": ROOT_PASSWORD, "REPLICATIONLAG_CONFIG": str(config)}
    scenario_file = tmp_path / "scenario.json"
    scenario_file.write_text(json.dumps({"initiated": False, "primary": "mongo1:27017", "env": env, **scenario}))
    result = subprocess.run(
        [node(), str(harness), str(MONGO_INIT), str(scenario_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def monitoring_credentials() -> tuple[str, str]:
    uri = urlsplit(monitoring_uri())
    return unquote(uri.username or ""), unquote(uri.password or "")


def test_mongo_init_initiates_a_fresh_set_and_creates_the_monitoring_user_from_the_exporter_config(tmp_path):
    done = run_mongo_init(tmp_path, electedAfterHellos=3)
    assert done["exit"] == 0, done["printed"]
    assert done["initiate"] == {
        "_id": "rs0",
        "members": [
            {"_id": 0, "host": "mongo1:27017", "priority": 2},
            {"_id": 1, "host": "mongo2:27017", "priority": 1},
            {"_id": 2, "host": "mongo3:27017", "priority": 1},
        ],
    }
    user, password = monitoring_credentials()
    (created,) = done["created"]
    assert created == {
        "host": "mongo1:27017",
        "user": user,
        "pwd": password,
        "roles": ROLES,
        "writeConcern": {"w": "majority", "wtimeout": 60000},
    }
    assert done["updated"] == []
    assert done["connects"][0].startswith("mongodb://root:p%40ss%3Aw%2Frd@mongo1:27017/admin?")
    assert "directConnection=true" in done["connects"][0]


def test_mongo_init_run_again_does_not_reinitiate_and_updates_the_user_on_the_current_primary(tmp_path):
    user, password = monitoring_credentials()
    done = run_mongo_init(tmp_path, initiated=True, primary="mongo2:27017", users={user: {"pwd": "old", "roles": []}})
    assert done["exit"] == 0, done["printed"]
    assert done["initiate"] is None
    assert done["created"] == []
    assert [(u["host"], u["user"], u["pwd"], u["roles"]) for u in done["updated"]] == [
        ("mongo2:27017", user, password, ROLES)
    ]
    assert "mongo-init: replica set rs0 already initiated" in done["printed"]


def test_mongo_init_fails_when_no_primary_is_elected(tmp_path):
    done = run_mongo_init(tmp_path, neverElected=True)
    assert done["exit"] == 1
    assert done["printed"][-1] == "mongo-init: failed: no primary in rs0 after 120 s"
    assert done["created"] == []


def test_mongo_init_fails_on_a_wrong_root_password_without_printing_it(tmp_path):
    done = run_mongo_init(tmp_path, authFails=True)
    assert done["exit"] == 1
    assert done["printed"] == ["mongo-init: failed: AuthenticationFailed: AuthenticationFailed (fake)"]
    assert ROOT_PASSWORD not in json.dumps(done["printed"])


def test_mongo_init_goes_on_with_a_warning_while_a_member_is_still_in_initial_sync(tmp_path):
    done = run_mongo_init(tmp_path, stillSyncing=True)
    assert done["exit"] == 0
    assert any("warning: not every member of rs0" in line for line in done["printed"])
    assert len(done["created"]) == 1


def test_mongo_init_refuses_a_config_file_without_the_infra_section(tmp_path):
    other = tmp_path / "other.toml"
    other.write_text('[infra.somewhereElse]\nuri = "mongodb://u:p@h:27017/"\n')
    done = run_mongo_init(tmp_path, config=other)
    assert done["exit"] == 1
    assert done["printed"][-1].startswith('mongo-init: failed: no uri = "..." in an [infra.clusterKeeper] section')
    assert done["initiate"] is None
