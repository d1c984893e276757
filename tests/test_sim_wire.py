"""The wire protocol seen from a plain socket (what old drivers and odd clients send), awaitable hello, and a
clean stop: every port and thread released when stop() returns."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any

import bson
import pytest
from bson import ObjectId

from mongosim import ReplicaSet
from mongosim.wire import crc32c

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013


def _op_msg(
    doc: dict[str, Any],
    request_id: int,
    flags: int = 0,
    checksum: bool = False,
    sequence: tuple[str, list[dict[str, Any]]] | None = None,
) -> bytes:
    sections = b"\x00" + bson.encode(doc)
    if sequence is not None:
        name, docs = sequence
        payload = name.encode() + b"\x00" + b"".join(bson.encode(d) for d in docs)
        sections += b"\x01" + struct.pack("<i", 4 + len(payload)) + payload
    flags |= 1 if checksum else 0
    body = struct.pack("<I", flags) + sections
    length = 16 + len(body) + (4 if checksum else 0)
    message = struct.pack("<iiii", length, request_id, 0, OP_MSG) + body
    return message + struct.pack("<I", crc32c(message)) if checksum else message


def _op_query(collection: str, query: dict[str, Any], request_id: int) -> bytes:
    body = struct.pack("<i", 0) + collection.encode() + b"\x00" + struct.pack("<ii", 0, -1) + bson.encode(query)
    return struct.pack("<iiii", 16 + len(body), request_id, 0, OP_QUERY) + body


def _op_reply_docs(body: bytes) -> tuple[int, list[dict[str, Any]]]:
    flags, _cursor, _start, count = struct.unpack_from("<iqii", body)
    return flags, bson.decode_all(body[20:])[:count]


@pytest.fixture
def sock(replica_set):
    with socket.create_connection(replica_set.address(0), timeout=2) as s:
        yield s


def test_the_crc32c_used_for_checksums_matches_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283


def test_legacy_op_query_ismaster_and_getnonce_are_answered_with_op_reply(replica_set, sock, read_message):
    sock.sendall(_op_query("admin.$cmd", {"isMaster": 1}, 11))
    _, response_to, opcode, body = read_message(sock)
    flags, docs = _op_reply_docs(body)
    assert (response_to, opcode, flags & 2) == (11, OP_REPLY, 0)
    assert (docs[0]["ismaster"], docs[0]["setName"], docs[0]["me"]) == (True, "rs0", replica_set.member(0).name)
    sock.sendall(_op_query("admin.$cmd", {"$query": {"getnonce": 1}, "$readPreference": {"mode": "primary"}}, 12))
    _, response_to, opcode, body = read_message(sock)
    _, docs = _op_reply_docs(body)
    assert (response_to, opcode, docs[0]["ok"]) == (12, OP_REPLY, 1.0)
    assert len(docs[0]["nonce"]) == 16 and int(docs[0]["nonce"], 16) >= 0


def test_legacy_op_query_runs_replsetgetstatus_for_old_exporters(replica_set, sock, read_message):
    sock.sendall(_op_query("admin.$cmd", {"replSetGetStatus": 1}, 13))
    _, _, _, body = read_message(sock)
    _, docs = _op_reply_docs(body)
    assert [m["name"] for m in docs[0]["members"]] == [m.name for m in replica_set.members]


def test_a_legacy_query_on_a_collection_fails_with_the_query_failure_flag(sock, read_message):
    sock.sendall(_op_query("local.oplog.rs", {}, 14))
    _, _, opcode, body = read_message(sock)
    flags, docs = _op_reply_docs(body)
    assert (opcode, flags & 2) == (OP_REPLY, 2)
    assert "$err" in docs[0]


def test_an_op_msg_with_a_checksum_gets_a_checksummed_reply(sock, read_message):
    sock.sendall(_op_msg({"ping": 1, "$db": "admin"}, 21, checksum=True))
    header, response_to, opcode, body = read_message(sock)
    (flags,) = struct.unpack_from("<I", body)
    assert (response_to, opcode, flags & 1) == (21, OP_MSG, 1)
    assert struct.unpack("<I", body[-4:])[0] == crc32c(header + body[:-4])
    assert bson.decode(body[5:-4])["ok"] == 1.0


def test_a_kind_1_document_sequence_is_merged_into_the_command(sock, read_message):
    sock.sendall(_op_msg({"endSessions": [], "$db": "admin"}, 22, sequence=("ids", [{"id": ObjectId()}])))
    _, _, _, body = read_message(sock)
    assert bson.decode(body[5:])["ok"] == 1.0


def test_more_to_come_gets_no_reply_and_the_connection_goes_on(sock, read_message):
    sock.sendall(_op_msg({"ping": 1, "$db": "admin"}, 31, flags=2))
    sock.sendall(_op_msg({"buildInfo": 1, "$db": "admin"}, 32))
    _, response_to, _, body = read_message(sock)
    assert response_to == 32
    assert "version" in bson.decode(body[5:])


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00" * 64,  # a zero length
        struct.pack("<iiii", 64, 1, 0, OP_MSG) + b"\xff" * 48,  # sections that are not BSON
        struct.pack("<iiii", 26, 1, 0, 2012) + b"\x00" * 10,  # OP_COMPRESSED, never negotiated
        struct.pack("<iiii", 2**30, 1, 0, OP_MSG),  # bigger than maxMessageSizeBytes
    ],
)
def test_malformed_input_closes_that_connection_and_the_member_serves_on(
    replica_set, raw_command, read_message, garbage
):
    with socket.create_connection(replica_set.address(0), timeout=2) as s:
        s.sendall(garbage)
        with pytest.raises(ConnectionError):
            read_message(s)
    assert raw_command(replica_set.address(0), {"ping": 1})["ok"] == 1.0


def test_a_bad_checksum_closes_the_connection(sock, read_message):
    message = bytearray(_op_msg({"ping": 1, "$db": "admin"}, 41, checksum=True))
    message[-1] ^= 0xFF
    sock.sendall(bytes(message))
    with pytest.raises(ConnectionError):
        read_message(sock)


def test_an_awaitable_hello_is_answered_as_soon_as_the_topology_changes(replica_set, sock, read_message):
    sock.sendall(_op_msg({"hello": 1, "$db": "admin"}, 51))
    first = bson.decode(read_message(sock)[3][5:])
    tv = first["topologyVersion"]
    awaitable = {"hello": 1, "topologyVersion": tv, "maxAwaitTimeMS": 60_000, "$db": "admin"}
    sock.sendall(_op_msg(awaitable, 52, flags=1 << 16))  # exhaustAllowed, as pymongo's monitor sends it
    replica_set.elect(1)  # the socket's 2 s timeout would fire long before the 60 s hold
    _, response_to, _, body = read_message(sock)
    reply = bson.decode(body[5:])
    assert response_to == 52
    assert reply["topologyVersion"]["counter"] > tv["counter"]
    assert (reply["isWritablePrimary"], reply["primary"]) == (False, replica_set.member(1).name)


def test_stopping_releases_every_port_and_thread_at_once(connect):
    before = {t.ident for t in threading.enumerate()}
    rs = ReplicaSet(3, arbiter=True).start()
    client = connect(rs, serverSelectionTimeoutMS=300)  # its close() looks for a server to end sessions on
    client.admin.command("replSetGetStatus")
    ports = [m.port for m in rs.members]
    assert any(t.name.startswith("mongosim") for t in threading.enumerate())
    rs.stop()  # with the client still connected
    for port in ports:
        with socket.socket() as s:  # no SO_REUSEADDR: the port must be free, not in TIME_WAIT
            s.bind(("127.0.0.1", port))
    assert [t for t in threading.enumerate() if t.name.startswith("mongosim") and t.ident not in before] == []
    rs.stop()  # a second stop is harmless
