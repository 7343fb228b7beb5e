"""The PD pipeline on real public data (German Credit, shipped in datasets/)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from pitstore.checks.credit_validation import (
    DIRECTIONS,
    EXCLUDED,
    CreditDataError,
    load_german_credit,
    model_inputs,
    stratified_split,
    validate_german_credit,
)
from pitstore.cli.app import app

DATA = Path(__file__).resolve().parents[2] / "datasets" / "german_credit.parquet"


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return validate_german_credit(DATA, seeds=2)


def test_dataset_is_the_published_one() -> None:
    raw = load_german_credit(DATA)
    assert len(raw) == 1000 and int(raw["defaulted"].sum()) == 300
    inputs = model_inputs(raw)
    assert set(DIRECTIONS) <= set(inputs.columns)
    assert not any(c.startswith(EXCLUDED) for c in inputs.columns)
    assert not np.isinf(inputs.to_numpy()).any()


def test_stratified_split_keeps_the_default_rate() -> None:
    y = load_german_credit(DATA)["defaulted"].astype(int).to_numpy()
    train, valid = stratified_split(y, 0.3, seed=0)
    assert len(set(train) | set(valid)) == len(y) and not set(train) & set(valid)
    assert y[valid].mean() == pytest.approx(0.3) and y[train].mean() == pytest.approx(0.3)


def test_figures_are_in_the_published_range(report: dict[str, Any]) -> None:
    """Published models on this data reach AUC ~0.75-0.80; calibration holds."""
    mono = report["summary"]["monotone"]
    assert 0.70 < mono["auc"]["mean"] < 0.85
    assert mono["gini"]["mean"] == pytest.approx(2 * mono["auc"]["mean"] - 1)
    assert abs(mono["mean_pd_minus_observed"]["mean"]) < 0.06
    first = report["first_split"]
    assert first["metrics"]["calibration_in_the_large"]["within_interval"] is True
    cut = first["cutoffs"]
    assert cut["economics"]["break_even_pd"] == pytest.approx(1 / 6)
    assert 0 <= cut["prequalify_below"] <= cut["decline_pd"] <= 1


def test_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CreditDataError, match="no such file"):
        load_german_credit(tmp_path / "missing.parquet")
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(CreditDataError, match="not the German Credit table"):
        load_german_credit(tmp_path / "other.parquet")


def test_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "report.json"
    res = runner.invoke(
        app, ["credit", "validate", "--data", str(DATA), "--seeds", "2", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "gini" in res.output and "pre-qualify PD <" in res.output
    assert json.loads(out.read_text())["rows"] == 1000
    res = runner.invoke(app, ["credit", "validate", "--data", str(tmp_path / "nope.parquet")])
    assert res.exit_code == 2 and "no such file" in res.output
    assert "Traceback" not in res.output
