"""`pitstore monitor` on a small real home (tests/monitor_home.py): a window from
the same distribution gives no alert, a shifted input is named first, and the
calibration verdict waits for label maturity."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pytest
from typer.testing import CliRunner

from pitstore.core.config import Settings
from pitstore.core.timeutil import to_us
from pitstore.models.registry import LoadedModel, load_model, promote
from pitstore.monitor.reference import cache_path
from pitstore.monitor.report import Window, monitor
from pitstore.monitor.settings import MonitorSettings
from pitstore.training.pipeline import train_fraud
from tests.monitor_home import START, TRAIN, build_home, day, window_rows, write_decisions


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
    ):
        res = runner.invoke(app, ["monitor", *bad])
        assert res.exit_code == 2, res.output
        assert needle in res.output and "Traceback" not in res.output
    monkeypatch.setenv("PITSTORE_MONITOR_PSI_ALERT", "-1")
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "PITSTORE_MONITOR_" in res.output


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
    if exe is None:
        pytest.skip("chromium not found (apt-get install -y -qq chromium): HTML not rendered")
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
