"""HTTP routes: the WSGI app with every route. The only module that imports bottle.

Every handler answers from one `store.view()`: no handler does I/O to MongoDB, so a slow or dead cluster can
never slow an HTTP answer. Routes:

    PUT|GET /mhp.zeroproblem.mongo.replcationlag   the Zero Problem status document (JSON; a PUT body is ignored)
    GET /liveness                                  200/503 JSON: is the exporter doing its job (Zero Problem)
    GET /-/healthy                                 200 text while the process serves (orchestrators' liveness)
    GET /-/ready                                   200 text once the first poll ended, whatever its result; 503 before
    GET /metrics                                   Prometheus text or OpenMetrics, by Accept (--web.telemetry-path)
    GET /                                          a self-refreshing HTML status page, no JavaScript

HEAD works wherever GET does. Errors are small JSON documents, never a stack trace. With a `WebAccess`,
`create_app` answers 401 to any request without accepted HTTP Basic credentials (except the paths left open), and
429 to a client whose failures are over budget. The document comes from the bridge the process hands over, the page
from `web.page`; `web.server` serves the app. Imports `liveness`, `metrics`, `store`, `view`, `web.access` (who may
read), `web.page` and `web.server` (its body cap and error format).
"""

from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import bottle

from replicationlag.liveness import liveness_document
from replicationlag.metrics import render
from replicationlag.store import SnapshotStore
from replicationlag.view import View
from replicationlag.web.access import Verdict, WebAccess
from replicationlag.web.page import page_key, render_status_page
from replicationlag.web.server import COMMON_HEADERS, DEFAULT_MAX_BODY_BYTES, error_document

HEALTHY_PATH = "/-/healthy"  # Prometheus's own names for "the process serves" and "it has finished starting"
READY_PATH = "/-/ready"
READ = ["GET", "HEAD"]  # listed explicitly so that a 405's Allow header names HEAD too

_CHALLENGE = 'Basic realm="replicationlag", charset="UTF-8"'
# The status page has no script and loads nothing: forbid both, allow only its own inline style.
_PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'"


class _ClientError(bottle.HTTPError):
    """An error caused by the request, whose text is ours and safe to show to the client."""


class DocumentBridge(Protocol):
    """What the app needs of the Zero Problem contract (bridge.py, handed over by the process): where the document
    is served, the document for a view, and what in a view changes it."""

    PATH: str

    def status_document(self, view: View, page_url: str = "") -> dict: ...

    def document_key(self, view: View) -> tuple: ...


def create_app(
    store: SnapshotStore,
    registry: object,
    bridge: DocumentBridge,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    access: WebAccess | None = None,
    metrics_path: str = "/metrics",
    page_url: str = "",
) -> bottle.Bottle:
    """The WSGI app: every route reads `store.view()`; `registry` is what `metrics_path` (--web.telemetry-path,
    checked by config against the other routes) renders; `bridge` makes the Zero Problem document (bridge.py: the
    package does not import it, the process hands it over).

    `max_body_bytes` is the same cap the server is given (it refuses bigger bodies before buffering them); the
    app checks it too, for a WSGI server that does not.

    With `access` (the web config in force) every request it does not leave open needs HTTP Basic credentials it
    accepts; any other request gets a 401 with `WWW-Authenticate` before routing, so without credentials even an
    unknown path or a wrong method says nothing more than 401. A client that failed too often, or arrives while
    bcrypt is busy with others, gets a 429 with `Retry-After` and no bcrypt is run for it.

    `page_url` is the status page's address as readers reach it (--web.external-url), named in the document.
    """
    app = bottle.Bottle()
    kept = _Rendered(store)

    if access is not None:

        @app.hook("before_request")  # registered first, so it runs before every other hook and the router
        def require_credentials() -> None:
            environ = bottle.request.environ
            credentials = basic_credentials(environ.get("HTTP_AUTHORIZATION", ""))
            verdict, retry_after_s = access.check(
                environ.get("PATH_INFO", ""), credentials, environ.get("REMOTE_ADDR", "")
            )
            if verdict is Verdict.DENIED:
                raise _ClientError(401, "valid credentials required", **{"WWW-Authenticate": _CHALLENGE})
            if verdict is Verdict.THROTTLED:
                retry = str(max(1, math.ceil(retry_after_s)))
                raise _ClientError(429, f"too many failed logins: retry in {retry} s", **{"Retry-After": retry})

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

    def document(view: View) -> bytes:
        return _json(bridge.status_document(view, page_url)).encode()

    def page(view: View) -> bytes:
        return render_status_page(view, document_path=bridge.PATH, metrics_path=metrics_path).encode()

    @app.route(bridge.PATH, method=["PUT", *READ])
    def zero_problem() -> bytes:
        # The consumer PUTs to ask for the status; what it sends is neither read nor stored.
        bottle.response.content_type = "application/json"
        return kept.get("document", bridge.document_key, document)

    @app.route("/liveness", method=READ)
    def liveness() -> str:
        status, document = liveness_document(store.view())
        bottle.response.status = status
        return _json(document)

    # The orchestrators' probes, as Prometheus answers them: plain text, nothing about the cluster. A pod whose
    # cluster is unreachable stays alive and in its Service (its document says RED and why); /liveness is Zero
    # Problem's "is it collecting", which a restart would not fix.
    @app.route(HEALTHY_PATH, method=READ)
    def healthy() -> str:
        bottle.response.content_type = "text/plain; charset=utf-8"
        return "replicationlag is healthy.\n"

    @app.route(READY_PATH, method=READ)
    def ready() -> str:
        bottle.response.content_type = "text/plain; charset=utf-8"
        if store.polls_ended() == 0:
            bottle.response.status = 503
            return "replicationlag is not ready: the first poll has not ended.\n"
        return "replicationlag is ready.\n"

    @app.route(metrics_path, method=READ)
    def prometheus_metrics() -> bytes:
        body, content_type = render(registry, bottle.request.get_header("Accept"))
        bottle.response.content_type = content_type
        bottle.response.set_header("Vary", "Accept")  # the format follows Accept: a cache must not mix them
        return body

    @app.route("/", method=READ)
    def status_page() -> bytes:
        bottle.response.content_type = "text/html; charset=utf-8"
        bottle.response.set_header("Content-Security-Policy", _PAGE_CSP)
        return kept.get("page", page_key, page)

    app.default_error_handler = _error_document
    return app


class _Rendered:
    """Bytes rendered once per key and served to every request until the key changes. A key holds what the
    answer shows that changes: the poll it shows (a new one at each publish), and the ages it prints.

    Computing a key takes a view, which grows with the cluster, so a request does not: it compares the store's
    freshness key (which moves at each publish and when data turns stale) with the one the kept bytes were
    checked against, and the clock with the next whole second of any age the view holds (keys print ages in whole
    seconds). Only when one of those moved is the key computed again, and the bytes rendered again if it changed.
    """

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store
        self._kept: dict[str, _Kept] = {}
        self._lock = threading.Lock()

    def get(self, name: str, key_of: Callable[[View], tuple], render: Callable[[View], bytes]) -> bytes:
        freshness = self._store.freshness_key()
        kept = self._kept.get(name)  # no lock: a request between two renders waits for nobody
        if kept is not None and kept.freshness == freshness and self._store.now_s() < kept.until_s:
            return kept.body
        with self._lock:
            view = self._store.view()  # taken after `freshness`: never older than what it is kept under
            key = key_of(view)
            kept = self._kept.get(name)
            body = kept.body if kept is not None and kept.key == key else render(view)
            # The ages an answer prints move in whole seconds: until the next one passes, these bytes hold.
            until = view.next_age_change_s()
            self._kept[name] = _Kept(freshness, key, until, body)
            return body


@dataclass(frozen=True)
class _Kept:
    freshness: tuple  # the store's freshness key the bytes were checked against
    key: tuple  # the answer's own key (the bridge's document_key, page.page_key)
    until_s: float  # store clock: check the key again from then on
    body: bytes


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


def _error_document(error: bottle.HTTPError) -> bytes:
    # Bottle's own texts may quote the request (404) or carry the exception (500): say only the status.
    _set_common_headers()
    bottle.response.content_type = "application/json"
    return error_document(error.status_code, error.body if isinstance(error, _ClientError) else None)


def _set_common_headers() -> None:
    for name, value in COMMON_HEADERS.items():
        bottle.response.set_header(name, value)


def _json(document: dict) -> str:
    bottle.response.content_type = "application/json"
    return json.dumps(document, ensure_ascii=False) + "\n"
