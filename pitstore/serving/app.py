"""The scoring API (FastAPI). Routes are thin; the flow lives in ``serving.service``.

POST /v1/score                 a transaction -> a logged decision     (key scope: score)
POST /v1/prescreen             a loan application -> a logged         (key scope: prescreen)
                               pre-qualified / refer / decline
GET  /v1/decisions/{id}        the logged decision, as in the audit log (decisions:read)
GET  /healthz                  the process is up                      (no key)
GET  /readyz                   Redis answers, the online store is materialized, a model
                               is loaded, the audit log is writable;  (no key)
                               "prescreen": the same for the credit model
GET  /metrics                  Prometheus                             (no key)

Every request first passes ``serving.guard`` (keys, JSON only, body size and
read deadline); docs/security.md has the threat model.
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

from pitstore.serving.admission import SHED_BODY, LoopLag, Shed
from pitstore.serving.audit import AuditError, AuditLog, find_decision
from pitstore.serving.audit_chain import audit_key
from pitstore.serving.auth import CardTokenizer, KeyRing
from pitstore.serving.guard import Guard
from pitstore.serving.idempotency import Conflict
from pitstore.serving.metrics import Metrics
from pitstore.serving.prescreen import PrescreenService, load_credit_model
from pitstore.serving.schemas import (
    DecisionRecord,
    ErrorResponse,
    PrescreenRequest,
    ScoreRequest,
    time_window_error,
    ts_window_error,
)
from pitstore.serving.scoring import Model
from pitstore.serving.service import ScoringService
from pitstore.serving.settings import ServingSettings

log = logging.getLogger("pitstore.serving")


def load_model(settings: ServingSettings, version: str | None = None) -> Model | None:
    """A model version (default: the configured one) via the training registry;
    None if unavailable."""
    try:
        from pitstore.models.fast_model import with_fast_path
        from pitstore.models.registry import load_model as registry_load

        return with_fast_path(  # type: ignore[no-any-return]
            registry_load(settings.pitstore_settings(), version or settings.model_version)
        )
    except Exception as exc:  # serve fallback decisions rather than refuse to start
        if version is not None:
            log.error("shadow model %s not loaded (%s): logged as unavailable", version, exc)
        else:
            log.error("no model loaded (%s): every decision will be a fallback", exc)
        return None


def invalid(fields: list[dict[str, str]]) -> JSONResponse:
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return JSONResponse(
        status_code=422, content={"error": f"invalid request: {message}", "fields": fields}
    )


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
    """The app; raises auth.KeyConfigError for malformed keys (before serving anything)."""
    settings = settings or ServingSettings()
    keys = KeyRing.load(settings.api_keys, settings.api_keys_file)
    tokenize = CardTokenizer.from_settings(settings.card_token_key, settings.resolved_home)
    if not keys.keys:
        log.warning("no API keys configured: every /v1 request gets a 401 (pitstore keys new)")
    registry = Metrics()  # not `metrics`: the /metrics route below takes that name
    lag = LoopLag()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        audit = AuditLog(
            settings.resolved_audit_dir,
            settings.audit_rotate_mb * 2**20,
            on_flush=registry.audit_flush.observe,
            prefill_bytes=settings.audit_prefill_kb * 2**10,
            key=audit_key(settings, create=True),
        )
        shadow = settings.shadow_model_version
        service = ScoringService(
            settings,
            load_model(settings),
            audit,
            registry,
            tokenize,
            shadow=load_model(settings, shadow) if shadow else None,
        )
        known = await asyncio.to_thread(
            service.replays.load, settings.idempotency_window_s, datetime.now(UTC)
        )
        log.info("%d earlier decisions indexed for retries", known)
        app.state.service = service
        app.state.prescreen = PrescreenService(settings, load_credit_model(settings), service)
        lag.start()
        registry.admission_limit.set_function(lambda: service.admission.limit)
        registry.loop_lag.set_function(lambda: lag.value)
        freeze_startup_heap()
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        try:
            yield
        finally:
            await lag.stop()
            await app.state.prescreen.aclose()
            await app.state.service.aclose()

    app = FastAPI(title="pitstore scoring", version="1", lifespan=lifespan)
    app.state.settings = settings
    app.add_middleware(
        Guard,
        keys=keys,
        metrics=registry,
        max_body=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        lag=lag,
    )

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if request.url.path == "/v1/score":
            request.app.state.service.metrics.requests.labels("422", "", "").inc()
        elif request.url.path == "/v1/prescreen":
            request.app.state.service.metrics.prescreen_requests.labels("422", "", "").inc()
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
        service: ScoringService = request.app.state.service
        arrived: float = request.scope["state"]["arrived"]  # set by serving.guard
        if service.admission.overloaded(arrived + settings.budget_s):
            return shed(service.metrics, "queue")  # before any parsing: shedding must be cheap
        try:
            req = ScoreRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
            ) from exc
        now = datetime.now(UTC)
        problem = time_window_error(req, now, settings.max_clock_skew_s, settings.max_event_age_s)
        m = service.metrics
        if problem:
            m.requests.labels("422", "", "").inc()
            return invalid([{"field": "event_ts", "message": problem}])
        try:
            answer = await service.score(req, arrived, now)
        except Shed as exc:
            return shed(m, exc.reason)
        except Conflict as exc:
            m.requests.labels("409", "", "").inc()
            return JSONResponse(
                status_code=409, content={"error": str(exc), "decision_id": exc.decision_id}
            )
        except AuditError as exc:
            log.error("%s", exc)
            m.requests.labels("503", "", "").inc()
            return JSONResponse(
                status_code=503,
                content={"error": "audit log unavailable: no decision was made", "retry": True},
            )
        m.latency.observe(time.perf_counter() - arrived)
        record = answer.record
        if record is None:  # a retry: the first decision again
            m.requests.labels("200", "replay", "").inc()
            return Response(
                answer.line, media_type="application/json", headers={"idempotent-replay": "true"}
            )
        m.requests.labels("200", record["decision"], str(record["fallback"] or "false")).inc()
        # The audit line is this record's JSON already (non-ASCII escaped): reuse it.
        return Response(answer.line, media_type="application/json")

    shed_headers = {"retry-after": str(settings.retry_after_s)}

    def shed(m: Metrics, reason: str) -> Response:
        m.shed.labels(reason).inc()
        m.requests.labels("503", "", "").inc()
        return Response(SHED_BODY, 503, shed_headers, media_type="application/json")

    # Served by a plain Starlette route, matched before the FastAPI one (which
    # stays, for the OpenAPI schema): FastAPI's route wrapper (dependency
    # solving, endpoint plumbing) cost ~10% of a request's CPU (measured, 32
    # connections: 0.507 -> 0.459 ms per request). Exception handlers are the
    # app's either way, so errors answer exactly as before.
    lean = Route("/v1/score", score, methods=["POST"], include_in_schema=False)
    app.router.routes.insert(0, lean)

    @app.post(
        "/v1/prescreen",
        responses={422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PrescreenRequest.model_json_schema()}},
            }
        },
    )
    async def prescreen(request: Request) -> Response:
        pre: PrescreenService = request.app.state.prescreen
        m = pre.metrics
        arrived: float = request.scope["state"]["arrived"]  # set by serving.guard
        if pre.scoring.admission.overloaded(arrived + settings.budget_s):
            return shed(m, "queue")
        try:
            req = PrescreenRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
            ) from exc
        now = datetime.now(UTC)
        if req.application_ts is not None:
            problem = ts_window_error(
                req.application_ts,
                "application_ts",
                now,
                settings.max_clock_skew_s,
                settings.max_event_age_s,
            )
            if problem:
                m.prescreen_requests.labels("422", "", "").inc()
                return invalid([{"field": "application_ts", "message": problem}])
        try:
            record, line = await pre.prescreen(req, arrived, now)
        except Shed as exc:
            return shed(m, exc.reason)
        except AuditError as exc:
            log.error("%s", exc)
            m.prescreen_requests.labels("503", "", "").inc()
            return JSONResponse(
                status_code=503,
                content={"error": "audit log unavailable: no decision was made", "retry": True},
            )
        m.prescreen_latency.observe(time.perf_counter() - arrived)
        why = "rule" if record["rules_fired"] else record["refer_reason"] or ""
        m.prescreen_requests.labels("200", record["decision"], why).inc()
        return Response(line, media_type="application/json")

    app.router.routes.insert(
        0, Route("/v1/prescreen", prescreen, methods=["POST"], include_in_schema=False)
    )

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
    async def readyz(request: Request, service: Service) -> JSONResponse:
        state: dict[str, Any] = await service.ready()
        # Reported, not gating: without a credit model pre-screening still answers
        # (every application referred), and fraud scoring must not leave rotation.
        state["prescreen"] = await request.app.state.prescreen.ready()
        return JSONResponse(status_code=200 if state["ready"] else 503, content=state)

    @app.get("/metrics")
    async def metrics(service: Service) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
