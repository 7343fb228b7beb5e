"""The reference a model is monitored against: its training frame's inputs and scores.

The frame is rebuilt once through the model card (``label_policy`` and the
feature service, with ``training.pipeline.build_fraud_frame``, or
``training.credit_pipeline.build_credit_frame`` for a credit model, whose
reference also records which applications a hard rule would decline), checked against
the card's ``frame_fingerprint``, scored by the model, and cached as
``models/<version>/reference.parquet``: daily runs read the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pitstore.core.config import Settings
from pitstore.core.credit_request import credit_request_frame
from pitstore.models.registry import LoadedModel, models_dir
from pitstore.serving.credit_rules import hard_rules
from pitstore.training.credit_labels import LABEL as CREDIT_LABEL
from pitstore.training.credit_pipeline import build_credit_frame, is_credit
from pitstore.training.frames import resolve_service
from pitstore.training.labels import LabelPolicy
from pitstore.training.model import SEGMENTS, to_model_frame
from pitstore.training.pipeline import build_fraud_frame

SCORE = "__score"
LABEL = "__label"
RULED = "__rule_declined"  # credit: 1.0 when a hard rule would decline the application
CACHE = "reference.parquet"


class ReferenceError(RuntimeError):
    """The model's reference cannot be built (no card policy, no warehouse...)."""


@dataclass
class Reference:
    frame: pd.DataFrame  # feature columns, SCORE, LABEL (and segments when just built)
    fingerprint: str | None
    matches_card: bool
    cached: bool

    def inputs(self, column: str) -> np.ndarray:
        return self.frame[column].to_numpy(dtype="float64")

    @property
    def scores(self) -> np.ndarray:
        return self.frame[SCORE].to_numpy(dtype="float64")

    @property
    def labels(self) -> np.ndarray:
        """1.0 fraud, 0.0 genuine, NaN unlabelled (as in the training frame)."""
        return self.frame[LABEL].to_numpy(dtype="float64")

    @property
    def rule_declined(self) -> np.ndarray | None:
        """Credit: whether a hard rule declines each reference application (else None)."""
        if RULED not in self.frame:
            return None
        return self.frame[RULED].to_numpy(dtype="float64")


def policy_from_card(card: dict[str, Any]) -> LabelPolicy:
    p = card.get("label_policy")
    if not p:
        raise ReferenceError(f"model {card.get('version')} has no label_policy in its card")

    def ts(key: str) -> datetime | None:
        return datetime.fromisoformat(p[key]) if p.get(key) else None

    known_by = ts("labels_known_by")
    if known_by is None:
        raise ReferenceError("the card's label_policy has no labels_known_by")
    return LabelPolicy(
        known_by=known_by,
        maturity=timedelta(days=float(p["maturity_days"])),
        immature=p.get("immature", "exclude"),
        start=ts("window_start"),
        end=ts("window_end"),
    )


def maturity(card: dict[str, Any]) -> timedelta:
    return policy_from_card(card).maturity


def cache_path(settings: Settings, version: str) -> Path:
    return models_dir(settings) / version / CACHE


def read_reference(path: Path, columns: list[str], card_fingerprint: str | None) -> Reference:
    """A saved reference: only the columns the monitor reads (its segments are not),
    converted column by column (Arrow's buffers freed as they go, no consolidated copy)."""
    names = pq.read_schema(path).names
    extra = [RULED] if RULED in names else []
    table = pq.read_table(path, columns=[*columns, SCORE, LABEL, *extra])
    meta = table.schema.metadata or {}
    fp = meta.get(b"frame_fingerprint", b"").decode() or None
    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    return Reference(frame, fp, fp == card_fingerprint, True)


def application(row: dict[str, Any]) -> dict[str, Any]:
    """A credit frame row as the hard rules read an application (NaN -> None)."""
    return {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in row.items()}


def load_reference(settings: Settings, model: LoadedModel) -> Reference:
    """The cached reference, or rebuild, score and cache it (atomically)."""
    path = cache_path(settings, model.version)
    if path.exists():
        return read_reference(path, model.feature_columns, model.card.get("frame_fingerprint"))
    card = model.card
    service = resolve_service(card.get("feature_service", "fraud_v1"))
    policy = policy_from_card(card)
    if is_credit(service.name):
        frame = build_credit_frame(settings, policy, compare_modes=False)
        df = credit_request_frame(frame.table.to_pandas(), service)
        out = df[model.feature_columns].astype("float64").copy()
        out[SCORE] = model.predict_proba(df)
        out[LABEL] = df[CREDIT_LABEL].astype("float64")
        out[RULED] = [float(bool(hard_rules(application(r)))) for r in df.to_dict("records")]
    else:
        frame = build_fraud_frame(settings, policy, service=service.name, compare_modes=False)
        df = to_model_frame(frame.table, service)
        out = df[model.feature_columns].astype("float64").copy()
        out[SCORE] = model.predict_proba(df)
        out[LABEL] = df["label"].astype("float64")
        for seg in SEGMENTS:
            out[seg] = df[seg].astype("string") if seg in df else pd.NA
    fp = str(frame.manifest["fingerprint"])
    table = pa.Table.from_pandas(out, preserve_index=False)
    table = table.replace_schema_metadata({b"frame_fingerprint": fp.encode()})
    tmp = path.with_name(f".{CACHE}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return Reference(out, fp, fp == card.get("frame_fingerprint"), False)
