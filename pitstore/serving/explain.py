"""``pitstore explain DECISION_ID``: replay a logged decision and prove it matches.

Reads the audit record, reloads *that* model version from the registry,
recomputes the request-time features from the logged request with the same
function training uses, rebuilds the model input from the logged feature
values, rescores, and compares score, decision and reasons with the log.
A fallback decision is replayed through the fallback rules instead, and a
pre-screening record (kind ``prescreen``) by ``serving.explain_credit``.

Nothing is replayed from a record whose audit file fails verification
(``audit_verify``: chain and signed checkpoints), and the model version it
names goes through the registry's checks (id pattern, path inside models/,
artifact hash) before anything is unpickled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pitstore.core.spec import feature_column, service_by_name
from pitstore.models.registry import load_model
from pitstore.serving import fallback as fb
from pitstore.serving.audit import locate_decision
from pitstore.serving.audit_chain import AuditKeyError, audit_key
from pitstore.serving.audit_verify import verify_file
from pitstore.serving.schemas import ScoreRequest
from pitstore.serving.scoring import Model, model_input, request_features, score_row
from pitstore.serving.settings import ServingSettings

TOLERANCE = 1e-12


class ExplainError(RuntimeError):
    pass


class UnverifiedRecord(ExplainError):
    """The record's audit file fails verification: it is not evidence."""


@dataclass
class Replay:
    decision_id: str
    logged: dict[str, Any]
    score: float | None
    decision: str
    reasons: list[dict[str, Any]]
    matches: bool
    mismatches: list[str] = field(default_factory=list)


def replay(settings: ServingSettings, decision_id: str, audit_dir: Path | None = None) -> Replay:
    record = verified_record(settings, decision_id, audit_dir or settings.resolved_audit_dir)
    if record.get("kind") == "prescreen":
        from pitstore.serving.explain_credit import replay_prescreen

        return replay_prescreen(settings, decision_id, record)
    req = ScoreRequest.model_validate(record["request"])
    txn = req.txn()
    problems: list[str] = []
    if record["fallback"]:
        fd = fb.fallback_decision(txn, record["fallback"])
        if fd.decision != record["decision"] or fd.rule != record["fallback_rule"]:
            problems.append(
                f"fallback rules now give {fd.decision}/{fd.rule}, "
                f"logged {record['decision']}/{record['fallback_rule']}"
            )
        reasons = [{"feature": None, "rule": fd.rule, "text": fd.text}]
        return Replay(decision_id, record, None, fd.decision, reasons, not problems, problems)

    model = load_version(settings, str(record["model_version"]))
    service = service_by_name(str(record["feature_service"]))
    feast_values = {
        feature_column(view, name): value
        for view, part in record["features"].items()
        for name, value in part["values"].items()
    }
    req_feats = request_features(txn, feast_values, service)
    if req_feats != record["request_features"]:
        problems.append(
            f"request-time features differ: now {req_feats}, logged {record['request_features']}"
        )
    row = model_input(model.feature_columns, feast_values, req_feats)
    if row != record["model_input"]:
        problems.append("the rebuilt model input differs from the logged one")
    result = score_row(model, row)
    if not math.isclose(result.score, record["score"], rel_tol=0, abs_tol=TOLERANCE):
        problems.append(f"score {result.score!r} != logged {record['score']!r}")
    if result.decision != record["decision"]:
        problems.append(f"decision {result.decision} != logged {record['decision']}")
    reasons = [r.as_dict() for r in result.reasons]
    logged_method = (record.get("explanation") or {}).get("method")
    if logged_method is not None and logged_method != result.explanation["method"]:
        problems.append(f"reasons now by {result.explanation['method']}, logged by {logged_method}")
    if (record.get("explanation") or {}).get("computed") is False:
        pass  # an approval logged without reasons (reasons_for=adverse): shown, not compared
    elif [r["feature"] for r in reasons] != [r["feature"] for r in record["reasons"]]:
        problems.append("top reasons differ from the logged ones")
    elif [r["contribution"] for r in reasons] != [r["contribution"] for r in record["reasons"]]:
        problems.append("reason contributions differ from the logged ones")
    return Replay(
        decision_id, record, result.score, result.decision, reasons, not problems, problems
    )


def verified_record(settings: ServingSettings, decision_id: str, root: Path) -> dict[str, Any]:
    """The decision's record, if its whole file verifies (else UnverifiedRecord)."""
    found = locate_decision(root, decision_id)
    if found is None:
        raise ExplainError(f"no decision {decision_id!r} in {root}")
    path, record = found
    try:
        key = audit_key(settings)
    except AuditKeyError as exc:
        raise ExplainError(f"cannot verify the audit log: {exc}") from exc
    report = verify_file(root, path, key)
    if not report.ok:
        raise UnverifiedRecord(
            f"decision {decision_id} is in {report.file}, which fails audit verification: "
            f"{report.problems[0].message}; refusing to explain it"
        )
    return record


def load_version(settings: ServingSettings, version: str) -> Model:
    """The model as serving loads it: with the fast path, whose TreeSHAP
    contributions the logged reasons are (without it they would be another method)."""
    from pitstore.models.fast_model import with_fast_path

    try:
        return with_fast_path(load_model(settings.pitstore_settings(), version))  # type: ignore[no-any-return]
    except Exception as exc:
        raise ExplainError(f"cannot load model version {version!r}: {exc}") from exc
