"""The renderer's structure: steps that name what they read, and reviewable generated SQL."""

from __future__ import annotations

import re

import pytest

from pitstore.core.spec import FEATURE_VIEWS, FeatureView
from pitstore.transform.codegen import generated_files
from pitstore.transform.render_sql import DUCKDB, SPARK, Dialect, Relations, render_view

MAX_LINE = 120


def spark_relations(view: FeatureView, stored: bool, horizon: bool) -> Relations:
    """The relations the Spark job passes (views.run_view), in each of its shapes."""
    return Relations(
        events=f"pit_{view.source}",
        labels="pit_labels" if view.uses_labels else None,
        stored=f"pit_stored_{view.name}" if stored else None,
        watermark_us="1767571200000000",
        previous_us="1767484800000000" if stored else "-1",
        horizon_us="1767398400000000" if horizon else None,
    )


SHAPES = [(v, s, h) for v in FEATURE_VIEWS for s in (False, True) for h in (False, True)]


def test_no_generated_line_is_longer_than_120() -> None:
    long = [
        f"{path.name}:{i}: {len(line)} chars"
        for path, text in generated_files().items()
        for i, line in enumerate(text.splitlines(), 1)
        if len(line) > MAX_LINE
    ]
    for view, stored, horizon in SHAPES:
        text = render_view(view, spark_relations(view, stored, horizon), SPARK).sql()
        long += [f"spark {view.name}: {len(x)}" for x in text.splitlines() if len(x) > MAX_LINE]
    assert not long, long


@pytest.mark.parametrize("dialect", [DUCKDB, SPARK], ids=lambda d: d.name)
@pytest.mark.parametrize(
    ("view", "stored", "horizon"), SHAPES, ids=lambda x: getattr(x, "name", str(x))
)
def test_each_step_reads_exactly_what_it_declares(
    dialect: Dialect, view: FeatureView, stored: bool, horizon: bool
) -> None:
    """Spark runs the steps as temp views and checkpoints the ones read twice: a
    reference that bypassed ``qualify`` or went uncounted would break either."""
    rendered = render_view(
        view, spark_relations(view, stored, horizon), dialect, qualify=lambda n: f"q__{n}"
    )
    names = [c.name for c in rendered.ctes]
    assert len(set(names)) == len(names) and all(n.startswith("q__") for n in names)
    plain = re.compile(r"\b(" + "|".join(n.removeprefix("q__") for n in names) + r")\b")
    earlier: set[str] = set()
    steps = [(c.name, c.sql, c.reads) for c in rendered.ctes]
    for name, sql, reads in [*steps, ("<final>", rendered.final, rendered.final_reads)]:
        assert sorted(re.findall(r"\bq__\w+", sql)) == sorted(reads), name
        assert set(reads) <= earlier, f"{name} reads a later step"
        assert plain.findall(sql) == [], f"{name} names a step without qualify"
        earlier.add(name)
    assert rendered.uses("q__view_events") > 1
    assert [c.name for c in rendered.ctes if c.constant] == ["q__previous_run"] + (
        ["q__horizon"] if horizon else []
    )
