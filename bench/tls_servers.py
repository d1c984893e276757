"""Issue 15.2: TLS in waitress's event loop (httpserver._TLSChannel) against a maintained asyncio server, side by side.

The candidate is uvicorn (asyncio's own TLS, httptools' C parser) serving the same WSGI app through a2wsgi, both in
one process. Each server runs as a child process with the same app (a green set, the web config's user with a
cost-10 bcrypt hash, already remembered) and the same certificate. For each: wrk over HTTPS on /metrics at 10 and
50 connections (the server's CPU alongside), then five hostile-client probes from tests/test_hostile_clients.py
and tests/test_web_security.py, each bounded by a client timeout. Measures and prints; asserts nothing.

uvicorn and a2wsgi are not project dependencies; install them apart, e.g.
    .venv/bin/pip install --target /tmp/asgi uvicorn==0.54.0 a2wsgi==1.10.10 httptools==0.9.0
    PYTHONPATH=/tmp/asgi .venv/bin/python bench/tls_servers.py --seconds 10
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.procs import children_cpu_s, system_busy_s, wait_for_quiet  # noqa: E402

USER, PASSWORD = "prometheus", "s3cret-Scrape"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
MAX_BODY = 1_000
PROBE_TIMEOUT_S = 5.0

CHILD = """
import logging, sys
sys.path[:0] = [{root!r}, {tests!r}]
logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # as logs.py does in the exporter
import bridge
from view_factory import healthy_set, make_store
from replicationlag.web import app as web
from replicationlag.metrics import build_registry
from replicationlag.web import webconfig
kind, config, port_file = sys.argv[1:4]
store, _ = make_store(healthy_set(1_239))
try:
    from replicationlag.web.access import WebAccess
except ImportError:
    WebAccess = None
if WebAccess is not None:
    access = WebAccess(config)
    tls = access.config.tls
    app = web.create_app(store, build_registry(store), bridge, max_body_bytes={max_body}, access=access)
else:  # the code before issue 15
    loaded = webconfig.load_web_config(config)
    tls = loaded.tls
    app = web.create_app(
        store, build_registry(store), max_body_bytes={max_body},
        auth=loaded.basic_auth(), open_paths=loaded.excluded_paths,
    )
if kind.startswith("waitress"):
    from replicationlag.web import server as httpserver
    server = httpserver.Server(app, "127.0.0.1", 0, max_body_bytes={max_body}, tls=tls)
    open(port_file, "w").write(str(server.port))
    server.run()
else:
    import socket, uvicorn
    from a2wsgi import WSGIMiddleware
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    open(port_file, "w").write(str(sock.getsockname()[1]))
    here = config.rsplit("/", 1)[0]
    uvicorn.Server(uvicorn.Config(
        WSGIMiddleware(app, workers=8), ssl_certfile=here + "/server.crt", ssl_keyfile=here + "/server.key",
        log_level="warning", lifespan="off", http="httptools", limit_concurrency=1000,
    )).run(sockets=[sock])
"""


def source_tree(kind: str, where: Path) -> Path:
    """The project's files for `kind`: this tree, or `git archive` of the ref after "@" (waitress@3591a02)."""
    if "@" not in kind:
        return ROOT
    ref = kind.split("@", 1)[1]
    target = where / ref
    if not target.exists():
        target.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def make_certificates(where: Path) -> ssl.SSLContext:
    """A CA and a server certificate for 127.0.0.1 it signed; returns a client context that trusts the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    base = x509.CertificateBuilder().not_valid_before(now - dt.timedelta(minutes=5))
    base = base.not_valid_after(now + dt.timedelta(days=1))
    ca = (
        base.subject_name(name("bench CA"))
        .issuer_name(name("bench CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        base.subject_name(name("127.0.0.1"))
        .issuer_name(name("bench CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    (where / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (where / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (where / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ssl.create_default_context(cafile=where / "ca.crt")


def start(kind: str, where: Path) -> tuple[subprocess.Popen, int]:
    port_file = where / f"{kind}.port"
    port_file.unlink(missing_ok=True)
    tree = source_tree(kind, where)
    script = CHILD.format(root=str(tree), tests=str(tree / "tests"), max_body=MAX_BODY)
    child = subprocess.Popen([sys.executable, "-c", script, kind, str(where / "web.yml"), str(port_file)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text():
            port = int(port_file.read_text())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return child, port
            except OSError:
                pass
        time.sleep(0.05)
    child.kill()
    raise RuntimeError(f"{kind} did not start")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def wrk(port: int, connections: int, seconds: float, pid: int) -> dict[str, float | str]:
    before, machine_before, wrk_before = cpu_s(pid), system_busy_s(), children_cpu_s()
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout=5s", "--latency"]
    argv += ["-H", f"Authorization: {AUTH}", f"https://127.0.0.1:{port}/metrics"]
    output = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False).stdout
    server = cpu_s(pid) - before
    others = system_busy_s() - machine_before - server - (children_cpu_s() - wrk_before)
    cores, others_cores = server / seconds, max(0.0, others / seconds)

    def latency(label: str) -> float:
        found = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        value, unit = float(found.group(1)), found.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", output)
    return {
        "rps": rps,
        "p50": latency("50%"),
        "p99": latency("99%"),
        "cores": cores,
        "others": others_cores,
        "errors": errors.group(0) if errors else "0",
    }


def _tls(port: int, client: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT_S)
    return client.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False)


def _read_all(sock: socket.socket) -> bytes:
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


def _status(reply: bytes) -> str:
    return reply.split(b"\r\n", 1)[0].decode("latin-1") or "(closed, no answer)"


def probe(name: str, port: int, client: ssl.SSLContext) -> tuple[bool, str]:
    """One hostile-client check; (passed, what the client saw)."""
    auth = f"Authorization: {AUTH}\r\n".encode()
    try:
        if name == "plain HTTP on the HTTPS port gets a 400":
            with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT_S) as raw:
                raw.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                reply = _read_all(raw)
            return b" 400 " in reply.split(b"\r\n", 1)[0], _status(reply)
        if name == "64 KiB of headers get a 431":
            with _tls(port, client) as tls:
                start = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + auth + b"X-Big: "
                tls.sendall(start + b"a" * (64 * 1024 - len(start)))
                reply = _read_all(tls)
            return b" 431 " in reply.split(b"\r\n", 1)[0], _status(reply)
        if name == "a chunked body over the cap gets a 413":
            with _tls(port, client) as tls:
                tls.sendall(
                    b"PUT /mhp.zeroproblem.mongo.replcationlag HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth
                )
                tls.sendall(b"Transfer-Encoding: chunked\r\n\r\n7D0\r\n" + b"x" * 2_000 + b"\r\n0\r\n\r\n")
                reply = _read_all(tls)
            return b" 413 " in reply.split(b"\r\n", 1)[0], _status(reply)
        if name == "200 idle connections and a stalled handshake delay nobody":
            idle = [socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT_S) for _ in range(200)]
            idle[0].sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            try:
                started = time.monotonic()
                with _tls(port, client) as tls:
                    tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth + b"\r\n")
                    reply = _read_all(tls)
                return reply.startswith(b"HTTP/1.1 200"), f"{_status(reply)} in {time.monotonic() - started:.2f} s"
            finally:
                for sock in idle:
                    sock.close()
        if name == "a session ends with close_notify":
            with _tls(port, client) as tls:
                tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth + b"\r\n")
                reply = _read_all(tls)  # SSLEOFError without close_notify
            return True, _status(reply)
    except (OSError, ssl.SSLError) as error:
        return False, f"{type(error).__name__}: {error}"[:90]
    raise ValueError(name)


PROBES = [
    "plain HTTP on the HTTPS port gets a 400",
    "64 KiB of headers get a 431",
    "a chunked body over the cap gets a 413",
    "200 idle connections and a stalled handshake delay nobody",
    "a session ends with close_notify",
]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the load runs")
    parser.add_argument(
        "--quiet-wait", type=float, default=0.0, help="before each run, wait up to this many s for a quiet machine"
    )
    parser.add_argument(
        "--servers", nargs="+", default=["waitress", "uvicorn"], help="waitress, waitress@REF (older code), uvicorn"
    )
    args = parser.parse_args(argv)
    import bcrypt

    with tempfile.TemporaryDirectory(prefix="tls-servers-") as scratch:
        where = Path(scratch)
        client = make_certificates(where)
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
        (where / "web.yml").write_text(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            f"basic_auth_users:\n  {USER}: {hashed}\n"
        )
        print(
            "| server | round | connections | req/s | p50 ms | p99 ms | server CPU (cores) "
            "| other processes' CPU (cores) | errors |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for round_ in range(1, args.rounds + 1):
            for kind in args.servers:
                child, port = start(kind, where)
                try:
                    wrk(port, 1, 1, child.pid)  # warm-up: the credential's one bcrypt, imports, the pool
                    for connections in (10, 50):
                        if args.quiet_wait:
                            wait_for_quiet(args.quiet_wait)
                        m = wrk(port, connections, args.seconds, child.pid)
                        print(
                            f"| {kind} | {round_} | {connections} | {m['rps']:.0f} | {m['p50']:.1f} | {m['p99']:.1f} "
                            f"| {m['cores']:.2f} | {m['others']:.2f} | {m['errors']} |",
                            flush=True,
                        )
                finally:
                    child.terminate()
                    child.wait(10)
        print()
        print("| probe | waitress + _TLSChannel | uvicorn + a2wsgi |")
        print("|---|---|---|")
        results = {}
        for kind in ("waitress", "uvicorn"):
            child, port = start(kind, where)
            try:
                results[kind] = [probe(name, port, client) for name in PROBES]
            finally:
                child.terminate()
                child.wait(10)
        for index, name in enumerate(PROBES):
            cells = [f"{'pass' if ok else 'FAIL'}: {seen}" for ok, seen in (results[k][index] for k in results)]
            print(f"| {name} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
