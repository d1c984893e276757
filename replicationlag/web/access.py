"""Who may read each request: the web config in force (`WebAccess`, swapped whole on reload), HTTP Basic
credentials checked against its bcrypt hashes (`BasicAuth`), and what wrong passwords may cost (`LoginLimiter`).

`BasicAuth` checks presented credentials in constant time, remembers the accepted ones, and runs bcrypt under a
`LoginLimiter` (bounded concurrency, a failure budget per client). `WebAccess` holds the config in force and
re-reads the file on `reload()`. The only importer of `bcrypt`; imports `web.webconfig` (the file).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import NamedTuple

import bcrypt

from replicationlag.web.webconfig import WebConfig, WebConfigError, load_web_config

AUTH_CACHE_SIZE = 256  # accepted credentials kept; a scraper presents one, so this covers many scrapers
BCRYPT_SLOTS = 1  # bcrypt checks running at once: a flood of guesses uses one core at most, never every thread
FAILURE_BURST = 5  # failed checks a client may make at once (typos, a rotated secret) ...
FAILURE_REFILL_S = 2.0  # ... then one more per this many seconds
TRACKED_CLIENTS = 4096  # client addresses whose failure budget is remembered
BUSY_RETRY_S = 1.0  # Retry-After when every bcrypt slot was busy
RELOAD_DEADLINE_S = 5.0  # a reload that cannot read the file within this gives up and keeps the config in force
MAX_BCRYPT_PASSWORD_BYTES = 72  # bcrypt reads no further; bcrypt 5 refuses longer passwords outright


class Verdict(enum.Enum):
    """What a request's credentials earned it."""

    ALLOWED = "allowed"
    DENIED = "denied"  # 401: no, wrong or unknown credentials
    THROTTLED = "throttled"  # 429: not checked, because its client failed too often or bcrypt is busy


class Check(NamedTuple):
    verdict: Verdict
    retry_after_s: float = 0.0  # for THROTTLED: when trying again can be checked


ALLOWED = Check(Verdict.ALLOWED)
DENIED = Check(Verdict.DENIED)


class LoginLimiter:
    """What wrong passwords may cost, shared by every `BasicAuth` of the process (so a reload does not reset it).

    - At most `slots` bcrypt checks run at once. A check that finds them all busy is refused at once (429) rather
      than waiting on one of the server's few worker threads: a flood of guesses waits on itself, and the threads
      stay free for credentials already verified (which need no bcrypt).
    - Each client address has a budget of failed checks: `burst` at once (typos, a rotated secret), then one more
      every `refill_s`. A client out of budget is refused without a bcrypt. Successes cost no budget.
    - At most `clients` addresses are remembered (least recently failed dropped first), so memory is bounded.
    """

    def __init__(
        self,
        *,
        slots: int = BCRYPT_SLOTS,
        burst: int = FAILURE_BURST,
        refill_s: float = FAILURE_REFILL_S,
        clients: int = TRACKED_CLIENTS,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._burst, self._refill_s, self._clients, self._now = burst, refill_s, clients, now
        self._budgets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, when)
        self._lock = threading.Lock()

    def begin(self, client: str) -> float:
        """0.0 if a bcrypt may run now (a slot is then held: call `end`), else the seconds to wait."""
        with self._lock:
            tokens = self._tokens(client)
        if tokens < 1:
            return (1 - tokens) * self._refill_s
        if not self._slots.acquire(blocking=False):
            return BUSY_RETRY_S
        return 0.0

    def end(self, client: str, *, failed: bool) -> None:
        """Release the slot `begin` gave; a failed check spends one unit of the client's budget."""
        self._slots.release()
        if not failed:
            return
        with self._lock:
            self._budgets[client] = (self._tokens(client) - 1, self._now())
            self._budgets.move_to_end(client)
            while len(self._budgets) > self._clients:
                self._budgets.popitem(last=False)

    def _tokens(self, client: str) -> float:
        tokens, when = self._budgets.get(client, (self._burst, 0.0))
        return min(self._burst, tokens + (self._now() - when) / self._refill_s)


class BasicAuth:
    """Checks HTTP Basic credentials against bcrypt hashes, without revealing which part was wrong.

    - Every user name is compared in constant time, and an unknown user costs the same bcrypt as a known one,
      so neither timing nor answer tells whether a user exists.
    - bcrypt is slow on purpose (about 0.07 s at cost 10 here). Only successes are remembered, under an HMAC of
      the presented user and password with a key made at start: a scraper pays bcrypt once, the cache never holds
      a password or an unkeyed hash of one, its size is bounded (least recently used dropped first), and wrong
      guesses, which are never remembered, cannot push a scraper's credential out.
    - Checks that need bcrypt go through the `LoginLimiter`: bounded concurrency and a failure budget per client.
    - Thread-safe; bcrypt runs outside the lock.
    """

    def __init__(
        self, users: Mapping[str, bytes], *, cache_size: int = AUTH_CACHE_SIZE, limiter: LoginLimiter | None = None
    ) -> None:
        if not users:
            raise ValueError("BasicAuth needs at least one user")
        self._users = [(name.encode("utf-8"), hashed) for name, hashed in users.items()]
        self._decoy = self._users[0][1]  # same cost as a real hash, so an unknown user takes as long
        self._cache_key = os.urandom(32)
        self._cache: OrderedDict[bytes, None] = OrderedDict()  # keys of credentials bcrypt accepted
        self._cache_size = cache_size
        self._limiter = limiter or LoginLimiter()
        self._lock = threading.Lock()
        self.bcrypt_runs = 0  # how often a check had to run bcrypt; lets tests see the cache work

    def __call__(self, user: str, password: str, client: str = "") -> bool:
        return self.check(user, password, client).verdict is Verdict.ALLOWED

    def check(self, user: str, password: str, client: str = "") -> Check:
        """The verdict on these credentials presented by `client` (its address: the failure budget's key)."""
        user_bytes, password_bytes = user.encode("utf-8"), password.encode("utf-8")
        # Length-prefixed, so ("ab", "c") and ("a", "bc") are different credentials.
        key = hmac.digest(
            self._cache_key, len(user_bytes).to_bytes(8, "big") + user_bytes + password_bytes, hashlib.sha256
        )
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return ALLOWED
        wait_s = self._limiter.begin(client)
        if wait_s:
            return Check(Verdict.THROTTLED, wait_s)
        allowed = False
        try:
            allowed = self._verify(user_bytes, password_bytes)
        finally:
            self._limiter.end(client, failed=not allowed)
        if not allowed:
            return DENIED
        with self._lock:
            self._cache[key] = None
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return ALLOWED

    def _verify(self, user: bytes, password: bytes) -> bool:
        hashed = None
        for name, candidate in self._users:  # no early exit: the time does not depend on which user matched
            if hmac.compare_digest(name, user):
                hashed = candidate
        with self._lock:
            self.bcrypt_runs += 1
        # bcrypt reads 72 bytes; Go's bcrypt (exporter-toolkit) ignores the rest, bcrypt 5 would raise.
        matched = bcrypt.checkpw(password[:MAX_BCRYPT_PASSWORD_BYTES], hashed or self._decoy)
        return matched and hashed is not None


class WebAccess:
    """The web config in force and its credential check, swapped whole by `reload()` (on SIGHUP).

    `check()` decides each request with the users and open paths in force when it arrives; the server reads
    `config.tls` for each new connection. The `LoginLimiter` outlives reloads, so a reload forgets no failure.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, limiter: LoginLimiter | None = None) -> None:
        self.path = str(path or "")
        self.limiter = limiter or LoginLimiter()
        self._current = self._build(load_web_config(self.path))  # raises WebConfigError
        self._reload_lock = threading.Lock()
        self._stuck: threading.Thread | None = None  # a read a reload gave up on, still running

    def _build(self, config: WebConfig) -> tuple[WebConfig, BasicAuth | None]:
        """The config and its credential check; no check when it names no user (no authentication)."""
        return config, BasicAuth(config.users, limiter=self.limiter) if config.users else None

    @property
    def config(self) -> WebConfig:
        return self._current[0]

    def reload(self, deadline_s: float = RELOAD_DEADLINE_S) -> WebConfig:
        """Read the file again. A valid one replaces the settings in force (one assignment, so a request sees the
        old settings or the new, never a mix); an invalid one raises WebConfigError and changes nothing. An empty
        or comment-only file is invalid here (a file being written): a reload never drops users or TLS for it.

        The file is read in a thread of its own, waited for at most `deadline_s`: a read that hangs (a hung
        network file system) is given up as a WebConfigError, and no other read starts until it has returned, so
        at most one such thread is ever stuck. (FIFOs and devices are refused before any read.)"""
        with self._reload_lock:
            if self._stuck is not None and self._stuck.is_alive():
                raise WebConfigError(
                    f"--web.config.file {self.path}: not read again: an earlier read of it has not returned yet"
                )
            outcome: list = []

            def read() -> None:
                try:
                    outcome.append(load_web_config(self.path, empty_means_open=False))
                except BaseException as error:  # handed to the waiting thread, raised there
                    outcome.append(error)

            reader = threading.Thread(target=read, name="web-config-read", daemon=True)
            reader.start()
            reader.join(deadline_s)
            if not outcome:
                self._stuck = reader
                raise WebConfigError(
                    f"--web.config.file {self.path}: not read within {deadline_s:g} s (a hung file system?)"
                )
            if isinstance(outcome[0], BaseException):
                raise outcome[0]
            self._current = self._build(outcome[0])
            return self._current[0]

    def check(self, path: str, credentials: tuple[str, str] | None, client: str) -> Check:
        """Whether a request for `path` with these Basic credentials (None: none or malformed) may be served."""
        config, auth = self._current
        if auth is None or path in config.excluded_paths:
            return ALLOWED
        if credentials is None:
            return DENIED
        return auth.check(*credentials, client)
