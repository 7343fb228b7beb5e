"""pitstore: a point-in-time feature store for bank fraud and credit scoring.

The public Python API is small on purpose::

    from pitstore import Store
    store = Store()                      # PITSTORE_HOME / REDIS_URL, as the CLI
    frame = store.training_frame(entity_df, service="fraud_v1")   # as_known
    store.online({"account_id": "A000042", "merchant_id": "M00007"})

Everything else is reachable by its layer (``pitstore.training``, ...), but only
what ``__all__`` names is promised to stay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Store", "UnknownEntityWarning"]

if TYPE_CHECKING:
    from pitstore.api import Store, UnknownEntityWarning


def __getattr__(name: str) -> Any:
    # Lazy: importing a low layer (pitstore.core.spec) must not load pandas and Feast.
    if name in __all__:
        from pitstore import api

        return getattr(api, name)
    raise AttributeError(f"module 'pitstore' has no attribute {name!r}")
