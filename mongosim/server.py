"""The network side: one asyncio event loop in one daemon thread serves every member's 127.0.0.1 listener.

A `Server` serves one model (a replica set's, or a router's) and by default runs its own `LoopThread`. Give several
servers one `LoopThread` and they share its loop and thread: a `ShardedCluster` of 100 shards runs one thread, and
a server's stop() then closes only its own listeners and connections. What a member answers is `dispatch`
(`commands.dispatch` unless told otherwise), so a config server, a shard member or a router can answer differently
while the wire, the hangs and the awaitable hello stay here.

Each member has its own listening socket (port fixed for the life of the set, so "down then up" reuses it), a
reader callback that accepts on it (removed for a hang "before_accept": the socket keeps listening, the kernel
keeps completing handshakes into the backlog, nobody ever accepts) and its connections. Every accepted socket is
set to linger 0, so closing it never leaves a TIME_WAIT on the member's port: `stop()` releases every port at once.

Malformed input closes that one connection; a bug in a command handler answers InternalError (code 1) and is
logged; nothing a client sends can stop the loop.

Imports `.wire`, `.commands` and `.model` (for types) only.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from . import commands, wire
from .model import Member, SetModel

log = logging.getLogger("mongosim")
T = TypeVar("T")
CALL_TIMEOUT_S = 10.0
_LINGER_0 = struct.pack("ii", 1, 0)
# What a member answers: (model, member, session, request) -> the reply document.
Dispatch = Callable[[Any, Member, commands.Session, wire.Request], dict[str, Any]]


def listening_socket(host: str, port: int) -> socket.socket:
    """A non-blocking listening socket; SO_REUSEADDR so a member brought back up can rebind its port at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def holding_socket(host: str, port: int) -> socket.socket | None:
    """A socket bound to `port` that does not listen: the port stays ours and refuses connections, as a closed one
    does (another process's outgoing connection could otherwise take it while a member is down). None when the
    port was taken in the instant it was free: bring_up then fails as it would without this."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        return None
    return sock


class LoopThread:
    """One asyncio event loop in one daemon thread, for one server or for every server of a cluster."""

    def __init__(self, name: str = "mongosim") -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self) -> None:
        """Start the loop's thread; a second call does nothing."""
        if self.thread is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                loop.close()

        self.loop = loop
        self.thread = threading.Thread(target=run, name=self.name, daemon=True)
        self.thread.start()
        if not ready.wait(CALL_TIMEOUT_S):
            raise RuntimeError("the mongosim event loop did not start")

    def stop(self) -> None:
        """Cancel whatever still runs on the loop, stop it and join its thread. Idempotent."""
        loop, thread = self.loop, self.thread
        if loop is None or thread is None or not thread.is_alive():
            return
        if threading.current_thread() is thread:  # e.g. a finalizer run by the garbage collector on our thread
            loop.create_task(_cancel_the_rest()).add_done_callback(lambda _: loop.stop())
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_cancel_the_rest(), loop).result(CALL_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CALL_TIMEOUT_S)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` (a function or a coroutine function) on the loop and return its result."""
        loop = self.loop
        if loop is None or not self.running:
            raise RuntimeError("the mongosim event loop is not running")
        if threading.current_thread() is self.thread:
            raise RuntimeError("mongosim controls must not be called from the simulator's own thread")

        async def run() -> T:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), loop).result(CALL_TIMEOUT_S)


async def _cancel_the_rest() -> None:
    current = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


class _Listener:
    """One member's listening socket, whether the loop accepts on it, and its open connections."""

    def __init__(self, member_id: int, sock: socket.socket) -> None:
        self.member_id = member_id
        self.sock: socket.socket | None = sock
        # While the member is down: its port, bound but not listening (connections are refused, as by a closed
        # port), so that no other socket of the machine takes it before the member comes back up.
        self.held: socket.socket | None = None
        self.accepting = False
        # connection task -> its stream writer (None until the streams exist)
        self.connections: dict[asyncio.Task[None], asyncio.StreamWriter | None] = {}

    @property
    def port(self) -> int:
        assert self.sock is not None
        return self.sock.getsockname()[1]


class Server:
    """Serves one model's members: its own loop thread, or a `LoopThread` shared with other servers."""

    def __init__(
        self,
        model: SetModel,
        host: str = "127.0.0.1",
        loop: LoopThread | None = None,
        dispatch: Dispatch = commands.dispatch,
    ) -> None:
        self.model = model
        self.host = host
        self.dispatch = dispatch
        self._owns_loop = loop is None
        self._loop_thread = loop if loop is not None else LoopThread(f"mongosim-{model.name}")
        self._started = False
        self._serving = False  # between start() and stop(): the loop accepts on this server's listeners
        self._listeners: dict[int, _Listener] = {}
        self._held: set[asyncio.Future[None]] = set()  # awaitable hellos waiting for a change
        self._request_ids = itertools.count(1)
        model.on_change = self._notify

    @property
    def running(self) -> bool:
        return self._serving and self._loop_thread.running

    # -- lifecycle (caller's thread) --

    def bind(self, member: Member, port: int) -> int:
        """Open `member`'s listening socket (before start, or on the loop via call()); returns the port."""
        listener = _Listener(member.id, listening_socket(self.host, port))
        self._listeners[member.id] = listener
        if self.running:
            self._start_accepting(listener)
        return listener.port

    def start(self) -> None:
        """Start serving every bound listener (and the loop thread, unless it is shared and already running)."""
        if self._started:
            raise RuntimeError("a mongosim Server starts once")
        self._started = True
        if self._owns_loop:
            self._loop_thread.start()
        elif not self._loop_thread.running:
            raise RuntimeError("start the shared LoopThread before its servers")
        self._serving = True
        self._loop_thread.call(self._begin)

    def _begin(self) -> None:
        for listener in self._listeners.values():
            member = self.model.members.get(listener.member_id)
            if member is not None and member.hang != "before_accept":
                self._start_accepting(listener)

    def stop(self) -> None:
        """Close every listener and connection of this server; an own loop is stopped and its thread joined.
        Idempotent."""
        lt = self._loop_thread
        if self.running:
            self._serving = False
            if threading.current_thread() is lt.thread:  # e.g. a finalizer run by the garbage collector there
                assert lt.loop is not None
                task = lt.loop.create_task(self._close_all())
                if self._owns_loop:
                    task.add_done_callback(lambda _: lt.stop())
                return
            with contextlib.suppress(Exception):
                lt.call(self._close_all)
        self._serving = False
        if self._owns_loop:
            lt.stop()
        self._close_sockets()

    def _close_sockets(self) -> None:
        for listener in self._listeners.values():
            for sock in (listener.sock, listener.held):
                if sock is not None:
                    sock.close()
            listener.sock = listener.held = None

    async def _close_all(self) -> None:
        for member_id in list(self._listeners):
            await self.close_member(member_id)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` (a function or a coroutine function) on the loop thread and return its result.

        Before start and after stop this server is not served: `fn` runs right here.
        """
        if not self.running:
            result = fn(*args)
            if inspect.isawaitable(result):
                raise RuntimeError("this control needs a running set")
            return result
        return self._loop_thread.call(fn, *args)

    # -- loop-side controls --

    def _notify(self) -> None:
        """Wake every held awaitable hello (called by the model, on the loop thread, when hello changes)."""
        for held in self._held:
            if not held.done():
                held.set_result(None)

    def _start_accepting(self, listener: _Listener) -> None:
        if listener.sock is not None and not listener.accepting:
            asyncio.get_running_loop().add_reader(listener.sock.fileno(), self._accept, listener)
            listener.accepting = True

    def _stop_accepting(self, listener: _Listener) -> None:
        # A reader callback, not a task awaiting sock_accept(): cancelling such a task can drop a connection
        # the kernel already handed over.
        if listener.sock is not None and listener.accepting:
            asyncio.get_running_loop().remove_reader(listener.sock.fileno())
        listener.accepting = False

    def set_accepting(self, member_id: int, accepting: bool) -> None:
        listener = self._listeners[member_id]
        if accepting:
            self._start_accepting(listener)
        else:
            self._stop_accepting(listener)

    async def drop_connections(self, member_id: int) -> None:
        """Abort every open connection of a member (a restart, or going down)."""
        listener = self._listeners.get(member_id)
        if listener is None:
            return
        tasks = list(listener.connections)
        for task, writer in list(listener.connections.items()):
            # Abort the socket, not only the task: a cancel can be lost (asyncio.wait_for in 3.11 swallows one
            # that races a wake-up), a closed socket cannot.
            if writer is not None:
                writer.transport.abort()
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close_member(self, member_id: int) -> None:
        """Stop listening and drop every connection; the port is free when this returns."""
        listener = self._listeners.get(member_id)
        if listener is None:
            return
        self._stop_accepting(listener)
        await self.drop_connections(member_id)
        if listener.sock is not None:
            port = listener.sock.getsockname()[1]
            listener.sock.close()
            listener.sock = None
            if self._serving:
                listener.held = holding_socket(self.host, port)

    def reopen_member(self, member: Member) -> None:
        listener = self._listeners[member.id]
        if listener.sock is None:
            if listener.held is not None:
                listener.held.close()
                listener.held = None
            listener.sock = listening_socket(self.host, member.port)
        if member.hang != "before_accept":
            self._start_accepting(listener)

    def forget_member(self, member_id: int) -> None:
        self._listeners.pop(member_id, None)

    # -- serving --

    def _accept(self, listener: _Listener) -> None:
        """The listening socket is readable: accept what is waiting (a bounded batch, so no port starves)."""
        loop = asyncio.get_running_loop()
        for _ in range(64):
            if listener.sock is None or not listener.accepting:
                return
            try:
                conn, _ = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: back off instead of spinning
                log.warning("mongosim: accept on port %s failed: %s", listener.port, exc)
                self._stop_accepting(listener)
                loop.call_later(0.05, self._resume, listener)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
            task = loop.create_task(self._serve(listener, conn))
            listener.connections[task] = None
            task.add_done_callback(lambda t: listener.connections.pop(t, None))
            task.add_done_callback(lambda _, sock=conn: sock.close())  # also when cancelled before it ran

    def _resume(self, listener: _Listener) -> None:
        member = self.model.members.get(listener.member_id)
        if member is not None and member.up and member.hang != "before_accept":
            self._start_accepting(listener)

    async def _serve(self, listener: _Listener, conn: socket.socket) -> None:
        member_id = listener.member_id
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            return
        task = asyncio.current_task()
        if task in listener.connections:
            listener.connections[task] = writer
        model = self.model
        model.connection_ids += 1
        session = commands.Session(connection_id=model.connection_ids)
        member = model.members.get(member_id)
        if member is not None:
            member.stats["current"] += 1
            member.stats["total"] += 1
        try:
            while True:
                header = await reader.readexactly(wire.HEADER.size)
                length, _, _, _ = wire.parse_header(header)
                payload = await reader.readexactly(length - wire.HEADER.size)
                member = model.members.get(member_id)
                if member is None or not member.up:
                    break
                member.stats["requests"] += 1
                member.stats["bytes_in"] += length
                if member.hang is not None:
                    continue  # hung: reads everything, answers nothing
                reply = await self._answer(member_id, session, wire.parse_request(header, payload))
                member = model.members.get(member_id)
                if reply is None or member is None or member.hang is not None:
                    continue
                member.stats["bytes_out"] += len(reply)
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the client went away
        except wire.ProtocolError as exc:
            log.debug("mongosim: closing a connection to member %s: %s", member_id, exc)
        finally:
            writer.transport.abort()
            member = model.members.get(member_id)
            if member is not None:
                member.stats["current"] -= 1

    async def _hold(self, seconds: float) -> None:
        """Wait until hello changes or `seconds` pass. A plain future, not asyncio.wait_for, so a cancel is
        never lost."""
        loop = asyncio.get_running_loop()
        held: asyncio.Future[None] = loop.create_future()
        self._held.add(held)
        timer = loop.call_later(seconds, lambda: held.done() or held.set_result(None))
        try:
            await held
        finally:
            timer.cancel()
            self._held.discard(held)

    async def _answer(self, member_id: int, session: commands.Session, request: wire.Request) -> bytes | None:
        """The reply bytes for one request, or None (moreToCome, or the member went away while we held it)."""
        model = self.model
        member = model.members[member_id]
        hold_ms = commands.hello_hold_ms(model, member, request.body)
        if hold_ms:
            await self._hold(hold_ms / 1000)
            member = model.members.get(member_id)
            if member is None or member.hang is not None or not member.up:
                return None
        if not request.is_command:
            doc = {"$err": "mongosim answers commands only (OP_QUERY on <db>.$cmd)", "code": 352}
            return wire.encode_op_reply([doc], next(self._request_ids), request.request_id, wire.QUERY_FAILURE)
        try:
            doc = self.dispatch(model, member, session, request)
        except Exception as exc:  # a bug of ours must not take the connection or the loop down
            log.exception("mongosim: %s failed", next(iter(request.body), "?"))
            doc = commands.error_doc(1, f"mongosim internal error: {type(exc).__name__}: {exc}")
        if request.more_to_come:
            return None
        if request.legacy:
            return wire.encode_op_reply([doc], next(self._request_ids), request.request_id)
        return wire.encode_op_msg(doc, next(self._request_ids), request.request_id, checksum=request.checksum)
