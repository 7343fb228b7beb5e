"""Training frames, labels, fingerprints, the model and its registry, on a small
real pipeline (generate -> dbt transforms -> Feast apply), built once per module."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pitstore.core import feast_store
from pitstore.core.config import Settings
from pitstore.core.spec import FRAUD_V1, FeatureService
from pitstore.models.registry import CARD_KEYS, list_models, load_model, promote
from pitstore.training.frames import (
    DuplicateRequestError,
    FrameError,
    FutureTimestampError,
    MissingColumnError,
    NullKeyError,
    TimestampError,
    UnknownServiceError,
    build_frame,
    table_bytes,
    write_frame,
)
from pitstore.training.labels import LabelPolicy, fraud_requests
from pitstore.training.manifest import verify
from pitstore.training.pipeline import build_fraud_frame, train_fraud

START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 28
RUN_EVERY = 4  # days between batch runs: fewer dbt runs keep the fixture ~1 minute
CUTOFF = START + timedelta(days=DAYS)
POLICY = LabelPolicy(CUTOFF, maturity=timedelta(days=7))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """400 accounts x 28 days, a dbt run every 4 days (7 runs)."""
    from pitstore.landing.zone import write_landing
    from pitstore.synth.generate import GeneratorParams, generate
    from pitstore.transform.dbt_engine import transform_dbt

    home = tmp_path_factory.mktemp("pit-pipeline")
    settings = Settings(pitstore_home=home)
    params = GeneratorParams(accounts=400, merchants=60, days=DAYS, seed=7, start=START)
    write_landing(generate(params), settings.landing)
    for day in range(RUN_EVERY, DAYS + 1, RUN_EVERY):
        transform_dbt(settings, START + timedelta(days=day))
    with pytest.MonkeyPatch.context() as mp:  # the Feast registry (for the fingerprint)
        mp.setenv("PITSTORE_HOME", str(home))
        reload_feast_definitions()
        feast_store.apply(settings)
    reload_feast_definitions()
    return settings


def reload_feast_definitions() -> None:
    """feature_repo/data_sources.py reads PITSTORE_HOME at import time."""
    if str(feast_store.FEATURE_REPO) not in sys.path:
        sys.path.insert(0, str(feast_store.FEATURE_REPO))
    for name in ("entities", "data_sources", "feature_views", "feature_services"):
        if name in sys.modules:
            importlib.reload(sys.modules[name])


def sample_requests(n: int = 300) -> pd.DataFrame:
    accounts = [f"A{i:06d}" for i in range(0, 400, 3)]
    df = pd.DataFrame(
        {
            "account_id": [accounts[i % len(accounts)] for i in range(n)],
            "merchant_id": [f"M{i % 50:05d}" for i in range(n)],
            "ts": [START + timedelta(days=2, minutes=37 * i) for i in range(n)],
        }
    )
    df["ts"] = df["ts"].astype("datetime64[us, UTC]")
    return df


def test_ids_match_generator(pipeline: Settings) -> None:
    frame = build_frame(pipeline, sample_requests(20))
    assert frame.audit["missing"]["account_hourly"]["unknown_entity"] == 0


def test_fraud_frame_has_no_leak_and_counts_labels(pipeline: Settings) -> None:
    frame = build_fraud_frame(pipeline, POLICY)
    audit = frame.audit
    assert audit["ok"] and audit["leaks"]["event_ts_after_ts"] == 0
    assert audit["leaks"]["created_ts_after_ts"] == 0
    assert audit["vs_as_of"]["values_changed"] > 0  # as_of would leak restated values
    labels = audit["labels"]
    assert labels["by_status"]["immature"] == labels["immature_excluded"] > 0
    assert labels["rows"] == frame.table.num_rows
    assert labels["by_status"]["fraud"] > 10
    assert set(audit["feature_age_hours"]) == {v.name for v in FRAUD_V1.views}
    df = frame.to_pandas()
    assert (df["ts"] < pd.Timestamp(CUTOFF - POLICY.maturity)).all()


def test_labels_respect_their_own_time(pipeline: Settings) -> None:
    early = LabelPolicy(START + timedelta(days=16), maturity=timedelta(days=2), immature="mark")
    rows, audit = fraud_requests(pipeline, early)
    late_rows, _ = fraud_requests(pipeline, LabelPolicy(CUTOFF, maturity=timedelta(days=2)))
    fraud_early = set(rows.filter(pa.compute.equal(rows["label"], 1))["transaction_id"].to_pylist())
    fraud_late = set(
        late_rows.filter(pa.compute.equal(late_rows["label"], 1))["transaction_id"].to_pylist()
    )
    assert fraud_early < fraud_late  # later cutoff knows strictly more chargebacks
    assert audit["labels"]["fraud_labels_known_only_after_cutoff"] > 0
    assert audit["labels"]["immature_marked"] == rows["label"].null_count > 0
    with pytest.raises(ValueError, match="after the newest run"):
        fraud_requests(pipeline, LabelPolicy(CUTOFF + timedelta(days=1)))


def test_same_inputs_same_fingerprint_and_bytes(pipeline: Settings, tmp_path: Path) -> None:
    a = build_frame(pipeline, sample_requests())
    b = build_frame(pipeline, sample_requests())
    assert a.manifest["fingerprint"] == b.manifest["fingerprint"]
    assert table_bytes(a.table) == table_bytes(b.table)
    write_frame(a, tmp_path / "f")
    result = verify(pipeline, tmp_path / "f" / "manifest.json")
    assert result["identical"] and result["fingerprint_match"], result["changes"]
    assert a.manifest["inputs"]["registry_sha256"] is not None
    # Changed definitions -> a new fingerprint.
    view = FRAUD_V1.views[0]
    fewer = dataclasses.replace(view, aggregations=view.aggregations[:-1])
    changed = FeatureService("fraud_v1", (fewer, *FRAUD_V1.views[1:]), "changed")
    c = build_frame(pipeline, sample_requests(), service=changed)
    assert c.manifest["fingerprint"] != a.manifest["fingerprint"]
    # Changed request rows -> a new fingerprint; changed mode too.
    d = build_frame(pipeline, sample_requests(299))
    e = build_frame(pipeline, sample_requests(), mode="as_of")
    assert (
        len({a.manifest["fingerprint"], d.manifest["fingerprint"], e.manifest["fingerprint"]}) == 3
    )


def test_verify_says_what_changed(pipeline: Settings, tmp_path: Path) -> None:
    home = tmp_path / "copy"
    shutil.copytree(pipeline.home, home, ignore=shutil.ignore_patterns("warehouse.duckdb*"))
    copy = Settings(pitstore_home=home)
    frame = build_frame(copy, sample_requests())
    write_frame(frame, tmp_path / "f")
    # Restate one value in a file the frame read.
    read = frame.join.files_read["account_daily"][-1]
    t = pq.read_table(read)
    col = t.column_names.index("txn_count_7d")
    t = t.set_column(col, "txn_count_7d", pa.compute.add(t.column(col), 1000))
    pq.write_table(t, read)
    result = verify(copy, tmp_path / "f" / "manifest.json")
    assert not result["identical"]
    text = "\n".join(result["changes"])
    assert f"offline file changed: offline/account_daily/{read.name}" in text
    assert "account_daily__txn_count_7d" in text


def test_bad_inputs_give_clear_errors(pipeline: Settings) -> None:
    good = sample_requests(5)
    cases = []
    df = good.copy()
    df.loc[1, "account_id"] = None
    cases.append((df, NullKeyError, "null account_id"))
    naive = good.copy()
    naive["ts"] = naive["ts"].dt.tz_localize(None)
    cases.append((naive, TimestampError, "naive"))
    text = good.copy()
    text["ts"] = ["2026-01-08T10:00:00+00:00", "2026-01-08 10:00", "x", "y", "z"]
    cases.append((text, TimestampError, "no UTC offset"))
    bad = good.copy()
    bad["ts"] = ["2026-01-08T10:00:00+00:00", "yesterday", "a", "b", "c"]
    cases.append((bad, TimestampError, "not an ISO-8601"))
    future = good.copy()
    future.loc[2, "ts"] = pd.Timestamp("2030-01-01", tz="UTC")
    cases.append((future, FutureTimestampError, "newest watermark"))
    cases.append((pd.concat([good, good.iloc[:1]]), DuplicateRequestError, "more than once"))
    cases.append((good.drop(columns="merchant_id"), MissingColumnError, "merchant_id"))
    for df, exc, match in cases:
        with pytest.raises(exc, match=match):
            build_frame(pipeline, df)
    with pytest.raises(UnknownServiceError, match="fraud_v1"):
        build_frame(pipeline, good, service="fraud_v9")


def test_unknown_entity_gives_nulls_counted_in_audit(pipeline: Settings) -> None:
    df = sample_requests(10)
    df.loc[[0, 3], "account_id"] = "NOBODY"
    frame = build_frame(pipeline, df)
    assert frame.audit["missing"]["account_daily"]["unknown_entity"] == 2
    out = frame.to_pandas()
    assert out.loc[[0, 3], "account_daily__txn_count_7d"].isna().all()


def test_model_beats_baseline_and_loader_contract(pipeline: Settings) -> None:
    report = train_fraud(pipeline, POLICY, compare_modes=True)
    m = report.card["metrics"]
    # Measured on this data (seed 7, 4-day runs, 30% out-of-time validation):
    # PR-AUC 0.116 at a fraud base rate of 0.0028 (41x), ROC-AUC 0.686, 15 frauds.
    assert m["fraud"] >= 10
    assert m["pr_auc"] >= 10 * m["base_rate"], m
    assert m["roc_auc"] >= 0.6, m
    assert set(CARD_KEYS) <= set(report.card)
    low, high = report.card["review_band"]
    assert 0 <= low <= high <= 1
    assert report.comparison and "as_of" in report.comparison
    folder = pipeline.home / "models" / report.version
    for name in (
        "model.joblib",
        "model_card.json",
        "model_card.md",
        "pr_curve.png",
        "calibration.png",
    ):
        assert (folder / name).exists(), name
    promote(pipeline, report.version)
    loaded = load_model(pipeline, "promoted")
    assert loaded.version == report.version
    assert loaded.feature_columns[: len(FRAUD_V1.views[0].features)] == [
        f"account_hourly__{f.name}" for f in FRAUD_V1.views[0].features
    ]
    frame = report.frame.to_pandas()
    from pitstore.training.model import add_request_features

    scores = loaded.predict_proba(add_request_features(frame.head(50), FRAUD_V1))
    assert scores.shape == (50,) and ((scores >= 0) & (scores <= 1)).all()
    assert [m["version"] for m in list_models(pipeline) if m["promoted"]] == [report.version]


def test_cli_frame_verify_and_models(pipeline: Settings, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pitstore.cli.app import app

    monkeypatch.setenv("PITSTORE_HOME", str(pipeline.home))
    runner = CliRunner()
    out = tmp_path / "frame"
    res = runner.invoke(
        app,
        [
            "training-frame",
            "--out",
            str(out),
            "--labels-known-by",
            CUTOFF.date().isoformat(),
            "--label-maturity-days",
            "7",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((out / "audit.json").read_text())["leaks"]["event_ts_after_ts"] == 0
    res = runner.invoke(app, ["training-frame", "verify", str(out / "manifest.json")])
    assert res.exit_code == 0 and "identical" in res.output, res.output
    res = runner.invoke(app, ["models", "promote", "no-such-version"])
    assert res.exit_code == 2 and "no model version" in res.output


def test_frame_commands_allocate_through_the_system_pool() -> None:
    """``use_system_allocator`` (called by ``pitstore training-frame`` and
    ``pitstore train``) makes malloc Arrow's default pool; in a fresh process,
    since the pool is process-wide."""
    import subprocess

    code = (
        "import pyarrow as pa; from pitstore.training.joins import use_system_allocator; "
        "before = pa.default_memory_pool().backend_name; use_system_allocator(); "
        "print(before, pa.default_memory_pool().backend_name)"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    before, after = out.stdout.split()
    assert before != "system" and after == "system"


def test_frame_bytes_do_not_depend_on_chunk_layout() -> None:
    """A frame read back from its file comes in chunks; verify must get the same bytes."""
    import numpy as np

    n = (1 << 20) + 4_000
    whole = pa.table({"a": np.arange(n), "b": np.linspace(0, 1, n)})
    chunked = pa.concat_tables([whole.slice(0, 1 << 20), whole.slice(1 << 20)])
    assert chunked.column("a").num_chunks == 2
    assert table_bytes(whole) == table_bytes(chunked)


def test_train_on_a_frame_you_built(pipeline: Settings, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`pitstore train --frame DIR` and Store.train(frame) train on a user's frame; the
    card names that frame's fingerprint; the same frame gives the same metrics."""
    from pitstore import Store
    from pitstore.cli.app import app

    monkeypatch.setenv("PITSTORE_HOME", str(pipeline.home))
    runner = CliRunner()
    out = tmp_path / "f"
    res = runner.invoke(
        app, ["training-frame", "--labels-known-by", CUTOFF.isoformat(), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "--frame", str(out)])
    assert res.exit_code == 0, res.output
    version = res.output.split("model ")[1].split()[0]
    card = json.loads((pipeline.home / "models" / version / "model_card.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert card["frame_fingerprint"] == manifest["fingerprint"]
    assert card["label_policy"] == {"source": "the frame's own label column"}

    # The notebook path: a user's own requests with their own labels.
    requests, _ = fraud_requests(pipeline, POLICY)
    store = Store(home=pipeline.home)
    frame = store.training_frame(requests.to_pandas())
    trained = store.train(frame)
    assert trained["frame_fingerprint"] == frame.attrs["manifest"]["fingerprint"]
    assert trained["metrics"]["fraud"] > 0 and trained["label_cutoff"] is None

    # Wrong input: no label column, both or neither option, not a frame directory.
    with pytest.raises(FrameError, match="label"):
        store.train(store.training_frame(requests.drop_columns(["label"]).to_pandas()))
    res = runner.invoke(app, ["train"])
    assert res.exit_code == 2 and "one of them" in res.output
    res = runner.invoke(app, ["train", "--frame", str(tmp_path)])
    assert res.exit_code == 2 and "not a frame directory" in res.output
