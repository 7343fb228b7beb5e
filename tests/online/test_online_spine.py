"""Real Redis + real Feast: after materialize, get_online_features returns the newest values."""

from __future__ import annotations

from datetime import timedelta

import duckdb
from landing_factory import write_events
from spine_helpers import START, random_events

from pitstore.core.config import Settings
from pitstore.core.feast_store import apply, get_store
from pitstore.core.spec import FEATURE_VIEWS
from pitstore.core.timeutil import to_us
from pitstore.online.materialize import materialize_view
from pitstore.transform.dbt_engine import transform_dbt


def as_known(settings: Settings, view, w) -> dict:  # type: ignore[no-untyped-def]
    key = view.entity.join_key
    names = ", ".join(f.name for f in view.features)
    con = duckdb.connect()
    rows = con.execute(
        f"""select {key}, {names} from (
              select *, row_number() over (partition by {key}
                  order by event_timestamp desc, created_timestamp desc) as rn
              from read_parquet('{settings.offline / view.name}/run-*.parquet')
              where epoch_us(created_timestamp) <= {to_us(w)}
                and epoch_us(event_timestamp) <= {to_us(w)}) where rn = 1"""
    ).fetchall()
    con.close()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_materialize_then_feast_reads_newest(settings: Settings) -> None:
    events, labels = random_events(5, days=3, n=90)
    write_events(settings.landing, START, 3, events, labels)
    apply(settings)
    store = get_store(settings)
    for day in (1, 2, 3):
        w = START + timedelta(days=day)
        transform_dbt(settings, w)
        for view in FEATURE_VIEWS:
            materialize_view(settings, view, w)
        # This world lands card data only: the ledger view has no entity to read.
        for view in (v for v in FEATURE_VIEWS if v.source == "transactions"):
            expected = as_known(settings, view, w)
            key = view.entity.join_key
            entity_rows = [{key: k} for k in sorted(expected)]
            response = store.get_online_features(
                features=[f"{view.name}:{f.name}" for f in view.features],
                entity_rows=entity_rows,
            ).to_dict()
            for i, row in enumerate(entity_rows):
                online = tuple(response[f.name][i] for f in view.features)
                assert online == expected[row[key]], (view.name, day, row)
