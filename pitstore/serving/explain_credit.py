"""``pitstore explain`` for a pre-screening record (kind ``prescreen``).

Replays the decision from the verified record alone: the hard rules on the
logged application; for a referral, the logged reason (what the read found:
it is the record's evidence, not something to recompute); for a model
decision, *that* credit model version reloaded through the registry's checks,
the request features recomputed by ``core.credit_request`` from the logged
application and ledger sums, the input row rebuilt from the logged feature
values (null = unknown, as the model read it), the PD, the cut-off decision
and the top reasons with their exact contributions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pitstore.core.credit_request import credit_request_features, ledger_sum_columns
from pitstore.core.spec import feature_column, service_by_name
from pitstore.serving import credit_rules as cr
from pitstore.serving.schemas import PrescreenRequest
from pitstore.serving.scoring import score_row
from pitstore.serving.settings import ServingSettings

if TYPE_CHECKING:
    from pitstore.serving.explain import Replay

TOLERANCE = 1e-12


def replay_prescreen(settings: ServingSettings, decision_id: str, record: dict[str, Any]) -> Replay:
    from pitstore.serving.explain import Replay, load_version

    app = PrescreenRequest.model_validate(record["request"]).logged()
    hits = cr.hard_rules(app)
    problems: list[str] = []
    if [h.rule for h in hits] != record["rules_fired"]:
        problems.append(f"rules now fire {[h.rule for h in hits]}, logged {record['rules_fired']}")
    if hits:
        reasons = [h.as_dict() for h in hits]
        _same_decision(cr.DECLINE, record, problems)
        return Replay(decision_id, record, None, cr.DECLINE, reasons, not problems, problems)
    if record["refer_reason"]:
        reasons = [cr.refer_reason(record["refer_reason"])]
        _same_decision(cr.REFER, record, problems)
        return Replay(decision_id, record, None, cr.REFER, reasons, not problems, problems)

    model = load_version(settings, str(record["model_version"]))
    service = service_by_name(str(record["feature_service"]))
    feast_values = {
        feature_column(view, name): value
        for view, part in record["features"].items()
        for name, value in part["values"].items()
    }
    inflow, outflow = ledger_sum_columns(service)
    req_feats = credit_request_features(
        cr.application_inputs(app), feast_values.get(inflow), feast_values.get(outflow)
    )
    if cr.finite_or_none(req_feats) != record["request_features"]:
        problems.append(
            f"request features differ: now {req_feats}, logged {record['request_features']}"
        )
    row = cr.credit_model_input(model.feature_columns, feast_values, req_feats)
    if cr.finite_or_none(row) != record["model_input"]:
        problems.append("the rebuilt model input differs from the logged one")
    result = score_row(model, row)
    if not math.isclose(result.score, record["pd"], rel_tol=0, abs_tol=TOLERANCE):
        problems.append(f"PD {result.score!r} != logged {record['pd']!r}")
    decision = cr.FROM_BAND[result.decision]
    _same_decision(decision, record, problems)
    reasons = [r.as_dict() for r in result.reasons]
    logged = [r for r in record["reasons"] if r.get("feature") is not None]
    if (record.get("explanation") or {}).get("computed") is False:
        pass  # a pre-qualification logged without reasons (reasons_for=adverse)
    elif [(r["feature"], r["contribution"]) for r in reasons] != [
        (r["feature"], r["contribution"]) for r in logged
    ]:
        problems.append("top reasons or their contributions differ from the logged ones")
    return Replay(decision_id, record, result.score, decision, reasons, not problems, problems)


def _same_decision(decision: str, record: dict[str, Any], problems: list[str]) -> None:
    if decision != record["decision"]:
        problems.append(f"decision {decision} != logged {record['decision']}")
