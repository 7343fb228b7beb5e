"""The monitor for the credit PD model: ``/v1/prescreen`` records against its training frame.

The same measures as fraud's, with credit's words: input drift per model input
and the PD's PSI (``report.input_drift`` / ``report.prediction_drift``, on the
rows the model scored: a rule decline never reaches it), the pre-qualified /
refer / decline mix of the model's decisions, the share of rule declines
(against the share the hard rules decline in the reference frame), and the
refer rates (a refer for missing or stale features is credit's fallback).

Performance waits for the labels: a default is known only 12 months after
the application, so a decision is judged once its application is older than
the card's maturity at the report date; before that the report says when the
first one matures rather than printing a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pitstore.core.config import Settings
from pitstore.core.offline_layout import EventsError, event_files
from pitstore.core.timeutil import from_us
from pitstore.models.registry import LoadedModel
from pitstore.monitor import quality
from pitstore.monitor.alerts import alert, ordered
from pitstore.monitor.grouping import groups
from pitstore.monitor.performance import observed_over_expected
from pitstore.monitor.reference import Reference, load_reference, maturity
from pitstore.monitor.report import MonitorError, Window, input_drift, prediction_drift
from pitstore.monitor.settings import MonitorSettings
from pitstore.serving.audit import iter_records
from pitstore.serving.credit_rules import DECISIONS, REFER
from pitstore.serving.prescreen import KIND
from pitstore.training.credit_labels import LABEL, credit_policy, credit_requests
from pitstore.training.labels import LabelError

META = ("day", "decided_at", "as_of", "application_id", "decision", "pd", "refer_reason")


def load_prescreens(
    audit_dir: Path, window: Window, version: str, columns: list[str]
) -> pd.DataFrame:
    """One row per pre-screen of ``version`` in the window: the record's fields,
    ``rule_declined``, ``fallback`` (referred for want of features or model) and
    the model input (NaN where the model was not reached)."""
    rows: list[tuple[Any, ...]] = []
    inputs: list[list[Any]] = []
    for day in window.days:
        for rec in iter_records(audit_dir, day):
            if rec.get("kind") != KIND or rec.get("model_version") != version:
                continue
            rows.append(
                (
                    day,
                    rec["decided_at"],
                    rec["as_of"],
                    rec.get("application_id"),
                    rec.get("decision"),
                    rec.get("pd"),
                    rec.get("refer_reason"),
                    bool(rec.get("rules_fired")),
                )
            )
            inputs.append(list(map((rec.get("model_input") or {}).get, columns)))
    df = pd.DataFrame(rows, columns=[*META, "rule_declined"])
    for c in ("decided_at", "as_of"):
        df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601")
    df["pd"] = df["pd"].astype("float64")
    df["fallback"] = df["refer_reason"].notna().to_numpy(dtype=bool)
    block = np.array(inputs, dtype="float64").reshape(len(inputs), len(columns))
    return pd.concat([df, pd.DataFrame(block, columns=columns)], axis=1)


def outcomes(
    ref: Reference, decisions: pd.DataFrame, cfg: MonitorSettings, last_day: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every decision's mix (rule declines and refers included), by day and over
    the window; the rule-decline share against the reference's."""
    ruled = ref.rule_declined
    ref_share = float(np.nanmean(ruled)) if ruled is not None and len(ruled) else None
    decision = decisions["decision"].to_numpy()
    rule = decisions["rule_declined"].to_numpy(dtype=bool)
    refer = decision == REFER
    fallback = decisions["fallback"].to_numpy(dtype=bool)

    def shares(rows: slice | np.ndarray) -> dict[str, Any]:
        n = len(decision[rows])
        mix = {k: float((decision[rows] == k).mean()) if n else 0.0 for k in DECISIONS}
        return {
            "decisions": n,
            "mix": mix,
            "rule_decline_share": float(rule[rows].mean()) if n else None,
            "refer_rate": float(refer[rows].mean()) if n else None,
            "refer_for_data_rate": float(fallback[rows].mean()) if n else None,
        }

    whole = shares(slice(None))
    alerts: list[dict[str, Any]] = []
    change = None
    if ref_share is not None and whole["rule_decline_share"] is not None:
        change = whole["rule_decline_share"] - ref_share
        if whole["decisions"] >= cfg.min_rows and abs(change) > cfg.decision_mix_change:
            alerts.append(
                alert(
                    "rule_declines", "rule_decline_share", change, cfg.decision_mix_change, last_day
                )
            )
    reasons = decisions["refer_reason"].dropna().value_counts()
    return (
        {
            **whole,
            "reference_rule_decline_share": ref_share,
            "rule_decline_change": change,
            "refer_reasons": {str(k): int(v) for k, v in reasons.items()},
            "days": [{"day": str(d), **shares(r)} for d, r in groups(decisions["day"].to_numpy())],
        },
        alerts,
    )


def performance(
    settings: Settings,
    decisions: pd.DataFrame,
    ref: Reference,
    card: dict[str, Any],
    window: Window,
    cfg: MonitorSettings,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The PD against the defaults known by the report date, on applications older
    than the maturity; before any is, ``verdict: None`` and when the first matures."""
    wait = maturity(card)
    mature_before = window.report_ts - wait
    scored = decisions[decisions["pd"].notna()]
    matured = scored[scored["as_of"] <= pd.Timestamp(mature_before)]
    out: dict[str, Any] = {
        "mature_before": mature_before.isoformat(),
        "maturity_days": wait.total_seconds() / 86400,
        "decisions_scored": int(len(scored)),
        "pending_maturity": int(len(scored) - len(matured)),
        "weeks": [],
    }
    if matured.empty:
        first = (scored["as_of"].min() + wait).date().isoformat() if len(scored) else None
        out["verdict"] = None
        out["note"] = (
            f"no verdict yet ({len(scored)} decisions, first matures on {first})"
            if first
            else "no verdict yet (no decision the model scored)"
        )
        return out, []
    # What the store knows by the report date: the newest completed run's
    # outcomes when the report date is later (the batch lags the serving day).
    try:
        newest = from_us(event_files(settings).watermark_us)
    except EventsError as exc:
        raise LabelError(str(exc)) from exc
    known_by = min(window.report_ts, newest)
    out["labels_known_by"] = known_by.isoformat()
    labels, _ = credit_requests(settings, credit_policy(known_by, wait))
    known = labels.select(["application_id", LABEL]).to_pandas()
    joined = matured.merge(known, on="application_id", how="inner")
    y = joined[LABEL].to_numpy(dtype="int64")
    p = joined["pd"].to_numpy(dtype="float64")
    defaults = int(y.sum())
    judged = len(y) >= cfg.min_week_rows and defaults >= cfg.min_week_frauds
    labelled = ~np.isnan(ref.labels)
    ref_oe = observed_over_expected(ref.labels[labelled], ref.scores[labelled])
    oe = observed_over_expected(y, p)
    verdict: dict[str, Any] = {
        "rows": int(len(y)),
        "matured_without_label": int(len(matured) - len(joined)),
        "defaults": defaults,
        "mean_pd": float(p.mean()) if len(p) else None,
        "default_rate": float(y.mean()) if len(y) else None,
        "observed_over_expected": oe,
        "reference_observed_over_expected": ref_oe,
        "gini": float(2 * roc_auc_score(y, p) - 1) if 0 < defaults < len(y) else None,
        "judged": judged,
    }
    if not judged:
        verdict["note"] = (
            f"not judged: fewer than {cfg.min_week_rows} matured decisions "
            f"or {cfg.min_week_frauds} defaults"
        )
    out["verdict"] = verdict
    alerts = []
    if judged and oe is not None and ref_oe:
        factor = max(oe / ref_oe, ref_oe / oe) if oe > 0 else float("inf")
        if factor > cfg.calibration_factor:
            day = window.end.isoformat()
            alerts.append(
                alert("calibration", "observed/expected", oe / ref_oe, cfg.calibration_factor, day)
            )
    return out, alerts


def monitor_credit(
    settings: Settings,
    audit_dir: Path,
    model: LoadedModel,
    window: Window,
    cfg: MonitorSettings,
) -> dict[str, Any]:
    """``report.monitor``'s document for a credit model (plus ``credit``)."""
    card = model.card
    columns = list(model.feature_columns)
    ref = load_reference(settings, model)
    decisions = load_prescreens(audit_dir, window, model.version, columns)
    if decisions.empty:
        raise MonitorError(
            f"no logged pre-screens of model {model.version} from {window.start} to "
            f"{window.end} under {audit_dir}"
        )
    last_day = window.end.isoformat()
    # the model's inputs and PD exist only where it scored (not rule declines, not refers)
    scored = decisions["pd"].notna().to_numpy(dtype=bool)
    inputs, alerts, warnings = input_drift(ref, decisions, columns, cfg, last_day, scored)
    prediction, p_alerts, p_warnings = prediction_drift(
        ref, decisions.rename(columns={"pd": "score"}), card, cfg, last_day, DECISIONS, scored
    )
    mix, m_alerts = outcomes(ref, decisions, cfg, last_day)
    alerts += p_alerts + m_alerts
    warnings += p_warnings
    try:
        perf, perf_alerts = performance(settings, decisions, ref, card, window, cfg)
        alerts += perf_alerts
    except LabelError as exc:
        # drift is still worth reporting when the outcomes cannot be read yet
        perf = {"unavailable": str(exc), "weeks": [], "verdict": None}
    runs, previous = quality.runs_in_window(settings, window.start_ts, window.report_ts)
    alerts += quality.alerts(runs, previous, cfg)
    return {
        "model_version": model.version,
        "service": card.get("service"),
        "window": {"from": window.start.isoformat(), "to": window.end.isoformat()},
        "report_date": window.report_ts.isoformat(),
        "reference": {
            "rows": len(ref.frame),
            "frame_fingerprint": ref.fingerprint,
            "matches_card": ref.matches_card,
            "cached": ref.cached,
        },
        "decisions": int(len(decisions)),
        "thresholds": cfg.model_dump(),
        "alerts": ordered(alerts),
        "warnings": ordered(warnings),
        "input_drift": inputs,
        "prediction_drift": prediction,
        "credit": mix,
        "performance": perf,
        "data_quality": {"previous_run": previous, "runs": runs},
    }
