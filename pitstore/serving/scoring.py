"""Pure scoring: feature values + a loaded model -> score, decision, reasons.

No I/O here. ``model`` is anything with ``predict_proba(DataFrame)`` (the
registry's ``LoadedModel``) and ``card`` is its model card.

Reasons are the inputs that raised the fraud score most, with their value,
the training median and the value's percentile among the training rows (the
card's ``reference``, written by ``pitstore train``).

- The production model (``models.fast_model.FastModel``): each input's exact
  TreeSHAP contribution (path-dependent, ``models.contributions``) to the
  booster's raw log-odds ``t``; ``expected_value + sum(contributions) == t``,
  and the calibrated probability (the score) is a strictly increasing map of
  ``t`` (``explanation.calibration_increasing``), so a positive contribution
  raised the score. Method ``tree_shap_path_dependent``, unit ``log_odds``.
- Any other model: the score change when one input alone is set to its
  training median (method ``median_substitution``, unit ``probability``; not
  additive). Inputs without a median are not ranked.

Both are deterministic, so ``pitstore explain`` recomputes them from the log.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pitstore.core.request_features import account_30d_mean_column, request_time_features
from pitstore.core.spec import FeatureService, split_feature_column, view_by_name
from pitstore.models.fast_model import substitution_matrix

APPROVE, REVIEW, DECLINE = "approve", "review", "decline"
TOP_REASONS = 3
TREE_SHAP, SUBSTITUTION = "tree_shap_path_dependent", "median_substitution"
# Contributions this close to zero are rounding, not a push either way.
_NOISE = 1e-12


class Model(Protocol):
    card: dict[str, Any]
    feature_columns: list[str]

    def predict_proba(self, frame: pd.DataFrame) -> Any: ...


@dataclass(frozen=True)
class Reason:
    feature: str
    value: float | None
    typical: float | None  # the training median; None when the card has none
    percentile: float | None  # % of training rows at or below ``value``
    contribution: float  # see the module docstring for its unit
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "value": self.value,
            "typical": self.typical,
            "percentile": self.percentile,
            "contribution": round(self.contribution, 6),
            "text": self.text,
        }


@dataclass(frozen=True)
class ModelScore:
    score: float
    decision: str
    reasons: list[Reason]
    model_input: dict[str, float]
    # method, unit, and for TreeSHAP the raw score and expected value
    explanation: dict[str, Any]


def request_features(
    txn: Mapping[str, object], feast_values: Mapping[str, Any], service: FeatureService
) -> dict[str, float]:
    """Training's own request-time features, given the account mean as served."""
    name = account_30d_mean_column(service)
    mean = feast_values.get(name) if name else None
    return request_time_features(txn, None if mean is None else float(mean))


def model_input(
    columns: Sequence[str], feast_values: Mapping[str, Any], req_values: Mapping[str, float]
) -> dict[str, float]:
    """The model's input row, in the card's column order. Every column must be known."""
    row: dict[str, float] = {}
    for col in columns:
        value = req_values[col] if col in req_values else feast_values.get(col)
        if value is None:
            raise KeyError(col)
        row[col] = float(value)
    return row


def decide(score: float, card: Mapping[str, Any]) -> str:
    """score >= high -> decline; low <= score < high -> review; else approve."""
    low, high = review_band(card)
    if score >= high:
        return DECLINE
    if score >= low:
        return REVIEW
    return APPROVE


def review_band(card: Mapping[str, Any]) -> tuple[float, float]:
    band = card.get("review_band")
    if band:
        return float(band[0]), float(band[1])
    threshold = float(card["threshold"])
    return threshold, threshold


@dataclass(frozen=True)
class Reference:
    """The training rows' median and quantiles (0..100) per input, from the card."""

    medians: Mapping[str, float | None]
    quantiles: Mapping[str, Sequence[float] | None]

    def percentile(self, column: str, value: float) -> float | None:
        """About what % of training rows had ``column`` at or below ``value``."""
        q = self.quantiles.get(column)
        if not q:
            return None
        right = bisect.bisect_right(q, value)  # quantiles at or below the value
        if right == 0:
            return 0.0
        if right == len(q) or q[right] == q[right - 1]:
            return float(right - 1)
        # between two distinct quantiles: interpolate (101 quantiles: 1 point apart)
        step = 100.0 / (len(q) - 1)
        frac = (value - q[right - 1]) / (q[right] - q[right - 1])
        return round((right - 1 + frac) * step, 1)


def reference(card: Mapping[str, Any]) -> Reference:
    """The card's training reference (empty for a card written without one)."""
    ref = card.get("reference")
    if not isinstance(ref, Mapping):
        return Reference({}, {})
    return Reference(ref.get("medians") or {}, ref.get("quantiles") or {})


def score_row(model: Model, row: Mapping[str, float], reasons_for: str = "all") -> ModelScore:
    """Score one input row and explain it.

    ``reasons_for="adverse"`` computes the exact contributions only for review
    and decline decisions: they are what a customer or a reviewer is owed, and
    TreeSHAP costs ~3x the score itself. ``"decline"`` computes them for
    declines only (pre-screening's adverse action: see ``serving.prescreen``).
    The reasons left out stay exact and reproducible on demand (``pitstore
    explain`` recomputes them from the log).
    """
    columns = list(model.feature_columns)
    ref = reference(model.card)
    base = np.array([row[c] for c in columns], dtype="float64")
    explain = getattr(model, "score_and_contributions", None)
    if explain is not None:  # the production trees: exact TreeSHAP (models.contributions)
        explanation: dict[str, Any] = {"method": TREE_SHAP, "unit": "log_odds"}
        if reasons_for in ("adverse", "decline"):
            score, raw = model.score_raw(base)  # type: ignore[attr-defined]
            decision = decide(score, model.card)
            if decision == APPROVE or (decision == REVIEW and reasons_for == "decline"):
                explanation.update(raw_score=raw, computed=False)
                return ModelScore(score, decision, [], dict(row), explanation)
        score, raw, phi = explain(base)
        explanation.update(
            raw_score=raw,
            expected_value=model.expected_value,  # type: ignore[attr-defined]
            calibration_increasing=model.calibration_increasing,  # type: ignore[attr-defined]
        )
        contributions = phi.tolist()
    else:
        score, contributions = _substitution(model, columns, base, ref)
        explanation = {"method": SUBSTITUTION, "unit": "probability"}
    if not math.isfinite(score):
        raise ValueError(f"model returned a non-finite score {score!r}")
    return ModelScore(
        score=score,
        decision=decide(score, model.card),
        reasons=top_reasons(columns, contributions, row, ref),
        model_input=dict(row),
        explanation=explanation,
    )


def _substitution(
    model: Model, columns: list[str], base: np.ndarray, ref: Reference
) -> tuple[float, list[float]]:
    """The score, and per input its change when set to the training median
    (one predict_proba call over the request and every substitution)."""
    medians = [ref.medians.get(c) for c in columns]
    refs = np.array([base[i] if m is None else m for i, m in enumerate(medians)], dtype="float64")
    frame = pd.DataFrame(substitution_matrix(base, refs), columns=columns)
    proba = np.asarray(model.predict_proba(frame), dtype="float64")
    probs = proba[:, 1] if proba.ndim == 2 else proba
    score = float(probs[0])
    return score, [score - float(p) for p in probs[1:]]


def top_reasons(
    columns: Sequence[str],
    contributions: Sequence[float],
    row: Mapping[str, float],
    ref: Reference,
    k: int = TOP_REASONS,
) -> list[Reason]:
    """The ``k`` inputs that raised the score most (none if nothing raised it)."""
    raised = [(-c, col) for col, c in zip(columns, contributions, strict=True) if c > _NOISE]
    out = []
    for neg, col in sorted(raised)[:k]:
        value = row.get(col)
        if value is not None and math.isnan(value):
            value = None  # unknown to the model (NaN): unknown in the words and the log
        typical = ref.medians.get(col)
        pct = None if value is None else ref.percentile(col, value)
        out.append(Reason(col, value, typical, pct, -neg, describe(col, value, typical, pct)))
    return out


# --- analyst wording ----------------------------------------------------------


def _money(minor: float) -> str:
    return f"{minor / 100:,.2f}"


def _fmt(feature_kind: str, value: float | None) -> str:
    if value is None:
        return "unknown"
    if feature_kind == "money":
        return _money(value)
    if feature_kind == "share":
        return f"{value:.0%}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


_REQUEST_WORDS = {
    "amount": lambda v: f"Amount {_money(v)}",
    "amount_vs_30d_mean": lambda v: (
        "No 30-day spending history to compare the amount with"
        if v == 0
        else f"Amount is {v:.1f}x the account's 30-day average"
    ),
    "hour_of_day": lambda v: f"Made at {int(v):02d}:00 UTC",
    "is_foreign": lambda v: "Merchant is abroad" if v else "Merchant is in the home country",
    "is_card_not_present": lambda v: (
        "Card not present (online / phone)" if v else "Card present at the terminal"
    ),
    "is_foreign_currency": lambda v: (
        "Charged in a foreign currency" if v else "Charged in the home currency"
    ),
}
# How the training median reads for a request feature (the flags: a share).
_REQUEST_KIND = {"amount": "money", "amount_vs_30d_mean": "ratio", "hour_of_day": "hour"}


def _typical(kind: str, typical: float | None, percentile: float | None) -> str:
    """'(typical 3; 97% of training rows at or below)', or why there is no reference."""
    if typical is None:
        return "(no training reference)"
    shown = (
        f"{typical:.1f}x"
        if kind == "ratio"
        else f"{int(typical):02d}:00"
        if kind == "hour"
        else _fmt(kind, typical)
    )
    where = "" if percentile is None else f"; {percentile:g}% of training rows at or below"
    return f"(typical {shown}{where})"


# Pre-screening's request features (``core.credit_request``); None = unknown.
_CREDIT_WORDS = {
    "loan_amount": ("Loan amount", "money"),
    "term_months": ("Term in months", "number"),
    "monthly_payment": ("Monthly repayment of the new loan", "money"),
    "stated_income": ("Stated annual income", "money"),
    "employment_months": ("Months in the current employment", "number"),
    "applicant_age": ("Applicant's age", "number"),
    "months_since_last_default": ("Months since the last default on file", "number"),
    "debt_to_income": ("Debt repayments with the new loan, as a share of monthly income", "share"),
    "payment_to_income": ("The new loan's repayment, as a share of monthly income", "share"),
    "outflow_inflow_ratio": ("Money out over money in, last 90 days", "ratio"),
}
_CREDIT_UNKNOWN = {
    "months_since_last_default": "No default on file",
    "outflow_inflow_ratio": "No money in or out of the account in the last 90 days",
}


def describe(
    column: str, value: float | None, typical: float | None, percentile: float | None
) -> str:
    """One line an analyst reads, e.g. 'Number of transactions over the last
    1h on this account: 9 (typical 1; 99% of training rows at or below)'."""
    if column in _CREDIT_WORDS:
        label, unit = _CREDIT_WORDS[column]
        if value is None:
            unknown = _CREDIT_UNKNOWN.get(column, f"{label}: unknown")
            return f"{unknown} {_typical(unit, typical, None)}"
        shown = f"{value:.2f}x" if unit == "ratio" else _fmt(unit, value)
        return f"{label}: {shown} {_typical(unit, typical, percentile)}"
    if column in _REQUEST_WORDS:
        words = _REQUEST_WORDS[column](value or 0.0)
        kind = _REQUEST_KIND.get(column)
        if kind is None:  # a yes/no flag: the median is the usual answer
            return words if typical is None else f"{words} (typical: {'yes' if typical else 'no'})"
        return f"{words} {_typical(kind, typical, percentile)}"
    wording = _wording(column)
    if wording is None:
        return f"{column} = {_fmt('number', value)} {_typical('number', typical, percentile)}"
    prefix, kind = wording
    return f"{prefix}: {_fmt(kind, value)} {_typical(kind, typical, percentile)}"


@functools.cache  # the spec is static: one lookup per column, not per request
def _wording(column: str) -> tuple[str, str] | None:
    """("<feature description> on this <entity>", value kind) for a Feast column."""
    parts = split_feature_column(column)
    view_name, feature_name = parts or ("", "")
    try:
        view = view_by_name(view_name) if parts else None
    except KeyError:
        view = None
    feature = next((f for f in view.features if f.name == feature_name), None) if view else None
    if view is None or feature is None:
        return None
    agg = feature.aggregation
    # the ledger's money inputs (inflow_amount, balance, ...) read as money too
    ledger_money = agg.input is not None and (
        agg.input.endswith("_amount") or agg.input == "balance"
    )
    kind = (
        "money"
        if (agg.input == "amount" and agg.function in ("sum", "max", "mean"))
        or (ledger_money and agg.function in ("sum", "max", "mean", "stddev"))
        else "share"
        if agg.function in ("share", "fraud_rate")
        else "number"
    )
    return f"{feature.description} on this {view.entity.name}", kind
