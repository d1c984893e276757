"""Server-side SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802 / RFC 7677, with MongoDB's SHA-1 password digest).

`User` holds a name, its roles and the salted keys derived once from the password (the password itself is not
kept); `Conversation` runs one saslStart/saslContinue exchange and raises `AuthFailed` on a bad proof or an unknown
user, which the command layer turns into code 18 AuthenticationFailed, as a real server does.

Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

SHA1 = "SCRAM-SHA-1"
SHA256 = "SCRAM-SHA-256"
MECHANISMS = (SHA1, SHA256)
# mongod's defaults (scramIterationCount, scramSHA256IterationCount).
_ITERATIONS = {SHA1: 10_000, SHA256: 15_000}
_DIGEST = {SHA1: "sha1", SHA256: "sha256"}


class AuthFailed(Exception):
    """The conversation failed; `code` is the MongoDB error code to answer with."""

    def __init__(self, message: str = "Authentication failed.", code: int = 18) -> None:
        super().__init__(message)
        self.code = code


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep, as the server applies it to SCRAM-SHA-256 passwords. Raises ValueError."""
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c))
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if any(check(c) for c in prepared for check in prohibited):
        raise ValueError("password contains a character SASLprep prohibits")
    if any(stringprep.in_table_d1(c) for c in prepared) and (
        any(stringprep.in_table_d2(c) for c in prepared)
        or not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1]))
    ):
        raise ValueError("password violates the SASLprep bidirectional rules")
    return prepared


@dataclass(frozen=True)
class _Keys:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def _derive(mechanism: str, user: str, password: str) -> _Keys:
    digest = _DIGEST[mechanism]
    if mechanism == SHA1:
        # MongoDB's SCRAM-SHA-1 salts the hex MD5 of "user:mongo:password", not the password itself.
        secret = hashlib.md5(f"{user}:mongo:{password}".encode()).hexdigest().encode()
    else:
        secret = saslprep(password).encode()
    salt = os.urandom(16 if mechanism == SHA1 else 28)
    iterations = _ITERATIONS[mechanism]
    salted = hashlib.pbkdf2_hmac(digest, secret, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    return _Keys(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.new(digest, client_key).digest(),
        server_key=hmac.new(salted, b"Server Key", digest).digest(),
    )


def _normalise_role(role: str | dict[str, str]) -> tuple[str, str]:
    if isinstance(role, dict):
        return role["role"], role.get("db", "admin")
    name, _, db = role.partition("@")
    return name, db or "admin"


@dataclass(frozen=True)
class User:
    """A database user. Roles are `"role"` (on admin), `"role@db"` or `{"role": ..., "db": ...}`."""

    name: str
    roles: tuple[tuple[str, str], ...]
    db: str = "admin"
    keys: dict[str, _Keys] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def create(
        cls,
        name: str,
        password: str,
        roles: Iterable[str | dict[str, str]] = ("clusterMonitor", "read@local"),
        db: str = "admin",
        mechanisms: Iterable[str] = MECHANISMS,
    ) -> User:
        """Derive the SCRAM keys once (PBKDF2 is slow by design); the password is not stored."""
        keys = {}
        for mechanism in mechanisms:
            if mechanism not in MECHANISMS:
                raise ValueError(f"unknown mechanism {mechanism!r}; use {', '.join(MECHANISMS)}")
            keys[mechanism] = _derive(mechanism, name, password)
        return cls(name=name, roles=tuple(_normalise_role(r) for r in roles), db=db, keys=keys)

    @property
    def mechanisms(self) -> list[str]:
        return [m for m in MECHANISMS if m in self.keys]

    def has_role(self, *wanted: tuple[str, str]) -> bool:
        return any(r in self.roles for r in wanted)


def _parse(message: bytes) -> dict[str, str]:
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AuthFailed("SCRAM message is not UTF-8", code=17) from exc
    fields = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep:
            fields.setdefault(key, value)
    return fields


class Conversation:
    """One SCRAM exchange on one connection: `start()` answers saslStart, `finish()` the client proof."""

    def __init__(self, mechanism: str, source_db: str, lookup: Callable[[str, str], User | None]) -> None:
        if mechanism not in MECHANISMS:
            raise AuthFailed(
                f"Received authentication for mechanism {mechanism} which is unknown or not enabled", code=334
            )
        self.mechanism = mechanism
        self.source_db = source_db
        self._lookup = lookup
        self._digest = _DIGEST[mechanism]
        self.user: User | None = None
        self._keys: _Keys | None = None
        self._auth_message = b""
        self.done = False

    def start(self, payload: bytes) -> bytes:
        if not payload.startswith((b"n,", b"y,")):
            raise AuthFailed("SCRAM channel binding is not supported", code=17)
        bare = payload.split(b",", 2)[2] if payload.count(b",") >= 2 else b""
        fields = _parse(bare)
        name = fields.get("n", "").replace("=2C", ",").replace("=3D", "=")
        client_nonce = fields.get("r", "")
        if not name or not client_nonce:
            raise AuthFailed("malformed SCRAM client-first message", code=17)
        user = self._lookup(name, self.source_db)
        if user is None or self.mechanism not in user.keys:
            raise AuthFailed()
        self.user, self._keys = user, user.keys[self.mechanism]
        nonce = client_nonce + base64.b64encode(os.urandom(24)).decode()
        server_first = f"r={nonce},s={base64.b64encode(self._keys.salt).decode()},i={self._keys.iterations}".encode()
        self._auth_message = bare + b"," + server_first
        self._nonce = nonce
        return server_first

    def finish(self, payload: bytes) -> bytes:
        if self._keys is None:
            raise AuthFailed("No SASL session state found", code=17)
        fields = _parse(payload)
        proof_b64 = fields.get("p", "")
        if fields.get("r") != self._nonce or not proof_b64:
            raise AuthFailed()
        without_proof = payload[: payload.rfind(b",p=")]
        auth_message = self._auth_message + b"," + without_proof
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError as exc:
            raise AuthFailed() from exc
        signature = hmac.new(self._keys.stored_key, auth_message, self._digest).digest()
        if len(proof) != len(signature):
            raise AuthFailed()
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self._digest, client_key).digest(), self._keys.stored_key):
            raise AuthFailed()
        self.done = True
        server_signature = hmac.new(self._keys.server_key, auth_message, self._digest).digest()
        return b"v=" + base64.b64encode(server_signature)
