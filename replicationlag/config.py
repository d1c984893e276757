"""Settings from flags, environment and the config file, validated once into a frozen value.

Every problem found is listed in one `ConfigError`, so a user fixes them all at once. The password of a
MongoDB URI never leaves the settings in clear: `Settings.redacted_uri` and `Settings.redact()` (the `Secrets` of
`credentials`, which redact where credentials occur) are what the rest of the program prints. Standard library
only; imports `credentials`, `model` (the freshness limit the poll cycle must keep) and `version`.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import stat
import tomllib
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from replicationlag.credentials import URI_SCHEME, Credentials, Secrets, redact_uri, uri_passwords, with_login
from replicationlag.model import COMMON_LOCATION_TAGS, FRESHNESS_LIMIT_S
from replicationlag.version import VERSION

DEFAULT_LABEL = "clusterKeeper"
DEFAULT_LISTEN = ":9218"
DEMO_LISTEN = "127.0.0.1:9218"  # a demo is for the person at this machine: not every interface unless asked
DEFAULT_TELEMETRY_PATH = "/metrics"
# The app's other routes (web.app; tests/test_web.py checks this list against its router): the metrics take none.
OTHER_ROUTES = ("/", "/liveness", "/-/healthy", "/-/ready", "/mhp.zeroproblem.mongo.replcationlag")
PASSWORD_ENV = "MONGODB_PASSWORD"  # environment only: a --mongodb.password flag would show in ps and /proc
MAX_PASSWORD_FILE_BYTES = 64 << 10
DEFAULT_INTERVAL_S = 60.0
DEMO_INTERVAL_S = 5.0  # the demo set's lag cycles in about 3 minutes; a minute between polls would hide it
MAX_DEFAULT_TIMEOUT_S = 10.0
MIN_INTERVAL_S = 0.2  # so that the default deadline (half the interval) is never below MIN_TIMEOUT_S
MIN_TIMEOUT_S = 0.1  # the driver waits at least 100 ms for anything (driver.Connection); a shorter deadline is a lie
# Between two healthy polls the data ages by one interval plus the next poll's duration (at most its deadline);
# this much more is left for scheduling and a loaded machine. The sum must stay under FRESHNESS_LIMIT_S.
CYCLE_SLACK_S = 5.0
MAX_CONFIG_BYTES = 1 << 20
LOG_LEVELS = ("debug", "info", "warn", "warning", "error")
LOG_FORMATS = ("text", "json")
URI_SCHEMES = ("mongodb://", "mongodb+srv://")
DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_TOPOLOGY_TAGS = 3  # a group is named by at most this many tag values: "cloud gcp (asia-northeast3, a)"
_TAG_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# Each flag, its environment variable and its help. The env names follow the flag (dots become underscores).
FLAGS = {
    "mongodb.uri": (
        "MONGODB_URI",
        "MongoDB URI of the cluster for the infra label (may carry a password; "
        "prefer --config.file, or a URI without one and MONGODB_PASSWORD or --mongodb.password-file)",
    ),
    "mongodb.user": (
        "MONGODB_USER",
        "user name to log in with, put into the URI percent-encoded (as Percona's exporter reads it); "
        "the URI must then name no user",
    ),
    "mongodb.password-file": (
        "MONGODB_PASSWORD_FILE",
        f"file holding the password (a trailing newline is dropped), put into the URI percent-encoded; "
        f"or the password itself in the environment variable {PASSWORD_ENV} (never a flag); "
        "the URI must then carry no password",
    ),
    "infra.label": ("INFRA_LABEL", f"infra label of the cluster to poll (default {DEFAULT_LABEL})"),
    "config.file": ("CONFIG_FILE", 'TOML file with [infra.<label>] sections holding uri = "mongodb://..."'),
    "web.listen-address": (
        "WEB_LISTEN_ADDRESS",
        f"host:port to serve HTTP on (default {DEFAULT_LISTEN}, {DEMO_LISTEN} with --demo; an empty host means every "
        "interface, IPv4 and IPv6)",
    ),
    "web.telemetry-path": (
        "WEB_TELEMETRY_PATH",
        f"path of the Prometheus metrics (default {DEFAULT_TELEMETRY_PATH})",
    ),
    "web.config.file": (
        "WEB_CONFIG_FILE",
        "exporter-toolkit web config (YAML): tls_server_config for HTTPS, basic_auth_users for credentials",
    ),
    "web.external-url": (
        "WEB_EXTERNAL_URL",
        "the status page's address as its readers reach it (http or https, e.g. https://lag.example.com/); the Zero "
        "Problem document names it where it says where to see every member",
    ),
    "collect.interval": (
        "COLLECT_INTERVAL",
        f"seconds between polls (default {DEFAULT_INTERVAL_S:g}; {DEMO_INTERVAL_S:g} with --demo)",
    ),
    "collect.timeout": (
        "COLLECT_TIMEOUT",
        f"deadline of one whole poll in seconds (default: half the interval, at most {MAX_DEFAULT_TIMEOUT_S:g})",
    ),
    "topology.tags": (
        "TOPOLOGY_TAGS",
        "replica-set member tag keys to group members by, in order, comma-separated (e.g. cloud,region; default: "
        f"the first of {', '.join(COMMON_LOCATION_TAGS)} that members carry)",
    ),
    "log.level": ("LOG_LEVEL", "debug, info, warn or error (default info)"),
    "log.format": ("LOG_FORMAT", "text or json (default text)"),
}


class ConfigError(Exception):
    """Invalid settings; the text lists every problem, one per line, with no credential in it."""


CREDENTIAL_KEYS = {"username", "password", "auth_source"}


@dataclass(frozen=True)
class Settings:
    uri: str = field(repr=False)
    infra_label: str
    listen_host: str
    listen_port: int
    interval_s: float
    timeout_s: float
    log_level: str
    log_format: str
    demo: bool
    warnings: tuple[str, ...] = ()
    demo_cluster: bool = False  # --demo.cluster: the demo is a sharded cluster
    secrets: Secrets = field(default=Secrets(), repr=False)
    web_config_file: str = ""  # read by webconfig.load_web_config in exporter.py; empty: plain HTTP, no auth
    telemetry_path: str = DEFAULT_TELEMETRY_PATH
    web_external_url: str = ""  # the status page's address for readers of the document; empty: not known
    # Sharded clusters: who logs in directly on the shards and on the config servers (None: the router URI's user).
    shard_credentials: Credentials | None = field(default=None, repr=False)
    shard_credentials_by_id: tuple[tuple[str, Credentials], ...] = field(default=(), repr=False)
    config_credentials: Credentials | None = field(default=None, repr=False)
    topology_tags: tuple[str, ...] = ()  # member tag keys to group by; empty: the first common key members carry

    def credentials_for(self, shard_id: str, *, config_servers: bool) -> Credentials | None:
        """The credentials for one set behind the routers; None means the router URI's."""
        if config_servers:
            return self.config_credentials
        return dict(self.shard_credentials_by_id).get(shard_id, self.shard_credentials)

    @property
    def redacted_uri(self) -> str:
        return redact_uri(self.uri)

    def redact(self, text: str) -> str:
        """`text` with the credentials this process holds redacted where they occur, for logs and answers."""
        return self.secrets.redact(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replicationlag",
        description="MongoDB replication lag in exact milliseconds: Zero Problem status document, "
        "Prometheus metrics, liveness and a status page, from one process.",
        epilog="Every flag can also be set by the environment variable named in its help. "
        "Flags win over the environment, and --mongodb.uri over the config file.",
    )
    for name, (env, text) in FLAGS.items():
        parser.add_argument(
            f"--{name}",
            dest=name,
            default=None,
            metavar=name.split(".")[-1].upper(),
            help=f"{text} [env {env}]",
        )
    parser.add_argument("--version", action="version", version=f"replicationlag {VERSION}")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="start the built-in simulated replica set and collect from it (any MongoDB URI or config file is ignored)",
    )
    parser.add_argument(
        "--demo.cluster",
        dest="demo.cluster",
        action="store_true",
        help="with --demo: a simulated sharded cluster (3 shards, the config servers, a mongos) instead of a replica "
        "set",
    )
    return parser


def load_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    """Parse, merge and validate. Raises ConfigError listing every problem; a bad flag exits 2."""
    env = os.environ if env is None else env
    args = vars(build_parser().parse_args(argv))
    raw = {name: args[name] if args[name] is not None else env.get(var) for name, (var, _) in FLAGS.items()}
    demo = bool(args["demo"])
    problems: list[str] = []
    warnings: list[str] = []
    if args["demo.cluster"] and not demo:
        problems.append("--demo.cluster: only with --demo (it says which simulated cluster the demo starts)")

    label = (raw["infra.label"] or DEFAULT_LABEL).strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", label):
        problems.append(f"--infra.label {label!r}: use letters, digits, '.', '_' or '-'")

    uri = raw["mongodb.uri"] or ""
    file_failed = False
    section: dict = {}
    password_env = env.get(PASSWORD_ENV) or None
    if demo:
        # A demo must never poll a real cluster: whatever names one (often an exported MONGODB_URI) is ignored.
        for name in ("mongodb.uri", "config.file", "mongodb.user", "mongodb.password-file"):
            if raw[name]:
                source = f"--{name}" if args[name] is not None else FLAGS[name][0]
                warnings.append(f"--demo: {source} is ignored; the demo polls its own simulated replica set")
        if password_env is not None:
            warnings.append(f"--demo: {PASSWORD_ENV} is ignored; the demo polls its own simulated replica set")
        uri = ""
    elif raw["config.file"]:
        before = len(problems)
        file_uri, section = _uri_from_file(raw["config.file"], label, problems, warnings)
        uri = uri or file_uri
        file_failed = len(problems) > before
    if not uri and not demo and not file_failed:  # a file that could not be read already said why there is none
        problems.append(
            f"no MongoDB URI for infra label {label!r}: set --mongodb.uri, MONGODB_URI or "
            f'[infra.{label}] uri = "..." in --config.file'
        )
    elif uri:
        shape = _uri_problems(uri)
        problems.extend(shape)
        if not demo and not shape:
            password = _password(raw["mongodb.password-file"] or "", password_env, problems, warnings)
            uri = with_login(uri, raw["mongodb.user"] or "", password, problems)
    login_passwords = [password_env] if password_env else []

    host, port = _listen_address(raw["web.listen-address"] or (DEMO_LISTEN if demo else DEFAULT_LISTEN), problems)
    telemetry_path = _telemetry_path(raw["web.telemetry-path"] or DEFAULT_TELEMETRY_PATH, problems)
    external_url = _external_url(raw["web.external-url"] or "", problems)
    interval_text, timeout_text = raw["collect.interval"] or "", raw["collect.timeout"] or ""
    default_interval = DEMO_INTERVAL_S if demo else DEFAULT_INTERVAL_S
    interval = _seconds("collect.interval", interval_text, default_interval, MIN_INTERVAL_S, problems)
    default_timeout = min(MAX_DEFAULT_TIMEOUT_S, (interval or DEFAULT_INTERVAL_S) / 2)
    timeout = _seconds("collect.timeout", timeout_text, default_timeout, MIN_TIMEOUT_S, problems)
    if interval is not None and timeout is not None:
        cycle_problem = _cycle_problem(interval, timeout, interval_text, timeout_text)
        if cycle_problem:
            problems.append(cycle_problem)
        elif timeout >= interval:
            # Workable (a poll still running when the next is due is skipped and reported), but rarely meant.
            warnings.append(
                f"--collect.timeout {timeout:g} s is not less than --collect.interval {interval:g} s: "
                "a slow poll will make the next one be skipped"
            )

    level = (raw["log.level"] or "info").lower()
    if level not in LOG_LEVELS:
        problems.append(f"--log.level {level!r}: use one of debug, info, warn, error")
    log_format = (raw["log.format"] or "text").lower()
    if log_format not in LOG_FORMATS:
        problems.append(f"--log.format {log_format!r}: use text or json")

    shards, shards_by_id, config_servers = _cluster_credentials(section, label, problems)
    topology_tags = _topology_tags(raw["topology.tags"], section.get("topology_tags"), label, problems)
    warnings += _unchecked_tables(uri, label, shards, shards_by_id, config_servers)
    passwords = [c.password for c in (shards, config_servers, *dict(shards_by_id).values()) if c is not None]
    secrets = Secrets.of(uris=[uri], passwords=[*passwords, *login_passwords])
    if problems:
        raise ConfigError("\n".join(secrets.redact(p) for p in problems))
    return Settings(
        uri=uri,
        infra_label=label,
        listen_host=host,
        listen_port=port,
        interval_s=interval or default_interval,
        timeout_s=timeout or default_timeout,
        log_level="warning" if level == "warn" else level,
        log_format=log_format,
        demo=demo,
        demo_cluster=bool(args["demo.cluster"]),
        web_config_file=raw["web.config.file"] or "",
        telemetry_path=telemetry_path,
        web_external_url=external_url,
        warnings=tuple(secrets.redact(w) for w in warnings),
        secrets=secrets,
        shard_credentials=shards,
        shard_credentials_by_id=shards_by_id,
        config_credentials=config_servers,
        topology_tags=topology_tags,
    )


def _read_small_file(
    where: str, path: str, limit: int, limit_text: str, problems: list[str]
) -> tuple[bytes, int] | None:
    """A regular file's bytes (at most `limit`) and its mode; None (and a problem starting with `where`) otherwise."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            problems.append(f"{where}: not a regular file")
            return None
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        problems.append(f"{where}: no such file")
        return None
    except OSError as error:
        problems.append(f"{where}: cannot read it ({error.strerror or type(error).__name__})")
        return None
    if len(data) > limit:
        problems.append(f"{where}: larger than {limit_text}; is it the right file?")
        return None
    return data, info.st_mode


MAX_EXTERNAL_URL_CHARS = 200  # it is written into every document, whose first lines must stay short


def _external_url(value: str, problems: list[str]) -> str:
    """--web.external-url: an http(s) address with a host, no credentials, nothing that could break a line."""
    value = value.strip()
    if not value:
        return ""
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018  # raises on a port that is no number
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or len(value) > MAX_EXTERNAL_URL_CHARS
        or any(c.isspace() or not c.isprintable() or c in '<>"`' for c in value)
    ):
        # An address with a user in it may carry a password: it is not repeated.
        shown = "(an address with a user or password)" if "@" in value else repr(value[:MAX_EXTERNAL_URL_CHARS])
        problems.append(
            f"--web.external-url {shown}: use an http:// or https:// address with a host "
            f"and no user or password, under {MAX_EXTERNAL_URL_CHARS} characters, e.g. https://lag.example.com/"
        )
        return ""
    return value


def _read_toml(path: str, problems: list[str]) -> tuple[dict, int] | None:
    """The document of a TOML file and its mode; None (and a problem in words) when it cannot be had."""
    read = _read_small_file(f"--config.file {path}", path, MAX_CONFIG_BYTES, "1 MiB", problems)
    if read is None:
        return None
    data, mode = read
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - data.rfind(b"\n", 0, error.start)
        problems.append(
            f"--config.file {path}: not UTF-8 (byte 0x{data[error.start]:02x} at line {line}, column {column}): "
            "save it as UTF-8"
        )
        return None
    try:
        # A byte-order mark (some editors write one) is still UTF-8: read past it.
        return tomllib.loads(text.removeprefix("\ufeff")), mode
    except tomllib.TOMLDecodeError as error:
        # The decoder's message names a line and column, never the file's content.
        problems.append(f"--config.file {path}: not valid TOML ({error})")
    except RecursionError:
        problems.append(f"--config.file {path}: not valid TOML (nested too deeply)")
    return None


def _uri_from_file(path: str, label: str, problems: list[str], warnings: list[str]) -> tuple[str, dict]:
    """The infra label's URI and its whole section (which may hold shard and config-server credentials)."""
    read = _read_toml(path, problems)
    if read is None:
        return "", {}
    document, mode = read
    clusters = document.get("infra")
    if not isinstance(clusters, dict) or not clusters:
        problems.append(f'--config.file {path}: no [infra.<label>] section (e.g. [infra.{label}] uri = "...")')
        return "", {}
    section = clusters.get(label)
    if not isinstance(section, dict):
        known = ", ".join(sorted(k for k, v in clusters.items() if isinstance(v, dict))) or "none"
        problems.append(f"--config.file {path}: unknown infra label {label!r} (labels in the file: {known})")
        return "", {}
    uri = section.get("uri")
    if not isinstance(uri, str) or not uri:
        problems.append(f'--config.file {path}: [infra.{label}] needs uri = "mongodb://..."')
        return "", {}
    holds_password = uri_passwords(uri) or any(isinstance(v, dict) for v in section.values())
    if holds_password and mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.append(f"--config.file {path} holds a password and is readable by others: chmod 600 it")
    return uri, section


def _topology_tags(flag: str | None, from_file: object, label: str, problems: list[str]) -> tuple[str, ...]:
    """The tag keys to group members by: --topology.tags / TOPOLOGY_TAGS (comma-separated) over the config file's
    `topology_tags = [...]`; empty means the first common key that members carry (words.location_keys)."""
    if flag is not None and flag.strip():
        where, keys = "--topology.tags", [k.strip() for k in flag.split(",")]
    elif from_file is not None:
        where = f"[infra.{label}] topology_tags"
        if not isinstance(from_file, list) or not all(isinstance(k, str) for k in from_file):
            problems.append(f'{where}: a list of tag keys, e.g. topology_tags = ["cloud", "region"]')
            return ()
        keys = [k.strip() for k in from_file]
    else:
        return ()
    bad = [k for k in keys if not _TAG_KEY.fullmatch(k)]
    if bad or not keys:
        problems.append(f"{where}: tag keys are 1-64 letters, digits, '.', '_' or '-' (not {bad[0] if bad else ''!r})")
    elif len(keys) > MAX_TOPOLOGY_TAGS or len(set(keys)) != len(keys):
        problems.append(f"{where}: at most {MAX_TOPOLOGY_TAGS} different tag keys")
    else:
        return tuple(keys)
    return ()


def _cluster_credentials(
    section: dict, label: str, problems: list[str]
) -> tuple[Credentials | None, tuple[tuple[str, Credentials], ...], Credentials | None]:
    """[infra.<label>.shards] (with optional [infra.<label>.shards.<shardId>]) and [infra.<label>.config_servers]."""
    unknown = sorted(set(section) - {"uri", "shards", "config_servers", "topology_tags"})
    if unknown:
        problems.append(
            f"[infra.{label}]: unknown key {unknown[0]!r} (known: uri, shards, config_servers, topology_tags)"
        )
    shards_section = section.get("shards", {})
    if not isinstance(shards_section, dict):
        problems.append(f"[infra.{label}] shards must be a table: [infra.{label}.shards]")
        shards_section = {}
    own = {k: v for k, v in shards_section.items() if not isinstance(v, dict)}
    shards = _credentials(own, f"[infra.{label}.shards]", problems) if own else None
    by_id = tuple(
        (shard_id, found)
        for shard_id, table in sorted(shards_section.items())
        if isinstance(table, dict)
        and (found := _credentials(table, f"[infra.{label}.shards.{shard_id}]", problems)) is not None
    )
    config_section = section.get("config_servers")
    config_servers = None
    if config_section is not None:
        if isinstance(config_section, dict):
            config_servers = _credentials(config_section, f"[infra.{label}.config_servers]", problems)
        else:
            problems.append(f"[infra.{label}] config_servers must be a table: [infra.{label}.config_servers]")
    return shards, by_id, config_servers


def _unchecked_tables(
    uri: str,
    label: str,
    shards: Credentials | None,
    shards_by_id: tuple[tuple[str, Credentials], ...],
    config_servers: Credentials | None,
) -> list[str]:
    """What start can say of the credentials tables: none is used when the URI names one replica set; a per-shard
    table is used only if its name is a shard id of the routers' map, which only the first poll reads (the cluster
    source warns then about a table that names no shard)."""
    per_shard = [f"[infra.{label}.shards.{shard_id}]" for shard_id, _ in shards_by_id]
    named_set = re.search(r"[?&;]replicaSet=([^&;#]*)", uri, flags=re.IGNORECASE)
    if named_set:
        tables = [f"[infra.{label}.shards]"] if shards is not None else []
        tables += per_shard + ([f"[infra.{label}.config_servers]"] if config_servers is not None else [])
        if tables:
            return [
                f"{', '.join(tables)}: not used: the URI names one replica set (replicaSet={named_set.group(1)}), "
                "not mongos routers"
            ]
        return []
    if per_shard:
        return [
            f"{', '.join(per_shard)}: each table's name must be a shard id of the routers' shard map; checked when "
            "the map is read, and a table that names no shard is not used"
        ]
    return []


def _credentials(table: dict, where: str, problems: list[str]) -> Credentials | None:
    unknown = sorted(set(table) - CREDENTIAL_KEYS)
    if unknown:
        problems.append(f"{where}: unknown key {unknown[0]!r} (known: username, password, auth_source)")
        return None
    username, password, auth_source = table.get("username"), table.get("password"), table.get("auth_source")
    if not isinstance(username, str) or not username or not isinstance(password, str):
        problems.append(f'{where}: needs username = "..." and password = "..."')
        return None
    if not password:
        # The driver refuses a user without a password at every poll ("the MongoDB URI was rejected"): say it now.
        problems.append(f"{where}: password is empty: give the password of user {username!r}")
        return None
    if auth_source is not None and (not isinstance(auth_source, str) or not auth_source):
        problems.append(f'{where}: auth_source must be a database name, e.g. auth_source = "admin"')
        return None
    return Credentials(username, password, auth_source)


def _uri_problems(uri: str) -> list[str]:
    """What is wrong with the URI's shape, in words that quote no piece of a password however malformed it is: the
    URI only redacted, and never a host's port, which is a password's tail when the '@host' part is missing."""
    if not uri.startswith(URI_SCHEMES):
        scheme = URI_SCHEME.match(uri)
        given = f" (not {scheme.group(0)!r})" if scheme else ""
        return [f"malformed MongoDB URI: it must start with mongodb:// or mongodb+srv://{given}"]
    shown = redact_uri(uri)
    rest = uri.split("://", 1)[1]
    authority = re.split(r"[/?]", rest, maxsplit=1)[0]
    if "@" in rest[len(authority) :]:
        return [
            f"malformed MongoDB URI {shown!r}: an '@' after the host list; percent-encode '/', '?', '#', '@' and "
            "':' in the user name and password (%2F %3F %23 %40 %3A), and an '@' in an option as %40"
        ]
    userinfo, at, host_list = authority.rpartition("@")
    if at and ("@" in userinfo or userinfo.count(":") > 1 or re.search(r"%(?![0-9A-Fa-f]{2})", userinfo)):
        return [
            f"malformed MongoDB URI {shown!r}: percent-encode '@', ':' and '%' in the user name and password "
            "(%40 %3A %25)"
        ]
    for host in host_list.split(","):
        name, colon, port = host.rpartition(":") if ":" in host.rpartition("]")[2] else (host, "", "")
        if not name:
            return ["malformed MongoDB URI: an empty host in the host list"]
        if colon and not (port.isdigit() and 0 < int(port) < 65536):
            return [f"malformed MongoDB URI: bad host {name!r}: its port must be a number from 1 to 65535"]
    return []


def _password(path: str, from_env: str | None, problems: list[str], warnings: list[str]) -> str | None:
    """The password of --mongodb.password-file or MONGODB_PASSWORD; None when neither is given. The file's text
    loses its trailing line ending (`echo` and editors add one); nothing of it is ever quoted in a problem."""
    if not path:
        return from_env
    if from_env is not None:
        problems.append(f"--mongodb.password-file and {PASSWORD_ENV} are both set: give the password one way")
        return None
    where = f"--mongodb.password-file {path}"
    read = _read_small_file(where, path, MAX_PASSWORD_FILE_BYTES, "64 KiB", problems)
    if read is None:
        return None
    data, mode = read
    try:
        password = data.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        problems.append(f"{where}: not UTF-8 text")
        return None
    if not password:
        problems.append(f"{where}: empty; it must hold the password")
        return None
    if mode & stat.S_IROTH:  # group-readable is how a Kubernetes Secret is mounted with fsGroup: no warning
        warnings.append(f"{where} is readable by others: chmod o-r it")
    return password


def _telemetry_path(path: str, problems: list[str]) -> str:
    """--web.telemetry-path: an absolute URL path of plain characters that no other route uses."""
    if not re.fullmatch(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*", path):
        problems.append(
            f"--web.telemetry-path {path!r}: must start with '/' and hold only URL path characters (no spaces, "
            "'?', '#', '<' or '>')"
        )
    elif path in OTHER_ROUTES:
        problems.append(f"--web.telemetry-path {path!r}: that path is taken by another endpoint; use e.g. /metrics")
    return path


def _listen_address(value: str, problems: list[str]) -> tuple[str, int]:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]*):(\d{1,5})", value.strip())
    if not match or int(match.group(2)) > 65535:
        problems.append(f"--web.listen-address {value!r}: use host:port, e.g. :9218 or 127.0.0.1:9218")
        return "", 0
    return match.group(1).strip("[]"), int(match.group(2))  # an empty host: every interface, IPv4 and IPv6


def _seconds(name: str, value: str, default: float, minimum: float, problems: list[str]) -> float | None:
    """Seconds from a plain number ("60", "0.5") or a Go-style duration ("90s", "1m30s", "500ms"); the default when
    not set; None (and a problem naming the setting) when it is not a number of at least `minimum` seconds."""
    if not value:
        return default
    text = str(value).strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    try:
        if parts and "".join(number + unit for number, unit in parts) == text:
            seconds = sum(float(number) * DURATION_UNITS_S[unit] for number, unit in parts)
        else:
            seconds = float(text)
    except ValueError:
        problems.append(f"--{name} {value!r}: not a number of seconds (or a duration such as 90s, 1m, 500ms)")
        return None
    if not (seconds > 0 and math.isfinite(seconds)):
        problems.append(f"--{name} {value!r}: must be a positive number of seconds")
        return None
    if seconds < minimum:
        problems.append(f"--{name} {value!r}: must be at least {minimum:g} s")
        return None
    return seconds


def _cycle_problem(interval: float, timeout: float, interval_text: str, timeout_text: str) -> str | None:
    """Why this interval and deadline would let a healthy set's data go stale, naming the settings given; None if
    they cannot. Data ages by one interval, then by the next poll's duration (at most its deadline) before it is
    renewed; the limit is the user's rule for /liveness and RED, so it does not bend to the interval."""
    budget = FRESHNESS_LIMIT_S - CYCLE_SLACK_S
    if interval + timeout <= budget:
        return None
    if interval_text and timeout_text:
        setting, fix = (
            f"--collect.interval {interval_text!r} with --collect.timeout {timeout_text!r}",
            f"keep interval + deadline within {budget:g} s",
        )
    elif timeout_text:
        setting, fix = f"--collect.timeout {timeout_text!r}", f"use at most {budget - interval:g} s"
    else:
        setting, fix = f"--collect.interval {interval_text!r}", f"use at most {budget - timeout:g} s"
    stale = f"data is stale from {FRESHNESS_LIMIT_S} s (RED in the document, 503 on /liveness)"
    if max(interval, timeout) >= FRESHNESS_LIMIT_S:
        return f"{setting}: too long, {stale}; {fix}"
    return (
        f"{setting}: a poll every {interval:g} s with a {timeout:g} s deadline leaves data up to "
        f"{interval + timeout:g} s old; {stale}, so a healthy set could turn RED before every poll; {fix}"
    )
