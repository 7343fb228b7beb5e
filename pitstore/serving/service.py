"""The scoring service: online read under a deadline, model or fallback, audit record.

Routes in ``serving.app`` stay thin; this module owns the per-request flow:

0. replace card_id with its token (``serving.auth``); answer a retried
   ``transaction_id`` with its first decision (``serving.idempotency``); wait
   for a slot only as long as the request can still be answered within its
   budget, counted from its arrival (``serving.admission``), else ``Shed``;
1. read the model's FeatureService from Redis (``pitstore.online_read``) with a
   lean asyncio client (``serving.resp_client``) under an asyncio deadline of
   ``budget_ms * redis_share`` (less if the request's own deadline is nearer);
   TTL-expired views count as missing;
2. if the read failed, timed out, or any view is missing/stale: the documented
   fallback rules (``serving.fallback``); otherwise the model (``serving.scoring``);
3. with a shadow challenger configured, score it too from the same values
   (``serving.shadow``: logged under ``shadow``, never in the answer);
4. build the audit record (request, feature values with their timestamps and
   ages, model input, model version, threshold, score, decision, fallback
   reason, latency) and append it durably; only then is it returned.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from pitstore.core.spec import FeatureService, service_by_name
from pitstore.core.timeutil import from_us
from pitstore.online.materialize import MARKER
from pitstore.online.reader import OnlineReadError, OnlineRow, reader_for, resp_command
from pitstore.online.resp_client import RespPool
from pitstore.serving import fallback as fb
from pitstore.serving.admission import Admission
from pitstore.serving.audit import AuditError, AuditLog, new_decision_id
from pitstore.serving.auth import CardTokenizer
from pitstore.serving.batching import ReadBatcher
from pitstore.serving.idempotency import Replays, fingerprint
from pitstore.serving.metrics import Metrics
from pitstore.serving.schemas import ScoreRequest
from pitstore.serving.scoring import Model, model_input, request_features, review_band, score_row
from pitstore.serving.settings import ServingSettings
from pitstore.serving.shadow import KEY as SHADOW
from pitstore.serving.shadow import MODEL_UNAVAILABLE, failed, shadow_score, without_shadow

log = logging.getLogger("pitstore.serving")
ACCOUNT_KEY = "account_id"
# The share of the budget an admitted request should take (admission adapts
# how many run at once to keep to it); the rest is for the wait to get in
# and the time before the app sees the request (parsing, a busy loop).
ADMITTED_SHARE = 0.35


def make_redis(settings: ServingSettings) -> RespPool:
    """The online store's connections, never waiting longer than the Redis share
    of the budget to connect (reads have their own asyncio deadline). It reads
    on the event loop itself: a worker-thread read cost each request GIL
    hand-offs, which dominated the p99 under load."""
    return RespPool(settings.redis_url, connect_timeout_s=settings.redis_timeout_s)


def classify(service: FeatureService, row: OnlineRow, metrics: Metrics) -> str | None:
    """None if every view of ``row`` is usable, else the fallback reason (and the
    missing / stale / age metrics, per view)."""
    account_views = [v.name for v in service.views if v.entity.join_key == ACCOUNT_KEY]
    reads = row.views
    for name, vr in reads.items():
        if vr.event_timestamp is None:
            metrics.feature_missing.labels(name).inc()
        elif vr.stale:
            metrics.feature_stale.labels(name).inc()
        if vr.age is not None:
            metrics.feature_age.labels(name).observe(vr.age.total_seconds())
    if account_views and all(reads[n].event_timestamp is None for n in account_views):
        return fb.UNKNOWN_ACCOUNT
    if any(vr.stale for vr in reads.values()):
        return fb.FEATURES_STALE
    if any(vr.event_timestamp is None for vr in reads.values()):
        return fb.FEATURES_MISSING
    return None


def logged_views(service: FeatureService, row: OnlineRow) -> dict[str, Any]:
    """Per view of ``service``: what the read found, as the audit record keeps it."""
    features: dict[str, Any] = {}
    for view in service.views:
        vr = row.views.get(view.name)
        status = (
            "missing" if vr is None or vr.event_timestamp is None else "stale" if vr.stale else "ok"
        )
        features[view.name] = {
            "status": status,
            "event_timestamp": vr.event_timestamp.isoformat()
            if vr and vr.event_timestamp
            else None,
            "age_seconds": vr.age.total_seconds() if vr and vr.age is not None else None,
            "values": {f.name: row.values.get(view.column(f)) for f in view.features},
        }
    return features


@dataclass
class FeatureRead:
    row: OnlineRow | None
    failure: str | None  # a fallback reason when the read itself failed


async def read_row(
    reads: ReadBatcher,
    row: dict[str, str],
    at: datetime,
    deadline: float,
    settings: ServingSettings,
    metrics: Metrics,
) -> FeatureRead:
    """One entity row's features as of ``at``, or why not, within the request's deadline."""
    # Leave the rest of the budget's non-Redis share for deciding and the
    # audit append, so a late read turns into an in-time fallback.
    reserve = settings.budget_s * (1 - settings.redis_share) / 2
    timeout = min(settings.redis_timeout_s, deadline - time.perf_counter() - reserve)
    try:
        # the deadline is this request's: giving up leaves the shared round trip be
        result = await asyncio.wait_for(reads.read(row, at), timeout=max(timeout, 0.0005))
    except TimeoutError:
        metrics.redis_errors.labels("deadline").inc()
        return FeatureRead(None, fb.REDIS_TIMEOUT)
    except OnlineReadError as exc:
        timed_out = isinstance(exc.__cause__, redis.exceptions.TimeoutError)
        metrics.redis_errors.labels("timeout" if timed_out else "error").inc()
        return FeatureRead(None, fb.REDIS_TIMEOUT if timed_out else fb.REDIS_UNAVAILABLE)
    return FeatureRead(result, None)


@dataclass
class Answer:
    line: bytes  # the decision's JSON, as in the audit log
    record: dict[str, Any] | None  # None for a replay (the record is the first request's)


class ScoringService:
    def __init__(
        self,
        settings: ServingSettings,
        model: Model | None,
        audit: AuditLog,
        metrics: Metrics,
        tokenize: CardTokenizer,
        client: RespPool | None = None,
        shadow: Model | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.shadow = shadow  # the challenger (settings.shadow_model_version), if loaded
        self.audit = audit
        self.metrics = metrics
        self.tokenize = tokenize
        self.client = client or make_redis(settings)
        self.service: FeatureService | None = (
            service_by_name(model.card["feature_service"]) if model is not None else None
        )
        # At most this many requests between their read and their audit record;
        # the rest wait their turn in arrival order, each no longer than its
        # deadline allows (see ``max_in_flight`` and ``serving.admission``).
        self.admission = Admission(
            settings.max_in_flight, target_s=settings.budget_s * ADMITTED_SHARE
        )
        self.replays = Replays(audit.root, settings.idempotency_entries)
        self.audit_error: str | None = None  # the last append's failure, until one succeeds
        # Requests reading in the same loop iteration share one round trip.
        self.reads: ReadBatcher | None = (
            ReadBatcher(
                reader_for(self.service),
                self.client,
                settings.redis_timeout_s,
                on_round_trip=metrics.online_read.observe,
            )
            if self.service is not None
            else None
        )
        metrics.model_loaded.set(1 if model is not None else 0)

    @property
    def model_version(self) -> str | None:
        return None if self.model is None else str(self.model.card["version"])

    # --- the online read ---------------------------------------------------------

    async def read(self, req: ScoreRequest, deadline: float) -> FeatureRead:
        assert self.reads is not None
        ids = {"account_id": req.account_id, "merchant_id": req.merchant_id}
        row = {k: v for k, v in ids.items() if k in self.reads.reader.join_keys}
        return await read_row(self.reads, row, req.event_ts, deadline, self.settings, self.metrics)

    def classify(self, row: OnlineRow) -> str | None:
        """None if every view is usable, else the fallback reason."""
        assert self.service is not None
        return classify(self.service, row, self.metrics)

    # --- one decision ------------------------------------------------------------

    async def score(self, req: ScoreRequest, arrived: float, now: datetime) -> Answer:
        """The decision (durably in the audit log), or the first one for a retried
        transaction_id. Raises Shed (no slot in time), idempotency.Conflict (the
        id was used by another request) or AuditError (no decision made).
        ``arrived``: perf_counter when the request's headers were in."""
        req = req.model_copy(update={"card_id": self.tokenize(req.card_id)})
        tid = req.transaction_id
        if not self.replays.enabled:
            record, line = await self._admitted(req, arrived, now)
            return Answer(line, record)
        fp = fingerprint(req.logged())
        prior = await self.replays.prior(tid, fp)
        if prior is not None:
            self.metrics.replays.inc()
            return Answer(without_shadow(prior), None)  # a log read at start-up has it
        self.replays.claim(tid)
        done = None
        try:
            record, line = await self._admitted(req, arrived, now)
            done = (record["decision_id"], fp, line)
            return Answer(line, record)
        finally:
            self.replays.settle(tid, done)

    async def _admitted(
        self, req: ScoreRequest, arrived: float, now: datetime
    ) -> tuple[dict[str, Any], bytes]:
        deadline = arrived + self.settings.budget_s
        admitted = await self.admission.enter(deadline)
        try:
            return await self._score(req, arrived, now, deadline)
        finally:
            self.admission.leave(admitted)

    async def _score(
        self, req: ScoreRequest, started: float, now: datetime, deadline: float
    ) -> tuple[dict[str, Any], bytes]:
        read = FeatureRead(None, fb.MODEL_UNAVAILABLE)
        if self.model is not None:
            read = await self.read(req, deadline)
        # Scoring (~0.3 ms of CPU) runs on the event loop: every hop to a worker
        # thread and back cost a GIL hand-off of up to the 5 ms switch interval
        # under load, which made the p99 (measured: two hops ~150 ms, one ~60 ms,
        # none ~35 ms at 70% of max). The requests deciding in one loop iteration
        # share one audit write and fsync (``AuditLog.append_async``).
        record, reason = self._decide(req, read, started, now)
        try:
            line = await self.audit.append_async(record)  # durable before the response exists
        except AuditError as exc:
            self.audit_error = str(exc)  # /readyz says so until an append succeeds
            raise
        if SHADOW in record:  # the answer is the champion's alone
            line = without_shadow(line)
        self.audit_error = None
        self.metrics.audit_records.inc()
        if reason is not None:
            self.metrics.fallbacks.labels(reason).inc()
        return record, line

    def _decide(
        self, req: ScoreRequest, read: FeatureRead, started: float, now: datetime
    ) -> tuple[dict[str, Any], str | None]:
        """The decision record (not yet logged) and its fallback reason, if any."""
        txn = req.txn()
        reason = read.failure
        if reason is None and read.row is not None:
            reason = self.classify(read.row)
        feast_values = read.row.values if read.row is not None else {}
        req_feats: dict[str, float] | None = None
        result = None
        if reason is None and self.model is not None and self.service is not None:
            try:
                req_feats = request_features(txn, feast_values, self.service)
                row = model_input(self.model.feature_columns, feast_values, req_feats)
                result = score_row(self.model, row, self.settings.reasons_for)
            except KeyError as exc:  # a column the model needs is absent
                log.warning("model input %s missing; falling back", exc)
                reason = fb.FEATURES_MISSING
            except Exception:  # the model must never turn into a 500
                log.exception("model failed; falling back")
                reason = fb.MODEL_ERROR
        record = self._record(req, read, reason, req_feats, result, now)
        shadow = self._shadow(reason, feast_values, req_feats)
        record["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        if shadow is not None:
            record[SHADOW] = shadow  # last: ``without_shadow`` cuts it from the answer
        return record, reason

    def _shadow(
        self,
        reason: str | None,
        feast_values: dict[str, float | None],
        req_feats: dict[str, float] | None,
    ) -> dict[str, Any] | None:
        """The challenger's verdict on the values the champion saw (None: no shadow).

        Scored after the champion, whose result is final by now: the shadow
        adds its CPU (one tree-ensemble evaluation) but cannot change the answer."""
        version = self.settings.shadow_model_version
        if version is None:
            return None
        if self.shadow is None:
            return failed(version, MODEL_UNAVAILABLE)
        if (reason is not None and reason != fb.MODEL_ERROR) or req_feats is None:
            # no usable features: the challenger would have fallen back too
            return failed(str(self.shadow.card["version"]), reason or fb.FEATURES_MISSING)
        return shadow_score(self.shadow, feast_values, req_feats)

    def _record(
        self,
        req: ScoreRequest,
        read: FeatureRead,
        reason: str | None,
        req_feats: dict[str, float] | None,
        result: Any,
        now: datetime,
    ) -> dict[str, Any]:
        card = self.model.card if self.model is not None else {}
        band = review_band(card) if card else None
        features: dict[str, Any] = {}
        if read.row is not None and self.service is not None:
            features = logged_views(self.service, read.row)
        if reason is None:
            score, decision = result.score, result.decision
            rule = None
            reasons = [r.as_dict() for r in result.reasons]
        else:
            fd = fb.fallback_decision(req.txn(), reason)
            score, decision, rule = None, fd.decision, fd.rule
            reasons = [{"feature": None, "rule": fd.rule, "text": fd.text}]
        return {
            "decision_id": new_decision_id(now),
            "decided_at": now.astimezone(UTC).isoformat(),
            "transaction_id": req.transaction_id,
            "decision": decision,
            "score": score,
            "fallback": reason or False,
            "fallback_rule": rule,
            "fallback_rules_version": fb.RULES_VERSION,
            "model_version": self.model_version,
            "feature_service": card.get("feature_service"),
            "threshold": card.get("threshold"),
            "review_band": list(band) if band else None,
            "request": req.logged(),
            "features": features,
            "request_features": req_feats,
            "model_input": result.model_input if result is not None else None,
            "reasons": reasons,
            # how the reasons were computed (serving.scoring); None for a fallback
            "explanation": result.explanation if reason is None else None,
            "budget_ms": self.settings.budget_ms,
        }

    async def ready(self) -> dict[str, Any]:
        """Whether this server can make real decisions now, and if not why not."""
        reasons: list[str] = []
        views = [v.name for v in self.service.views] if self.service is not None else []
        markers: dict[str, str | None] = {}
        redis_ok = False
        try:
            # one round trip: PING, then the views' materialization markers
            payload = resp_command(b"PING")
            if views:
                keys = [MARKER.format(view=v).encode() for v in views]
                payload += resp_command(b"MGET", *keys)
            replies = await asyncio.wait_for(
                self.client.execute(payload, 2 if views else 1),
                timeout=self.settings.redis_timeout_s * 2,
            )
            redis_ok = replies[0] == b"PONG"
            for view, raw in zip(views, replies[1] if views else [], strict=True):
                markers[view] = None if raw is None else from_us(int(raw)).isoformat()
        except Exception as exc:  # any failure means "not ready", never a 500
            reasons.append(f"redis: {exc or type(exc).__name__}")
        if self.model is None:
            reasons.append("no model loaded: every decision would be a fallback")
        missing = [v for v, at in markers.items() if at is None]
        if redis_ok and missing:
            # Redis restarted empty (or was never loaded): every account would be
            # "unknown" and scored by the fallback rules
            reasons.append(
                "online store not materialized (no pitstore:materialized marker for "
                f"{', '.join(missing)}): run the daily batch / materialize"
            )
        audit = self.audit_health()
        if audit != "ok":
            reasons.append(f"audit log: {audit}")
        return {
            "ready": not reasons,
            "reasons": reasons,
            "redis": redis_ok,
            "materialized": markers,
            "model_loaded": self.model is not None,
            "model_version": self.model_version,
            "audit": audit,
        }

    async def markers(self, views: list[str]) -> dict[str, str | None]:
        """When each view was last materialized (None: no marker, or Redis failed)."""
        try:
            keys = [MARKER.format(view=v).encode() for v in views]
            replies = await asyncio.wait_for(
                self.client.execute(resp_command(b"MGET", *keys), 1),
                timeout=self.settings.redis_timeout_s * 2,
            )
            raws = replies[0]
        except Exception:  # readiness reports it; never a 500
            raws = [None] * len(views)
        pairs = zip(views, raws, strict=True)
        return {v: None if r is None else from_us(int(r)).isoformat() for v, r in pairs}

    def audit_health(self) -> str:
        """ "ok", or why the next decision's audit append would fail."""
        if self.audit_error is not None:
            return self.audit_error
        probe = self.audit.root  # it, or the nearest ancestor that exists (made on write)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            return f"{probe} is not a writable directory"
        return "ok"

    async def aclose(self) -> None:
        if self.reads is not None:
            await self.reads.aclose()
        self.audit.close()
        await self.client.aclose()
