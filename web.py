"""HTTP: the WSGI app with every route, and the threaded waitress server that serves it.

The only module that imports bottle and waitress. Every handler answers from one `store.view()`: no handler
does I/O to MongoDB, so a slow or dead cluster can never slow an HTTP answer. Routes:

    PUT|GET /mhp.zeroproblem.mongo.replcationlag   the Zero Problem status document (JSON; a PUT body is ignored)
    GET /liveness                                  200/503 JSON: is the exporter doing its job
    GET /metrics                                   Prometheus text 0.0.4 or OpenMetrics, by Accept
    GET /                                          a self-refreshing HTML status page, no JavaScript

HEAD works wherever GET does. Errors are small JSON documents, never a stack trace; the server sends no version.
With an `auth` check, `create_app` answers 401 to any request without accepted HTTP Basic credentials (except the
paths left open); with a `tls` context, `Server` speaks HTTPS only, inside waitress's own event loop.
Imports `bridge`, `metrics`, `replset` and `store`.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import resource
import socket
import ssl
import threading
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from http import HTTPStatus

import bottle
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.trigger import trigger

import bridge
from metrics import render
from replset import Member, Snapshot
from store import SnapshotStore, View

DEFAULT_MAX_BODY_BYTES = 64 * 1024  # Zero Problem's PUT carries nothing we read; anything bigger is abuse
IDENT = "replicationlag"  # the Server header: no product version for a scanner to match
ZERO_PROBLEM_PATH = "/" + bridge.SERVICE_ID
READ = ["GET", "HEAD"]  # listed explicitly so that a 405's Allow header names HEAD too

_MAX_BODY_KEY = "replicationlag.max_body_bytes"
_CHALLENGE = 'Basic realm="replicationlag", charset="UTF-8"'
_COMMON_HEADERS = {
    "Cache-Control": "no-store",  # every answer describes "now"; a cached one would lie
    "X-Content-Type-Options": "nosniff",
}
# The status page has no script and loads nothing: forbid both, allow only its own inline style.
_PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'"


class _ClientError(bottle.HTTPError):
    """An error caused by the request, whose text is ours and safe to show to the client."""


def create_app(
    store: SnapshotStore,
    registry: object,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    auth: Callable[[str, str], bool] | None = None,
    open_paths: Collection[str] = (),
) -> bottle.Bottle:
    """The WSGI app: every route reads `store.view()`; `registry` is what /metrics renders.

    With `auth` (user, password -> allowed?) every request needs HTTP Basic credentials it accepts, except
    for the exact paths in `open_paths`; any other request gets a 401 with `WWW-Authenticate` before routing,
    so without credentials even an unknown path or a wrong method says nothing more than 401.
    """
    app = bottle.Bottle()
    app.config[_MAX_BODY_KEY] = max_body_bytes  # so that Server applies the same cap before the app sees a body

    if auth is not None:
        unauthenticated = frozenset(open_paths)

        @app.hook("before_request")  # registered first, so it runs before every other hook and the router
        def require_credentials() -> None:
            if bottle.request.environ.get("PATH_INFO") in unauthenticated:
                return
            credentials = basic_credentials(bottle.request.environ.get("HTTP_AUTHORIZATION", ""))
            if credentials is None or not auth(*credentials):
                raise _ClientError(401, "valid credentials required", **{"WWW-Authenticate": _CHALLENGE})

    @app.hook("before_request")
    def refuse_big_or_broken_bodies() -> None:
        length = bottle.request.environ.get("CONTENT_LENGTH", "").strip()
        if not length:
            return
        if not length.isdigit():
            raise _ClientError(400, "Content-Length must be a number of bytes")
        if int(length) > max_body_bytes:
            raise _ClientError(413, f"request body larger than {max_body_bytes} bytes")

    @app.hook("after_request")
    def add_common_headers() -> None:
        _set_common_headers()

    @app.route(ZERO_PROBLEM_PATH, method=["PUT", *READ])
    def zero_problem() -> str:
        # The consumer PUTs to ask for the status; what it sends is neither read nor stored.
        return _json(bridge.status_document(store.view()))

    @app.route("/liveness", method=READ)
    def liveness() -> str:
        status, document = bridge.liveness_document(store.view())
        bottle.response.status = status
        return _json(document)

    @app.route("/metrics", method=READ)
    def prometheus_metrics() -> bytes:
        body, content_type = render(registry, bottle.request.get_header("Accept"))
        bottle.response.content_type = content_type
        return body

    @app.route("/", method=READ)
    def status_page() -> str:
        bottle.response.content_type = "text/html; charset=utf-8"
        bottle.response.set_header("Content-Security-Policy", _PAGE_CSP)
        return render_status_page(store.view())

    app.default_error_handler = _error_document
    return app


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` value (RFC 7617, UTF-8), or None if it is not one."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except ValueError:  # bad base64 (binascii.Error) or bad UTF-8 (UnicodeDecodeError)
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def _error_document(error: bottle.HTTPError) -> str:
    # Bottle's own texts may quote the request (404) or carry the exception (500): say only the status.
    code = error.status_code
    document = {"error": HTTPStatus(code).phrase.lower(), "status": code}
    if isinstance(error, _ClientError):
        document["detail"] = error.body
    _set_common_headers()
    return _json(document)


def _set_common_headers() -> None:
    for name, value in _COMMON_HEADERS.items():
        bottle.response.set_header(name, value)


def _json(document: dict) -> str:
    bottle.response.content_type = "application/json"
    return json.dumps(document, ensure_ascii=False) + "\n"


# --- The status page -------------------------------------------------------------------------------------------

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; padding: 0 1em; color: #1f2328; }
.status { padding: .1em .5em; border-radius: .3em; font-weight: bold; }
.GREEN { background: #dafbe1; color: #116329; } .YELLOW { background: #fff8c5; color: #7d4e00; }
.RED { background: #ffebe9; color: #a40e26; }
table { border-collapse: collapse; margin: 1em 0; } caption { text-align: left; font-weight: bold; }
th, td { border-bottom: 1px solid #d0d7de; padding: .3em .8em; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.problem { color: #a40e26; font-weight: bold; } .muted { color: #656d76; }
"""


def render_status_page(view: View) -> str:
    """The whole status page for one view; every piece of text from outside is HTML-escaped."""
    status = view.status.name
    snapshot = view.snapshot
    title = f"{status} · replication lag · {view.infra}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{_refresh_s(view)}">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f'<h1>Replication lag <span class="status {status}">{status}</span></h1>',
        f"<p>Infra <b>{_e(view.infra)}</b>{_set_sentence(snapshot)}</p>",
    ]
    problems = [line.removeprefix("- ") for line in bridge.problem_lines(view)]
    parts += [f'<p class="problem">{_e(p)}</p>' for p in problems]
    if view.current is not None and view.current.reasons:
        parts.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in view.current.reasons) + "</ul>")
    if snapshot is not None:
        parts.append(_members_table(snapshot, last_known=view.current is None))
        parts += [f'<p class="muted">{_e(note)}</p>' for note in snapshot.notes]
    parts.append(f'<p class="muted">{_e(_collection_sentence(view))}</p>')
    parts.append(
        '<p>Also: <a href="/metrics">/metrics</a> (Prometheus) · <a href="/liveness">/liveness</a> · '
        f'<a href="{ZERO_PROBLEM_PATH}">{ZERO_PROBLEM_PATH}</a> (Zero Problem document)</p>'
    )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _set_sentence(snapshot: Snapshot | None) -> str:
    if snapshot is None:
        return ""
    text = f", replica set <b>{_e(snapshot.set_name)}</b>"
    if snapshot.reference_member:
        against = "the primary" if snapshot.reference == "primary" else "the freshest member (no primary)"
        text += f"; lag measured against {against} {_e(snapshot.reference_member)}"
    return text + "."


def _members_table(snapshot: Snapshot, *, last_known: bool) -> str:
    caption = "Last known members (not current)" if last_known else "Members"
    head = "".join(
        f'<th class="num">{h}</th>' if h in ("Lag", "Delay") else f"<th>{h}</th>"
        for h in ("Member", "Role", "State", "Status", "Lag", "Delay", "Reason")
    )
    rows = [_member_row(m) for m in snapshot.members]
    return f"<table><caption>{caption}</caption><tr>{head}</tr>{''.join(rows)}</table>"


def _member_row(member: Member) -> str:
    state = member.state_str + ("" if member.healthy else " (unhealthy)")
    role = bridge.role(member) + (" (hidden)" if member.hidden else "")
    cells = [
        f"<td>{_e(member.name)}</td>",
        f"<td>{_e(role)}</td>",
        f"<td>{_e(state)}</td>",
        f'<td><span class="status {member.status.name}">{member.status.name}</span></td>',
        f'<td class="num">{_e(bridge.lag_text(member) or "-")}</td>',
        f'<td class="num">{_e(bridge.duration_text(member.delay_ms)) if member.delay_ms else "-"}</td>',
        f"<td>{_e(member.reason)}</td>",
    ]
    return f"<tr>{''.join(cells)}</tr>"


def _collection_sentence(view: View) -> str:
    text = f"Polled every {view.interval_s:g} s."
    if view.snapshot is not None and view.age_s is not None:
        collected = datetime.fromtimestamp(view.snapshot.collected_at_ms / 1000, UTC)
        text += (
            f" Data collected {collected.isoformat(timespec='milliseconds')} "
            f"({int(view.age_s)} s ago), answered by {view.snapshot.answered_by}."
        )
    if view.last_duration_s is not None:
        text += f" The last poll took {view.last_duration_s:.3f} s."
    return text


def _refresh_s(view: View) -> int:
    # Often enough to notice a change soon after a poll, never so often that the page flickers.
    return max(5, min(30, round(view.interval_s)))


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


# --- The server ------------------------------------------------------------------------------------------------

DEFAULT_CONNECTION_LIMIT = 1_000  # 500 idle connections must leave room for real clients (measured: see README)
RESERVED_FDS = 64  # descriptors kept free for MongoDB sockets, logs and the trigger when capping connections
_PLAIN_HTTP_REFUSAL = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
    b"Content-Length: 31\r\n\r\nThis server speaks HTTPS only.\n"
)
_TLS_HANDSHAKE_RECORD = 0x16  # the first byte a TLS client sends; anything else on a TLS port is not TLS


class Server:
    """A threaded waitress server, bound at construction, that stops promptly on `close()`.

    Binding first lets the caller report "address in use" as a clear error (the OSError propagates before any
    thread starts) and read the real port when asked for port 0. `run()` serves in the caller's thread until
    `close()` is called from another; `serve()` runs it in a thread of its own. Waitress reads requests
    asynchronously, so a client that dribbles its headers holds no worker thread and delays nobody.
    `max_body_bytes` defaults to the cap the app was created with, so waitress refuses the same bodies
    (413) before buffering them. Idle connections cost no thread; up to `connection_limit` of them (capped
    below the process's file-descriptor limit) are held, each closed after `channel_timeout_s` without traffic.

    With `tls` (a server-side `ssl.SSLContext`) the port speaks HTTPS only: each connection's handshake runs on
    waitress's event loop like any other read (see `_TLSChannel`), so a client that connects and never
    finishes its handshake holds no thread and delays nobody either; a plain HTTP request gets a 400.
    """

    def __init__(
        self,
        app: bottle.Bottle,
        host: str,
        port: int,
        *,
        threads: int = 8,
        channel_timeout_s: int = 30,
        connection_limit: int = DEFAULT_CONNECTION_LIMIT,
        max_body_bytes: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if max_body_bytes is None:
            max_body_bytes = app.config.get(_MAX_BODY_KEY, DEFAULT_MAX_BODY_BYTES)
        sockets = _bind(host, port)
        self.addresses = [sock.getsockname()[:2] for sock in sockets]
        self.host, self.port = self.addresses[0]
        self.scheme = "https" if tls is not None else "http"
        self._map: dict = {}
        try:
            self._server = create_server(
                app,
                map=self._map,
                sockets=sockets,
                threads=threads,
                ident=IDENT,
                channel_timeout=channel_timeout_s,  # an idle or dribbling connection is closed after this
                cleanup_interval=max(1, channel_timeout_s // 3),
                connection_limit=_affordable_connections(connection_limit),
                max_request_body_size=max_body_bytes,
                max_request_header_size=64 * 1024,
                asyncore_use_poll=True,  # select() fails beyond 1024 file descriptors
                expose_tracebacks=False,
            )
            if tls is not None:
                channel = type("TLSChannel", (_TLSChannel,), {"tls_context": tls})
                for dispatcher in self._map.values():
                    if isinstance(dispatcher, BaseWSGIServer):
                        dispatcher.channel_class = channel
            self._wake = trigger(self._map)
        except BaseException:
            wasyncore.close_all(self._map)
            for sock in sockets:
                sock.close()
            raise
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._running = self._finishing = False

    def run(self) -> None:
        """Serve until `close()`; returns at once if the server was already closed."""
        with self._lock:
            if self._stopping.is_set() or self._running:
                return
            self._running = True
        try:
            while not self._stopping.is_set():
                # One poll at a time, so that a stop request is seen as soon as the trigger wakes the loop.
                wasyncore.loop(timeout=1.0, map=self._map, use_poll=True, count=1)
        finally:
            self._shut_down()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, stop the workers and close every connection; waits at most about `timeout_s`."""
        with self._lock:
            self._stopping.set()
            running = self._running
            if running and not self._finishing:
                self._wake.pull_trigger()  # wakes the poll in run() at once
        if running:
            self._closed.wait(timeout_s)
        else:
            self._shut_down()

    def _shut_down(self) -> None:
        with self._lock:
            if self._finishing:
                return
            self._finishing = True  # from here on nobody pulls the trigger we are about to close
        try:
            self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=2)
            wasyncore.close_all(self._map)
        finally:
            self._closed.set()


def _affordable_connections(wanted: int) -> int:
    """`wanted`, lowered so that accepting never fails for want of a descriptor.

    At the descriptor limit accept() fails with EMFILE and waitress retries it in a busy loop; at the connection
    limit it merely stops accepting until a connection closes."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVED_FDS))


class _TLSChannel(HTTPChannel):
    """Waitress's HTTP channel over TLS, driven by the same non-blocking event loop.

    The accepted socket stays plain until its first byte arrives: a TLS client starts with a handshake record,
    anything else (a plain HTTP request) is answered with a 400 and closed. Then the socket is wrapped without
    handshaking on connect, and each readable/writable event advances the handshake; once it is done the
    channel reads and writes through TLS and waitress parses requests exactly as on a plain socket. A peer
    that stalls anywhere is closed by waitress's idle sweep like any other idle connection.

    Reads and writes of one TLS session never overlap: waitress does not read from a channel while a request
    is being served or output is pending, and every write holds the channel's outbuf lock.
    """

    tls_context: ssl.SSLContext

    def __init__(self, server, sock, addr, adj, map=None) -> None:
        self._tls_open = False
        self._tls_wrapped = False
        self._handshake_wants_write = False
        super().__init__(server, sock, addr, adj, map)

    def readable(self) -> bool:
        return super().readable() if self._tls_open else not self.will_close

    def writable(self) -> bool:
        if self._tls_open:
            return super().writable()
        return self._handshake_wants_write or self.will_close

    def handle_read(self) -> None:
        if not self._tls_open and not self._advance_handshake():
            return
        try:
            data = self.socket.recv(self.adj.recv_bytes)
            # A TLS record can hold more than one recv: what it decrypted is not visible to poll(), so take it now.
            while data and (pending := self.socket.pending()):
                data += self.socket.recv(pending)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            self.handle_close()
            return
        if not data:
            self.handle_close()
            return
        self.last_activity = time.time()
        self.received(data)

    def handle_write(self) -> None:
        if self._tls_open:
            super().handle_write()
        elif self.will_close:
            self.handle_close()
        else:
            self._advance_handshake()

    def send(self, data, do_close: bool = True) -> int:
        if not self._tls_open:
            return 0
        try:
            return super().send(data, do_close)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0  # the session needs the socket to drain (or a read) first; waitress retries the same bytes

    def _advance_handshake(self) -> bool:
        """One step of the TLS handshake; True once the channel is open for HTTP."""
        if not self._tls_wrapped and not self._wrap():
            return False
        try:
            self.socket.do_handshake()
        except ssl.SSLWantReadError:
            self._handshake_wants_write = False
            return False
        except ssl.SSLWantWriteError:
            self._handshake_wants_write = True
            return False
        except OSError:  # a bad or missing client certificate, an unsupported version, a reset
            self.handle_close()
            return False
        self._tls_open = True
        self._handshake_wants_write = False
        self.last_activity = time.time()
        return True

    def _wrap(self) -> bool:
        try:
            first = self.socket.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError:
            self.handle_close()
            return False
        if not first:
            self.handle_close()
            return False
        if first[0] != _TLS_HANDSHAKE_RECORD:
            self._refuse_plain_http()
            return False
        self.socket = self.tls_context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self._tls_wrapped = True
        return True

    def _refuse_plain_http(self) -> None:
        # Read what the client sent first, so that closing does not reset the connection before it reads our answer.
        with contextlib.suppress(OSError):
            self.socket.recv(64 * 1024)
            self.socket.send(_PLAIN_HTTP_REFUSAL)
        self.handle_close()


def serve(app: bottle.Bottle, host: str, port: int, **options) -> Server:
    """Bind `host:port` and serve `app` in a daemon thread; the caller stops it with `close()`.

    Raises OSError (e.g. EADDRINUSE) if the address cannot be bound. `options` are `Server`'s.
    """
    server = Server(app, host, port, **options)
    threading.Thread(target=server.run, name="http", daemon=True).start()
    return server


def _bind(host: str, port: int) -> list[socket.socket]:
    """Bind every address `host` resolves to, all on the same port (the one the system picks for port 0)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], sockets[0].getsockname()[1] if len(sockets) > 1 else port, *address[2:]))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
