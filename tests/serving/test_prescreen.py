"""POST /v1/prescreen end to end: the real app (test client), a real Redis, a PD
model trained by the real credit training code, the real audit log and
``pitstore explain`` / ``pitstore audit verify``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prescreen_world import application, passing_rows, put_credit_features, train_and_promote
from typer.testing import CliRunner

from pitstore.cli.app import app as cli
from pitstore.core.config import Settings
from pitstore.core.spec import ACCOUNT_LEDGER_DAILY
from pitstore.models.fast_model import with_fast_path
from pitstore.models.registry import load_model
from pitstore.serving.app import create_app
from pitstore.serving.auth import entry_for, new_key
from pitstore.serving.explain import replay
from pitstore.serving.settings import ServingSettings

KEY = new_key()
SCORE_ONLY = new_key()
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], pd.DataFrame]:
    home = tmp_path_factory.mktemp("credit-home")
    card, frame = train_and_promote(home)
    return home, card, frame


def serving(home: Path, settings: Settings, tmp_path: Path, **extra: Any) -> ServingSettings:
    keys = ";".join(
        [
            entry_for("all", KEY, ["score", "prescreen", "decisions:read"]),
            entry_for("fraud", SCORE_ONLY, ["score"]),
        ]
    )
    values: dict[str, Any] = {
        "home": home,
        "redis_url": settings.redis_url,
        "audit_dir": tmp_path / "audit",
        "budget_ms": 2000,
        "api_keys": keys,
        "reasons_for": "all",
    }
    return ServingSettings(**{**values, **extra})


@pytest.fixture
def env(world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI (explain, audit verify) reads the same home and audit log."""
    home = world[0]
    monkeypatch.setenv("PITSTORE_HOME", str(home))
    monkeypatch.setenv("PITSTORE_AUDIT_DIR", str(tmp_path / "audit"))
    monkeypatch.delenv("PITSTORE_AUDIT_KEY", raising=False)
    yield


def post(http: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    out = http.post("/v1/prescreen", json=body)
    assert out.status_code == 200, out.text
    return out.json()  # type: ignore[no-any-return]


def test_bad_input_names_the_field(world: Any, settings: Settings, tmp_path: Path) -> None:
    home, _, frame = world
    now = datetime.now(UTC)
    good = application(frame.iloc[0], "app-422", now)
    bad = {
        "application_id": "../etc",
        "account_id": "",
        "applicant_age": -1,
        "amount": 0,
        "term_months": "12",
        "stated_income": -5,
        "employment_months": 1.5,
        "existing_debt": None,
        "purpose": "Car Loan!",
        "region": "",
        "months_since_last_default": -3,
        "application_ts": "2026-01-05T10:00:00",  # naive
    }
    with TestClient(create_app(serving(home, settings, tmp_path)), headers=AUTH) as http:
        for field, value in bad.items():
            out = http.post("/v1/prescreen", json={**good, field: value})
            assert out.status_code == 422, (field, out.text)
            body = out.json()
            assert [f["field"] for f in body["fields"]] == [field], body
            assert body["error"].startswith(f"invalid request: {field}:")
        missing = {k: v for k, v in good.items() if k != "months_since_last_default"}
        out = http.post("/v1/prescreen", json=missing)  # null must be said, not implied
        assert out.status_code == 422 and out.json()["fields"][0]["field"] == (
            "months_since_last_default"
        )
        out = http.post("/v1/prescreen", json={**good, "surname": "Smith"})
        assert out.status_code == 422 and out.json()["fields"][0]["field"] == "surname"
        future = (now + timedelta(hours=2)).isoformat()
        out = http.post("/v1/prescreen", json={**good, "application_ts": future})
        assert out.status_code == 422 and out.json()["fields"][0]["field"] == "application_ts"
        # its own scope: a fraud-scoring key may not pre-screen
        denied = http.post(
            "/v1/prescreen", json=good, headers={"authorization": f"Bearer {SCORE_ONLY}"}
        )
        assert denied.status_code == 403
        assert not list((tmp_path / "audit").glob("day=*/*.jsonl"))  # nothing decided


def test_rules_decline_without_the_model(
    world: Any, settings: Settings, tmp_path: Path, env: None
) -> None:
    home, _, frame = world
    now = datetime.now(UTC)
    row = passing_rows(frame, now).iloc[0]
    cases = {
        "R1": {"applicant_age": 17},
        # other debts alone take 60% of the monthly income
        "R2": {"existing_debt": int(row["stated_income"] / 12 * 0.6)},
        "R3": {"months_since_last_default": 5},
        "R4": {"term_months": 120},  # a longer term only lowers the repayment
    }
    decided = []
    # No features in Redis at all: a rule decides before any read.
    with TestClient(create_app(serving(home, settings, tmp_path)), headers=AUTH) as http:
        for rule, change in cases.items():
            record = post(http, application(row, f"app-{rule}", now, **change))
            assert record["decision"] == "decline", record
            assert record["rules_fired"] == [rule]
            assert record["reasons"][0]["rule"] == rule and record["reasons"][0]["text"]
            assert record["pd"] is None and record["features"] == {}
            decided.append(record["decision_id"])
        both = post(http, application(row, "app-both", now, applicant_age=16, amount=10_000))
        assert both["rules_fired"] == ["R1", "R4"]
        # R3's boundary: 24 months ago is allowed
        ok = post(http, application(row, "app-24", now, months_since_last_default=24))
        assert "R3" not in ok["rules_fired"]
    for decision_id in decided:
        result = replay(ServingSettings(), decision_id)
        assert result.matches, result.mismatches
        assert result.decision == "decline"


def test_missing_stale_unavailable_refer(
    world: Any, settings: Settings, tmp_path: Path, env: None
) -> None:
    home, _, frame = world
    now = datetime.now(UTC)
    # credit_v1 reads one view, so an account is either unknown (no row) or
    # has its row, fresh or stale; "features_missing" needs a second view.
    rows = passing_rows(frame, now).iloc[:2]
    unknown, stale = (rows.iloc[i] for i in range(2))
    old = ACCOUNT_LEDGER_DAILY.ttl + timedelta(days=2)
    put_credit_features(
        settings.redis_url, rows.iloc[1:2], now, views=(ACCOUNT_LEDGER_DAILY,), age=old
    )
    ids = []
    with TestClient(create_app(serving(home, settings, tmp_path)), headers=AUTH) as http:
        for row, reason in (
            (unknown, "unknown_account"),
            (stale, "features_stale"),
        ):
            record = post(http, application(row, f"app-{reason}", now))
            assert record["decision"] == "refer", record
            assert record["refer_reason"] == reason and record["pd"] is None
            assert record["reasons"] == [
                {"feature": None, "rule": reason, "text": record["reasons"][0]["text"]}
            ]
            ids.append(record["decision_id"])
        assert record["features"][ACCOUNT_LEDGER_DAILY.name]["status"] == "stale"
        metrics = http.get("/metrics").text
        assert 'pitstore_prescreen_requests_total{decision="refer",reason="features_stale"' in (
            metrics
        )
    down = serving(home, settings, tmp_path, redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(down), headers=AUTH) as http:
        record = post(http, application(unknown, "app-down", now))
        assert record["decision"] == "refer" and record["refer_reason"] == "redis_unavailable"
    for decision_id in ids:
        assert replay(ServingSettings(), decision_id).matches


def test_no_credit_model_refers_and_readiness_says_so(
    settings: Settings, tmp_path: Path, world: Any
) -> None:
    _, _, frame = world
    now = datetime.now(UTC)
    row = passing_rows(frame, now).iloc[0]
    put_credit_features(settings.redis_url, frame.iloc[:5], now)
    empty = tmp_path / "no-models"
    with TestClient(create_app(serving(empty, settings, tmp_path)), headers=AUTH) as http:
        record = post(http, application(row, "app-nomodel", now))
        ready = http.get("/readyz").json()
        metrics = http.get("/metrics").text
    assert record["decision"] == "refer" and record["refer_reason"] == "model_unavailable"
    assert record["model_version"] is None
    assert ready["prescreen"]["ready"] is False and ready["prescreen"]["model_loaded"] is False
    assert "no credit model" in ready["prescreen"]["reasons"][0]
    assert "pitstore_credit_model_loaded 0.0" in metrics


def test_pd_decision_reasons_audit_and_replay(
    world: Any, settings: Settings, tmp_path: Path, env: None
) -> None:
    home, card, frame = world
    now = datetime.now(UTC)
    rows = passing_rows(frame, now).iloc[:40]
    put_credit_features(settings.redis_url, rows, now)
    low, high = card["review_band"]
    model = with_fast_path(load_model(Settings(pitstore_home=home), "promoted", "credit_v1"))
    records = []
    with TestClient(create_app(serving(home, settings, tmp_path)), headers=AUTH) as http:
        ready = http.get("/readyz").json()["prescreen"]
        for i, (_, row) in enumerate(rows.iterrows()):
            records.append(post(http, application(row, f"app-pd-{i}", now)))
        fetched = http.get(f"/v1/decisions/{records[0]['decision_id']}").json()
    assert ready == {
        "ready": True,
        "reasons": [],
        "model_loaded": True,
        "model_version": card["version"],
        "materialized": ready["materialized"],
    }
    assert fetched == records[0]
    decisions = {r["decision"] for r in records}
    assert decisions <= {"pre-qualified", "refer", "decline"}
    assert len(decisions) >= 2, decisions  # the cut-offs separate these applicants
    for record in records:
        assert record["kind"] == "prescreen" and record["refer_reason"] is None
        assert record["model_version"] == card["version"] and not record["rules_fired"]
        pd_ = record["pd"]
        expected = "decline" if pd_ >= high else "refer" if pd_ >= low else "pre-qualified"
        assert record["decision"] == expected
        assert record["cutoffs"] == {"prequalify_below": low, "decline_pd": high}
        # No personal data beyond what the decision used: the request as validated.
        assert set(record["request"]) == set(application(rows.iloc[0], "x", now))
        # The reasons: every input that raised the PD most, exactly, in words.
        x = np.array(
            [
                np.nan if record["model_input"][c] is None else record["model_input"][c]
                for c in model.feature_columns
            ]
        )
        score, raw, phi = model.score_and_contributions(x)
        explanation = record["explanation"]
        assert explanation["raw_score"] == pytest.approx(raw, abs=1e-12)
        assert explanation["expected_value"] + phi.sum() == pytest.approx(raw, abs=1e-9)
        assert score == pytest.approx(pd_, abs=1e-12)
        raised = sorted(
            ((float(c), col) for col, c in zip(model.feature_columns, phi, strict=True) if c > 0),
            reverse=True,
        )[:3]
        if record["decision"] == "refer":
            assert record["reasons"][0]["rule"] == "pd_band"
        reasons = [r for r in record["reasons"] if r["feature"] is not None]
        assert [r["feature"] for r in reasons] == [col for _, col in raised]
        assert [r["contribution"] for r in reasons] == [round(c, 6) for c, _ in raised]
        assert all(r["contribution"] > 0 and r["text"] for r in reasons)
    texts = [r["text"] for rec in records for r in rec["reasons"]]
    assert not any("__" in t for t in texts), texts  # plain words, not column names

    runner = CliRunner()
    verified = runner.invoke(cli, ["audit", "verify", "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["ok"] is True
    for record in records[:10]:
        out = runner.invoke(cli, ["explain", record["decision_id"], "--json"])
        assert out.exit_code == 0, out.output
        shown = json.loads(out.output)
        assert shown["matches"] is True and shown["kind"] == "prescreen"
        assert shown["recomputed_score"] == shown["logged_score"] == record["pd"]
        assert shown["decision"] == record["decision"]


def test_default_reasons_inline_for_declines_only(
    world: Any, settings: Settings, tmp_path: Path, env: None
) -> None:
    home, card, frame = world
    now = datetime.now(UTC)
    rows = passing_rows(frame, now).iloc[:40]
    put_credit_features(settings.redis_url, rows, now)
    ss = serving(home, settings, tmp_path, reasons_for="adverse")
    with TestClient(create_app(ss), headers=AUTH) as http:
        records = [
            post(http, application(r, f"app-adv-{i}", now))
            for i, (_, r) in enumerate(rows.iterrows())
        ]
    by = {d: [r for r in records if r["decision"] == d] for d in ("decline", "refer")}
    assert by["decline"] and by["refer"], [r["decision"] for r in records]
    for record in by["decline"]:
        assert record["reasons"] and all(r["contribution"] > 0 for r in record["reasons"])
    for record in by["refer"]:
        assert [r["rule"] for r in record["reasons"]] == ["pd_band"]
        assert record["explanation"]["computed"] is False
    # the reviewer's reasons: exact, from the log, on demand
    shown = replay(ServingSettings(), by["refer"][0]["decision_id"])
    assert shown.matches and shown.reasons and shown.decision == "refer"
