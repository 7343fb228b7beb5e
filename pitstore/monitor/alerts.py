"""The alert record every monitor check emits, and the order alerts are listed in."""

from __future__ import annotations

from typing import Any

# Causes before effects: a shifted input explains a shifted score, which
# explains a changed decision mix and, once labels mature, a performance drop.
KINDS = (
    "input_drift",
    "missing_rise",
    "fallback_rate",
    "prediction_drift",
    "decision_mix",
    "rule_declines",
    "pr_auc_drop",
    "calibration",
    "segment_pr_auc_drop",
    "quarantine_rise",
    "restated_rise",
    "rows_drop",
)


def alert(kind: str, subject: str, value: float, threshold: float, day: str) -> dict[str, Any]:
    assert kind in KINDS, kind
    return {
        "kind": kind,
        "subject": subject,
        "value": round(float(value), 6),
        "threshold": round(float(threshold), 6),
        "day": day,
    }


def ordered(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """By day, then cause before effect, then the largest value first."""
    return sorted(alerts, key=lambda a: (a["day"], KINDS.index(a["kind"]), -a["value"]))
