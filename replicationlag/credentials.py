"""Credentials: who logs in where, and keeping every password out of what the process shows.

`Secrets.redact()` is what every log line, HTTP answer and error message passes through; `redact_uri` hides a URI's
password however malformed the URI is. The URIs of one replica set behind the routers and of one member are derived
here from the URI the user gave, keeping its credentials and options. PURE string work: imports nothing of ours
and no third-party package.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus, unquote, unquote_plus

REDACTED = "***"
# A secret at least this long is also replaced wherever a text holds it verbatim; a shorter one is not searched
# for in free text: starring "e", "lag" or "27017" inside ordinary words makes the log unreadable and spells it out.
VERBATIM_MIN_CHARS = 16
URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URI_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://\S+")
_SECRET_OPTIONS = re.compile(r"(?i)([?&;](?:password|authmechanismproperties)=)[^&;]*")


@dataclass(frozen=True)
class Secrets:
    """The credentials this process holds, and `redact()`, which keeps them out of any text it shows.

    Redaction works where credentials occur, never by searching whole lines for a password's text: every URI in a
    text loses its userinfo's password and its password-bearing options, however malformed it is (`redact_uri`),
    and a secret of VERBATIM_MIN_CHARS or more is also replaced wherever a text quotes it bare. More credentials
    (a shard's, a config server's) join with `Secrets.of(...) | ...`; nothing else changes.
    """

    values: tuple[str, ...] = field(default=(), repr=False)  # every spelling of every secret, longest first

    @classmethod
    def of(cls, *, uris: Iterable[str] = (), passwords: Iterable[str] = ()) -> Secrets:
        """The secrets of these URIs (their passwords, in every spelling) and of these bare passwords."""
        found = {p for p in passwords if p}
        for uri in uris:
            found.update(uri_passwords(uri))
        spellings: set[str] = set()
        for secret in found:
            for plain in (secret, unquote(secret), unquote_plus(secret)):
                spellings.update({plain, quote(plain, safe=""), quote_plus(plain)})
        return cls(tuple(sorted((s for s in spellings if s), key=lambda s: (-len(s), s))))

    def __or__(self, other: Secrets) -> Secrets:
        return Secrets(tuple(sorted(set(self.values) | set(other.values), key=lambda s: (-len(s), s))))

    def redact(self, text: str) -> str:
        """`text` with every URI's password and every long secret replaced by ***; nothing else touched."""
        text = _URI_IN_TEXT.sub(lambda match: redact_uri(match.group(0)), text)
        for secret in self.values:
            if len(secret) >= VERBATIM_MIN_CHARS:
                text = text.replace(secret, REDACTED)
        return text


@dataclass(frozen=True)
class Credentials:
    """A user for the replica sets behind mongos routers, from the config file (docs/domain.md §11)."""

    username: str
    password: str = field(repr=False)
    auth_source: str | None = None  # None: the router URI's authSource (or its default)


def _userinfo_span(uri: str) -> tuple[int, int] | None:
    """Where the userinfo is: from the scheme (or the start) to the LAST '@'; None without an '@'.

    A password that was not percent-encoded may hold '/', '?', '#' or '@'; the driver would then read part of it
    as a host, a database or an option. Taking everything up to the last '@' errs towards hiding too much.
    """
    scheme = URI_SCHEME.match(uri)
    start = scheme.end() if scheme else 0
    at = uri.rfind("@", start)
    return (start, at) if at >= 0 else None


def with_login(uri: str, user: str, password: str | None, problems: list[str]) -> str:
    """`uri` with --mongodb.user and the password put in its userinfo, percent-encoded; unchanged when neither is
    given. Refused (a problem, the URI unchanged) when that would give a user or a password twice, or a password to
    nobody: which one the driver would use is not something to guess."""
    if not user and password is None:
        return uri
    scheme = URI_SCHEME.match(uri)
    start = scheme.end() if scheme else 0
    span = _userinfo_span(uri)
    uri_user, has_password = "", False
    if span is not None:
        uri_user, colon, uri_password = uri[span[0] : span[1]].partition(":")
        has_password = bool(colon and uri_password)
    if password is not None and has_password:
        problems.append(
            "the MongoDB URI already carries a password, and a password is given apart (MONGODB_PASSWORD or "
            "--mongodb.password-file): remove one of them"
        )
        return uri
    if user and uri_user:
        problems.append("the MongoDB URI already names a user, and --mongodb.user (MONGODB_USER) names one: remove one")
        return uri
    if password is not None and not (user or uri_user):
        problems.append(
            "a password is given (MONGODB_PASSWORD or --mongodb.password-file) but no user: set --mongodb.user "
            "(MONGODB_USER) or put the user in the URI"
        )
        return uri
    name = quote(user, safe="") if user else uri_user
    secret = f":{quote(password, safe='')}" if password is not None else ""
    hosts = uri[span[1] + 1 :] if span is not None else uri[start:]
    return f"{uri[:start]}{name}{secret}@{hosts}"


def redact_uri(uri: str) -> str:
    """The URI with its password and password-bearing options replaced by ***, however malformed it is."""
    span = _userinfo_span(uri)
    if span is not None:
        start, at = span
        user, colon, _ = uri[start:at].partition(":")
        if colon:
            uri = f"{uri[:start]}{user}:{REDACTED}{uri[at:]}"
    return _SECRET_OPTIONS.sub(rf"\1{REDACTED}", uri)


def uri_passwords(uri: str) -> list[str]:
    """The passwords a URI holds as written: its userinfo's, a `password=` option's, an AWS session token."""
    found = []
    span = _userinfo_span(uri)
    if span is not None:
        _, colon, password = uri[span[0] : span[1]].partition(":")
        if colon and password:
            found.append(password)
    found += re.findall(r"(?i)[?&;]password=([^&;]*)", uri)
    found += re.findall(r"(?i)AWS_SESSION_TOKEN:([^,&;]*)", uri)
    return [secret for secret in found if secret]


# Options that describe how to reach the routers, not a replica set behind them.
_ROUTER_ONLY_OPTIONS = frozenset({"replicaset", "directconnection", "loadbalanced", "srvservicename", "srvmaxhosts"})


def set_uri(
    router_uri: str,
    set_name: str,
    hosts: tuple[str, ...],
    *,
    username: str | None = None,
    password: str | None = None,
    auth_source: str | None = None,
) -> str:
    """The URI of one replica set behind the routers: its seeds and name, with the router URI's credentials and
    options (TLS, authSource, mechanism, timeouts), or the given credentials instead."""
    return derived_uri(
        router_uri, hosts, replica_set=set_name, username=username, password=password, auth_source=auth_source
    )


# What a client can connect to: a DNS name or an IPv4 address, or an IPv6 address in brackets; then a port.
_HOST_PORT = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+(?:%[0-9A-Za-z._~-]+)?\])(?::(\d{1,5}))?")


def connectable(host: str) -> bool:
    """`host` is a host:port a URI can hold as it is: a DNS name, an IPv4 address or a bracketed IPv6 address,
    and a port from 1 to 65535 (or none). A replica-set config or a shard map can hold other names (an '@', a '/',
    a space), which the driver would read as a user name, a database or an option."""
    match = _HOST_PORT.fullmatch(host)
    return match is not None and (match.group(1) is None or 0 < int(match.group(1)) < 65536)


def member_uri(uri: str, host: str) -> str:
    """A direct connection to one member, with `uri`'s credentials and options: to read the member's own oplog."""
    return derived_uri(uri, (host,), direct=True)


def derived_uri(
    base_uri: str,
    hosts: tuple[str, ...],
    *,
    replica_set: str | None = None,
    direct: bool = False,
    username: str | None = None,
    password: str | None = None,
    auth_source: str | None = None,
) -> str:
    """`base_uri` with other hosts (and a set name, or a direct connection), keeping its credentials and options.

    `base_uri` was accepted by the driver already, so its userinfo has no unescaped '@', '/' or '?'. A
    `mongodb+srv://` URI implies TLS; the derived URI is a plain `mongodb://` one and says `tls=true`.
    """
    scheme, _, rest = base_uri.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, _ = netloc.rpartition("@")
    path, _, query = tail.lstrip("/").partition("?")
    options = [o for o in query.split("&") if o and o.split("=", 1)[0].lower() not in _ROUTER_ONLY_OPTIONS]
    names = {o.split("=", 1)[0].lower() for o in options}
    if scheme == "mongodb+srv" and not names & {"tls", "ssl"}:
        options.append("tls=true")
    if username is not None:
        userinfo, at = f"{quote(username, safe='')}:{quote(password or '', safe='')}", "@"
    if auth_source is not None:
        options = [o for o in options if o.split("=", 1)[0].lower() != "authsource"]
        options.append(f"authSource={quote(auth_source, safe='')}")
    if replica_set is not None:
        options.append(f"replicaSet={quote(replica_set, safe='')}")
    if direct:
        options.append("directConnection=true")
    credentials = f"{userinfo}@" if at else ""
    return f"mongodb://{credentials}{','.join(hosts)}/{path}?{'&'.join(options)}"
