"""Shared fixtures: a real Redis (pytest-redis + Debian's redis-server), isolated
PITSTORE_HOME per test, one Spark session per test session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_redis import factories

from pitstore.core.config import Settings

REDIS_EXEC = shutil.which("redis-server") or "/usr/bin/redis-server"
redis_proc = factories.redis_proc(executable=REDIS_EXEC, port=None)
redis_db = factories.redisdb("redis_proc")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PITSTORE_HOME for one test."""
    path = tmp_path / "pitstore-home"
    monkeypatch.setenv("PITSTORE_HOME", str(path))
    return path


@pytest.fixture
def settings(home: Path, redis_proc, monkeypatch: pytest.MonkeyPatch) -> Settings:  # type: ignore[no-untyped-def]
    """Settings pointing at the test's PITSTORE_HOME and the session's real Redis."""
    url = f"redis://{redis_proc.host}:{redis_proc.port}/0"
    monkeypatch.setenv("REDIS_URL", url)
    import redis

    redis.Redis.from_url(url).flushall()
    return Settings(pitstore_home=home, redis_url=url)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local Spark session for the whole test run (start-up costs ~7 s)."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("pitstore-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    yield session
    session.stop()


# Fixtures that start or use a real service: a test that asks for one is an
# integration test (make test-unit leaves them out).
_SERVICE_FIXTURES = {"redis_proc", "redis_db", "settings", "spark"}
# Modules that run dbt, a server, subprocesses or a browser on their own.
_INTEGRATION_DIRS = {"transform", "checks", "cli", "api", "monitor", "training"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        layer = Path(str(item.fspath)).parent.name
        if (
            _SERVICE_FIXTURES & set(getattr(item, "fixturenames", ()))
            or item.get_closest_marker("spark")
            or item.get_closest_marker("slow")
            or layer in _INTEGRATION_DIRS
        ):
            item.add_marker(pytest.mark.integration)
