"""A fast predict path for the production model shape, bit-identical to sklearn's,
and the exact contributions that explain it.

The model (``training.model.fit``) is a HistGradientBoostingClassifier wrapped
in ``CalibratedClassifierCV(FrozenEstimator(...), method="sigmoid")``. sklearn
spends most of a one-row ``predict_proba`` on per-call validation and a Python
loop over 200 trees, and its OpenMP prediction threads spin against the
server's other threads on a small machine (measured: p50 ~2 ms
single-threaded, p99 seconds with OpenMP on a busy 2-core box; see
docs/decisions/0004-tree-kernels.md). This module flattens every tree into
arrays once; the walk is compiled (``models.tree_kernels``, numba) where numba
loads, else numpy over all trees and rows together, level by level. The same
arrays feed ``models.contributions`` (exact path-dependent TreeSHAP of the raw
log-odds), which gives the reasons.

Identical results, not approximately equal ones: the traversal applies the
same comparisons as sklearn's ``_predict_one_from_raw_data`` (NaN follows
``missing_go_to_left``, else ``x <= num_threshold`` goes left), tree values are
summed in sklearn's order (baseline, then tree 1, 2, ...) with a sequential
``cumsum``, and the calibration is sklearn's own expression. ``compile_fast``
refuses any model it does not recognise (categorical splits, multiclass,
another calibrator...) and checks itself against the slow path on probe rows
before it is used (and that the contributions add up to the raw score); the
tests compare the two on many rows, NaN included.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.special import expit

from pitstore.models import contributions, tree_kernels

log = logging.getLogger("pitstore.serving")
# |expected value + sum of contributions - raw score| allowed (float rounding).
ADDITIVITY_TOLERANCE = 1e-9


class FastCalibratedHGB:
    """Class-1 probabilities of a sigmoid-calibrated binary HistGradientBoosting."""

    def __init__(
        self, hgb: Any, calibrators: list[tuple[float, float]], compiled: bool = True
    ) -> None:
        trees = [it[0].nodes for it in hgb._predictors]
        sizes = np.array([len(t) for t in trees])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        nodes = np.concatenate(trees)
        per_node_offset = np.repeat(offsets, sizes)
        leaf = nodes["is_leaf"].astype(bool)
        here = np.arange(len(nodes), dtype=np.intp)
        # A leaf points at itself, so walking a fixed number of levels is safe.
        left = np.where(leaf, here, nodes["left"].astype(np.intp) + per_node_offset)
        right = np.where(leaf, here, nodes["right"].astype(np.intp) + per_node_offset)
        self.children = np.stack([left, right], axis=1).ravel()  # [2*node + went_right]
        # The compiled walk (models.tree_kernels) stops at leaves and keeps
        # sklearn's tree order.
        self.left, self.right, self.is_leaf = left, right, leaf
        self.roots_in_order = offsets
        self.feature = np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp)
        self.threshold = nodes["num_threshold"].astype(np.float64)
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.value = nodes["value"].astype(np.float64)
        # Training samples per node: the covers TreeSHAP weighs paths by.
        self.cover = nodes["count"].astype(np.float64)
        # Deepest trees first, so level d only walks the trees deeper than d
        # (depths here run 5-12); ``unsort`` restores sklearn's tree order.
        depths = np.array([int(t["depth"].max()) for t in trees])
        order = np.argsort(-depths, kind="stable")
        self.roots = offsets[order]
        self.unsort = np.argsort(order)
        self.active = [int((depths > d).sum()) for d in range(int(depths.max()))]
        self.depth = len(self.active)
        self.baseline = float(np.asarray(hgb._baseline_prediction).ravel()[0])
        self.n_features = int(hgb.n_features_in_)
        self.calibrators = calibrators
        self.kernels = tree_kernels.load() if compiled else None
        self._paths: contributions.LeafPaths | None = None
        self.expected_value = contributions.expected_value(
            offsets, left, right, leaf, self.value, self.cover, self.baseline
        )

    def _tree_args(self) -> tuple[Any, ...]:
        return (
            self.roots_in_order,
            self.feature,
            self.threshold,
            self.missing_left,
            self.left,
            self.right,
            self.is_leaf,
            self.value,
            self.baseline,
        )

    def raw(self, x: np.ndarray) -> np.ndarray:
        """HistGradientBoosting's decision_function for ``x`` (rows x features)."""
        if self.kernels is not None:
            return self.kernels[0](x, *self._tree_args())  # type: ignore[no-any-return]
        return self.raw_numpy(x)

    def raw_numpy(self, x: np.ndarray) -> np.ndarray:
        """``raw`` without compiled code: all trees and rows level by level."""
        n = x.shape[0]
        flat = x.ravel()
        row_base = (np.arange(n, dtype=np.intp) * x.shape[1])[:, None]
        has_nan = bool(np.isnan(flat).any())
        nodes = np.tile(self.roots, (n, 1))
        for k in self.active:
            node = nodes[:, :k]
            xv = flat.take(row_base + self.feature.take(node))
            went_right = ~(xv <= self.threshold.take(node))  # NaN compares False
            if has_nan:  # NaN follows the node's missing_go_to_left
                nan = np.isnan(xv)
                went_right[nan] = ~self.missing_left.take(node[nan])
            nodes[:, :k] = self.children.take(2 * node + went_right)
        # sklearn: raw = 0 + baseline, then += tree value, tree by tree.
        stacked = np.empty((len(self.roots) + 1, n), dtype=np.float64)
        stacked[0] = 0.0 + self.baseline
        stacked[1:] = self.value.take(nodes)[:, self.unsort].T
        return np.cumsum(stacked, axis=0)[-1]

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Each input's exact TreeSHAP contribution to ``raw(x)``, per row
        (rows x features, log-odds): ``expected_value + row sum == raw``."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected (rows, {self.n_features}) input, got {x.shape}")
        if self._paths is None:  # flattened on first use (at load: compile_fast checks it)
            self._paths = contributions.LeafPaths(
                self.roots_in_order, self.feature, self.left, self.right,
                self.is_leaf, self.value, self.cover,
            )  # fmt: skip
        return self._paths(x, self.feature, self.threshold, self.missing_left)

    def contributions_by_path(self, x: np.ndarray) -> np.ndarray:
        """``contributions`` by shap's published algorithm (a walk over every
        path, O(leaves depth^2) per row): the reference the leaf kernel is tested
        against."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        return contributions.load()[0](  # type: ignore[no-any-return]
            x,
            self.roots_in_order,
            self.feature,
            self.threshold,
            self.missing_left,
            self.left,
            self.right,
            self.is_leaf,
            self.value,
            self.cover,
            self.depth,
        )

    def calibration_is_increasing(self) -> bool:
        """Every sigmoid ``expit(-(a t + b))`` rises with the raw score ``t`` (a < 0):
        then a positive contribution raised the probability too."""
        return all(a < 0 for a, _ in self.calibrators)

    def proba(self, x: np.ndarray) -> np.ndarray:
        """The calibrated probability of class 1, one per row of ``x``."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected (rows, {self.n_features}) input, got {x.shape}")
        return self.calibrate(self.raw(x))

    def calibrate(self, t: np.ndarray) -> np.ndarray:
        """sklearn's sigmoid calibration of raw scores ``t``, averaged over calibrators."""
        mean = np.zeros(t.shape[0], dtype=np.float64)
        for a, b in self.calibrators:
            p = expit(-(a * t + b))
            p[(p > 1.0) & (p <= 1.0 + 1e-5)] = 1.0  # sklearn's clamp
            mean += p
        mean /= len(self.calibrators)
        return mean


def substitution_matrix(base: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Row 0 is ``base``; row ``i + 1`` is ``base`` with input ``i`` set to ``refs[i]``."""
    matrix = np.tile(np.asarray(base, dtype=np.float64), (len(base) + 1, 1))
    matrix[np.arange(1, len(base) + 1), np.arange(len(base))] = refs
    return matrix


def _unwrap(model: Any) -> tuple[Any, list[tuple[float, float]]] | None:
    """(the HistGradientBoostingClassifier, [(a, b) per calibrator]) or None."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier

    if type(model) is not CalibratedClassifierCV or list(model.classes_) != [0, 1]:
        return None
    hgb, calibrators = None, []
    for cc in model.calibrated_classifiers_:
        est = getattr(cc.estimator, "estimator", cc.estimator)  # FrozenEstimator or not
        if type(est) is not HistGradientBoostingClassifier or (hgb is not None and est is not hgb):
            return None
        if cc.method != "sigmoid" or len(cc.calibrators) != 1 or list(est.classes_) != [0, 1]:
            return None
        if type(cc.calibrators[0]).__name__ != "_SigmoidCalibration":
            return None
        hgb = est
        calibrators.append((cc.calibrators[0].a_, cc.calibrators[0].b_))
    if hgb is None or hgb.n_trees_per_iteration_ != 1:
        return None
    if any(it[0].nodes["is_categorical"].any() for it in hgb._predictors):
        return None
    return hgb, calibrators


def calibration_terms(model: Any) -> list[tuple[float, float]] | None:
    """[(a, b) per sigmoid calibrator] of the production model shape, else None."""
    parts = _unwrap(model)
    return None if parts is None else [(float(a), float(b)) for a, b in parts[1]]


def probe_rows(fast: FastCalibratedHGB, n: int = 512, seed: int = 0) -> np.ndarray:
    """Rows that exercise every kind of branch: values on either side of and
    exactly at split thresholds, and NaN."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1e4, size=(n, fast.n_features))
    split = fast.children[0::2] != np.arange(len(fast.feature))  # not a leaf
    feats, thr = fast.feature[split], fast.threshold[split]
    pick = rng.integers(0, len(thr), size=x.shape) if len(thr) else None
    if pick is not None:
        on_split = feats[pick] == np.arange(fast.n_features)[None, :]
        nudge = rng.choice([-1e-9, 0.0, 1e-9], size=x.shape)
        x = np.where(on_split, thr[pick] + nudge, x)
        x = np.where(rng.random(x.shape) < 0.5, thr[pick], x)  # at some feature's threshold
    x[rng.random(x.shape) < 0.05] = np.nan
    return x


def compile_fast(model: Any, probe: np.ndarray | None = None) -> FastCalibratedHGB | None:
    """A fast path for ``model`` (a fitted sklearn estimator), or None.

    None when the model is not the supported shape, or when the fast path does
    not reproduce ``model.predict_proba(probe)[:, 1]`` exactly.
    """
    try:
        parts = _unwrap(model)
        if parts is None:
            return None
        fast = FastCalibratedHGB(*parts)
        if probe is None:
            probe = probe_rows(fast)
        slow = np.asarray(model.predict_proba(probe), dtype=np.float64)[:, 1]
        if not np.array_equal(fast.proba(probe), slow):
            log.warning("fast predict path disagrees with sklearn: using sklearn")
            return None
        # The contributions must add up to the raw score they explain.
        raw = fast.raw(probe)
        total = fast.contributions(probe).sum(axis=1) + fast.expected_value
        if not np.allclose(total, raw, rtol=0, atol=ADDITIVITY_TOLERANCE):
            log.warning("contributions do not add up to the raw score: using sklearn")
            return None
        return fast
    except Exception:  # any surprise: the slow path is always correct
        log.exception("fast predict path unavailable: using sklearn")
        return None


class FastModel:
    """A loaded model whose ``predict_matrix`` takes the fast path.

    Everything else (``card``, ``feature_columns``, ``predict_proba`` and any
    other attribute) is the wrapped model's, so callers see no difference.
    """

    def __init__(self, model: Any, fast: FastCalibratedHGB) -> None:
        self._model = model
        self.fast = fast
        self.card: dict[str, Any] = model.card
        self.feature_columns: list[str] = model.feature_columns

    def predict_proba(self, frame: Any) -> Any:
        return self._model.predict_proba(frame)

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Class-1 probabilities for rows already in ``feature_columns`` order."""
        return self.fast.proba(x)

    @property
    def expected_value(self) -> float:
        """The raw score the contributions are measured from (log-odds)."""
        return self.fast.expected_value

    @property
    def calibration_increasing(self) -> bool:
        return self.fast.calibration_is_increasing()

    def score_raw(self, row: np.ndarray) -> tuple[float, float]:
        """(calibrated probability, raw log-odds) for one row, without contributions."""
        x = np.ascontiguousarray(row, dtype=np.float64).reshape(1, -1)
        raw = self.fast.raw(x)
        return float(self.fast.calibrate(raw)[0]), float(raw[0])

    def score_and_contributions(self, row: np.ndarray) -> tuple[float, float, np.ndarray]:
        """(calibrated probability, raw log-odds, each input's TreeSHAP
        contribution to the raw log-odds) for one row in ``feature_columns`` order."""
        x = np.ascontiguousarray(row, dtype=np.float64).reshape(1, -1)
        raw = self.fast.raw(x)
        return float(self.fast.calibrate(raw)[0]), float(raw[0]), self.fast.contributions(x)[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def with_fast_path(model: Any) -> Any:
    """``model`` wrapped with the fast path when its estimator supports one (a
    registry ``LoadedModel`` keeps the sklearn estimator in ``.model``)."""
    estimator = getattr(model, "model", None)
    fast = compile_fast(estimator) if estimator is not None else None
    if fast is None:
        return model
    log.info(
        "fast predict path enabled (%d trees, depth %d, %s)",
        len(fast.roots),
        fast.depth,
        "compiled" if fast.kernels is not None else "numpy",
    )
    return FastModel(model, fast)
