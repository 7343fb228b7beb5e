"""Reading online features through Feast (the reference read path)."""

from __future__ import annotations

from typing import Any

from pitstore.core.config import Settings
from pitstore.core.feast_store import get_store
from pitstore.core.spec import service_by_name


class OnlineReadError(RuntimeError):
    pass


def read_online(settings: Settings, service_name: str, keys: dict[str, str]) -> dict[str, Any]:
    """Feature values of ``service_name`` for one entity row, via Feast."""
    try:
        service = service_by_name(service_name)
    except KeyError as exc:
        raise OnlineReadError(str(exc)) from exc
    wanted = {v.entity.join_key for v in service.views}
    unknown = set(keys) - wanted
    if unknown:
        raise OnlineReadError(
            f"unknown entity key(s) {sorted(unknown)} for {service_name}; "
            f"expected some of {sorted(wanted)}"
        )
    views = [v for v in service.views if v.entity.join_key in keys]
    if not views:
        raise OnlineReadError(f"give at least one of {sorted(wanted)}")
    store = get_store(settings)
    refs = [f"{v.name}:{f.name}" for v in views for f in v.features]
    try:
        response = store.get_online_features(
            features=refs, entity_rows=[keys], full_feature_names=True
        )
    except Exception as exc:  # redis errors surface as many types through Feast
        raise OnlineReadError(f"online read failed: {exc}") from exc
    return {name: values[0] for name, values in response.to_dict().items()}
