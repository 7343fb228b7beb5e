"""credit_v1 training frames and the PD model's pipeline on a small real world
(generate -> dbt runs -> frame -> train -> promote), built once per module.

The world: 120 customers applying 12 times a year (so a small world holds
enough mature, labelled applications), card activity over 440 days so batch
runs exist before the applications that train, a dbt run every 40 days."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pitstore.core.config import Settings
from pitstore.core.credit_request import CREDIT_REQUEST_FEATURES, credit_request_features
from pitstore.core.offline_layout import read_events
from pitstore.core.spec import CREDIT_V1
from pitstore.models.registry import load_model, promoted_version
from pitstore.training.credit_labels import CREDIT_MATURITY, credit_policy, credit_requests
from pitstore.training.credit_pipeline import build_credit_frame
from pitstore.training.joins import created_ts_column, feature_column

START = datetime(2025, 1, 6, tzinfo=UTC)
DAYS = 440
RUN_EVERY = 40
LAST = START + timedelta(days=DAYS)


@pytest.fixture(scope="module")
def credit_home(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    from pitstore.landing.zone import write_landing
    from pitstore.synth.generate import CreditParams, GeneratorParams, generate
    from pitstore.transform.dbt_engine import transform_dbt

    home = tmp_path_factory.mktemp("pit-credit")
    settings = Settings(pitstore_home=home)
    credit = CreditParams(history_days=180, applications_per_year=12)
    params = GeneratorParams(
        accounts=120, merchants=20, days=DAYS, seed=11, start=START, credit=credit
    )
    write_landing(generate(params), settings.landing)
    for day in [*range(1, DAYS, RUN_EVERY), DAYS]:
        transform_dbt(settings, START + timedelta(days=day))
    return settings


def outcomes(settings: Settings) -> pd.DataFrame:
    return read_events(settings, "credit_outcomes").to_pandas().set_index("application_id")


def test_no_default_label_reaches_a_frame_before_it_was_known(credit_home: Settings) -> None:
    out = outcomes(credit_home)
    apps = read_events(credit_home, "applications").to_pandas().set_index("application_id")
    # A short maturity, so a mature application's default can still lie after the cutoff.
    maturity = timedelta(days=60)
    for cutoff in (LAST - timedelta(days=100), LAST - timedelta(days=30), LAST):
        rows, audit = credit_requests(credit_home, credit_policy(cutoff, maturity))
        df = rows.to_pandas().set_index("application_id")
        known = out.loc[df.index]
        assert (known["label_ts"] <= pd.Timestamp(cutoff)).all()
        assert (known["ingested_at"] <= pd.Timestamp(cutoff)).all()
        assert (df["defaulted"] == known["defaulted"].astype(int)).all()
        assert (apps.loc[df.index, "ingested_at"] <= pd.Timestamp(cutoff)).all()
        assert audit["labels"]["rows"] == len(df) > 0
    # A default whose label_ts or ingested_at is after a cutoff: absent, then present.
    mature = out.join(apps[["application_ts"]])
    mature = mature[mature["defaulted"] & (mature.index.isin(apps.index))]
    late = mature[mature["ingested_at"] - mature["application_ts"] > pd.Timedelta(maturity)]
    app_id, row = next(iter(late.sort_values("ingested_at").iterrows()))
    before = row["ingested_at"].to_pydatetime() - timedelta(microseconds=1)
    assert before - row["application_ts"].to_pydatetime() >= maturity  # mature by then
    rows, audit = credit_requests(credit_home, credit_policy(before, maturity))
    assert app_id not in set(rows["application_id"].to_pylist())
    assert audit["labels"]["defaults_known_only_after_cutoff"] > 0
    rows, _ = credit_requests(credit_home, credit_policy(row["ingested_at"], maturity))
    labelled = rows.filter(pc.equal(rows["application_id"], app_id))
    assert labelled["defaulted"].to_pylist() == [1]


def test_applications_younger_than_maturity_never_train(credit_home: Settings) -> None:
    frame = build_credit_frame(credit_home, credit_policy(LAST), compare_modes=False)
    df = frame.to_pandas()
    labels = frame.audit["labels"]
    assert (df["application_ts"] <= pd.Timestamp(LAST - CREDIT_MATURITY)).all()
    apps = read_events(credit_home, "applications").to_pandas()
    seen = apps[apps["ingested_at"] <= pd.Timestamp(LAST)]
    young = seen[seen["application_ts"] > pd.Timestamp(LAST - CREDIT_MATURITY)]
    assert labels["immature_excluded"] == labels["by_status"]["immature"] == len(young) > 0
    # Some young applications have already defaulted, and still do not train.
    out = outcomes(credit_home)
    early = out[out["defaulted"] & out.index.isin(young["application_id"])]
    early = early[early["ingested_at"] <= pd.Timestamp(LAST)]
    assert labels["immature_defaults_known_excluded"] == len(early) > 0
    assert not set(early.index) & set(df["application_id"])
    assert (
        labels["rows"]
        == len(df)
        == labels["by_status"]["defaulted"] + labels["by_status"]["repaid"]
    )
    assert frame.audit["leaks"]["created_ts_after_ts"] == 0 and frame.audit["ok"]


def test_frame_features_are_as_known_at_application_time(credit_home: Settings) -> None:
    frame = build_credit_frame(credit_home, credit_policy(LAST), compare_modes=False)
    df = frame.to_pandas()
    assert len(df) > 50
    for view in CREDIT_V1.views:
        files = sorted(credit_home.offline_view_dir(view.name).glob("run-*.parquet"))
        store = pd.concat([pq.read_table(f).to_pandas() for f in files])
        by_key = dict(tuple(store.groupby(view.entity.join_key)))
        filled = 0
        for row in df.itertuples(index=False):
            ts = row.ts
            rows = by_key.get(row.account_id, store.iloc[:0])
            cands = rows[
                (rows["created_timestamp"] <= ts)  # known at the application time
                & (rows["event_timestamp"] <= ts)
                & (rows["event_timestamp"] >= ts - view.ttl)
            ]
            best = cands.sort_values(["event_timestamp", "created_timestamp"]).tail(1)
            got = df.loc[df["application_id"] == row.application_id].iloc[0]
            if best.empty:
                assert pd.isna(got[created_ts_column(view)])
                continue
            filled += 1
            assert got[created_ts_column(view)] == best["created_timestamp"].iloc[0]
            for f in view.features:
                want, have = best[f.name].iloc[0], got[feature_column(view, f.name)]
                assert (pd.isna(want) and pd.isna(have)) or want == pytest.approx(have)
        assert filled > len(df) // 2
    # The request features are the shared function's, on the joined ledger sums.
    for _, row in df.head(40).iterrows():
        app = {
            "amount": row["amount"],
            "term_months": row["term_months"],
            "stated_income": row["stated_income"],
            "existing_debt": row["existing_debt"],
            "employment_months": row["employment_months"],
            "applicant_age": row["applicant_age"],
            "months_since_last_default": row["months_since_last_default"],
        }
        app = {k: None if pd.isna(v) else v for k, v in app.items()}
        inflow = row[feature_column(CREDIT_V1.views[0], "inflow_sum_90d")]
        outflow = row[feature_column(CREDIT_V1.views[0], "outflow_sum_90d")]
        want = credit_request_features(
            app, None if pd.isna(inflow) else inflow, None if pd.isna(outflow) else outflow
        )
        for name in CREDIT_REQUEST_FEATURES:
            assert (pd.isna(want[name]) and pd.isna(row[name])) or want[name] == pytest.approx(
                row[name]
            )


def test_cli_frame_train_promote(credit_home: Settings, tmp_path: Path) -> None:
    from pitstore.cli.app import app

    runner = CliRunner()
    env = {"PITSTORE_HOME": str(credit_home.home)}
    out = tmp_path / "frame"
    day = LAST.date().isoformat()
    args = ["training-frame", "--service", "credit_v1", "--labels-known-by", day]
    result = runner.invoke(app, [*args, "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "immature" in result.output
    result = runner.invoke(app, ["train", "--service", "credit_v1", "--frame", str(out)], env=env)
    assert result.exit_code == 0, result.output
    version = result.output.split("model ")[1].split()[0]
    assert "Gini" in result.output
    result = runner.invoke(app, ["models", "promote", version], env=env)
    assert result.exit_code == 0 and "credit_v1" in result.output, result.output
    assert promoted_version(credit_home, "credit_v1") == version
    assert promoted_version(credit_home) is None  # fraud untouched
    model = load_model(credit_home, "promoted", service="credit_v1")
    card = model.card
    manifest = json.loads((out / "manifest.json").read_text())
    assert card["service"] == "credit_v1" and card["frame_fingerprint"] == manifest["fingerprint"]
    m = card["metrics"]
    assert m["gini"] is not None and m["ks"] is not None
    c = m["calibration_in_the_large"]
    assert c["ci_low"] <= c["observed_rate"] <= c["ci_high"]
    assert set(m["by_segment"]) == {"age_band", "income_band", "region"}
    assert card["monotone_directions"]["debt_to_income"] == 1
    assert card["cutoffs"]["decline_pd"] >= card["cutoffs"]["prequalify_below"]
    assert card["label_cutoff"].startswith(day)
    assert "credit_v1" in runner.invoke(app, ["models", "list"], env=env).output
    bad = runner.invoke(
        app,
        ["train", "--service", "credit_v1", "--compare-modes", "--labels-known-by", day],
        env=env,
    )
    assert bad.exit_code != 0 and "compare-modes" in bad.output


def test_store_api_credit_frame_and_train(credit_home: Settings) -> None:
    from pitstore.api import Store

    store = Store(credit_home.home)
    frame = store.training_frame(None, "credit_v1", labels_known_by=LAST)
    assert frame.attrs["audit"]["labels"]["immature_excluded"] > 0
    card = store.train(frame)
    assert card["service"] == "credit_v1" and card["metrics"]["gini"] is not None
