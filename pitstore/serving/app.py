"""The scoring API (FastAPI). Routes are thin; the flow lives in ``serving.service``.

POST /v1/score                 a transaction -> a logged decision
GET  /v1/decisions/{id}        the logged decision, as written to the audit log
GET  /healthz                  the process is up
GET  /readyz                   Redis answers within budget and a model is loaded
GET  /metrics                  Prometheus
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pitstore.serving.audit import AuditError, AuditLog, find_decision
from pitstore.serving.metrics import Metrics
from pitstore.serving.schemas import (
    DecisionRecord,
    ErrorResponse,
    ScoreRequest,
    time_window_error,
)
from pitstore.serving.scoring import Model
from pitstore.serving.service import ScoringService
from pitstore.serving.settings import ServingSettings

log = logging.getLogger("pitstore.serving")


def load_model(settings: ServingSettings) -> Model | None:
    """The configured model version via the training registry; None if unavailable."""
    try:
        from pitstore.models.fast_model import with_fast_path
        from pitstore.models.registry import load_model as registry_load

        return with_fast_path(  # type: ignore[no-any-return]
            registry_load(settings.pitstore_settings(), settings.model_version)
        )
    except Exception as exc:  # serve fallback decisions rather than refuse to start
        log.error("no model loaded (%s): every decision will be a fallback", exc)
        return None


def invalid(fields: list[dict[str, str]]) -> JSONResponse:
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return JSONResponse(
        status_code=422, content={"error": f"invalid request: {message}", "fields": fields}
    )


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with a 422 naming ``body`` (chunked too)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self.too_big(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self.too_big(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def too_big(self, scope: Scope, receive: Receive, send: Send) -> None:
        # built only when needed: a JSONResponse per request was measurable
        message = f"request body exceeds {self.limit} bytes"
        await invalid([{"field": "body", "message": message}])(scope, receive, send)


def freeze_startup_heap() -> None:
    """Move everything start-up made (feast, sklearn, the model: ~230k objects)
    out of the cyclic garbage collector's reach.

    Why: a full (generation 2) collection walks every tracked object, and with
    the start-up heap that took 20-190 ms (measured with ``gc.callbacks`` under
    load), stalling the event loop and every request in flight: it was the
    p99, and it made Redis reads overrun their deadline. Frozen objects are
    never scanned (nor freed, which is right: they live as long as the process);
    request garbage is still collected as usual."""
    gc.collect()
    gc.freeze()


# async on purpose: FastAPI runs a plain ``def`` dependency in its threadpool,
# two thread round trips per request that profiled at ~20% of the GIL time.
async def get_service(request: Request) -> ScoringService:
    return request.app.state.service  # type: ignore[no-any-return]


Service = Annotated[ScoringService, Depends(get_service)]


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or ServingSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics = Metrics()
        audit = AuditLog(
            settings.resolved_audit_dir,
            settings.audit_rotate_mb * 2**20,
            fsync_on_thread=settings.audit_fsync_thread,
            on_flush=metrics.audit_flush.observe,
            prefill_bytes=settings.audit_prefill_kb * 2**10,
        )
        app.state.service = ScoringService(settings, load_model(settings), audit, metrics)
        freeze_startup_heap()
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        try:
            yield
        finally:
            await app.state.service.aclose()

    app = FastAPI(title="pitstore scoring", version="1", lifespan=lifespan)
    app.state.settings = settings
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if request.url.path == "/v1/score":
            request.app.state.service.metrics.requests.labels("422", "", "").inc()
        fields = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            fields.append({"field": ".".join(loc) or "body", "message": str(err.get("msg"))})
        return invalid(fields)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(status_code=503, content={"error": "internal error; no decision"})

    # The body is validated here, not by FastAPI's dependency resolution: that
    # machinery cost ~0.3 ms of CPU per request (profiled), a fifth of the
    # request. Errors take the same path as FastAPI's own (``on_invalid``), and
    # the OpenAPI schema still documents the body.
    @app.post(
        "/v1/score",
        response_model=DecisionRecord,
        responses={422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ScoreRequest.model_json_schema()}},
            }
        },
    )
    async def score(request: Request) -> Response:
        try:
            req = ScoreRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
            ) from exc
        service: ScoringService = request.app.state.service
        now = datetime.now(UTC)
        started = time.perf_counter()
        problem = time_window_error(req, now, settings.max_clock_skew_s, settings.max_event_age_s)
        m = service.metrics
        if problem:
            m.requests.labels("422", "", "").inc()
            return invalid([{"field": "event_ts", "message": problem}])
        try:
            record, line = await service.score(req, started, now)
        except AuditError as exc:
            log.error("%s", exc)
            m.requests.labels("503", "", "").inc()
            return JSONResponse(
                status_code=503,
                content={"error": "audit log unavailable: no decision was made", "retry": True},
            )
        m.latency.observe(time.perf_counter() - started)
        m.requests.labels("200", record["decision"], str(record["fallback"] or "false")).inc()
        # The audit line is this record's JSON already (non-ASCII escaped): reuse it.
        return Response(line, media_type="application/json")

    # Served by a plain Starlette route, matched before the FastAPI one (which
    # stays, for the OpenAPI schema): FastAPI's route wrapper (dependency
    # solving, endpoint plumbing) cost ~10% of a request's CPU (measured, 32
    # connections: 0.507 -> 0.459 ms per request). Exception handlers are the
    # app's either way, so errors answer exactly as before.
    lean = Route("/v1/score", score, methods=["POST"], include_in_schema=False)
    app.router.routes.insert(0, lean)

    @app.get(
        "/v1/decisions/{decision_id}",
        response_model=DecisionRecord,
        responses={404: {"model": ErrorResponse}},
    )
    async def decision(decision_id: str) -> JSONResponse:
        record = await asyncio.to_thread(find_decision, settings.resolved_audit_dir, decision_id)
        if record is None:
            return JSONResponse(
                status_code=404, content={"error": f"no decision {decision_id!r} in the audit log"}
            )
        return JSONResponse(record)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(service: Service) -> JSONResponse:
        state: dict[str, Any] = await service.ready()
        ok = state["redis"] and state["model_loaded"]
        return JSONResponse(status_code=200 if ok else 503, content={"ready": ok, **state})

    @app.get("/metrics")
    async def metrics(service: Service) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
