"""Run bookkeeping shared by both engines: what a run reports and which runs completed.

A run is identified by its watermark W (see docs/semantics.md). Both engines
record the same :class:`RunSummary`; :func:`completed_watermarks` is the one
answer to "which runs completed" that the materializer, training and the
checks ask.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime

from pitstore.core.config import Settings
from pitstore.core.timeutil import to_us


class TransformError(RuntimeError):
    """A run that must not proceed; the offline store is left as it was."""


@dataclass
class RunSummary:
    engine: str
    watermark: str
    previous_watermark: str | None
    rows_appended: dict[str, int] = field(default_factory=dict)
    rows_restated: dict[str, int] = field(default_factory=dict)
    rows_total: dict[str, int] = field(default_factory=dict)
    quarantined_new: dict[str, int] = field(default_factory=dict)
    quarantined_total: int = 0
    drifted_files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def check_run_order(watermark_us: int, runs: list[int]) -> int | None:
    """Runs move forward; repeating an earlier run is allowed (it is idempotent).

    Inserting a *new* run before the newest one would leave later versions
    computed against a history that did not include it, so it is refused.
    Returns the previous run's watermark, if any.
    """
    if runs and watermark_us < max(runs) and watermark_us not in runs:
        raise TransformError(
            "watermark is earlier than the newest run and was never run before: "
            "runs must move forward (re-running an existing watermark is allowed)"
        )
    earlier = [r for r in runs if r < watermark_us]
    return max(earlier) if earlier else None


def completed_watermarks(settings: Settings) -> list[int]:
    """Watermarks (µs, ascending) of the runs that completed, whichever engine ran them.

    A run is complete once its summary (``runs/<engine>-<W>.json``) exists: each
    engine writes it last, after every view's parquet file was published. A run
    that crashed before that never counts.
    """
    done = set()
    for path in sorted(settings.runs.glob("*-*.json")):
        done.add(to_us(datetime.fromisoformat(json.loads(path.read_text())["watermark"])))
    return sorted(done)
