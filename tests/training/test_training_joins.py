"""Point-in-time joins on random offline data with restatements: a brute-force
oracle, Feast 0.67 itself, and a hypothesis property (no future values)."""

from __future__ import annotations

import importlib
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pitstore.core.config import Settings
from pitstore.core.spec import ACCOUNT_HOURLY, FRAUD_V1, FeatureService, FeatureView
from pitstore.training.joins import (
    TS,
    UTC_US,
    StoreError,
    created_ts_column,
    feature_column,
    feature_columns,
    feature_ts_column,
    point_in_time_join,
)

START = datetime(2026, 1, 5, tzinfo=UTC)


def write_store(home: Path, rows: dict[str, list[dict]]) -> None:
    """rows[view] = dicts with key, T, W, values; one parquet per (view, W) like a run."""
    for view_name, view_rows in rows.items():
        view = next(v for v in FRAUD_V1.views if v.name == view_name)
        out = home / "offline" / view_name
        out.mkdir(parents=True, exist_ok=True)
        by_w: dict[datetime, list[dict]] = {}
        for r in view_rows:
            by_w.setdefault(r["W"], []).append(r)
        for w, rs in sorted(by_w.items()):
            rs.sort(key=lambda r: (r["key"], r["T"]))
            cols = {
                view.entity.join_key: pa.array([r["key"] for r in rs], pa.string()),
                "event_timestamp": pa.array([r["T"] for r in rs], UTC_US),
                "created_timestamp": pa.array([r["W"] for r in rs], UTC_US),
            }
            for f in view.features:
                typ = pa.int64() if f.dtype == "int64" else pa.float64()
                cols[f.name] = pa.array([r["values"][f.name] for r in rs], typ)
            pq.write_table(pa.table(cols), out / f"run-{w.strftime('%Y%m%dT%H%M%SZ')}.parquet")


def random_store(
    rng: random.Random,
    views: tuple[FeatureView, ...],
    entities: int,
    runs: int,
    run_every: timedelta,
) -> dict[str, list[dict]]:
    """Sparse rows at T <= W, with restatements (same key and T, later W)."""
    out: dict[str, list[dict]] = {}
    for view in views:
        prefix = "A" if view.entity.join_key == "account_id" else "M"
        keys = [f"{prefix}{i}" for i in range(entities)]
        rows, seen = [], set()
        for k in range(1, runs + 1):
            w = START + k * run_every
            n_grid = int((w - START) / view.cadence)
            for key in rng.sample(keys, rng.randint(1, len(keys))):
                for _ in range(rng.randint(1, 4)):
                    t = START + rng.randint(0, n_grid) * view.cadence
                    if (key, t, w) in seen:
                        continue
                    seen.add((key, t, w))
                    values = {
                        f.name: (
                            rng.randint(0, 3)
                            if f.dtype == "int64"
                            else rng.choice([0.0, 0.25, 1.5])
                        )
                        for f in view.features
                    }
                    rows.append({"key": key, "T": t, "W": w, "values": values})
        out[view.name] = rows
    return out


def random_requests(
    rng: random.Random, store: dict[str, list[dict]], n: int, end: datetime
) -> pd.DataFrame:
    times = sorted(
        {r["T"] for rs in store.values() for r in rs}
        | {r["W"] for rs in store.values() for r in rs}
    )
    rows = set()
    while len(rows) < n:
        if rng.random() < 0.4:  # exactly on a boundary or a watermark
            ts = rng.choice(times)
        else:
            ts = (
                START
                - timedelta(hours=30)
                + timedelta(
                    microseconds=rng.randint(
                        0, int((end - START).total_seconds() * 1e6) + 30 * 3_600_000_000
                    )
                )
            )
        ts = min(ts, end)
        rows.add((f"A{rng.randint(0, 4)}", f"M{rng.randint(0, 3)}", ts))
    df = pd.DataFrame(sorted(rows), columns=["account_id", "merchant_id", TS])
    df[TS] = df[TS].astype("datetime64[us, UTC]")
    return df


def oracle(
    store: dict[str, list[dict]], requests: pd.DataFrame, service: FeatureService, mode: str
) -> pd.DataFrame:
    """Brute force, straight from DESIGN.md."""
    out = []
    for req in requests.itertuples(index=False):
        ts = req.ts.to_pydatetime()
        row: dict = {}
        for view in service.views:
            key = getattr(req, view.entity.join_key)
            cands = [
                r
                for r in store.get(view.name, [])
                if r["key"] == key
                and r["T"] <= ts
                and r["T"] >= ts - view.ttl
                and (mode == "as_of" or r["W"] <= ts)
            ]
            best = max(cands, key=lambda r: (r["T"], r["W"]), default=None)
            for f in view.features:
                row[feature_column(view, f.name)] = None if best is None else best["values"][f.name]
            row[feature_ts_column(view)] = None if best is None else best["T"]
            row[created_ts_column(view)] = None if best is None else best["W"]
        out.append(row)
    return pd.DataFrame(out)


def ours(
    home: Path,
    requests: pd.DataFrame,
    service: FeatureService,
    mode: str,
    engine: str = "duckdb",
    spark: object = None,
) -> pd.DataFrame:
    req = pa.Table.from_pandas(requests, preserve_index=False)
    res = point_in_time_join(Settings(pitstore_home=home), req, service, mode, engine, spark)
    return res.table.to_pandas().drop(columns="__row")


def assert_same_values(got: pd.DataFrame, want: pd.DataFrame, columns: list[str]) -> None:
    a = got[columns].astype("float64").reset_index(drop=True)
    b = want[columns].astype("float64").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def ts_cols(service: FeatureService) -> list[str]:
    return [c for v in service.views for c in (feature_ts_column(v), created_ts_column(v))]


def assert_same_ts(got: pd.DataFrame, want: pd.DataFrame, service: FeatureService) -> None:
    for col in ts_cols(service):
        g = [None if pd.isna(x) else x.to_pydatetime() for x in got[col]]
        w = [None if (x is None or pd.isna(x)) else x for x in want[col]]
        assert g == w, col


@pytest.fixture(scope="module")
def random_home(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("pit-random")
    rng = random.Random(42)
    store = random_store(rng, FRAUD_V1.views, entities=5, runs=10, run_every=timedelta(hours=7))
    write_store(home, store)
    end = START + 10 * timedelta(hours=7)
    requests = random_requests(rng, store, 400, end)
    return home, store, requests


@pytest.fixture(params=["asof", "hash"])
def winners_by(request, monkeypatch):  # type: ignore[no-untyped-def]
    """Both ways of finding the winners: ASOF JOIN (small views), hash join (large)."""
    import pitstore.training.joins

    limit = 10**12 if request.param == "asof" else -1
    monkeypatch.setattr(pitstore.training.joins, "ASOF_MAX_ROWS", limit)
    return request.param


@pytest.mark.parametrize("mode", ["as_known", "as_of"])
def test_join_equals_bruteforce_oracle(random_home, mode, winners_by):  # type: ignore[no-untyped-def]
    home, store, requests = random_home
    got = ours(home, requests, FRAUD_V1, mode)
    want = oracle(store, requests, FRAUD_V1, mode)
    assert_same_values(got, want, feature_columns(FRAUD_V1))
    assert_same_ts(got, want, FRAUD_V1)
    # The random data really exercises restatements and the mode difference.
    assert not got[feature_columns(FRAUD_V1)].isna().all().all()


@pytest.mark.parametrize("mode", ["as_known", "as_of"])
@pytest.mark.parametrize("fault", ["event_after_created", "duplicate_version"])
def test_store_faults_raise(tmp_path, mode, fault, winners_by):  # type: ignore[no-untyped-def]
    """A row with T > W, or two rows for one (key, T, W), is a store error, not an answer."""
    values = {f.name: 1 if f.dtype == "int64" else 0.5 for f in ACCOUNT_HOURLY.features}
    w = START + timedelta(hours=5)
    rows = [{"key": "A0", "T": START + timedelta(hours=3), "W": w, "values": values}]
    if fault == "duplicate_version":
        rows.append({**rows[0], "values": {**values, "txn_count_1h": 2}})
    else:
        rows.append({"key": "A0", "T": w + timedelta(hours=1), "W": w, "values": values})
    write_store(tmp_path, {ACCOUNT_HOURLY.name: rows})
    service = FeatureService("t", (ACCOUNT_HOURLY,), "one view")
    requests = pd.DataFrame({"account_id": ["A0"], TS: [w + timedelta(hours=2)]})
    requests[TS] = requests[TS].astype("datetime64[us, UTC]")
    with pytest.raises(StoreError, match="T <= W" if fault == "event_after_created" else "same"):
        ours(tmp_path, requests, service, mode)


def test_modes_differ_on_restated_data(random_home):  # type: ignore[no-untyped-def]
    home, _, requests = random_home
    known = ours(home, requests, FRAUD_V1, "as_known")
    of = ours(home, requests, FRAUD_V1, "as_of")
    cols = feature_columns(FRAUD_V1)
    diff = known[cols].astype("float64").fillna(-1) != of[cols].astype("float64").fillna(-1)
    assert diff.to_numpy().sum() > 50


@pytest.fixture(scope="module")
def feast_store(random_home):  # type: ignore[no-untyped-def]
    """Feast over the random store."""
    home, _, _ = random_home
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("PITSTORE_HOME", str(home))
    from pitstore.core import feast_store

    def reload_defs() -> None:
        if str(feast_store.FEATURE_REPO) not in sys.path:
            sys.path.insert(0, str(feast_store.FEATURE_REPO))
        for name in ("entities", "data_sources", "feature_views", "feature_services"):
            if name in sys.modules:
                importlib.reload(sys.modules[name])

    reload_defs()
    settings = Settings(pitstore_home=home)
    feast_store.apply(settings)
    yield feast_store.get_store(settings)
    monkeypatch.undo()
    reload_defs()


@pytest.mark.parametrize("mode", ["as_known", "as_of"])
def test_join_equals_feast(random_home, feast_store, mode):  # type: ignore[no-untyped-def]
    home, _, requests = random_home
    entity_df = requests.rename(columns={TS: "event_timestamp"})
    kwargs = {"filter_by_created_timestamp": True} if mode == "as_known" else {}
    feast_df = feast_store.get_historical_features(
        entity_df=entity_df,
        features=feast_store.get_feature_service("fraud_v1"),
        full_feature_names=True,
        **kwargs,
    ).to_df()
    keys = ["account_id", "merchant_id", "event_timestamp"]
    feast_df["event_timestamp"] = feast_df["event_timestamp"].astype("datetime64[us, UTC]")
    feast_df = feast_df.sort_values(keys).reset_index(drop=True)
    got = ours(home, requests, FRAUD_V1, mode).rename(columns={TS: "event_timestamp"})
    got = pd.concat([requests.rename(columns={TS: "event_timestamp"}), got], axis=1)
    got = got.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[keys], feast_df[keys])
    assert_same_values(got, feast_df, feature_columns(FRAUD_V1))


@pytest.mark.spark
@pytest.mark.parametrize("mode", ["as_known", "as_of"])
def test_spark_engine_equals_duckdb(random_home, spark, mode):  # type: ignore[no-untyped-def]
    home, _, requests = random_home
    small = requests.iloc[:120]
    duck = ours(home, small, FRAUD_V1, mode)
    spk = ours(home, small, FRAUD_V1, mode, engine="spark", spark=spark)
    pd.testing.assert_frame_equal(duck, spk)


# --- property: no frame ever contains a future value -------------------------

ONE_VIEW = FeatureService("hourly_only", (ACCOUNT_HOURLY,), "test")
HOURLY_ROW = st.tuples(st.integers(0, 2), st.integers(0, 40), st.integers(0, 30), st.integers(0, 5))


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(HOURLY_ROW, min_size=1, max_size=40),
    req=st.lists(
        st.tuples(st.integers(0, 2), st.integers(-3_600, 80 * 3_600)),
        min_size=1,
        max_size=25,
        unique=True,
    ),
)
def test_no_future_values(rows, req):  # type: ignore[no-untyped-def]
    """rows: (account, T hour, W - T in hours, value); requests: (account, seconds)."""
    store, seen = {"account_hourly": []}, set()
    for acct, t_h, lag, val in rows:
        t = START + timedelta(hours=t_h)
        w = t + timedelta(hours=lag)
        if (acct, t, w) in seen:
            continue
        seen.add((acct, t, w))
        values = {f.name: (val if f.dtype == "int64" else val / 2) for f in ACCOUNT_HOURLY.features}
        store["account_hourly"].append({"key": f"A{acct}", "T": t, "W": w, "values": values})
    requests = pd.DataFrame(
        [(f"A{a}", "M0", START + timedelta(seconds=s)) for a, s in req],
        columns=["account_id", "merchant_id", TS],
    )
    requests[TS] = requests[TS].astype("datetime64[us, UTC]")
    with tempfile.TemporaryDirectory() as tmp:
        write_store(Path(tmp), store)
        for mode in ("as_known", "as_of"):
            got = ours(Path(tmp), requests, ONE_VIEW, mode)
            ft = got[feature_ts_column(ACCOUNT_HOURLY)]
            ct = got[created_ts_column(ACCOUNT_HOURLY)]
            ts = requests[TS]
            assert not (ft > ts).any()
            assert not (ft < ts - ACCOUNT_HOURLY.ttl).any()
            if mode == "as_known":
                assert not (ct > ts).any()
            want = oracle(store, requests, ONE_VIEW, mode)
            assert_same_values(got, want, feature_columns(ONE_VIEW))
