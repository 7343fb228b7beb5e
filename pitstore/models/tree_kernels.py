"""Compiled (numba) tree walks for ``models.fast_model``.

Why compiled: scoring one request walks 200 trees. sklearn's own
``predict_proba`` spends ~1-2 ms on one row (validation, a Python loop over
the trees, OpenMP threads); the numpy walk does it level by level in ~70
vectorised gathers; one pass in compiled code is a few microseconds
(measured in docs/decisions/0004-tree-kernels.md).

Bit-identical to sklearn by construction: the same comparisons as its
``_predict_one_from_raw_data`` (NaN follows ``missing_go_to_left``, else
``x <= threshold`` goes left), and each row's raw score is ``0.0 + baseline``
plus the leaf values added one tree at a time in sklearn's tree order, with
no fast-math reassociation. ``models.fast_model`` still checks the result
against sklearn before it uses it.

numba is imported lazily: if it is missing or fails, ``load()`` returns None
and the numpy walk is used.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import numpy as np

log = logging.getLogger("pitstore.serving")


def _kernels() -> tuple[Any]:
    import numba

    @numba.njit(nogil=True, cache=False)
    def leaf_of(row, root, feature, threshold, missing_left, left, right, is_leaf):  # type: ignore[no-untyped-def]
        node = root
        while not is_leaf[node]:
            xv = row[feature[node]]
            if xv != xv:  # NaN
                node = left[node] if missing_left[node] else right[node]
            elif xv <= threshold[node]:
                node = left[node]
            else:
                node = right[node]
        return node

    @numba.njit(nogil=True, cache=False)
    def raw_rows(x, roots, feature, threshold, missing_left, left, right, is_leaf, value, baseline):  # type: ignore[no-untyped-def]
        """decision_function for every row of ``x``."""
        n = x.shape[0]
        out = np.empty(n, dtype=np.float64)
        for r in range(n):
            acc = 0.0 + baseline
            for t in range(roots.shape[0]):
                acc += value[
                    leaf_of(x[r], roots[t], feature, threshold, missing_left, left, right, is_leaf)
                ]
            out[r] = acc
        return out

    return (raw_rows,)


@cache
def load() -> tuple[Any] | None:
    """(raw_rows,), compiled on first use; None without numba."""
    try:
        return _kernels()
    except Exception as exc:  # ImportError or a numba/llvm failure: numpy walk instead
        log.warning("compiled tree walk unavailable (%s): using the numpy walk", exc)
        return None
