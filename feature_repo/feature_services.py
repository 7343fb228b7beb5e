"""One FeatureService per model version; training and serving both use it."""

from feast import FeatureService
from feature_views import FEATURE_VIEW_OBJECTS

from pitstore.core.spec import FEATURE_SERVICES

SERVICE_OBJECTS = {
    service.name: FeatureService(
        name=service.name,
        features=[FEATURE_VIEW_OBJECTS[v.name] for v in service.views],
        description=service.description,
    )
    for service in FEATURE_SERVICES
}
fraud_v1 = SERVICE_OBJECTS["fraud_v1"]
credit_v1 = SERVICE_OBJECTS["credit_v1"]
