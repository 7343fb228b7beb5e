"""`pitstore monitor` on a small real home: a window from the same distribution
gives no alert, a shifted input is named first, the calibration verdict waits
for label maturity, and the HTML report renders in a real browser.

The home: a generated landing zone, dbt runs, a model trained by
training.pipeline.train_fraud, and audit logs of decisions made by
serving.scoring's own functions (built once per module, ~1-3 minutes).

Timeline (days from START, a Monday): batch runs on days 35 and 42, daily from
49 to 56 (hourly features stay fresh in the monitored window: stale ones fall
back), then 63; the model trains on transactions of days 35..42 (30-day features
warm, labels known by day 50, 7 days' maturity); the monitored window is days
49..55 (one week), labels known by day 63 at the latest.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pitstore.core import feast_store
from pitstore.core.config import Settings
from pitstore.core.runs import read_markers
from pitstore.core.timeutil import to_us
from pitstore.models.registry import LoadedModel, load_model, promote
from pitstore.monitor.reference import cache_path
from pitstore.monitor.report import Window, monitor
from pitstore.monitor.settings import MonitorSettings
from pitstore.serving import fallback as fb
from pitstore.serving.audit import AuditLog, new_decision_id
from pitstore.serving.schemas import ScoreRequest
from pitstore.serving.scoring import decide, model_input, request_features
from pitstore.serving.shadow import failed, shadow_score
from pitstore.synth.generate import GeneratorParams
from pitstore.synth.shifts import Shift
from pitstore.training.frames import resolve_service
from pitstore.training.labels import LabelPolicy
from pitstore.training.pipeline import build_fraud_frame, train_fraud

START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 63
RUNS = (35, 42, *range(49, 57), 63)
TRAIN = LabelPolicy(
    START + timedelta(days=50),
    maturity=timedelta(days=7),
    start=START + timedelta(days=35),
    end=START + timedelta(days=43),
)
WINDOW = (START + timedelta(days=49), START + timedelta(days=56))


def day(n: int) -> str:
    return (START + timedelta(days=n)).date().isoformat()


def build_home(home: Path, shifts: tuple[Shift, ...] = ()) -> Settings:
    from pitstore.landing.zone import write_landing
    from pitstore.synth.generate import generate
    from pitstore.transform.dbt_engine import transform_dbt

    settings = Settings(pitstore_home=home)
    params = world_params(shifts)
    write_landing(generate(params), settings.landing)
    for d in RUNS:
        transform_dbt(settings, START + timedelta(days=d))
    import pytest

    with pytest.MonkeyPatch.context() as mp:  # the Feast registry (for the fingerprint)
        mp.setenv("PITSTORE_HOME", str(home))
        reload_feast_definitions()
        feast_store.apply(settings)
    reload_feast_definitions()
    return settings


def world_params(shifts: tuple[Shift, ...] = ()) -> GeneratorParams:
    return GeneratorParams(
        accounts=400, merchants=300, days=DAYS, seed=7, start=START, shifts=shifts
    )


def reload_feast_definitions() -> None:
    """feature_repo/data_sources.py reads PITSTORE_HOME at import time."""
    if str(feast_store.FEATURE_REPO) not in sys.path:
        sys.path.insert(0, str(feast_store.FEATURE_REPO))
    for name in ("entities", "data_sources", "feature_views", "feature_services"):
        if name in sys.modules:
            importlib.reload(sys.modules[name])


def window_rows(settings: Settings) -> pd.DataFrame:
    """The window's transactions with the features the online store served then
    (as_known: what the batch runs had published by each transaction's time)."""
    policy = LabelPolicy(
        START + timedelta(days=DAYS), immature="mark", start=WINDOW[0], end=WINDOW[1]
    )
    return build_fraud_frame(settings, policy, mode="as_known", compare_modes=False).to_pandas()


def write_decisions(
    audit_dir: Path,
    model: LoadedModel,
    rows: pd.DataFrame,
    amount_factor: int = 1,
    amounts: dict[str, int] | None = None,
    shadow: LoadedModel | None = None,
) -> int:
    """Score each transaction with serving.scoring's functions and log it like the
    service does (decided at the transaction's time). ``amount_factor`` scales the
    requested amount: an upstream bug in the payment switch. ``amounts``: what the
    switch sent, by transaction, when the landing zone holds something else.
    ``shadow``: a challenger scored as the service does (serving.shadow)."""
    service = resolve_service(model.card["feature_service"])
    feast_cols = [c for c in model.feature_columns if "__" in c]
    reqs: list[ScoreRequest] = []
    inputs: list[dict[str, float] | None] = []
    verdicts: list[dict[str, object] | None] = []
    for r in rows.to_dict("records"):
        req = ScoreRequest(
            transaction_id=r["transaction_id"],
            account_id=r["account_id"],
            card_id="C0",
            merchant_id=r["merchant_id"],
            merchant_category=r["merchant_category"],
            amount=int((amounts or {}).get(r["transaction_id"], r["amount"])) * amount_factor,
            currency=r["currency"],
            channel=r["channel"],
            country=r["country"],
            event_ts=r["ts"].isoformat(),
        )
        feast = {c: (None if pd.isna(r[c]) else float(r[c])) for c in feast_cols}
        txn = req.txn()
        try:
            req_feats = request_features(txn, feast, service)
            row = model_input(model.feature_columns, feast, req_feats)
        except KeyError:  # as the service: a missing input falls back
            row = None
        if shadow is not None:
            verdicts.append(
                shadow_score(shadow, feast, req_feats)
                if row is not None
                else failed(str(shadow.card["version"]), fb.FEATURES_MISSING)
            )
        reqs.append(req)
        inputs.append(row)
    scored = [row for row in inputs if row is not None]
    scores = iter(model.predict_proba(pd.DataFrame(scored, columns=model.feature_columns)))
    log = AuditLog(audit_dir)
    try:
        for i, (req, row) in enumerate(zip(reqs, inputs, strict=True)):
            if row is None:
                fd = fb.fallback_decision(req.txn(), fb.FEATURES_MISSING)
                decision, score, reason = fd.decision, None, fb.FEATURES_MISSING
            else:
                score = float(next(scores))
                decision, reason = decide(score, model.card), None
            log.append(
                {
                    "decision_id": new_decision_id(req.event_ts),
                    "decided_at": req.event_ts.astimezone(UTC).isoformat(),
                    "transaction_id": req.transaction_id,
                    "decision": decision,
                    "score": score,
                    "fallback": reason or False,
                    "model_version": model.version,
                    "threshold": model.card["threshold"],
                    "review_band": list(model.card["review_band"]),
                    "request": req.logged(),
                    "features": {},
                    "model_input": row,
                    **({"shadow": verdicts[i]} if shadow is not None else {}),
                }
            )
    finally:
        log.close()
    return len(reqs)


@dataclass
class World:
    settings: Settings
    model: LoadedModel
    same: Path  # audit log: the window scored as it happened
    shifted: Path  # audit log: the same window, amounts 5x (an upstream bug)
    decisions: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("monitor-home")
    settings = build_home(home)
    report = train_fraud(settings, TRAIN)
    promote(settings, report.version)
    model = load_model(settings, "promoted")
    rows = window_rows(settings)
    n = write_decisions(home / "audit-same", model, rows)
    write_decisions(home / "audit-shifted", model, rows, amount_factor=5)
    yield World(settings, model, home / "audit-same", home / "audit-shifted", n)


def window(to: int) -> Window:
    return Window(date.fromisoformat(day(49)), date.fromisoformat(day(to)))


def test_same_distribution_gives_no_alert_and_caches_the_reference(world: World) -> None:
    doc = monitor(world.settings, world.same, world.model, window(55), MonitorSettings())
    assert doc["alerts"] == [], doc["alerts"]
    assert doc["decisions"] == world.decisions
    assert doc["reference"]["matches_card"], doc["reference"]
    assert cache_path(world.settings, world.model.version).exists()
    again = monitor(world.settings, world.same, world.model, window(55), MonitorSettings())
    assert again["reference"]["cached"] and again["alerts"] == []
    # every model input is reported over the window and for each of the 7 days
    assert {r["feature"] for r in doc["input_drift"]["window"]} == set(world.model.feature_columns)
    assert sorted(doc["input_drift"]["days"]) == [day(d) for d in range(49, 56)]


def test_shifted_amount_is_named_first(world: World) -> None:
    doc = monitor(world.settings, world.shifted, world.model, window(55), MonitorSettings())
    first, second = doc["alerts"][:2]
    # amount and amount/30-day mean are both the amount, 5x: nothing else comes first
    assert first["kind"] == second["kind"] == "input_drift", doc["alerts"]
    assert {first["subject"], second["subject"]} == {"amount", "amount_vs_30d_mean"}
    assert first["day"] == day(49) and first["value"] > 1.0  # measured: PSI 1.95
    assert first["threshold"] == 0.25
    others = [a for a in doc["alerts"] if a["kind"] == "input_drift"][2:]
    assert others == []


def known_labels(settings: Settings, ids: list[str], known_by_day: int) -> dict[str, int]:
    """Labels known by a day, read straight from the warehouse (independent of the monitor)."""
    cut = to_us(START + timedelta(days=known_by_day))
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        rows = con.execute(
            "select transaction_id, bool_or(is_fraud) from int_fraud_labels__deduped "
            f"where label_us <= {cut} and ingested_us <= {cut} group by 1"
        ).fetchall()
    finally:
        con.close()
    labels = dict(rows)
    return {t: int(bool(labels.get(t, False))) for t in ids}


def test_calibration_verdict_waits_for_label_maturity(world: World) -> None:
    # this small world has few frauds a week: judge weeks from 5, factor 1.5
    cfg = MonitorSettings(min_week_frauds=5, calibration_factor=1.5)
    early = monitor(world.settings, world.same, world.model, window(55), cfg)
    perf = early["performance"]
    # report date = day 56: a 7-day maturity leaves no decision of days 49..55 judged
    assert perf["weeks"] == [] and perf["pending_maturity"] == perf["decisions_scored"] > 0
    assert not [a for a in early["alerts"] if a["kind"] == "calibration"]

    late = monitor(world.settings, world.same, world.model, window(62), cfg)
    (week,) = late["performance"]["weeks"]
    assert week["week"] == day(49) and week["judged"]
    # the same numbers, recomputed from the audit log and the warehouse directly
    from pitstore.serving.audit import iter_records

    records = [r for r in iter_records(world.same) if r["score"] is not None]
    labels = known_labels(world.settings, [r["transaction_id"] for r in records], 63)
    y = np.array([labels[r["transaction_id"]] for r in records])
    p = np.array([r["score"] for r in records])
    assert week["rows"] == len(records) and week["frauds"] == int(y.sum())
    oe = y.mean() / p.mean()
    assert week["observed_over_expected"] == pytest.approx(oe, rel=1e-9)
    ref_oe = late["performance"]["baseline"]["observed_over_expected"]
    factor = max(oe / ref_oe, ref_oe / oe)
    verdict = [a for a in late["alerts"] if a["kind"] == "calibration"]
    # measured: observed/expected 0.25 in the window against 0.40 in the reference
    assert factor > 1.5
    assert [a["subject"] for a in verdict] == ["observed/expected"]
    assert verdict[0]["value"] == pytest.approx(oe / ref_oe, rel=1e-5)


def test_cli_exit_codes_json_and_out(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pitstore.cli.app import app

    monkeypatch.setenv("PITSTORE_HOME", str(world.settings.home))
    monkeypatch.setenv("PITSTORE_AUDIT_DIR", str(world.shifted))
    runner = CliRunner()
    args = ["monitor", "--from", day(49), "--to", day(55)]
    res = runner.invoke(app, [*args, "--json", "--out", str(tmp_path / "out")])
    assert res.exit_code == 1, res.output
    doc = json.loads((tmp_path / "out" / "monitor.json").read_text())
    alerts = json.loads((tmp_path / "out" / "alerts.json").read_text())
    assert alerts == doc["alerts"] and alerts[0]["subject"] in ("amount", "amount_vs_30d_mean")
    monkeypatch.setenv("PITSTORE_AUDIT_DIR", str(world.same))
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "no alerts" in res.output
    for bad, needle in (
        (["--from", day(55), "--to", day(49)], "before --from"),
        (["--from", "yesterday", "--to", day(49)], "YYYY-MM-DD"),
        (["--from", day(49), "--to", day(55), "--model", "nope"], "no model version"),
        (["--from", day(40), "--to", day(41)], "no logged decisions"),
    ):
        res = runner.invoke(app, ["monitor", *bad])
        assert res.exit_code == 2, res.output
        assert needle in res.output and "Traceback" not in res.output
    monkeypatch.setenv("PITSTORE_MONITOR_PSI_ALERT", "-1")
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "PITSTORE_MONITOR_" in res.output


def test_data_quality_reads_every_run_of_the_window(world: World) -> None:
    doc = monitor(world.settings, world.same, world.model, window(55), MonitorSettings())
    dq = doc["data_quality"]
    # runs on days 49..56 fall in the window (its report date is the end of day 55)
    assert [r["watermark"][:10] for r in dq["runs"]] == [day(d) for d in range(49, 57)]
    assert dq["previous_run"]["watermark"][:10] == day(42)
    first, second = dq["runs"][:2]
    # a daily run after a weekly one is not a drop: rows are per day of advance
    assert first["days_advanced"] == 7.0 and second["days_advanced"] == 1.0
    assert first["rows_per_day"] == pytest.approx(first["rows_appended"] / 7)
    markers = read_markers(world.settings.offline)
    raw = next(m.summary for m in markers.values() if m.summary["watermark"][:10] == day(50))
    assert second["rows_appended"] == sum(raw["rows_appended"].values())
    assert second["quarantined_new"] == raw["quarantined_new"]
    # a tighter threshold turns the real day-to-day change into alerts
    strict = MonitorSettings(rows_drop=0.01, restated_rise=0.001, quarantine_rise=0.0001)
    tight = monitor(world.settings, world.same, world.model, window(55), strict)
    kinds = {a["kind"] for a in tight["alerts"]}
    assert kinds & {"rows_drop", "restated_rise", "quarantine_rise"}, tight["alerts"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_report_renders_in_a_headless_browser(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pitstore.cli.app import app

    monkeypatch.setenv("PITSTORE_HOME", str(world.settings.home))
    monkeypatch.setenv("PITSTORE_AUDIT_DIR", str(world.shifted))
    monkeypatch.setenv("PITSTORE_MONITOR_MIN_WEEK_FRAUDS", "5")
    page = tmp_path / "report" / "monitor.html"
    res = CliRunner().invoke(
        app, ["monitor", "--from", day(49), "--to", day(62), "--html", str(page)]
    )
    assert res.exit_code == 1, res.output
    text = page.read_text()
    # self-contained: every image inline, nothing fetched from elsewhere
    assert text.count('src="data:image/png;base64,') == 4  # PSI, score, calibration, segments
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)
    assert text.index("Alerts (") < text.index("Input drift")
    assert "amount_vs_30d_mean" in text
    exe = chromium()
    assert exe, "chromium not found: `make test` installs it (Debian's chromium)"
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    from matplotlib.image import imread

    img = imread(shot)[:, :, :3]
    assert img.shape[:2] == (2000, 1200)
    not_white = (img < 0.95).any(axis=2).mean()
    colours = len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    # measured on a report like this: 7.7% non-white pixels, 3,514 distinct colours
    assert not_white > 0.05, not_white
    assert colours > 100, colours
