"""Data quality of the batch runs: rows appended, restated share, quarantine by reason.

Read from the completed runs' markers (``core.runs.read_markers``: each holds its
run's RunSummary) whose watermark falls in the window; each is compared with the run before it
(which may precede the window), and a jump is an alert.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pitstore.core.config import Settings
from pitstore.core.runs import read_markers
from pitstore.monitor.alerts import alert
from pitstore.monitor.settings import MonitorSettings


def run_summaries(settings: Settings) -> list[dict[str, Any]]:
    """Every completed run's summary, oldest first (one marker per watermark)."""
    markers = read_markers(settings.offline)
    return [markers[w].summary for w in sorted(markers)]


def describe_run(raw: dict[str, Any]) -> dict[str, Any]:
    """A run's numbers; rows per day of watermark advance, so a daily run after a
    weekly one is not a drop."""
    appended = sum(raw.get("rows_appended", {}).values())
    restated = sum(raw.get("rows_restated", {}).values())
    quarantined = raw.get("quarantined_new", {})
    q_total = sum(quarantined.values())
    advance = None
    if raw.get("previous_watermark"):
        span = datetime.fromisoformat(raw["watermark"]) - datetime.fromisoformat(
            raw["previous_watermark"]
        )
        advance = span.total_seconds() / 86400
    return {
        "watermark": raw["watermark"],
        "days_advanced": advance,
        "rows_per_day": appended / advance if advance else None,
        "engine": raw.get("engine"),
        "rows_appended": appended,
        "restated_share": restated / appended if appended else 0.0,
        "quarantined_new": dict(quarantined),
        "quarantined_share": q_total / (appended + q_total) if appended + q_total else 0.0,
    }


def runs_in_window(
    settings: Settings, start: datetime, end: datetime
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The window's runs (``start <= W <= end``) and the one run before them."""
    runs = [describe_run(r) for r in run_summaries(settings)]
    inside = [r for r in runs if start <= datetime.fromisoformat(r["watermark"]) <= end]
    before = [r for r in runs if datetime.fromisoformat(r["watermark"]) < start]
    return inside, (before[-1] if before else None)


def alerts(
    runs: list[dict[str, Any]], previous: dict[str, Any] | None, cfg: MonitorSettings
) -> Iterable[dict[str, Any]]:
    prev = previous
    for run in runs:
        day = run["watermark"][:10]
        if prev is not None:
            rise = run["quarantined_share"] - prev["quarantined_share"]
            if rise > cfg.quarantine_rise:
                yield alert("quarantine_rise", "batch", rise, cfg.quarantine_rise, day)
            rise = run["restated_share"] - prev["restated_share"]
            if rise > cfg.restated_rise:
                yield alert("restated_rise", "batch", rise, cfg.restated_rise, day)
            now, before = run["rows_per_day"], prev["rows_per_day"]
            if now is not None and before:
                floor = (1 - cfg.rows_drop) * before
                if now < floor:
                    yield alert("rows_drop", "batch", now, floor, day)
        prev = run
