"""POST /v1/prescreen: a loan application -> pre-qualified / refer / decline,
logged durably before it is answered.

The flow (rules and words in ``serving.credit_rules``):

1. the hard rules (R1..R4) on the application alone: any rule that fires
   declines it, and no feature is read and no PD computed (the decision cannot
   depend on them, and a PD never used is not logged as if it were);
2. otherwise the credit model's FeatureService (``credit_v1``) is read from
   Redis for the account as of ``application_ts``, through the same batched,
   deadline-bound reader as /v1/score (one round trip for both views);
   TTL-expired views count as missing (the reader judges the TTL itself:
   Feast's own online read does not);
3. a failed or late read, a missing or stale view, no credit model, or a model
   error: ``refer`` with the reason, never an automatic decline;
4. else the request features (``core.credit_request``, the function training
   uses), the PD (promoted credit model, fast path) with its exact TreeSHAP
   contributions, and the decision from the card's cut-offs
   (``review_band = [prequalify_below, decline_pd]``);
   (with ``PITSTORE_REASONS_FOR=adverse``, the default, inline for declines
   only; ``all``: for every decision);
5. the audit record (kind ``prescreen``, same hash chain as /v1/score).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from pitstore.core.credit_request import credit_request_features, ledger_sum_columns
from pitstore.core.spec import CREDIT_V1, FeatureService, service_by_name
from pitstore.online.reader import reader_for
from pitstore.serving import credit_rules as cr
from pitstore.serving.audit import AuditError, new_decision_id
from pitstore.serving.batching import ReadBatcher
from pitstore.serving.schemas import PrescreenRequest
from pitstore.serving.scoring import Model, ModelScore, review_band, score_row
from pitstore.serving.service import (
    FeatureRead,
    ScoringService,
    classify,
    logged_views,
    read_row,
)
from pitstore.serving.settings import ServingSettings

log = logging.getLogger("pitstore.serving")
KIND = "prescreen"
CREDIT_MODEL_KIND = "credit_pd"


def load_credit_model(settings: ServingSettings) -> Model | None:
    """The credit model via the registry (promoted for ``credit_v1``, or the
    configured version), with the fast path; None if unavailable."""
    try:
        from pitstore.models.fast_model import with_fast_path
        from pitstore.models.registry import load_model

        loaded = load_model(
            settings.pitstore_settings(), settings.credit_model_version, service=CREDIT_V1.name
        )
        kind, service = loaded.card.get("model_kind"), loaded.card.get("feature_service")
        if kind != CREDIT_MODEL_KIND or service != CREDIT_V1.name:
            raise ValueError(f"model {loaded.version} is a {kind} model for {service}, not credit")
        return with_fast_path(loaded)  # type: ignore[no-any-return]
    except Exception as exc:  # refer every application rather than refuse to start
        log.error("no credit model loaded (%s): every pre-screen will be referred", exc)
        return None


class PrescreenService:
    """Pre-screening, sharing the scoring service's Redis pool, admission,
    audit log and metrics (one process, one chain, one budget policy)."""

    def __init__(self, settings: ServingSettings, model: Model | None, scoring: ScoringService):
        self.settings = settings
        self.model = model
        self.scoring = scoring
        self.metrics = scoring.metrics
        self.service: FeatureService = (
            service_by_name(model.card["feature_service"]) if model is not None else CREDIT_V1
        )
        self.sums = ledger_sum_columns(self.service)
        self.reads = ReadBatcher(
            reader_for(self.service),
            scoring.client,
            settings.redis_timeout_s,
            on_round_trip=self.metrics.online_read.observe,
        )
        self.metrics.credit_model_loaded.set(1 if model is not None else 0)
        # "adverse" here means a decline: the one outcome an applicant is owed
        # reasons for at once. A referral goes to a reviewer, who gets them
        # exactly from ``pitstore explain``; computing them inline for every
        # referral cost ~0.27 ms of CPU each, and put the p99 at /v1/score's
        # load ~1.4x /v1/score's (bench #3). ``all`` still explains everything.
        self.reasons_for = "decline" if settings.reasons_for == "adverse" else "all"

    @property
    def model_version(self) -> str | None:
        return None if self.model is None else str(self.model.card["version"])

    async def prescreen(
        self, req: PrescreenRequest, arrived: float, now: datetime
    ) -> tuple[dict[str, Any], bytes]:
        """The decision, durably logged. Raises Shed (no slot in time) or
        AuditError (no decision made)."""
        deadline = arrived + self.settings.budget_s
        admitted = await self.scoring.admission.enter(deadline)
        try:
            record = await self._decide(req, arrived, now, deadline)
            try:
                line = await self.scoring.audit.append_async(record)
            except AuditError as exc:
                self.scoring.audit_error = str(exc)  # /readyz says so
                raise
            self.scoring.audit_error = None
            self.metrics.audit_records.inc()
            return record, line
        finally:
            self.scoring.admission.leave(admitted)

    async def _decide(
        self, req: PrescreenRequest, started: float, now: datetime, deadline: float
    ) -> dict[str, Any]:
        app = req.logged()
        at = req.application_ts or now
        hits = cr.hard_rules(app)
        read = FeatureRead(None, None)
        reason: str | None = None
        req_feats: dict[str, float] | None = None
        row: dict[str, float] | None = None
        result: ModelScore | None = None
        if hits:
            pass  # declined by rule: nothing to read, nothing to score
        elif self.model is None:
            reason = cr.MODEL_UNAVAILABLE
        else:
            key = {"account_id": req.account_id}
            read = await read_row(self.reads, key, at, deadline, self.settings, self.metrics)
            reason = read.failure
            if reason is None and read.row is not None:
                reason = classify(self.service, read.row, self.metrics)
            if reason is None and read.row is not None:
                values = read.row.values
                try:
                    req_feats = credit_request_features(
                        cr.application_inputs(app),
                        values.get(self.sums[0]),
                        values.get(self.sums[1]),
                    )
                    row = cr.credit_model_input(self.model.feature_columns, values, req_feats)
                    result = score_row(self.model, row, self.reasons_for)
                except Exception:  # the model must never turn into a 500 (nor a decline)
                    log.exception("credit model failed; referring")
                    reason, result = cr.MODEL_ERROR, None
        return self._record(req, at, now, started, hits, read, reason, req_feats, row, result)

    def _record(
        self,
        req: PrescreenRequest,
        at: datetime,
        now: datetime,
        started: float,
        hits: list[cr.RuleHit],
        read: FeatureRead,
        reason: str | None,
        req_feats: dict[str, float] | None,
        row: dict[str, float] | None,
        result: ModelScore | None,
    ) -> dict[str, Any]:
        card = self.model.card if self.model is not None else {}
        low, high = review_band(card) if card else (None, None)
        reasons = [h.as_dict() for h in hits]
        if hits:
            decision = cr.DECLINE
        elif reason is not None or result is None:
            decision = cr.REFER
            reasons.append(cr.refer_reason(reason or cr.MODEL_ERROR))
        else:
            decision = cr.FROM_BAND[result.decision]
            if decision == cr.REFER and low is not None and high is not None:
                reasons.append(cr.band_reason(result.score, low, high))
            reasons += [r.as_dict() for r in result.reasons]
        record = {
            "kind": KIND,
            "decision_id": new_decision_id(now),
            "decided_at": now.astimezone(UTC).isoformat(),
            "application_id": req.application_id,
            "decision": decision,
            "pd": result.score if result is not None else None,
            "rules_fired": [h.rule for h in hits],
            "rules_version": cr.RULES_VERSION,
            "refer_reason": reason,
            "model_version": self.model_version,
            "feature_service": self.service.name,
            "cutoffs": None if low is None else {"prequalify_below": low, "decline_pd": high},
            "as_of": at.astimezone(UTC).isoformat(),
            "request": req.logged(),
            "features": logged_views(self.service, read.row) if read.row is not None else {},
            "request_features": cr.finite_or_none(req_feats) if req_feats is not None else None,
            "model_input": cr.finite_or_none(row) if row is not None and result else None,
            "reasons": reasons,
            "explanation": result.explanation if result is not None else None,
            "budget_ms": self.settings.budget_ms,
        }
        record["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return record

    async def ready(self) -> dict[str, Any]:
        """Whether pre-screening can decide with the model now (the rest of the
        service answers regardless: without it every application is referred)."""
        reasons: list[str] = []
        if self.model is None:
            reasons.append("no credit model loaded: every pre-screen is referred")
        markers = await self.scoring.markers([v.name for v in self.service.views])
        missing = [v for v, at in markers.items() if at is None]
        if missing:
            reasons.append(
                f"credit views not materialized ({', '.join(missing)}): every pre-screen "
                "is referred"
            )
        return {
            "ready": not reasons,
            "reasons": reasons,
            "model_loaded": self.model is not None,
            "model_version": self.model_version,
            "materialized": markers,
        }

    async def aclose(self) -> None:
        await self.reads.aclose()
