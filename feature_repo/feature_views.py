"""Feature views: fields, TTLs and entities all derived from pitstore/spec.py."""

from data_sources import SOURCES
from entities import ENTITIES
from feast import FeatureView, Field
from feast.types import Float64, Int64

from pitstore.core.spec import FEATURE_VIEWS

_FEAST_TYPES = {"int64": Int64, "float64": Float64}


def feast_view(view_name: str) -> FeatureView:
    spec = next(v for v in FEATURE_VIEWS if v.name == view_name)
    return FeatureView(
        name=spec.name,
        entities=[ENTITIES[spec.entity.name]],
        # DESIGN: TTL = longest window + one cadence; older values count as missing.
        ttl=spec.ttl,
        schema=[
            Field(name=f.name, dtype=_FEAST_TYPES[f.dtype], description=f.description)
            for f in spec.features
        ],
        online=True,
        source=SOURCES[spec.name],
        description=spec.description,
        tags={"cadence": str(spec.cadence), "generated_from": "pitstore/spec.py"},
    )


FEATURE_VIEW_OBJECTS = {view.name: feast_view(view.name) for view in FEATURE_VIEWS}
account_hourly = FEATURE_VIEW_OBJECTS["account_hourly"]
account_daily = FEATURE_VIEW_OBJECTS["account_daily"]
merchant_daily = FEATURE_VIEW_OBJECTS["merchant_daily"]
account_ledger_daily = FEATURE_VIEW_OBJECTS["account_ledger_daily"]
