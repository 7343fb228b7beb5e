"""`pitstore monitor --service credit_v1` on a small generated credit world, with
pre-screen records the real app wrote: generate -> dbt runs -> `train_credit`
-> promote -> materialize credit_v1 into a real Redis -> /v1/prescreen decides
the world's latest applications -> the monitor reports on today's audit day.

The applications are decided as of the world's last day, so none is 12 months
old at the report date: performance must say "no verdict yet"."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_credit_frames import LAST, RUN_EVERY, START, credit_home  # noqa: F401  (the module fixture)
from typer.testing import CliRunner

from pitstore.cli.app import app as cli
from pitstore.core.config import Settings
from pitstore.core.offline_layout import read_events
from pitstore.core.spec import CREDIT_V1
from pitstore.models.registry import load_model, promote
from pitstore.online.materialize import materialize_view
from pitstore.serving.app import create_app
from pitstore.serving.auth import entry_for, new_key
from pitstore.serving.credit_rules import DECISIONS
from pitstore.serving.settings import ServingSettings
from pitstore.training.credit_labels import CREDIT_MATURITY, credit_policy
from pitstore.training.credit_pipeline import train_credit

pytestmark = pytest.mark.slow
MIN_ROWS = 20  # a small world: judge PSI from 20 scored decisions


def body(a: pd.Series, **changes: Any) -> dict[str, Any]:
    since = a["months_since_last_default"]
    out = {
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
    return {**out, **changes}


@pytest.fixture(scope="module")
def world(
    credit_home: Settings,  # noqa: F811
) -> Any:
    """(settings, version, the world's recent applications)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        report = train_credit(credit_home, credit_policy(LAST))
    promote(credit_home, report.version)
    apps = read_events(credit_home, "applications").to_pandas()
    apps["application_ts"] = pd.to_datetime(apps["application_ts"], utc=True)
    recent = apps[apps["application_ts"] >= pd.Timestamp(LAST) - timedelta(days=90)].tail(80)
    return credit_home, report.version, recent


def decide(
    world: Any,
    redis_url: str,
    bodies: list[dict[str, Any]],
    mp: pytest.MonkeyPatch,
    audit: Path,
    at: datetime = LAST,
) -> list[dict[str, Any]]:
    """The bodies through /v1/prescreen (the real app, real Redis, real audit log),
    with the credit views as known at ``at``."""
    home, _, _ = world
    live = Settings(pitstore_home=home.home, redis_url=redis_url)
    for view in CREDIT_V1.views:
        materialize_view(live, view, at)
    key = new_key()
    mp.setenv("PITSTORE_HOME", str(home.home))
    mp.setenv("PITSTORE_AUDIT_DIR", str(audit))
    ss = ServingSettings(
        home=home.home,
        redis_url=redis_url,
        audit_dir=audit,
        budget_ms=2000,
        api_keys=entry_for("t", key, ["prescreen"]),
        max_event_age_s=10 * 365 * 86_400,  # the world's applications are months old
    )
    out = []
    with TestClient(create_app(ss), headers={"authorization": f"Bearer {key}"}) as http:
        for b in bodies:
            r = http.post("/v1/prescreen", json=b)
            assert r.status_code == 200, r.text
            out.append(r.json())
    return out


def run_monitor(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[int, dict[str, Any], str]:
    mp.setenv("PITSTORE_MONITOR_MIN_ROWS", str(MIN_ROWS))
    today = datetime.now(UTC).date().isoformat()
    html = tmp / "report.html"
    args = ["monitor", "--service", "credit_v1", "--from", today, "--to", today]
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp), "--html", str(html)])
    # exit 1 is also what an uncaught exception gives: it must be an alert
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), (
        res.exception
    )
    assert res.exit_code in (0, 1), res.output
    return res.exit_code, json.loads((tmp / "monitor.json").read_text()), html.read_text()


def test_credit_report_from_real_prescreens(
    world: Any, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, version, recent = world
    bodies = [body(a) for _, a in recent.iterrows()]
    records = decide(world, settings.redis_url, bodies, monkeypatch, tmp_path / "audit")
    scored = [r for r in records if r["pd"] is not None]
    assert len(scored) >= MIN_ROWS, [(r["decision"], r["refer_reason"]) for r in records]
    code, doc, html = run_monitor(tmp_path, monkeypatch)
    assert code == (1 if doc["alerts"] else 0)
    assert doc["service"] == "credit_v1" and doc["model_version"] == version
    assert doc["decisions"] == len(records)
    assert doc["reference"]["matches_card"]

    # input drift: every model input, on the decisions the model scored
    model = load_model(home, version, service="credit_v1")
    drift = {r["feature"]: r for r in doc["input_drift"]["window"]}
    assert set(drift) == set(model.feature_columns)
    assert all(r["n_cur"] <= len(scored) for r in drift.values())
    assert all(r["judged"] == (r["n_cur"] >= MIN_ROWS) for r in drift.values())
    dti = np.array([r["model_input"]["debt_to_income"] for r in scored], dtype="float64")
    assert drift["debt_to_income"]["n_cur"] == int((~np.isnan(dti)).sum())

    # prediction drift: the PD's PSI and the model's decisions in credit words
    pred = doc["prediction_drift"]
    assert pred["score"]["n_cur"] == len(scored) and pred["score"]["psi"] is not None
    assert set(pred["window_mix"]) == set(pred["reference_mix"]) == set(DECISIONS)
    by_model = pd.Series([r["decision"] for r in scored]).value_counts(normalize=True)
    for k in DECISIONS:
        assert pred["window_mix"][k] == pytest.approx(by_model.get(k, 0.0))

    # every decision's mix, rule declines and refers
    credit = doc["credit"]
    assert sum(credit["mix"].values()) == pytest.approx(1.0)
    ruled = np.mean([bool(r["rules_fired"]) for r in records])
    assert credit["rule_decline_share"] == pytest.approx(ruled)
    assert 0 <= credit["reference_rule_decline_share"] < 1

    # no application is 12 months old: no verdict, and when the first matures
    perf = doc["performance"]
    first = (LAST + CREDIT_MATURITY).date().isoformat()
    assert perf["verdict"] is None
    assert perf["note"] == f"no verdict yet ({len(scored)} decisions, first matures on {first})"
    assert perf["pending_maturity"] == len(scored)
    assert "Credit decisions" in html and "No verdict yet" in html

    # a batch of under-18 applicants: the rule-decline share moves, alert (exit 1)
    young = [
        body(a, application_id=f"{a['application_id']}-u18", applicant_age=17)
        for _, a in recent.iterrows()
    ]
    decide(world, settings.redis_url, young, monkeypatch, tmp_path / "audit")
    code, doc, _ = run_monitor(tmp_path / "after", monkeypatch)
    assert code == 1
    rule = [a for a in doc["alerts"] if a["kind"] == "rule_declines"]
    expected = (ruled * len(records) + len(young)) / (len(records) + len(young))
    assert doc["credit"]["rule_decline_share"] == pytest.approx(expected)
    change = expected - doc["credit"]["reference_rule_decline_share"]
    assert change > doc["thresholds"]["decision_mix_change"]
    assert [a["value"] for a in rule] == [pytest.approx(change, abs=1e-6)]


def test_fraud_service_refuses_a_credit_version(
    world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, version, _ = world
    monkeypatch.setenv("PITSTORE_HOME", str(home.home))
    res = CliRunner().invoke(
        cli, ["monitor", "--model", version, "--from", "2026-01-01", "--to", "2026-01-01"]
    )
    assert res.exit_code == 2
    assert "add --service credit_v1" in res.output


def test_credit_verdict_on_matured_decisions(
    world: Any, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Applications decided as of a day over 12 months before the report date:
    judged against the outcomes the store knows (its newest run, the world's end)."""
    home, version, _ = world
    apps = read_events(home, "applications").to_pandas()
    apps["application_ts"] = pd.to_datetime(apps["application_ts"], utc=True)
    # a completed run's watermark (what materialize needs), over 12 months before
    # the world's end: these applications' outcomes are in the store
    at = START + timedelta(days=1 + RUN_EVERY)
    assert at <= LAST - CREDIT_MATURITY
    old = apps[
        (apps["application_ts"] <= pd.Timestamp(at))
        & (apps["application_ts"] > pd.Timestamp(at) - timedelta(days=30))
    ].tail(60)
    bodies = [body(a, application_ts=at.isoformat()) for _, a in old.iterrows()]
    records = decide(world, settings.redis_url, bodies, monkeypatch, tmp_path / "audit", at)
    scored = {r["application_id"] for r in records if r["pd"] is not None}
    assert scored
    _, doc, html = run_monitor(tmp_path, monkeypatch)
    perf = doc["performance"]
    verdict = perf["verdict"]
    assert verdict is not None and perf["pending_maturity"] == 0
    assert perf["labels_known_by"] == LAST.isoformat()
    outcomes = read_events(home, "credit_outcomes").to_pandas().set_index("application_id")
    known = outcomes.loc[outcomes.index.intersection(sorted(scored))]
    assert verdict["rows"] == len(known) > 0
    assert verdict["defaults"] == int(known["defaulted"].sum())
    assert verdict["matured_without_label"] == len(scored) - len(known)
    assert not verdict["judged"]  # a few dozen decisions: reported, not judged
    assert "matured decisions" in html
