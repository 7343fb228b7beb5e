"""Pure scoring: feature values + a loaded model -> score, decision, reasons.

No I/O here. ``model`` is anything with ``predict_proba(DataFrame)`` (the
registry's ``LoadedModel``) and ``card`` is its model card; if it also has
``predict_substitutions(base, refs)`` (``serving.fast_model.FastModel``), that
is used.

Reasons: for each model input, the score change when that input alone is
replaced by its *reference* value (the training median, from the model card)
— "how much did this value push the score, compared with a typical
transaction". One ``predict_proba`` call scores the request and all the
replacements together. Contributions are not additive (this is not SHAP), but
they are exact, model-agnostic and reproducible from the audit log.
"""

from __future__ import annotations

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
# Model-card keys that may hold the per-feature reference (training medians).
_REFERENCE_KEYS = ("feature_medians", "training_medians", "medians", "reference_values")


class Model(Protocol):
    card: dict[str, Any]
    feature_columns: list[str]

    def predict_proba(self, frame: pd.DataFrame) -> Any: ...


@dataclass(frozen=True)
class Reason:
    feature: str
    value: float | None
    typical: float
    contribution: float  # score(request) - score(request with this feature typical)
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "value": self.value,
            "typical": self.typical,
            "contribution": round(self.contribution, 6),
            "text": self.text,
        }


@dataclass(frozen=True)
class ModelScore:
    score: float
    decision: str
    reasons: list[Reason]
    model_input: dict[str, float]


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


def references(card: Mapping[str, Any], columns: Sequence[str]) -> dict[str, float]:
    """Each input's typical value (training median); 0.0 where the card has none."""
    for key in _REFERENCE_KEYS:
        ref = card.get(key)
        if isinstance(ref, Mapping):
            return {c: float(ref.get(c, 0.0)) for c in columns}
    return dict.fromkeys(columns, 0.0)


def score_row(model: Model, row: Mapping[str, float]) -> ModelScore:
    """Score one input row and explain it (one predict_proba call)."""
    columns = list(model.feature_columns)
    refs = references(model.card, columns)
    base = np.array([row[c] for c in columns], dtype="float64")
    ref_values = np.array([refs[c] for c in columns], dtype="float64")
    # The fast path (serving.fast_model) scores the request and its one-input
    # substitutions without building them; the same probabilities as
    # predict_proba over substitution_matrix, without a DataFrame round trip.
    predict_substitutions = getattr(model, "predict_substitutions", None)
    if predict_substitutions is not None:
        proba = np.asarray(predict_substitutions(base, ref_values), dtype="float64")
    else:
        matrix = substitution_matrix(base, ref_values)
        frame = pd.DataFrame(matrix, columns=columns)
        proba = np.asarray(model.predict_proba(frame), dtype="float64")
    probs = proba[:, 1] if proba.ndim == 2 else proba
    score = float(probs[0])
    if not math.isfinite(score):
        raise ValueError(f"model returned a non-finite score {score!r}")
    contributions = {col: score - float(probs[i + 1]) for i, col in enumerate(columns)}
    return ModelScore(
        score=score,
        decision=decide(score, model.card),
        reasons=top_reasons(contributions, row, refs),
        model_input=dict(row),
    )


def top_reasons(
    contributions: Mapping[str, float],
    row: Mapping[str, float],
    refs: Mapping[str, float],
    k: int = TOP_REASONS,
) -> list[Reason]:
    """The inputs that raised the score most; if none did, the ones that moved it most."""
    ranked = sorted(contributions.items(), key=lambda kv: (-kv[1], kv[0]))
    chosen = [(c, v) for c, v in ranked if v > 1e-9][:k]
    if not chosen:
        chosen = sorted(contributions.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:k]
    return [
        Reason(col, row.get(col), refs.get(col, 0.0), contrib, describe(col, row.get(col), refs))
        for col, contrib in chosen
    ]


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
    "amount": lambda v, t: f"Amount {_money(v)} (typical {_money(t)})",
    "amount_vs_30d_mean": lambda v, t: (
        "No 30-day spending history to compare the amount with"
        if v == 0
        else f"Amount is {v:.1f}x the account's 30-day average (typical {t:.1f}x)"
    ),
    "hour_of_day": lambda v, t: f"Made at {int(v):02d}:00 UTC (typical {int(t):02d}:00)",
    "is_foreign": lambda v, t: "Merchant is abroad" if v else "Merchant is in the home country",
    "is_card_not_present": lambda v, t: (
        "Card not present (online / phone)" if v else "Card present at the terminal"
    ),
    "is_foreign_currency": lambda v, t: (
        "Charged in a foreign currency" if v else "Charged in the home currency"
    ),
}


def describe(column: str, value: float | None, refs: Mapping[str, float]) -> str:
    """One line a fraud analyst reads, e.g. 'Transactions on this account over the
    last 1h: 9 (typical 0)'."""
    typical = refs.get(column, 0.0)
    if column in _REQUEST_WORDS:
        return _REQUEST_WORDS[column](value or 0.0, typical)
    wording = _wording(column)
    if wording is None:
        return f"{column} = {_fmt('number', value)} (typical {_fmt('number', typical)})"
    prefix, kind = wording
    return f"{prefix}: {_fmt(kind, value)} (typical {_fmt(kind, typical)})"


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
    kind = (
        "money"
        if agg.input == "amount" and agg.function in ("sum", "max", "mean")
        else "share"
        if agg.function in ("share", "fraud_rate")
        else "number"
    )
    return f"{feature.description} on this {view.entity.name}", kind
