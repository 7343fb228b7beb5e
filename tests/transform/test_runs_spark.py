"""The Spark engine records its runs in the marker format the dbt engine uses."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from landing_factory import write_events
from spine_helpers import START, random_events

from pitstore.core.config import Settings
from pitstore.core.runs import TransformError, completed_watermarks
from pitstore.core.spec import FEATURE_VIEWS
from pitstore.core.timeutil import stamp, to_us
from pitstore.transform.dbt_engine import transform_dbt
from pitstore.transform.spark.dedupe import DATASETS
from pitstore.transform.spark.job import Layout, run_job

pytestmark = pytest.mark.spark


def test_spark_writes_the_shared_marker(spark: Any, tmp_path: Path) -> None:
    settings = Settings(pitstore_home=tmp_path / "home")
    events, labels = random_events(5, days=3, n=40)
    write_events(settings.landing, START, 3, events, labels)
    layout = Layout.from_settings(settings)
    w1 = START + timedelta(days=1)
    w2 = START + timedelta(days=1, hours=12, microseconds=500_000)
    run_job(spark, layout, w1)
    summary = run_job(spark, layout, w2)

    assert completed_watermarks(settings) == [to_us(w1), to_us(w2)]
    marker = json.loads((settings.offline / "_runs" / f"run-{stamp(w2)}.json").read_text())
    assert marker["engine"] == "spark"
    assert marker["watermark"] == "2026-03-28T12:00:00.500000+00:00"
    assert marker["summary"]["rows_appended"] == summary.rows_appended
    assert marker["engine_state"]["state_base_us"] == to_us(w1)  # read the state of w1
    expected = {f"{v.name}/run-{stamp(w2)}.parquet" for v in FEATURE_VIEWS}
    expected |= {f"_state/{d}/run-{stamp(w2)}.parquet" for d in DATASETS}
    assert set(marker["files"]) == expected
    for rel, entry in marker["files"].items():
        data = (settings.offline / rel).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    # The old per-engine summaries are gone.
    assert not settings.runs.exists()
    # The dbt engine reads the same markers: it will not continue a Spark history.
    with pytest.raises(TransformError, match="made by the spark engine"):
        transform_dbt(settings, START + timedelta(days=2))
