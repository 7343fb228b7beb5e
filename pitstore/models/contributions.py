"""Exact additive contributions (path-dependent TreeSHAP) for the fast model's trees.

For one row ``x`` the booster's raw score is ``t(x) = baseline + sum of the
leaf values x reaches``, one leaf per tree: HistGradientBoosting's
``decision_function``, the log-odds before calibration. This module splits
``t(x)`` exactly among the model inputs::

    expected_value + sum(phi) == t(x)        (to rounding, ~1e-12)

where ``phi[i]`` is input ``i``'s Shapley value under the trees' own training
covers (Lundberg et al., "Consistent individualized feature attribution for
tree ensembles", algorithm 2; the "tree_path_dependent" perturbation of
``shap.TreeExplainer``, which the tests compare against) and
``expected_value = baseline + sum over trees of sum(leaf value * leaf count /
root count)``: the covers' average raw score.

Calibration is not part of the split. ``fast_model.FastCalibratedHGB`` turns
``t`` into the probability ``mean_k expit(-(a_k t + b_k))`` over its sigmoid
calibrators (one for ``training.model.fit``'s model); with every ``a_k < 0``
that map is strictly increasing, so an input with ``phi > 0`` pushed the
probability up. Contributions are therefore in log-odds and sum to the raw
score every calibrator reads; the probability is reported beside them.

The kernel reads the same flattened arrays as ``tree_kernels`` (sklearn's own
nodes: ``x <= threshold`` goes left, NaN follows ``missing_go_to_left``) plus
each node's training ``count``. It is compiled with numba when numba loads;
the same function runs as plain Python otherwise (correct, ~100x slower).
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import numpy as np

log = logging.getLogger("pitstore.serving")


def _kernel(jit: Any) -> Any:
    """The kernel, its helpers wrapped by ``jit`` (numba's njit, or nothing)."""

    @jit
    def _extend(feat, zero, one, pw, lvl, depth, zero_fraction, one_fraction, feature):  # type: ignore[no-untyped-def]
        """Add one split to the unique path at level ``lvl`` (shap's EXTEND)."""
        feat[lvl, depth] = feature
        zero[lvl, depth] = zero_fraction
        one[lvl, depth] = one_fraction
        pw[lvl, depth] = 1.0 if depth == 0 else 0.0
        for i in range(depth - 1, -1, -1):
            pw[lvl, i + 1] += one_fraction * pw[lvl, i] * (i + 1) / (depth + 1)
            pw[lvl, i] = zero_fraction * pw[lvl, i] * (depth - i) / (depth + 1)

    @jit
    def _unwind(feat, zero, one, pw, lvl, depth, index):  # type: ignore[no-untyped-def]
        """Remove path element ``index`` (a feature split on again; shap's UNWIND)."""
        one_fraction = one[lvl, index]
        zero_fraction = zero[lvl, index]
        next_one = pw[lvl, depth]
        for i in range(depth - 1, -1, -1):
            if one_fraction != 0.0:
                tmp = pw[lvl, i]
                pw[lvl, i] = next_one * (depth + 1) / ((i + 1) * one_fraction)
                next_one = tmp - pw[lvl, i] * zero_fraction * (depth - i) / (depth + 1)
            else:
                pw[lvl, i] = pw[lvl, i] * (depth + 1) / (zero_fraction * (depth - i))
        for i in range(index, depth):
            feat[lvl, i] = feat[lvl, i + 1]
            zero[lvl, i] = zero[lvl, i + 1]
            one[lvl, i] = one[lvl, i + 1]

    @jit
    def _unwound_sum(zero, one, pw, lvl, depth, index):  # type: ignore[no-untyped-def]
        """The path weight with element ``index`` unwound, summed (shap's UNWOUND_SUM)."""
        one_fraction = one[lvl, index]
        zero_fraction = zero[lvl, index]
        next_one = pw[lvl, depth]
        total = 0.0
        if one_fraction != 0.0:
            for i in range(depth - 1, -1, -1):
                tmp = next_one * (depth + 1) / ((i + 1) * one_fraction)
                total += tmp
                next_one = pw[lvl, i] - tmp * zero_fraction * ((depth - i) / (depth + 1))
        elif zero_fraction != 0.0:
            for i in range(depth - 1, -1, -1):
                total += pw[lvl, i] / zero_fraction / ((depth - i) / (depth + 1))
        return total

    @jit
    def _row(  # type: ignore[no-untyped-def]
        x,
        roots,
        feature,
        threshold,
        missing_left,
        left,
        right,
        is_leaf,
        value,
        cover,
        max_depth,
        phi,
    ):
        """Add every tree's contributions for row ``x`` to ``phi`` (n_features,)."""
        width = max_depth + 2
        feat = np.empty((width + 1, width), dtype=np.int64)
        zero = np.empty((width + 1, width), dtype=np.float64)
        one = np.empty((width + 1, width), dtype=np.float64)
        pw = np.empty((width + 1, width), dtype=np.float64)
        # An explicit DFS stack instead of recursion: (node, level, unique depth,
        # zero fraction, one fraction, feature of the split that led here).
        s_node = np.empty(2 * width + 2, dtype=np.int64)
        s_lvl = np.empty(2 * width + 2, dtype=np.int64)
        s_depth = np.empty(2 * width + 2, dtype=np.int64)
        s_zero = np.empty(2 * width + 2, dtype=np.float64)
        s_one = np.empty(2 * width + 2, dtype=np.float64)
        s_feat = np.empty(2 * width + 2, dtype=np.int64)
        for t in range(roots.shape[0]):
            top = 0
            s_node[0], s_lvl[0], s_depth[0] = roots[t], 1, 0
            s_zero[0], s_one[0], s_feat[0] = 1.0, 1.0, -1
            while top >= 0:
                node, lvl, depth = s_node[top], s_lvl[top], s_depth[top]
                zf, of, pf = s_zero[top], s_one[top], s_feat[top]
                top -= 1
                # The parent's (already unwound) path is at level lvl - 1; a child
                # works on its own copy, as the recursive algorithm's stack frames do.
                for i in range(depth):
                    feat[lvl, i] = feat[lvl - 1, i]
                    zero[lvl, i] = zero[lvl - 1, i]
                    one[lvl, i] = one[lvl - 1, i]
                    pw[lvl, i] = pw[lvl - 1, i]
                _extend(feat, zero, one, pw, lvl, depth, zf, of, pf)
                if is_leaf[node]:
                    v = value[node]
                    for i in range(1, depth + 1):
                        w = _unwound_sum(zero, one, pw, lvl, depth, i)
                        phi[feat[lvl, i]] += w * (one[lvl, i] - zero[lvl, i]) * v
                    continue
                f = feature[node]
                xv = x[f]
                goes_left = missing_left[node] if xv != xv else xv <= threshold[node]
                hot = left[node] if goes_left else right[node]
                cold = right[node] if goes_left else left[node]
                incoming_zero, incoming_one = 1.0, 1.0
                for k in range(1, depth + 1):
                    if feat[lvl, k] == f:  # split on again: merge with its earlier element
                        incoming_zero, incoming_one = zero[lvl, k], one[lvl, k]
                        _unwind(feat, zero, one, pw, lvl, depth, k)
                        depth -= 1
                        break
                # cold below hot on the stack: the hot child is walked first, as in shap
                top += 1
                s_node[top], s_lvl[top], s_depth[top] = cold, lvl + 1, depth + 1
                s_zero[top] = cover[cold] / cover[node] * incoming_zero
                s_one[top], s_feat[top] = 0.0, f
                top += 1
                s_node[top], s_lvl[top], s_depth[top] = hot, lvl + 1, depth + 1
                s_zero[top] = cover[hot] / cover[node] * incoming_zero
                s_one[top], s_feat[top] = incoming_one, f

    @jit
    def _rows(  # type: ignore[no-untyped-def]
        x, roots, feature, threshold, missing_left, left, right, is_leaf, value, cover, max_depth
    ):
        """Contributions of every input for every row of ``x``: (rows, features)."""
        phi = np.zeros(x.shape, dtype=np.float64)
        for r in range(x.shape[0]):
            _row(
                x[r], roots, feature, threshold, missing_left, left, right, is_leaf, value,
                cover, max_depth, phi[r],
            )  # fmt: skip
        return phi

    @jit
    def _table_rows(  # type: ignore[no-untyped-def]
        x, feature, threshold, missing_left, path_start, path_node, path_slot, path_left,
        slot_start, n_unique, slot_feature, table_start, table,
    ):  # fmt: skip
        """Contributions of every row of ``x`` from the leaf tables: per leaf, the
        mask of its path features the row agrees with, then one table lookup."""
        n_nodes = feature.shape[0]
        goes_left = np.empty(n_nodes, dtype=np.bool_)
        phi = np.zeros(x.shape, dtype=np.float64)
        for r in range(x.shape[0]):
            for node in range(n_nodes):  # leaves carry feature 0: computed, never read
                xv = x[r, feature[node]]
                goes_left[node] = missing_left[node] if xv != xv else xv <= threshold[node]
            for leaf in range(n_unique.shape[0]):
                d = n_unique[leaf]
                mask = (1 << d) - 1
                for k in range(path_start[leaf], path_start[leaf + 1]):
                    if goes_left[path_node[k]] != path_left[k]:
                        mask &= ~(1 << path_slot[k])
                base = table_start[leaf] + mask * d
                first = slot_start[leaf]
                for s in range(d):
                    phi[r, slot_feature[first + s]] += table[base + s]
        return phi

    return _rows, _table_rows


@cache
def load() -> tuple[Any, Any]:
    """(path walk, table walk), compiled with numba on first call; plain Python without it."""
    try:
        import numba

        return _kernel(numba.njit(nogil=True, cache=False))
    except Exception as exc:  # ImportError or a numba/llvm failure
        log.warning("compiled contributions unavailable (%s): using plain Python", exc)
        return _kernel(lambda f: f)


def leaf_tables(zero: np.ndarray, value: np.ndarray) -> np.ndarray:
    """(leaves, 2**d, d) for leaves whose paths test d inputs each (``zero``:
    (leaves, d) zero fractions; ``value``: (leaves,)): for each mask of the path
    inputs a row agrees with, each input's contribution from that leaf. shap's
    EXTEND over the path, then UNWOUND_SUM per input, for all masks at once."""
    n, d = zero.shape
    one = ((np.arange(1 << d)[:, None] >> np.arange(d)[None, :]) & 1).astype(np.float64)
    pw = np.zeros((n, 1 << d, d + 1))
    pw[:, :, 0] = 1.0  # the root's empty element
    for s in range(d):  # EXTEND with input s at unique depth u
        u = s + 1
        o, z = one[None, :, s], zero[:, s : s + 1]
        for i in range(u - 1, -1, -1):
            pw[:, :, i + 1] += o * pw[:, :, i] * (i + 1) / (u + 1)
            pw[:, :, i] = z * pw[:, :, i] * (u - i) / (u + 1)
    # UNWOUND_SUM for every input at once, both branches: the row agrees with
    # the input (one fraction 1) or not (0); (leaves, masks, d)
    z = zero[:, None, :]
    next_one = np.repeat(pw[:, :, d : d + 1], d, axis=2)
    agree = np.zeros((n, 1 << d, d))
    disagree = np.zeros((n, 1 << d, d))
    for i in range(d - 1, -1, -1):
        tmp = next_one * (d + 1) / (i + 1)
        agree += tmp
        next_one = pw[:, :, i : i + 1] - tmp * z * ((d - i) / (d + 1))
        disagree += pw[:, :, i : i + 1] / z / ((d - i) / (d + 1))
    total = np.where(one[None] == 1.0, agree, disagree)
    return total * (one[None] - z) * value[:, None, None]  # type: ignore[no-any-return]


def expected_value(
    roots: np.ndarray, left: np.ndarray, right: np.ndarray, is_leaf: np.ndarray,
    value: np.ndarray, cover: np.ndarray, baseline: float,
) -> float:  # fmt: skip
    """The raw score averaged over each tree's training covers (what phi is measured from)."""
    total = baseline
    for root in roots:
        stack, tree_sum = [int(root)], 0.0
        while stack:
            node = stack.pop()
            if is_leaf[node]:
                tree_sum += value[node] * cover[node]
            else:
                stack += [int(left[node]), int(right[node])]
        total += tree_sum / cover[root]
    return float(total)


# A leaf whose path tests d distinct inputs has a table of 2**d * d entries.
# The production trees (15 leaves, depth 5-12) need a few MB; past this many
# entries the path walk (same values, ~20x slower per row) is used instead.
MAX_TABLE_ENTRIES = 1 << 24


class LeafTables:
    """Path-dependent TreeSHAP as one table lookup per leaf.

    A row's contribution from one leaf depends on the row only through which
    of the leaf's path inputs it agrees with (every split on that input sends
    it the leaf's way): a bit mask over at most ``depth`` inputs. So every
    mask's contributions are computed once, at load, with the same EXTEND /
    UNWOUND_SUM arithmetic as the path walk; a row then costs one comparison
    per node and, per leaf, its path's bits and ``d`` additions. Same values as
    the path walk to rounding (tests: 1e-12).
    """

    def __init__(
        self, roots: np.ndarray, feature: np.ndarray, left: np.ndarray, right: np.ndarray,
        is_leaf: np.ndarray, value: np.ndarray, cover: np.ndarray,
    ) -> None:  # fmt: skip
        path_start: list[int] = [0]
        path_node: list[int] = []
        path_slot: list[int] = []
        path_left: list[bool] = []
        slot_start: list[int] = []
        n_unique: list[int] = []
        slot_feature: list[int] = []
        slot_zero: list[float] = []
        leaf_value: list[float] = []
        for root in roots:
            stack: list[tuple[int, list[tuple[int, bool]]]] = [(int(root), [])]
            while stack:
                node, path = stack.pop()
                if not is_leaf[node]:
                    stack.append((int(right[node]), [*path, (node, False)]))
                    stack.append((int(left[node]), [*path, (node, True)]))
                    continue
                slots: dict[int, int] = {}
                zeros: list[float] = []
                for parent, went_left in path:
                    f = int(feature[parent])
                    child = left[parent] if went_left else right[parent]
                    if f not in slots:
                        slots[f] = len(zeros)
                        zeros.append(1.0)
                    # a repeated input's zero fraction is the product over its splits
                    zeros[slots[f]] *= float(cover[child] / cover[parent])
                    path_node.append(int(parent))
                    path_slot.append(slots[f])
                    path_left.append(went_left)
                path_start.append(len(path_node))
                slot_start.append(len(slot_feature))
                n_unique.append(len(zeros))
                slot_feature += list(slots)
                slot_zero += zeros
                leaf_value.append(float(value[node]))
        self.n_unique = np.array(n_unique, dtype=np.int64)
        sizes = (1 << self.n_unique) * self.n_unique
        self.entries = int(sizes.sum())
        self.table_start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.path_start = np.array(path_start, dtype=np.int64)
        self.path_node = np.array(path_node, dtype=np.int64)
        self.path_slot = np.array(path_slot, dtype=np.int64)
        self.path_left = np.array(path_left, dtype=np.bool_)
        self.slot_start = np.array(slot_start, dtype=np.int64)
        self.slot_feature = np.array(slot_feature, dtype=np.int64)
        self.table = np.empty(0, dtype=np.float64)
        if self.entries <= MAX_TABLE_ENTRIES:
            self.table = np.empty(self.entries, dtype=np.float64)
            zeros_all, values = np.array(slot_zero), np.array(leaf_value)
            for d in np.unique(self.n_unique):  # all leaves testing d inputs at once
                leaves = np.flatnonzero(self.n_unique == d)
                slot_idx = self.slot_start[leaves][:, None] + np.arange(d)[None, :]
                block = leaf_tables(zeros_all[slot_idx].reshape(len(leaves), d), values[leaves])
                at = self.table_start[leaves][:, None] + np.arange(block[0].size)[None, :]
                self.table[at] = block.reshape(len(leaves), -1)

    @property
    def usable(self) -> bool:
        return self.table.shape[0] == self.entries

    def __call__(
        self, x: np.ndarray, feature: np.ndarray, threshold: np.ndarray, missing_left: np.ndarray
    ) -> np.ndarray:
        return load()[1](  # type: ignore[no-any-return]
            x, feature, threshold, missing_left, self.path_start, self.path_node,
            self.path_slot, self.path_left, self.slot_start, self.n_unique,
            self.slot_feature, self.table_start, self.table,
        )  # fmt: skip
