"""Offline sources: one directory of append-only parquet versions per feature view.

Each transform run adds one file, ``run-<W>.parquet``, holding the rows it
created (``created_timestamp = W``); Feast reads them all through a glob.
"""

from feast import FileSource

from pitstore.core.config import get_settings
from pitstore.core.spec import FEATURE_VIEWS


def offline_source(view_name: str) -> FileSource:
    path = get_settings().offline_view_dir(view_name) / "*.parquet"
    return FileSource(
        name=f"{view_name}_source",
        path=str(path),
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
        description=f"Offline versions of {view_name} (one file per transform run).",
    )


SOURCES = {view.name: offline_source(view.name) for view in FEATURE_VIEWS}
