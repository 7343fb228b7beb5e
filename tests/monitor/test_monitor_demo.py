"""`make monitor` (pitstore.monitor.demo): a shifted world scored through the real
API names the shifted input first in the HTML report's alerts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_monitor_report import reload_feast_definitions

from pitstore.core.config import Settings
from pitstore.monitor.demo import MARK, main

pytestmark = pytest.mark.slow


def test_make_monitor_scores_through_the_api_and_names_the_shift(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    home = tmp_path / "demo"
    # `make monitor` is a fresh process; here feature_repo/ may be imported already
    monkeypatch.setenv("PITSTORE_HOME", str(home.resolve()))
    reload_feast_definitions()
    try:
        assert main(["--home", str(home), "--accounts", "200"]) == 0
    finally:
        monkeypatch.undo()
        reload_feast_definitions()
    report = home / "report"
    doc = json.loads((report / "monitor.json").read_text())
    assert doc["decisions"] > 2000  # every transaction of days 49..55, answered by the API
    first = doc["alerts"][0]
    # zero_field on amount from day 52: an amount-derived batch feature comes first
    assert first["kind"] == "input_drift" and "amount" in first["subject"], doc["alerts"]
    html = (report / "monitor.html").read_text()
    assert first["subject"] in html
    # a rerun wipes the home it made, and nothing else
    assert (home / MARK).exists()
    other = tmp_path / "not-a-demo"
    other.mkdir()
    (other / "keep").write_text("x")
    assert main(["--home", str(other)]) == 2
    assert (other / "keep").exists()
