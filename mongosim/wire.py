"""The MongoDB wire protocol, server side: parse requests, build replies.

OP_MSG (opcode 2013) with kind-0 and kind-1 sections, the checksumPresent, moreToCome and exhaustAllowed flags;
OP_QUERY (2004) on `<db>.$cmd` for old drivers, answered with OP_REPLY (1). Anything that is not a well-formed
message of those kinds raises `ProtocolError`; the server then closes that one connection.

Pure functions over bytes. Imports `bson` (shipped with pymongo) and the standard library only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import bson
from bson.errors import BSONError

OP_REPLY = 1
OP_QUERY = 2004
OP_MSG = 2013

HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode
MAX_MESSAGE_BYTES = 48_000_000  # what hello advertises as maxMessageSizeBytes

CHECKSUM_PRESENT = 1 << 0
MORE_TO_COME = 1 << 1
EXHAUST_ALLOWED = 1 << 16
# The low 16 bits are "required" flags: a receiver must reject ones it does not know (OP_MSG spec).
_KNOWN_REQUIRED = CHECKSUM_PRESENT | MORE_TO_COME

QUERY_FAILURE = 1 << 1  # OP_REPLY responseFlags
AWAIT_CAPABLE = 1 << 3  # set by every mongod since 3.2

_CODEC = bson.CodecOptions(document_class=dict)


def append_number(n: int) -> int | bson.Int64:
    """A count as mongod's BSONObjBuilder::appendNumber(long long) encodes it: an int32 when it fits, else a long."""
    return n if -(2**31) <= n < 2**31 else bson.Int64(n)


class ProtocolError(Exception):
    """The bytes are not a message this server accepts; the connection must be closed."""


@dataclass(frozen=True)
class Request:
    """One decoded command request.

    `body` is the command document with kind-1 sequences merged in as lists; `legacy` marks OP_QUERY.
    """

    request_id: int
    opcode: int
    body: dict[str, Any]
    db: str
    more_to_come: bool = False
    exhaust_allowed: bool = False
    checksum: bool = False
    legacy: bool = False
    collection: str = ""  # OP_QUERY only: the full collection name the query was sent to
    query_flags: int = 0  # OP_QUERY only (bit 2: SecondaryOk)

    @property
    def is_command(self) -> bool:
        return not self.legacy or self.collection.endswith(".$cmd")


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the OP_MSG checksum. Pure Python: only messages that ask for it pay for it."""
    crc = 0xFFFFFFFF
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def parse_header(header: bytes) -> tuple[int, int, int, int]:
    """(length, request_id, response_to, opcode); raises ProtocolError on an impossible length."""
    length, request_id, response_to, opcode = HEADER.unpack(header)
    if length < HEADER.size + 4 or length > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message length {length} out of range")
    return length, request_id, response_to, opcode


def _decode_doc(data: bytes | memoryview, offset: int) -> tuple[dict[str, Any], int]:
    if offset + 5 > len(data):
        raise ProtocolError("truncated document")
    (size,) = struct.unpack_from("<i", data, offset)
    if size < 5 or offset + size > len(data):
        raise ProtocolError("document size out of range")
    try:
        doc = bson.decode(bytes(data[offset : offset + size]), _CODEC)
    except (BSONError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"invalid BSON: {exc}") from exc
    return doc, offset + size


def _cstring(data: bytes | memoryview, offset: int) -> tuple[str, int]:
    end = bytes(data[offset:]).find(b"\x00")
    if end < 0:
        raise ProtocolError("unterminated cstring")
    try:
        return bytes(data[offset : offset + end]).decode("utf-8"), offset + end + 1
    except UnicodeDecodeError as exc:
        raise ProtocolError("cstring is not UTF-8") from exc


def parse_request(header: bytes, payload: bytes) -> Request:
    """Decode one message (its 16-byte header and the rest). Raises ProtocolError for anything malformed."""
    _length, request_id, _response_to, opcode = parse_header(header)
    if opcode == OP_MSG:
        return _parse_op_msg(request_id, header, payload)
    if opcode == OP_QUERY:
        return _parse_op_query(request_id, payload)
    raise ProtocolError(f"unsupported opcode {opcode}")


def _parse_op_msg(request_id: int, header: bytes, payload: bytes) -> Request:
    if len(payload) < 5:
        raise ProtocolError("OP_MSG too short")
    (flags,) = struct.unpack_from("<I", payload, 0)
    if flags & 0xFFFF & ~_KNOWN_REQUIRED:
        raise ProtocolError(f"unknown required OP_MSG flag bits 0x{flags:x}")
    end = len(payload)
    if flags & CHECKSUM_PRESENT:
        if end < 9:
            raise ProtocolError("OP_MSG too short for its checksum")
        end -= 4
        (expected,) = struct.unpack_from("<I", payload, end)
        if crc32c(header + payload[:end]) != expected:
            raise ProtocolError("OP_MSG checksum mismatch")
    data = memoryview(payload)[:end]
    offset = 4
    body: dict[str, Any] | None = None
    sequences: dict[str, list[dict[str, Any]]] = {}
    while offset < end:
        kind = data[offset]
        offset += 1
        if kind == 0:
            if body is not None:
                raise ProtocolError("more than one kind-0 section")
            body, offset = _decode_doc(data, offset)
        elif kind == 1:
            if offset + 4 > end:
                raise ProtocolError("truncated kind-1 section")
            (size,) = struct.unpack_from("<i", data, offset)
            section_end = offset + size
            if size < 5 or section_end > end:
                raise ProtocolError("kind-1 section size out of range")
            identifier, pos = _cstring(data[:section_end], offset + 4)
            docs = []
            while pos < section_end:
                doc, pos = _decode_doc(data[:section_end], pos)
                docs.append(doc)
            if identifier in sequences:
                raise ProtocolError(f"duplicate document sequence {identifier!r}")
            sequences[identifier] = docs
            offset = section_end
        else:
            raise ProtocolError(f"unknown OP_MSG section kind {kind}")
    if body is None:
        raise ProtocolError("OP_MSG without a kind-0 section")
    for identifier, docs in sequences.items():
        if identifier in body:
            raise ProtocolError(f"document sequence {identifier!r} duplicates a body field")
        body[identifier] = docs
    db = body.get("$db")
    return Request(
        request_id=request_id,
        opcode=OP_MSG,
        body=body,
        db=db if isinstance(db, str) else "",
        more_to_come=bool(flags & MORE_TO_COME),
        exhaust_allowed=bool(flags & EXHAUST_ALLOWED),
        checksum=bool(flags & CHECKSUM_PRESENT),
    )


def _parse_op_query(request_id: int, payload: bytes) -> Request:
    if len(payload) < 4:
        raise ProtocolError("OP_QUERY too short")
    (flags,) = struct.unpack_from("<i", payload, 0)
    collection, offset = _cstring(payload, 4)
    if offset + 8 > len(payload):
        raise ProtocolError("truncated OP_QUERY")
    offset += 8  # numberToSkip, numberToReturn: meaningless for commands
    query, offset = _decode_doc(payload, offset)
    if offset < len(payload):
        _decode_doc(payload, offset)  # returnFieldsSelector: validated, then ignored
    # Old drivers wrap a command sent with a read preference as {$query: cmd, $readPreference: ...}.
    first = next(iter(query), "")
    wrapped = query[first] if first in ("$query", "query") else None
    body = wrapped if isinstance(wrapped, dict) else query
    db = collection.split(".", 1)[0]
    return Request(
        request_id=request_id,
        opcode=OP_QUERY,
        body=body,
        db=db,
        legacy=True,
        collection=collection,
        query_flags=flags,
    )


def encode_op_msg(doc: dict[str, Any], request_id: int, response_to: int, checksum: bool = False) -> bytes:
    """One OP_MSG reply with a single kind-0 section (the server never sets moreToCome)."""
    flags = CHECKSUM_PRESENT if checksum else 0
    body = struct.pack("<I", flags) + b"\x00" + bson.encode(doc)
    length = HEADER.size + len(body) + (4 if checksum else 0)
    message = HEADER.pack(length, request_id, response_to, OP_MSG) + body
    if checksum:
        message += struct.pack("<I", crc32c(message))
    return message


def encode_op_reply(docs: list[dict[str, Any]], request_id: int, response_to: int, flags: int = AWAIT_CAPABLE) -> bytes:
    """One OP_REPLY (the legacy answer to OP_QUERY), cursor id 0."""
    encoded = b"".join(bson.encode(d) for d in docs)
    body = struct.pack("<iqii", flags, 0, 0, len(docs)) + encoded
    return HEADER.pack(HEADER.size + len(body), request_id, response_to, OP_REPLY) + body
