"""One feature view's run in Spark: its rendered SQL, executed step by step, and its file.

The SQL is ``render_view_sql(view, rel, SPARK)``, the same CTE chain as the dbt
marts. Spark inlines a CTE at every reference and analyses each copy again; on
this chain (view_events, candidates, point_values... each read two or three
times) planning alone took most of an incremental run, and shared CTEs were
computed once per reference. So the chain runs one CTE at a time, each as a
temp view; a CTE read more than once downstream is checkpointed (computed once,
lineage cut), which keeps every plan small. The semantics are the SQL's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pitstore.render_sql import SPARK, Relations, render_view_sql, split_ctes
from transforms.spark.dedupe import single_part
from transforms.spark.storage import Store, join

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def run_files(store: Store, view_dir: str) -> list[str]:
    return [
        join(view_dir, n)
        for n in store.list_names(view_dir)
        if n.startswith("run-") and n.endswith(".parquet")
    ]


def stepwise(spark: SparkSession, sql: str, prefix: str) -> DataFrame:
    """Run a rendered CTE chain one CTE at a time (temp views named ``prefix + cte``)."""
    ctes, final = split_ctes(sql)
    names = [name for name, _ in ctes]
    pattern = re.compile(r"\b(" + "|".join(names) + r")\b")

    def rename(text: str) -> str:
        return pattern.sub(lambda m: prefix + m.group(1), text)

    later = [body for _, body in ctes[1:]] + [final]
    for i, (name, body) in enumerate(ctes):
        df = spark.sql(rename(body))
        uses = sum(len(re.findall(rf"\b{name}\b", text)) for text in later[i:])
        # A literal (previous_run) costs nothing to inline; anything read twice
        # or more is computed once.
        if uses > 1 and re.search(r"\bfrom\b", body):
            df = df.localCheckpoint()
        df.createOrReplaceTempView(prefix + name)
    return spark.sql(rename(final))


def run_view(
    spark: SparkSession,
    store: Store,
    view_dir: str,
    view: Any,
    w_us: int,
    prev_us: int,
    w_stamp: str,
    full_refresh: bool,
) -> tuple[int, int, int]:
    """Write the view's run file; return (appended, restated, total rows after)."""
    from pyspark.sql.types import StructField, StructType

    key = view.entity.join_key
    files = [] if full_refresh else run_files(store, view_dir)
    stored_name = None
    if files:
        stored_name = f"pit_stored_{view.name}"
        spark.read.parquet(*files).createOrReplaceTempView(stored_name)
    rel = Relations(
        transactions="pit_transactions",
        labels="pit_labels" if view.uses_labels else None,
        stored=stored_name,
        watermark_us=str(w_us),
        previous_us=str(prev_us),
    )
    prefix = f"pit_{view.name}__"
    rows = stepwise(spark, render_view_sql(view, rel, SPARK), prefix)
    # Every column nullable, as dbt writes them, whatever Spark proved about this plan
    # (a union's nullability is its inputs'): one schema for every run file.
    nullable = StructType([StructField(f.name, f.dataType, True) for f in rows.schema])
    rows = rows.unionByName(spark.createDataFrame([], nullable))
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
    # Counted from the written file and the footers of the stored ones, before it
    # replaces anything the inputs read. Every file holds the rows of one run (its
    # created_timestamp). A restated row's (key, T) has a version created before W:
    # the SQL's ``stored`` step holds every such version at or after the horizon,
    # where every written T lies.
    appended = store.parquet_rows(part)
    restated = total_before = 0
    if files:
        written = spark.read.parquet(part).selectExpr(
            f"{key} as entity_key", "unix_micros(event_timestamp) as boundary_us"
        )
        older = spark.table(prefix + "stored").select("entity_key", "boundary_us").distinct()
        restated = written.join(older, ["entity_key", "boundary_us"], "left_semi").count()
        mine = join(view_dir, f"run-{w_stamp}.parquet")
        total_before = sum(store.parquet_rows(f) for f in files if f != mine)
    if full_refresh:
        for old in run_files(store, view_dir):
            store.delete(old)
    store.replace(part, join(view_dir, f"run-{w_stamp}.parquet"))
    store.delete(tmp_dir)
    return appended, restated, total_before + appended
