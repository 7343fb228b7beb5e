"""The credit PD model: monotone in the declared directions (calibration
included), split by time, served by the existing fast path."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from credit_frames import synthetic_credit_frame
from threadpoolctl import threadpool_limits

from pitstore.core.credit_request import credit_request_frame
from pitstore.core.spec import ACCOUNT_DAILY, ACCOUNT_LEDGER_DAILY, CREDIT_V1
from pitstore.models.fast_model import compile_fast
from pitstore.models.registry import CARD_KEYS
from pitstore.training.credit_model import (
    MONOTONE_DIRECTIONS,
    CreditModelError,
    CreditResult,
    credit_card,
    credit_model_columns,
    fit_pd_model,
    time_split,
    train_credit_model,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """sklearn's OpenMP prediction threads spin against other work on a small
    machine (20 s instead of 2 for the grids here)."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_credit_frame(3000, seed=1)


@pytest.fixture(scope="module")
def result(frame: pd.DataFrame) -> CreditResult:
    return train_credit_model(frame)


def test_directions_cover_every_input_and_name_real_columns() -> None:
    assert list(MONOTONE_DIRECTIONS) == credit_model_columns(CREDIT_V1)
    led = ACCOUNT_LEDGER_DAILY.column
    assert MONOTONE_DIRECTIONS[led("missed_payments_180d")] == 1
    assert MONOTONE_DIRECTIONS[led("overdraft_days_90d")] == 1
    assert MONOTONE_DIRECTIONS[led("salary_days_90d")] == -1
    assert MONOTONE_DIRECTIONS[led("inflow_sum_90d")] == -1
    assert MONOTONE_DIRECTIONS["debt_to_income"] == 1
    assert MONOTONE_DIRECTIONS["applicant_age"] == 0
    assert not set(ACCOUNT_DAILY.columns) & set(MONOTONE_DIRECTIONS)


def test_pd_never_moves_against_a_direction(result: CreditResult, frame: pd.DataFrame) -> None:
    """Each constrained input over a grid, the others fixed at many real rows:
    the calibrated PD (and the raw score) never move against the direction."""
    rows = credit_request_frame(frame, CREDIT_V1)[result.columns].sample(150, random_state=0)
    base = rows.to_numpy(dtype=np.float64)
    hgb = result.model.calibrated_classifiers_[0].estimator
    checked = 0
    for col, direction in result.directions.items():
        if direction == 0:
            continue
        j = result.columns.index(col)
        values = rows[col].dropna().to_numpy()
        lo, hi = (values.min(), values.max()) if len(values) else (0.0, 1.0)
        grid = np.unique(np.concatenate([np.linspace(lo - 1, hi * 2 + 1, 40), values[:20]]))
        x = np.repeat(base, len(grid), axis=0)
        x[:, j] = np.tile(grid, len(base))
        for score in (result.model.predict_proba(x)[:, 1], hgb.decision_function(x)):
            steps = np.diff(score.reshape(len(base), len(grid)), axis=1) * direction
            assert steps.min() >= -1e-12, f"{col}: PD moved against direction {direction}"
        checked += 1
    assert checked == sum(1 for d in result.directions.values() if d)


def test_application_level_directions(result: CreditResult, frame: pd.DataFrame) -> None:
    """More stated income (through the ratios too) never raises the PD; more
    existing debt never lowers it: the request features keep the directions."""
    apps = frame.sample(100, random_state=2).reset_index(drop=True)
    for col, grid, sign in [
        ("stated_income", np.linspace(0, 15_000_000, 25), -1),
        ("existing_debt", np.linspace(0, 1_000_000, 25), +1),
    ]:
        pds = []
        for value in grid:
            feats = credit_request_frame(apps.assign(**{col: value}), CREDIT_V1)
            pds.append(result.model.predict_proba(feats[result.columns].to_numpy())[:, 1])
        steps = np.diff(np.stack(pds, axis=1), axis=1) * sign
        assert steps.min() >= -1e-12, col


def test_split_is_by_time_and_never_shuffled(frame: pd.DataFrame) -> None:
    train, valid, cut = time_split(frame, 0.3)
    assert train["application_ts"].max() < cut <= valid["application_ts"].min()
    assert train["application_ts"].is_monotonic_increasing
    assert valid["application_ts"].is_monotonic_increasing
    assert len(valid) == pytest.approx(0.3 * len(frame), abs=2)
    # Row order in the input does not matter: same split, same rows.
    shuffled = frame.sample(frac=1.0, random_state=9)
    t2, v2, cut2 = time_split(shuffled, 0.3)
    assert cut2 == cut
    assert t2["application_id"].tolist() == train["application_id"].tolist()
    assert v2["application_id"].tolist() == valid["application_id"].tolist()


def test_training_is_order_free_and_validates_out_of_time(
    result: CreditResult, frame: pd.DataFrame
) -> None:
    again = train_credit_model(frame.sample(frac=1.0, random_state=3))
    np.testing.assert_array_equal(again.valid_p, result.valid_p)
    m = result.metrics
    assert m["rows"] == result.split["valid_rows"] == len(result.valid_y)
    assert result.split["valid_from"] > result.split["train_to"]
    assert 0.55 < m["auc"] < 0.95 and m["gini"] == pytest.approx(2 * m["auc"] - 1)
    cil = m["calibration_in_the_large"]
    assert abs(cil["mean_pd"] - cil["observed_rate"]) < 0.05
    assert set(m["by_segment"]) == {"age_band", "income_band", "region"}


def test_fast_path_and_contributions_serve_the_model(result: CreditResult) -> None:
    fast = compile_fast(result.model)
    assert fast is not None and fast.calibration_is_increasing()
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1e5, size=(64, len(result.columns)))
    x[rng.random(x.shape) < 0.1] = np.nan
    np.testing.assert_array_equal(fast.proba(x), result.model.predict_proba(x)[:, 1])
    total = fast.contributions(x).sum(axis=1) + fast.expected_value
    np.testing.assert_allclose(total, fast.raw(x), rtol=0, atol=1e-9)


def test_card(result: CreditResult) -> None:
    card = credit_card(result)
    low, high = card["review_band"]
    assert card["threshold"] == high and 0.0 <= low <= high <= 1.0
    assert card["fast_path_shape"] is True
    assert card["explanation"]["calibration_increasing"] is True
    registry_needs = set(CARD_KEYS) - {
        "version", "spec_fingerprint", "frame_fingerprint", "training_window",
        "label_cutoff", "code_version", "created_at",
    }  # fmt: skip
    assert registry_needs <= set(card)
    assert {"mean_score", "fraud_rate"} <= set(card["metrics"]["calibration"][0])


def test_one_outcome_only_is_refused(frame: pd.DataFrame) -> None:
    df = credit_request_frame(frame.assign(defaulted=False), CREDIT_V1)
    with pytest.raises(CreditModelError, match="both outcomes"):
        fit_pd_model(df, credit_model_columns(), MONOTONE_DIRECTIONS)
    with pytest.raises(CreditModelError, match="lacks columns"):
        train_credit_model(frame.drop(columns=["defaulted"]))


def test_an_input_missing_in_every_training_row_is_refused_by_name() -> None:
    frame = synthetic_credit_frame(600, seed=3)
    column = credit_model_columns()[0]
    frame[column] = np.nan
    with pytest.raises(CreditModelError, match=column):
        train_credit_model(frame)
