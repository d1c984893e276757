"""Settings from flags, environment and the config file, validated once into a frozen value; URI redaction.

Every problem found is listed in one `ConfigError`, so a user fixes them all at once. The password of a
MongoDB URI never leaves this module in clear: `Settings.redacted_uri` and `Settings.scrub()` are what the
rest of the program prints. Standard library only; imports nothing of ours.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus, unquote

DEFAULT_LABEL = "clusterKeeper"
DEFAULT_LISTEN = ":9218"
DEFAULT_INTERVAL_S = 60.0
DEMO_INTERVAL_S = 5.0  # the demo set's lag cycles in about 3 minutes; a minute between polls would hide it
MAX_DEFAULT_TIMEOUT_S = 10.0
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
        f"host:port to serve HTTP on (default {DEFAULT_LISTEN}; an empty host means every interface, IPv4 and IPv6)",
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
        file_uri = _uri_from_file(raw["config.file"], label, problems, warnings)
        uri = uri or file_uri
    if not uri and not demo:
        problems.append(
            f"no MongoDB URI for infra label {label!r}: set --mongodb.uri, MONGODB_URI or "
            f'[infra.{label}] uri = "..." in --config.file'
        )
    elif uri:
        problems.extend(_uri_problems(uri))

    host, port = _listen_address(raw["web.listen-address"] or DEFAULT_LISTEN, problems)
    default_interval = DEMO_INTERVAL_S if demo and not uri else DEFAULT_INTERVAL_S
    interval = _seconds("collect.interval", raw["collect.interval"], default_interval, problems)
    default_timeout = min(MAX_DEFAULT_TIMEOUT_S, interval / 2) if interval > 0 else MAX_DEFAULT_TIMEOUT_S
    timeout = _seconds("collect.timeout", raw["collect.timeout"], default_timeout, problems)
    if interval > 0 and timeout > 0 and timeout >= interval:
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
        interval_s=interval,
        timeout_s=timeout,
        log_level="warning" if level == "warn" else level,
        log_format=log_format,
        demo=demo,
        web_config_file=raw["web.config.file"] or "",
        warnings=tuple(scrub(w, secrets) for w in warnings),
        secrets=secrets,
    )


def _uri_from_file(path: str, label: str, problems: list[str], warnings: list[str]) -> str:
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        problems.append(f"--config.file {path}: no such file")
        return ""
    except OSError as error:
        problems.append(f"--config.file {path}: cannot read it ({error.strerror})")
        return ""
    except tomllib.TOMLDecodeError as error:
        # The decoder's message names a line and column, never the file's content.
        problems.append(f"--config.file {path}: not valid TOML ({error})")
        return ""
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
    return match.group(1).strip("[]"), int(match.group(2))  # an empty host: every interface, IPv4 and IPv6


def _seconds(name: str, value: str | None, default: float, problems: list[str]) -> float:
    """Seconds from a plain number ("60", "0.5") or a Go-style duration ("90s", "1m30s", "500ms")."""
    if value is None or value == "":
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
        return default
    if not seconds > 0 or seconds == float("inf"):
        problems.append(f"--{name} {value!r}: must be a positive number of seconds")
    return seconds
