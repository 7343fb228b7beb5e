"""Training frames: validate request rows, join, audit, fingerprint.

``build_frame(settings, requests, service="fraud_v1", mode="as_known")`` returns a
:class:`TrainingFrame` (an Arrow table, its audit and its manifest);
``write_frame`` puts ``frame.parquet``, ``requests.parquet``, ``audit.json``
and ``manifest.json`` in one directory.

Request rows: the entity keys of the service's views (``account_id``,
``merchant_id`` for ``fraud_v1``) and ``ts``; any other column (a label, a
transaction id, request-time features) is carried through unchanged.

A service with a ledger view (``credit_v1``) whose request rows carry the
application columns (``core.credit_request.APPLICATION_INPUTS``) also gets the
request-time credit features (debt-to-income, payment-to-income, ...), computed
after the join by ``credit_request_frame`` -- the function serving calls -- from
the application and the joined (as_known) 90-day ledger sums.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pitstore.core.config import Settings
from pitstore.core.credit_request import (
    APPLICATION_INPUTS,
    CREDIT_REQUEST_FEATURES,
    credit_request_frame,
    ledger_sum_columns,
)
from pitstore.core.spec import COLUMN_SEP, FeatureService, service_by_name
from pitstore.core.timeutil import WatermarkError, parse_utc
from pitstore.training.joins import (
    ROW,
    TS,
    UTC_US,
    JoinResult,
    newest_watermark,
    point_in_time_join,
)


class FrameError(ValueError):
    """Request rows (or options) that cannot produce a trustworthy frame."""


class UnknownServiceError(FrameError):
    pass


class MissingColumnError(FrameError):
    pass


class NullKeyError(FrameError):
    pass


class TimestampError(FrameError):
    """A naive, unparseable or null request timestamp."""


class FutureTimestampError(FrameError):
    """A request ``ts`` after the store's newest watermark: its features are not known yet."""


class DuplicateRequestError(FrameError):
    pass


def resolve_service(name: str | FeatureService) -> FeatureService:
    if isinstance(name, FeatureService):
        return name
    try:
        return service_by_name(name)
    except KeyError as exc:
        raise UnknownServiceError(str(exc.args[0])) from exc


def entity_keys(service: FeatureService) -> list[str]:
    return sorted({v.entity.join_key for v in service.views})


def _to_arrow(requests: pd.DataFrame | pa.Table) -> pa.Table:
    if isinstance(requests, pa.Table):
        return requests
    if isinstance(requests, pd.DataFrame):
        return pa.Table.from_pandas(requests, preserve_index=False)
    raise FrameError(
        f"requests must be a pandas DataFrame or a pyarrow Table, not {type(requests)}"
    )


def _normalise_ts(column: pa.ChunkedArray) -> pa.Array:
    """ISO strings with offsets or tz-aware timestamps -> timestamp[us, UTC]."""
    typ = column.type
    if pa.types.is_timestamp(typ):
        if typ.tz is None:
            raise TimestampError(
                "request ts is a naive timestamp: pitstore times are UTC-aware "
                "(localize it, e.g. pandas .dt.tz_localize('UTC'))"
            )
        if column.null_count:
            raise TimestampError(f"{column.null_count} request rows have a null ts")
        if typ.unit == "ns":
            ns = pc.cast(column, pa.int64())
            if pc.any(pc.not_equal(pc.multiply(pc.divide(ns, 1000), 1000), ns)).as_py():
                raise TimestampError("request ts has sub-microsecond precision")
        return pc.cast(column, UTC_US).combine_chunks()
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        out = []
        for i, text in enumerate(column.to_pylist()):
            if text is None:
                raise TimestampError(f"request row {i}: ts is null")
            try:
                out.append(parse_utc(text, what=f"request row {i} ts"))
            except WatermarkError as exc:
                raise TimestampError(str(exc)) from exc
        return pa.array(out, UTC_US)
    raise TimestampError(
        f"request ts has type {typ}: use ISO-8601 strings with an offset "
        "or timezone-aware timestamps"
    )


def validate_requests(
    settings: Settings,
    requests: pd.DataFrame | pa.Table,
    service: FeatureService,
    check_future: bool = True,
) -> pa.Table:
    """Check request rows and normalise ``ts``; raise a :class:`FrameError` subclass."""
    table = _to_arrow(requests)
    keys = entity_keys(service)
    missing = [c for c in [*keys, TS] if c not in table.column_names]
    if missing:
        raise MissingColumnError(
            f"request rows lack column(s) {missing}; service {service.name} needs {[*keys, TS]}"
        )
    if table.num_rows == 0:
        raise FrameError("no request rows")
    reserved = [c for c in table.column_names if COLUMN_SEP in c or c == ROW]
    if reserved:
        raise FrameError(
            f"request columns {reserved} use {COLUMN_SEP!r}, reserved for feature columns"
        )
    for key in keys:
        col = table.column(key)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise FrameError(f"entity key {key} must be strings, not {col.type}")
        if col.null_count:
            raise NullKeyError(f"{col.null_count} request rows have a null {key}")
        empty = pc.sum(pc.equal(pc.utf8_length(col), 0)).as_py() or 0
        if empty:
            raise NullKeyError(f"{empty} request rows have an empty {key}")
        table = table.set_column(table.column_names.index(key), key, col.cast(pa.string()))
    ts = _normalise_ts(table.column(TS))
    table = table.set_column(table.column_names.index(TS), TS, ts)
    if check_future:
        newest = newest_watermark(settings, service)
        if newest is None:
            raise FrameError(f"the offline store under {settings.offline} holds no data")
        latest = pc.max(ts).as_py()
        if latest > newest:
            n = pc.sum(pc.greater(ts, pa.scalar(newest, UTC_US))).as_py()
            raise FutureTimestampError(
                f"{n} request rows have ts after the store's newest watermark "
                f"{newest.isoformat()} (latest ts {latest.isoformat()}): their features "
                "are not known yet"
            )
    dup_cols = table.column_names
    counts = table.group_by(dup_cols, use_threads=False).aggregate([([], "count_all")])
    dups = pc.filter(counts, pc.greater(counts.column("count_all"), 1))
    if dups.num_rows:
        example = {c: dups.column(c)[0].as_py() for c in [*keys, TS]}
        raise DuplicateRequestError(
            f"{dups.num_rows} request rows appear more than once (e.g. {example}); "
            "drop duplicates or add a distinguishing column such as a transaction id"
        )
    return table


@dataclass
class TrainingFrame:
    table: pa.Table  # request columns, then features, then feature/created timestamps
    audit: dict[str, Any]
    manifest: dict[str, Any]
    requests: pa.Table  # the validated request rows (what the fingerprint hashes)
    join: JoinResult

    def to_pandas(self) -> pd.DataFrame:
        return self.table.to_pandas()

    @classmethod
    def loaded(
        cls, table: pa.Table, audit: dict[str, Any], manifest: dict[str, Any]
    ) -> TrainingFrame:
        """A frame read back (from its files, or a notebook's DataFrame): no join to show."""
        return cls(table, audit, manifest, table, JoinResult(table))


def assemble(requests: pa.Table, join: JoinResult) -> pa.Table:
    table = requests
    for name in join.table.column_names:
        if name != ROW:
            table = table.append_column(name, join.table.column(name))
    return table


def with_request_features(table: pa.Table, service: FeatureService) -> pa.Table:
    """``table`` with the credit request features (a float column each; null =
    unknown), when the service has a ledger view and the rows carry an application."""
    if not any(v.source == "ledger" for v in service.views):
        return table
    if not all(c in table.column_names for c in APPLICATION_INPUTS):
        return table
    inflow, outflow = ledger_sum_columns(service)
    inputs = table.select([*APPLICATION_INPUTS, inflow, outflow]).to_pandas()
    values = credit_request_frame(inputs, service)
    for name in CREDIT_REQUEST_FEATURES:
        column = pa.array(values[name].to_numpy(), pa.float64(), from_pandas=True)
        if name in table.column_names:  # an application input the feature restates as float
            table = table.set_column(table.column_names.index(name), name, column)
        else:
            table = table.append_column(name, column)
    return table


def build_frame(
    settings: Settings,
    requests: pd.DataFrame | pa.Table,
    service: str | FeatureService = "fraud_v1",
    mode: str = "as_known",
    engine: str = "duckdb",
    spark: object | None = None,
    compare_modes: bool = True,
    extra_audit: dict[str, Any] | None = None,
) -> TrainingFrame:
    """Validate, join, audit and fingerprint a training frame."""
    from pitstore.training.audit import build_audit
    from pitstore.training.manifest import build_manifest

    svc = resolve_service(service)
    if mode not in ("as_known", "as_of"):
        raise FrameError(f"unknown mode {mode!r}: use as_known or as_of")
    if engine not in ("duckdb", "spark"):
        raise FrameError(f"unknown engine {engine!r}: use duckdb or spark")
    req = validate_requests(settings, requests, svc)
    join = point_in_time_join(settings, req, svc, mode=mode, engine=engine, spark=spark)
    table = with_request_features(assemble(req, join), svc)
    other = None
    if compare_modes:
        other_mode = "as_of" if mode == "as_known" else "as_known"
        other = point_in_time_join(settings, req, svc, mode=other_mode)
    audit = build_audit(table, svc, mode, other, join.unknown_entities, extra_audit)
    manifest = build_manifest(settings, req, svc, mode, engine, join, table, audit)
    return TrainingFrame(table, audit, manifest, req, join)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def table_bytes(table: pa.Table) -> bytes:
    """Deterministic parquet bytes (no pandas metadata, fixed options)."""
    sink = pa.BufferOutputStream()
    # Chunk layout changes the pages parquet writes: a frame read back from its
    # file (several chunks past 2^20 rows) must give the bytes it was written as.
    clean = table.replace_schema_metadata(None).combine_chunks()
    pq.write_table(clean, sink, compression="zstd", row_group_size=1 << 20)
    return sink.getvalue().to_pybytes()


def write_frame(frame: TrainingFrame, out_dir: Path) -> dict[str, Path]:
    """Write frame.parquet, requests.parquet, audit.json, manifest.json (atomically each)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "frame": out_dir / "frame.parquet",
        "requests": out_dir / "requests.parquet",
        "audit": out_dir / "audit.json",
        "manifest": out_dir / "manifest.json",
    }
    _write_atomic(paths["requests"], table_bytes(frame.requests))
    _write_atomic(paths["frame"], table_bytes(frame.table))
    _write_atomic(paths["audit"], json_bytes(frame.audit))
    _write_atomic(paths["manifest"], json_bytes(frame.manifest))
    return paths


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
