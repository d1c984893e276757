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
import itertools
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
BCRYPT_WAIT_S = 2.0  # how long a login for an existing user may wait for a busy bcrypt slot before a 429
BCRYPT_WAITERS = 4  # logins waiting at once: half of the server's 8 threads stay free for remembered credentials
FAILURE_BURST = 5  # failed checks a client may make at once (typos, a rotated secret) ...
FAILURE_REFILL_S = 2.0  # ... then one more per this many seconds
TRACKED_CLIENTS = 4096  # (client address, user known?) pairs whose failure budget is remembered
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


class _Ticket:
    __slots__ = ("evicted", "rank", "seq")

    def __init__(self, rank: int, seq: int) -> None:
        self.rank, self.seq, self.evicted = rank, seq, False

    def order(self) -> tuple[int, int]:
        return self.rank, self.seq


class _Slots:
    """`slots` bcrypt slots, and at most `waiters` logins waiting for one, served best rank first, then in order
    of arrival. A waiter of a better rank arriving when the queue is full takes the place of the newest waiter of
    a worse rank (who is refused at once); otherwise a full queue refuses at once."""

    def __init__(self, slots: int, waiters: int) -> None:
        self._free, self._waiters = slots, waiters
        self._queue: list[_Ticket] = []
        self._arrivals = itertools.count()
        self._changed = threading.Condition()

    def acquire(self, *, wait_s: float, rank: int) -> bool:
        with self._changed:
            if self._free and not self._queue:
                self._free -= 1
                return True
            if wait_s <= 0:
                return False
            ticket = _Ticket(rank, next(self._arrivals))
            if len(self._queue) >= self._waiters:
                worst = max(self._queue, key=_Ticket.order)
                if worst.rank <= rank:
                    return False
                worst.evicted = True
                self._queue.remove(worst)
                self._changed.notify_all()
            self._queue.append(ticket)
            deadline = time.monotonic() + wait_s
            while not ticket.evicted:
                if self._free and min(self._queue, key=_Ticket.order) is ticket:
                    self._queue.remove(ticket)
                    self._free -= 1
                    self._changed.notify_all()  # another slot may be free for the next waiter
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._queue.remove(ticket)
                    self._changed.notify_all()  # the next waiter may now be first
                    return False
                self._changed.wait(remaining)
            return False

    def waiting(self) -> int:
        with self._changed:
            return len(self._queue)

    def release(self) -> None:
        with self._changed:
            self._free += 1
            self._changed.notify_all()


class _Budget(NamedTuple):
    tokens: float
    when: float
    unsettled: bool  # asked for a bcrypt (refused, busy or failed) and has not succeeded since


class LoginLimiter:
    """What wrong passwords may cost, shared by every `BasicAuth` of the process (so a reload does not reset it).

    - At most `slots` bcrypt checks run at once. A login for a user name that does not exist never waits for one:
      it is refused at once (429) when they are busy. A login for an existing user waits for one at most `wait_s`,
      with at most `waiters` logins waiting (so most of the server's threads stay free for credentials already
      verified, which need no bcrypt): clients that have not been asking for bcrypt without success go first.
    - Each (client address, user known or not) has a budget of failed checks: `burst` at once (typos, a rotated
      secret), then one more every `refill_s`. Out of budget, it is refused without a bcrypt. Successes cost no
      budget. Failures for unknown user names spend their own budget, never the one of logins for existing users.
    - At most `clients` budgets are remembered (least recently used dropped first), so memory is bounded.
    """

    def __init__(
        self,
        *,
        slots: int = BCRYPT_SLOTS,
        wait_s: float = BCRYPT_WAIT_S,
        waiters: int = BCRYPT_WAITERS,
        burst: int = FAILURE_BURST,
        refill_s: float = FAILURE_REFILL_S,
        clients: int = TRACKED_CLIENTS,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slots = _Slots(slots, waiters)
        self._wait_s = wait_s
        self._burst, self._refill_s, self._clients, self._now = burst, refill_s, clients, now
        self._budgets: OrderedDict[tuple[str, bool], _Budget] = OrderedDict()
        self._lock = threading.Lock()

    def begin(self, client: str, *, known: bool = True) -> float:
        """0.0 if a bcrypt may run now (a slot is then held: call `end`), else the seconds to wait. `known`: the
        user name exists (only such a login waits for a busy slot)."""
        key = (client, known)
        with self._lock:
            budget = self._budget(key)
            self._keep(key, budget._replace(unsettled=True))
        if budget.tokens < 1:
            return (1 - budget.tokens) * self._refill_s
        rank = 1 if budget.unsettled else 0
        if not self._slots.acquire(wait_s=self._wait_s if known else 0.0, rank=rank):
            return BUSY_RETRY_S
        return 0.0

    def end(self, client: str, *, known: bool = True, failed: bool) -> None:
        """Release the slot `begin` gave; a failed check spends one unit of the budget of (client, known)."""
        self._slots.release()
        key = (client, known)
        with self._lock:
            budget = self._budget(key)
            if failed:
                self._keep(key, _Budget(budget.tokens - 1, self._now(), True))
            else:
                self._keep(key, budget._replace(unsettled=False))

    def waiting(self) -> int:
        """How many logins wait for a bcrypt slot now."""
        return self._slots.waiting()

    def _budget(self, key: tuple[str, bool]) -> _Budget:
        budget = self._budgets.get(key)
        if budget is None:
            return _Budget(self._burst, self._now(), False)
        tokens = min(self._burst, budget.tokens + (self._now() - budget.when) / self._refill_s)
        return _Budget(tokens, self._now(), budget.unsettled)

    def _keep(self, key: tuple[str, bool], budget: _Budget) -> None:
        self._budgets[key] = budget
        self._budgets.move_to_end(key)
        while len(self._budgets) > self._clients:
            self._budgets.popitem(last=False)


class AcceptedCredentials:
    """Credentials bcrypt accepted, remembered under an HMAC of the user, the hash it matched and the password,
    with a key made at start: the cache never holds a password or an unkeyed hash of one. Shared by the
    `BasicAuth` of every reload, so a credential stays accepted while its user's hash stays the same (a new hash,
    or no user, makes a different key). Bounded: least recently used dropped first."""

    def __init__(self, size: int = AUTH_CACHE_SIZE) -> None:
        self._key = os.urandom(32)
        self._kept: OrderedDict[bytes, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def key(self, user: bytes, hashed: bytes, password: bytes) -> bytes:
        # Length-prefixed, so ("ab", "c") and ("a", "bc") are different credentials.
        parts = b"".join(len(part).to_bytes(8, "big") + part for part in (user, hashed))
        return hmac.digest(self._key, parts + password, hashlib.sha256)

    def __contains__(self, key: bytes) -> bool:
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return True
            return False

    def add(self, key: bytes) -> None:
        with self._lock:
            self._kept[key] = None
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)


class BasicAuth:
    """Checks HTTP Basic credentials against bcrypt hashes, without revealing which part was wrong.

    - Every user name is compared in constant time, and an unknown user costs the same bcrypt as a known one,
      so the answer never tells whether a user exists. (Under a flood, whether a login waits for bcrypt or is
      refused at once does: user names are not the secret, passwords are.)
    - bcrypt is slow on purpose (about 0.07 s at cost 10 here). Only successes are remembered
      (`AcceptedCredentials`): a scraper pays bcrypt once, even across reloads that keep its user's hash, and
      wrong guesses, which are never remembered, cannot push a scraper's credential out.
    - Checks that need bcrypt go through the `LoginLimiter`: bounded concurrency and a failure budget per client.
    - Thread-safe; bcrypt runs outside the lock.
    """

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        cache_size: int = AUTH_CACHE_SIZE,
        limiter: LoginLimiter | None = None,
        accepted: AcceptedCredentials | None = None,
    ) -> None:
        if not users:
            raise ValueError("BasicAuth needs at least one user")
        self._users = [(name.encode("utf-8"), hashed) for name, hashed in users.items()]
        self._decoy = self._users[0][1]  # same cost as a real hash, so an unknown user takes as long
        self._accepted = accepted or AcceptedCredentials(cache_size)
        self._limiter = limiter or LoginLimiter()
        self._lock = threading.Lock()
        self.bcrypt_runs = 0  # how often a check had to run bcrypt; lets tests see the cache work

    def __call__(self, user: str, password: str, client: str = "") -> bool:
        return self.check(user, password, client).verdict is Verdict.ALLOWED

    def check(self, user: str, password: str, client: str = "") -> Check:
        """The verdict on these credentials presented by `client` (its address: the failure budget's key)."""
        user_bytes, password_bytes = user.encode("utf-8"), password.encode("utf-8")
        hashed = self._hash_of(user_bytes)
        key = self._accepted.key(user_bytes, hashed or b"", password_bytes)
        if hashed is not None and key in self._accepted:
            return ALLOWED
        known = hashed is not None
        wait_s = self._limiter.begin(client, known=known)
        if wait_s:
            return Check(Verdict.THROTTLED, wait_s)
        allowed = False
        try:
            allowed = self._verify(hashed, password_bytes)
        finally:
            self._limiter.end(client, known=known, failed=not allowed)
        if not allowed:
            return DENIED
        self._accepted.add(key)
        return ALLOWED

    def _hash_of(self, user: bytes) -> bytes | None:
        hashed = None
        for name, candidate in self._users:  # no early exit: the time does not depend on which user matched
            if hmac.compare_digest(name, user):
                hashed = candidate
        return hashed

    def _verify(self, hashed: bytes | None, password: bytes) -> bool:
        with self._lock:
            self.bcrypt_runs += 1
        # bcrypt reads 72 bytes; Go's bcrypt (exporter-toolkit) ignores the rest, bcrypt 5 would raise.
        matched = bcrypt.checkpw(password[:MAX_BCRYPT_PASSWORD_BYTES], hashed or self._decoy)
        return matched and hashed is not None


class WebAccess:
    """The web config in force and its credential check, swapped whole by `reload()` (on SIGHUP).

    `check()` decides each request with the users and open paths in force when it arrives; the server reads
    `config.tls` for each new connection. The `LoginLimiter` and the `AcceptedCredentials` outlive reloads, so a
    reload forgets no failure and no accepted credential whose user and hash it keeps.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, limiter: LoginLimiter | None = None) -> None:
        self.path = str(path or "")
        self.limiter = limiter or LoginLimiter()
        self.accepted = AcceptedCredentials()  # outlives reloads: a user whose hash is unchanged stays accepted
        self._current = self._build(load_web_config(self.path))  # raises WebConfigError
        self._reload_lock = threading.Lock()
        self._stuck: threading.Thread | None = None  # a read a reload gave up on, still running

    def _build(self, config: WebConfig) -> tuple[WebConfig, BasicAuth | None]:
        """The config and its credential check; no check when it names no user (no authentication)."""
        if not config.users:
            return config, None
        return config, BasicAuth(config.users, limiter=self.limiter, accepted=self.accepted)

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
