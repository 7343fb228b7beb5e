"""The landing zone as a Spark run reads it: manifest checks, file lists, raw rows.

Local landing zones are checked with ``pitstore.landing`` directly; on remote
storage (any Hadoop URI) the files are hashed on the executors, so the driver
never pulls the landing zone.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitstore.landing import zone as landing
from pitstore.transform.dbt_engine import schema_drift
from pitstore.transform.spark.storage import Store, is_local, join, local_path

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def validated_manifest(
    spark: SparkSession, store: Store, landing_uri: str, watermark: datetime
) -> landing.LandingManifest:
    """``landing.validate_for_watermark``, also for landing zones on remote storage."""
    if is_local(landing_uri):
        return landing.validate_for_watermark(local_path(landing_uri), watermark)
    from pyspark.sql import functions as F

    manifest_uri = join(landing_uri, landing.MANIFEST_NAME)
    if not store.exists(manifest_uri):
        raise landing.LandingError(
            f"no landing manifest at {manifest_uri}: not a landing zone, or its write "
            "was interrupted (the manifest is written last)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, landing.MANIFEST_NAME).write_text(store.read_text(manifest_uri))
        manifest = landing.read_manifest(Path(tmp))
    if watermark > manifest.complete_through:
        raise landing.LandingError(
            f"watermark {watermark.isoformat()} is after the landing zone's complete_through "
            f"{manifest.complete_through.isoformat()} ({landing_uri}): its run could not "
            "be repeated: data with ingested_at <= W may still arrive"
        )
    wanted = {
        join(landing_uri, e.path): e
        for e in manifest.partitions
        if e.ingest_date <= watermark.date()
    }
    if wanted:
        # Hash the files on the executors: the driver never pulls the landing zone.
        got = {
            r.path: r.sha
            for r in spark.read.format("binaryFile")
            .load(list(wanted))
            .select("path", F.sha2("content", 256).alias("sha"))
            .collect()
        }
        for uri, entry in wanted.items():
            sha = next((v for k, v in got.items() if k.endswith("/" + entry.path)), None)
            if sha != entry.sha256:
                raise landing.LandingError(
                    f"missing or corrupt file for {entry.dataset} partition "
                    f"ingest_date={entry.ingest_date.isoformat()} ({uri}): sha256 {sha} "
                    f"does not match the manifest's {entry.sha256}"
                )
    return manifest


def partition_uris(
    landing_uri: str, manifest: landing.LandingManifest, dataset: str, watermark: datetime
) -> list[str]:
    return [
        join(landing_uri, p.relative_to(manifest.root).as_posix())
        for p in landing.partition_files(manifest, dataset, watermark)
    ]


_SPARK_TYPES = {
    "string": "string",
    "double": "double",
    "bool": "boolean",
    "int32": "int",
    "timestamp[us, tz=UTC]": "timestamp",
}


def _contract_schema(columns: dict[str, str]) -> Any:
    from pyspark.sql.types import StructType, _parse_datatype_string

    schema = StructType()
    for name, arrow_type in columns.items():
        schema.add(name, _parse_datatype_string(_SPARK_TYPES[arrow_type]), nullable=True)
    return schema


def drift(spark: SparkSession, uri: str, expected: dict[str, str]) -> str | None:
    """``transform.schema_drift`` (exact arrow types) locally; Spark's view of the
    footer on remote storage (it cannot tell a timestamp's unit or zone apart)."""
    if is_local(uri):
        return schema_drift(local_path(uri), expected)
    actual = {f.name: f.dataType.simpleString() for f in spark.read.parquet(uri).schema}
    want = {c: _SPARK_TYPES[t] for c, t in expected.items()}
    if actual == want:
        return None
    return f"columns {sorted(actual.items())}, expected {sorted(want.items())}"


def read_raw(spark: SparkSession, uris: list[str], columns: dict[str, str]) -> DataFrame:
    schema = _contract_schema(columns)
    if not uris:
        from pyspark.sql.types import LongType, StringType

        schema.add("filename", StringType()).add("file_row_number", LongType())
        return spark.createDataFrame([], schema)
    return (
        spark.read.schema(schema)
        .parquet(*uris)
        .selectExpr(
            "*", "_metadata.file_path as filename", "_metadata.row_index as file_row_number"
        )
    )
