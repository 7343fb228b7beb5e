"""Champion against shadow challenger on the same matured, labelled decisions.

Records carry the challenger's verdict under ``shadow`` when the scoring
service runs one (``PITSTORE_SHADOW_MODEL_VERSION``, serving/shadow.py). Both
models are judged on exactly the same rows: decisions older than the
champion's label maturity at the report date, labelled, and scored by both
(a fallback or a failed shadow leaves a row out for both). Each model's
precision and recall are at its own card's threshold; its calibration ratio is
observed fraud rate / mean score (1.0 = calibrated). This is the evidence a
promotion needs; promoting stays ``pitstore models promote``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from pitstore.core.config import Settings
from pitstore.models.registry import ModelRegistryError, load_model
from pitstore.monitor.performance import ece, observed_over_expected
from pitstore.monitor.settings import MonitorSettings
from pitstore.training.model import metrics

DECISIONS = ("approve", "review", "decline")


def _figures(
    version: str, card: dict[str, Any] | None, y: np.ndarray, p: np.ndarray, cfg: MonitorSettings
) -> dict[str, Any]:
    threshold = float(card["threshold"]) if card else None
    m = metrics(y, p, threshold) if len(y) else {"pr_auc": None}
    return {
        "model_version": version,
        "threshold": threshold,
        "pr_auc": m["pr_auc"],
        "precision_at_threshold": m.get("precision_at_threshold"),
        "recall_at_threshold": m.get("recall_at_threshold"),
        "flag_rate": m.get("flag_rate"),
        "observed_over_expected": observed_over_expected(y, p),
        "ece": ece(y, p, cfg.calibration_bins) if len(y) else None,
        "mean_score": float(p.mean()) if len(p) else None,
    }


def _card(settings: Settings, version: str) -> dict[str, Any] | None:
    try:
        return load_model(settings, version).card
    except ModelRegistryError:
        return None  # the figures without a threshold, and a note saying why


def compare(
    settings: Settings,
    decisions: pd.DataFrame,
    labels: pd.DataFrame,
    champion_card: dict[str, Any],
    mature_before: datetime,
    cfg: MonitorSettings,
) -> dict[str, Any] | None:
    """The ``challenger`` section, or None when no record of the window has a shadow.

    ``decisions``: report.load_decisions' frame (shadow_* columns included)."""
    has_shadow = decisions["shadow_version"].notna().to_numpy(dtype=bool)
    if not has_shadow.any():
        return None
    # the columns compared, then the rows: not a copy of every input
    used = ["transaction_id", "decided_at", "decision", "score", "shadow_version"]
    used += ["shadow_score", "shadow_decision", "shadow_error"]
    shadowed = decisions[used][has_shadow]
    failed = shadowed[shadowed["shadow_error"].notna()]
    out: dict[str, Any] = {
        "mature_before": mature_before.isoformat(),
        "records_with_shadow": int(len(shadowed)),
        "shadow_failed": {str(k): int(v) for k, v in failed["shadow_error"].value_counts().items()},
        "comparisons": [],
    }
    both = shadowed[shadowed["score"].notna() & shadowed["shadow_score"].notna()]
    matured = both[both["decided_at"] < pd.Timestamp(mature_before)]
    joined = matured.merge(labels, on="transaction_id", how="inner")
    for version, part in sorted(shadowed.groupby("shadow_version"), key=lambda kv: str(kv[0])):
        rows = joined[joined["shadow_version"] == version]
        y = rows["label"].to_numpy(dtype="int64")
        card = _card(settings, str(version))
        judged = len(y) >= cfg.min_week_rows and int(y.sum()) >= cfg.min_week_frauds
        entry: dict[str, Any] = {
            "challenger_version": str(version),
            "records": int(len(part)),
            "pending_maturity": int(
                (both[both["shadow_version"] == version]["decided_at"] >= mature_before).sum()
            ),
            "rows": int(len(y)),
            "frauds": int(y.sum()),
            "judged": judged,
            "champion": _figures(
                str(champion_card["version"]),
                champion_card,
                y,
                rows["score"].to_numpy(dtype="float64"),
                cfg,
            ),
            "challenger": _figures(
                str(version), card, y, rows["shadow_score"].to_numpy(dtype="float64"), cfg
            ),
            "decisions_differ": float((part["decision"] != part["shadow_decision"]).mean())
            if len(part)
            else None,
        }
        if card is None:
            entry["note"] = f"no card for {version} in the registry: no threshold figures"
        elif not judged:
            entry["note"] = (
                f"too few to judge: fewer than {cfg.min_week_rows} matured decisions or "
                f"{cfg.min_week_frauds} frauds"
            )
        out["comparisons"].append(entry)
    return out
