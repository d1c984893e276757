"""Who may read: --web.config.file (exporter-toolkit format) gives HTTPS and HTTP Basic credentials.

Certificates come from a test CA made here with `cryptography`; every HTTPS test is a real TLS handshake with
Python's ssl client against the real server on 127.0.0.1. Password hashes are real bcrypt hashes (cost 4, the
minimum, to keep the suite fast; the cost does not change what is checked).
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import io
import ipaddress
import itertools
import json
import os
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ops_util import run_promtool
from service_util import read_line_matching, wait_until
from view_factory import healthy_set, make_store

import bridge
import exporter
from replicationlag.metrics import build_registry
from replicationlag.web import access as access_module
from replicationlag.web import app as web
from replicationlag.web import server as httpserver
from replicationlag.web.access import FAILURE_BURST, BasicAuth, LoginLimiter, Verdict, WebAccess
from replicationlag.web.webconfig import WebConfig, WebConfigError, load_web_config, removals

ZP = "/mhp.zeroproblem.mongo.replcationlag"
USER, PASSWORD = "prometheus", "s3cret-Scrape"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
CLIENT_TIMEOUT_S = 5  # no answer within this is a failure: "does not delay" is enforced by this timeout


# --- A test CA -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files in one directory: a CA, a server certificate for 127.0.0.1 it signed, a client certificate it
    signed, and a client certificate from another CA that the server must not trust."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, key, issuer, issuer_key, *, ca=False, server=False, client=False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key=None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    where = tmp_path_factory.mktemp("pki")
    keys = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("ca", "server", "client", "rogue_ca", "rogue")}
    ca = _certificate("replicationlag test CA", keys["ca"], "replicationlag test CA", keys["ca"], ca=True)
    _write(where / "ca.key", key=keys["ca"])  # to sign a renewed server certificate (the SIGHUP rotation test)
    return Pki(
        dir=where,
        ca=_write(where / "ca.crt", ca),
        server_cert=_write(
            where / "server.crt",
            _certificate("127.0.0.1", keys["server"], "replicationlag test CA", keys["ca"], server=True),
        ),
        server_key=_write(where / "server.key", key=keys["server"]),
        client_cert=_write(
            where / "client.crt",
            _certificate("prometheus", keys["client"], "replicationlag test CA", keys["ca"], client=True),
        ),
        client_key=_write(where / "client.key", key=keys["client"]),
        rogue_cert=_write(
            where / "rogue.crt", _certificate("prometheus", keys["rogue"], "rogue CA", keys["rogue_ca"], client=True)
        ),
        rogue_key=_write(where / "rogue.key", key=keys["rogue"]),
    )


def write_config(where: Path, text: str, name: str = "web.yml") -> Path:
    path = where / name
    path.write_text(text, encoding="utf-8")
    return path


def tls_yaml(pki: Pki, *extra: str) -> str:
    lines = ["tls_server_config:", f"  cert_file: {pki.server_cert}", f"  key_file: {pki.server_key}", *extra]
    return "\n".join(lines) + "\n"


def users_yaml(*extra: str) -> str:
    return "\n".join(["basic_auth_users:", f"  {USER}: {HASH}", *extra]) + "\n"


# --- Reading the file -------------------------------------------------------------------------------------------


def test_a_toolkit_file_with_tls_users_and_an_open_liveness_loads_into_a_frozen_value(pki, tmp_path):
    path = write_config(tmp_path, tls_yaml(pki) + users_yaml("basic_auth_excluded_paths: [/liveness]"))

    config = load_web_config(path)

    assert isinstance(config.tls, ssl.SSLContext)
    assert config.client_auth_type == "NoClientCert"
    assert set(config.users) == {USER}
    assert config.excluded_paths == frozenset({"/liveness"})
    with pytest.raises(AttributeError):
        config.excluded_paths = frozenset()  # type: ignore[misc]


@pytest.mark.parametrize("text", [None, "", "# nothing configured\n"])
def test_no_file_or_an_empty_one_means_plain_http_without_credentials(tmp_path, text):
    path = None if text is None else write_config(tmp_path, text)
    config = load_web_config(path)

    assert config == WebConfig()
    assert config.tls is None
    assert WebAccess(path).check("/metrics", None, "127.0.0.1").verdict is Verdict.ALLOWED  # no credential asked


def test_certificate_paths_are_relative_to_the_config_file_as_in_exporter_toolkit(pki):
    path = write_config(pki.dir, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")

    assert load_web_config(path).tls is not None


def test_promtool_accepts_our_test_files_as_exporter_toolkit_files_and_refuses_only_our_extension(pki, tmp_path):
    toolkit = write_config(
        tmp_path,
        tls_yaml(pki, "  client_auth_type: RequireAndVerifyClientCert", f"  client_ca_file: {pki.ca}") + users_yaml(),
    )
    extended = write_config(tmp_path, toolkit.read_text() + "basic_auth_excluded_paths: [/liveness]\n", "ext.yml")

    accepted = run_promtool("check", "web-config", toolkit)
    refused = run_promtool("check", "web-config", extended)

    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert load_web_config(toolkit).client_auth_type == "RequireAndVerifyClientCert"
    assert refused.returncode == 1
    assert "basic_auth_excluded_paths not found" in refused.stdout + refused.stderr


def _encrypted_key(pki: Pki, where: Path) -> Path:
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
    path = where / "encrypted.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return path


BAD_CONFIGS = {
    "missing file": (None, "no such file"),
    "bad YAML": ("tls_server_config: [cert_file\n", "not valid YAML at line 2"),
    "not a mapping": ("- tls_server_config\n", "must be a YAML mapping"),
    "a key given twice": (users_yaml() + users_yaml(), "'basic_auth_users' is given twice"),
    "a misspelt key": ("basic_auth_user:\n  a: b\n", "unknown key 'basic_auth_user'"),
    "no key_file": ("tls_server_config:\n  cert_file: {cert}\n", "tls_server_config.key_file is missing"),
    "a missing cert_file": (
        "tls_server_config:\n  cert_file: {dir}/nope.crt\n  key_file: {key}\n",
        "nope.crt: no such file",
    ),
    "a cert_file that is a directory": (
        "tls_server_config:\n  cert_file: {dir}\n  key_file: {key}\n",
        "is a directory, not a regular file",
    ),
    "a cert_file that is no certificate": (
        "tls_server_config:\n  cert_file: {garbage}\n  key_file: {key}\n",
        "are not a PEM certificate and its matching unencrypted private key",
    ),
    "a key that does not match the certificate": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {client_key}\n",
        "are not a PEM certificate and its matching unencrypted private key",
    ),
    "a key with a passphrase": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {encrypted_key}\n",
        "are not a PEM certificate and its matching unencrypted private key",
    ),
    "a client CA without a client auth type": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_ca_file: {ca}\n",
        "client_ca_file is set but client_auth_type is NoClientCert",
    ),
    "client verification without a CA": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_auth_type: RequireAndVerifyClientCert\n",
        "client_auth_type RequireAndVerifyClientCert needs client_ca_file",
    ),
    "an unverified client certificate": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_auth_type: RequireAnyClientCert\n"
        "  client_ca_file: {ca}\n",
        "client_auth_type RequireAnyClientCert: not supported",
    ),
    "an unknown TLS version": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS14\n",
        "min_version 'TLS14': use TLS10, TLS11, TLS12 or TLS13",
    ),
    "cipher suites": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
        "tls_server_config.cipher_suites: choosing cipher suites is not supported",
    ),
    "a password instead of its hash": ("basic_auth_users:\n  prometheus: hunter2\n", "'prometheus' is not a bcrypt"),
    "a hash of an unknown scheme": (
        "basic_auth_users:\n  prometheus: $6$salt$0123456789abcdef\n",
        "'prometheus' is not a bcrypt",
    ),
    "an excluded data path": (
        users_yaml("basic_auth_excluded_paths: [/liveness, /metrics]"),
        "/metrics cannot be excluded, only /-/healthy, /-/ready, /liveness",
    ),
    "an exclusion without users": ("basic_auth_excluded_paths: [/liveness]\n", "basic_auth_users is empty"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_a_bad_web_config_is_refused_with_one_line_naming_the_file_and_the_problem(pki, tmp_path, case):
    text, expected = BAD_CONFIGS[case]
    garbage = write_config(tmp_path, "not a certificate\n", "garbage.crt")
    fields = {
        "cert": pki.server_cert,
        "key": pki.server_key,
        "client_key": pki.client_key,
        "ca": pki.ca,
        "dir": pki.dir,
        "garbage": garbage,
        "encrypted_key": _encrypted_key(pki, tmp_path) if "encrypted_key" in (text or "") else "",
    }
    path = tmp_path / "missing.yml" if text is None else write_config(tmp_path, text.format(**fields))

    with pytest.raises(WebConfigError) as refused:
        load_web_config(path)

    message = str(refused.value)
    assert message.startswith(f"--web.config.file {path}: ")
    assert expected in message
    assert "\n" not in message
    assert "hunter2" not in message


def test_every_problem_of_a_web_config_is_listed_at_once(tmp_path):
    path = write_config(tmp_path, "tls_server_config:\n  cert_file: a.crt\nbasic_auth_users:\n  u: plain\n")

    with pytest.raises(WebConfigError) as refused:
        load_web_config(path)

    assert "key_file is missing" in str(refused.value)
    assert "a.crt: no such file" in str(refused.value)
    assert "'u' is not a bcrypt hash" in str(refused.value)


@pytest.mark.parametrize("case", ["missing file", "bad YAML", "a cert_file that is no certificate", "bad hash"])
def test_the_exporter_stops_at_start_with_one_clear_line_and_status_1(pki, tmp_path, case, monkeypatch):
    texts = {
        "bad YAML": "basic_auth_users: {\n",
        "a cert_file that is no certificate": f"tls_server_config:\n  cert_file: {pki.ca.parent}/ca.crt\n"
        f"  key_file: {pki.client_key}\n",
        "bad hash": "basic_auth_users:\n  prometheus: hunter2\n",
    }
    path = write_config(tmp_path, texts[case]) if case in texts else tmp_path / "absent.yml"
    monkeypatch.setenv("WEB_CONFIG_FILE", str(path))  # the environment variable, as a container sets it
    stderr = io.StringIO()

    with redirect_stderr(stderr):
        status = exporter.main(["--mongodb.uri", "mongodb://127.0.0.1:9/?replicaSet=rs0"])

    lines = stderr.getvalue().splitlines()
    assert status == 1
    assert len(lines) == 1
    assert lines[0].startswith(f"replicationlag: error: --web.config.file {path}: ")
    assert "hunter2" not in lines[0]


# --- Credentials ------------------------------------------------------------------------------------------------


class ManualClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_scraper_pays_bcrypt_once_and_every_wrong_password_pays_it_again():
    auth = BasicAuth({USER: HASH.encode()}, limiter=LoginLimiter(burst=100))

    assert all(auth(USER, PASSWORD) for _ in range(5))
    assert not any(auth(USER, "wrong") for _ in range(5))

    assert auth.bcrypt_runs == 1 + 5


def test_an_unknown_user_costs_a_bcrypt_like_a_known_one_and_is_refused():
    auth = BasicAuth({USER: HASH.encode()})

    assert not auth("nobody", PASSWORD)
    assert auth.bcrypt_runs == 1


def test_the_cache_of_accepted_credentials_is_bounded_and_forgets_the_least_recently_used():
    other = bcrypt.hashpw(b"other", bcrypt.gensalt(rounds=4))
    auth = BasicAuth({USER: HASH.encode(), "other": other}, cache_size=1)

    assert auth(USER, PASSWORD)
    assert auth("other", "other")  # evicts the first
    assert auth(USER, PASSWORD)
    assert auth.bcrypt_runs == 3


def test_wrong_passwords_are_not_remembered_so_they_cannot_evict_a_scrapers_credential():
    auth = BasicAuth({USER: HASH.encode()}, cache_size=2)
    assert auth(USER, PASSWORD)
    runs = auth.bcrypt_runs

    for attempt in range(3):  # more distinct wrong passwords than the cache holds
        assert not auth(USER, f"wrong-{attempt}")

    assert auth(USER, PASSWORD)
    assert auth.bcrypt_runs == runs + 3  # the scraper's credential was still remembered: no bcrypt for it


def test_a_client_out_of_failure_budget_is_throttled_without_bcrypt_until_its_budget_refills():
    clock = ManualClock()
    auth = BasicAuth({USER: HASH.encode()}, limiter=LoginLimiter(burst=3, refill_s=2.0, now=clock))

    verdicts = [auth.check(USER, f"guess-{n}", "10.0.0.9").verdict for n in range(5)]
    throttled = auth.check(USER, PASSWORD, "10.0.0.9")
    other_client = auth.check(USER, "typo", "10.0.0.7")
    clock.now += 2.0

    assert verdicts == [Verdict.DENIED] * 3 + [Verdict.THROTTLED] * 2
    assert throttled == (Verdict.THROTTLED, 2.0)  # even the right password waits: nothing was checked
    assert other_client.verdict is Verdict.DENIED  # budgets are per client
    assert auth.bcrypt_runs == 4
    assert auth.check(USER, PASSWORD, "10.0.0.9").verdict is Verdict.ALLOWED  # one unit refilled


def test_a_known_credential_needs_no_budget_and_no_bcrypt_slot():
    limiter = LoginLimiter(burst=1, refill_s=3600)
    auth = BasicAuth({USER: HASH.encode()}, limiter=limiter)
    assert auth(USER, PASSWORD, "10.0.0.1")
    assert not auth(USER, "wrong", "10.0.0.1")  # the client's budget is spent
    assert limiter.begin("10.0.0.2") == 0.0  # another client's check holds the only bcrypt slot now

    try:
        assert auth.check("nobody", "guess", "10.0.0.3") == (Verdict.THROTTLED, 1.0)  # busy: refused at once
        assert auth.check(USER, PASSWORD, "10.0.0.1").verdict is Verdict.ALLOWED
    finally:
        limiter.end("10.0.0.2", failed=False)


def login_in_thread(auth: BasicAuth, user: str, password: str, client: str) -> tuple[threading.Thread, list]:
    verdicts: list = []
    thread = threading.Thread(target=lambda: verdicts.append(auth.check(user, password, client)), daemon=True)
    thread.start()
    return thread, verdicts


def wait_for_waiters(limiter: LoginLimiter, count: int) -> None:
    wait_until(lambda: limiter.waiting() == count, 10, f"{count} logins waiting", 0.01)


def test_a_login_for_an_existing_user_waits_for_a_busy_bcrypt_slot_and_an_unknown_user_does_not():
    """Issue 22 item 4: a login that found the one bcrypt slot busy was refused at once, so during a flood the
    scraper's first login after a restart got 429 every time."""
    limiter = LoginLimiter(wait_s=30)
    auth = BasicAuth({USER: HASH.encode()}, limiter=limiter)
    assert limiter.begin("10.0.0.2") == 0.0  # a flood's check holds the slot

    waiting, verdicts = login_in_thread(auth, USER, PASSWORD, "10.0.0.1")
    wait_for_waiters(limiter, 1)
    assert auth.check("nobody", "guess", "10.0.0.3") == (Verdict.THROTTLED, 1.0)  # unknown: refused at once
    limiter.end("10.0.0.2", failed=True)
    waiting.join(10)

    assert verdicts == [(Verdict.ALLOWED, 0.0)]


def test_a_login_waits_at_most_its_bound_then_gets_a_429():
    limiter = LoginLimiter(wait_s=0.05)
    auth = BasicAuth({USER: HASH.encode()}, limiter=limiter)
    assert limiter.begin("10.0.0.2") == 0.0
    try:
        assert auth.check(USER, PASSWORD, "10.0.0.1") == (Verdict.THROTTLED, 1.0)
        assert limiter.waiting() == 0
    finally:
        limiter.end("10.0.0.2", failed=False)


def test_a_client_that_has_not_been_failing_goes_ahead_of_waiting_guesses_and_takes_a_full_queue_place():
    limiter = LoginLimiter(wait_s=30, waiters=2)
    auth = BasicAuth({USER: HASH.encode()}, limiter=limiter)
    for guesser in ("10.0.1.1", "10.0.1.2"):  # both have failed before
        assert not auth(USER, "guess", guesser)
    assert limiter.begin("10.0.0.2") == 0.0  # the slot is busy
    guesses = []
    for waiting, guesser in enumerate(("10.0.1.1", "10.0.1.2"), start=1):  # one after the other: a known order
        guesses.append(login_in_thread(auth, USER, "guess-again", guesser))
        wait_for_waiters(limiter, waiting)

    scraper, verdicts = login_in_thread(auth, USER, PASSWORD, "10.0.0.1")  # the queue is full: the newest guess
    guesses[1][0].join(10)  # is refused to make room
    assert guesses[1][1] == [(Verdict.THROTTLED, 1.0)]
    wait_for_waiters(limiter, 2)
    limiter.end("10.0.0.2", failed=False)
    scraper.join(10)
    guesses[0][0].join(10)

    assert verdicts == [(Verdict.ALLOWED, 0.0)]
    assert guesses[0][1] == [(Verdict.DENIED, 0.0)]  # checked after the scraper, whose bcrypt came first
    assert limiter.waiting() == 0


def test_user_and_password_are_not_confused_at_their_boundary():
    auth = BasicAuth({"ab": bcrypt.hashpw(b"c", bcrypt.gensalt(rounds=4))})

    assert auth("ab", "c")
    assert not auth("a", "bc")


def test_only_the_first_72_bytes_of_a_password_count_as_in_exporter_toolkit():
    auth = BasicAuth({USER: bcrypt.hashpw(b"p" * 72, bcrypt.gensalt(rounds=4))})

    assert auth(USER, "p" * 100)
    assert not auth(USER, "p" * 71)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic " + base64.b64encode(b"u:p:q").decode(), ("u", "p:q")),
        ("basic  " + base64.b64encode("ü:ö".encode()).decode(), ("ü", "ö")),
        ("Bearer abc", None),
        ("Basic !!!", None),
        ("Basic " + base64.b64encode(b"no colon").decode(), None),
        ("Basic " + base64.b64encode(b"\xff:\xfe").decode(), None),
        ("", None),
    ],
)
def test_basic_credentials_are_parsed_as_rfc_7617_says(header, expected):
    assert web.basic_credentials(header) == expected


# --- The real server over TLS -----------------------------------------------------------------------------------


@pytest.fixture
def serve_config(tmp_path):
    """Starts the real server for a web config text, as exporter.py wires it; closes them all at the end."""
    running: list[httpserver.Server] = []

    def start(text: str, *, threads: int = 2, sslsocket_class: type | None = None, **options) -> httpserver.Server:
        access = WebAccess(write_config(tmp_path, text, f"web-{len(running)}.yml"))
        if sslsocket_class is not None:
            access.config.tls.sslsocket_class = sslsocket_class
        store, _ = make_store(healthy_set(1_239))
        app = web.create_app(store, build_registry(store), bridge, max_body_bytes=200_000, access=access)
        server = httpserver.serve(
            app, "127.0.0.1", 0, threads=threads, max_body_bytes=200_000, tls=access.config.tls, **options
        )
        running.append(server)
        return server

    yield start
    for server in running:
        server.close()


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None, **versions) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)  # verifies the server's certificate and 127.0.0.1
    if cert is not None:
        context.load_cert_chain(cert, key)
    for name, value in versions.items():
        setattr(context, name, value)
    return context


def credentials(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def https(server, context, method="GET", path="/metrics", *, body=None, headers=None):
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=CLIENT_TIMEOUT_S)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def tls_socket(server, context) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT_S)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def read_all(sock: socket.socket) -> bytes:
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S) as raw:
        raw.sendall(data)
        return read_all(raw)


@pytest.fixture
def secured(pki, serve_config):
    return serve_config(tls_yaml(pki) + users_yaml("basic_auth_excluded_paths: [/liveness]"))


PROTECTED = [("GET", "/"), ("GET", "/metrics"), ("PUT", ZP), ("GET", ZP), ("HEAD", "/metrics"), ("GET", "/nope")]
PROTECTED += [("DELETE", "/metrics"), ("GET", "/liveness/"), ("GET", "/Liveness"), ("GET", "/liveness/../metrics")]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_without_credentials_every_path_but_liveness_gets_401_with_a_challenge_and_no_data(pki, secured, method, path):
    status, headers, body = https(secured, client_context(pki), method, path)

    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="replicationlag", charset="UTF-8"'
    assert headers["Server"] == "replicationlag"
    if method != "HEAD":
        assert json.loads(body) == {"error": "unauthorized", "status": 401, "detail": "valid credentials required"}


@pytest.mark.parametrize(
    "headers",
    [
        credentials(password="wrong"),
        credentials(user="nobody"),
        credentials(password=""),
        credentials(password=PASSWORD + "x" * 100),
        {"Authorization": "Bearer " + PASSWORD},
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Basic " + base64.b64encode(USER.encode()).decode()},
    ],
    ids=["wrong password", "unknown user", "empty password", "overlong password", "bearer", "bad base64", "no colon"],
)
def test_wrong_or_malformed_credentials_get_401_and_no_data(pki, secured, headers):
    status, answer_headers, body = https(secured, client_context(pki), "PUT", ZP, headers=headers)

    assert status == 401
    assert answer_headers["WWW-Authenticate"].startswith("Basic ")
    assert b"GREEN" not in body and b"Traceback" not in body


def test_the_right_credentials_read_every_endpoint_over_tls_1_3(pki, secured):
    context = client_context(pki)
    metrics = https(secured, context, "GET", "/metrics", headers=credentials())
    document = https(secured, context, "PUT", ZP, body=b"{}", headers=credentials())
    page = https(secured, context, "GET", "/", headers=credentials())

    assert metrics[0] == document[0] == page[0] == 200
    assert b"mongodb_replication_lag_seconds" in metrics[2]
    assert json.loads(document[2])["mhp.zeroproblem.mongo.replcationlag"]["status"] == "GREEN"
    with tls_socket(secured, context) as tls:
        assert tls.version() == "TLSv1.3"


@pytest.mark.parametrize("probe", ["/liveness", "/-/healthy", "/-/ready"])
def test_a_probe_answers_without_credentials_only_where_the_file_excludes_it(pki, serve_config, probe):
    open_probe = serve_config(tls_yaml(pki) + users_yaml(f"basic_auth_excluded_paths: [{probe}]"))
    closed_probe = serve_config(tls_yaml(pki) + users_yaml())

    assert https(open_probe, client_context(pki), "GET", probe)[0] == 200
    assert https(open_probe, client_context(pki), "GET", "/metrics")[0] == 401  # only the path named is open
    assert https(closed_probe, client_context(pki), "GET", probe)[0] == 401
    assert https(closed_probe, client_context(pki), "GET", probe, headers=credentials())[0] == 200


def test_credentials_without_tls_work_on_plain_http_too(serve_config):
    server = serve_config(users_yaml())

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT_S)
    connection.request("GET", "/metrics")
    assert connection.getresponse().status == 401


def test_a_plain_http_request_to_the_https_port_gets_a_400_and_no_data(secured):
    reply = raw_exchange(secured.port, b"GET /liveness HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400 Bad Request\r\n")
    assert b"Content-Type: application/json" in head
    assert json.loads(body) == {"error": "bad request", "status": 400, "detail": "this server speaks HTTPS only"}


def test_a_client_that_does_not_trust_the_server_certificate_gets_no_connection(secured):
    with pytest.raises(ssl.SSLCertVerificationError):
        https(secured, ssl.create_default_context(), "GET", "/liveness")


def test_tls_1_2_clients_are_served_unless_min_version_asks_for_tls_1_3(pki, secured, serve_config):
    tls12_client = client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    tls13_only = serve_config(tls_yaml(pki, "  min_version: TLS13"))

    assert https(secured, tls12_client, "GET", "/liveness")[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https(tls13_only, tls12_client, "GET", "/liveness")
    assert https(tls13_only, client_context(pki), "GET", "/liveness")[0] == 200


@pytest.fixture
def mutual(pki, serve_config):
    return serve_config(tls_yaml(pki, "  client_auth_type: RequireAndVerifyClientCert", f"  client_ca_file: {pki.ca}"))


def test_required_client_certificates_let_in_only_those_the_client_ca_signed(pki, mutual):
    assert https(mutual, client_context(pki, pki.client_cert, pki.client_key))[0] == 200

    for refused in (client_context(pki), client_context(pki, pki.rogue_cert, pki.rogue_key)):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https(mutual, refused)


def test_optional_client_certificates_are_verified_when_given(pki, serve_config):
    server = serve_config(tls_yaml(pki, "  client_auth_type: VerifyClientCertIfGiven", f"  client_ca_file: {pki.ca}"))

    assert https(server, client_context(pki))[0] == 200
    assert https(server, client_context(pki, pki.client_cert, pki.client_key))[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https(server, client_context(pki, pki.rogue_cert, pki.rogue_key))


def test_stalled_handshakes_and_idle_connections_do_not_delay_https_clients(pki, serve_config):
    server = serve_config(tls_yaml(pki) + users_yaml(), threads=1)
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(200)]
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the first bytes of a ClientHello, no more
    try:
        for _ in range(3):
            assert https(server, client_context(pki), headers=credentials())[0] == 200
    finally:
        for sock in [*idle, stalled]:
            sock.close()


def test_stalled_handshakes_and_idle_tls_sessions_are_closed_after_the_channel_timeout(pki, serve_config):
    server = serve_config(tls_yaml(pki), channel_timeout_s=1)
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello that never ends
    with stalled, tls_socket(server, client_context(pki)) as session:
        deadline = time.monotonic() + 30
        for sock in (stalled, session):
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            assert sock.recv(1) == b""  # closed by the server; a timeout would raise instead


def test_a_tls_handshake_trickled_without_end_is_closed_at_the_request_deadline(pki, serve_config):
    """Issue 22 item 5 over TLS: the deadline for a whole request counts from the connection's start, so a
    ClientHello trickled a byte at a time (each byte restarting waitress's idle timer) is closed too."""
    server = serve_config(tls_yaml(pki) + users_yaml(), head_deadline_s=1.0)
    hello = b"\x16\x03\x01\x02\x00" + b"\x01" * 512  # a handshake record that announces 512 bytes, never sent whole
    with socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT_S) as sock:
        unsent = iter(hello)

        def closed_after_one_more_byte() -> bool:
            try:
                sock.sendall(bytes([next(unsent)]))  # the whole hello sent means it was never closed: StopIteration
                readable, _, _ = select.select([sock], [], [], 0.1)
                return bool(readable) and sock.recv(1024) == b""
            except OSError:
                return True  # reset: the server closed it while we wrote

        wait_until(closed_after_one_more_byte, 30, "the server to close the trickling handshake", 0)
    assert https(server, client_context(pki), headers=credentials())[0] == 200


def test_a_request_dribbled_over_tls_does_not_delay_others_and_is_answered(pki, serve_config):
    server = serve_config(tls_yaml(pki) + users_yaml(), threads=1)
    context = client_context(pki)
    request = (
        b"GET /liveness HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(f"{k}: {v}\r\n".encode() for k, v in credentials().items())
        + b"Connection: close\r\n\r\n"
    )

    with tls_socket(server, context) as slow:
        for index in range(0, len(request), 16):
            slow.sendall(request[index : index + 16])  # one TLS record per 16 bytes
            assert https(server, context, "GET", "/liveness", headers=credentials())[0] == 200
        reply = read_all(slow)

    assert reply.startswith(b"HTTP/1.1 200 OK")


def test_bodies_and_keep_alive_sessions_span_many_tls_records(pki, serve_config):
    server = serve_config(tls_yaml(pki) + users_yaml())
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=client_context(pki), timeout=CLIENT_TIMEOUT_S
    )
    try:
        for size in (0, 15_000, 16_385, 150_000):
            connection.request("PUT", ZP, body=b"x" * size, headers=credentials())
            response = connection.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["mhp.zeroproblem.mongo.replcationlag"]["status"] == "GREEN"
        for _ in range(20):
            connection.request("GET", "/", headers=credentials())
            response = connection.getresponse()
            assert response.status == 200 and response.read().endswith(b"</html>\n")
    finally:
        connection.close()


def test_an_oversized_body_over_tls_is_refused_with_413_before_it_is_sent(pki, secured):
    with tls_socket(secured, client_context(pki)) as tls:
        tls.sendall(b"PUT " + ZP.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000000\r\n")
        tls.sendall(b"".join(f"{k}: {v}\r\n".encode() for k, v in credentials().items()) + b"\r\n")
        reply = read_all(tls)

    assert reply.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert b"Traceback" not in reply and b"waitress" not in reply
    assert json.loads(reply.partition(b"\r\n\r\n")[2]) == {
        "error": "request entity too large",
        "status": 413,
        "detail": "request body larger than 200000 bytes",
    }


def test_a_reloaded_web_config_with_tls_applies_to_new_connections_and_open_ones_go_on(pki, tmp_path):
    """What Service.reload_web_config does on SIGHUP: WebAccess.reload(), then Server.use_tls()."""
    path = write_config(tmp_path, users_yaml())
    access = WebAccess(path)
    store, _ = make_store(healthy_set(1_239))
    server = httpserver.serve(web.create_app(store, build_registry(store), bridge, access=access), "127.0.0.1", 0)
    kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT_S)
    try:
        kept.request("GET", "/metrics", headers=credentials())
        assert kept.getresponse().read() and server.scheme == "http"

        write_config(tmp_path, tls_yaml(pki) + "basic_auth_users:\n  grafana: " + HASH + "\n")
        server.use_tls(access.reload().tls)

        assert server.scheme == "https" and server.urls == [f"https://127.0.0.1:{server.port}/"]
        assert https(server, client_context(pki), headers=credentials(user="grafana"))[0] == 200
        assert raw_exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.0 400 ")
        statuses = []
        for user in (USER, "grafana"):  # on the plain connection opened before: it goes on, with the new users
            kept.request("GET", "/metrics", headers=credentials(user=user))
            response = kept.getresponse()
            response.read()
            statuses.append(response.status)
        assert statuses == [401, 200]
    finally:
        kept.close()
        server.close()


def test_a_web_config_that_no_longer_loads_is_not_taken_and_the_old_one_stays(tmp_path):
    path = write_config(tmp_path, users_yaml())
    access = WebAccess(path)
    write_config(tmp_path, "basic_auth_users:\n  prometheus: hunter2\n")

    with pytest.raises(WebConfigError, match="not a bcrypt hash"):
        access.reload()

    assert access.check("/metrics", (USER, PASSWORD), "10.0.0.1").verdict is Verdict.ALLOWED
    assert access.check("/metrics", None, "10.0.0.1").verdict is Verdict.DENIED


# --- Reloading: never fail open (issue 22 item 1) ----------------------------------------------------------------

HALF_WRITTEN = {
    "empty": "",
    "blank lines": "\n  \n\n",
    "only a comment": "# being edited\n",
    "a document marker": "---\n",
    "an explicit null": "~\n",
    "cut off after basic_auth_users:": "basic_auth_users:\n",
    "cut off after tls_server_config:": "tls_server_config:\n",
    "cut off after a user name": "basic_auth_users:\n  prometheus:\n",
    "cut off inside a hash": f"basic_auth_users:\n  prometheus: {HASH[:20]}",
    "cut off after a key with a comment": "basic_auth_users:  # users follow\n",
}


@pytest.mark.parametrize("case", HALF_WRITTEN)
def test_a_reload_of_an_empty_or_half_written_file_is_refused_and_users_and_tls_stay(pki, tmp_path, case):
    """Issue 22 item 1: SIGHUP while the file was empty, a comment or cut off after `basic_auth_users:` was taken
    as a valid config without users: every endpoint open, TLS gone for new connections, one info line."""
    path = write_config(tmp_path, tls_yaml(pki) + users_yaml())
    access = WebAccess(path)
    write_config(tmp_path, HALF_WRITTEN[case])

    with pytest.raises(WebConfigError) as refused:
        access.reload()

    assert str(refused.value).startswith(f"--web.config.file {path}: ")
    assert "\n" not in str(refused.value)
    assert access.config.tls is not None and set(access.config.users) == {USER}
    assert access.check("/metrics", None, "10.0.0.1").verdict is Verdict.DENIED
    assert access.check("/metrics", (USER, PASSWORD), "10.0.0.1").verdict is Verdict.ALLOWED


@pytest.mark.parametrize("kind", ["a FIFO", "a character device", "a directory", "a FIFO as cert_file"])
def test_what_is_not_a_regular_file_is_refused_without_reading_it(pki, tmp_path, kind):
    """Issue 22 item 6: a FIFO as the web config (or as a file it names) blocked the reader for ever."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = {"a FIFO": fifo, "a character device": Path("/dev/zero"), "a directory": tmp_path}.get(kind)
    if path is None:
        path = write_config(tmp_path, f"tls_server_config:\n  cert_file: {fifo}\n  key_file: {pki.server_key}\n")
    kind = kind.removesuffix(" as cert_file")

    for read in (load_web_config, lambda where: load_web_config(where, empty_means_open=False)):
        with pytest.raises(WebConfigError, match=f"is {kind}, not a regular file"):
            read(path)


def test_a_reload_whose_read_hangs_gives_up_at_its_deadline_and_keeps_the_config_in_force(tmp_path, monkeypatch):
    """Issue 22 item 6: a read that never returns (a hung file system) held the reload, and the main thread, for
    ever. At most one such read is left running: the next reload refuses to start another until it returns."""
    path = write_config(tmp_path, users_yaml())
    access = WebAccess(path)
    release = threading.Event()
    real_load = access_module.load_web_config

    def hanging_load(*args, **kwargs):
        release.wait(60)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(access_module, "load_web_config", hanging_load)
    write_config(tmp_path, "basic_auth_users: {}\n")
    try:
        with pytest.raises(WebConfigError, match=r"not read within 0\.2 s"):
            access.reload(deadline_s=0.2)
        with pytest.raises(WebConfigError, match="an earlier read of it has not returned yet"):
            access.reload(deadline_s=0.2)
        assert access.check("/metrics", None, "10.0.0.1").verdict is Verdict.DENIED
    finally:
        release.set()
    monkeypatch.setattr(access_module, "load_web_config", real_load)

    def reloaded() -> bool:
        try:
            return access.reload() is not None
        except WebConfigError:
            return False  # the stuck read has not returned yet

    wait_until(reloaded, 10, "the reload once the stuck read returned", 0.02)
    assert access.check("/metrics", None, "10.0.0.1").verdict is Verdict.ALLOWED


def test_a_web_config_larger_than_1_mib_is_refused(tmp_path):
    path = write_config(tmp_path, "# padding\n" * 110_000)

    with pytest.raises(WebConfigError, match="larger than 1048576 bytes"):
        load_web_config(path)


@pytest.mark.parametrize("case", ["cut off after basic_auth_users:", "cut off after tls_server_config:"])
def test_a_key_without_a_value_is_refused_at_start_too(tmp_path, case):
    """A file cut off after a section's key is half-written whenever it is read: never read it as "no users"."""
    with pytest.raises(WebConfigError, match="has no value"):
        load_web_config(write_config(tmp_path, HALF_WRITTEN[case]))


@pytest.mark.parametrize(
    ("before", "after", "removed"),
    [
        ("tls+users", "users", ["TLS: new connections are plain HTTP"]),
        ("tls+users", "tls", ["every user (prometheus): every endpoint is served without credentials"]),
        (
            "tls+users",
            "open",
            [
                "TLS: new connections are plain HTTP",
                "every user (prometheus): every endpoint is served without credentials",
            ],
        ),
        ("two users", "users", ["user grafana"]),
        ("mutual", "tls+users", ["client certificate checks: RequireAndVerifyClientCert is now NoClientCert"]),
        ("tls+users", "mutual", []),
        ("users", "tls+users", []),
        ("users", "open liveness", ["credentials for /liveness: now answered without them"]),
        ("users", "users", []),
    ],
)
def test_a_valid_reload_that_removes_tls_or_users_says_exactly_what_it_removed(pki, tmp_path, before, after, removed):
    texts = {
        "tls+users": tls_yaml(pki) + users_yaml(),
        "tls": tls_yaml(pki),
        "users": users_yaml(),
        "two users": users_yaml(f"  grafana: {HASH}"),
        "open": "basic_auth_users: {}\n",
        "open liveness": users_yaml("basic_auth_excluded_paths: [/liveness]"),
        "mutual": tls_yaml(pki, "  client_auth_type: RequireAndVerifyClientCert", f"  client_ca_file: {pki.ca}")
        + users_yaml(),
    }
    access = WebAccess(write_config(tmp_path, texts[before]))
    old = access.config
    write_config(tmp_path, texts[after])

    assert removals(old, access.reload()) == removed


# --- The TLS channel inside waitress (issue 15.2) ----------------------------------------------------------------


class WatchedSSLSocket(ssl.SSLSocket):
    """The server's TLS sockets (installed through `SSLContext.sslsocket_class`), recording whether two TLS
    operations ever run at once on one session (OpenSSL forbids that on one SSL object) and which thread wrote
    each 100 Continue."""

    overlaps: list[str]
    continue_writers: list[str]

    def _watch(self, operation: str, call, *args):
        busy = self.__dict__.setdefault("_busy", [])
        thread = threading.current_thread().name
        if busy:
            type(self).overlaps.append(f"{operation} on {thread} during {busy[0]}")
        busy.append(f"{operation} on {thread}")
        try:
            return call(*args)
        finally:
            busy.pop()

    def do_handshake(self, *args):
        return self._watch("handshake", super().do_handshake, *args)

    def recv(self, *args):
        return self._watch("read", super().recv, *args)

    def send(self, data, *args):
        if b" 100 Continue\r\n" in data:
            type(self).continue_writers.append(threading.current_thread().name)
        return self._watch("write", super().send, data, *args)

    def unwrap(self):
        return self._watch("close_notify", super().unwrap)


def watched(base: type = WatchedSSLSocket, **attributes) -> type:
    """A fresh subclass with its own records, so tests do not share them."""
    return type("Watched", (base,), {"overlaps": [], "continue_writers": [], **attributes})


def read_until(sock: socket.socket, marker: bytes, count: int = 1) -> bytes:
    reply = b""
    while reply.count(marker) < count:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed after {reply!r}"
        reply += chunk
    return reply


def authorization() -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in credentials().items())


def test_a_100_continue_that_waited_for_an_earlier_answer_is_written_by_the_event_loop_not_a_task_thread(
    pki, serve_config
):
    """Issue 15.2c. Waitress sends a 100 Continue that had to wait for an earlier request's answer from the task
    thread that served that request, after that request is done (HTTPChannel.service -> send_continue ->
    _flush_some), when the loop thread may be reading the same session: SSL_read and SSL_write at once on one SSL
    object. This test shows the write from the task thread; the overlap itself is a race of a few microseconds
    that no test can make certain, so it is checked too but cannot fail reliably."""
    socket_class = watched()
    server = serve_config(tls_yaml(pki) + users_yaml(), sslsocket_class=socket_class)
    first = b"GET /liveness HTTP/1.1\r\nHost: x\r\n" + authorization() + b"\r\n"
    second = (
        b"PUT " + ZP.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
        b"Connection: close\r\n" + authorization() + b"\r\n"
    )

    with tls_socket(server, client_context(pki)) as tls:
        tls.sendall(first + second)  # the second request's headers arrive while the first is being served
        reply = read_until(tls, b"HTTP/1.1 100 Continue\r\n\r\n")
        tls.sendall(b"{}")
        reply += read_all(tls)

    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 2 and b"100 Continue" in reply
    assert socket_class.continue_writers == ["http"]  # the loop thread (serve() names it)
    assert socket_class.overlaps == []


class ReadNeedsWrite(WatchedSSLSocket):
    """Mimics OpenSSL's SSL_read answering WANT_WRITE: it has taken the peer's record (here the first request) but
    must write before it can return it, as when a TLS 1.3 KeyUpdate asks for ours while the socket's send buffer is
    full. The bytes are handed out by the next read, which the server owes once it can write."""

    def recv(self, *args):
        if self.__dict__.get("_stash"):
            data, self._stash = self._stash, b""
            return data
        data = super().recv(*args)
        if data and not self.__dict__.get("_stalled_once"):
            self._stash, self._stalled_once = data, True
            raise ssl.SSLWantWriteError("the read must write first")
        return data


def test_a_read_that_must_write_first_is_retried_when_the_socket_can_write(pki, serve_config):
    """Issue 15.2a: the SSLWantWriteError was swallowed and writability never asked for: the request the read had
    taken waited forever (here: past the client's timeout)."""
    server = serve_config(tls_yaml(pki) + users_yaml(), sslsocket_class=watched(ReadNeedsWrite))

    assert https(server, client_context(pki), "GET", "/liveness", headers=credentials())[0] == 200


class WriteNeedsRead(WatchedSSLSocket):
    """Mimics OpenSSL's SSL_write answering WANT_READ (it must read the peer's next record first, as in a
    renegotiation): the first session's first answer cannot be written until its peer has sent more. Counts the
    writes retried while the peer had sent nothing: each is a turn of a busy event loop."""

    def send(self, *args):
        if type(self).victim is None:
            type(self).victim = self  # the first session that answers; the others are served as usual
        state = self.__dict__.setdefault("_write_state", "fresh" if type(self).victim is self else "done")
        if state == "fresh":
            self._write_state = "blocked"
            raise ssl.SSLWantReadError("the write must read first")
        if state == "blocked":
            if not select.select([self], [], [], 0)[0]:
                type(self).spins += 1
                raise ssl.SSLWantReadError("the write must read first")
            self._write_state = "done"
        return super().send(*args)


def test_a_write_that_must_read_first_waits_for_the_peer_without_spinning(pki, serve_config):
    """Issue 15.2b: after SSLWantReadError in send the channel stayed writable, so poll() reported it at once,
    again and again, until the peer sent something: a busy loop."""
    socket_class = watched(WriteNeedsRead, spins=0, victim=None)
    server = serve_config(tls_yaml(pki) + users_yaml(), sslsocket_class=socket_class)
    request = b"GET /liveness HTTP/1.1\r\nHost: x\r\n" + authorization() + b"\r\n"

    with tls_socket(server, client_context(pki)) as blocked:
        blocked.sendall(request)
        # Its answer must be the first one written, or another session would be the one blocked: under load the
        # next session's answer could come first.
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while socket_class.victim is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert socket_class.victim is not None, "the first session was not answered"
        for _ in range(3):  # the loop turns many times while other sessions are served
            other = https(server, client_context(pki), "GET", "/liveness", headers=credentials())
            assert other[0] == 200
        spins_while_waiting = socket_class.spins
        blocked.sendall(request.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"))
        reply = read_all(blocked)

    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert spins_while_waiting == 0


@pytest.mark.parametrize("ending", ["Connection: close", "idle timeout", "server stop"])
def test_the_server_ends_every_tls_session_with_a_close_notify(pki, serve_config, ending):
    """Issue 15.2d: waitress closed the socket under the session; a client that insists on a clean TLS end
    (suppress_ragged_eofs=False, as HTTP/1.0-style readers should) got SSLEOFError instead of the end of data."""
    server = serve_config(tls_yaml(pki) + users_yaml(), channel_timeout_s=1)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    with client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False) as tls:
        reply = b""
        if ending == "Connection: close":
            tls.sendall(b"GET /liveness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + authorization() + b"\r\n")
        if ending == "server stop":
            tls.sendall(b"GET /liveness HTTP/1.1\r\nHost: x\r\n" + authorization() + b"\r\n")
            reply = read_until(tls, b"\r\n\r\n")
            server.close()
        reply += read_all(tls)  # SSLEOFError if the connection ends without close_notify

    assert reply == b"" or reply.startswith(b"HTTP/1.1 200 OK\r\n")


def test_tls_clients_that_hang_up_mid_answer_leave_no_traceback_in_the_log(pki, serve_config, caplog):
    """A TLS write to a peer that is gone raised SSLEOFError, which waitress logged as a "Socket error" traceback:
    any client could write a traceback into the log per connection. A plain socket's EPIPE is closed quietly."""
    server = serve_config(tls_yaml(pki) + users_yaml())
    assert https(server, client_context(pki), headers=credentials())[0] == 200  # warm: imports, the bcrypt
    descriptors = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        with tls_socket(server, client_context(pki)) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + authorization() + b"\r\n")
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset

    deadline = time.monotonic() + 20
    while len(os.listdir("/proc/self/fd")) > descriptors and time.monotonic() < deadline:
        time.sleep(0.02)  # until the server has closed its side of every one
    assert https(server, client_context(pki), headers=credentials())[0] == 200
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


FLOOD_CONNECTIONS = 20
SCRAPER_TIMEOUT_S = 5.0  # only turns a hang into a failure: at 1 s other work on 2 cores ate the budget


def plain_get(port: int, headers: dict[str, str], timeout_s: float = CLIENT_TIMEOUT_S) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", "/metrics", headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_a_scraper_whose_credential_is_known_is_served_while_20_connections_send_wrong_passwords(serve_config):
    """Issue 15.1: each distinct wrong password costs a bcrypt on a worker thread. With a realistic cost (12 here,
    0.27 s on the test machine) 20 connections guessing kept every worker busy and the scraper waited seconds."""
    costly = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()
    server = serve_config(f"basic_auth_users:\n  {USER}: {costly}\n", threads=4)
    assert plain_get(server.port, credentials()) == 200  # the scraper's first scrape pays its bcrypt once
    stop = threading.Event()
    seen: Counter = Counter()
    checked_meanwhile: list[int] = []

    def guess(worker: int) -> None:
        attempt = 0
        while not stop.is_set():
            attempt += 1
            try:
                seen[plain_get(server.port, credentials(password=f"guess-{worker}-{attempt}"), 30)] += 1
            except OSError:
                seen["error"] += 1

    flood = [threading.Thread(target=guess, args=(n,), daemon=True) for n in range(FLOOD_CONNECTIONS)]
    for thread in flood:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while sum(seen.values()) < FLOOD_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.05)  # until the flood is in full swing
        for _ in range(10):
            checked_before = seen[401]
            assert plain_get(server.port, credentials(), timeout_s=SCRAPER_TIMEOUT_S) == 200
            # Counted in events, not seconds: a scraper queued behind the flood waits while every guess ahead
            # of it pays its bcrypt; with guesses throttled, a refill's worth at most is checked meanwhile.
            checked_meanwhile.append(seen[401] - checked_before)
    finally:
        stop.set()
        for thread in flood:
            thread.join(60)
    assert max(checked_meanwhile) < 4, checked_meanwhile  # fewer than the server's 4 workers: none waited on
    assert set(seen) <= {401, 429}, seen
    assert seen[429] > 0  # the flood was told to wait, not checked


def test_a_client_over_its_failure_budget_gets_a_json_429_with_retry_after_and_no_data(serve_config):
    server = serve_config(users_yaml())
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT_S)
    try:
        statuses = []
        for attempt in range(FAILURE_BURST + 1):
            connection.request("GET", "/metrics", headers=credentials(password=f"guess-{attempt}"))
            response = connection.getresponse()
            statuses.append(response.status)
            body = response.read()
    finally:
        connection.close()

    assert statuses == [401] * FAILURE_BURST + [429]
    assert int(response.headers["Retry-After"]) in (1, 2)
    assert json.loads(body) == {
        "error": "too many requests",
        "status": 429,
        "detail": f"too many failed logins: retry in {response.headers['Retry-After']} s",
    }


# --- The real scraper during a flood, across reloads and restarts (issue 22 item 4) -----------------------------

SCRAPER = "127.0.0.1"
FLOOD_ADDRESSES = [f"127.0.{1 + n // 250}.{1 + n % 250}" for n in range(300)]  # all loopback on Linux


def get_from(port: int, source: str, headers: dict[str, str], timeout_s: float = 10.0) -> int:
    """One GET /metrics from the local address `source` (the server sees it as REMOTE_ADDR)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s, source_address=(source, 0))
    try:
        connection.request("GET", "/metrics", headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


class Flood:
    """`connections` threads sending wrong credentials from `addresses` in turn until stopped; counts statuses."""

    def __init__(self, port: int, addresses: list[str], users: list[str], connections: int = FLOOD_CONNECTIONS):
        self.seen: Counter = Counter()
        self.answered: set[str] = set()  # the addresses that got at least one answer
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._turns = itertools.count()
        self._threads = [
            threading.Thread(target=self._run, args=(port, addresses, users, n), daemon=True)
            for n in range(connections)
        ]

    def _run(self, port: int, addresses: list[str], users: list[str], worker: int) -> None:
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            with self._lock:
                source = addresses[next(self._turns) % len(addresses)]  # round robin over every address
            user = users[attempt % len(users)]
            try:
                status = get_from(port, source, credentials(user, f"guess-{worker}-{attempt}"), 30)
            except OSError:
                status = "error"
            with self._lock:
                self.seen[status] += 1
                self.answered.add(source)

    def until(self, condition, what: str, timeout_s: float = 60) -> None:
        wait_until(lambda: condition(self.seen), timeout_s, f"{what}: {self.seen}")

    def __enter__(self) -> Flood:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def serve_access(access: WebAccess, threads: int = 8) -> httpserver.Server:
    store, _ = make_store(healthy_set(1_239))
    app = web.create_app(store, build_registry(store), bridge, access=access)
    return httpserver.serve(app, "127.0.0.1", 0, threads=threads)


def test_behind_a_proxy_a_reload_during_a_flood_keeps_the_scrapers_accepted_credential(tmp_path):
    """Issue 22 item 4, first scenario: the flood comes from the scraper's own address (one proxy). A reload, even
    of an unchanged file, forgot the accepted credential; the scraper then needed bcrypt on a spent budget: 5 of 5
    refused with 429."""
    path = write_config(tmp_path, users_yaml())
    access = WebAccess(path)
    server = serve_access(access)
    try:
        assert get_from(server.port, SCRAPER, credentials()) == 200
        with Flood(server.port, [SCRAPER], [USER, "nobody"]) as flood:
            flood.until(lambda seen: seen[429] >= 20, "the proxy address's budget to be spent")
            access.reload()  # the unchanged file (SIGHUP from logrotate, config management, ...)
            statuses = [get_from(server.port, SCRAPER, credentials()) for _ in range(5)]
        assert statuses == [200] * 5
        assert flood.seen[200] == 0
    finally:
        server.close()


def test_behind_a_proxy_after_a_restart_unknown_user_failures_do_not_spend_the_scrapers_budget(tmp_path):
    """Issue 22 item 4, first scenario after a restart (nothing remembered): failures for user names that do not
    exist are kept apart from those for existing users, so the scraper's first login still gets its bcrypt."""
    path = write_config(tmp_path, users_yaml())
    server = serve_access(WebAccess(path))  # a fresh process: no credential remembered, no budget spent
    try:
        with Flood(server.port, [SCRAPER], ["nobody", "admin", "root"]) as flood:
            flood.until(lambda seen: seen[429] >= 20, "the flood to be throttled")
            statuses = [get_from(server.port, SCRAPER, credentials()) for _ in range(5)]
        assert statuses == [200] * 5
        assert flood.seen[200] == 0
    finally:
        server.close()


@pytest.mark.slow
def test_after_a_restart_during_a_flood_from_300_addresses_the_scraper_waits_for_bcrypt_instead_of_a_429(tmp_path):
    """Issue 22 item 4, second scenario: wrong passwords for the scraper's own user from 300 other addresses kept
    the one bcrypt slot busy, and a login that found it busy was refused at once: 8 of 8 scrapes got 429. A login
    for an existing user from a client that has not been failing now waits (at most 2 s) ahead of the flood."""
    costly = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()  # 0.27 s: the slot stays busy
    path = write_config(tmp_path, f"basic_auth_users:\n  {USER}: {costly}\n")
    server = serve_access(WebAccess(path))
    try:
        with Flood(server.port, FLOOD_ADDRESSES, [USER]) as flood:
            # In full swing: every address has guessed and been answered (a 401, or a 429 for a busy slot), and the
            # slot has checked ten guesses since (2.7 s: longer than any login waits, so the waiting guesses are all
            # from addresses seen before).
            flood.until(lambda seen: len(flood.answered) == 300, "every address to be answered")
            checked = flood.seen[401]
            flood.until(lambda seen: seen[401] >= checked + 10, "ten more guesses to be checked")
            statuses = [get_from(server.port, SCRAPER, credentials()) for _ in range(8)]
        assert statuses == [200] * 8
        assert flood.seen[200] == 0
    finally:
        server.close()


def test_a_reload_keeps_accepted_credentials_only_for_users_whose_hash_did_not_change(tmp_path):
    other = bcrypt.hashpw(b"other-password", bcrypt.gensalt(rounds=4)).decode()
    access = WebAccess(write_config(tmp_path, users_yaml(f"  grafana: {other}")), limiter=LoginLimiter(wait_s=0.05))
    assert access.check("/metrics", (USER, PASSWORD), "10.0.0.1").verdict is Verdict.ALLOWED
    assert access.check("/metrics", ("grafana", "other-password"), "10.0.0.1").verdict is Verdict.ALLOWED
    rehashed = bcrypt.hashpw(b"other-password", bcrypt.gensalt(rounds=4)).decode()
    write_config(tmp_path, users_yaml(f"  grafana: {rehashed}"))  # the same password, hashed again
    limiter = access.limiter
    slot_taken = limiter.begin("10.0.0.9", known=True)  # hold the only bcrypt slot: any bcrypt now waits
    assert slot_taken == 0.0
    try:
        access.reload()
        assert access.check("/metrics", (USER, PASSWORD), "10.0.0.1").verdict is Verdict.ALLOWED  # no bcrypt
        assert access.check("/metrics", ("grafana", "other-password"), "10.0.0.1").verdict is Verdict.THROTTLED
    finally:
        limiter.end("10.0.0.9", known=True, failed=False)
    assert access.check("/metrics", ("grafana", "other-password"), "10.0.0.1").verdict is Verdict.ALLOWED


# --- The exporter process ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_exporter_serves_https_with_credentials_and_an_open_liveness_from_its_web_config(pki, tmp_path):
    config = write_config(tmp_path, tls_yaml(pki) + users_yaml("basic_auth_excluded_paths: [/liveness]"))
    child = _demo_exporter(config)
    try:
        port = _served_port(child)
        server = SimpleNamespace(port=port)
        context = client_context(pki)

        assert https(server, context, "GET", "/liveness")[0] in (200, 503)  # open: healthy or not, never 401
        assert https(server, context, "GET", "/metrics")[0] == 401
        status, _, body = https(server, context, "GET", "/metrics", headers=credentials())
        assert status == 200
        assert b"mongodb_replication_up" in body
        assert raw_exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.0 400 ")
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0


def _demo_exporter(web_config: Path) -> subprocess.Popen:
    """exporter.py --demo on a free port with WEB_CONFIG_FILE set; its log on the stderr pipe."""
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(
        [sys.executable, str(root / "exporter.py"), "--demo", "--web.listen-address", "127.0.0.1:0"],
        env={**os.environ, "WEB_CONFIG_FILE": str(web_config)},
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
    )


def _served_port(child: subprocess.Popen) -> int:
    """The port from the exporter's "serving https://127.0.0.1:PORT/" log line, read with a deadline."""
    return int(read_line_matching(child.stderr, r"serving https://127\.0\.0\.1:(\d+)/", 30)[1])


@pytest.mark.slow
def test_sighup_to_the_exporter_rotates_its_tls_certificate_for_new_connections_and_open_ones_go_on(pki, tmp_path):
    """A certificate renewed on disk (cert-manager, certbot) is taken with `systemctl reload`: the real signal to
    the real process, not the method it calls."""
    ca_key = serialization.load_pem_private_key(pki.dir.joinpath("ca.key").read_bytes(), None)
    renewed_key = ec.generate_private_key(ec.SECP256R1())
    renewed = _certificate("127.0.0.1", renewed_key, "replicationlag test CA", ca_key, server=True)
    renewed_cert = _write(tmp_path / "renewed.crt", renewed)
    renewed_key_file = _write(tmp_path / "renewed.key", key=renewed_key)
    config = write_config(tmp_path, tls_yaml(pki) + users_yaml())
    child = _demo_exporter(config)
    kept = None
    try:
        server = SimpleNamespace(port=_served_port(child))
        context = client_context(pki)
        first = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
        assert served_certificate(server, context) == first.public_bytes(serialization.Encoding.DER)
        kept = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=CLIENT_TIMEOUT_S)
        kept.request("GET", "/metrics", headers=credentials())
        assert kept.getresponse().read()

        config.write_text(
            f"tls_server_config:\n  cert_file: {renewed_cert}\n  key_file: {renewed_key_file}\n" + users_yaml()
        )
        child.send_signal(signal.SIGHUP)
        reloaded = read_line_matching(child.stderr, r"SIGHUP: (reloaded web config|web config not reloaded).*", 30)
        assert reloaded[0].startswith("SIGHUP: reloaded web config"), reloaded[0]

        assert served_certificate(server, context) == renewed.public_bytes(serialization.Encoding.DER)
        assert https(server, context, headers=credentials())[0] == 200
        kept.request("GET", "/metrics", headers=credentials())  # the session opened before goes on
        response = kept.getresponse()
        assert response.status == 200 and response.read()
        assert kept.sock.getpeercert(binary_form=True) == first.public_bytes(serialization.Encoding.DER)
    finally:
        if kept is not None:
            kept.close()
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0


def served_certificate(server, context) -> bytes:
    """The DER certificate the server presents to a new TLS connection."""
    with tls_socket(server, context) as sock:
        return sock.getpeercert(binary_form=True)
