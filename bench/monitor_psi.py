"""PSI per input, like for like with Evidently: its bins and empty-bin rule, our counting.

Evidently 0.7's ``psi`` stattest (``evidently.legacy.calculations.stattests``)
bins differently from ``pitstore monitor`` and cannot be given our bins:

- a numerical column with more than 20 distinct reference values: equal-width
  bins over reference and current *together* (``np.histogram_bin_edges(...,
  bins="sturges")``: 22 bins at 1M + 1M rows), each ``[a, b)`` but the last
  ``[a, b]``; otherwise one bin per value seen on either side;
- an empty bin's share becomes 0.0001 (or the side's smallest share / 10^6
  when that is at most 0.0001); no other smoothing;
- missing and infinite values dropped first.

``pitstore monitor`` takes 10 quantile bins from the reference alone, ``(a, b]``,
with add-0.5 smoothing (docs/monitoring.md). So the two numbers differ by
design; what must agree is the computation. ``psi_like_evidently`` counts with
our ``bin_counts`` on Evidently's bins (the same sets: each inner edge moved
down by one float turns ``[a, b)`` into ``(a', b']``), applies Evidently's
empty-bin rule and sums with our ``psi_from_shares``: it must equal
Evidently's figure to ``RTOL``. ``psi_ours_on_their_bins`` (add-0.5 instead of
the fill) is reported beside it, to show what the smoothing rule alone moves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pitstore.monitor.drift import bin_counts, psi_from_counts, psi_from_shares

RTOL = 1e-9  # float summation order is all that may differ
DISCRETE_MAX = 20  # Evidently: at most this many reference values -> one bin per value


def _finite(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype="float64")
    return v[np.isfinite(v)]


def evidently_edges(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Inner edges for ``bin_counts`` that reproduce Evidently's PSI bins."""
    ref, cur = _finite(reference), _finite(current)
    if np.unique(ref).size > DISCRETE_MAX:
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        return np.nextafter(edges[1:-1], -np.inf)
    values = np.union1d(ref, cur)
    return values[:-1]  # (-inf, v1], (v1, v2], ..., (v_k-1, inf): one value each


def evidently_fill(shares: np.ndarray) -> np.ndarray:
    """Evidently's empty-bin rule (``get_binned_data(feel_zeroes=True)``)."""
    low = shares[shares != 0].min()
    return np.where(shares == 0, low / 10**6 if low <= 0.0001 else 0.0001, shares)


def psi_like_evidently(reference: np.ndarray, current: np.ndarray) -> dict[str, Any]:
    ref, cur = _finite(reference), _finite(current)
    edges = evidently_edges(ref, cur)
    rc, cc = bin_counts(ref, edges), bin_counts(cur, edges)
    psi = psi_from_shares(evidently_fill(rc / rc.sum()), evidently_fill(cc / cc.sum()))
    return {
        "psi": psi,
        "bins": int(rc.size),
        "empty_bins": int(((rc == 0) | (cc == 0)).sum()),
        "psi_add_half": psi_from_counts(rc, cc),
    }


def compare(
    columns: list[str],
    reference: dict[str, np.ndarray],
    current: dict[str, np.ndarray],
    theirs: dict[str, float],
    ours: dict[str, float | None],
) -> dict[str, Any]:
    """Per input: Evidently's PSI, ours on its bins (must be equal), ours as reported."""
    rows = {}
    for c in columns:
        like = psi_like_evidently(reference[c], current[c])
        rows[c] = {
            "evidently": theirs[c],
            "ours_on_their_bins": like["psi"],
            "equal": bool(np.isclose(like["psi"], theirs[c], rtol=RTOL, atol=1e-15)),
            "their_bins": like["bins"],
            "empty_bins": like["empty_bins"],
            "ours_on_their_bins_add_half": like["psi_add_half"],
            "ours_as_reported": ours.get(c),
        }
    equal = sum(r["equal"] for r in rows.values())
    return {"inputs": len(rows), "equal": equal, "all_equal": equal == len(rows), "per_input": rows}
