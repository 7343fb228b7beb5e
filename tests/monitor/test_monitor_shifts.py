"""The generator's documented shifts (pitstore/synth/shifts.py), and the monitor
naming the shifted input first on a real home built with one."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pytest
from test_monitor_report import (
    START,
    TRAIN,
    build_home,
    window,
    window_rows,
    world_params,
    write_decisions,
)

from pitstore.core.spec import FRAUD_V1
from pitstore.models.registry import load_model, promote
from pitstore.monitor.report import monitor
from pitstore.monitor.settings import MonitorSettings
from pitstore.synth.generate import GeneratorParams, generate
from pitstore.synth.shifts import Shift
from pitstore.training.pipeline import train_fraud

SMALL = GeneratorParams(accounts=300, merchants=80, days=20, seed=3, start=START)


def transactions(params: GeneratorParams) -> pd.DataFrame:
    """Every transaction row of the landing zone, in a fixed order, with a UTC time."""
    tables = generate(params).tables
    parts = [v for k, v in sorted(tables.items()) if k[0] == "transactions" and k[2] == 0]
    df = pa.concat_tables(parts).to_pandas()
    df["utc"] = pd.to_datetime(df["event_ts"], utc=True, errors="coerce", format="ISO8601")
    order = ["transaction_id", "ingested_at"]
    return df.sort_values(order, kind="stable").reset_index(drop=True)


def test_zero_field_zeroes_amount_from_its_day_only() -> None:
    base = transactions(SMALL)
    shifted = transactions(replace(SMALL, shifts=(Shift("zero_field", 10),)))
    assert len(base) == len(shifted)
    assert base["transaction_id"].equals(shifted["transaction_id"])
    zeroed = (base["amount"] != shifted["amount"]) & base["amount"].notna()
    after = base["utc"] >= START + timedelta(days=10)
    assert zeroed.sum() > 1000 and (shifted.loc[zeroed, "amount"] == 0).all()
    assert after[zeroed].all()  # only from day 10
    # every later transaction is zeroed, but for the deliberately bad ones
    assert zeroed[after & (base["amount"] > 0)].mean() > 0.99
    others = [c for c in base.columns if c not in ("amount", "utc")]
    assert base[others].equals(shifted[others])


def test_fraud_campaign_moves_fraud_to_a_new_category_and_channel() -> None:
    campaign = Shift("fraud_campaign", 10, category="gambling", channel="ecom")
    plain, moved = generate(SMALL), generate(replace(SMALL, shifts=(campaign,)))
    assert plain.stats == moved.stats  # no row added or dropped, the same frauds
    a, b = transactions(SMALL), transactions(replace(SMALL, shifts=(campaign,)))
    changed = (a["merchant_category"] != b["merchant_category"]) | (a["channel"] != b["channel"])
    assert changed.any()
    assert (b.loc[changed, "merchant_category"] == "gambling").all()
    assert (b.loc[changed, "channel"] == "ecom").all()
    assert (b.loc[changed, "utc"] >= START + timedelta(days=10)).all()
    # recorded in the landing manifest's params, and read back
    recorded = replace(SMALL, shifts=(campaign,)).to_dict()
    assert GeneratorParams.from_dict(recorded).shifts == (campaign,)
    assert "shifts" not in SMALL.to_dict()  # unshifted worlds keep their manifests


def test_bad_shift_is_refused() -> None:
    with pytest.raises(ValueError, match="shift kind"):
        Shift("explode", 1)
    with pytest.raises(ValueError, match="zero_field can zero"):
        Shift("zero_field", 1, field="country")


AMOUNT_DERIVED = {
    view.column(f)
    for view in FRAUD_V1.views
    for f in view.features
    if f.aggregation.input == "amount"
} | {"amount_vs_30d_mean"}


def test_monitor_names_the_zeroed_field_first(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The batch extract zeroes `amount` from day 49: features aggregated from it
    collapse; the switch still sends real amounts to serving."""
    home = tmp_path_factory.mktemp("monitor-shifted")
    settings = build_home(home, shifts=(Shift("zero_field", 49),))
    report = train_fraud(settings, TRAIN)  # days 35..42: before the bug
    promote(settings, report.version)
    model = load_model(settings, "promoted")
    sent = transactions(world_params())  # what the payment switch sent
    sent = sent[
        (sent["amount"].abs() < 1e12) & (sent["amount"] > 0) & sent["transaction_id"].notna()
    ]
    amounts = dict(zip(sent["transaction_id"], sent["amount"].astype("int64"), strict=True))
    rows = window_rows(settings)
    assert (rows["amount"] == 0).all()  # the warehouse holds the bug's zeros
    write_decisions(home / "audit", model, rows, amounts=amounts)
    doc = monitor(settings, home / "audit", model, window(55), MonitorSettings())
    first = doc["alerts"][0]
    assert first["kind"] == "input_drift" and first["subject"] in AMOUNT_DERIVED, doc["alerts"][:5]
    drifted = [a["subject"] for a in doc["alerts"] if a["kind"] == "input_drift"]
    assert set(drifted) <= AMOUNT_DERIVED, drifted
    assert "amount" not in drifted  # the request amount is the switch's: unchanged
