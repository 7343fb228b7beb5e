"""/v1/prescreen on a small generated credit world, end to end with no hand-made
input: generate -> dbt runs -> credit frame -> `train_credit` -> promote ->
`materialize_view` of credit_v1 into a real Redis -> the app decides the
world's own applications -> `pitstore explain` replays each one."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_credit_frames import LAST, credit_home  # noqa: F401  (the module fixture)

from pitstore.core.config import Settings
from pitstore.core.offline_layout import read_events
from pitstore.core.spec import CREDIT_V1
from pitstore.models.registry import promote
from pitstore.online.materialize import materialize_view
from pitstore.serving.app import create_app
from pitstore.serving.auth import entry_for, new_key
from pitstore.serving.explain import replay
from pitstore.serving.settings import ServingSettings
from pitstore.training.credit_labels import credit_policy
from pitstore.training.credit_pipeline import train_credit

pytestmark = pytest.mark.slow


def test_world_applications_are_decided_and_replayed(
    credit_home: Settings,  # noqa: F811
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        report = train_credit(credit_home, credit_policy(LAST))
    promote(credit_home, report.version)
    live = Settings(pitstore_home=credit_home.home, redis_url=settings.redis_url)
    for view in CREDIT_V1.views:
        materialize_view(live, view, LAST)
    apps = read_events(credit_home, "applications").to_pandas()
    apps["application_ts"] = pd.to_datetime(apps["application_ts"], utc=True)
    # The world's latest applications, each arriving at W: what the online store
    # holds is what was known at W, so W is when serving can decide them.
    recent = apps[apps["application_ts"] >= pd.Timestamp(LAST) - timedelta(days=30)].tail(40)
    assert len(recent) >= 20, len(recent)
    key = new_key()
    monkeypatch.setenv("PITSTORE_HOME", str(credit_home.home))
    monkeypatch.setenv("PITSTORE_AUDIT_DIR", str(tmp_path / "audit"))
    ss = ServingSettings(
        home=credit_home.home,
        redis_url=settings.redis_url,
        audit_dir=tmp_path / "audit",
        budget_ms=2000,
        api_keys=entry_for("t", key, ["prescreen"]),
        # the world's applications are months old: accept them as of their own time
        max_event_age_s=10 * 365 * 86_400,
    )
    records = []
    with TestClient(create_app(ss), headers={"authorization": f"Bearer {key}"}) as http:
        for _, a in recent.iterrows():
            since = a["months_since_last_default"]
            body = {
                "application_id": a["application_id"],
                "account_id": a["account_id"],
                "applicant_age": int(a["applicant_age"]),
                "amount": int(a["amount"]),
                "term_months": int(a["term_months"]),
                "stated_income": int(a["stated_income"]),
                "employment_months": int(a["employment_months"]),
                "existing_debt": int(a["existing_debt"]),
                "purpose": a["purpose"],
                "region": a["region"],
                "months_since_last_default": None if pd.isna(since) else int(since),
                "application_ts": LAST.isoformat(),
            }
            out = http.post("/v1/prescreen", json=body)
            assert out.status_code == 200, out.text
            records.append(out.json())
    scored = [r for r in records if r["pd"] is not None]
    # the materialized features are fresh as of the applications: the PD decides
    assert scored, [(r["decision"], r["rules_fired"], r["refer_reason"]) for r in records]
    assert not any(r["refer_reason"] in ("features_stale", "model_unavailable") for r in records)
    for record in scored:
        assert record["model_version"] == report.version
        assert all(v["status"] == "ok" for v in record["features"].values())
    for record in records:
        result = replay(ServingSettings(), record["decision_id"])
        assert result.matches, (record["decision"], result.mismatches)
