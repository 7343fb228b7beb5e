"""Exact additive contributions (models.contributions): they add up to the raw
score, equal shap's TreeExplainer, and become the served reasons (serving.scoring)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pitstore.models import contributions
from pitstore.models.fast_model import (
    ADDITIVITY_TOLERANCE,
    FastCalibratedHGB,
    FastModel,
    _unwrap,
    compile_fast,
    probe_rows,
)
from pitstore.serving.scoring import Reference, score_row
from pitstore.training.model import explanation_card, fit, reference_stats

COLUMNS = [f"f{i}" for i in range(12)]


def frame(n: int, seed: int) -> pd.DataFrame:
    """Inputs with a binary one and a missing-value direction to learn, and a label."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.gamma(2.0, 2.0, size=(n, len(COLUMNS))), columns=COLUMNS)
    x["f3"] = rng.integers(0, 2, n).astype(float)
    x.loc[rng.random(n) < 0.03, "f5"] = np.nan
    logit = 0.8 * x["f0"] + 0.6 * x["f1"] + 1.5 * x["f3"] - 7.0
    x["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def model() -> Any:
    return fit(frame(3000, 0), COLUMNS)  # the production shape: HGB + sigmoid calibration


@pytest.fixture(scope="module")
def fast(model: Any) -> FastCalibratedHGB:
    compiled = compile_fast(model)
    assert compiled is not None
    return compiled


@pytest.fixture(scope="module")
def rows(fast: FastCalibratedHGB) -> np.ndarray:
    """Held-out rows (NaN included) and probes at / around every split threshold."""
    held_out = frame(1500, 1)[COLUMNS].to_numpy()
    probes = probe_rows(fast, n=1500, seed=3)
    x = np.concatenate([held_out, probes])
    assert np.isnan(x).any()
    return x


def hgb_of(model: Any) -> Any:
    parts = _unwrap(model)
    assert parts is not None
    return parts[0]


def test_contributions_add_up_to_the_raw_score(
    model: Any, fast: FastCalibratedHGB, rows: np.ndarray
) -> None:
    phi = fast.contributions(rows)
    assert phi.shape == rows.shape
    raw = fast.raw(rows)
    assert np.array_equal(raw, hgb_of(model).decision_function(rows))  # sklearn's log-odds
    assert np.abs(fast.expected_value + phi.sum(axis=1) - raw).max() < ADDITIVITY_TOLERANCE
    assert np.abs(phi).max() > 0.1  # not trivially zero


def test_contributions_equal_shap_tree_explainer(
    model: Any, fast: FastCalibratedHGB, rows: np.ndarray
) -> None:
    import shap

    explainer = shap.TreeExplainer(hgb_of(model), feature_perturbation="tree_path_dependent")
    expected = np.asarray(explainer.shap_values(rows, check_additivity=False))
    assert expected.shape == rows.shape
    assert np.abs(fast.contributions(rows) - expected).max() < 1e-9
    assert abs(float(np.ravel(explainer.expected_value)[0]) - fast.expected_value) < 1e-9
    # and the raw score shap explains is sklearn's decision_function
    decision = hgb_of(model).decision_function(rows[:200])
    assert np.allclose(expected[:200].sum(axis=1) + fast.expected_value, decision, atol=1e-9)


def test_leaf_kernel_equals_the_path_walk_and_plain_python(
    fast: FastCalibratedHGB, rows: np.ndarray
) -> None:
    by_leaf = fast.contributions(rows)
    paths = fast._paths
    assert paths is not None
    # some path splits on one input twice: the merged-slot case is exercised
    assert (np.diff(paths.path_start) > paths.n_unique).any()
    assert paths.n_unique.max() >= 6  # several Gauss-Legendre orders
    assert np.abs(by_leaf - fast.contributions_by_path(rows)).max() < 1e-12
    path_walk, leaf_walk = contributions._kernel(lambda f: f)  # without numba
    few = rows[::300]
    plain = leaf_walk(
        few, fast.feature, fast.threshold, fast.missing_left, paths.split_nodes, paths.path_start,
        paths.path_node, paths.path_slot, paths.path_left, paths.slot_start, paths.n_unique,
        paths.slot_feature, paths.slot_zero, paths.leaf_value, paths.nodes, paths.weights,
    )  # fmt: skip
    assert np.abs(plain - by_leaf[::300]).max() < 1e-12
    plain_walk = path_walk(
        few, fast.roots_in_order, fast.feature, fast.threshold, fast.missing_left,
        fast.left, fast.right, fast.is_leaf, fast.value, fast.cover, fast.depth,
    )  # fmt: skip
    assert np.abs(plain_walk - by_leaf[::300]).max() < 1e-12


@dataclass
class Loaded:  # the registry's LoadedModel shape
    card: dict[str, Any]
    feature_columns: list[str]
    model: Any

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(df[self.feature_columns].to_numpy())[:, 1]


def test_reasons_are_the_largest_positive_contributions(model: Any) -> None:
    train = frame(3000, 0)
    card: dict[str, Any] = {"threshold": 0.5, "review_band": [0.3, 0.7]}
    card["reference"] = reference_stats(train, COLUMNS)
    card["explanation"] = explanation_card(model)
    assert card["explanation"]["calibration_increasing"] is True
    served = FastModel(Loaded(card, COLUMNS, model), compile_fast(model))  # type: ignore[arg-type]
    rows = frame(300, 4).dropna()
    for _, r in rows.head(100).iterrows():
        row = {c: float(r[c]) for c in COLUMNS}
        result = score_row(served, row)
        _, raw, phi = served.score_and_contributions(np.array([row[c] for c in COLUMNS]))
        assert result.explanation["raw_score"] == raw
        positive = sorted(((-p, c) for c, p in zip(COLUMNS, phi, strict=True) if p > 1e-12))[:3]
        assert [x.feature for x in result.reasons] == [c for _, c in positive]
        for reason in result.reasons:
            median = float(train[reason.feature].median())
            assert reason.typical == median
            assert reason.percentile is not None and 0 <= reason.percentile <= 100
            assert f"typical {median:,.2f}".rstrip("0").rstrip(".") in reason.text or (
                f"typical {int(median):,}" in reason.text
            )


def test_percentile_against_the_training_quantiles() -> None:
    values = pd.DataFrame({"x": np.arange(1001, dtype=float), "zeros": np.zeros(1001)})
    values.loc[:700, "zeros"] = 0.0
    values.loc[701:, "zeros"] = 5.0
    ref = reference_stats(values, ["x", "zeros"])
    r = Reference(ref["medians"], ref["quantiles"])
    assert ref["medians"] == {"x": 500.0, "zeros": 0.0}
    assert r.percentile("x", -1.0) == 0.0
    assert r.percentile("x", 500.0) == 50.0
    assert r.percentile("x", 505.0) == 50.5
    assert r.percentile("x", 5000.0) == 100.0
    assert r.percentile("zeros", 0.0) == 70.0  # 70% of rows are 0 (ties: the top of the run)
    assert r.percentile("zeros", 5.0) == 100.0
    assert Reference({}, {}).percentile("x", 1.0) is None


def test_adverse_only_reasons_skip_approvals_and_keep_the_rest_exact(model: Any) -> None:
    """reasons_for='adverse': an approval is scored without TreeSHAP (same score and
    decision), a review or decline gets exactly the reasons 'all' gives."""
    card: dict[str, Any] = {"threshold": 0.5, "review_band": [0.3, 0.7]}
    card["reference"] = reference_stats(frame(3000, 0), COLUMNS)
    card["explanation"] = explanation_card(model)
    served = FastModel(Loaded(card, COLUMNS, model), compile_fast(model))  # type: ignore[arg-type]
    seen = set()
    for _, r in frame(400, 5).dropna().iterrows():
        row = {c: float(r[c]) for c in COLUMNS}
        full, lean = score_row(served, row, "all"), score_row(served, row, "adverse")
        assert (lean.score, lean.decision) == (full.score, full.decision)
        seen.add(full.decision)
        if full.decision == "approve":
            assert lean.reasons == [] and lean.explanation["computed"] is False
        else:
            assert lean.reasons == full.reasons and lean.explanation == full.explanation
    assert {"approve", "decline"} <= seen
