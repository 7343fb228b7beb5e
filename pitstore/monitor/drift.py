"""Population stability index (PSI) and missing rates, in plain numpy.

Bins come from the *reference* alone, so every day's PSI uses the same bins:

- inner edges are reference quantiles (``bins`` equal-mass cuts, taken as real
  values with ``method="inverted_cdf"``), deduplicated, so a discrete feature
  gets one bin per value rather than empty duplicate bins; an edge equal to the
  reference maximum is dropped (nothing in the reference lies above it),
  unless it is the only one (a constant reference: bins at and above it);
- the outer bins are open-ended: ``(-inf, e1]`` and ``(ek, +inf)``, so current
  values outside the reference range still land in a bin.

PSI = sum over bins of ``(c - r) * ln(c / r)``, with ``r`` and ``c`` the
reference and current shares. Empty bins: **add-0.5 smoothing** -- each bin's
count gets +0.5 before the shares are taken (``(n_i + 0.5) / (n + 0.5 k)``).
Why: a floor (e.g. 1e-4) is the same whatever the sample size, so one empty bin
in 200 rows weighs as much as in 2 million; +0.5 (the Jeffreys prior) keeps
the term finite and fades as the counts grow. The raw empty-bin shares are
reported next to the PSI so a reader sees when smoothing mattered.

Missing values (NaN) are not binned; their share is reported separately.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SMOOTHING = 0.5


def bin_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner edges from the reference's non-missing values (may be empty: one bin)."""
    ref = reference[~np.isnan(reference)]
    if ref.size == 0:
        return np.empty(0)
    qs = np.quantile(ref, np.arange(1, bins) / bins, method="inverted_cdf")
    edges = np.unique(qs)
    inner = edges[edges < ref.max()]
    # a constant reference keeps one edge at its value: a move off it must show
    return inner if inner.size else edges[-1:]


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin ``(-inf, e1], (e1, e2], ..., (ek, inf)``; NaN ignored."""
    v = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(edges, v, side="left"), minlength=edges.size + 1)


def psi_from_shares(r: np.ndarray, c: np.ndarray) -> float:
    """The PSI sum over bins of reference and current shares (none zero)."""
    return float(np.sum((c - r) * np.log(c / r)))


def psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    r = (ref_counts + SMOOTHING) / (ref_counts.sum() + SMOOTHING * ref_counts.size)
    c = (cur_counts + SMOOTHING) / (cur_counts.sum() + SMOOTHING * cur_counts.size)
    return psi_from_shares(r, c)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    n_ref: int
    n_cur: int
    bins: int
    empty_ref_share: float
    empty_cur_share: float
    psi: float | None
    judged: bool
    note: str | None
    missing_ref: float | None
    missing_cur: float | None
    missing_change: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def missing_share(values: np.ndarray) -> float | None:
    return float(np.isnan(values).mean()) if values.size else None


def feature_drift(
    feature: str,
    reference: np.ndarray,
    current: np.ndarray,
    edges: np.ndarray | None = None,
    bins: int = 10,
    min_current: int = 200,
    ref_counts: np.ndarray | None = None,
) -> FeatureDrift:
    """PSI and missing-rate change of one feature; ``judged`` only with enough rows.

    ``edges`` (and the reference's ``ref_counts`` in them) may be passed in so
    every day reuses the reference's bins without counting it again."""
    ref = np.asarray(reference, dtype="float64")
    cur = np.asarray(current, dtype="float64")
    edges = bin_edges(ref, bins) if edges is None else edges
    rc = bin_counts(ref, edges) if ref_counts is None else ref_counts
    cc = bin_counts(cur, edges)
    n_ref, n_cur = int(rc.sum()), int(cc.sum())
    psi = psi_from_counts(rc, cc) if n_ref and n_cur else None
    judged = psi is not None and n_cur >= min_current
    note = None
    if not judged:
        note = (
            f"not judged: {n_cur} current values < {min_current} "
            "(PSI on small samples is noisy: it is large by chance)"
        )
    m_ref, m_cur = missing_share(ref), missing_share(cur)
    change = None if m_ref is None or m_cur is None else m_cur - m_ref
    return FeatureDrift(
        feature=feature,
        n_ref=n_ref,
        n_cur=n_cur,
        bins=int(rc.size),
        empty_ref_share=float((rc == 0).mean()),
        empty_cur_share=float((cc == 0).mean()),
        psi=psi,
        judged=judged,
        note=note,
        missing_ref=m_ref,
        missing_cur=m_cur,
        missing_change=change,
    )
