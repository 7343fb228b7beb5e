"""PSI against an independent plain-Python computation, and its documented edges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pitstore.monitor.drift import bin_counts, bin_edges, feature_drift


def reference_psi(ref: list[float], cur: list[float], bins: int = 10) -> float:
    """PSI written out by hand: sorted-list quantiles, loops, math.log, add-0.5."""
    ref = [x for x in ref if not math.isnan(x)]
    cur = [x for x in cur if not math.isnan(x)]
    s = sorted(ref)
    n = len(s)
    # inverted-CDF quantile: the smallest value with CDF >= q
    cuts = {s[math.ceil(q * n / bins) - 1] for q in range(1, bins)}
    edges = sorted(e for e in cuts if e < s[-1]) or [s[-1]]

    def counts(values: list[float]) -> list[int]:
        out = [0] * (len(edges) + 1)
        for x in values:
            i = 0
            while i < len(edges) and x > edges[i]:
                i += 1
            out[i] += 1
        return out

    rc, cc = counts(ref), counts(cur)
    k = len(rc)
    total = 0.0
    for a, b in zip(rc, cc, strict=True):
        r = (a + 0.5) / (len(ref) + 0.5 * k)
        c = (b + 0.5) / (len(cur) + 0.5 * k)
        total += (c - r) * math.log(c / r)
    return total


RNG = np.random.default_rng(42)
CASES = {
    "same normal": (RNG.normal(0, 1, 5000), RNG.normal(0, 1, 3000)),
    "shifted normal": (RNG.normal(0, 1, 5000), RNG.normal(0.7, 1.3, 3000)),
    "discrete": (RNG.integers(0, 4, 4000).astype(float), RNG.integers(0, 6, 1000).astype(float)),
    "binary": ((RNG.random(4000) < 0.2).astype(float), (RNG.random(900) < 0.5).astype(float)),
    "empty current bins": (RNG.normal(0, 1, 4000), RNG.normal(5, 0.1, 500)),
    "with missing": (
        np.where(RNG.random(3000) < 0.1, np.nan, RNG.gamma(2, 2, 3000)),
        np.where(RNG.random(800) < 0.3, np.nan, RNG.gamma(2, 3, 800)),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_psi_equals_plain_reference(case: str) -> None:
    ref, cur = CASES[case]
    got = feature_drift("x", ref, cur, min_current=1)
    assert got.psi is not None
    assert abs(got.psi - reference_psi(list(ref), list(cur))) < 1e-12


def test_same_distribution_is_small_and_shift_is_large() -> None:
    same = feature_drift("x", *CASES["same normal"])
    shifted = feature_drift("x", *CASES["shifted normal"])
    assert same.psi is not None and same.psi < 0.02
    assert shifted.psi is not None and shifted.psi > 0.25


def test_discrete_feature_gets_one_bin_per_value() -> None:
    ref = np.array([0.0] * 700 + [1.0] * 200 + [2.0] * 100)
    edges = bin_edges(ref)
    assert list(edges) == [0.0, 1.0]  # bins (-inf,0], (0,1], (1,inf): no duplicate empties
    assert list(bin_counts(ref, edges)) == [700, 200, 100]


def test_empty_bins_are_smoothed_and_reported() -> None:
    ref, cur = CASES["empty current bins"]
    got = feature_drift("x", ref, cur)
    assert got.empty_ref_share == 0.0
    assert got.empty_cur_share == 0.9  # 10 bins; every current value is in the top bin
    assert got.psi is not None and math.isfinite(got.psi) and got.psi > 1
    # a value above the reference maximum lands in the open top bin, not outside
    edges = bin_edges(ref)
    assert bin_counts(np.array([1e9, -1e9]), edges).tolist()[0] == 1
    assert bin_counts(np.array([1e9, -1e9]), edges).tolist()[-1] == 1


def test_small_sample_is_not_judged() -> None:
    got = feature_drift("x", CASES["same normal"][0], RNG.normal(0, 1, 50), min_current=200)
    assert not got.judged and got.psi is not None
    assert got.note and "noisy" in got.note


def test_missing_rate_change() -> None:
    ref = np.array([1.0, np.nan, 2.0, 3.0])
    cur = np.array([np.nan, np.nan, 2.0, 1.0])
    got = feature_drift("x", ref, cur, min_current=1)
    assert got.missing_ref == 0.25 and got.missing_cur == 0.5 and got.missing_change == 0.25
    assert got.n_ref == 3 and got.n_cur == 2


def test_constant_reference_still_sees_a_move() -> None:
    assert feature_drift("x", np.zeros(500), np.zeros(500)).psi == 0.0
    got = feature_drift("x", np.zeros(500), np.ones(500))
    assert got.bins == 2 and got.psi is not None and got.psi > 5
