"""The fast predict path gives exactly sklearn's probabilities (serving.fast_model)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from pitstore.models import tree_kernels
from pitstore.models.fast_model import (
    FastCalibratedHGB,
    FastModel,
    _unwrap,
    compile_fast,
    probe_rows,
    with_fast_path,
)
from pitstore.serving.scoring import score_row

COLUMNS = [f"f{i}" for i in range(12)]


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.gamma(2.0, 2.0, size=(n, len(COLUMNS))), columns=COLUMNS)
    x["f3"] = rng.integers(0, 2, n).astype(float)
    x.loc[rng.random(n) < 0.03, "f5"] = np.nan  # HGB learns a missing-value direction
    logit = 0.8 * x["f0"] + 0.6 * x["f1"].fillna(0) + 1.5 * x["f3"] - 7.0
    x["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread() -> Iterator[None]:
    """sklearn's OpenMP threads spin against each other on a busy 2-core box
    (this module: ~7 s with one thread, ~65 s without); results are the same."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def model() -> Any:
    from pitstore.training.model import fit  # the production model: HGB + sigmoid calibration

    return fit(frame(3000, 0), COLUMNS)


@dataclass
class Loaded:  # the shape of training.registry.LoadedModel that serving uses
    card: dict[str, Any]
    feature_columns: list[str]
    model: Any

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(df[self.feature_columns].to_numpy())[:, 1]


def test_fast_path_equals_sklearn_bit_for_bit(model: Any) -> None:
    fast = compile_fast(model)
    assert fast is not None
    held_out = frame(2000, 1)[COLUMNS].to_numpy()
    probes = probe_rows(fast, n=3000, seed=5)  # at/around split thresholds, NaN
    assert np.isnan(probes).any() and np.isnan(held_out).any()
    for x in (held_out, probes, held_out[:1], held_out[:31]):
        slow = model.predict_proba(x)[:, 1]
        assert np.array_equal(fast.proba(x), slow)


def test_compiled_and_numpy_walks_equal_sklearn(model: Any) -> None:
    # numba is a pinned dependency: a silent fall back to numpy would be a regression
    assert tree_kernels.load() is not None
    parts = _unwrap(model)
    assert parts is not None
    compiled, numpy_walk = FastCalibratedHGB(*parts), FastCalibratedHGB(*parts, compiled=False)
    assert compiled.kernels is not None and numpy_walk.kernels is None
    probes = probe_rows(compiled, n=2000, seed=7)
    slow = model.predict_proba(probes)[:, 1]
    assert np.array_equal(compiled.proba(probes), slow)
    assert np.array_equal(numpy_walk.proba(probes), slow)


def test_score_row_scores_identically_with_and_without_fast_path(model: Any) -> None:
    """The same score and decision either way; the fast path explains with exact
    TreeSHAP (log-odds), the slow one by substituting training medians."""
    from pitstore.training.model import reference_stats

    rows = frame(50, 2)
    card = {
        "threshold": 0.5,
        "review_band": [0.3, 0.7],
        "reference": reference_stats(frame(3000, 0), COLUMNS),  # what training writes
    }
    slow = Loaded(card, COLUMNS, model)
    fast = with_fast_path(slow)
    assert isinstance(fast, FastModel) and fast.card is card and fast.model is model
    scored = 0
    for _, r in rows.iterrows():
        row = {c: float(r[c]) for c in COLUMNS if not np.isnan(r[c])}
        if len(row) < len(COLUMNS):
            continue  # serving never scores a row with a missing input
        f, s = score_row(fast, row), score_row(slow, row)
        assert (f.score, f.decision, f.model_input) == (s.score, s.decision, s.model_input)
        assert f.explanation["method"] == "tree_shap_path_dependent"
        assert s.explanation["method"] == "median_substitution"
        assert all(x.contribution > 0 for x in f.reasons + s.reasons)
        scored += 1
    assert scored > 40


def test_unsupported_models_keep_the_slow_path() -> None:
    data = frame(600, 3).dropna()
    x, y = data[COLUMNS].to_numpy(), data["label"].to_numpy()
    assert compile_fast(LogisticRegression(max_iter=500).fit(x, y)) is None
    cv_ensemble = CalibratedClassifierCV(HistGradientBoostingClassifier(max_iter=20), cv=3)
    assert compile_fast(cv_ensemble.fit(x, y)) is None  # one HGB per fold: not this shape
    plain = Loaded({}, COLUMNS, LogisticRegression(max_iter=500).fit(x, y))
    assert with_fast_path(plain) is plain
