"""Every threshold of ``pitstore monitor``: ONE pydantic-settings class.

Each field reads ``PITSTORE_MONITOR_<FIELD>`` from the environment (or
``.env``). The reasons for the defaults are in docs/monitoring.md.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MonitorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PITSTORE_MONITOR_", env_file=".env", extra="ignore"
    )

    psi_bins: int = Field(10, ge=2, le=100, description="Reference-quantile bins per input.")
    psi_warn: float = Field(0.1, gt=0, description="PSI from here: a warning (no exit 1).")
    psi_alert: float = Field(0.25, gt=0, description="PSI from here: an alert.")
    min_rows: int = Field(
        200, ge=1, description="Fewest scored decisions in a day for its PSI to be judged."
    )
    missing_rise: float = Field(
        0.05, gt=0, description="Alert when an input's missing share rises this much."
    )
    fallback_rate: float = Field(
        0.05, gt=0, description="Alert when a day's share of fallback decisions exceeds this."
    )
    decision_mix_change: float = Field(
        0.05, gt=0, description="Alert when a decision's share moves this much from reference."
    )
    pr_auc_drop: float = Field(
        0.3, gt=0, lt=1, description="Alert when a week's PR-AUC < (1 - this) x the card's."
    )
    ece_rise: float = Field(
        0.02, gt=0, description="Alert when a week's ECE exceeds the card's by this much."
    )
    calibration_factor: float = Field(
        2.0,
        gt=1,
        description="Alert when a week's observed/expected fraud rate differs from the "
        "reference's by more than this factor (either way).",
    )
    calibration_bins: int = Field(10, ge=2, description="Equal-count score bins for ECE.")
    min_week_rows: int = Field(500, ge=1, description="Fewest matured decisions to judge a week.")
    min_week_frauds: int = Field(10, ge=1, description="Fewest frauds to judge a week.")
    min_segment_rows: int = Field(200, ge=1, description="Fewest decisions to judge a segment.")
    min_segment_frauds: int = Field(5, ge=1, description="Fewest frauds to judge a segment.")
    quarantine_rise: float = Field(
        0.01, gt=0, description="Alert when a run's quarantined share rises this much."
    )
    restated_rise: float = Field(
        0.05, gt=0, description="Alert when a run's restated share rises this much."
    )
    rows_drop: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Alert when a run appends fewer rows per day of watermark advance "
        "than (1 - this) x the previous run.",
    )
