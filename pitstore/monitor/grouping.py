"""Group row positions by a key column, without copying the frame the column came from.

The monitor's steps used ``DataFrame.groupby``, which copies every column of
each group: on a million logged decisions with their inputs, each pass held a
second copy of the whole frame. Here a step groups one key array into row
positions once, then takes only the columns it needs at those positions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def groups(keys: Any) -> list[tuple[Any, np.ndarray]]:
    """``(key, row positions)`` per distinct key, keys sorted, positions ascending.

    As ``DataFrame.groupby(keys, sort=True).indices``: missing keys form no group."""
    codes, uniques = pd.factorize(keys, sort=True)
    order = np.argsort(codes, kind="stable")  # ascending positions within each code
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    start = int((codes < 0).sum())  # missing keys (code -1) sort first: skipped
    bounds = start + np.cumsum(counts)[:-1]
    parts = np.split(order[start:], bounds - start) if len(uniques) else []
    return [(uniques[i], rows) for i, rows in enumerate(parts)]
