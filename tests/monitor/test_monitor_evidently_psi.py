"""The PSI check of benchmark #7 (bench/monitor_psi.py): on random data, our counting
on Evidently's bins with its empty-bin rule gives Evidently's own PSI per column, and
the check fails when the figures differ."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from bench.monitor_psi import compare, evidently_edges
from pitstore.monitor.drift import bin_counts


def frames(seed: int = 3, n: int = 3000) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def side(shift: float, size: int) -> pd.DataFrame:
        with_nan = rng.normal(shift, 1, size)
        with_nan[rng.random(size) < 0.1] = np.nan
        return pd.DataFrame(
            {
                "normal": rng.normal(0, 1, size),
                "shifted": rng.normal(shift, 1 + shift, size),
                "counts": rng.poisson(3 + 2 * shift, size).astype("float64"),  # <= 20 values
                "binary": (rng.random(size) < 0.2 + 0.1 * shift).astype("float64"),
                "with_nan": with_nan,
                # integers over a wide range: many values fall on equal-width edges
                "wide_ints": rng.integers(0, 200, size).astype("float64"),
                # a long tail: bins of the combined range empty on one side
                "tail": np.exp(rng.normal(shift, 2, size)),
            }
        )

    return side(0.0, n), side(0.5, n // 2)


def evidently_psi(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, float]:
    os.environ["DO_NOT_TRACK"] = "1"  # evidently.telemetry.DO_NOT_TRACK_ENV
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(ref.columns))
    snap = Report([DataDriftPreset(method="psi")]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    return {
        m["config"]["column"]: float(m["value"])
        for m in snap.dict()["metrics"]
        if m["config"]["type"].endswith("ValueDrift")
    }


def test_our_psi_on_evidently_bins_equals_evidently_s() -> None:
    ref, cur = frames()
    theirs = evidently_psi(ref, cur)
    columns = list(ref.columns)
    arrays = [{c: f[c].to_numpy() for c in columns} for f in (ref, cur)]
    check = compare(columns, *arrays, theirs, {})
    assert check["all_equal"], check["per_input"]
    rows = check["per_input"]
    assert rows["shifted"]["evidently"] > 0.1 > rows["normal"]["evidently"]  # real drift, seen
    assert rows["tail"]["empty_bins"] > 0  # the empty-bin rule was exercised
    assert rows["counts"]["their_bins"] == len(np.union1d(ref["counts"], cur["counts"]))
    # the check can fail: one figure off by a part in a million
    off = {**theirs, "shifted": theirs["shifted"] * (1 + 1e-6)}
    bad = compare(columns, *arrays, off, {})
    assert not bad["all_equal"] and not bad["per_input"]["shifted"]["equal"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evidently_edges_count_as_numpy_histogram(seed: int) -> None:
    """[a, b) bins (the last [a, b]) counted by our (a, b] bin_counts: values on the
    edges (integers on integer edges) land where np.histogram puts them."""
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 60, 5000).astype("float64")
    cur = rng.integers(10, 80, 3000).astype("float64")
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    assert np.isin(edges, ref).any()  # some edges fall on data values
    for side in (ref, cur):
        expected = np.histogram(side, edges)[0]
        assert bin_counts(side, evidently_edges(ref, cur)).tolist() == expected.tolist()
