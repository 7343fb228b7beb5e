"""Performance on matured labels: decisions joined with what was known by the report date.

A decision is judged only once it is older than the model's label maturity at
the report date: a younger one's chargeback may simply not have arrived, and
counting it as genuine would flatter recall and calibration. Weeks (Monday,
UTC) with too few matured decisions or frauds get ``judged: false``, and so do
weeks the window covers only in part: a weekend fragment of a week met the
row and fraud minimums and raised a calibration alert (observed/expected 3.5x)
on a world without any shift (tests/test_monitor_false_alarms.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from pitstore.core.config import Settings
from pitstore.monitor.alerts import alert
from pitstore.monitor.grouping import groups
from pitstore.monitor.settings import MonitorSettings
from pitstore.training.labels import LabelPolicy, fraud_requests
from pitstore.training.model import SEGMENTS, calibration_table, metrics


def matured_labels(
    settings: Settings, known_by: datetime, maturity: timedelta, start: datetime
) -> pd.DataFrame:
    """transaction_id -> label (1 fraud, 0 genuine or assumed genuine) known by ``known_by``.

    The one place the monitor reads labels (training.labels.fraud_requests):
    immature transactions are kept marked (null label) and dropped here."""
    rows, _ = fraud_requests(
        settings, LabelPolicy(known_by=known_by, maturity=maturity, immature="mark", start=start)
    )
    df = rows.select(["transaction_id", "label"]).to_pandas()
    return df[df["label"].notna()].astype({"label": "int64"})


def ece(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    """Expected calibration error over equal-count score bins (as the card's table)."""
    table = calibration_table(y, p, bins)
    n = sum(r["n"] for r in table)
    return float(sum(r["n"] * abs(r["mean_score"] - r["fraud_rate"]) for r in table) / n)


def observed_over_expected(y: np.ndarray, p: np.ndarray) -> float | None:
    """Calibration in the large: observed fraud rate / mean score (1.0 = calibrated)."""
    return float(y.mean() / p.mean()) if len(y) and p.mean() > 0 else None


def baseline(
    card: dict[str, Any], ref_y: np.ndarray, ref_p: np.ndarray, cfg: MonitorSettings
) -> dict[str, Any]:
    """What a week is compared with.

    PR-AUC: the card's out-of-time validation value, only if it rests on at
    least ``min_week_frauds`` frauds (else it is noise and is not compared).
    Calibration: the reference frame's labelled rows (many more frauds than
    the validation split; the model's calibration was fitted on this data)."""
    m = card.get("metrics", {})
    frauds = int(m.get("fraud") or 0)
    labelled = ~np.isnan(ref_y)
    y, p = ref_y[labelled].astype("int64"), ref_p[labelled]
    return {
        "pr_auc": m.get("pr_auc") if frauds >= cfg.min_week_frauds else None,
        "pr_auc_frauds": frauds,
        "pr_auc_note": None
        if frauds >= cfg.min_week_frauds
        else f"the card's PR-AUC rests on {frauds} frauds (< {cfg.min_week_frauds}): not compared",
        "ece": ece(y, p, cfg.calibration_bins) if len(y) else None,
        "observed_over_expected": observed_over_expected(y, p),
        "rows": int(len(y)),
        "frauds": int(y.sum()),
    }


def score_bands(y: np.ndarray, p: np.ndarray, band: tuple[float, float]) -> list[dict[str, Any]]:
    """Expected (mean score) vs observed fraud rate in the approve/review/decline bands."""
    low, high = band
    out = []
    for name, mask in (
        ("approve", p < low),
        ("review", (p >= low) & (p < high)),
        ("decline", p >= high),
    ):
        n = int(mask.sum())
        out.append(
            {
                "band": name,
                "n": n,
                "expected_rate": float(p[mask].mean()) if n else None,
                "observed_rate": float(y[mask].mean()) if n else None,
            }
        )
    return out


def _summary(
    y: np.ndarray, p: np.ndarray, threshold: float, min_rows: int, min_frauds: int
) -> dict[str, Any]:
    m = metrics(y, p, threshold)
    judged = len(y) >= min_rows and int(y.sum()) >= min_frauds
    out = {
        "rows": int(len(y)),
        "frauds": int(y.sum()),
        "pr_auc": m["pr_auc"],
        "precision_at_threshold": m.get("precision_at_threshold"),
        "recall_at_threshold": m.get("recall_at_threshold"),
        "judged": judged,
    }
    if not judged:
        out["note"] = f"not judged: fewer than {min_rows} decisions or {min_frauds} frauds"
    return out


def weekly(
    decisions: pd.DataFrame,
    labels: pd.DataFrame,
    card: dict[str, Any],
    base: dict[str, Any],
    mature_before: datetime,
    cfg: MonitorSettings,
    days: tuple[date, date] | None = None,
) -> dict[str, Any]:
    """Per week of matured decisions: metrics, bands, ECE, and the same per segment.

    ``decisions`` has transaction_id, decided_at (aware), score and the segments;
    ``days``: the window's first and last day (a week not inside it is not judged)."""
    score = decisions["score"].to_numpy(dtype="float64")
    has_score = ~np.isnan(score)
    young_all = (decisions["decided_at"] >= pd.Timestamp(mature_before)).to_numpy(dtype=bool)
    young = young_all[has_score]
    # Only the columns a week's figures use, at the matured scored rows: the
    # whole frame (every input) copied here, and again per week and segment.
    take = has_score & ~young_all
    narrow = pd.DataFrame(
        {c: decisions[c].array[take] for c in ("transaction_id", "decided_at", *SEGMENTS)}
    )
    narrow["score"] = score[take]
    joined = narrow.merge(labels, on="transaction_id", how="inner")
    del narrow
    band = tuple(card["review_band"])
    threshold = float(card["threshold"])
    weeks: list[dict[str, Any]] = []
    if len(joined):
        y_all = joined["label"].to_numpy(dtype="int64")
        p_all = joined["score"].to_numpy(dtype="float64")
        segment_keys = {s: joined[s].astype("string").fillna("?").to_numpy() for s in SEGMENTS}
        when = joined["decided_at"].dt.tz_convert("UTC").dt.tz_localize(None)
        week = when.dt.to_period("W-SUN").dt.start_time.to_numpy()
        for period, rows in groups(week):
            y, p = y_all[rows], p_all[rows]
            entry = {
                "week": pd.Timestamp(period).date().isoformat(),
                **_summary(y, p, threshold, cfg.min_week_rows, cfg.min_week_frauds),
                "ece": ece(y, p, cfg.calibration_bins) if len(y) else None,
                "observed_over_expected": observed_over_expected(y, p),
                "bands": score_bands(y, p, (float(band[0]), float(band[1]))),
                "calibration": calibration_table(y, p, cfg.calibration_bins),
                "segments": _segments(
                    y, p, {s: k[rows] for s, k in segment_keys.items()}, threshold, cfg
                ),
            }
            if days is not None:
                first = pd.Timestamp(period).date()
                covered = sum(days[0] <= first + timedelta(i) <= days[1] for i in range(7))
                entry["days_in_window"] = covered
                if covered < 7 and entry["judged"]:
                    entry["judged"] = False
                    entry["note"] = f"not judged: {covered} of its 7 days in the window"
            weeks.append(entry)
    return {
        "mature_before": mature_before.isoformat(),
        "decisions_scored": int(has_score.sum()),
        "pending_maturity": int(young.sum()),
        "matured_without_label": int((~young).sum() - len(joined)),
        "baseline": base,
        "weeks": weeks,
    }


def _segments(
    y: np.ndarray,
    p: np.ndarray,
    keys: dict[str, np.ndarray],
    threshold: float,
    cfg: MonitorSettings,
) -> dict[str, Any]:
    """A week's figures per value of each segment (its missing values as ``?``)."""
    out: dict[str, Any] = {}
    for seg, values_of in keys.items():
        values: dict[str, Any] = {}
        for key, rows in groups(values_of):
            values[str(key)] = _summary(
                y[rows], p[rows], threshold, cfg.min_segment_rows, cfg.min_segment_frauds
            )
        out[seg] = values
    return out


def alerts(perf: dict[str, Any], cfg: MonitorSettings) -> Iterable[dict[str, Any]]:
    """PR-AUC drop, ECE rise and observed/expected off by a factor; judged weeks only."""
    base = perf["baseline"]
    ref_pr, ref_ece, ref_oe = base["pr_auc"], base["ece"], base["observed_over_expected"]
    for w in perf["weeks"]:
        if not w["judged"]:
            continue
        if ref_pr is not None and w["pr_auc"] is not None:
            floor = (1 - cfg.pr_auc_drop) * ref_pr
            if w["pr_auc"] < floor:
                yield alert("pr_auc_drop", "model", w["pr_auc"], floor, w["week"])
        if ref_ece is not None and w["ece"] is not None:
            ceiling = ref_ece + cfg.ece_rise
            if w["ece"] > ceiling:
                yield alert("calibration", "ece", w["ece"], ceiling, w["week"])
        oe = w["observed_over_expected"]
        if ref_oe and oe is not None:
            factor = max(oe / ref_oe, ref_oe / oe) if oe > 0 else float("inf")
            if factor > cfg.calibration_factor:
                value = oe / ref_oe
                yield alert(
                    "calibration", "observed/expected", value, cfg.calibration_factor, w["week"]
                )
        for seg, values in w["segments"].items():
            for key, s in values.items():
                if s["judged"] and ref_pr is not None and s["pr_auc"] is not None:
                    floor = (1 - cfg.pr_auc_drop) * ref_pr
                    if s["pr_auc"] < floor:
                        yield alert(
                            "segment_pr_auc_drop", f"{seg}={key}", s["pr_auc"], floor, w["week"]
                        )
