"""End to end: fraud request rows -> training frame -> model artifact.

``build_fraud_frame`` and ``train_fraud`` are what ``pitstore training-frame
--labels-known-by`` and ``pitstore train`` run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pitstore.core.config import Settings
from pitstore.core.spec import spec_fingerprint
from pitstore.models.registry import new_version, now_utc, save_model
from pitstore.training.frames import FrameError, TrainingFrame, build_frame, resolve_service
from pitstore.training.labels import LabelPolicy, fraud_requests
from pitstore.training.manifest import code_version
from pitstore.training.model import (
    Costs,
    TrainResult,
    explanation_card,
    to_model_frame,
    train_and_evaluate,
)


def build_fraud_frame(
    settings: Settings,
    policy: LabelPolicy,
    service: str = "fraud_v1",
    mode: str = "as_known",
    engine: str = "duckdb",
    spark: object | None = None,
    compare_modes: bool = True,
) -> TrainingFrame:
    requests, label_audit = fraud_requests(settings, policy)
    return build_frame(
        settings,
        requests,
        service=service,
        mode=mode,
        engine=engine,
        spark=spark,
        compare_modes=compare_modes,
        extra_audit=label_audit,
    )


@dataclass
class TrainReport:
    version: str
    card: dict[str, Any]
    result: Any  # TrainResult (fraud) or credit_model.CreditResult (credit)
    frame: TrainingFrame
    comparison: dict[str, Any] | None = None


def code_label() -> str:
    cv = code_version()
    commit = (cv["git_commit"] or "nogit")[:12]
    return f"{commit}+src.{cv['training_sources_sha256'][:12]}"


def train_fraud(
    settings: Settings,
    policy: LabelPolicy,
    service: str = "fraud_v1",
    costs: Costs | None = None,
    valid_share: float = 0.3,
    compare_modes: bool = False,
    save: bool = True,
    now: datetime | None = None,
) -> TrainReport:
    """Train on an ``as_known`` frame; optionally also on ``as_of`` for comparison.

    The comparison scores the same out-of-time rows with ``as_known`` features
    -- what serving sees -- so a model trained on leaked (restated) values is
    judged on the values it will actually get.
    """
    svc = resolve_service(service)
    frame = build_fraud_frame(settings, policy, service=svc.name, mode="as_known")
    df = to_model_frame(frame.table, svc)
    result = train_and_evaluate(df, svc, costs, valid_share)
    comparison = None
    if compare_modes:
        as_of = build_fraud_frame(
            settings, policy, service=svc.name, mode="as_of", compare_modes=False
        )
        df_of = to_model_frame(as_of.table, svc)
        leaky = train_and_evaluate(df_of, svc, costs, valid_share, holdout=df)
        leaky_self = train_and_evaluate(df_of, svc, costs, valid_share)
        keys = ("pr_auc", "roc_auc", "brier", "precision_at_threshold", "recall_at_threshold")
        comparison = {
            "holdout": "out-of-time rows, scored with as_known features (what serving sees)",
            "as_known": {k: result.metrics.get(k) for k in keys},
            "as_of": {k: leaky.metrics.get(k) for k in keys},
            "as_of_on_its_own_frame": {k: leaky_self.metrics.get(k) for k in keys},
            "values_as_of_changes": frame.audit.get("vs_as_of", {}).get("values_changed"),
        }
    card = _card(
        svc, result, frame.manifest["fingerprint"], frame.audit, policy.describe(), comparison
    )
    card["label_cutoff"] = policy.known_by.isoformat()
    return _register(settings, card, result, frame, comparison, save, now)


# What a frame must carry to train the fraud model on it (beyond the features).
TRAINING_COLUMNS = ("transaction_id", "ts", "label", "amount", "country", "channel", "currency")


def train_on_frame(
    settings: Settings,
    frame: TrainingFrame,
    costs: Costs | None = None,
    valid_share: float = 0.3,
    save: bool = True,
    now: datetime | None = None,
) -> TrainReport:
    """Train and register a model on a frame you built (e.g. with your own labels).

    The frame must be ``as_known`` (what serving sees) and carry a ``label``
    column (1 fraud, 0 genuine, null unlabelled) and the transaction columns the
    request-time features need; its manifest's fingerprint goes in the card.
    """
    if frame.audit.get("mode") != "as_known":
        raise FrameError("train on an as_known frame: as_of values are not what serving sees")
    missing = [c for c in TRAINING_COLUMNS if c not in frame.table.column_names]
    if missing:
        raise FrameError(
            f"the frame lacks {missing}: a training frame needs {list(TRAINING_COLUMNS)} "
            "(a `training-frame --labels-known-by` frame has them)"
        )
    svc = resolve_service(str(frame.audit["service"]))
    result = train_and_evaluate(to_model_frame(frame.table, svc), svc, costs, valid_share)
    label_info = {"source": "the frame's own label column"}
    card = _card(svc, result, frame.manifest["fingerprint"], frame.audit, label_info, None)
    # When were the labels known? The frame's own policy says, if it was built
    # from pitstore's labels; a frame with labels of your own does not know.
    card["label_cutoff"] = (frame.audit.get("labels") or {}).get("labels_known_by")
    return _register(settings, card, result, frame, None, save, now)


def _card(
    svc: Any,
    result: TrainResult,
    fingerprint: str,
    audit: dict[str, Any],
    label_policy: dict[str, Any],
    comparison: dict[str, Any] | None,
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "service": "fraud_v1",
        "feature_service": svc.name,
        "spec_fingerprint": spec_fingerprint(svc.views),
        "frame_fingerprint": fingerprint,
        "mode": "as_known",
        "training_window": {"from": result.split["train_from"], "to": result.split["train_to"]},
        "validation_window": {"from": result.split["valid_from"], "to": result.split["valid_to"]},
        "split": result.split,
        "label_policy": label_policy,
        "metrics": result.metrics,
        "threshold": result.threshold,
        "review_band": result.review_band,
        "feature_columns": result.columns,
        "code_version": code_label(),
        "model": "HistGradientBoostingClassifier(class_weight=balanced) + sigmoid calibration",
        # What serving's reasons rank against, and what their contributions mean.
        "reference": result.reference,
        "explanation": explanation_card(result.model),
        "frame_audit": {k: audit[k] for k in ("rows", "leaks", "vs_as_of", "labels") if k in audit},
    }
    if comparison:
        card["mode_comparison"] = comparison
    return card


def _register(
    settings: Settings,
    card: dict[str, Any],
    result: TrainResult,
    frame: TrainingFrame,
    comparison: dict[str, Any] | None,
    save: bool,
    now: datetime | None,
) -> TrainReport:
    created = now or now_utc()
    card["version"] = new_version({**card, "created": created.isoformat()}, created)
    card["created_at"] = created.isoformat(timespec="seconds")
    if save:
        save_model(settings, result.model, card, result.valid_y, result.valid_p)
    return TrainReport(card["version"], card, result, frame, comparison)
