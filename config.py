"""Settings from flags, environment and the config file, validated once into a frozen value; URI redaction.

Every problem found is listed in one `ConfigError`, so a user fixes them all at once. The password of a
MongoDB URI never leaves this module in clear: `Settings.redacted_uri` and `Settings.scrub()` are what the
rest of the program prints. Standard library only; imports `kinds` (the freshness limit the poll cycle must keep).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus, unquote

from kinds import FRESHNESS_LIMIT_S

DEFAULT_LABEL = "clusterKeeper"
DEFAULT_LISTEN = ":9218"
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
REDACTED = "***"
DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# Each flag, its environment variable and its help. The env names follow the flag (dots become underscores).
FLAGS = {
    "mongodb.uri": (
        "MONGODB_URI",
        "MongoDB URI of the cluster for the infra label (may carry a password; "
        "prefer --config.file or the environment so it stays off the command line)",
    ),
    "infra.label": ("INFRA_LABEL", f"infra label of the cluster to poll (default {DEFAULT_LABEL})"),
    "config.file": ("CONFIG_FILE", 'TOML file with [infra.<label>] sections holding uri = "mongodb://..."'),
    "web.listen-address": (
        "WEB_LISTEN_ADDRESS",
        f"host:port to serve HTTP on (default {DEFAULT_LISTEN}; an empty host means all interfaces)",
    ),
    "web.config.file": (
        "WEB_CONFIG_FILE",
        "exporter-toolkit web config (YAML): tls_server_config for HTTPS, basic_auth_users for credentials",
    ),
    "collect.interval": (
        "COLLECT_INTERVAL",
        f"seconds between polls (default {DEFAULT_INTERVAL_S:g}; {DEMO_INTERVAL_S:g} with --demo)",
    ),
    "collect.timeout": (
        "COLLECT_TIMEOUT",
        f"deadline of one whole poll in seconds (default: half the interval, at most {MAX_DEFAULT_TIMEOUT_S:g})",
    ),
    "log.level": ("LOG_LEVEL", "debug, info, warn or error (default info)"),
    "log.format": ("LOG_FORMAT", "text or json (default text)"),
}


class ConfigError(Exception):
    """Invalid settings; the text lists every problem, one per line, with no credential in it."""


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
    secrets: tuple[str, ...] = field(default=(), repr=False)
    web_config_file: str = ""  # read by webconfig.load_web_config in exporter.py; empty: plain HTTP, no auth

    @property
    def redacted_uri(self) -> str:
        return redact_uri(self.uri)

    def scrub(self, text: str) -> str:
        """`text` with every form of the URI's password replaced, for logs and answers."""
        return scrub(text, self.secrets)


def redact_uri(uri: str) -> str:
    """The URI with its password (and any `password=`-like option) replaced by ***."""
    redacted = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^@/]*)@", _redact_userinfo, uri)
    return re.sub(r"(?i)([?&](?:password|authmechanismproperties)=)[^&]*", rf"\1{REDACTED}", redacted)


def _redact_userinfo(match: re.Match[str]) -> str:
    user, _, _ = match.group(2).partition(":")
    return f"{match.group(1)}{user}:{REDACTED}@" if ":" in match.group(2) else match.group(0)


def uri_secrets(uri: str) -> tuple[str, ...]:
    """Every spelling of the URI's password that could show up in a message: raw, decoded and re-encoded."""
    found: set[str] = set()
    userinfo = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://([^@/]*)@", uri)
    if userinfo and ":" in userinfo.group(1):
        found.add(userinfo.group(1).split(":", 1)[1])
    found.update(re.findall(r"(?i)[?&]password=([^&]*)", uri))
    spellings: set[str] = set()
    for secret in found:
        plain = unquote(secret)
        spellings.update({secret, plain, quote(plain, safe=""), quote_plus(plain)})
    # Longest first, so a password that contains another spelling is replaced whole.
    return tuple(sorted((s for s in spellings if s), key=len, reverse=True))


def scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exporter.py",
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
    parser.add_argument(
        "--demo", action="store_true", help="start the built-in simulated replica set and collect from it"
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

    label = (raw["infra.label"] or DEFAULT_LABEL).strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", label):
        problems.append(f"--infra.label {label!r}: use letters, digits, '.', '_' or '-'")

    uri = raw["mongodb.uri"] or ""
    if raw["config.file"]:
        before = len(problems)
        file_uri = _uri_from_file(raw["config.file"], label, problems, warnings)
        uri = uri or file_uri
        file_failed = len(problems) > before
    else:
        file_failed = False
    if not uri and not demo and not file_failed:  # a file that could not be read already said why there is none
        problems.append(
            f"no MongoDB URI for infra label {label!r}: set --mongodb.uri, MONGODB_URI or "
            f'[infra.{label}] uri = "..." in --config.file'
        )
    elif uri:
        problems.extend(_uri_problems(uri))

    host, port = _listen_address(raw["web.listen-address"] or DEFAULT_LISTEN, problems)
    interval_text, timeout_text = raw["collect.interval"] or "", raw["collect.timeout"] or ""
    default_interval = DEMO_INTERVAL_S if demo and not uri else DEFAULT_INTERVAL_S
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

    secrets = uri_secrets(uri) if uri else ()
    if problems:
        raise ConfigError("\n".join(scrub(p, secrets) for p in problems))
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
        web_config_file=raw["web.config.file"] or "",
        warnings=tuple(scrub(w, secrets) for w in warnings),
        secrets=secrets,
    )


def _read_toml(path: str, problems: list[str]) -> tuple[dict, int] | None:
    """The document of a TOML file and its mode; None (and a problem in words) when it cannot be had."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            problems.append(f"--config.file {path}: not a regular file")
            return None
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        problems.append(f"--config.file {path}: no such file")
        return None
    except OSError as error:
        problems.append(f"--config.file {path}: cannot read it ({error.strerror or type(error).__name__})")
        return None
    if len(data) > MAX_CONFIG_BYTES:
        problems.append(f"--config.file {path}: larger than 1 MiB; is it the right file?")
        return None
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
        return tomllib.loads(text.removeprefix("\ufeff")), info.st_mode
    except tomllib.TOMLDecodeError as error:
        # The decoder's message names a line and column, never the file's content.
        problems.append(f"--config.file {path}: not valid TOML ({error})")
    except RecursionError:
        problems.append(f"--config.file {path}: not valid TOML (nested too deeply)")
    return None


def _uri_from_file(path: str, label: str, problems: list[str], warnings: list[str]) -> str:
    read = _read_toml(path, problems)
    if read is None:
        return ""
    document, mode = read
    clusters = document.get("infra")
    if not isinstance(clusters, dict) or not clusters:
        problems.append(f'--config.file {path}: no [infra.<label>] section (e.g. [infra.{label}] uri = "...")')
        return ""
    section = clusters.get(label)
    if not isinstance(section, dict):
        known = ", ".join(sorted(k for k, v in clusters.items() if isinstance(v, dict))) or "none"
        problems.append(f"--config.file {path}: unknown infra label {label!r} (labels in the file: {known})")
        return ""
    uri = section.get("uri")
    if not isinstance(uri, str) or not uri:
        problems.append(f'--config.file {path}: [infra.{label}] needs uri = "mongodb://..."')
        return ""
    if uri_secrets(uri) and mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.append(f"--config.file {path} holds a password and is readable by others: chmod 600 it")
    return uri


def _uri_problems(uri: str) -> list[str]:
    shown = redact_uri(uri)
    if not uri.startswith(URI_SCHEMES):
        return [f"malformed MongoDB URI {shown!r}: it must start with mongodb:// or mongodb+srv://"]
    # The driver requires ':', '/' and '@' in credentials to be percent-encoded, so these splits are safe.
    netloc = re.split(r"[/?]", uri.split("://", 1)[1], maxsplit=1)[0]
    hosts = netloc.rpartition("@")[2].split(",")
    for host in hosts:
        name, colon, port = host.rpartition(":") if ":" in host.rpartition("]")[2] else (host, "", "")
        if not name or (colon and not (port.isdigit() and 0 < int(port) < 65536)):
            return [f"malformed MongoDB URI {shown!r}: bad host {host!r}"]
    return []


def _listen_address(value: str, problems: list[str]) -> tuple[str, int]:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]*):(\d{1,5})", value.strip())
    if not match or int(match.group(2)) > 65535:
        problems.append(f"--web.listen-address {value!r}: use host:port, e.g. :9218 or 127.0.0.1:9218")
        return "", 0
    host = match.group(1).strip("[]") or "0.0.0.0"
    return host, int(match.group(2))


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
    return (
        f"{setting}: a poll every {interval:g} s with a {timeout:g} s deadline leaves data up to "
        f"{interval + timeout:g} s old, but data older than {FRESHNESS_LIMIT_S} s is stale (RED, /liveness 503), "
        f"so a healthy set would turn RED before every poll; {fix}"
    )
