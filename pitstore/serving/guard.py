"""The door of the scoring API: every request passes here before any route.

In this order, each answered without reading further:

1. the request's arrival time (``scope["state"]["arrived"]``): now, less the
   event loop's recent lag (``admission.LoopLag``: the bytes were in before
   the loop got to them); its deadline counts from here, body read included;
2. authentication: a bearer key with the path's scope (401 / 403); only
   ``OPEN_PATHS`` need none;
3. a body must be JSON (415 otherwise: a browser can post ``text/plain``
   cross-origin without a preflight, JSON needs one);
4. a declared content-length over the limit: 413 before reading a byte; a
   chunked body is cut off with a 413 the moment it passes the limit;
5. the body must arrive within ``body_timeout_s``: a client stalled mid-body,
   or one that declared more bytes than it sent, gets a 408 and its
   connection is closed. A client that leaves mid-body is counted and logged
   in one line (at most one line per ``LOG_EVERY_S``), never a traceback.

The body is read here and handed to the route as one message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pitstore.serving.admission import LoopLag
from pitstore.serving.auth import KeyRing
from pitstore.serving.metrics import Metrics

log = logging.getLogger("pitstore.serving")
# Health checks and the Prometheus scrape need no key: orchestrators and
# scrapers carry none, and these expose no transaction data (docs/security.md).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
SCOPED_PREFIXES = (
    ("/v1/score", "score"),
    ("/v1/prescreen", "prescreen"),
    ("/v1/decisions/", "decisions:read"),
)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
LOG_EVERY_S = 10.0


def required_scope(path: str) -> str | None:
    """The scope ``path`` needs; None: any valid key (docs, unknown paths)."""
    for prefix, scope in SCOPED_PREFIXES:
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return scope
    return None


async def answer(
    send: Send,
    status: int,
    error: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    close: bool = False,
) -> None:
    body = json.dumps({"error": error}).encode()
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    if close:  # uvicorn closes the connection after a response that says so
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        keys: KeyRing,
        metrics: Metrics,
        max_body: int,
        body_timeout_s: float,
        lag: LoopLag,
    ) -> None:
        self.app = app
        self.lag = lag
        self.keys = keys
        self.metrics = metrics
        self.max_body = max_body
        self.body_timeout_s = body_timeout_s
        self._logged_at = -LOG_EVERY_S
        self._unlogged = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = time.perf_counter() - self.lag.value
        scope.setdefault("state", {})["arrived"] = arrived
        path: str = scope["path"]
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        key = self.keys.find(headers.get(b"authorization"))
        if key is None:
            self.metrics.auth_failures.labels("401").inc()
            challenge = [(b"www-authenticate", b'Bearer realm="pitstore"')]
            await answer(
                send, 401, "a valid API key is required (Authorization: Bearer <key>)", challenge
            )
            return
        scope_needed = required_scope(path)
        if scope_needed is not None and scope_needed not in key.scopes:
            self.metrics.auth_failures.labels("403").inc()
            await answer(send, 403, f"this API key lacks the {scope_needed!r} scope")
            return
        scope["state"]["api_key"] = key.name
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if media != b"application/json":
            self.metrics.http_refused.labels("media_type").inc()
            await answer(
                send, 415, "the body must be JSON (content-type: application/json)", close=True
            )
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await self.too_large(send)
            return
        body = await self.read_body(receive, send)
        if body is None:
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None when the request was answered (408/413) or left."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # http.disconnect
                        self.disconnected()
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        await self.too_large(send)
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            self.metrics.http_refused.labels("body_timeout").inc()
            self.note(f"a request body did not arrive within {self.body_timeout_s} s (408)")
            await answer(
                send,
                408,
                f"the request body did not arrive within {self.body_timeout_s} s",
                close=True,
            )
            return None

    async def too_large(self, send: Send) -> None:
        self.metrics.http_refused.labels("too_large").inc()
        # close: the rest of the body is not read, so the connection cannot carry on
        await answer(send, 413, f"request body exceeds {self.max_body} bytes", close=True)

    def disconnected(self) -> None:
        self.metrics.http_refused.labels("disconnect").inc()
        self.note("a client disconnected before sending its whole request")

    def note(self, what: str) -> None:
        """One log line per LOG_EVERY_S at most: a flood of stalled or vanishing
        clients must not flood the log (1,002 tracebacks, 3.4 MB, were seen)."""
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY_S:
            self._unlogged += 1
            return
        more = f" (and {self._unlogged} more since the last such line)" if self._unlogged else ""
        log.warning("%s%s", what, more)
        self._logged_at, self._unlogged = now, 0
