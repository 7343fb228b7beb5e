"""The shadow challenger: a second model scored on every request, logged, never answered.

``PITSTORE_SHADOW_MODEL_VERSION`` names it. After the champion has decided,
the challenger scores the same request from the same feature values (the
champion's online read: no second read) and the audit record gains::

    "shadow": {"model_version": ..., "score": ..., "decision": ..., "error": null}

or, when the challenger could not score, ``score`` and ``decision`` null and
``error`` its kind: the champion's fallback reason (no usable features),
``input_missing`` (the challenger needs an input the champion's feature
service does not read), ``model_error`` or ``model_unavailable`` (not loaded).

The answer is the champion's alone: ``shadow`` is the record's last key and
``without_shadow`` cuts it out of the audit line before the line is returned,
so the response is byte for byte what the champion alone would give, but for
the chain's ``hash``, which stays the logged line's. Only the score is
computed (no reasons): the challenger's cost is one tree-ensemble evaluation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pitstore.serving.audit_chain import SUFFIX
from pitstore.serving.scoring import Model, decide, model_input

log = logging.getLogger("pitstore.serving")
KEY = "shadow"
INPUT_MISSING, MODEL_ERROR, MODEL_UNAVAILABLE = "input_missing", "model_error", "model_unavailable"
_MARK = b',"' + KEY.encode() + b'":'


def failed(version: str | None, error: str) -> dict[str, Any]:
    return {"model_version": version, "score": None, "decision": None, "error": error}


def shadow_score(
    model: Model,
    feast_values: Mapping[str, float | None],
    req_feats: Mapping[str, float],
) -> dict[str, Any]:
    """The challenger's score and decision (at its own card's threshold and band)."""
    version = str(model.card["version"])
    try:
        row = model_input(model.feature_columns, feast_values, req_feats)
    except KeyError:
        return failed(version, INPUT_MISSING)
    try:
        columns = list(model.feature_columns)
        score_raw = getattr(model, "score_raw", None)
        if score_raw is not None:  # the production trees' fast path (models.fast_model)
            score = float(score_raw(np.array([row[c] for c in columns], dtype="float64"))[0])
        else:
            score = float(model.predict_proba(pd.DataFrame([row], columns=columns))[0])
        if not math.isfinite(score):
            raise ValueError(f"non-finite score {score!r}")
    except Exception:  # the challenger must never touch the champion's answer
        log.exception("shadow model %s failed", version)
        return failed(version, MODEL_ERROR)
    return {"model_version": version, "score": score, "decision": decide(score, model.card)}


def without_shadow(line: bytes) -> bytes:
    """The audit line without its ``shadow`` field (the record's last key), chain kept."""
    at = line.rfind(_MARK)
    if at < 0:
        return line
    chain = SUFFIX.search(line)
    end = chain.start() if chain is not None else line.rstrip(b"\n").rfind(b"}")
    return line[:at] + line[end:]
