"""Shared fixtures: a simulated replica set (mongosim) that any test can start, and clients that talk to it.

- `start_set(**ReplicaSet kwargs)`: a started `mongosim.ReplicaSet`, stopped when the test ends.
- `replica_set`: a 7.0 primary, two secondaries and an arbiter on a `ManualClock` (`replica_set.clock`).
- `start_cluster(**ShardedCluster kwargs)`: a started `mongosim.ShardedCluster`, stopped when the test ends.
- `connect(target, **pymongo options)`: a real `MongoClient` with small timeouts (so no test can hang), closed
  when the test ends. `target` is a URI, a ReplicaSet (its URI) or a (host, port) address (a direct connection).
- `wait_until(predicate, deadline_s=3)`: poll until it is true (a monotonic deadline, never a fixed sleep);
  returns the last answer, so `assert wait_until(...)` fails with the state at the deadline.
- `raw_command(address, doc)`: one OP_MSG command over a plain socket, for what pymongo will not send;
  `read_message(sock)`: one whole reply read from such a socket.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import bson
import pytest
from pymongo import MongoClient

from mongosim import ManualClock, ReplicaSet, ShardedCluster

# 2024-08-15T23:06:14.512Z, the `date` of the project's synthetic fixtures.
FIXTURE_NOW_MS = 1_723_763_174_512
CLIENT_DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 2000,
    "connectTimeoutMS": 1000,
    "socketTimeoutMS": 2000,
    "heartbeatFrequencyMS": 500,
}


@pytest.fixture
def start_set() -> Iterator[Callable[..., ReplicaSet]]:
    started: list[ReplicaSet] = []

    def start(*args: Any, **kwargs: Any) -> ReplicaSet:
        rs = ReplicaSet(*args, **kwargs).start()
        started.append(rs)
        return rs

    yield start
    for rs in started:
        rs.stop()


@pytest.fixture
def start_cluster() -> Iterator[Callable[..., ShardedCluster]]:
    started: list[ShardedCluster] = []

    def start(*args: Any, **kwargs: Any) -> ShardedCluster:
        cluster = ShardedCluster(*args, **kwargs).start()
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture
def replica_set(start_set: Callable[..., ReplicaSet]) -> ReplicaSet:
    return start_set(3, arbiter=True, version="7.0", clock=ManualClock(FIXTURE_NOW_MS))


@pytest.fixture
def connect() -> Iterator[Callable[..., MongoClient]]:
    clients: list[MongoClient] = []

    def make(target: str | ReplicaSet | tuple[str, int], **options: Any) -> MongoClient:
        settings = {**CLIENT_DEFAULTS, **options}
        if isinstance(target, ReplicaSet):
            client: MongoClient = MongoClient(target.uri, **settings)
        elif isinstance(target, tuple):
            settings.setdefault("directConnection", True)
            client = MongoClient(target[0], target[1], **settings)
        else:
            client = MongoClient(target, **settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def wait_until() -> Callable[..., bool]:
    def poll(predicate: Callable[[], bool], deadline_s: float = 3.0) -> bool:
        deadline = time.monotonic() + deadline_s
        while not predicate():
            if time.monotonic() > deadline:
                return predicate()
            time.sleep(0.02)
        return True

    return poll


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def _read_message(sock: socket.socket) -> tuple[bytes, int, int, bytes]:
    header = _recv_exactly(sock, 16)
    length, _, response_to, opcode = struct.unpack("<iiii", header)
    return header, response_to, opcode, _recv_exactly(sock, length - 16)


@pytest.fixture
def read_message() -> Callable[[socket.socket], tuple[bytes, int, int, bytes]]:
    """read_message(sock) -> (header, responseTo, opCode, body): one whole reply; ConnectionError if closed."""
    return _read_message


@pytest.fixture
def raw_command() -> Callable[..., dict[str, Any]]:
    """raw_command(address, doc, db="admin") -> the reply document of one OP_MSG round trip."""

    def run(address: tuple[str, int], doc: dict[str, Any], db: str = "admin") -> dict[str, Any]:
        body = struct.pack("<I", 0) + b"\x00" + bson.encode({**doc, "$db": db})
        message = struct.pack("<iiii", 16 + len(body), 7, 0, 2013) + body
        with socket.create_connection(address, timeout=2) as sock:
            sock.sendall(message)
            _, response_to, opcode, payload = _read_message(sock)
        assert (response_to, opcode) == (7, 2013)
        return bson.decode(payload[5:])

    return run
