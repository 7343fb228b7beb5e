"""The one table ``make bench`` prints: a row per benchmark, from the report's JSON."""

from __future__ import annotations

from typing import Any

from bench.harness import not_measurable
from bench.score_verdict import (
    SCORE_FALLBACK_MAX_SHARE,
    SCORE_P99_VS_DURABLE_MAX,
    SCORE_SHED_MAX_SHARE,
    judged_p99,
)


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


def _sheds_cell(r: dict[str, Any]) -> str:
    sh = r.get("sheds")
    if sh is None:  # recorded before sheds were told apart from errors
        return "sheds not told apart"
    return (
        f"sheds {sh['closed_loop']:,} at saturation, {sh['open_loop']:,} at 70% "
        f"({_f(100 * sh['open_loop_share'], '%', 2)}; goal <= {SCORE_SHED_MAX_SHARE:.0%})"
    )


def _score_cells(r: dict[str, Any]) -> Cells:
    p, n, s = r["pitstore"], r["noop"], r["noop_at_pitstore_rate"]
    x = r["ratios"]
    return [
        "/v1/score over HTTP: max throughput, p99 at 70% of it (open loop)",
        f"{_load_cell(p)}; "
        f"errors {r['errors']}, {_sheds_cell(r)}, "
        f"audit {'ok' if r['audit']['matches'] else 'MISMATCH'}, "
        f"fallback answers {r['pitstore_open_loop_fallback_answers']} "
        f"({_f(100 * r.get('pitstore_open_loop_fallback_share', 0.0), '%', 1)}; "
        f"goal <= {SCORE_FALLBACK_MAX_SHARE:.0%})",
        _durable_cell(r)
        + f"; for reference, the plain no-op {_load_cell(n)}; at pitstore's rate p99 "
        f"{_f(judged_p99(s), ' ms')}",
        f"p99 {_f(x.get('p99_vs_noop_durable_each_at_70pct_of_own_max'), 'x')} the no-op + "
        f"durable append, max {_f(x.get('max_throughput_vs_noop_durable'), 'x')}; "
        f"(reference: p99 {_f(x['p99_vs_noop_each_at_70pct_of_own_max'], 'x')} the plain no-op, "
        f"max {_f(x['max_throughput_vs_noop'], 'x')})"
        + _light_cell(r)
        + _prescreen_cell(r)
        + _steal_cell(p, n)
        + (
            f"; p99 not judged: the load client lagged ({', '.join(r['client_lagged'])})"
            if r.get("client_lagged")
            else ""
        )
        + (
            f"; p99 not judged: the reference failed {r['reference_errors']} requests"
            if r.get("reference_errors")
            else ""
        )
        + (f"; the plain no-op's figures: {u}" if (u := _noop_unsteady(r)) else ""),
    ]


def _prescreen_cell(r: dict[str, Any]) -> str:
    """/v1/prescreen on the same server at /v1/score's rate, same run."""
    pre = r.get("prescreen")
    if not pre:
        return ""
    goal = pre["goal"]
    met = {True: "met", False: "MISSED", None: "not judged"}[goal["met"]]
    return (
        f"; /v1/prescreen at the same load: p50 {_f(pre['p50_ms'], ' ms')} / p99 "
        f"{_p99_cell(pre)} = {_f(pre['p99_vs_score_same_load'], 'x')} /v1/score's "
        f"(goal <= {goal['p99_vs_score_max']}x: {met}), errors {pre['errors']}"
    )


def _noop_unsteady(r: dict[str, Any]) -> str | None:
    # "machine_unsteady": the same note in results written before the durable yardstick
    return r.get("noop_unsteady", r.get("machine_unsteady"))


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
    """The yardstick: the no-op that also appends + fsyncs a record before answering."""
    d = r.get("noop_durable")
    if not d:
        return "no-op + durable audit append: not measured"
    return f"no-op + durable audit append {_load_cell(d)}"


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


def _monitor_cells(r: dict[str, Any]) -> Cells:
    c, ratios, check = r["contenders"], r["ratios"], r["psi_check"]

    def tm(name: str) -> str:
        return f"{_f(c[name]['seconds'], ' s')}, {_f(c[name]['peak_rss_mb'], ' MB', 0)}"

    job = r["pitstore_job"]
    return [
        f"monitor {r['decisions']:,} decisions vs {r['reference_rows']:,} reference rows",
        f"drift + performance {tm('pitstore')} (whole job, reading the audit log: "
        f"{_f(job['seconds'], ' s')}, {_f(job['peak_rss_mb'], ' MB', 0)})",
        f"Evidently drift (PSI) + classification {tm('evidently')}; PSI equal on "
        f"{check['equal']}/{check['inputs']} inputs",
        f"time {_f(ratios['time_vs_evidently'], 'x', 3)}, "
        f"mem {_f(ratios['peak_rss_vs_evidently'], 'x')} Evidently",
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
        f"p99 <= {SCORE_P99_VS_DURABLE_MAX:g}x the no-op + durable audit append (each at 70% "
        f"of its max); no errors; <= {SCORE_FALLBACK_MAX_SHARE:.0%} fallback answers, "
        f"<= {SCORE_SHED_MAX_SHARE:.0%} sheds (503s at saturation are not errors)",
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
    (
        "7",
        "monitor",
        "monitor vs Evidently",
        "<= 0.3x Evidently's time, <= 0.5x its peak mem, PSI per input equal",
        _monitor_cells,
    ),
)


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """(#, what, pitstore, baselines, ratios, goal, met?) per benchmark."""
    rows: list[list[str]] = []
    for num, key, name, goal, cells in TABLE:
        r = report["benchmarks"].get(key, not_measurable("not run (--only)"))
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
