"""Compiled (numba) tree walks for ``serving.fast_model``.

Why compiled: scoring one request walks 200 trees for ~31 rows (the request
and one row per input set to its typical value, for the reasons). The numpy
walk does that level by level in ~70 vectorised gathers; profiled under load
on the 2-core box it was ~35% of the server's CPU per request (~0.6 ms with
cold caches after each idle wait). One pass in compiled code is ~0.1 ms, and
the explanation kernel below skips most of the walks outright.

Bit-identical to sklearn by construction: the same comparisons as its
``_predict_one_from_raw_data`` (NaN follows ``missing_go_to_left``, else
``x <= threshold`` goes left), and each row's raw score is ``0.0 + baseline``
plus the leaf values added one tree at a time in sklearn's tree order, with
no fast-math reassociation. ``serving.fast_model`` still checks the result
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


def _kernels() -> tuple[Any, Any]:
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

    @numba.njit(nogil=True, cache=False)
    def raw_substitutions(
        base, refs, roots, feature, threshold, missing_left, left, right, is_leaf, value, baseline
    ):  # type: ignore[no-untyped-def]
        """decision_function for ``base`` and for ``base`` with input ``i`` set to
        ``refs[i]``, for each ``i`` (row ``i + 1``).

        A substituted row can only end in another leaf than ``base`` does if the
        tree tests input ``i`` on ``base``'s path: the other rows reuse
        ``base``'s leaf without walking (a path tests ~5 of the 30 inputs)."""
        nf = base.shape[0]
        out = np.empty(nf + 1, dtype=np.float64)
        for i in range(nf + 1):
            out[i] = 0.0 + baseline
        on_path = np.zeros(nf, dtype=np.bool_)
        row = base.copy()
        for t in range(roots.shape[0]):
            node = roots[t]
            while not is_leaf[node]:
                f = feature[node]
                on_path[f] = True
                xv = base[f]
                if xv != xv:
                    node = left[node] if missing_left[node] else right[node]
                elif xv <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            base_value = value[node]
            out[0] += base_value
            for i in range(nf):
                if on_path[i]:
                    on_path[i] = False
                    row[i] = refs[i]
                    leaf = leaf_of(
                        row, roots[t], feature, threshold, missing_left, left, right, is_leaf
                    )
                    row[i] = base[i]
                    out[i + 1] += value[leaf]
                else:
                    out[i + 1] += base_value
        return out

    return raw_rows, raw_substitutions


@cache
def load() -> tuple[Any, Any] | None:
    """(raw_rows, raw_substitutions), compiled on first use; None without numba."""
    try:
        return _kernels()
    except Exception as exc:  # ImportError or a numba/llvm failure: numpy walk instead
        log.warning("compiled tree walk unavailable (%s): using the numpy walk", exc)
        return None
