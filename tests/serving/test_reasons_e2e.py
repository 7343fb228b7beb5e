"""End to end: `pitstore train` on a small generated home, served, one request
scored; its reasons must be measured against the training rows (no zeros where
the training median is not zero) and explain to the raw score."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import redis
from fastapi.testclient import TestClient
from test_training_frames import POLICY, pipeline  # noqa: F401  (the module fixture)

from pitstore.core.config import Settings
from pitstore.core.spec import FRAUD_V1, FeatureView
from pitstore.core.timeutil import to_us
from pitstore.models.registry import promote
from pitstore.online.codec import encode_rows
from pitstore.online.materialize import MARKER
from pitstore.serving.app import create_app
from pitstore.serving.auth import entry_for, new_key
from pitstore.serving.explain import replay
from pitstore.serving.settings import ServingSettings
from pitstore.training.model import to_model_frame
from pitstore.training.pipeline import TrainReport, train_fraud


@pytest.fixture(scope="module")
def trained(pipeline: Settings) -> Iterator[TrainReport]:  # noqa: F811
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):  # OpenMP threads spin on a busy box
        report = train_fraud(pipeline, POLICY)
    promote(pipeline, report.version)
    yield report


def boundary(view: FeatureView, at: datetime) -> datetime:
    step = int(view.cadence.total_seconds())
    return datetime.fromtimestamp(int(at.timestamp()) // step * step, tz=UTC)


def serve_row(url: str, row: pd.Series, now: datetime) -> None:
    """The row's feature values in Redis, in Feast's layout, fresh as of ``now``."""
    client = redis.Redis.from_url(url)
    for view in FRAUD_V1.views:
        key = view.entity.join_key
        data: dict[str, list[Any]] = {key: [row[key]], "event_timestamp": [boundary(view, now)]}
        for f in view.features:
            value = row[view.column(f)]
            data[f.name] = [int(value) if f.dtype == "int64" else float(value)]
        for redis_key, mapping in encode_rows(view, pa.table(data)):
            client.hset(redis_key, mapping=mapping)  # type: ignore[arg-type]
        client.set(MARKER.format(view=view.name), to_us(boundary(view, now)))


def test_trained_served_reasons_use_the_training_reference(
    trained: TrainReport,
    settings: Settings,
    pipeline: Settings,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = trained.card
    columns = card["feature_columns"]
    ref = card["reference"]
    # The card's reference is the training rows' own: recompute it from the frame.
    frame = to_model_frame(trained.frame.table, FRAUD_V1)
    labelled = frame[frame["label"].notna()]
    train_rows = labelled[labelled["ts"] < pd.Timestamp(card["split"]["valid_from"])]
    assert ref["rows"] == len(train_rows) == card["split"]["train_rows"]
    for col in columns:
        median = float(train_rows[col].median())
        assert ref["medians"][col] == pytest.approx(median), col
        assert len(ref["quantiles"][col]) == 101
    assert any(ref["medians"][c] != 0 for c in columns)
    assert card["explanation"]["unit"] == "log_odds"
    assert card["explanation"]["calibration_increasing"] is True

    # Serve the trained model from the trained home, with a real Redis.
    monkeypatch.setenv("PITSTORE_HOME", str(pipeline.home))
    key = new_key()
    ss = ServingSettings(
        home=pipeline.home,
        redis_url=settings.redis_url,
        budget_ms=1000,
        api_keys=entry_for("e2e", key, ["score"]),
        reasons_for="all",  # this purchase's reasons are checked whatever its decision
    )
    now = datetime.now(UTC)
    complete = frame.dropna(subset=columns)
    account_mean = next(c for c in columns if c.endswith("amount_mean_30d"))
    row = complete[complete[account_mean] > 0].iloc[0]
    serve_row(settings.redis_url, row, now)
    # a large e-commerce purchase against the account's 30-day mean
    amount = int(round(row[account_mean] * 11.7))
    body = {
        "transaction_id": "t-e2e-1",
        "account_id": row["account_id"],
        "card_id": "C1",
        "merchant_id": row["merchant_id"],
        "merchant_category": "online_retail",
        "amount": amount,
        "currency": "GBP",
        "channel": "ecom",
        "country": "GB",
        "event_ts": now.isoformat(),
    }
    with TestClient(create_app(ss), headers={"authorization": f"Bearer {key}"}) as http:
        scored = http.post("/v1/score", json=body)
        assert scored.status_code == 200, scored.text
        decision = scored.json()
        spec = http.get("/openapi.json").json()
    assert decision["fallback"] is False, decision
    assert decision["model_version"] == trained.version
    explanation = decision["explanation"]
    assert explanation["method"] == "tree_shap_path_dependent"
    assert decision["reasons"], "a large card-not-present purchase raised the score"
    for reason in decision["reasons"]:
        col = reason["feature"]
        median = float(train_rows[col].median())
        assert reason["contribution"] > 0
        assert reason["typical"] == pytest.approx(median), reason
        if median != 0:
            assert reason["typical"] != 0 and "typical 0)" not in reason["text"], reason
        assert reason["percentile"] is not None and 0 <= reason["percentile"] <= 100
    assert decision["request_features"]["amount_vs_30d_mean"] == pytest.approx(
        amount / row[account_mean]
    )

    # The reasons are the largest positive exact contributions; with every
    # other input's they add up to the raw score the calibrated score comes from.
    from pitstore.models.fast_model import with_fast_path
    from pitstore.models.registry import load_model

    model = with_fast_path(load_model(pipeline, trained.version))
    x = np.array([decision["model_input"][c] for c in columns])
    score, raw, phi = model.score_and_contributions(x)
    assert score == decision["score"] and raw == explanation["raw_score"]
    assert abs(explanation["expected_value"] + phi.sum() - raw) < 1e-9
    top = sorted(((-p, c) for c, p in zip(columns, phi, strict=True) if p > 1e-12))[:3]
    assert [r["feature"] for r in decision["reasons"]] == [c for _, c in top]

    # pitstore explain recomputes the same reasons from the audit log.
    again = replay(ss, decision["decision_id"])
    assert again.matches, again.mismatches
    assert again.reasons == decision["reasons"]
    # and /openapi.json documents what came back
    ok = spec["paths"]["/v1/score"]["post"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/DecisionRecord"}
