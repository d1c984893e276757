"""Who may read: the `--web.config.file` of Prometheus exporters (exporter-toolkit), validated at start and on reload.

The file is YAML in exporter-toolkit's format, read as strictly as exporter-toolkit reads it (unknown or
duplicate keys are errors), plus one key of ours:

    tls_server_config:                    # present: the port speaks HTTPS only
      cert_file: server.crt               # relative paths are relative to the config file, as in exporter-toolkit
      key_file: server.key                # PEM, unencrypted
      client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven, NoClientCert (default)
      client_ca_file: clients-ca.crt      # needed by the two Verify... types, refused without one
      min_version: TLS12                  # TLS10..TLS13; max_version likewise
    basic_auth_users:                     # present: every request needs one of these users (HTTP Basic)
      prometheus: $2b$10$...              # bcrypt hashes only
    basic_auth_excluded_paths: [/-/healthy, /-/ready]  # ours: these answer without credentials (probes)

`basic_auth_excluded_paths` is the name exporter-toolkit's maintainers proposed for this (prometheus/exporter-
toolkit#70 and #106, not merged): released exporter-toolkit versions refuse it, so a file that uses it no
longer passes `promtool check web-config`. Only the probes may be excluded (`/-/healthy`, `/-/ready`, which say
nothing of the cluster, and `/liveness`, which says whether it is collected): every other path shows the cluster's
data. Settings exporter-toolkit has but Python's TLS cannot honour the same way (RequestClientCert,
RequireAnyClientCert, cipher_suites, curve_preferences, client_allowed_sans, inline cert/key, rate_limit,
http_server_config.headers) stop the exporter with an error rather than being silently ignored.

The file and the files it names must be regular files (a FIFO, a device or a directory is refused without being
read: opening a FIFO would wait for a writer for ever), the config at most 1 MiB. An empty or comment-only file
means plain HTTP without credentials at start, as in exporter-toolkit, but is refused on reload
(`empty_means_open=False`); a top-level key without a value (a file cut off) is refused always. `removals(old, new)`
names what a reload takes away (TLS, users, ...) for its warning.

`load_web_config(path)` returns a frozen `WebConfig` (with its server-side `ssl.SSLContext` already loaded, so an
unreadable certificate fails at start) or raises `WebConfigError` whose text is one line listing every problem.
Who may read each request, with these settings, is `web.access`'s job.
The only importer of `yaml`; standard library otherwise, nothing of ours.
"""

from __future__ import annotations

import os
import re
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LIVENESS_PATH = "/liveness"
# The probes: no member, lag or host in their answers (web.app's routes of the same names).
EXCLUDABLE_PATHS = frozenset({LIVENESS_PATH, "/-/healthy", "/-/ready"})

# client_auth_type -> what Python's ssl can do. Go's RequestClientCert/RequireAnyClientCert accept a certificate
# without verifying it; OpenSSL via Python always verifies a certificate it asks for, so those are refused.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNSUPPORTED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
MAX_CONFIG_BYTES = 1024 * 1024  # a web config is a few lines; more is not one
_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users", "basic_auth_excluded_paths"}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
}
_NOT_SUPPORTED = {  # exporter-toolkit keys we cannot honour; refused by name so the error says why
    "rate_limit": "rate limiting is not supported",
    "tls_server_config.cert": "inline certificates are not supported: use cert_file",
    "tls_server_config.key": "inline keys are not supported: use key_file",
    "tls_server_config.cipher_suites": "choosing cipher suites is not supported (Python's defaults apply)",
    "tls_server_config.curve_preferences": "choosing curves is not supported (Python's defaults apply)",
    "tls_server_config.client_allowed_sans": "client_allowed_sans is not supported",
    "http_server_config.headers": "extra response headers are not supported",
}
# Modular crypt format of bcrypt: $2a$/$2b$/$2y$, a two-digit cost 04..31, 22 characters of salt, 31 of hash.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


class WebConfigError(Exception):
    """An unusable web config; the text is one line naming the file and every problem, never a password hash."""


@dataclass(frozen=True)
class WebConfig:
    """What `--web.config.file` asks for. The empty value (no file) means plain HTTP, no credentials."""

    tls: ssl.SSLContext | None = field(default=None, compare=False)
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    excluded_paths: frozenset[str] = frozenset()
    client_auth_type: str = "NoClientCert"

    def summary(self) -> str:
        """One phrase for the log: what the port speaks and who may read, never a user's hash."""
        if self.tls is None:
            speaks = "HTTP"
        elif self.client_auth_type == "NoClientCert":
            speaks = "HTTPS"
        else:
            speaks = f"HTTPS ({self.client_auth_type})"
        users = f"{len(self.users)} user{'s' if len(self.users) != 1 else ''}" if self.users else "no credentials"
        opened = f", {', '.join(sorted(self.excluded_paths))} open" if self.excluded_paths else ""
        return f"{speaks}, {users}{opened}"


def load_web_config(path: str | os.PathLike[str] | None, *, empty_means_open: bool = True) -> WebConfig:
    """Read and validate the file (None or "": no file, the empty config). Raises WebConfigError.

    An empty file (or one holding only comments) means plain HTTP without credentials, as in exporter-toolkit, but
    only where `empty_means_open`: a reload passes False, because an empty file is what an editor or a
    config-management run leaves for a moment, and taking it would drop users and TLS. A top-level key without a
    value (`basic_auth_users:` and nothing after it: a file cut off while being written) is refused everywhere.
    """
    if not path:
        return WebConfig()
    where = Path(path)
    problems: list[str] = []
    document = _read_yaml(where, problems)
    if document is None:
        if not problems and not empty_means_open:
            problems.append(
                "is empty or holds only comments (a file being written?): not taken on reload, which never drops "
                "users or TLS for an empty file; to serve without credentials on purpose, write basic_auth_users: {}"
            )
        return WebConfig() if not problems else _fail(where, problems)
    for key, value in document.items():
        if key not in _TOP_KEYS:
            problems.append(_unknown(str(key), _TOP_KEYS))
        elif value is None:
            problems.append(f"{key} has no value (a file cut off while being written?)")
    if problems:
        _fail(where, problems)

    tls = _tls_context(_section(document, "tls_server_config", problems), where.parent, problems)
    _http_server_config(_section(document, "http_server_config", problems), problems)
    users = _users(document.get("basic_auth_users"), problems)
    excluded = _excluded_paths(document.get("basic_auth_excluded_paths"), problems)
    if excluded and not users and not problems:
        problems.append("basic_auth_excluded_paths is set but basic_auth_users is empty: nothing to exclude from")
    if problems:
        _fail(where, problems)
    section = document.get("tls_server_config") or {}
    return WebConfig(
        tls=tls,
        users=users,
        excluded_paths=excluded,
        client_auth_type=str(section.get("client_auth_type") or "NoClientCert"),
    )


def removals(old: WebConfig, new: WebConfig) -> list[str]:
    """What `new` takes away from `old` that protected the port, one phrase each (for a reload's warning): TLS,
    client-certificate verification, users, paths that needed credentials. Empty when nothing was removed."""
    removed = []
    if old.tls is not None and new.tls is None:
        removed.append("TLS: new connections are plain HTTP")
    elif old.tls is not None and _CLIENT_AUTH[new.client_auth_type] < _CLIENT_AUTH[old.client_auth_type]:
        removed.append(f"client certificate checks: {old.client_auth_type} is now {new.client_auth_type}")
    gone = sorted(set(old.users) - set(new.users))
    if gone and not new.users:
        removed.append(f"every user ({', '.join(gone)}): every endpoint is served without credentials")
    elif gone:
        removed.append(f"user{'s' if len(gone) > 1 else ''} {', '.join(gone)}")
    if new.users:
        opened = sorted(new.excluded_paths - old.excluded_paths)
        if opened:
            removed.append(f"credentials for {', '.join(opened)}: now answered without them")
    return removed


def _fail(where: Path, problems: list[str]) -> WebConfig:
    raise WebConfigError(f"--web.config.file {where}: " + "; ".join(problems))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice, as exporter-toolkit's strict YAML decoding does."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _read_yaml(where: Path, problems: list[str]) -> dict | None:
    try:
        text = read_regular_file(where, MAX_CONFIG_BYTES).decode("utf-8")
    except NotARegularFile as error:
        problems.append(str(error))
        return None
    except FileNotFoundError:
        problems.append("no such file")
        return None
    except OSError as error:
        problems.append(f"cannot read it ({error.strerror or error})")
        return None
    except UnicodeDecodeError:
        problems.append("not UTF-8 text")
        return None
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: builds plain values only
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(error, "problem", None) or "unreadable"
        problems.append(f"not valid YAML{at} ({reason})")
        return None
    if document is None:
        return None  # an empty file: exporter-toolkit serves plain HTTP without credentials too
    if not isinstance(document, dict):
        problems.append("must be a YAML mapping (tls_server_config:, basic_auth_users:, ...)")
        return None
    return document


def _section(document: dict, name: str, problems: list[str]) -> dict | None:
    section = document.get(name)
    if section is None:
        return None
    if not isinstance(section, dict):
        problems.append(f"{name} must be a mapping")
        return None
    return section


def _unknown(key: str, known: set[str]) -> str:
    if key in _NOT_SUPPORTED:
        return f"{key}: {_NOT_SUPPORTED[key]}"
    return f"unknown key {key!r} (known: {', '.join(sorted(known))})"


def _tls_context(section: dict | None, base: Path, problems: list[str]) -> ssl.SSLContext | None:
    if section is None:
        return None
    before = len(problems)
    for key in section:
        if key not in _TLS_KEYS:
            problems.append(_unknown(f"tls_server_config.{key}", {f"tls_server_config.{k}" for k in _TLS_KEYS}))
    cert = _file(section, "cert_file", base, problems, required=True)
    key = _file(section, "key_file", base, problems, required=True)
    ca = _file(section, "client_ca_file", base, problems, required=False)

    auth_type = str(section.get("client_auth_type") or "NoClientCert")
    if auth_type in _UNSUPPORTED_CLIENT_AUTH:
        problems.append(
            f"tls_server_config.client_auth_type {auth_type}: not supported (a client certificate is always "
            "verified here); use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
        )
    elif auth_type not in _CLIENT_AUTH:
        problems.append(
            f"tls_server_config.client_auth_type {auth_type!r}: use NoClientCert, VerifyClientCertIfGiven or "
            "RequireAndVerifyClientCert"
        )
    elif auth_type == "NoClientCert" and "client_ca_file" in section:
        problems.append("tls_server_config.client_ca_file is set but client_auth_type is NoClientCert")
    elif auth_type != "NoClientCert" and "client_ca_file" not in section:
        problems.append(f"tls_server_config.client_auth_type {auth_type} needs client_ca_file")

    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        value = str(section.get(name) or default)
        if value not in _TLS_VERSIONS:
            problems.append(f"tls_server_config.{name} {value!r}: use TLS10, TLS11, TLS12 or TLS13")
        versions[name] = _TLS_VERSIONS.get(value)
    if None not in versions.values() and versions["min_version"] > versions["max_version"]:
        problems.append("tls_server_config.min_version is above max_version")
    prefer_server = section.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer_server, bool):
        problems.append("tls_server_config.prefer_server_cipher_suites must be true or false")

    if len(problems) > before:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = versions["min_version"]
    context.maximum_version = versions["max_version"]
    context.options |= ssl.OP_NO_RENEGOTIATION  # TLS 1.2 renegotiation would need writes in the middle of reads
    if prefer_server:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    try:
        # A passphrase-protected key must fail here, not prompt on a terminal nobody watches.
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except ssl.SSLError as error:
        problems.append(
            f"tls_server_config: cert_file {cert} and key_file {key} are not a PEM certificate and its matching "
            f"unencrypted private key ({_ssl_reason(error)})"
        )
    except OSError as error:
        problems.append(f"tls_server_config: cannot load cert_file/key_file ({error.strerror or error})")
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as error:
            problems.append(
                f"tls_server_config.client_ca_file {ca}: no PEM CA certificate in it ({_ssl_reason(error)})"
            )
    context.verify_mode = _CLIENT_AUTH.get(auth_type, ssl.CERT_REQUIRED)
    return context if len(problems) == before else None


def _no_passphrase() -> bytes:
    return b""


def _ssl_reason(error: Exception) -> str:
    return getattr(error, "reason", None) or getattr(error, "strerror", None) or type(error).__name__


def _file(section: dict, name: str, base: Path, problems: list[str], *, required: bool) -> str | None:
    value = section.get(name)
    if value is None or value == "":
        if required:
            problems.append(f"tls_server_config.{name} is missing")
        return None
    if not isinstance(value, str):
        problems.append(f"tls_server_config.{name} must be a file name")
        return None
    path = base / value  # an absolute value replaces base
    try:
        read_regular_file(path, 1, whole=False)  # readable, and no FIFO that ssl would then block on
    except NotARegularFile as error:
        problems.append(f"tls_server_config.{name} {path}: {error}")
        return None
    except FileNotFoundError:
        problems.append(f"tls_server_config.{name} {path}: no such file")
        return None
    except OSError as error:
        problems.append(f"tls_server_config.{name} {path}: cannot read it ({error.strerror})")
        return None
    return str(path)


class NotARegularFile(OSError):
    """A path that names a FIFO, a device, a socket or a directory: reading it could block for ever or never end."""


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def read_regular_file(path: Path, limit: int, *, whole: bool = True) -> bytes:
    """The regular file at `path`, or its first `limit` bytes if not `whole`. Opened without blocking (opening a
    FIFO for reading would wait for a writer) and checked on the descriptor opened, so what is read is what was
    checked. Raises NotARegularFile for anything else, OSError when it cannot be read, or (`whole`) when it holds
    more than `limit` bytes."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(f"is {_KINDS.get(stat.S_IFMT(mode), 'a special file')}, not a regular file")
        os.set_blocking(descriptor, True)
        chunks, size = [], 0
        wanted = limit + 1 if whole else limit
        while size < wanted and (chunk := os.read(descriptor, min(65_536, wanted - size))):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(descriptor)
    data = b"".join(chunks)
    if len(data) > limit:
        raise OSError(f"larger than {limit} bytes")
    return data


def _http_server_config(section: dict | None, problems: list[str]) -> None:
    if section is None:
        return
    for key, value in section.items():
        if key == "http2":  # exporter-toolkit's switch for HTTP/2; we speak HTTP/1.1 whatever it says
            if not isinstance(value, bool):
                problems.append("http_server_config.http2 must be true or false")
        else:
            problems.append(_unknown(f"http_server_config.{key}", {"http_server_config.http2"}))


def _users(section: Any, problems: list[str]) -> dict[str, bytes]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        problems.append("basic_auth_users must be a mapping of user names to bcrypt hashes")
        return {}
    users: dict[str, bytes] = {}
    for user, hashed in section.items():
        if not isinstance(user, str) or not user or ":" in user:
            problems.append(f"basic_auth_users: user name {user!r} must be a non-empty string without ':'")
        elif not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            # Never quote the value: it may be a password someone pasted instead of its hash.
            problems.append(f"basic_auth_users: the password of {user!r} is not a bcrypt hash ($2b$10$...)")
        else:
            users[user] = hashed.encode("ascii")
    return users


def _excluded_paths(section: Any, problems: list[str]) -> frozenset[str]:
    if section is None:
        return frozenset()
    if not isinstance(section, list) or not all(isinstance(p, str) for p in section):
        problems.append(f"basic_auth_excluded_paths must be a list of paths, e.g. [{LIVENESS_PATH}]")
        return frozenset()
    others = sorted(set(section) - EXCLUDABLE_PATHS)
    if others:
        problems.append(
            f"basic_auth_excluded_paths: {', '.join(others)} cannot be excluded, only "
            f"{', '.join(sorted(EXCLUDABLE_PATHS))} (every other path shows the cluster's data)"
        )
    return frozenset(section) & EXCLUDABLE_PATHS
