"""`make bench` (python -m bench.run): every benchmark in one run, one table, one JSON.

Builds its own data under a temporary PITSTORE_HOME (a synthetic offline store
in the transform's layout), starts its own redis-server on a free port (pinned
to its own core when there are two or more), runs the benchmarks, prints one
table and writes ``bench/results/latest.json``. Ratios measured in the same run
are the headline; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import (
    SIZES,
    machine_info,
    redis_server,
    run_watermarks,
    synth_offline,
)
from bench.machine import idle_states_held_off
from bench.score_verdict import score_http
from bench.table import render_table

RESULTS = Path(__file__).resolve().parent / "results"

# Per size: samples/repeats for the online benchmarks, repeats for the bulk ones.
# A p99 needs hundreds of samples per repeat: at 150 it is the second-worst call,
# and one host stall set #2's (pitstore 16.9 ms against raw 10.6 ms, p50s 3.90 vs
# 3.64 ms; 2026-12-02). 500 per repeat costs ~35 s more, mostly Feast's calls.
PLAN = {
    "tiny": {"samples_1": 60, "samples_100": 10, "online_repeats": 2, "bulk_repeats": 1},
    "small": {"samples_1": 2000, "samples_100": 500, "online_repeats": 3, "bulk_repeats": 2},
    "medium": {"samples_1": 5000, "samples_100": 400, "online_repeats": 5, "bulk_repeats": 3},
}


def _guard(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one benchmark; a failure is recorded, never hidden, and the rest still run."""
    t0 = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON
        traceback.print_exc()
        out = {"measurable": False, "reason": f"{type(exc).__name__}: {exc}"[:500], "error": True}
    print(f"  [{name}] {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


ALL = ("materialize", "online", "score_http", "frames", "transform", "monitor")
# what needs the synthetic offline store and Redis (#7 and #6 build their own data)
NEEDS_STORE = ("materialize", "online", "score_http", "frames")


def run_all(
    size_name: str,
    out_path: Path | None = None,
    keep: bool = False,
    only: tuple[str, ...] = ALL,
    idle_hold: bool = True,
) -> dict[str, Any]:
    size = SIZES[size_name]
    plan = PLAN[size_name]
    started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="pitstore-bench-"))
    report: dict[str, Any] = {
        "size": size_name,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "data": {},
        "benchmarks": {},
    }
    try:
        # Every contender alike: no core sleeps in a deep idle state (bench/machine.py).
        with idle_states_held_off(idle_hold) as hold, redis_server(home) as server:
            report["machine"]["idle_hold"] = hold
            report["machine"]["redis_core"] = server.core
            os.environ["PITSTORE_HOME"] = str(home)
            os.environ["REDIS_URL"] = server.url
            from pitstore.core.config import Settings

            settings = Settings(pitstore_home=home, redis_url=server.url)
            t0 = time.perf_counter()
            rows = synth_offline(settings.offline, size) if set(only) & set(NEEDS_STORE) else {}
            report["data"] = {
                "offline_rows": rows,
                "accounts": size.accounts,
                "merchants": size.merchants,
                "daily_runs": size.days,
                "build_s": round(time.perf_counter() - t0, 2),
            }
            print(f"data: {rows} in {report['data']['build_s']} s", file=sys.stderr)
            from pitstore.core.feast_store import apply
            from pitstore.core.spec import ACCOUNT_DAILY, FEATURE_VIEWS
            from pitstore.online.materialize import materialize_view

            apply(settings)
            w = run_watermarks(size)[-1]
            benches = report["benchmarks"]

            # 4 first: it flushes Redis between contenders.
            from bench import materialize_bench

            if "materialize" in only:
                benches["materialize"] = _guard(
                    "materialize",
                    materialize_bench.run,
                    settings,
                    ACCOUNT_DAILY,
                    w,
                    plan["bulk_repeats"],
                )

            # 1, 2: Redis loaded by pitstore with every view at W.
            if "online" in only:  # only the online reads need the loaded store
                for view in FEATURE_VIEWS:
                    materialize_view(settings, view, w, full=True)
            from bench import online_bench

            accounts = [f"A{i:06d}" for i in range(size.accounts)]
            merchants = [f"M{i:05d}" for i in range(size.merchants)]
            online = (
                {}
                if "online" not in only
                else _guard(
                    "online",
                    online_bench.run,
                    settings,
                    accounts,
                    merchants,
                    w,
                    plan["samples_1"],
                    plan["samples_100"],
                    plan["online_repeats"],
                )
            )
            if not online:
                pass
            elif "online_1" in online:
                benches.update(online)
            else:  # the whole online benchmark failed: both rows say why
                benches["online_1"] = benches["online_100"] = online

            # 3: the scoring API under load against the no-op + the same durable audit
            # append (bench/score_load.py runs it, bench/score_verdict.py judges it).
            if "score_http" in only:
                benches["score_http"] = score_http(settings, size_name, idle_hold)

            # 5: training frames.
            from bench import frames_bench

            if "frames" in only:
                benches["frames"] = _guard(
                    "frames", frames_bench.run, settings, size, w, plan["bulk_repeats"]
                )

            # 6: transforms (bench/transform_bench.py, owned by the transform work).
            if "transform" in only:
                benches["transform"] = _transform(size_name)

            # 7: pitstore monitor against Evidently (bench/monitor_bench.py; own world).
            from bench import monitor_bench

            if "monitor" in only:
                benches["monitor"] = _guard(
                    "monitor", monitor_bench.run, size_name, plan["bulk_repeats"], home
                )
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    report["total_s"] = round(time.perf_counter() - started, 1)
    out = out_path or RESULTS / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    print(render_table(report))
    print(f"results: {out}  ({report['total_s']} s)")
    return report


def _transform(size_name: str) -> dict[str, Any]:
    from bench import transform_bench

    return _guard("transform", transform_bench.run, size_name)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data")
    parser.add_argument("--only", nargs="+", choices=ALL, default=list(ALL))
    parser.add_argument(
        "--no-idle-hold",
        action="store_true",
        help="let idle cores sleep (bench/machine.py: by default the run holds idle states off; "
        "a bench option, no part of any verdict)",
    )
    args = parser.parse_args(argv)
    run_all(args.size, args.out, args.keep, tuple(args.only), not args.no_idle_hold)


if __name__ == "__main__":
    main()
