"""`make monitor`: a small world with a documented shift, scored through the real API,
and the monitor's HTML report of it.

1. generate a small world (pitstore/synth) with ``zero_field`` on ``amount``
   from day 52 (the batch extract writes 0; the payment switch still sends
   real amounts), write the landing zone, run the daily batch (dbt) on days
   35 and 42, then daily 49..56, and 63;
2. train a model on days 35..42 (before the bug) and promote it;
3. for each day 49..55: materialize the online store (Redis at ``REDIS_URL``)
   as that day's run left it, and POST the day's transactions to the scoring
   app (``serving.app.create_app``, in process) with an API key made here;
4. run ``pitstore monitor`` over the audit log and write monitor.json,
   alerts.json and monitor.html.

The API stamps each decision with the wall clock, so the whole replay lands
on today's date in the audit log and the report's window is today: input and
score drift are judged over the replayed week (performance waits for labels
that mature after today). ``python -m pitstore.monitor.demo --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pitstore.synth.generate import GeneratorParams

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
DAYS = 63
RUNS = (35, 42, *range(49, 57), 63)
SHIFT_DAY = 52
SCORED = range(49, 56)
MARK = ".monitor-demo"  # what lets a rerun wipe the home it made


def sent_amounts(params: GeneratorParams) -> dict[str, int]:
    """What the payment switch sent: the unshifted world's amounts, by transaction."""
    from pitstore.synth.generate import generate

    tables = generate(replace(params, shifts=())).tables
    parts = [v for k, v in sorted(tables.items()) if k[0] == "transactions" and k[2] == 0]
    df = pa.concat_tables(parts).to_pandas()
    ok = df["transaction_id"].notna() & (df["amount"] > 0) & (df["amount"].abs() < 1e12)
    return dict(
        zip(df.loc[ok, "transaction_id"], df.loc[ok, "amount"].astype("int64"), strict=True)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path("data/monitor-demo"))
    ap.add_argument("--out", type=Path, default=None, help="default: <home>/report")
    ap.add_argument("--accounts", type=int, default=400)
    args = ap.parse_args(argv)
    home = args.home.resolve()
    out: Path = args.out or home / "report"
    if home.exists() and any(home.iterdir()):
        if not (home / MARK).exists():  # never wipe a directory the demo did not make
            print(f"{home} exists and is not a monitor demo home: choose another --home")
            return 2
        shutil.rmtree(home)  # a fresh world each time
    home.mkdir(parents=True, exist_ok=True)
    (home / MARK).touch()
    # feature_repo/ reads PITSTORE_HOME when first imported: set it before anything does
    os.environ["PITSTORE_HOME"] = str(home)
    from fastapi.testclient import TestClient

    from pitstore.core import feast_store
    from pitstore.core.config import Settings
    from pitstore.core.spec import FRAUD_V1
    from pitstore.landing.zone import write_landing
    from pitstore.models.registry import load_model, promote
    from pitstore.monitor.html import render
    from pitstore.monitor.report import Window, monitor
    from pitstore.monitor.settings import MonitorSettings
    from pitstore.online.materialize import materialize_view
    from pitstore.serving.app import create_app
    from pitstore.serving.auth import SCOPES, entry_for, new_key
    from pitstore.serving.settings import ServingSettings
    from pitstore.synth.generate import generate
    from pitstore.synth.shifts import Shift
    from pitstore.training.labels import LabelPolicy
    from pitstore.training.pipeline import build_fraud_frame, train_fraud
    from pitstore.transform.dbt_engine import transform_dbt

    settings = Settings(pitstore_home=home)
    shift = Shift("zero_field", SHIFT_DAY)
    params = GeneratorParams(
        accounts=args.accounts, merchants=300, days=DAYS, seed=7, start=START, shifts=(shift,)
    )
    print(f"world: {args.accounts} accounts, {DAYS} days, {shift} ({home})", flush=True)
    write_landing(generate(params), settings.landing)
    for d in RUNS:
        transform_dbt(settings, START + timedelta(days=d))
    feast_store.apply(settings)
    train = LabelPolicy(
        START + timedelta(days=50),
        maturity=timedelta(days=7),
        start=START + timedelta(days=35),
        end=START + timedelta(days=43),
    )
    version = train_fraud(settings, train).version
    promote(settings, version)
    print(f"model {version} trained on days 35..42 and promoted", flush=True)

    window = LabelPolicy(
        START + timedelta(days=DAYS),
        immature="mark",
        start=START + timedelta(days=SCORED[0]),
        end=START + timedelta(days=SCORED[-1] + 1),
    )
    rows = build_fraud_frame(settings, window, mode="as_known", compare_modes=False).to_pandas()
    amounts = sent_amounts(params)
    key = new_key()
    audit = home / "audit"
    ss = ServingSettings(
        home=home,
        redis_url=settings.redis_url,
        audit_dir=audit,
        max_event_age_s=10**9,  # a replay of past days, as a store-and-forward would send
        budget_ms=2000,
        api_keys=entry_for("demo", key, list(SCOPES)),
    )
    ts = pd.to_datetime(rows["ts"], utc=True)
    counts: dict[str, int] = {}
    with TestClient(create_app(ss)) as client:
        for d in SCORED:
            for view in FRAUD_V1.views:  # the online store as day d's run left it
                materialize_view(settings, view, START + timedelta(days=d), full=d == SCORED[0])
            day = rows[(ts >= START + timedelta(days=d)) & (ts < START + timedelta(days=d + 1))]
            for r in day.sort_values("ts").to_dict("records"):
                res = client.post(
                    "/v1/score",
                    headers={"authorization": f"Bearer {key}"},
                    json={
                        "transaction_id": r["transaction_id"],
                        "account_id": r["account_id"],
                        "card_id": "C0",
                        "merchant_id": r["merchant_id"],
                        "merchant_category": r["merchant_category"],
                        "amount": int(amounts.get(r["transaction_id"], r["amount"])),
                        "currency": r["currency"],
                        "channel": r["channel"],
                        "country": r["country"],
                        "event_ts": r["ts"].isoformat(),
                    },
                )
                counts[str(res.status_code)] = counts.get(str(res.status_code), 0) + 1
            print(f"day {d}: {len(day)} transactions posted", flush=True)
    print(f"answers by status: {counts}", flush=True)

    today = datetime.now(UTC).date()
    doc = monitor(
        settings, audit, load_model(settings, version), Window(today, today), MonitorSettings()
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "monitor.json").write_text(json.dumps(doc, indent=2, default=str))
    (out / "alerts.json").write_text(json.dumps(doc["alerts"], indent=2))
    (out / "monitor.html").write_text(render(doc))
    first = doc["alerts"][:3]
    print(f"{len(doc['alerts'])} alert(s); first: {[(a['kind'], a['subject']) for a in first]}")
    print(f"report: {(out / 'monitor.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
