"""The bridge to Feast: environment for feature_store.yaml, the store, `apply`."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any
from urllib.parse import urlparse

import yaml

from pitstore.core.config import Settings
from pitstore.core.paths import FEATURE_REPO  # noqa: E402

FEAST_PROJECT = "pitstore"


def redis_url_to_feast(url: str) -> str:
    """``redis://:pw@host:6379/2`` -> Feast's ``host:6379,db=2,password=pw``."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"REDIS_URL must start with redis:// or rediss://, got {url!r}")
    parts = [f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"]
    db = (parsed.path or "/0").lstrip("/") or "0"
    parts.append(f"db={int(db)}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def configure_env(settings: Settings) -> None:
    """Export PITSTORE_HOME, which the definitions in feature_repo/ read (their sources' paths)."""
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PITSTORE_HOME"] = str(settings.home)


def repo_config(settings: Settings) -> Any:
    """feature_store.yaml, with the registry and Redis of ``settings``.

    The yaml holds a checkout's defaults so that Feast can open the repo on its
    own; pitstore never relies on them and never on environment expansion.
    """
    from feast.repo_config import RepoConfig

    raw = yaml.safe_load((FEATURE_REPO / "feature_store.yaml").read_text())
    raw["registry"] = str(settings.feast_dir / "registry.db")
    raw["online_store"] = {
        **raw["online_store"],
        "connection_string": redis_url_to_feast(settings.redis_url),
    }
    config = RepoConfig(**raw)
    config.repo_path = FEATURE_REPO
    return config


def get_store(settings: Settings) -> Any:
    from feast import FeatureStore

    configure_env(settings)
    return FeatureStore(repo_path=str(FEATURE_REPO), config=repo_config(settings))


def definitions() -> list[Any]:
    """The Feast objects declared in feature_repo/ (which derives them from the spec)."""
    if str(FEATURE_REPO) not in sys.path:
        sys.path.insert(0, str(FEATURE_REPO))
    # The sources bind PITSTORE_HOME when their module runs: import afresh every
    # time, so a process that switches homes never registers a stale path.
    for name in ("entities", "data_sources", "feature_views", "feature_services"):
        sys.modules.pop(name, None)
    entities = importlib.import_module("entities")
    sources = importlib.import_module("data_sources")
    views = importlib.import_module("feature_views")
    services = importlib.import_module("feature_services")
    return [
        *entities.ENTITIES.values(),
        *sources.SOURCES.values(),
        *views.FEATURE_VIEW_OBJECTS.values(),
        *services.SERVICE_OBJECTS.values(),
    ]


def apply(settings: Settings) -> list[str]:
    """Register the definitions in Feast's registry (idempotent). Returns object names."""
    store = get_store(settings)
    objects = definitions()
    store.apply(objects)
    return [f"{type(o).__name__}:{o.name}" for o in objects]
