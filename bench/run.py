"""`make bench` / `pitstore bench`: every benchmark in one run, one table, one JSON.

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

            # 3: the scoring API under load (serving/, bench/score_load.py).
            if "score_http" in only:
                benches["score_http"] = _score(settings, size_name, idle_hold)

            # 5: training frames.
            from bench import frames_bench

            if "frames" in only:
                benches["frames"] = _guard(
                    "frames", frames_bench.run, settings, size, w, plan["bulk_repeats"]
                )

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


# #3 per size: open-loop samples per repeat (at least), repeats, seconds per
# closed-loop max-throughput run, minimum open-loop seconds, interleaved chunks.
SCORE_PLAN = {
    "tiny": ["--samples", "400", "--repeats", "1", "--max-seconds", "1.5", "--open-seconds",
             "2", "--chunks", "2"],
    "small": ["--samples", "3000", "--repeats", "3", "--max-seconds", "3", "--open-seconds",
              "6", "--chunks", "3"],
    "medium": ["--samples", "6000", "--repeats", "5", "--max-seconds", "4", "--open-seconds",
               "10", "--chunks", "4"],
}  # fmt: skip
SCORE_P99_VS_NOOP_MAX = 3.0
# An open-loop latency is the server's only while the load client sends on time:
# a contender whose client lag (its p99) exceeds this share of its p99 latency
# (and 1 ms) was measured partly on the client, and the goal is not judged.
CLIENT_LAG_MAX_SHARE = 0.1
# A fallback answer is not an error (it is the documented degraded path), but
# a bank would not accept rules instead of the model at 70% of nominal load:
# past this share of pitstore's open-loop answers the goal is missed.
SCORE_FALLBACK_MAX_SHARE = 0.01
# The no-op is the yardstick, so #3 is judged only where it was measured on a
# steady machine. Two signs of an unsteady one, from every recorded #3 run:
# - at 70% of its max its p50 is far past its p50 at light load (queueing
#   theory allows ~3x for a single server; quiet runs: 1.2-1.8x): it could not
#   sustain the rate its max promised (one run: 6.4 against 0.24 ms);
# - at light load (pitstore's rate, ~15% of its max: next to no queueing) its
#   p99 is far past its p50: quiet runs 2.3-4.3x (p99 0.42-0.98 ms), runs
#   with host stalls 6.9-9.6x (p99 1.6-2.4 ms), and in those the no-op's p99
#   at 70% was 4.8-19 ms against 0.8-2.3 ms on quiet runs.
NOOP_STEADY_P50_MAX = 4.0
NOOP_LIGHT_P99_OVER_P50_MAX = 5.0


def client_bound(x: dict[str, Any]) -> bool:
    """Did the load client's own lag, not the server, make this contender's p99?"""
    lag = x.get("client_send_lag_p99_ms")
    return lag is not None and float(lag) > max(1.0, CLIENT_LAG_MAX_SHARE * float(x["p99_ms"]))


def judged_p99(x: dict[str, Any]) -> float:
    """The p99 #3 judges: the median of the chunks' p99s (``bench.score_load.chunk_p99s``
    says why), or the pooled p99 in results from before it existed."""
    return float(x.get("p99_chunk_median_ms", x["p99_ms"]))


def noop_unsteady(noop: dict[str, Any], light_noop: dict[str, Any]) -> str | None:
    """Why the no-op's figures show an unsteady machine, or None (see
    ``NOOP_STEADY_P50_MAX``, ``NOOP_LIGHT_P99_OVER_P50_MAX``)."""
    light_p50 = max(float(light_noop["p50_ms"]), 1e-3)
    loaded = float(noop["p50_ms"]) / light_p50
    if loaded > NOOP_STEADY_P50_MAX:
        return (
            f"the no-op's p50 at 70% of its max was {loaded:.1f}x its p50 at light load "
            f"(over {NOOP_STEADY_P50_MAX:g}x: it could not sustain the rate its max promised)"
        )
    tail = judged_p99(light_noop) / light_p50
    if tail > NOOP_LIGHT_P99_OVER_P50_MAX:
        return (
            f"at light load the no-op's p99 was {tail:.1f}x its p50 "
            f"(over {NOOP_LIGHT_P99_OVER_P50_MAX:g}x with next to no queueing: host stalls)"
        )
    return None


def _score_goal_met(
    errors: int,
    audit_matches: bool,
    fallback_share: float,
    lagged: list[str],
    p99_ratio: float | None,
    unsteady: str | None = None,
) -> bool | None:
    """#3's verdict; None when the latencies can't be judged."""
    if errors or not audit_matches or fallback_share > SCORE_FALLBACK_MAX_SHARE:
        return False  # whatever the client did
    if lagged or unsteady is not None or p99_ratio is None:
        return None
    return p99_ratio <= SCORE_P99_VS_NOOP_MAX


def _score_figures(x: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "max_throughput_rps",
        "max_answers_rps",
        "open_rate_rps",
        "achieved_rps",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "client_send_lag_p99_ms",
        "steal_share",
        "p99_chunk_median_ms",
        "p99_chunk_range_ms",
        "chunk_count",
    )
    out = {k: x.get(k) for k in keys if k in x}
    out["errors"] = x.get("errors")
    out["samples_per_repeat"] = x.get("samples_per_repeat")
    return out


def _score(settings: Any, size_name: str, idle_hold: bool = True) -> dict[str, Any]:
    """#3: ``/v1/score`` vs a no-op FastAPI endpoint, each at 70% of its own max.

    ``bench/score_load.py`` (a child process) runs both servers with the same
    uvicorn settings, finds each one's max throughput with a saturating
    closed-loop load, then measures p50/p99 under an open-loop Poisson load at
    70% of that max (latency from the scheduled send time), interleaving the
    contenders; every answer is checked and the audit log must hold one record
    per pitstore 200. Goal: pitstore p99 <= 3x the no-op's, and no errors.
    """
    from bench.harness import ratio, run_child

    t0 = time.perf_counter()
    try:
        flags = [] if idle_hold else ["--no-idle-hold"]
        res = run_child("bench.score_load", SCORE_PLAN[size_name] + flags)
    except RuntimeError as exc:
        return _not_measurable(f"bench.score_load failed: {str(exc)[-400:]}")
    print(f"  [score_http] {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    ours, noop, same = res["pitstore"], res["noop"], res["noop_at_pitstore_rate"]
    light = res.get("pitstore_light")
    durable = res.get("noop_durable")
    audit = res["audit"]
    errors = int(ours["errors"]) + int(noop["errors"]) + int(same["errors"])
    p99_ratio = ratio(judged_p99(ours), judged_p99(noop))
    lagged = [name for name, x in (("pitstore", ours), ("no-op", noop)) if client_bound(x)]
    unsteady = noop_unsteady(noop, same)
    fallbacks: dict[str, int] = {}
    for rep in ours["repeats"]:
        for k, n in rep["open_70"].get("fallbacks", {}).items():
            fallbacks[k] = fallbacks.get(k, 0) + n
    fallback_answers = sum(n for k, n in fallbacks.items() if k != "False")
    fallback_share = fallback_answers / max(1, sum(fallbacks.values()))
    return {
        "measurable": True,
        "pitstore": _score_figures(ours),
        "noop": _score_figures(noop),
        "noop_at_pitstore_rate": _score_figures(same),
        # pitstore at 10% of its max: its p99 with next to no queueing. If that
        # alone is over the goal, the 70% figure cannot meet it by scheduling.
        "pitstore_light": _score_figures(light) if light else None,
        "pitstore_stages": res.get("pitstore_stages"),
        # a reference, not judged: the no-op plus pitstore's durable audit append
        "noop_durable": _score_figures(durable) if durable else None,
        # "False": answered by the model; any other key is a fallback reason.
        "pitstore_open_loop_fallbacks": fallbacks,
        # Not errors (the documented degraded path, e.g. a Redis read over its
        # share of the budget on a busy machine), but not model decisions either.
        "pitstore_open_loop_fallback_answers": fallback_answers,
        "pitstore_open_loop_fallback_share": round(fallback_share, 4),
        "audit": audit,
        "errors": errors,
        "client_lagged": lagged,
        # why the no-op's own figures show an unsteady machine (then #3 is not judged)
        "machine_unsteady": unsteady,
        "idle_hold": res.get("idle_hold"),
        "ratios": {
            "p99_vs_noop_each_at_70pct_of_own_max": p99_ratio,
            "p50_vs_noop_each_at_70pct_of_own_max": ratio(ours["p50_ms"], noop["p50_ms"]),
            "max_throughput_vs_noop": ratio(ours["max_throughput_rps"], noop["max_throughput_rps"]),
            "p99_vs_noop_at_pitstore_rate": ratio(judged_p99(ours), judged_p99(same)),
            "noop_durable_p99_vs_noop_each_at_70pct_of_own_max": (
                ratio(judged_p99(durable), judged_p99(noop)) if durable else None
            ),
            "p99_vs_noop_durable_each_at_70pct_of_own_max": (
                ratio(judged_p99(ours), judged_p99(durable)) if durable else None
            ),
            "p99_light_vs_noop_at_70pct_of_its_max": (
                ratio(judged_p99(light), judged_p99(noop)) if light else None
            ),
            "pooled_p99_vs_noop_each_at_70pct_of_own_max": ratio(ours["p99_ms"], noop["p99_ms"]),
        },
        "goal": {
            "p99_vs_noop_max": SCORE_P99_VS_NOOP_MAX,
            "errors_max": 0,
            "fallback_answers_max_share": SCORE_FALLBACK_MAX_SHARE,
            "client_lag_max_share_of_p99": CLIENT_LAG_MAX_SHARE,
            "met": _score_goal_met(
                errors, bool(audit["matches"]), fallback_share, lagged, p99_ratio, unsteady
            ),
        },
        "method": res["method"],
        "pinning": res["pinning"],
        "detail": {
            k: res[k]
            for k in ("pitstore", "noop", "noop_at_pitstore_rate", "pitstore_light", "noop_durable")
            if k in res
        },
    }


def _transform(size_name: str) -> dict[str, Any]:
    from bench import transform_bench

    return _guard("transform", transform_bench.run, size_name)  # type: ignore[no-any-return]


# --- the table ----------------------------------------------------------------


def _f(x: float | None, unit: str = "", digits: int = 2) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}{unit}"
    return f"{x:.{digits}f}{unit}"


def _goal(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


Cells = list[str]  # what, pitstore, baselines, ratio


def _online_cells(what: str, r: dict[str, Any]) -> Cells:
    t = r["timing"]
    return [
        what,
        f"p50 {_f(t['pitstore']['p50_ms'], ' ms', 3)} / p99 "
        f"{_f(t['pitstore']['p99_ms'], ' ms', 3)}",
        f"Feast p50 {_f(t['feast']['p50_ms'], ' ms', 3)} / p99 "
        f"{_f(t['feast']['p99_ms'], ' ms', 3)}; raw p50 "
        f"{_f(t['raw']['p50_ms'], ' ms', 3)} / p99 {_f(t['raw']['p99_ms'], ' ms', 3)}",
        f"p99 {_f(r['ratios']['p99_vs_feast'], 'x', 3)} Feast, "
        f"{_f(r['ratios']['p99_vs_raw'], 'x')} raw",
    ]


def _load_cell(x: dict[str, Any]) -> str:
    """One server's max throughput and its open-loop latency at 70% of it."""
    return (
        f"max {_f(x['max_throughput_rps'], ' req/s', 0)}; at "
        f"{_f(x['open_rate_rps'], '/s', 0)} p50 {_f(x['p50_ms'], ' ms')} / p99 "
        f"{_p99_cell(x)}"
    )


def _p99_cell(x: dict[str, Any]) -> str:
    """The judged p99 (median of the chunks'), with their range and the pooled p99."""
    if x.get("p99_chunk_median_ms") is None:
        return _f(x["p99_ms"], " ms")
    low, high = x["p99_chunk_range_ms"]
    return (
        f"{_f(x['p99_chunk_median_ms'], ' ms')} (median of {x.get('chunk_count', '?')} chunks' "
        f"p99s, {_f(low)}-{_f(high)}; pooled {_f(x['p99_ms'], ' ms')})"
    )


def _score_cells(r: dict[str, Any]) -> Cells:
    p, n, s = r["pitstore"], r["noop"], r["noop_at_pitstore_rate"]
    return [
        "/v1/score over HTTP: max throughput, p99 at 70% of it (open loop)",
        f"{_load_cell(p)}; "
        f"errors {r['errors']}, audit {'ok' if r['audit']['matches'] else 'MISMATCH'}, "
        f"fallback answers {r['pitstore_open_loop_fallback_answers']} "
        f"({_f(100 * r.get('pitstore_open_loop_fallback_share', 0.0), '%', 1)}; "
        f"goal <= {SCORE_FALLBACK_MAX_SHARE:.0%})",
        f"no-op {_load_cell(n)}; at pitstore's rate p99 {_f(judged_p99(s), ' ms')}"
        + _durable_cell(r),
        f"p99 {_f(r['ratios']['p99_vs_noop_each_at_70pct_of_own_max'], 'x')} no-op; "
        f"max {_f(r['ratios']['max_throughput_vs_noop'], 'x')}"
        + _light_cell(r)
        + (
            f"; vs the no-op + durable append {_f(x, 'x')}"
            if (x := r["ratios"].get("p99_vs_noop_durable_each_at_70pct_of_own_max"))
            else ""
        )
        + _steal_cell(p, n)
        + (
            f"; not judged: the load client lagged ({', '.join(r['client_lagged'])})"
            if r.get("client_lagged")
            else ""
        )
        + (
            f"; not judged, the machine was unsteady: {r['machine_unsteady']}"
            if r.get("machine_unsteady")
            else ""
        ),
    ]


def _steal_cell(ours: dict[str, Any], noop: dict[str, Any]) -> str:
    """How much of the cores the host took during each contender's chunks: a
    p99 at 70% load is where a few ms of stolen time shows first."""
    if ours.get("steal_share") is None or noop.get("steal_share") is None:
        return ""
    return (
        f"; stolen by the host: {100 * ours['steal_share']:.2f}% of the cores in "
        f"pitstore's chunks, {100 * noop['steal_share']:.2f}% in the no-op's"
    )


def _durable_cell(r: dict[str, Any]) -> str:
    """The reference: the no-op that also appends + fsyncs a record before answering."""
    d = r.get("noop_durable")
    if not d:
        return ""
    x = r["ratios"].get("noop_durable_p99_vs_noop_each_at_70pct_of_own_max")
    return (
        f"; no-op + durable audit append: max {_f(d.get('max_throughput_rps'), ' req/s')}, "
        f"p99 at 70% {_f(judged_p99(d), ' ms')} ({_f(x, 'x')} the no-op's)"
    )


def _light_cell(r: dict[str, Any]) -> str:
    """pitstore's floor: its p99 at 10% of its max, against the no-op's at 70%."""
    light = r.get("pitstore_light")
    if not light:
        return ""
    x = r["ratios"].get("p99_light_vs_noop_at_70pct_of_its_max")
    stages = (r.get("pitstore_stages") or {}).get("light_load", {})
    waits = ", ".join(
        f"{name.replace('_', ' ')} p99 <= {_f(v.get('p99_at_most_ms'), ' ms')}"
        for name, v in stages.items()
    )
    return (
        f"; floor: pitstore p99 at 10% of its max {_f(judged_p99(light), ' ms')} "
        f"= {_f(x, 'x')} the no-op's at 70%" + (f"; there, {waits}" if waits else "")
    )


def _materialize_cells(r: dict[str, Any]) -> Cells:
    t = r["timing"]
    return [
        f"materialize {r['view']}, {r['entities']:,} entities",
        f"{_f(t['pitstore']['rows_per_s'], ' rows/s')} ({_f(t['pitstore']['seconds'], ' s')})",
        f"Feast {_f(t['feast']['rows_per_s'], ' rows/s')} "
        f"({_f(t['feast']['seconds'], ' s')}); raw {_f(t['raw']['rows_per_s'], ' rows/s')}",
        f"{_f(r['ratios']['rows_per_s_vs_feast'], 'x', 1)} Feast, "
        f"{_f(r['ratios']['rows_per_s_vs_raw'], 'x')} raw",
    ]


def _frames_cells(r: dict[str, Any]) -> Cells:
    c = r["contenders"]

    def tm(name: str) -> str:
        x = c.get(name)
        if not x or "seconds" not in x:
            return f"{name}: {x.get('reason', 'n/a') if x else 'n/a'}"
        return f"{_f(x['seconds'], ' s')}, {_f(x['peak_rss_mb'], ' MB', 0)}"

    return [
        f"frame {r['requests']:,} req x {r['offline_rows']:,} offline rows",
        f"as_of {tm('pitstore_as_of')}; as_known {tm('pitstore_as_known')}",
        f"Feast {tm('feast_as_of')}; pandas {tm('pandas_as_of')}",
        f"time {_f(r['ratios'].get('as_of_time_vs_feast'), 'x', 3)} Feast, "
        f"mem {_f(r['ratios'].get('as_of_peak_rss_vs_feast'), 'x')} Feast; "
        f"time {_f(r['ratios'].get('as_of_time_vs_pandas'), 'x')} pandas",
    ]


def _transform_cells(r: dict[str, Any]) -> Cells:
    engines = [e for e in ("dbt", "spark") if isinstance(r.get(e), dict)]
    sizes = "; ".join(f"{e} {r[e]['accounts']:,} acc x {r[e]['days']} d" for e in engines)
    return [
        f"daily transform, one day vs full rebuild ({sizes})",
        "; ".join(f"{e} incr {_f(r[e]['incremental_s'], ' s')}" for e in engines),
        "; ".join(f"{e} full {_f(r[e]['full_s'], ' s')}" for e in engines)
        + ("" if r.get("verified") else " (NOT verified)"),
        "; ".join(
            f"{e} {_f(r['ratios'].get(f'{e}_incremental_vs_full'), 'x', 3)}" for e in engines
        ),
    ]


# (#, key in report["benchmarks"], name when not measured, goal, the measured cells)
TABLE: tuple[tuple[str, str, str, str, Any], ...] = (
    (
        "1",
        "online_1",
        "online fetch fraud_v1, 1 txn",
        "p99 <= 0.5x Feast, <= 2x raw",
        lambda r: _online_cells("online fetch fraud_v1, 1 txn", r),
    ),
    (
        "2",
        "online_100",
        "online fetch fraud_v1, 100 rows",
        "p99 <= 0.2x Feast, <= 1.5x raw",
        lambda r: _online_cells("online fetch fraud_v1, 100 rows", r),
    ),
    (
        "3",
        "score_http",
        "/v1/score over HTTP",
        "p99 <= 3x no-op (each at 70% of its max); no errors",
        _score_cells,
    ),
    ("4", "materialize", "materialize to Redis", ">= 4x Feast, >= 0.7x raw", _materialize_cells),
    (
        "5",
        "frames",
        "training frame",
        "as_of <= 0.2x Feast time, <= 0.5x peak mem, identical",
        _frames_cells,
    ),
    ("6", "transform", "daily transform", "incremental <= 0.1x full", _transform_cells),
)


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """(#, what, pitstore, baselines, ratios, goal, met?) per benchmark."""
    rows: list[list[str]] = []
    for num, key, name, goal, cells in TABLE:
        r = report["benchmarks"].get(key, _not_measurable("not run (--only)"))
        if not r.get("measurable"):
            rows.append([num, name, "not measured", r.get("reason", ""), "", goal, "-"])
        else:
            rows.append([num, *cells(r), goal, _goal(r.get("goal", {}).get("met"))])
    return rows


HEADER = ["#", "what", "pitstore", "baselines (same run)", "ratio", "goal", "met"]


def render_table(report: dict[str, Any]) -> str:
    """A Markdown table (also readable in a terminal)."""
    rows = table_rows(report)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    m = report["machine"]
    v = m["versions"]
    hold = m.get("idle_hold") or {}
    lines.append("")
    lines.append(
        f"size={report['size']}; {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']} GB; redis core "
        f"{m.get('redis_core')}; python {v['python']}, feast {v['feast']}, redis-py {v['redis']}, "
        f"hiredis {v['hiredis']}, duckdb {v['duckdb']}, pandas {v['pandas']}, "
        f"redis-server {v.get('redis-server')}; idle states "
        + (
            "held off (bench/machine.py)"
            if hold.get("held")
            else f"allowed ({hold.get('reason', 'not recorded')})"
        )
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data")
    parser.add_argument("--only", nargs="+", choices=ALL, default=list(ALL))
    parser.add_argument(
        "--no-idle-hold",
        action="store_true",
        help="let idle cores sleep (bench/machine.py: by default the run holds idle states off)",
    )
    args = parser.parse_args(argv)
    run_all(args.size, args.out, args.keep, tuple(args.only), not args.no_idle_hold)


if __name__ == "__main__":
    main()
