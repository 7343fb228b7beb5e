"""Where pitstore keeps its data and how it reaches Redis: one settings class.

Everything lives under ``PITSTORE_HOME`` (default ``./data``); Redis is
``REDIS_URL``. Both are read from the environment (or a ``.env`` file).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    pitstore_home: Path = Path("data")
    redis_url: str = "redis://localhost:6379/0"
    # Spark's own log level (PITSTORE_SPARK_LOG_LEVEL): ERROR keeps CI logs to
    # what pitstore prints; WARN or INFO when debugging a cluster run.
    spark_log_level: str = "ERROR"

    @cached_property
    def home(self) -> Path:
        return self.pitstore_home.resolve()

    @property
    def landing(self) -> Path:
        """Append-only raw parquet, partitioned by ingestion date."""
        return self.home / "landing"

    @property
    def warehouse(self) -> Path:
        """The dbt engine's DuckDB database (incremental tables)."""
        return self.home / "warehouse.duckdb"

    @property
    def offline(self) -> Path:
        """The offline store: one directory of parquet per feature view."""
        return self.home / "offline"

    @property
    def runs(self) -> Path:
        """One JSON summary per transform run."""
        return self.home / "runs"

    @property
    def feast_dir(self) -> Path:
        """Feast's registry (and nothing else: the repo itself is feature_repo/)."""
        return self.home / "feast"

    def offline_view_dir(self, view_name: str) -> Path:
        return self.offline / view_name


def get_settings() -> Settings:
    return Settings()
