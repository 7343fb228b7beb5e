"""Benchmark #7's data: a real world's decisions and reference, replayed to n rows.

``python -m bench.monitor_data --home H --out O --decisions N --reference M``
(run in its own process: ``feature_repo/`` reads ``PITSTORE_HOME`` at import):

1. a generated world (``pitstore.synth``, the ``make monitor`` timeline without
   its shift), its landing zone, dbt runs on days 35, 42, 49..56 and 63, a model
   trained on days 35..42 (``train_fraud``) and promoted;
2. the model's reference through ``monitor.reference.load_reference`` (the
   training frame rebuilt, scored and cached), then replayed to ``M`` rows;
3. the window (days 49..55) as the online store served it (an as_known frame),
   each transaction scored with ``serving.scoring``'s functions as the service
   does, then ``N`` decisions drawn from them and appended to a real
   ``AuditLog`` (hash chain, checkpoints, group commit), decided at the
   transactions' times;
4. the report: days 49..62 (labels known by day 63: every decision matured),
   and what the monitor reads for it, saved for the contenders:
   ``decisions.parquet`` (``report.load_decisions`` over the audit log),
   ``labels.parquet`` (``performance.matured_labels``), ``reference.parquet``
   and ``context.json`` (card, inputs, window).

Replay: the world has tens of thousands of transactions; ``N`` and ``M`` reach
1M by drawing rows with replacement (seeded). Repeated rows keep their
transaction id, so their labels join as the originals' do. The distributions
are the world's; only their sample sizes grow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SEED = 22
FIRST_DAY, LAST_DAY = 49, 55  # the days decided (days from START)
REPORT_TO = 62  # the report's last day: every decision has matured (7 days) by day 63
BATCH = 5_000  # audit records per group commit


def _score_window(model: Any, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Each window transaction scored as the service does: its audit record."""
    from pitstore.serving import fallback as fb
    from pitstore.serving.schemas import ScoreRequest
    from pitstore.serving.scoring import decide, model_input, request_features
    from pitstore.training.frames import resolve_service

    service = resolve_service(model.card["feature_service"])
    feast_cols = [c for c in model.feature_columns if "__" in c]
    reqs, inputs = [], []
    for r in rows.to_dict("records"):
        req = ScoreRequest(
            transaction_id=r["transaction_id"],
            account_id=r["account_id"],
            card_id="C0",
            merchant_id=r["merchant_id"],
            merchant_category=r["merchant_category"],
            amount=int(r["amount"]),
            currency=r["currency"],
            channel=r["channel"],
            country=r["country"],
            event_ts=r["ts"].isoformat(),
        )
        feast = {c: (None if pd.isna(r[c]) else float(r[c])) for c in feast_cols}
        try:
            row = model_input(
                model.feature_columns, feast, request_features(req.txn(), feast, service)
            )
        except KeyError:  # as the service: a missing input falls back
            row = None
        reqs.append(req)
        inputs.append(row)
    scored = [row for row in inputs if row is not None]
    scores = iter(model.predict_proba(pd.DataFrame(scored, columns=model.feature_columns)))
    out = []
    for req, row in zip(reqs, inputs, strict=True):
        if row is None:
            fd = fb.fallback_decision(req.txn(), fb.FEATURES_MISSING)
            decision, score, reason = fd.decision, None, fb.FEATURES_MISSING
        else:
            score = float(next(scores))
            decision, reason = decide(score, model.card), None
        out.append(
            {
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
    return out


async def _append_all(audit_dir: Path, records: list[dict[str, Any]], order: np.ndarray) -> None:
    from datetime import datetime

    from pitstore.serving.audit import AuditLog, new_decision_id

    log = AuditLog(audit_dir)
    try:
        for lo in range(0, len(order), BATCH):
            batch = []
            for i in order[lo : lo + BATCH]:
                rec = records[int(i)]
                when = datetime.fromisoformat(rec["decided_at"])
                batch.append(log.append_async({"decision_id": new_decision_id(when), **rec}))
            await asyncio.gather(*batch)
    finally:
        log.close()


def build(home: Path, out: Path, n_decisions: int, n_reference: int, accounts: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pitstore.core import feast_store
    from pitstore.core.config import Settings
    from pitstore.landing.zone import write_landing
    from pitstore.models.registry import load_model, promote
    from pitstore.monitor.demo import DAYS, RUNS, START
    from pitstore.monitor.performance import matured_labels
    from pitstore.monitor.reference import cache_path, load_reference, maturity
    from pitstore.monitor.report import Window, load_decisions
    from pitstore.synth.generate import GeneratorParams, generate
    from pitstore.training.labels import LabelPolicy
    from pitstore.training.pipeline import build_fraud_frame, train_fraud
    from pitstore.transform.dbt_engine import transform_dbt

    t0 = time.perf_counter()
    settings = Settings(pitstore_home=home)
    params = GeneratorParams(accounts=accounts, merchants=300, days=DAYS, seed=7, start=START)
    write_landing(generate(params), settings.landing)
    for d in RUNS:
        transform_dbt(settings, START + timedelta(days=d))
    feast_store.apply(settings)
    train = LabelPolicy(
        START + timedelta(days=50),
        maturity=timedelta(days=7),
        start=START + timedelta(days=35),
        end=START + timedelta(days=43),
    )
    version = train_fraud(settings, train).version
    promote(settings, version)
    model = load_model(settings, version)
    world_s = time.perf_counter() - t0
    rng = np.random.default_rng(SEED)

    # The reference: built and cached by the monitor's own code, then replayed.
    real_ref = load_reference(settings, model)
    pick = np.sort(rng.integers(0, len(real_ref.frame), n_reference))
    ref = real_ref.frame.iloc[pick].reset_index(drop=True)
    table = pa.Table.from_pandas(ref, preserve_index=False)
    fp = (real_ref.fingerprint or "").encode()
    pq.write_table(
        table.replace_schema_metadata({b"frame_fingerprint": fp}), out / "reference.parquet"
    )
    # the cache the monitor job reads (the end-to-end contender)
    cache = cache_path(settings, version)
    pq.write_table(pq.read_table(out / "reference.parquet"), cache)

    # The window's decisions, scored as the service does, replayed into the audit log.
    policy = LabelPolicy(
        START + timedelta(days=DAYS),
        immature="mark",
        start=START + timedelta(days=FIRST_DAY),
        end=START + timedelta(days=LAST_DAY + 1),
    )
    rows = build_fraud_frame(settings, policy, mode="as_known", compare_modes=False).to_pandas()
    records = _score_window(model, rows)
    decided = np.array([r["decided_at"] for r in records])
    order = rng.integers(0, len(records), n_decisions)
    order = order[np.argsort(decided[order], kind="stable")]  # a log is in time order
    audit = home / "audit"
    t1 = time.perf_counter()
    asyncio.run(_append_all(audit, records, order))
    audit_s = time.perf_counter() - t1

    window = Window(
        (START + timedelta(days=FIRST_DAY)).date(), (START + timedelta(days=REPORT_TO)).date()
    )
    columns = list(model.feature_columns)
    t2 = time.perf_counter()
    decisions = load_decisions(audit, window, version, columns)
    load_s = time.perf_counter() - t2
    decisions.to_parquet(out / "decisions.parquet", index=False)
    labels = matured_labels(
        settings, window.report_ts, maturity(model.card), window.start_ts - timedelta(days=1)
    )
    labels.to_parquet(out / "labels.parquet", index=False)
    context = {
        "version": version,
        "card": model.card,
        "columns": columns,
        "window": [window.start.isoformat(), window.end.isoformat()],
        "audit_dir": str(audit),
        "world": {
            "accounts": accounts,
            "window_transactions": len(records),
            "reference_rows": len(real_ref.frame),
        },
    }
    (out / "context.json").write_text(json.dumps(context, default=str))
    return {
        "decisions": int(len(decisions)),
        "reference_rows": int(len(ref)),
        "world": context["world"],
        "world_build_s": round(world_s, 1),
        "audit_append_s": round(audit_s, 1),
        "audit_bytes": sum(p.stat().st_size for p in audit.rglob("*.jsonl")),
        "load_decisions_s": round(load_s, 1),
        "build_s": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--decisions", type=int, required=True)
    ap.add_argument("--reference", type=int, required=True)
    ap.add_argument("--accounts", type=int, default=2000)
    args = ap.parse_args(argv)
    if os.environ.get("PITSTORE_HOME") != str(args.home):
        raise SystemExit("run with PITSTORE_HOME set to --home (feature_repo reads it)")
    args.home.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    res = build(args.home, args.out, args.decisions, args.reference, args.accounts)
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1:])
