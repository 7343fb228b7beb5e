"""The Spark engine's run bookkeeping: the shared completed-run markers
(``pitstore.core.runs``) on a local store, or on any Hadoop URI through ``Store``."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pitstore.core.runs import (
    RunMarker,
    RunSummary,
    begin_run,
    check_engine,
    file_entry,
    is_marker_name,
    marker_name,
    read_markers,
    write_marker,
)
from pitstore.core.spec import FEATURE_VIEWS
from pitstore.core.timeutil import stamp_us
from pitstore.transform.spark import dedupe
from pitstore.transform.spark.storage import Store, join, local_path

if TYPE_CHECKING:
    from pitstore.transform.spark.job import Layout


def recorded_markers(store: Store, layout: Layout) -> dict[int, RunMarker]:
    """The markers of the runs that completed, by watermark (µs)."""
    if layout.local_offline is not None:
        return read_markers(layout.local_offline)
    markers = {}
    for name in store.list_names(layout.markers):
        if is_marker_name(name):
            uri = join(layout.markers, name)
            marker = RunMarker.from_json(store.read_text(uri), uri)
            markers[marker.watermark_us] = marker
    return markers


def start_run(
    store: Store, layout: Layout, w_us: int, full_refresh: bool
) -> tuple[dict[int, RunMarker], list[str]]:
    """The completed runs this one builds on (``runs.begin_run`` on a local store:
    the invariants enforced first) and the orphans removed."""
    if layout.local_offline is not None:
        return begin_run(layout.local_offline, local_path(layout.runs), "spark", w_us, full_refresh)
    if full_refresh:
        return {}, []
    markers = recorded_markers(store, layout)
    check_engine("spark", markers)
    return markers, []


def publish_marker(
    store: Store, layout: Layout, w_us: int, summary: RunSummary, engine_state: dict[str, Any]
) -> None:
    """The run's marker, listing every file it published (written last)."""
    w_stamp = stamp_us(w_us)
    published = [f"{v.name}/run-{w_stamp}.parquet" for v in FEATURE_VIEWS] + [
        f"{dedupe.STATE}/{dataset}/run-{w_stamp}.parquet" for dataset in dedupe.DATASETS
    ]
    local = layout.local_offline
    files = {
        rel: file_entry(local / rel) if local is not None else {"bytes": None, "sha256": None}
        for rel in published
    }
    marker = RunMarker("spark", w_us, files, asdict(summary), engine_state)
    if local is not None:
        write_marker(local, marker)
    else:
        store.write_text(join(layout.markers, marker_name(w_us)), marker.to_json())
