"""The shadow challenger: a real app scores with the champion, logs the
challenger's verdict beside it, answers with the champion alone; the monitor
compares both on the same matured, labelled decisions.

The home is tests/test_monitor_report.py's (a generated landing zone, dbt runs,
a champion trained on days 35..42); the challenger is trained on the same home
over days 31..42. The online store (a real Redis) is materialized as of the
day-55 run and day 55's transactions are posted to the app (TestClient): the
app stamps decisions with the wall clock, so the monitor's window of those
days is written as test_monitor_report.py writes it (serving.scoring's and
serving.shadow's own functions, decided at each transaction's time).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import average_precision_score
from test_monitor_report import (
    START,
    TRAIN,
    build_home,
    day,
    known_labels,
    window,
    window_rows,
    write_decisions,
)
from test_serving import AUTH, KEY

from pitstore.core.config import Settings
from pitstore.core.spec import FRAUD_V1
from pitstore.models.fast_model import with_fast_path
from pitstore.models.registry import LoadedModel, load_model, promote
from pitstore.monitor.report import monitor
from pitstore.monitor.settings import MonitorSettings
from pitstore.online.materialize import materialize_view
from pitstore.serving.app import create_app
from pitstore.serving.audit import iter_records
from pitstore.serving.auth import SCOPES, entry_for
from pitstore.serving.settings import ServingSettings
from pitstore.training.labels import LabelPolicy
from pitstore.training.pipeline import train_fraud

CHALLENGER = LabelPolicy(
    START + timedelta(days=50),
    maturity=timedelta(days=7),
    start=START + timedelta(days=31),
    end=START + timedelta(days=43),
)
# the volatile fields of a decision: when and where it was logged
VOLATILE = {"decision_id", "decided_at", "latency_ms", "prev", "hash"}


@dataclass
class Home:
    settings: Settings
    champion: LoadedModel
    challenger: LoadedModel
    rows: pd.DataFrame  # the window's transactions, as served then


@pytest.fixture(scope="module")
def shadow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    home = tmp_path_factory.mktemp("shadow-home")
    settings = build_home(home)
    champion = train_fraud(settings, TRAIN).version
    challenger = train_fraud(settings, CHALLENGER).version
    assert champion != challenger
    promote(settings, champion)
    yield Home(
        settings,
        load_model(settings, champion),
        load_model(settings, challenger),
        window_rows(settings),
    )


def serving(home: Home, redis_url: str, audit: Path, **over: Any) -> ServingSettings:
    return ServingSettings(
        home=home.settings.home,
        redis_url=redis_url,
        audit_dir=audit,
        # the decisions are of a past day: replayed, as a store-and-forward would
        max_event_age_s=10**9,
        budget_ms=2000,  # TestClient on a shared 2-core box: no fallback for time
        api_keys=entry_for("test", KEY, list(SCOPES)),
        **over,
    )


def post_day(ss: ServingSettings, rows: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    with TestClient(create_app(ss)) as client:
        for r in rows.to_dict("records"):
            body = {
                "transaction_id": r["transaction_id"],
                "account_id": r["account_id"],
                "card_id": "C0",
                "merchant_id": r["merchant_id"],
                "merchant_category": r["merchant_category"],
                "amount": int(r["amount"]),
                "currency": r["currency"],
                "channel": r["channel"],
                "country": r["country"],
                "event_ts": r["ts"].isoformat(),
            }
            res = client.post("/v1/score", json=body, headers=AUTH)
            assert res.status_code == 200, res.text
            out.append(res.json())
    return out


def test_the_app_logs_the_challenger_and_answers_with_the_champion(
    shadow_home: Home, settings: Settings, tmp_path: Path
) -> None:
    home = shadow_home
    online = Settings(pitstore_home=home.settings.home, redis_url=settings.redis_url)
    for view in FRAUD_V1.views:  # the online store as the day-55 run left it
        materialize_view(online, view, START + timedelta(days=55), full=True)
    ts = pd.to_datetime(home.rows["ts"], utc=True)
    rows = home.rows[(ts >= START + timedelta(days=55)) & (ts < START + timedelta(days=56))]
    rows = rows.sort_values("ts").head(60)
    champ, chal = home.champion.version, home.challenger.version
    url = settings.redis_url

    shadowed = post_day(serving(home, url, tmp_path / "a", shadow_model_version=chal), rows)
    alone = post_day(serving(home, url, tmp_path / "b"), rows)
    challenger_alone = post_day(serving(home, url, tmp_path / "c", model_version=chal), rows)

    records = {r["transaction_id"]: r for r in iter_records(tmp_path / "a")}
    scored = 0
    for answer, plain, other in zip(shadowed, alone, challenger_alone, strict=True):
        # the answer is the champion's alone: no shadow field, the same decision
        assert "shadow" not in answer and answer["model_version"] == champ
        drop = lambda d: {k: v for k, v in d.items() if k not in VOLATILE}  # noqa: E731
        assert drop(answer) == drop(plain)
        record = records[answer["transaction_id"]]
        assert drop({k: v for k, v in record.items() if k != "shadow"}) == drop(answer)
        shadow = record["shadow"]
        assert shadow["model_version"] == chal
        if answer["fallback"]:
            assert shadow["score"] is None and shadow["error"] == answer["fallback"]
            continue
        scored += 1
        # the challenger's logged score is what it answers when it is the champion
        assert shadow["score"] == pytest.approx(other["score"], abs=1e-12)
        assert shadow["decision"] == other["decision"]
        assert record["score"] == answer["score"]
    assert scored > 40, scored  # measured: most of day 55's accounts are known by then
    # a retry after a restart is answered from the audit log: still without shadow
    again = post_day(serving(home, url, tmp_path / "a", shadow_model_version=chal), rows.head(3))
    assert again == shadowed[:3]
    assert {r["shadow"]["model_version"] for r in records.values()} == {chal}


def test_monitor_compares_champion_and_challenger_on_the_same_rows(
    shadow_home: Home, tmp_path: Path
) -> None:
    home = shadow_home
    audit = tmp_path / "audit"
    challenger = with_fast_path(home.challenger)  # as the service loads it
    write_decisions(audit, home.champion, home.rows, shadow=challenger)
    cfg = MonitorSettings(min_week_frauds=5)

    early = monitor(home.settings, audit, home.champion, window(55), cfg)
    (pending,) = early["challenger"]["comparisons"]
    # report date day 56: nothing of days 49..55 has matured
    assert pending["rows"] == 0 and pending["pending_maturity"] > 0

    doc = monitor(home.settings, audit, home.champion, window(62), cfg)
    section = doc["challenger"]
    (cmp,) = section["comparisons"]
    assert cmp["challenger_version"] == home.challenger.version
    assert cmp["champion"]["model_version"] == home.champion.version
    assert json.loads(json.dumps(section)) == section  # JSON-ready

    # the same figures, recomputed from the audit log and the warehouse directly
    records = [
        r
        for r in iter_records(audit)
        if r["score"] is not None and r["shadow"]["score"] is not None
    ]
    labels = known_labels(home.settings, [r["transaction_id"] for r in records], 63)
    y = np.array([labels[r["transaction_id"]] for r in records])
    assert cmp["rows"] == len(records) and cmp["frauds"] == int(y.sum()) > 0
    for side, scores, card in (
        ("champion", [r["score"] for r in records], home.champion.card),
        ("challenger", [r["shadow"]["score"] for r in records], home.challenger.card),
    ):
        p = np.array(scores)
        figures = cmp[side]
        assert figures["pr_auc"] == pytest.approx(average_precision_score(y, p), rel=1e-9)
        flagged = p >= card["threshold"]
        assert figures["threshold"] == card["threshold"]
        assert figures["recall_at_threshold"] == pytest.approx((flagged & (y == 1)).sum() / y.sum())
        if flagged.any():
            precision = (flagged & (y == 1)).sum() / flagged.sum()
            assert figures["precision_at_threshold"] == pytest.approx(precision)
        assert figures["observed_over_expected"] == pytest.approx(y.mean() / p.mean(), rel=1e-9)
    # two different models: their scores differ on these rows
    assert cmp["champion"]["mean_score"] != cmp["challenger"]["mean_score"]
    print(f"\nchampion vs challenger on {cmp['rows']} matured rows: {json.dumps(cmp)}")
    assert day(49) == doc["window"]["from"]
