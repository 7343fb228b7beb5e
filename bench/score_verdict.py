"""#3's glue in ``make bench``: run ``bench.score_load`` in a child, judge its figures.

The measurement is ``bench/score_load.py``'s; this module turns its JSON into
#3's row: the ratios, whether the load client makes a figure unjudgeable, and
the verdict.

The yardstick is the server that does the same job minus the scoring: the
no-op plus the same durable audit append (``bench/noop_app.py
--durable-audit``: pitstore's own ``AuditLog``, group commit and fsync, before
it answers), measured in the same run, its chunks interleaved with pitstore's.
Every pitstore answer must be durable before it is sent; a no-op that writes
nothing measures a server that does less than the job, and on a disk whose
flush costs a few hundred microseconds no durable server can sit within a small
factor of it. The plain no-op stays in the table for reference; its own
steadiness check (``noop_unsteady``) is reported, not judged. How the machine
is tuned for the run (``bench/machine.py``, the idle-state hold) is a bench
option and no part of the verdict.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bench.harness import not_measurable, ratio, run_child

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
# The goal: pitstore's p99 at 70% of its max within this factor of the durable
# reference's p99 at 70% of *its* max (each the median of the chunks' p99s).
SCORE_P99_VS_DURABLE_MAX = 1.5
# An open-loop latency is the server's only while the load client sends on time:
# a contender whose client lag (its p99) exceeds this share of its p99 latency
# (and 1 ms) was measured partly on the client, and the goal is not judged.
CLIENT_LAG_MAX_SHARE = 0.1
# A fallback answer is not an error (it is the documented degraded path), but
# a bank would not accept rules instead of the model at 70% of nominal load:
# past this share of pitstore's open-loop answers the goal is missed.
SCORE_FALLBACK_MAX_SHARE = 0.01
# A shed (503 with ``admission.SHED_BODY``) is admission control refusing on
# purpose, not an error: at saturation (the closed loop that finds the max)
# it is the point. In the open loop at 70% of the max a shed is an answer
# without a decision, held to the same ceiling as fallbacks.
SCORE_SHED_MAX_SHARE = 0.01
# POST /v1/prescreen on the same server at /v1/score's rate (same run, chunks
# interleaved): its p99 within this factor of /v1/score's (issue #23).
PRESCREEN_P99_VS_SCORE_MAX = 1.2
# Reported about the plain no-op (the reference row), not judged. Two signs that
# its sub-millisecond figures were set by the machine, from every recorded run:
# - at 70% of its max its p50 is far past its p50 at light load (queueing
#   theory allows ~3x for a single server; quiet runs: 1.2-1.8x);
# - at light load (pitstore's rate, ~15% of its max: next to no queueing) its
#   p99 is far past its p50: quiet runs 2.3-4.3x, runs with host stalls 6.9-9.6x.
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


def score_goal_met(
    errors: int,
    audit_matches: bool,
    fallback_share: float,
    lagged: list[str],
    p99_vs_durable: float | None,
    reference_errors: int = 0,
    shed_share: float = 0.0,
) -> bool | None:
    """#3's verdict against the durable reference; None when the latencies can't
    be judged (the load client lagged, or the reference was not measured or
    failed requests: then there is no yardstick)."""
    if errors or not audit_matches or fallback_share > SCORE_FALLBACK_MAX_SHARE:
        return False  # whatever the client did
    if shed_share > SCORE_SHED_MAX_SHARE:
        return False  # whatever the client did
    if lagged or reference_errors or p99_vs_durable is None:
        return None
    return p99_vs_durable <= SCORE_P99_VS_DURABLE_MAX


def verdict(res: dict[str, Any]) -> dict[str, Any]:
    """Judge ``bench.score_load``'s result: errors, audit, fallback share, the
    client-lag check and the p99 ratio against the durable reference."""
    ours, durable = res["pitstore"], res.get("noop_durable")
    errors = int(ours["errors"])
    reference_errors = int(durable["errors"]) if durable else 0
    fallbacks: dict[str, int] = {}
    for rep in ours["repeats"]:
        for k, n in rep["open_70"].get("fallbacks", {}).items():
            fallbacks[k] = fallbacks.get(k, 0) + n
    fallback_answers = sum(n for k, n in fallbacks.items() if k != "False")
    fallback_share = fallback_answers / max(1, sum(fallbacks.values()))
    open_sheds = int(ours.get("sheds_open_loop", 0))
    shed_share = open_sheds / max(1, int(ours.get("open_loop_requests", 0)))
    judged = (("pitstore", ours), ("no-op + durable append", durable))
    lagged = [name for name, x in judged if x and client_bound(x)]
    p99_vs_durable = ratio(judged_p99(ours), judged_p99(durable)) if durable else None
    met = score_goal_met(
        errors, bool(res["audit"]["matches"]), fallback_share, lagged, p99_vs_durable,
        reference_errors, shed_share,
    )  # fmt: skip
    return {
        "errors": errors,
        "sheds_closed_loop": int(ours.get("sheds_closed_loop", 0)),
        "sheds_open_loop": open_sheds,
        "shed_share_open_loop": shed_share,
        "reference_errors": reference_errors,
        "fallbacks": fallbacks,
        "fallback_answers": fallback_answers,
        "fallback_share": fallback_share,
        "lagged": lagged,
        "p99_vs_durable": p99_vs_durable,
        "met": met,
    }


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
    for k in ("sheds_closed_loop", "sheds_open_loop", "open_loop_requests"):
        if k in x:
            out[k] = x[k]
    out["samples_per_repeat"] = x.get("samples_per_repeat")
    return out


def score_http(settings: Any, size_name: str, idle_hold: bool = True) -> dict[str, Any]:
    """#3: ``/v1/score`` against the no-op + durable audit append, each at 70% of its own max.

    ``bench/score_load.py`` (a child process) runs pitstore, the plain no-op and
    the durable no-op with the same uvicorn settings, finds each one's max
    throughput with a saturating closed-loop load, then measures p50/p99 under
    an open-loop Poisson load at 70% of that max (latency from the scheduled
    send time), interleaving the contenders; every answer is checked and the
    audit log must hold one record per pitstore 200. Goal: pitstore's p99 <=
    1.5x the durable reference's, no errors, <= 1% fallback answers; sheds
    (admission control's 503s) are counted apart: any at saturation, <= 1% of
    the open-loop requests.
    ``idle_hold`` is passed through to the child (a bench option only).
    """
    t0 = time.perf_counter()
    try:
        flags = [] if idle_hold else ["--no-idle-hold"]
        res = run_child("bench.score_load", SCORE_PLAN[size_name] + flags)
    except RuntimeError as exc:
        return not_measurable(f"bench.score_load failed: {str(exc)[-400:]}")
    print(f"  [score_http] {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return score_report(res)


def prescreen_report(res: dict[str, Any]) -> dict[str, Any] | None:
    """/v1/prescreen against /v1/score at the same load in the same run (None: not run)."""
    pre, ours = res.get("prescreen"), res["pitstore"]
    if pre is None:
        return None
    refers: dict[str, int] = {}
    for rep in pre["repeats"]:
        for k, n in rep["open_70"].get("fallbacks", {}).items():
            refers[k] = refers.get(k, 0) + n
    p99_ratio = ratio(judged_p99(pre), judged_p99(ours))
    lagged = client_bound(pre) or client_bound(ours)
    met = (
        False
        if int(pre["errors"]) or not res["audit"]["matches"]
        else None
        if lagged or p99_ratio is None
        else p99_ratio <= PRESCREEN_P99_VS_SCORE_MAX
    )
    return {
        **_score_figures(pre),
        # "False": the PD decided; any other key is why the application was referred
        "refer_reasons": refers,
        "p99_vs_score_same_load": p99_ratio,
        "goal": {"p99_vs_score_max": PRESCREEN_P99_VS_SCORE_MAX, "met": met},
    }


def score_report(res: dict[str, Any]) -> dict[str, Any]:
    """#3's entry in the report, from ``bench.score_load``'s result."""
    ours, noop, same = res["pitstore"], res["noop"], res["noop_at_pitstore_rate"]
    light = res.get("pitstore_light")
    durable = res.get("noop_durable")
    v = verdict(res)
    return {
        "measurable": True,
        "pitstore": _score_figures(ours),
        # the yardstick: the no-op plus pitstore's durable audit append
        "noop_durable": _score_figures(durable) if durable else None,
        # references, not judged: the plain no-op at its own 70% and at pitstore's rate
        "noop": _score_figures(noop),
        "noop_at_pitstore_rate": _score_figures(same),
        # pitstore at 10% of its max: its p99 with next to no queueing.
        "pitstore_light": _score_figures(light) if light else None,
        "pitstore_stages": res.get("pitstore_stages"),
        # POST /v1/prescreen, same server, same load as /v1/score, same run
        "prescreen": prescreen_report(res),
        # "False": answered by the model; any other key is a fallback reason.
        "pitstore_open_loop_fallbacks": v["fallbacks"],
        # Not errors (the documented degraded path, e.g. a Redis read over its
        # share of the budget on a busy machine), but not model decisions either.
        "pitstore_open_loop_fallback_answers": v["fallback_answers"],
        "pitstore_open_loop_fallback_share": round(v["fallback_share"], 4),
        "audit": res["audit"],
        "errors": v["errors"],
        # admission control's 503s, apart from the errors (SCORE_SHED_MAX_SHARE)
        "sheds": {
            "closed_loop": v["sheds_closed_loop"],
            "open_loop": v["sheds_open_loop"],
            "open_loop_share": round(v["shed_share_open_loop"], 4),
        },
        "reference_errors": v["reference_errors"],
        "client_lagged": v["lagged"],
        # about the plain no-op's figures only (reported, not judged)
        "noop_unsteady": noop_unsteady(noop, same),
        "idle_hold": res.get("idle_hold"),
        "ratios": {
            "p99_vs_noop_durable_each_at_70pct_of_own_max": v["p99_vs_durable"],
            "max_throughput_vs_noop_durable": (
                ratio(ours["max_throughput_rps"], durable["max_throughput_rps"])
                if durable
                else None
            ),
            "p99_vs_noop_each_at_70pct_of_own_max": ratio(judged_p99(ours), judged_p99(noop)),
            "p50_vs_noop_each_at_70pct_of_own_max": ratio(ours["p50_ms"], noop["p50_ms"]),
            "max_throughput_vs_noop": ratio(ours["max_throughput_rps"], noop["max_throughput_rps"]),
            "p99_vs_noop_at_pitstore_rate": ratio(judged_p99(ours), judged_p99(same)),
            "noop_durable_p99_vs_noop_each_at_70pct_of_own_max": (
                ratio(judged_p99(durable), judged_p99(noop)) if durable else None
            ),
            "p99_light_vs_noop_at_70pct_of_its_max": (
                ratio(judged_p99(light), judged_p99(noop)) if light else None
            ),
            "pooled_p99_vs_noop_each_at_70pct_of_own_max": ratio(ours["p99_ms"], noop["p99_ms"]),
        },
        "goal": {
            "yardstick": "noop_durable",
            "p99_vs_noop_durable_max": SCORE_P99_VS_DURABLE_MAX,
            "errors_max": 0,
            "fallback_answers_max_share": SCORE_FALLBACK_MAX_SHARE,
            "open_loop_sheds_max_share": SCORE_SHED_MAX_SHARE,
            "client_lag_max_share_of_p99": CLIENT_LAG_MAX_SHARE,
            "met": v["met"],
        },
        "method": res["method"],
        "pinning": res["pinning"],
        "detail": {
            k: res[k]
            for k in (
                "pitstore",
                "prescreen",
                "noop",
                "noop_at_pitstore_rate",
                "pitstore_light",
                "noop_durable",
            )
            if k in res
        },
    }
