"""A small real home for the monitor tests: generated landing zone, dbt runs,
a model trained by training.pipeline.train_fraud, and audit logs of decisions
made by serving.scoring's own functions.

Timeline (days from START, a Monday): batch runs on days 35 and 42, daily from
49 to 56 (hourly features stay fresh in the monitored window: stale ones fall
back), then 63; the model trains on transactions of days 35..42 (30-day features
warm, labels known by day 50, 7 days' maturity); the monitored window is days
49..55 (one week), labels known by day 63 at the latest.
"""

from __future__ import annotations

import importlib
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from pitstore.core import feast_store
from pitstore.core.config import Settings
from pitstore.models.registry import LoadedModel
from pitstore.serving import fallback as fb
from pitstore.serving.audit import AuditLog, new_decision_id
from pitstore.serving.schemas import ScoreRequest
from pitstore.serving.scoring import decide, model_input, request_features
from pitstore.training.frames import resolve_service
from pitstore.training.labels import LabelPolicy
from pitstore.training.pipeline import build_fraud_frame

START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 63
RUNS = (35, 42, *range(49, 57), 63)
TRAIN = LabelPolicy(
    START + timedelta(days=50),
    maturity=timedelta(days=7),
    start=START + timedelta(days=35),
    end=START + timedelta(days=43),
)
WINDOW = (START + timedelta(days=49), START + timedelta(days=56))


def day(n: int) -> str:
    return (START + timedelta(days=n)).date().isoformat()


def build_home(home: Path) -> Settings:
    from pitstore.landing.zone import write_landing
    from pitstore.synth.generate import GeneratorParams, generate
    from pitstore.transform.dbt_engine import transform_dbt

    settings = Settings(pitstore_home=home)
    params = GeneratorParams(accounts=400, merchants=300, days=DAYS, seed=7, start=START)
    write_landing(generate(params), settings.landing)
    for d in RUNS:
        transform_dbt(settings, START + timedelta(days=d))
    import pytest

    with pytest.MonkeyPatch.context() as mp:  # the Feast registry (for the fingerprint)
        mp.setenv("PITSTORE_HOME", str(home))
        reload_feast_definitions()
        feast_store.apply(settings)
    reload_feast_definitions()
    return settings


def reload_feast_definitions() -> None:
    """feature_repo/data_sources.py reads PITSTORE_HOME at import time."""
    if str(feast_store.FEATURE_REPO) not in sys.path:
        sys.path.insert(0, str(feast_store.FEATURE_REPO))
    for name in ("entities", "data_sources", "feature_views", "feature_services"):
        if name in sys.modules:
            importlib.reload(sys.modules[name])


def window_rows(settings: Settings) -> pd.DataFrame:
    """The window's transactions with the features the online store served then
    (as_known: what the batch runs had published by each transaction's time)."""
    policy = LabelPolicy(
        START + timedelta(days=DAYS), immature="mark", start=WINDOW[0], end=WINDOW[1]
    )
    return build_fraud_frame(settings, policy, mode="as_known", compare_modes=False).to_pandas()


def write_decisions(
    audit_dir: Path, model: LoadedModel, rows: pd.DataFrame, amount_factor: int = 1
) -> int:
    """Score each transaction with serving.scoring's functions and log it like the
    service does (decided at the transaction's time). ``amount_factor`` scales the
    requested amount: an upstream bug in the payment switch."""
    service = resolve_service(model.card["feature_service"])
    feast_cols = [c for c in model.feature_columns if "__" in c]
    reqs: list[ScoreRequest] = []
    inputs: list[dict[str, float] | None] = []
    for r in rows.to_dict("records"):
        req = ScoreRequest(
            transaction_id=r["transaction_id"],
            account_id=r["account_id"],
            card_id="C0",
            merchant_id=r["merchant_id"],
            merchant_category=r["merchant_category"],
            amount=int(r["amount"]) * amount_factor,
            currency=r["currency"],
            channel=r["channel"],
            country=r["country"],
            event_ts=r["ts"].isoformat(),
        )
        feast = {c: (None if pd.isna(r[c]) else float(r[c])) for c in feast_cols}
        txn = req.txn()
        try:
            row = model_input(model.feature_columns, feast, request_features(txn, feast, service))
        except KeyError:  # as the service: a missing input falls back
            row = None
        reqs.append(req)
        inputs.append(row)
    scored = [row for row in inputs if row is not None]
    scores = iter(model.predict_proba(pd.DataFrame(scored, columns=model.feature_columns)))
    log = AuditLog(audit_dir)
    try:
        for req, row in zip(reqs, inputs, strict=True):
            if row is None:
                fd = fb.fallback_decision(req.txn(), fb.FEATURES_MISSING)
                decision, score, reason = fd.decision, None, fb.FEATURES_MISSING
            else:
                score = float(next(scores))
                decision, reason = decide(score, model.card), None
            log.append(
                {
                    "decision_id": new_decision_id(req.event_ts),
                    "decided_at": req.event_ts.astimezone(UTC).isoformat(),
                    "transaction_id": req.transaction_id,
                    "decision": decision,
                    "score": score,
                    "fallback": reason or False,
                    "model_version": model.version,
                    "threshold": model.card["threshold"],
                    "review_band": list(model.card["review_band"]),
                    "request": req.logged(),
                    "features": {},
                    "model_input": row,
                }
            )
    finally:
        log.close()
    return len(reqs)
