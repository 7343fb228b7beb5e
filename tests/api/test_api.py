"""The notebook API (pitstore.Store) and its documented example, run for real."""

from __future__ import annotations

import re
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from pitstore import Store, UnknownEntityWarning
from pitstore.core import feast_store
from pitstore.core.config import Settings
from pitstore.core.spec import FEATURE_VIEWS

START = datetime(2026, 1, 5, tzinfo=UTC)
DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"


@pytest.fixture(scope="module")
def small_home(tmp_path_factory: pytest.TempPathFactory, redis_proc) -> Settings:  # type: ignore[no-untyped-def]
    """60 accounts x 10 days, two dbt runs, registered in Feast and materialized."""
    from pitstore.landing.zone import write_landing
    from pitstore.online.materialize import materialize_view
    from pitstore.synth.generate import GeneratorParams, generate
    from pitstore.transform.dbt_engine import transform_dbt

    home = tmp_path_factory.mktemp("api-home")
    url = f"redis://{redis_proc.host}:{redis_proc.port}/3"
    settings = Settings(pitstore_home=home, redis_url=url)
    write_landing(
        generate(GeneratorParams(accounts=60, merchants=12, days=10, start=START)), settings.landing
    )
    for day in (6, 10):
        transform_dbt(settings, START + timedelta(days=day))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PITSTORE_HOME", str(home))
        feast_store.apply(settings)
    for view in FEATURE_VIEWS:
        materialize_view(settings, view, START + timedelta(days=10))
    return settings


def test_the_documented_example_runs(small_home: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PITSTORE_HOME", str(small_home.home))
    monkeypatch.setenv("REDIS_URL", small_home.redis_url)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/python-api.md lost its example"
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {})


def test_feast_and_pitstore_conventions_give_the_same_frame(small_home: Settings) -> None:
    store = Store(home=small_home.home, redis_url=small_home.redis_url)
    ts = pd.to_datetime(["2026-01-12T10:00:00Z", "2026-01-14T23:00:00Z"])
    rows = {"account_id": ["A000001", "A000007"], "merchant_id": ["M00001", "M00002"]}
    feast_style = store.training_frame(pd.DataFrame({**rows, "event_timestamp": ts}))
    ours = store.training_frame(pd.DataFrame({**rows, "ts": ts}))
    assert "event_timestamp" in feast_style.columns and "ts" not in feast_style.columns
    pd.testing.assert_frame_equal(
        feast_style.rename(columns={"event_timestamp": "ts"}), ours, check_like=False
    )
    assert ours.attrs["audit"]["ok"] and ours.attrs["audit"]["mode"] == "as_known"
    assert ours["account_daily__txn_count_30d"].notna().all()
    with pytest.raises(ValueError, match="both"):
        store.training_frame(pd.DataFrame({**rows, "ts": ts, "event_timestamp": ts}))


def test_unknown_online_entity_warns(small_home: Settings) -> None:
    store = Store(home=small_home.home, redis_url=small_home.redis_url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = store.online([{"account_id": "A00001", "merchant_id": "M00001"}])
    assert any(issubclass(w.category, UnknownEntityWarning) for w in caught)
    assert got.filter(like="account_hourly__").isna().all(axis=None)
    with pytest.raises(ValueError, match="keys"):
        store.online({"account_id": "A000001"})
