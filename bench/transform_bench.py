"""Transform throughput: dbt (DuckDB) vs Spark, full run vs one incremental day.

    make bench-transform            # or: .venv/bin/python -m bench.transform_bench
    .venv/bin/python -m bench.transform_bench --accounts 300 2000 --days 14 --master 'local[*]'

For each size a landing zone is generated (``pitstore generate``'s generator);
each engine then runs a *full* run (empty store, watermark = the last day's
start, so it reads all but one day) and an *incremental* run one day later
(reads one more day, recomputes what it touched). Throughput is landing rows
the run sees for the first time per second of wall-clock time. Both engines'
stores are compared (``pitstore.engine_parity``) before any figure is reported.
The Spark session is started and warmed up once, outside the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds

from pitstore.engine_parity import compare_offline, engine_settings
from pitstore.generate import GeneratorParams, generate
from pitstore.landing import write_landing
from pitstore.timeutil import to_us
from pitstore.transform import transform_dbt
from transforms.spark.job import spark_session, transform_spark

RESULTS = Path(__file__).resolve().parent / "results" / "transform.json"


def rows_ingested(landing: Path, lo_us: int | None, hi_us: int) -> int:
    table = ds.dataset(str(landing / "transactions"), format="parquet").to_table(
        columns=["ingested_at"]
    )
    us = pc.cast(table.column("ingested_at"), "int64")
    mask = pc.less_equal(us, hi_us)
    if lo_us is not None:
        mask = pc.and_(mask, pc.greater(us, lo_us))
    return int(pc.sum(pc.cast(mask, "int64")).as_py() or 0)


def bench_size(accounts: int, days: int, master: str, spark: Any, root: Path) -> dict[str, Any]:
    params = GeneratorParams(accounts=accounts, merchants=max(20, accounts // 7), days=days)
    landing = root / "landing"
    write_landing(generate(params), landing)
    w_full = params.start + timedelta(days=days - 1)
    w_incr = w_full + timedelta(days=1)
    n_full = rows_ingested(landing, None, to_us(w_full))
    n_incr = rows_ingested(landing, to_us(w_full), to_us(w_incr))
    homes = engine_settings(root / "out", landing)
    result: dict[str, Any] = {
        "accounts": accounts,
        "days": days,
        "rows_full": n_full,
        "rows_incremental": n_incr,
    }
    for engine in ("dbt", "spark"):
        for kind, w, n in (("full", w_full, n_full), ("incremental", w_incr, n_incr)):
            started = time.perf_counter()
            if engine == "dbt":
                transform_dbt(homes["dbt"], w)
            else:
                transform_spark(homes["spark"], w, master=master, spark=spark)
            seconds = time.perf_counter() - started
            result[f"{engine}_{kind}_s"] = round(seconds, 2)
            result[f"{engine}_{kind}_rows_per_s"] = round(n / seconds)
    report = compare_offline({name: s.offline for name, s in homes.items()})
    result["engines_agree"] = report.ok
    if not report.ok:
        raise SystemExit(f"engines disagree at {accounts} accounts: {report}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[300, 2000])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    spark = spark_session(args.master)
    spark.sparkContext.setLogLevel("ERROR")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up (JVM start, JIT): one small run, not reported.
        bench_size(50, 3, args.master, spark, Path(tmp) / "warmup")
        for accounts in args.accounts:
            r = bench_size(accounts, args.days, args.master, spark, Path(tmp) / f"a{accounts}")
            results.append(r)
            print(json.dumps(r), flush=True)
    payload = {
        "benchmark": "transform",
        "master": args.master,
        "cpus": os.cpu_count(),
        "spark_conf": {
            k: spark.conf.get(k)
            for k in ("spark.sql.shuffle.partitions", "spark.sql.adaptive.enabled")
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(
        f"\n{'accounts':>8} {'engine':>6} {'full rows/s':>12} {'full s':>7} "
        f"{'incr rows/s':>12} {'incr s':>7}"
    )
    for r in results:
        for e in ("dbt", "spark"):
            print(
                f"{r['accounts']:>8} {e:>6} {r[f'{e}_full_rows_per_s']:>12} "
                f"{r[f'{e}_full_s']:>7} {r[f'{e}_incremental_rows_per_s']:>12} "
                f"{r[f'{e}_incremental_s']:>7}"
            )
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
