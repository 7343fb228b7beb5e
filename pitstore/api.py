"""The Python API for notebooks: ``from pitstore import Store``.

A thin facade over the same functions the CLI calls; it adds nothing to the
semantics. Training frames are ``as_known`` by default: each row gets the value
the online store held at its time (see docs/semantics.md). Feast's own
``get_historical_features`` is ``as_of`` and can leak restated values into the
past; :meth:`Store.feast` hands out the Feast store for everything else.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pitstore.core.config import Settings
from pitstore.core.feast_store import get_store
from pitstore.core.spec import FeatureService, service_by_name

__all__ = ["FEAST_TIMESTAMP", "Store", "UnknownEntityWarning"]

# Feast's entity_df convention; pitstore's own request column is ``ts``.
FEAST_TIMESTAMP = "event_timestamp"


class UnknownEntityWarning(UserWarning):
    """Some entity keys were never seen by the store (their features are all null)."""


class Store:
    """One pitstore home (offline store, models) and its Redis.

    ``home`` defaults to ``PITSTORE_HOME`` (else ``./data``) and ``redis_url`` to
    ``REDIS_URL`` (else ``redis://localhost:6379/0``), as for the CLI.
    """

    def __init__(self, home: str | Path | None = None, redis_url: str | None = None) -> None:
        overrides: dict[str, Any] = {}
        if home is not None:
            overrides["pitstore_home"] = Path(home)
        if redis_url is not None:
            overrides["redis_url"] = redis_url
        self.settings = Settings(**overrides)

    def __repr__(self) -> str:
        return f"Store(home={str(self.settings.home)!r}, redis_url={self.settings.redis_url!r})"

    def training_frame(
        self,
        entity_df: pd.DataFrame | None,
        service: str = "fraud_v1",
        mode: str = "as_known",
        engine: str = "duckdb",
        *,
        labels_known_by: datetime | None = None,
    ) -> pd.DataFrame:
        """A leakage-free training frame for ``entity_df``'s rows.

        ``entity_df`` holds the service's entity keys (e.g. ``account_id``,
        ``merchant_id``) and a time column, ``ts`` or Feast's ``event_timestamp``
        (timezone-aware, or ISO-8601 strings with an offset); other columns are
        carried through. The result is a DataFrame whose ``attrs["audit"]`` and
        ``attrs["manifest"]`` are the frame's audit and manifest (as
        ``pitstore training-frame`` writes them). Unknown entity keys are counted
        in the audit, make ``audit["ok"]`` false and raise an
        :class:`UnknownEntityWarning`.

        For ``credit_v1``, ``entity_df=None, labels_known_by=T`` builds the
        labelled frame of loan applications (12-month maturity; immature and
        unknown outcomes excluded and counted in ``audit["labels"]``), as
        ``pitstore training-frame --service credit_v1 --labels-known-by`` does.
        """
        from pitstore.training.frames import TS, build_frame

        if entity_df is None:
            from pitstore.training.credit_labels import credit_policy
            from pitstore.training.credit_pipeline import build_credit_frame, is_credit

            if labels_known_by is None or not is_credit(service):
                raise ValueError("entity_df=None needs service='credit_v1' and labels_known_by")
            policy = credit_policy(labels_known_by)
            frame = build_credit_frame(self.settings, policy, mode=mode, engine=engine)
        else:
            requests = _requests_from(entity_df, TS)
            frame = build_frame(self.settings, requests, service=service, mode=mode, engine=engine)
        unknown = frame.audit.get("unknown_entity_rows", 0)
        if unknown:
            by_view = {v: m["unknown_entity"] for v, m in frame.audit["missing"].items()}
            warnings.warn(
                f"{unknown} request rows have entity keys the store never saw "
                f"(by view: {by_view}); their features are null: check the ids",
                UnknownEntityWarning,
                stacklevel=2,
            )
        df = frame.to_pandas()
        if entity_df is not None and FEAST_TIMESTAMP in entity_df.columns:
            df = df.rename(columns={TS: FEAST_TIMESTAMP})
        df.attrs["audit"] = frame.audit
        df.attrs["manifest"] = frame.manifest
        return df

    def online(
        self,
        entities: Mapping[str, str] | Iterable[Mapping[str, str]],
        service: str = "fraud_v1",
        at: datetime | None = None,
    ) -> pd.DataFrame:
        """The features Redis serves now (or ``at``) for one or more entity rows.

        Each row names the service's join keys, e.g.
        ``{"account_id": "A000042", "merchant_id": "M00007"}``. Values older than
        their view's TTL are null, as the scorer sees them. A row whose entity has
        no online value at all raises an :class:`UnknownEntityWarning`.
        """
        import redis

        from pitstore.online.reader import read_features

        svc = _service(service)
        rows = [dict(entities)] if isinstance(entities, Mapping) else [dict(e) for e in entities]
        keys = sorted({v.entity.join_key for v in svc.views})
        for row in rows:
            if sorted(row) != keys:
                raise ValueError(
                    f"each entity row needs exactly the keys {keys}, got {sorted(row)}"
                )
        client = redis.Redis.from_url(self.settings.redis_url)
        try:
            got = read_features(client, svc, rows, at or datetime.now(UTC))
        finally:
            client.close()
        out = pd.DataFrame([{**row, **r.values} for row, r in zip(rows, got, strict=True)])
        empty = [
            row
            for row, r in zip(rows, got, strict=True)
            if all(v is None for v in r.values.values())
        ]
        if empty:
            warnings.warn(
                f"{len(empty)} of {len(rows)} entity rows have no online value (e.g. {empty[0]}): "
                "unknown ids, or not materialized",
                UnknownEntityWarning,
                stacklevel=2,
            )
        return out

    def train(self, frame: pd.DataFrame, valid_share: float = 0.3) -> dict[str, Any]:
        """Train a model on a frame from :meth:`training_frame` and register it
        (not promoted); returns the model card. A fraud_v1 frame needs a ``label``
        column (1 fraud, 0 genuine, null unlabelled) and the transaction columns
        (``transaction_id``, ``amount``, ``country``, ``channel``, ``currency``); a
        credit_v1 frame trains the PD model and needs ``defaulted`` (1 / 0) and the
        application columns (a ``labels_known_by`` frame has them)."""
        import pyarrow as pa

        from pitstore.training.frames import TS, TrainingFrame
        from pitstore.training.pipeline import train_on_frame

        if "audit" not in frame.attrs or "manifest" not in frame.attrs:
            raise ValueError(
                "train on a frame returned by Store.training_frame (it carries its audit)"
            )
        df = frame.rename(columns={FEAST_TIMESTAMP: TS}) if FEAST_TIMESTAMP in frame else frame
        table = pa.Table.from_pandas(df, preserve_index=False)
        loaded = TrainingFrame.loaded(table, frame.attrs["audit"], frame.attrs["manifest"])
        if frame.attrs["audit"].get("service") == "credit_v1":
            from pitstore.training.credit_pipeline import train_on_credit_frame

            return train_on_credit_frame(self.settings, loaded, valid_share=valid_share).card
        return train_on_frame(self.settings, loaded, valid_share=valid_share).card

    def feast(self) -> Any:
        """Feast's ``FeatureStore`` for this home. Its historical retrieval is ``as_of``."""
        return get_store(self.settings)


def _service(name: str) -> FeatureService:
    try:
        return service_by_name(name)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from exc


def _requests_from(entity_df: pd.DataFrame, ts: str) -> pd.DataFrame:
    """pitstore's request rows from a Feast-style or pitstore-style entity_df."""
    if not isinstance(entity_df, pd.DataFrame):
        raise TypeError(f"entity_df must be a pandas DataFrame, not {type(entity_df).__name__}")
    has_feast, has_ts = FEAST_TIMESTAMP in entity_df.columns, ts in entity_df.columns
    if has_feast and has_ts:
        raise ValueError(f"entity_df has both {ts!r} and {FEAST_TIMESTAMP!r}: keep one")
    if has_feast:
        return entity_df.rename(columns={FEAST_TIMESTAMP: ts})
    return entity_df
