"""dbt's own data_tests and unit_tests pass on a real run."""

from __future__ import annotations

import json
from datetime import timedelta

from landing_factory import write_events
from spine_helpers import START, random_events

from pitstore.core.config import Settings
from pitstore.core.timeutil import to_us
from pitstore.landing.zone import partition_files, read_manifest
from pitstore.transform.dbt_engine import run_dbt, transform_dbt


def test_dbt_data_and_unit_tests_pass(settings: Settings) -> None:
    events, labels = random_events(21, days=2, n=60)
    write_events(settings.landing, START, 2, events, labels)
    w = START + timedelta(days=2)
    transform_dbt(settings, w)
    manifest = read_manifest(settings.landing)
    dbt_vars = {
        "watermark_us": to_us(w),
        "transaction_files": [str(p) for p in partition_files(manifest, "transactions", w)],
        "label_files": [str(p) for p in partition_files(manifest, "labels", w)],
        "drifted_files": [],
    }
    # Raises TransformError naming the failing tests if any data or unit test fails.
    run_dbt(["test", "--vars", json.dumps(dbt_vars)], settings)
