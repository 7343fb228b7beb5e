"""Benchmark: an N-row training frame over every view of fraud_v1.

    PITSTORE_HOME=/path/to/store .venv/bin/python bench/frame_bench.py --rows 1000000

Request rows are random (account, merchant, ts) drawn from the store's entities
and time range (ts at or before the newest watermark). Reports wall time per
phase and the process's peak RSS. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import duckdb
import numpy as np
import pandas as pd

from pitstore.core.config import get_settings
from pitstore.core.spec import FRAUD_V1
from pitstore.training.frames import build_frame, validate_requests
from pitstore.training.joins import newest_watermark, point_in_time_join


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def requests(settings, n: int, seed: int) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    con = duckdb.connect()
    off = settings.offline
    accounts = [
        r[0]
        for r in con.execute(
            f"select distinct account_id from '{off}/account_daily/*.parquet'"
        ).fetchall()
    ]
    merchants = [
        r[0]
        for r in con.execute(
            f"select distinct merchant_id from '{off}/merchant_daily/*.parquet'"
        ).fetchall()
    ]
    lo = con.execute(
        f"select epoch_us(min(event_timestamp)) from '{off}/account_daily/*.parquet'"
    ).fetchall()[0][0]
    hi = int(newest_watermark(settings, FRAUD_V1).timestamp() * 1_000_000)
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "account_id": np.array(accounts, dtype=object)[rng.integers(0, len(accounts), n)],
            "merchant_id": np.array(merchants, dtype=object)[rng.integers(0, len(merchants), n)],
            "ts": pd.to_datetime(rng.integers(lo, hi, n), unit="us", utc=True),
            "request_id": np.arange(n),
        }
    )
    df["ts"] = df["ts"].astype("datetime64[us, UTC]")
    return df


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--mode", default="as_known")
    ap.add_argument(
        "--full", action="store_true", help="build_frame with audit, as_of comparison and manifest"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    settings = get_settings()
    out: dict[str, object] = {"rows": args.rows, "mode": args.mode, "home": str(settings.home)}
    for view in FRAUD_V1.views:
        files = list(settings.offline_view_dir(view.name).glob("*.parquet"))
        n = (
            duckdb.connect()
            .execute(f"select count(*) from '{settings.offline_view_dir(view.name)}/*.parquet'")
            .fetchall()[0][0]
        )
        out[f"store_{view.name}"] = {"files": len(files), "rows": n}
    t0 = time.perf_counter()
    df = requests(settings, args.rows, args.seed)
    out["make_requests_s"] = round(time.perf_counter() - t0, 2)
    out["rss_after_requests_mb"] = round(peak_rss_mb(), 1)
    t0 = time.perf_counter()
    if args.full:
        frame = build_frame(settings, df, mode=args.mode)
        out["build_frame_s"] = round(time.perf_counter() - t0, 2)
        out["audit_vs_other_mode"] = frame.audit.get("vs_as_of") or frame.audit.get("vs_as_known")
        out["leaks"] = (
            frame.audit["leaks"]["event_ts_after_ts"],
            frame.audit["leaks"]["created_ts_after_ts"],
        )
        out["frame_columns"] = frame.table.num_columns
    else:
        req = validate_requests(settings, df, FRAUD_V1)
        out["validate_s"] = round(time.perf_counter() - t0, 2)
        t1 = time.perf_counter()
        res = point_in_time_join(settings, req, FRAUD_V1, mode=args.mode)
        out["join_s"] = round(time.perf_counter() - t1, 2)
        out["frame_columns"] = res.table.num_columns
    out["total_s"] = round(time.perf_counter() - t0, 2)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
