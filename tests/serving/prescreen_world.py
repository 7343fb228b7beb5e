"""Shared set-up of the pre-screening tests and benchmark: a credit model trained
by the real training code (``train_credit_model`` + ``credit_card``), saved and
promoted for ``credit_v1``; an application's account features written to Redis
in Feast's layout (the codec ``materialize`` writes with)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import redis
from credit_frames import synthetic_credit_frame

from pitstore.core.config import Settings
from pitstore.core.spec import CREDIT_V1, FeatureView
from pitstore.core.timeutil import to_us
from pitstore.online.codec import encode_rows
from pitstore.online.materialize import MARKER
from pitstore.serving.credit_rules import hard_rules


def train_and_promote(home: Path, rows: int = 2000) -> tuple[dict[str, Any], pd.DataFrame]:
    """(card, frame): the PD model on a synthetic credit frame, saved and promoted."""
    from threadpoolctl import threadpool_limits

    from pitstore.models.registry import promote, save_model
    from pitstore.training.credit_model import credit_card, train_credit_model

    frame = synthetic_credit_frame(rows, seed=3)
    with threadpool_limits(1, user_api="openmp"):  # OpenMP threads spin on a busy box
        result = train_credit_model(frame)
    now = datetime.now(UTC)
    card = {
        **credit_card(result),
        "service": CREDIT_V1.name,
        "version": "credit-test-1",
        "spec_fingerprint": "test",
        "frame_fingerprint": "test",
        "training_window": {"from": result.split["train_from"], "to": result.split["train_to"]},
        "label_cutoff": "synthetic",
        "code_version": "test",
        "created_at": now.isoformat(),
    }
    settings = Settings(pitstore_home=home)
    save_model(settings, result.model, card, result.valid_y, result.valid_p)
    promote(settings, card["version"])
    return card, frame


def application(row: pd.Series, app_id: str, at: datetime, **changes: Any) -> dict[str, Any]:
    """The request body of a frame row's application (as APPLICATIONS_SCHEMA holds it)."""
    since = row["months_since_last_default"]
    body = {
        "application_id": app_id,
        "account_id": row["account_id"],
        "applicant_age": int(row["applicant_age"]),
        "amount": int(row["amount"]),
        "term_months": int(row["term_months"]),
        "stated_income": int(row["stated_income"]),
        "employment_months": int(row["employment_months"]),
        "existing_debt": int(row["existing_debt"]),
        "purpose": str(row["purpose"]),
        "region": str(row["region"]),
        "months_since_last_default": None if math.isnan(since) else int(since),
        "application_ts": at.isoformat(),
    }
    body.update(changes)
    return body


def passing_rows(frame: pd.DataFrame, at: datetime) -> pd.DataFrame:
    """The frame's applications that no hard rule declines."""
    keep = [not hard_rules(application(r, "x", at)) for _, r in frame.iterrows()]
    return frame[keep]


def boundary(view: FeatureView, at: datetime) -> datetime:
    step = int(view.cadence.total_seconds())
    return datetime.fromtimestamp(int(at.timestamp()) // step * step, tz=UTC)


def put_credit_features(
    url: str,
    rows: pd.DataFrame,
    now: datetime,
    views: tuple[FeatureView, ...] = CREDIT_V1.views,
    age: timedelta = timedelta(0),
) -> None:
    """The rows' credit_v1 features in Redis (Feast's layout), stamped at the
    view's last boundary before ``now - age``, and each view's marker."""
    client = redis.Redis.from_url(url)
    for view in views:
        ts = boundary(view, now - age)
        data: dict[str, list[Any]] = {
            "account_id": list(rows["account_id"]),
            "event_timestamp": [ts] * len(rows),
        }
        for f in view.features:
            values = rows[view.column(f)]
            data[f.name] = [int(v) if f.dtype == "int64" else float(v) for v in values]
        for key, mapping in encode_rows(view, pa.table(data)):
            client.hset(key, mapping=mapping)  # type: ignore[arg-type]
        client.set(MARKER.format(view=view.name), to_us(ts))
