"""End to end for credit: applications -> as_known training frame -> PD model artifact.

``build_credit_frame`` and ``train_credit`` are what ``pitstore training-frame
--service credit_v1 --labels-known-by`` and ``pitstore train --service
credit_v1`` run; ``train_on_credit_frame`` trains on a frame built beforehand.
The model, its validation and cut-offs are ``training.credit_model``'s; this
module adds the frame's provenance to the card and registers the version
under the ``credit_v1`` service (promoted separately from fraud).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from pitstore.core.config import Settings
from pitstore.core.spec import CREDIT_V1, spec_fingerprint
from pitstore.models.registry import new_version, now_utc, save_model
from pitstore.training.credit_cutoffs import Economics
from pitstore.training.credit_labels import LABEL, credit_requests
from pitstore.training.credit_model import CreditResult, credit_card, train_credit_model
from pitstore.training.frames import FrameError, TrainingFrame, build_frame, resolve_service
from pitstore.training.joins import created_ts_column
from pitstore.training.labels import LabelPolicy
from pitstore.training.pipeline import TrainReport, code_label

CREDIT_SERVICE = CREDIT_V1.name
# What a frame must carry to train the PD model on it (beyond the features).
CREDIT_TRAINING_COLUMNS = ("application_id", "application_ts", LABEL, "region")


def is_credit(service: str) -> bool:
    return resolve_service(service).name == CREDIT_SERVICE


def build_credit_frame(
    settings: Settings,
    policy: LabelPolicy,
    mode: str = "as_known",
    engine: str = "duckdb",
    spark: object | None = None,
    compare_modes: bool = True,
) -> TrainingFrame:
    """The labelled applications known by ``policy.known_by``, joined at application time."""
    requests, label_audit = credit_requests(settings, policy)
    if requests.num_rows == 0:
        labels = label_audit["labels"]
        raise FrameError(
            f"no labelled application by {policy.known_by.isoformat()}: "
            f"{labels['by_status']} (an application trains once it is "
            f"{labels['maturity_days']:g} days old and its outcome is known)"
        )
    return build_frame(
        settings,
        requests,
        service=CREDIT_SERVICE,
        mode=mode,
        engine=engine,
        spark=spark,
        compare_modes=compare_modes,
        extra_audit=label_audit,
    )


def train_credit(
    settings: Settings,
    policy: LabelPolicy,
    economics: Economics | None = None,
    valid_share: float = 0.3,
    save: bool = True,
    now: datetime | None = None,
) -> TrainReport:
    """Build the as_known frame, train the PD model, register a credit_v1 version."""
    frame = build_credit_frame(settings, policy)
    return train_on_credit_frame(settings, frame, economics, valid_share, save, now)


def train_on_credit_frame(
    settings: Settings,
    frame: TrainingFrame,
    economics: Economics | None = None,
    valid_share: float = 0.3,
    save: bool = True,
    now: datetime | None = None,
) -> TrainReport:
    """Train and register the PD model on an ``as_known`` credit frame (with ``defaulted``)."""
    if frame.audit.get("mode") != "as_known":
        raise FrameError("train on an as_known frame: as_of values are not what serving sees")
    missing = [c for c in CREDIT_TRAINING_COLUMNS if c not in frame.table.column_names]
    if missing:
        raise FrameError(
            f"the frame lacks {missing}: a credit training frame needs "
            f"{list(CREDIT_TRAINING_COLUMNS)} and the application columns "
            "(a `training-frame --service credit_v1 --labels-known-by` frame has them)"
        )
    svc = resolve_service(str(frame.audit["service"]))
    _require_known_features(frame, svc)
    df = frame.table.to_pandas()
    df[LABEL] = df[LABEL].astype("float64")  # null (unlabelled) stays NaN: never trains
    result = train_credit_model(df, svc, valid_share, economics)
    labels = frame.audit.get("labels") or {}
    card = credit_card(result, svc)
    card.update(
        {
            "service": CREDIT_SERVICE,
            "spec_fingerprint": spec_fingerprint(svc.views),
            "frame_fingerprint": frame.manifest["fingerprint"],
            "mode": "as_known",
            "training_window": {
                "from": result.split["train_from"],
                "to": result.split["train_to"],
            },
            "validation_window": {
                "from": result.split["valid_from"],
                "to": result.split["valid_to"],
            },
            "label_cutoff": labels.get("labels_known_by"),
            "label_policy": {k: v for k, v in labels.items() if k not in ("by_status",)}
            or {"source": "the frame's own defaulted column"},
            "code_version": code_label(),
            "frame_audit": {
                k: frame.audit[k]
                for k in ("rows", "leaks", "vs_as_of", "labels")
                if k in frame.audit
            },
        }
    )
    return _register(settings, card, result, frame, save, now)


def _require_known_features(frame: TrainingFrame, svc: Any) -> None:
    """Refuse a frame where no application had ledger features known at its time:
    a model would learn from the application alone and serve with features it
    never saw. It happens when the batch runs start after the applications (the
    history was generated or landed, but runs were only made from later on)."""
    ledger = next(v for v in svc.views if v.source == "ledger")
    created = frame.table.column(created_ts_column(ledger))
    if created.null_count == frame.table.num_rows:
        raise FrameError(
            f"none of the {frame.table.num_rows} applications has {ledger.name} features "
            "known at its application time: no transform run had published them yet (as_known). "
            "Batch runs must cover the applications' history (`pitstore backfill` from before "
            "the first application; a run needs card transactions landed by its watermark)"
        )


def _register(
    settings: Settings,
    card: dict[str, Any],
    result: CreditResult,
    frame: TrainingFrame,
    save: bool,
    now: datetime | None,
) -> TrainReport:
    created = now or now_utc()
    card["version"] = new_version({**card, "created": created.isoformat()}, created)
    card["created_at"] = created.isoformat(timespec="seconds")
    if save:
        save_model(
            settings,
            result.model,
            card,
            np.asarray(result.valid_y),
            np.asarray(result.valid_p),
        )
    return TrainReport(card["version"], card, result, frame, None)
