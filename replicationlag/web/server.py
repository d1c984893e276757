"""The threaded HTTP server: waitress, and TLS inside waitress's own event loop. The only importer of waitress.

`Server` serves any WSGI app on a bound address and stops promptly; with a `tls` context the port speaks HTTPS
only (see `_TLSChannel`). The server sends no version. Standard library and waitress only; nothing of ours.
"""

from __future__ import annotations

import contextlib
import errno
import json
import resource
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http import HTTPStatus

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask
from waitress.trigger import trigger

DEFAULT_MAX_BODY_BYTES = 64 * 1024  # Zero Problem's PUT carries nothing we read; anything bigger is abuse
IDENT = "replicationlag"  # the Server header: no product version for a scanner to match


DEFAULT_CONNECTION_LIMIT = 1_000  # 500 idle connections must leave room for real clients (measured: see README)
DEFAULT_PER_ADDRESS_LIMIT = 100  # connections one client address may hold: one address cannot take the port
DEFAULT_HEAD_DEADLINE_S = 10.0  # a request (head and body) must arrive whole within this, whatever trickles in
ADMISSION_SLACK = 32  # waitress's own cap is this far above ours: ours evicts first, waitress's is the backstop
SWEEP_INTERVAL_S = 0.5  # how often the loop looks for requests past their deadline
RESERVED_FDS = 64  # descriptors kept free for MongoDB sockets, logs and the trigger when capping connections
COMMON_HEADERS = {
    "Cache-Control": "no-store",  # every answer describes "now"; a cached one would lie
    "X-Content-Type-Options": "nosniff",
}


def error_document(status: int, detail: str | None = None) -> bytes:
    """The one error format of every answer, the app's and the server's: `{"error": ..., "status": N}` and, when
    the text is ours (never a quote of the request or an exception), a `detail`."""
    document: dict[str, object] = {"error": HTTPStatus(status).phrase.lower(), "status": status}
    if detail:
        document["detail"] = detail
    return (json.dumps(document, ensure_ascii=False) + "\n").encode("utf-8")


def _refusal(status: int, detail: str) -> bytes:
    """A whole HTTP/1.0 answer with an error document, for a connection that never reaches waitress's parser."""
    body = error_document(status, detail)
    head = [f"HTTP/1.0 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json", "Connection: close"]
    head += [f"{name}: {value}" for name, value in COMMON_HEADERS.items()] + [f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


_PLAIN_HTTP_REFUSAL = _refusal(400, "this server speaks HTTPS only")
_MISSING_FAMILY = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}  # e.g. IPv6 turned off
_TLS_HANDSHAKE_RECORD = 0x16  # the first byte a TLS client sends; anything else on a TLS port is not TLS


class Server:
    """A threaded waitress server, bound at construction, that stops promptly on `close()`.

    Binding first lets the caller report "address in use" as a clear error (the OSError propagates before any
    thread starts) and read the real port when asked for port 0. `run()` serves in the caller's thread until
    `close()` is called from another; `serve()` runs it in a thread of its own. Waitress reads requests
    asynchronously, so a client that dribbles its headers holds no worker thread and delays nobody.
    `max_body_bytes` is the cap the app was created with, so that waitress refuses the same bodies (413) before
    buffering them. Idle connections cost no thread; up to `connection_limit` of them (capped
    below the process's file-descriptor limit) are held, each closed after `channel_timeout_s` without traffic.
    Slow clients cannot take the port either (`ConnectionGuard`): a request must arrive whole within
    `head_deadline_s` whatever trickles in, one address holds at most `per_address_limit` connections, and at
    either cap the connections that have waited longest for a whole request are closed to let the new one in.

    With `tls` (a server-side `ssl.SSLContext`) the port speaks HTTPS only: each connection's handshake runs on
    waitress's event loop like any other read (see `_TLSChannel`), so a client that connects and never
    finishes its handshake holds no thread and delays nobody either; a plain HTTP request gets a 400.
    """

    def __init__(
        self,
        app: Callable,
        host: str,
        port: int,
        *,
        threads: int = 8,
        channel_timeout_s: int = 30,
        connection_limit: int = DEFAULT_CONNECTION_LIMIT,
        per_address_limit: int = DEFAULT_PER_ADDRESS_LIMIT,
        head_deadline_s: float = DEFAULT_HEAD_DEADLINE_S,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        tls: ssl.SSLContext | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
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
                connection_limit=_affordable_connections(connection_limit + ADMISSION_SLACK),
                max_request_body_size=max_body_bytes,
                max_request_header_size=64 * 1024,
                channel_request_lookahead=0,  # the default, and _TLSChannel relies on it: no read while serving
                asyncore_use_poll=True,  # select() fails beyond 1024 file descriptors
                expose_tracebacks=False,
            )
            limit = max(1, _affordable_connections(connection_limit + ADMISSION_SLACK) - ADMISSION_SLACK)
            self.guard = ConnectionGuard(limit, min(per_address_limit, limit), head_deadline_s, now)
            for dispatcher in self._map.values():
                if isinstance(dispatcher, BaseWSGIServer):
                    dispatcher.guard = self.guard  # read by each channel it makes
            self.use_tls(tls)
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

    def use_tls(self, tls: ssl.SSLContext | None) -> None:
        """From now on, accept connections with this TLS context (None: plain HTTP). Connections already open
        keep what they had; callable from any thread (the accepting loop reads one attribute per connection)."""
        channel = _Channel if tls is None else type("TLSChannel", (_TLSChannel,), {"tls_context": tls})
        for dispatcher in list(self._map.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.channel_class = channel
        self.scheme = "https" if tls is not None else "http"

    @property
    def urls(self) -> list[str]:
        """Where it serves, one URL per bound address (an IPv6 address in brackets, as a URL needs)."""
        return [f"{self.scheme}://{f'[{host}]' if ':' in host else host}:{port}/" for host, port in self.addresses]

    def run(self) -> None:
        """Serve until `close()`; returns at once if the server was already closed."""
        with self._lock:
            if self._stopping.is_set() or self._running:
                return
            self._running = True
        try:
            next_sweep = 0.0
            while not self._stopping.is_set():
                # One poll at a time, so that a stop request is seen as soon as the trigger wakes the loop.
                wasyncore.loop(timeout=SWEEP_INTERVAL_S, map=self._map, use_poll=True, count=1)
                if (moment := time.monotonic()) >= next_sweep:
                    next_sweep = moment + SWEEP_INTERVAL_S
                    self.guard.sweep()
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


class ConnectionGuard:
    """Who may hold a connection, against slow clients (slowloris): shared by every channel of one `Server`.

    - A request must arrive whole (head and body) within `head_deadline_s`, counted from the connection's start
      for its first request (a TLS handshake included) and from its first byte for the next ones, whatever
      trickles in meanwhile: waitress's idle timer restarts with each byte, this deadline does not. An idle
      keep-alive connection between requests is left to waitress's idle timeout.
    - At most `per_address` connections per client address and `limit` in all. A new connection beyond either
      is let in by closing, among the connections of that address (or all), the one that has waited longest for
      a whole request (never one whose request is being served); only if there is none is the new one closed.
      So trickling connections can delay nobody for long, and a burst of them only pushes out each other.

    Used from the event loop (admit, sweep) and from worker threads (forget, through a channel's close).
    """

    def __init__(self, limit: int, per_address: int, head_deadline_s: float, now: Callable[[], float]) -> None:
        self.limit, self.per_address, self.head_deadline_s, self.now = limit, per_address, head_deadline_s, now
        self._channels: dict[_Channel, None] = {}  # in order of arrival
        self._by_address: dict[str, dict[_Channel, None]] = {}
        self._lock = threading.Lock()
        self.evicted = 0  # connections closed to make room (for tests and the README's figures)
        self.expired = 0  # connections closed at their deadline

    def admit(self, channel: _Channel) -> None:
        """Take a new channel in, making room as described; may close it (or others) by marking them."""
        address = _address_of(channel)
        with self._lock:
            self._channels[channel] = None
            self._by_address.setdefault(address, {})[channel] = None
            for pool, cap in ((self._by_address[address], self.per_address), (self._channels, self.limit)):
                if len(pool) > cap:
                    self._make_room(pool, channel)

    def _make_room(self, pool: dict[_Channel, None], newcomer: _Channel) -> None:
        waiting = [c for c in pool if c is not newcomer and not c.requests]
        victim = min(waiting, key=lambda c: c.waiting_since) if waiting else newcomer
        self._drop(victim)
        victim.will_close = True  # the loop closes it at its next turn
        self.evicted += 1

    def sweep(self) -> None:
        """Close the connections whose request did not arrive whole within the deadline (from the loop)."""
        cutoff = self.now() - self.head_deadline_s
        with self._lock:
            late = [c for c in self._channels if c.head_started is not None and not c.requests]
            late = [c for c in late if c.head_started < cutoff]
            for channel in late:
                self._drop(channel)
                channel.will_close = True
                self.expired += 1

    def forget(self, channel: _Channel) -> None:
        with self._lock:
            self._drop(channel)

    def _drop(self, channel: _Channel) -> None:
        self._channels.pop(channel, None)
        address = _address_of(channel)
        peers = self._by_address.get(address)
        if peers is not None:
            peers.pop(channel, None)
            if not peers:
                del self._by_address[address]

    def count(self, address: str | None = None) -> int:
        with self._lock:
            return len(self._channels) if address is None else len(self._by_address.get(address, ()))


def _address_of(channel: _Channel) -> str:
    addr = channel.addr
    return str(addr[0]) if isinstance(addr, tuple) and addr else str(addr)


class _ErrorTask(ErrorTask):
    """Waitress's own answers (400 for what it cannot parse, 413, 431, a 500 when the app fails before answering)
    in the app's error format instead of waitress's text with its "(generated by ...)" line."""

    def execute(self) -> None:
        error = self.request.error
        adj = self.channel.adj
        detail = {
            413: f"request body larger than {adj.max_request_body_size} bytes",
            431: f"request headers of {adj.max_request_header_size} bytes or more",
        }.get(error.code)  # waitress's other texts may quote the request: the status says enough
        body = error_document(error.code, detail)
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), *COMMON_HEADERS.items()])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    """Waitress's HTTP channel, answering its own errors in our format, under its server's `ConnectionGuard`.

    `head_started`: when the request now arriving began (the connection's start for the first one; None when
    none is arriving); `waiting_since`: since when the connection has waited for a request (its start, then the
    end of each answer): who waited longest is closed first when room is needed."""

    error_task_class = _ErrorTask

    def __init__(self, server, sock, addr, adj, map=None) -> None:
        self._guard: ConnectionGuard | None = getattr(server, "guard", None)
        self.head_started: float | None = self._moment()
        self.waiting_since: float = self.head_started
        self._first_request = True
        super().__init__(server, sock, addr, adj, map)
        if self._guard is not None:
            self._guard.admit(self)

    def _moment(self) -> float:
        return self._guard.now() if self._guard is not None else time.monotonic()

    def parser_class(self, adj) -> HTTPRequestParser:  # waitress makes one per request, at its first byte
        if self._first_request:
            self._first_request = False  # its clock started with the connection
        else:
            self.head_started = self._moment()
        return HTTPRequestParser(adj)

    def received(self, data) -> bool:
        outcome = super().received(data)
        if self.request is None and not self._first_request:  # whole: nothing is arriving now
            self.head_started = None
        return outcome

    def service(self) -> None:
        super().service()
        self.waiting_since = self._moment()  # answered: waiting for the next request

    def del_channel(self, map=None) -> None:
        if self._guard is not None:
            self._guard.forget(self)
        super().del_channel(map)


class _TLSChannel(_Channel):
    """Waitress's HTTP channel over TLS, driven by the same non-blocking event loop.

    The accepted socket stays plain until its first byte arrives: a TLS client starts with a handshake record,
    anything else (a plain HTTP request) is answered with a 400 and closed. Then the socket is wrapped without
    handshaking on connect, and each readable/writable event advances the handshake; once it is done the
    channel reads and writes through TLS and waitress parses requests exactly as on a plain socket. A peer
    that stalls anywhere is closed by waitress's idle sweep like any other idle connection.

    SSL_read and SSL_write never run at once on one session. Reads run on the loop thread, and only while no
    request of the session is being served (waitress's default channel_request_lookahead of 0, which `Server`
    keeps). Writes run on the loop thread, or on the task thread serving the session's request (waitress flushes
    answers from there, in parallel with other sessions), always under the channel's outbuf lock. The one write
    waitress makes from a task thread after its request is done, a 100 Continue that had to wait for an earlier
    answer (`HTTPChannel.service`), could meet a read: it is left queued for the loop instead.

    OpenSSL may need the other direction to progress: a read that must write first (WANT_WRITE: a TLS 1.3
    KeyUpdate reply while the send buffer is full) waits for writability and is retried then; a write that must
    read first (WANT_READ) waits for readability. Neither is reported as ready meanwhile, so the loop neither
    stalls nor spins. A session ends with a close_notify, so a client can tell the end from a truncation.
    """

    tls_context: ssl.SSLContext

    def __init__(self, server, sock, addr, adj, map=None) -> None:
        self._tls_open = False
        self._tls_wrapped = False
        self._handshake_wants_write = False
        self._read_wants_write = False
        self._write_wants_read = False
        self._loop_thread = threading.get_ident()  # channels are made by the accepting loop
        super().__init__(server, sock, addr, adj, map)

    def readable(self) -> bool:
        if not self._tls_open:
            return not self.will_close
        if self._read_wants_write:
            return False
        return self._write_wants_read or super().readable()

    def writable(self) -> bool:
        if not self._tls_open:
            return self._handshake_wants_write or self.will_close
        if self._read_wants_write:
            return True
        return not self._write_wants_read and super().writable()

    def handle_read(self) -> None:
        if not self._tls_open and not self._advance_handshake():
            return
        if self._write_wants_read:  # the peer sent what the pending write was waiting for
            self._write_wants_read = False
            self.handle_write()
            return
        self._read_wants_write = False
        try:
            data = self.socket.recv(self.adj.recv_bytes)
            # A TLS record can hold more than one recv: what it decrypted is not visible to poll(), so take it now.
            while data and (pending := self.socket.pending()):
                data += self.socket.recv(pending)
        except ssl.SSLWantReadError:
            return
        except ssl.SSLWantWriteError:
            self._read_wants_write = True  # retried by handle_write once the socket can take bytes
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
        if not self._tls_open:
            if self.will_close:
                self.handle_close()
            else:
                self._advance_handshake()
            return
        if self._read_wants_write:
            self.handle_read()
            if self._read_wants_write or not self.connected:
                return
        super().handle_write()

    def send(self, data, do_close: bool = True) -> int:
        if not self._tls_open or self._write_wants_read:
            return 0  # no session yet, or it waits for the peer: nothing can be written now
        try:
            return super().send(data, do_close)
        except ssl.SSLWantWriteError:
            return 0  # the socket is full; waitress retries the same bytes when it is writable
        except ssl.SSLWantReadError:
            self._write_wants_read = True  # retried by handle_read once the peer has sent something
            return 0
        except ssl.SSLError:
            # The peer is gone (TLS reports EPIPE and resets as SSLEOFError), or the loop ended the session while
            # this thread was writing (PROTOCOL_IS_SHUTDOWN): close quietly, as waitress does on a plain socket,
            # instead of letting waitress log a traceback per hung-up client.
            if do_close:
                self.handle_close()
            return 0

    def _flush_some(self, do_close: bool = True) -> bool:
        if not self.requests and threading.get_ident() != self._loop_thread:
            # A task thread after its request is done: waitress's deferred 100 Continue (HTTPChannel.service).
            # The loop may be reading this session now; the bytes stay queued, and the trigger service() pulls
            # next makes the loop send them.
            return False
        with self.outbuf_lock:  # the loop's own flushes too, so that a task never appends mid-flush
            return super()._flush_some(do_close)

    def handle_close(self) -> None:  # waitress's way out (answered, idle, broken); it bypasses close()
        self._send_close_notify()
        super().handle_close()

    def close(self) -> None:  # the server's way out when it stops
        self._send_close_notify()
        super().close()

    def _send_close_notify(self) -> None:
        if self._tls_open:
            self._tls_open = False
            # SSL_shutdown's first step only: send ours, do not wait for the peer's. On a full or broken socket
            # there is nothing more to do than close it.
            with contextlib.suppress(OSError, ValueError):
                self.socket.unwrap()

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


def serve(app: Callable, host: str, port: int, **options) -> Server:
    """Bind `host:port` and serve `app` in a daemon thread; the caller stops it with `close()`.

    Raises OSError (e.g. EADDRINUSE) if the address cannot be bound. `options` are `Server`'s.
    """
    server = Server(app, host, port, **options)
    threading.Thread(target=server.run, name="http", daemon=True).start()
    return server


def _bind(host: str, port: int) -> list[socket.socket]:
    """Bind every address `host` resolves to, all on the same port (the one the system picks for port 0).

    An empty host is every interface: 0.0.0.0 and [::]. A family the machine does not have (IPv6 disabled) is
    skipped then, as long as the other one binds; any other failure is the caller's error (EADDRINUSE, ...).
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as error:
                if host or error.errno not in _MISSING_FAMILY:
                    raise
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address[0], sockets[0].getsockname()[1] if sockets else port, *address[2:]))
            except OSError as error:
                sock.close()
                if host or error.errno not in _MISSING_FAMILY:
                    raise
                continue
            sockets.append(sock)
        if not sockets:
            raise OSError(errno.EADDRNOTAVAIL, f"no address to listen on for {host!r}")
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
