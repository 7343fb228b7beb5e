"""``grouping.groups`` gives what ``DataFrame.groupby(...).indices`` gave the monitor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pitstore.monitor.grouping import groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_groups_match_pandas_groupby(seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys = rng.choice(np.array(["2025-03-02", "2025-03-01", "web", "?", None], dtype=object), 500)
    ours = groups(keys)
    theirs = pd.DataFrame({"k": keys}).groupby("k", sort=True).indices
    assert [k for k, _ in ours] == sorted(theirs)  # sorted keys, missing ones dropped
    for key, rows in ours:
        np.testing.assert_array_equal(rows, theirs[key])  # ascending positions


def test_groups_of_dates_and_of_nothing() -> None:
    weeks = pd.to_datetime(["2025-03-10", "2025-03-03", "2025-03-10"]).to_numpy()
    assert [(pd.Timestamp(k).date().isoformat(), r.tolist()) for k, r in groups(weeks)] == [
        ("2025-03-03", [1]),
        ("2025-03-10", [0, 2]),
    ]
    assert groups(np.array([], dtype=object)) == []
    assert groups(np.array([None, None], dtype=object)) == []
