"""One feature view's run in Spark: its rendered SQL, executed step by step, and its file.

The SQL is ``render_view(view, rel, SPARK)``: the same steps as the dbt marts,
which join them into one ``with`` statement. Spark inlines a CTE at every
reference and analyses each copy again; on this chain (view_events, candidates,
point_values... each read two or three times) planning alone took most of an
incremental run, and shared CTEs were computed once per reference. So the chain
runs one step at a time, each as a temp view under the name the renderer gave it
(no SQL text is parsed here); a step read more than once downstream is
checkpointed (computed once, lineage cut), which keeps every plan small. The
semantics are the SQL's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pitstore.transform.render_sql import SPARK, Relations, RenderedView, render_view, sql_type
from pitstore.transform.spark.dedupe import single_part
from pitstore.transform.spark.storage import Store, join

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def run_files(store: Store, view_dir: str) -> list[str]:
    return [
        join(view_dir, n)
        for n in store.list_names(view_dir)
        if n.startswith("run-") and n.endswith(".parquet")
    ]


def stepwise(spark: SparkSession, rendered: RenderedView) -> DataFrame:
    """Run a rendered chain one step at a time, each registered as a temp view."""
    for cte in rendered.ctes:
        df = spark.sql(cte.sql)
        # A literal row (previous_run) costs nothing to inline; anything read
        # twice or more is computed once.
        if rendered.uses(cte.name) > 1 and not cte.constant:
            df = df.localCheckpoint()
        df.createOrReplaceTempView(cte.name)
    return spark.sql(rendered.final)


def run_schema(view: Any) -> Any:
    """The schema of a view's run files (``final`` in render_sql), every column nullable."""
    from pyspark.sql.types import StructField, StructType, _parse_datatype_string

    cols = [(view.entity.join_key, "string"), ("event_timestamp", "timestamp")]
    cols += [("created_timestamp", "timestamp")]
    cols += [(f.name, sql_type(f)) for f in view.features]
    return StructType([StructField(n, _parse_datatype_string(t), True) for n, t in cols])


def run_view(
    spark: SparkSession,
    store: Store,
    view_dir: str,
    view: Any,
    w_us: int,
    prev_us: int,
    w_stamp: str,
    full_refresh: bool,
    horizon_us: int | None = None,
) -> tuple[int, int, int]:
    """Write the view's run file; return (appended, restated, total rows after)."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    key = view.entity.join_key
    files = [] if full_refresh else run_files(store, view_dir)
    stored_name = None
    if files:
        stored_name = f"pit_stored_{view.name}"
        # The schema is the spec's (every run file is written with it): no job to infer it.
        spark.read.schema(run_schema(view)).parquet(*files).createOrReplaceTempView(stored_name)
    rel = Relations(
        events=f"pit_{view.source}",
        labels="pit_labels" if view.uses_labels else None,
        stored=stored_name,
        watermark_us=str(w_us),
        previous_us=str(prev_us),
        horizon_us=None if horizon_us is None else str(horizon_us),
    )
    prefix = f"pit_{view.name}__"
    rows = stepwise(spark, render_view(view, rel, SPARK, qualify=lambda step: prefix + step))
    # Every column nullable, as dbt writes them, whatever Spark proved about this plan
    # (a union's nullability is its inputs'): one schema for every run file.
    rows = rows.unionByName(spark.createDataFrame([], run_schema(view)))
    columns = rows.columns
    # Counted while the file is written, not by reading it again. Every file holds
    # the rows of one run (its created_timestamp). A restated row's (key, T) has a
    # version created before W: the SQL's ``stored`` step holds every such version
    # at or after the horizon, where every written T lies.
    if files:
        older = spark.table(prefix + "stored").selectExpr(
            f"entity_key as {key}",
            "timestamp_micros(boundary_us) as event_timestamp",
            "true as pit_restated",
        )
        rows = rows.join(older.distinct(), [key, "event_timestamp"], "left")
    else:
        rows = rows.withColumn("pit_restated", F.lit(None).cast("boolean"))
    counts = Observation(f"pit_counts_{view.name}")
    rows = rows.observe(
        counts, F.count(F.lit(1)).alias("appended"), F.count("pit_restated").alias("restated")
    ).select(*columns)
    tmp_dir = join(view_dir, f".tmp-{w_stamp}")
    store.delete(tmp_dir)
    (
        rows.repartition(1)
        .sortWithinPartitions(key, "event_timestamp", "created_timestamp")
        .write.mode("overwrite")
        .option("compression", "zstd")
        .parquet(tmp_dir)
    )
    part = single_part(store, tmp_dir)
    if store.parquet_rows(part) == 0:
        # Nothing to count, and nothing may have been observed: adaptive execution
        # replaces a plan it proves empty (a view whose source has no events yet),
        # observation included.
        appended, restated = 0, 0
    else:
        appended, restated = int(counts.get["appended"]), int(counts.get["restated"])
    mine = join(view_dir, f"run-{w_stamp}.parquet")
    # Before this run's file replaces anything the inputs read.
    total_before = sum(store.parquet_rows(f) for f in files if f != mine)
    if full_refresh:
        for old in run_files(store, view_dir):
            store.delete(old)
    store.replace(part, join(view_dir, f"run-{w_stamp}.parquet"))
    store.delete(tmp_dir)
    return appended, restated, total_before + appended
