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

Two kernels over the same flattened arrays as ``tree_kernels`` (sklearn's own
nodes: ``x <= threshold`` goes left, NaN follows ``missing_go_to_left``) plus
each node's training ``count``:

- ``_leaf_rows`` (served): leaf by leaf in closed form, an exact
  Gauss-Legendre integral of the Shapley weights (see its docstring), over
  paths flattened once at load (``LeafPaths``); O(leaves * d * d/2) per row.
- ``_rows``: shap's published recursion (EXTEND / UNWIND / UNWOUND_SUM),
  O(leaves * depth^2) per row; the reference the tests hold the first to.

Both compile with numba when it loads (on first call) and run as plain Python
otherwise (correct, ~100x slower).
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
    def _leaf_rows(  # type: ignore[no-untyped-def]
        x, feature, threshold, missing_left, split_nodes, path_start, path_node, path_slot,
        path_left, slot_start, n_unique, slot_feature, slot_zero, leaf_value, nodes, weights,
    ):  # fmt: skip
        """Contributions of every row of ``x``, leaf by leaf, in closed form.

        For a leaf with value v whose path tests d distinct inputs with zero
        fractions z_j, and b_j = 1 where the row agrees with every split on
        input j (else 0), input j's contribution is

            v (b_j - z_j) sum_{S of the others} |S|! (d-1-|S|)! / d!
                          prod_{k in S} b_k prod_{k not in S, k != j} z_k

        and with |S|! (d-1-|S|)! / d! = integral_0^1 s^|S| (1-s)^(d-1-|S|) ds
        the sum is the integral over [0, 1] of prod_{k != j} (b_k s + z_k (1 - s)),
        a polynomial of degree d - 1: Gauss-Legendre with ceil(d / 2) nodes is
        exact (``nodes``/``weights`` row q: the q-node rule on [0, 1]). Every
        leaf costs O(d ceil(d/2)), with no branch on the row's values."""
        n_nodes = feature.shape[0]
        goes_left = np.empty(n_nodes, dtype=np.bool_)
        phi = np.zeros(x.shape, dtype=np.float64)
        qmax = nodes.shape[1]
        width = 2 * qmax + 1
        f = np.empty((width, qmax), dtype=np.float64)
        prod = np.empty(qmax, dtype=np.float64)
        for r in range(x.shape[0]):
            for node in split_nodes:  # the side the row takes at every split, once
                xv = x[r, feature[node]]
                goes_left[node] = missing_left[node] if xv != xv else xv <= threshold[node]
            for leaf in range(n_unique.shape[0]):
                d = n_unique[leaf]
                first = slot_start[leaf]
                mask = (1 << d) - 1
                for k in range(path_start[leaf], path_start[leaf + 1]):
                    mask &= ~((goes_left[path_node[k]] ^ path_left[k]) << path_slot[k])
                nq = (d + 1) // 2
                for q in range(nq):
                    prod[q] = 1.0
                for j in range(d):
                    b = (mask >> j) & 1
                    z = slot_zero[first + j]
                    for q in range(nq):
                        s = nodes[nq, q]
                        f[j, q] = b * s + z * (1.0 - s)
                        prod[q] *= f[j, q]
                v = leaf_value[leaf]
                for j in range(d):
                    acc = 0.0
                    for q in range(nq):
                        acc += weights[nq, q] * prod[q] / f[j, q]
                    b = (mask >> j) & 1
                    phi[r, slot_feature[first + j]] += v * (b - slot_zero[first + j]) * acc
        return phi

    return _rows, _leaf_rows


@cache
def load() -> tuple[Any, Any]:
    """(path walk, leaf walk), compiled by numba on first call; plain Python without it."""
    try:
        import numba

        return _kernel(numba.njit(nogil=True, cache=False))
    except Exception as exc:  # ImportError or a numba/llvm failure
        log.warning("compiled contributions unavailable (%s): using plain Python", exc)
        return _kernel(lambda f: f)


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


class LeafPaths:
    """Each leaf's path, flattened once at load, for ``_leaf_rows``.

    Per leaf: its path's split nodes with the side the leaf is on and the
    slot of the input tested (an input split on twice shares one slot, whose
    zero fraction is the product over its splits), each slot's input and zero
    fraction (cover of the child taken / cover of the node), and the leaf's
    value. Leaves are ordered by their number of slots, so the kernel's inner
    loops run the same number of times leaf after leaf (measured: the loop
    exits were otherwise mispredicted on most leaves).
    """

    def __init__(
        self, roots: np.ndarray, feature: np.ndarray, left: np.ndarray, right: np.ndarray,
        is_leaf: np.ndarray, value: np.ndarray, cover: np.ndarray,
    ) -> None:  # fmt: skip
        leaves: list[tuple[list[tuple[int, int, bool]], list[int], list[float], float]] = []
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
                steps: list[tuple[int, int, bool]] = []
                for parent, went_left in path:
                    f = int(feature[parent])
                    child = left[parent] if went_left else right[parent]
                    if f not in slots:
                        slots[f] = len(zeros)
                        zeros.append(1.0)
                    zeros[slots[f]] *= float(cover[child] / cover[parent])
                    steps.append((int(parent), slots[f], went_left))
                leaves.append((steps, list(slots), zeros, float(value[node])))
        leaves.sort(key=lambda leaf: len(leaf[1]))
        self.path_start = np.cumsum([0] + [len(lf[0]) for lf in leaves]).astype(np.int64)
        steps_all = [step for lf in leaves for step in lf[0]]
        self.path_node = np.array([n for n, _, _ in steps_all], dtype=np.int64)
        self.path_slot = np.array([k for _, k, _ in steps_all], dtype=np.int64)
        self.path_left = np.array([w for _, _, w in steps_all], dtype=np.int64)
        self.n_unique = np.array([len(lf[1]) for lf in leaves], dtype=np.int64)
        self.slot_start = np.cumsum([0, *self.n_unique[:-1]]).astype(np.int64)
        self.slot_feature = np.array([f for lf in leaves for f in lf[1]], dtype=np.int64)
        self.slot_zero = np.array([z for lf in leaves for z in lf[2]], dtype=np.float64)
        self.leaf_value = np.array([lf[3] for lf in leaves], dtype=np.float64)
        self.nodes, self.weights = gauss_legendre(int(self.n_unique.max(initial=0)))
        self.split_nodes = np.flatnonzero(~np.asarray(is_leaf, dtype=bool)).astype(np.int64)

    def __call__(
        self, x: np.ndarray, feature: np.ndarray, threshold: np.ndarray, missing_left: np.ndarray
    ) -> np.ndarray:
        return load()[1](  # type: ignore[no-any-return]
            x, feature, threshold, missing_left, self.split_nodes, self.path_start,
            self.path_node, self.path_slot, self.path_left, self.slot_start, self.n_unique,
            self.slot_feature, self.slot_zero, self.leaf_value, self.nodes, self.weights,
        )  # fmt: skip


def gauss_legendre(max_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Row q: the q-node Gauss-Legendre rule on [0, 1] (exact to degree 2q - 1),
    for q up to ceil(max_slots / 2)."""
    top = max(1, (max_slots + 1) // 2)
    nodes, weights = np.zeros((top + 1, top)), np.zeros((top + 1, top))
    for q in range(1, top + 1):
        x, w = np.polynomial.legendre.leggauss(q)
        nodes[q, :q], weights[q, :q] = (x + 1.0) / 2.0, w / 2.0
    return nodes, weights
