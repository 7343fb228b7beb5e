"""The monitor job: one model's logged decisions in a window against its reference.

``monitor(...)`` returns the JSON-ready document; ``alerts`` in it decide the
exit code (any alert: 1). I/O is at the edges: the audit log and run summaries
are read here, labels through ``performance.matured_labels``, the reference
through ``reference.load_reference``; everything else is pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pitstore.core.config import Settings
from pitstore.models.registry import LoadedModel
from pitstore.monitor import challenger, performance, quality
from pitstore.monitor.alerts import alert, ordered
from pitstore.monitor.drift import FeatureDrift, bin_counts, bin_edges, feature_drift
from pitstore.monitor.grouping import groups
from pitstore.monitor.reference import Reference, load_reference, maturity
from pitstore.monitor.settings import MonitorSettings
from pitstore.serving.audit import iter_records
from pitstore.serving.scoring import review_band
from pitstore.training.labels import LabelError
from pitstore.training.model import SEGMENTS

DECISIONS = ("approve", "review", "decline")
SHADOW = ("shadow_version", "shadow_score", "shadow_decision", "shadow_error")


class MonitorError(ValueError):
    """A window or model the monitor cannot report on (a usage error)."""


@dataclass(frozen=True)
class Window:
    start: date  # first day, inclusive
    end: date  # last day, inclusive

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise MonitorError(f"--to {self.end} is before --from {self.start}")

    @property
    def days(self) -> list[str]:
        n = (self.end - self.start).days + 1
        return [(self.start + timedelta(days=i)).isoformat() for i in range(n)]

    @property
    def start_ts(self) -> datetime:
        return datetime.combine(self.start, time(), UTC)

    @property
    def report_ts(self) -> datetime:
        """The report date: the end of the last day (labels known by then count)."""
        return datetime.combine(self.end + timedelta(days=1), time(), UTC)


META = ("day", "decided_at", "transaction_id", "decision", "score", "fallback", *SHADOW)
CHUNK = 65_536  # records whose inputs are gathered before becoming one float64 block


def decision_columns(columns: list[str], shadow: bool = True) -> list[str]:
    """``load_decisions``' columns (``shadow``: with the challenger's, which only it reads)."""
    meta = META if shadow else tuple(c for c in META if c not in SHADOW)
    return [*meta, *SEGMENTS, *columns]


def load_decisions(
    audit_dir: Path, window: Window, version: str, columns: list[str]
) -> pd.DataFrame:
    """One row per logged decision of ``version`` in the window (inputs NaN on fallbacks).

    Streamed into columns: each record's fields go to per-column lists and its
    inputs to float64 blocks; a list of per-record dicts held every value as
    a boxed Python object (5 GB for a million decisions)."""
    meta: dict[str, list[Any]] = {k: [] for k in (*META, *SEGMENTS)}
    blocks: list[np.ndarray] = []
    pending: list[list[Any]] = []  # inputs of records not yet in a block (None -> NaN)
    one: dict[Any, Any] = {}  # one object per distinct label-like string (decision, segments)
    for day in window.days:
        for rec in iter_records(audit_dir, day):
            if rec.get("model_version") != version:
                continue
            req = rec.get("request") or {}
            shadow = rec.get("shadow") or {}
            decision = rec.get("decision")
            row = (
                day,
                rec["decided_at"],
                rec.get("transaction_id"),
                one.setdefault(decision, decision),
                rec.get("score"),
                bool(rec.get("fallback")),
                shadow.get("model_version"),
                shadow.get("score"),
                shadow.get("decision"),
                shadow.get("error"),
                *[one.setdefault(v, v) for v in map(req.get, SEGMENTS)],
            )
            for column, v in zip(meta.values(), row, strict=True):
                column.append(v)
            pending.append(list(map((rec.get("model_input") or {}).get, columns)))
            if len(pending) == CHUNK:
                blocks.append(np.array(pending, dtype="float64"))
                pending.clear()
    blocks.append(np.array(pending, dtype="float64").reshape(len(pending), len(columns)))
    inputs_block = np.concatenate(blocks)
    del blocks, pending
    df = pd.DataFrame(meta, columns=[*META, *SEGMENTS])
    del meta
    # ISO8601: a decision stamped on a whole second has no fraction (isoformat)
    df["decided_at"] = pd.to_datetime(df["decided_at"], utc=True, format="ISO8601")
    df["score"] = df["score"].astype("float64")
    df["shadow_score"] = df["shadow_score"].astype("float64")
    df["fallback"] = df["fallback"].astype(bool)
    inputs_frame = pd.DataFrame(inputs_block, columns=columns, copy=False)
    return pd.concat([df, inputs_frame], axis=1)


def _first_day(daily: dict[str, float | None], level: float, fallback: str) -> str:
    """The first day whose own PSI reached ``level``: when the shift began."""
    for day, psi in sorted(daily.items()):
        if psi is not None and psi >= level:
            return day
    return fallback


def _judge(
    kind: str,
    subject: str,
    window: FeatureDrift,
    daily: dict[str, float | None],
    cfg: MonitorSettings,
    last_day: str,
    alerts: list[dict[str, Any]],
    warnings: list[dict[str, Any]],
) -> None:
    """Alerts on the window's PSI (a week averages out weekday patterns); a day
    crossing a level on its own is a warning."""
    if window.judged and window.psi is not None:
        if window.psi >= cfg.psi_alert:
            day = _first_day(daily, cfg.psi_alert, last_day)
            alerts.append(alert(kind, subject, window.psi, cfg.psi_alert, day))
            return
        if window.psi >= cfg.psi_warn:
            day = _first_day(daily, cfg.psi_warn, last_day)
            warnings.append(alert(kind, subject, window.psi, cfg.psi_warn, day))
            return
    for day, psi in sorted(daily.items()):
        if psi is not None and psi >= cfg.psi_alert:
            warnings.append(alert(kind, subject, psi, cfg.psi_alert, day))


def input_drift(
    ref: Reference,
    decisions: pd.DataFrame,
    columns: list[str],
    cfg: MonitorSettings,
    last_day: str,
    scored: np.ndarray | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Per input, over the window and by day: PSI and missing rate; alerts, warnings.

    ``columns``: the service's model inputs; ``scored``: the rows whose inputs
    reached the model (default: those not on the fallback path)."""
    alerts: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    # Column by column on the scored rows' positions: no copy of the whole frame.
    if scored is None:
        scored = ~decisions["fallback"].to_numpy(dtype=bool)
    window_out = []
    day_rows = groups(decisions["day"].to_numpy()[scored])  # each day's positions, found once
    by_day: dict[str, list[dict[str, Any]]] = {str(d): [] for d, _ in day_rows}
    for c in columns:
        ref_values = ref.inputs(c)
        edges = bin_edges(ref_values, cfg.psi_bins)
        ref_counts = bin_counts(ref_values, edges)  # the same for the window and every day
        values = decisions[c].to_numpy(dtype="float64")[scored]

        drift = partial(
            feature_drift,
            c,
            ref_values,
            edges=edges,
            bins=cfg.psi_bins,
            min_current=cfg.min_rows,
            ref_counts=ref_counts,
        )
        whole = drift(values)
        window_out.append(whole.as_dict())
        daily: dict[str, float | None] = {}
        for day, rows in day_rows:
            d = drift(values[rows])
            by_day[str(day)].append(d.as_dict())
            daily[str(day)] = d.psi if d.judged else None
            if d.missing_change is not None and d.missing_change > cfg.missing_rise:
                rise = d.missing_change
                alerts.append(alert("missing_rise", c, rise, cfg.missing_rise, str(day)))
        _judge("input_drift", c, whole, daily, cfg, last_day, alerts, warnings)
    return (
        {
            "window": sorted(window_out, key=lambda r: -(r["psi"] or 0)),
            "days": {d: sorted(v, key=lambda r: -(r["psi"] or 0)) for d, v in by_day.items()},
        },
        alerts,
        warnings,
    )


def reference_mix(
    ref: Reference, card: dict[str, Any], names: tuple[str, str, str] = DECISIONS
) -> dict[str, float]:
    """The decision mix the reference's scores would have had (``scoring.decide``'s
    bands), named ``names`` (the service's words for approve / review / decline)."""
    low, high = review_band(card)
    scores = ref.scores
    n = len(scores) or 1
    declined = int((scores >= high).sum())
    reviewed = int(((scores >= low) & (scores < high)).sum())
    approved = len(scores) - declined - reviewed
    return dict(zip(names, (approved / n, reviewed / n, declined / n), strict=True))


def prediction_drift(
    ref: Reference,
    decisions: pd.DataFrame,
    card: dict[str, Any],
    cfg: MonitorSettings,
    last_day: str,
    names: tuple[str, str, str] = DECISIONS,
    mixed: np.ndarray | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Score PSI and decision mix (window and by day), fallback rate by day.

    ``names``: the service's decisions; ``mixed``: the rows the mix counts
    (default all; credit counts the model's decisions only, as its reference)."""
    alerts: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    ref_mix = reference_mix(ref, card, names)
    ref_scores = ref.scores
    edges = bin_edges(ref_scores, cfg.psi_bins)
    ref_counts = bin_counts(ref_scores, edges)

    # Arrays of the four columns used, grouped by day once: no per-day frame copies.
    score = decisions["score"].to_numpy(dtype="float64")
    decision = decisions["decision"].to_numpy()
    fallback = decisions["fallback"].to_numpy(dtype=bool)

    def score_drift(rows: slice | np.ndarray) -> tuple[FeatureDrift, np.ndarray]:
        scores = score[rows]
        scores = scores[~np.isnan(scores)]
        d = feature_drift(
            "score", ref_scores, scores, edges, cfg.psi_bins, cfg.min_rows, ref_counts
        )
        return d, scores

    def mix(rows: slice | np.ndarray) -> dict[str, float]:
        part = decision[rows] if mixed is None else decision[rows][mixed[rows]]
        return {k: float((part == k).mean()) if len(part) else 0.0 for k in names}

    days, daily = [], {}
    for day, rows in groups(decisions["day"].to_numpy()):
        d = str(day)
        sd, scores = score_drift(rows)
        share = float(fallback[rows].mean())
        daily[d] = sd.psi if sd.judged else None
        days.append(
            {
                "day": d,
                "decisions": len(rows),
                "fallback_rate": share,
                "score": sd.as_dict(),
                "score_histogram": bin_counts(scores, edges).tolist(),
                "mix": mix(rows),
            }
        )
        if len(rows) >= cfg.min_rows and share > cfg.fallback_rate:
            alerts.append(alert("fallback_rate", "fallback", share, cfg.fallback_rate, d))
    everything = slice(None)
    whole, scores = score_drift(everything)
    _judge("prediction_drift", "score", whole, daily, cfg, last_day, alerts, warnings)
    window_mix = mix(everything)
    summary = {
        "reference_mix": ref_mix,
        "window_mix": window_mix,
        "score": whole.as_dict(),
        "score_edges": edges.tolist(),
        "reference_histogram": bin_counts(ref.scores, edges).tolist(),
        "window_histogram": bin_counts(scores, edges).tolist(),
        "days": days,
    }
    return summary, alerts, warnings


def monitor(
    settings: Settings,
    audit_dir: Path,
    model: LoadedModel,
    window: Window,
    cfg: MonitorSettings,
) -> dict[str, Any]:
    card = model.card
    columns = list(model.feature_columns)
    ref = load_reference(settings, model)
    decisions = load_decisions(audit_dir, window, model.version, columns)
    if decisions.empty:
        # nothing to compare: most likely the wrong audit dir, model or days
        raise MonitorError(
            f"no logged decisions of model {model.version} from {window.start} to "
            f"{window.end} under {audit_dir}"
        )
    last_day = window.end.isoformat()
    inputs, alerts, warnings = input_drift(ref, decisions, columns, cfg, last_day)
    prediction, p_alerts, p_warnings = prediction_drift(ref, decisions, card, cfg, last_day)
    alerts += p_alerts
    warnings += p_warnings
    mature_before = window.report_ts - maturity(card)
    compared = None
    try:
        labels = performance.matured_labels(
            settings, window.report_ts, maturity(card), window.start_ts - timedelta(days=1)
        )
        base = performance.baseline(card, ref.labels, ref.scores, cfg)
        days = (window.start, window.end)
        perf = performance.weekly(decisions, labels, card, base, mature_before, cfg, days)
        alerts += performance.alerts(perf, cfg)
        compared = challenger.compare(settings, decisions, labels, card, mature_before, cfg)
    except LabelError as exc:
        # drift is still worth reporting when the labels cannot be read yet
        perf = {"unavailable": str(exc), "weeks": []}
    runs, previous = quality.runs_in_window(settings, window.start_ts, window.report_ts)
    alerts += quality.alerts(runs, previous, cfg)
    doc: dict[str, Any] = {
        "model_version": model.version,
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
        "performance": perf,
        "data_quality": {"previous_run": previous, "runs": runs},
    }
    if compared is not None:  # only when the window's records carry a shadow verdict
        doc["challenger"] = compared
    return doc


def psi_table(doc: dict[str, Any]) -> pd.DataFrame:
    """Day x input PSI (NaN where not judged): what the HTML report plots."""
    rows = {
        day: {r["feature"]: (r["psi"] if r["judged"] else np.nan) for r in feats}
        for day, feats in doc["input_drift"]["days"].items()
    }
    return pd.DataFrame.from_dict(rows, orient="index").sort_index()
