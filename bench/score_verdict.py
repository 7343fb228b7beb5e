"""#3's glue in ``make bench``: run ``bench.score_load`` in a child, judge its figures.

The measurement is ``bench/score_load.py``'s; this module turns its JSON into
#3's row: the ratios, whether the load client or the machine makes a figure
unjudgeable, and the verdict.
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


def score_goal_met(
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


def score_http(settings: Any, size_name: str, idle_hold: bool = True) -> dict[str, Any]:
    """#3: ``/v1/score`` vs a no-op FastAPI endpoint, each at 70% of its own max.

    ``bench/score_load.py`` (a child process) runs both servers with the same
    uvicorn settings, finds each one's max throughput with a saturating
    closed-loop load, then measures p50/p99 under an open-loop Poisson load at
    70% of that max (latency from the scheduled send time), interleaving the
    contenders; every answer is checked and the audit log must hold one record
    per pitstore 200. Goal: pitstore p99 <= 3x the no-op's, and no errors.
    """
    t0 = time.perf_counter()
    try:
        flags = [] if idle_hold else ["--no-idle-hold"]
        res = run_child("bench.score_load", SCORE_PLAN[size_name] + flags)
    except RuntimeError as exc:
        return not_measurable(f"bench.score_load failed: {str(exc)[-400:]}")
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
            "met": score_goal_met(
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
