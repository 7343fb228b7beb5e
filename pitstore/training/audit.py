"""The audit that travels beside every training frame (``audit.json``).

It proves the frame has no leak -- no value with ``event_timestamp > ts`` and,
in ``as_known``, none with ``created_timestamp > ts`` -- and says how much the
other mode would differ: in an ``as_known`` frame, ``as_of.values_changed`` is
the number of feature values ``as_of`` would have replaced with a restated
value nobody could have scored with at ``ts`` (the leak it would let in).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pitstore.core.spec import FeatureService
from pitstore.training.joins import (
    TS,
    JoinResult,
    created_ts_column,
    feature_column,
    feature_ts_column,
)

PERCENTILES = (0.5, 0.9, 0.99)


class LeakError(AssertionError):
    """A frame that contains a future value: a bug, never a data problem."""


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.fill_null(mask, False)).as_py() or 0)


def _differs(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.Array:
    """Null-safe inequality: differs when values differ or exactly one is null."""
    neq = pc.fill_null(pc.not_equal(a, b), False)
    xor = pc.xor(pc.is_null(a), pc.is_null(b))
    return pc.or_(neq, xor)


def _age_hours(table: pa.Table, col: str) -> dict[str, float | None]:
    ts_us = pc.cast(table.column(TS), pa.int64())
    ft_us = pc.cast(table.column(col), pa.int64())
    age = pc.drop_null(pc.divide(pc.cast(pc.subtract(ts_us, ft_us), pa.float64()), 3.6e9))
    if len(age) == 0:
        empty: dict[str, float | None] = {f"p{int(q * 100)}": None for q in PERCENTILES}
        return empty | {"max": None}
    qs = pc.quantile(age, q=list(PERCENTILES), interpolation="lower").to_pylist()
    out: dict[str, float | None] = {
        f"p{int(q * 100)}": round(v, 6) for q, v in zip(PERCENTILES, qs, strict=True)
    }
    out["max"] = round(pc.max(age).as_py(), 6)
    return out


def leak_counts(table: pa.Table, service: FeatureService) -> dict[str, dict[str, int]]:
    ts = table.column(TS)
    out = {}
    for view in service.views:
        out[view.name] = {
            "event_ts_after_ts": _count(pc.greater(table.column(feature_ts_column(view)), ts)),
            "created_ts_after_ts": _count(pc.greater(table.column(created_ts_column(view)), ts)),
        }
    return out


def compare(table: pa.Table, other: JoinResult, service: FeatureService) -> dict[str, Any]:
    """How many feature values the other mode's join would change."""
    rows_changed = pa.array([False] * table.num_rows)
    per_view: dict[str, int] = {}
    cells = 0
    for view in service.views:
        view_cells = 0
        for f in view.features:
            col = feature_column(view, f.name)
            diff = _differs(table.column(col), other.table.column(col))
            n = _count(diff)
            view_cells += n
            rows_changed = pc.or_(rows_changed, diff)
        per_view[view.name] = view_cells
        cells += view_cells
    return {
        "values_changed": cells,
        "rows_changed": _count(rows_changed),
        "values_changed_by_view": per_view,
    }


def build_audit(
    table: pa.Table,
    service: FeatureService,
    mode: str,
    other: JoinResult | None,
    unknown_entities: dict[str, int],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    rows = table.num_rows
    null_rate = {}
    for view in service.views:
        for f in view.features:
            col = feature_column(view, f.name)
            null_rate[col] = round(table.column(col).null_count / rows, 6) if rows else 0.0
    missing = {
        v.name: {
            "rows_without_value": table.column(feature_ts_column(v)).null_count,
            "unknown_entity": unknown_entities.get(v.name),
        }
        for v in service.views
    }
    leaks = leak_counts(table, service)
    event_leaks = sum(v["event_ts_after_ts"] for v in leaks.values())
    created_leaks = sum(v["created_ts_after_ts"] for v in leaks.values())
    audit: dict[str, Any] = {
        "service": service.name,
        "mode": mode,
        "rows": rows,
        "null_rate": null_rate,
        "missing": missing,
        "feature_age_hours": {
            v.name: _age_hours(table, feature_ts_column(v)) for v in service.views
        },
        "leaks": {
            "event_ts_after_ts": event_leaks,
            "created_ts_after_ts": created_leaks,
            "by_view": leaks,
        },
    }
    if other is not None:
        key = "as_of" if mode == "as_known" else "as_known"
        audit[f"vs_{key}"] = compare(table, other, service)
    leak_free = event_leaks == 0 and (mode != "as_known" or created_leaks == 0)
    if not leak_free:
        raise LeakError(f"frame contains future values: {leaks}")
    # A key the store never saw is almost always a typo or a wrong id scheme
    # (A00001 for A000001): its rows are all-null, which looks like data. The
    # frame is still returned (a brand-new customer is legitimate), but not "ok".
    # Views of one entity see the same unknown rows: count each entity key once.
    by_key: dict[str, int] = {}
    for view in service.views:
        key = view.entity.join_key
        by_key[key] = max(by_key.get(key, 0), unknown_entities.get(view.name) or 0)
    unknown = sum(by_key.values())
    audit["unknown_entity_rows"] = unknown
    audit["ok"] = unknown == 0
    if extra:
        audit.update(extra)
    return audit
