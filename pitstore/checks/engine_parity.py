"""Engine parity: dbt and Spark, run on the same landing zone, must write the same rows.

Each engine runs into its own home (``<out>/dbt``, ``<out>/spark``) reading the
same landing zone; then every view's whole offline store (all versions, all runs
so far) is compared row by row on ``(entity key, event_timestamp,
created_timestamp)``: rows present in only one store, and per feature the rows
whose values differ. Integer features (counts, sums of cents, maxima) must be
equal; float features (means, shares, rates) equal within a relative tolerance
(default 1e-12: both engines divide the same exact integers, so in practice they
are bit-identical; the tolerance only absorbs a last-bit difference in
summation order should an engine ever change it).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pitstore.core.config import Settings
from pitstore.core.spec import FEATURE_VIEWS, FeatureView

REL_TOL = 1e-12
ENGINES = ("dbt", "spark")


class EngineSettings(Settings):
    """Settings whose landing zone lives outside the home (shared by both engines)."""

    landing_dir: Path

    @property
    def landing(self) -> Path:
        return self.landing_dir


@dataclass
class FeatureDiff:
    feature: str
    dtype: str
    differing: int
    examples: list[tuple[Any, ...]] = field(default_factory=list)  # (key, T, created, a, b)


@dataclass
class ViewParity:
    view: str
    rows: dict[str, int]
    only_in: dict[str, int]
    only_examples: dict[str, list[tuple[Any, ...]]]
    schema_difference: str | None
    features: list[FeatureDiff]

    @property
    def ok(self) -> bool:
        return (
            self.schema_difference is None
            and not any(self.only_in.values())
            and not any(f.differing for f in self.features)
        )


@dataclass
class ParityReport:
    views: list[ViewParity]
    rel_tol: float = REL_TOL

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.views)

    @property
    def engines(self) -> tuple[str, str]:
        a, b = self.views[0].rows if self.views else ENGINES
        return a, b

    def to_dict(self) -> list[dict[str, Any]]:
        return [asdict(v) | {"ok": v.ok} for v in self.views]


def report_markdown(report: ParityReport) -> str:
    a, b = report.engines
    lines = [
        f"| view | rows {a} | rows {b} | only in {a} | only in {b} | differing values | ok |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for v in report.views:
        differing = sum(f.differing for f in v.features)
        lines.append(
            f"| {v.view} | {v.rows[a]} | {v.rows[b]} | {v.only_in[a]} | {v.only_in[b]} "
            f"| {differing} | {'yes' if v.ok else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def read_store(view_dir: Path) -> pa.Table | None:
    """Every version in a view's offline store, or None when it has no file."""
    files = sorted(view_dir.glob("run-*.parquet"))
    if not files:
        return None
    tables = [pq.read_table(f) for f in files]
    # Compare values and types, not writer details (nullability flags, metadata).
    schema = pa.schema([pa.field(f.name, f.type) for f in tables[0].schema])
    return pa.concat_tables([t.cast(schema) for t in tables])


def _schema_text(table: pa.Table) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in table.schema]


def _rows(view: FeatureView, table: pa.Table) -> dict[tuple[Any, int, int], tuple[Any, ...]]:
    key = view.entity.join_key
    names = [f.name for f in view.features]
    cols = {
        "k": table.column(key).to_pylist(),
        "t": table.column("event_timestamp").cast(pa.int64()).to_pylist(),
        "c": table.column("created_timestamp").cast(pa.int64()).to_pylist(),
    }
    values = [table.column(n).to_pylist() for n in names]
    out = {}
    for i in range(table.num_rows):
        out[(cols["k"][i], cols["t"][i], cols["c"][i])] = tuple(v[i] for v in values)
    return out


def values_equal(a: Any, b: Any, dtype: str, rel_tol: float = REL_TOL) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if dtype == "int64":
        return bool(a == b)
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=0.0)


def compare_view(
    view: FeatureView,
    stores: dict[str, pa.Table | None],
    rel_tol: float = REL_TOL,
    max_examples: int = 3,
) -> ViewParity:
    """Compare one view's stores from two engines (names -> tables)."""
    (a_name, a_tab), (b_name, b_tab) = stores.items()
    empty: dict[tuple[Any, int, int], tuple[Any, ...]] = {}
    a = _rows(view, a_tab) if a_tab is not None else empty
    b = _rows(view, b_tab) if b_tab is not None else empty
    schema_difference = None
    if a_tab is not None and b_tab is not None and _schema_text(a_tab) != _schema_text(b_tab):
        schema_difference = f"{a_name}: {_schema_text(a_tab)}; {b_name}: {_schema_text(b_tab)}"
    only_a = sorted(set(a) - set(b), key=str)
    only_b = sorted(set(b) - set(a), key=str)
    both = sorted(set(a) & set(b), key=str)
    features = []
    for i, feature in enumerate(view.features):
        diff = FeatureDiff(feature.name, feature.dtype, 0)
        for k in both:
            if not values_equal(a[k][i], b[k][i], feature.dtype, rel_tol):
                diff.differing += 1
                if len(diff.examples) < max_examples:
                    diff.examples.append((*k, a[k][i], b[k][i]))
        features.append(diff)
    return ViewParity(
        view=view.name,
        rows={a_name: len(a), b_name: len(b)},
        only_in={a_name: len(only_a), b_name: len(only_b)},
        only_examples={a_name: only_a[:max_examples], b_name: only_b[:max_examples]},
        schema_difference=schema_difference,
        features=features,
    )


def compare_offline(
    offline: dict[str, Path],
    views: Sequence[FeatureView] = FEATURE_VIEWS,
    rel_tol: float = REL_TOL,
) -> ParityReport:
    """Compare two offline stores (engine name -> offline root), view by view."""
    return ParityReport(
        views=[
            compare_view(
                v, {name: read_store(root / v.name) for name, root in offline.items()}, rel_tol
            )
            for v in views
        ],
        rel_tol=rel_tol,
    )


def engine_settings(out: Path, landing: Path) -> dict[str, EngineSettings]:
    return {name: EngineSettings(pitstore_home=out / name, landing_dir=landing) for name in ENGINES}


def run_engines(
    settings: Settings,
    watermarks: Sequence[datetime],
    out: Path,
    master: str | None = None,
    fresh: bool = False,
    rel_tol: float = REL_TOL,
    spark: Any = None,
) -> ParityReport:
    """Run both engines for each watermark (in order) on ``settings``' landing zone,
    each into its own home under ``out``, then compare their offline stores.

    The homes persist, so successive calls continue incrementally, like daily runs.
    """
    from pitstore.transform.dbt_engine import transform_dbt
    from pitstore.transform.spark.job import transform_spark

    if fresh and out.exists():
        shutil.rmtree(out)
    homes = engine_settings(out, settings.landing)
    for w in sorted(watermarks):
        transform_dbt(homes["dbt"], w)
        transform_spark(homes["spark"], w, master=master, spark=spark)
    return compare_offline({name: s.offline for name, s in homes.items()}, rel_tol=rel_tol)
