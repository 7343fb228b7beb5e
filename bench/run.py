"""`make bench` / `pitstore bench`: every benchmark in one run, one table, one JSON.

Builds its own data under a temporary PITSTORE_HOME (a synthetic offline store
in the transform's layout), starts its own redis-server on a free port (pinned
to its own core when there are two or more), runs the benchmarks, prints one
table and writes ``bench/results/latest.json``. Ratios measured in the same run
are the headline; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
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

RESULTS = Path(__file__).resolve().parent / "results"

# Per size: samples/repeats for the online benchmarks, repeats for the bulk ones.
PLAN = {
    "tiny": {"samples_1": 60, "samples_100": 10, "online_repeats": 2, "bulk_repeats": 1},
    "small": {"samples_1": 2000, "samples_100": 150, "online_repeats": 3, "bulk_repeats": 2},
    "medium": {"samples_1": 5000, "samples_100": 400, "online_repeats": 5, "bulk_repeats": 3},
}


def _not_measurable(reason: str) -> dict[str, Any]:
    return {"measurable": False, "reason": reason}


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


ALL = ("materialize", "online", "score_http", "frames", "transform")


def run_all(
    size_name: str,
    out_path: Path | None = None,
    keep: bool = False,
    only: tuple[str, ...] = ALL,
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
        with redis_server(home) as server:
            report["machine"]["redis_core"] = server.core
            os.environ["PITSTORE_HOME"] = str(home)
            os.environ["REDIS_URL"] = server.url
            from pitstore.config import Settings

            settings = Settings(pitstore_home=home, redis_url=server.url)
            t0 = time.perf_counter()
            rows = synth_offline(settings.offline, size)
            report["data"] = {
                "offline_rows": rows,
                "accounts": size.accounts,
                "merchants": size.merchants,
                "daily_runs": size.days,
                "build_s": round(time.perf_counter() - t0, 2),
            }
            print(f"data: {rows} in {report['data']['build_s']} s", file=sys.stderr)
            from pitstore.feast_store import apply
            from pitstore.materialize import materialize_view
            from pitstore.spec import ACCOUNT_DAILY, FEATURE_VIEWS

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

            # 3: the scoring API under load (serving/, bench/score_load.py).
            if "score_http" in only:
                benches["score_http"] = _score(settings, size_name)

            # 5: training frames.
            from bench import frames_bench

            if "frames" in only:
                benches["frames"] = _guard("frames", frames_bench.run, settings, size, w)

            # 6: transforms (bench/transform_bench.py, owned by the transform work).
            if "transform" in only:
                benches["transform"] = _transform(size_name)
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


SCORE_REQUESTS = {"tiny": 300, "small": 2000, "medium": 6000}


def _load(size_name: str, noop: bool) -> dict[str, str] | str:
    """One closed-loop load run of ``bench/score_load.py``; its figures, or an error."""
    import subprocess

    cmd = [
        sys.executable,
        "-m",
        "bench.score_load",
        "--requests",
        str(SCORE_REQUESTS[size_name]),
        "--concurrency",
        "16",
    ]
    if noop:
        cmd.append("--noop")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        return (proc.stderr or proc.stdout)[-400:]
    figures: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            figures[key.strip()] = value.strip()
    return figures


def _score(settings: Any, size_name: str) -> dict[str, Any]:
    """#3: ``/v1/score`` vs a no-op FastAPI endpoint under the same load.

    Both servers run as one uvicorn process on loopback with the same request
    bodies, 16 concurrent closed-loop clients (``bench/score_load.py``);
    pitstore's run also checks the audit log count against the responses. Not
    yet done: the issue's max-throughput search and p99 at 70% of it (an
    open-loop, rate-limited load); equal concurrency is the stand-in.
    """
    if importlib.util.find_spec("bench.score_load") is None:
        return _not_measurable("bench/score_load.py (serving load generator) does not exist yet")
    t0 = time.perf_counter()
    ours = _load(size_name, noop=False)
    noop = _load(size_name, noop=True)
    print(f"  [score_http] {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if isinstance(ours, str):
        return _not_measurable(f"bench.score_load failed: {ours}")
    statuses = ours.get("statuses", "")
    keys = ("throughput_rps", "p50_ms", "p99_ms", "concurrency", "requests")
    errors = not statuses.replace(" ", "").startswith("{200:") or "," in statuses
    out: dict[str, Any] = {
        "measurable": True,
        "partial": True,
        "pitstore": {k: ours.get(k) for k in keys},
        "statuses": statuses,
        "fallbacks": ours.get("fallbacks"),
        "audit_matches_responses": ours.get("audit_matches_responses"),
        "errors": errors,
        "ratios": None,
        "goal": {"met": None},
    }
    if isinstance(noop, str):
        out["baseline"] = f"no-op run failed: {noop}"
        return out
    out["noop"] = {k: noop.get(k) for k in keys}
    out["ratios"] = {
        "p99_vs_noop": float(ours["p99_ms"]) / float(noop["p99_ms"]),
        "p50_vs_noop": float(ours["p50_ms"]) / float(noop["p50_ms"]),
        "throughput_vs_noop": float(ours["throughput_rps"]) / float(noop["throughput_rps"]),
    }
    # Not judged: at equal closed-loop concurrency the no-op runs at its own
    # saturation, where its tail is the client's, not the server's. The goal is
    # defined at 70% of max throughput (open loop), which is not built yet.
    out["goal"] = {"p99_vs_noop_max": 3.0, "met": None}
    return out


def _transform(size_name: str) -> dict[str, Any]:
    if importlib.util.find_spec("bench.transform_bench") is None:
        return _not_measurable("bench/transform_bench.py (dbt vs Spark timings) does not exist yet")
    from bench import transform_bench  # type: ignore[attr-defined]

    runner = getattr(transform_bench, "run_benchmark", None) or getattr(
        transform_bench, "run", None
    )
    if runner is None:
        return _not_measurable("bench/transform_bench.py has no run()/run_benchmark() entry point")
    return _guard("transform", runner, size_name)  # type: ignore[no-any-return]


# --- the table ----------------------------------------------------------------


def _f(x: float | None, unit: str = "", digits: int = 2) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}{unit}"
    return f"{x:.{digits}f}{unit}"


def _goal(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """(#, what, pitstore, baselines, ratios, goal, met?) per benchmark."""
    b = report["benchmarks"]
    rows: list[list[str]] = []
    for num, key, what, goal in (
        ("1", "online_1", "online fetch fraud_v1, 1 txn", "p99 <= 0.5x Feast, <= 2x raw"),
        ("2", "online_100", "online fetch fraud_v1, 100 rows", "p99 <= 0.2x Feast, <= 1.5x raw"),
    ):
        r = b.get(key, _not_measurable("not run"))
        if not r.get("measurable"):
            rows.append([num, what, "not yet measurable", r.get("reason", ""), "", goal, "-"])
            continue
        t = r["timing"]
        rows.append(
            [
                num,
                what,
                f"p50 {_f(t['pitstore']['p50_ms'], ' ms', 3)} / p99 "
                f"{_f(t['pitstore']['p99_ms'], ' ms', 3)}",
                f"Feast p50 {_f(t['feast']['p50_ms'], ' ms', 3)} / p99 "
                f"{_f(t['feast']['p99_ms'], ' ms', 3)}; raw p50 "
                f"{_f(t['raw']['p50_ms'], ' ms', 3)} / p99 {_f(t['raw']['p99_ms'], ' ms', 3)}",
                f"p99 {_f(r['ratios']['p99_vs_feast'], 'x', 3)} Feast, "
                f"{_f(r['ratios']['p99_vs_raw'], 'x')} raw",
                goal,
                _goal(r["goal"]["met"]),
            ]
        )
    r = b.get("score_http", _not_measurable("not run"))
    goal3 = "p99 <= 3x no-op; no errors"
    if not r.get("measurable"):
        rows.append(
            ["3", "/v1/score over HTTP", "not yet measurable", r.get("reason", ""), "", goal3, "-"]
        )
    else:
        p = r.get("pitstore") or {}
        rows.append(
            [
                "3",
                "/v1/score over HTTP (score_load, fixed load)",
                f"{p.get('throughput_rps')} req/s at concurrency {p.get('concurrency')}; "
                f"p50 {p.get('p50_ms')} ms / p99 {p.get('p99_ms')} ms; "
                f"statuses {r.get('statuses')}",
                (
                    f"no-op {r['noop'].get('throughput_rps')} req/s; "
                    f"p50 {r['noop'].get('p50_ms')} ms / p99 {r['noop'].get('p99_ms')} ms"
                    if r.get("noop")
                    else r.get("baseline", "no-op: not measured")
                ),
                (
                    f"p99 {r['ratios']['p99_vs_noop']:.2f}x, p50 {r['ratios']['p50_vs_noop']:.2f}x "
                    f"no-op (not judged: equal concurrency)"
                    if r.get("ratios")
                    else "-"
                ),
                goal3 + " (equal concurrency, not yet p99 at 70% of max)",
                {True: "yes", False: "NO"}.get(r.get("goal", {}).get("met"), "-"),
            ]
        )
    r = b.get("materialize", _not_measurable("not run"))
    goal4 = ">= 4x Feast, >= 0.7x raw"
    if not r.get("measurable"):
        rows.append(
            ["4", "materialize to Redis", "not yet measurable", r.get("reason", ""), "", goal4, "-"]
        )
    else:
        t = r["timing"]
        rows.append(
            [
                "4",
                f"materialize {r['view']}, {r['entities']:,} entities",
                f"{_f(t['pitstore']['rows_per_s'], ' rows/s')} "
                f"({_f(t['pitstore']['seconds'], ' s')})",
                f"Feast {_f(t['feast']['rows_per_s'], ' rows/s')} "
                f"({_f(t['feast']['seconds'], ' s')}); raw {_f(t['raw']['rows_per_s'], ' rows/s')}",
                f"{_f(r['ratios']['rows_per_s_vs_feast'], 'x', 1)} Feast, "
                f"{_f(r['ratios']['rows_per_s_vs_raw'], 'x')} raw",
                goal4,
                _goal(r["goal"]["met"]),
            ]
        )
    r = b.get("frames", _not_measurable("not run"))
    goal5 = "as_of <= 0.2x Feast time, <= 0.5x peak mem, identical"
    if not r.get("measurable"):
        rows.append(
            ["5", "training frame", "not yet measurable", r.get("reason", ""), "", goal5, "-"]
        )
    else:
        c = r["contenders"]

        def tm(name: str) -> str:
            x = c.get(name)
            if not x or "seconds" not in x:
                return f"{name}: {x.get('reason', 'n/a') if x else 'n/a'}"
            return f"{_f(x['seconds'], ' s')}, {_f(x['peak_rss_mb'], ' MB', 0)}"

        rows.append(
            [
                "5",
                f"frame {r['requests']:,} req x {r['offline_rows']:,} offline rows",
                f"as_of {tm('pitstore_as_of')}; as_known {tm('pitstore_as_known')}",
                f"Feast {tm('feast_as_of')}; pandas {tm('pandas_as_of')}",
                f"time {_f(r['ratios'].get('as_of_time_vs_feast'), 'x', 3)} Feast, "
                f"mem {_f(r['ratios'].get('as_of_peak_rss_vs_feast'), 'x')} Feast; "
                f"time {_f(r['ratios'].get('as_of_time_vs_pandas'), 'x')} pandas",
                goal5,
                _goal(r["goal"]["met"]),
            ]
        )
    r = b.get("transform", _not_measurable("not run"))
    goal6 = "incremental <= 0.1x full"
    if not r.get("measurable", True) or "reason" in r and "measurable" in r:
        rows.append(
            ["6", "daily transform", "not yet measurable", r.get("reason", ""), "", goal6, "-"]
        )
    else:
        rows.append(
            [
                "6",
                "daily transform",
                json.dumps(r, default=str)[:200],
                "",
                "",
                goal6,
                _goal(r.get("goal", {}).get("met") if isinstance(r.get("goal"), dict) else None),
            ]
        )
    return rows


HEADER = ["#", "what", "pitstore", "baselines (same run)", "ratio", "goal", "met"]


def render_table(report: dict[str, Any]) -> str:
    """A Markdown table (also readable in a terminal)."""
    rows = table_rows(report)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    m = report["machine"]
    v = m["versions"]
    lines.append("")
    lines.append(
        f"size={report['size']}; {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']} GB; redis core "
        f"{m.get('redis_core')}; python {v['python']}, feast {v['feast']}, redis-py {v['redis']}, "
        f"hiredis {v['hiredis']}, duckdb {v['duckdb']}, pandas {v['pandas']}, "
        f"redis-server {v.get('redis-server')}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data")
    args = parser.parse_args(argv)
    run_all(args.size, args.out, args.keep)


if __name__ == "__main__":
    main()
