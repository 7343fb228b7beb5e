"""A brute-force, plain-Python statement of DESIGN.md's aggregate semantics.

Slow on purpose and written for reading, not speed: it walks every boundary of
the grid and recomputes every window from scratch. The tests compare the dbt
and Spark engines against it; it shares no code with them except the spec.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pitstore.core.spec import FeatureView
from pitstore.transform.render_sql import us

Row = tuple[object, ...]  # (entity_key, boundary_us, created_us, *values)


@dataclass(frozen=True)
class Event:
    transaction_id: str
    account_id: str
    merchant_id: str
    amount: int
    country: str
    channel: str
    event_us: int
    ingested_us: int
    source_order: int = 0  # tie-break between copies ingested at the same instant

    @property
    def is_foreign(self) -> bool:
        from pitstore.core.spec import HOME_COUNTRY

        return self.country != HOME_COUNTRY

    @property
    def is_card_not_present(self) -> bool:
        from pitstore.core.spec import CARD_NOT_PRESENT_CHANNELS

        return self.channel in CARD_NOT_PRESENT_CHANNELS


@dataclass(frozen=True)
class Label:
    transaction_id: str
    is_fraud: bool
    label_us: int
    ingested_us: int
    source_order: int = 0


def known_first_copies(items: Iterable[Event], watermark_us: int) -> list[Event]:
    """Events known at W, one per transaction_id: the first ingested copy wins."""
    best: dict[str, Event] = {}
    for e in items:
        if e.ingested_us > watermark_us:
            continue
        current = best.get(e.transaction_id)
        if current is None or (e.ingested_us, e.source_order) < (
            current.ingested_us,
            current.source_order,
        ):
            best[e.transaction_id] = e
    return list(best.values())


def known_labels(items: Iterable[Label], watermark_us: int) -> dict[str, Label]:
    best: dict[str, Label] = {}
    for label in items:
        if label.ingested_us > watermark_us:
            continue
        current = best.get(label.transaction_id)
        if current is None or (label.ingested_us, label.source_order) < (
            current.ingested_us,
            current.source_order,
        ):
            best[label.transaction_id] = label
    return best


def values_at(
    view: FeatureView, events: Sequence[Event], labels: dict[str, Label], boundary: int
) -> tuple[float | int, ...]:
    """The feature vector at boundary T, straight from the definition."""
    out: list[float | int] = []
    for feature in view.features:
        agg = feature.aggregation
        inside = [e for e in events if boundary - us(feature.window) <= e.event_us < boundary]
        n = len(inside)
        frauds = sum(
            1
            for e in inside
            if (lab := labels.get(e.transaction_id)) is not None
            and lab.is_fraud
            and lab.label_us <= boundary
        )
        if agg.function == "count":
            out.append(n)
        elif agg.function == "sum":
            out.append(sum(getattr(e, agg.input or "") for e in inside))
        elif agg.function == "max":
            out.append(max((getattr(e, agg.input or "") for e in inside), default=0))
        elif agg.function == "count_distinct":
            out.append(len({getattr(e, agg.input or "") for e in inside}))
        elif agg.function == "mean":
            out.append(sum(e.amount for e in inside) / n if n else 0.0)
        elif agg.function == "share":
            hits = sum(1 for e in inside if getattr(e, agg.input or ""))
            out.append(hits / n if n else 0.0)
        elif agg.function == "fraud_count":
            out.append(frauds)
        elif agg.function == "fraud_rate":
            out.append(frauds / n if n else 0.0)
        else:  # pragma: no cover
            raise ValueError(agg.function)
    return tuple(out)


def run(
    view: FeatureView,
    all_events: Iterable[Event],
    all_labels: Iterable[Label],
    watermark_us: int,
    stored: Sequence[Row],
) -> list[Row]:
    """The rows a run at W appends, given the rows already stored (any created_us < W)."""
    c = us(view.cadence)
    key_attr = view.entity.join_key
    events = known_first_copies(all_events, watermark_us)
    labels = known_labels(all_labels, watermark_us)
    by_entity: dict[str, list[Event]] = {}
    for e in events:
        by_entity.setdefault(getattr(e, key_attr), []).append(e)

    newest: dict[tuple[object, int], tuple[int, tuple[object, ...]]] = {}
    for key, boundary, created, *values in stored:
        assert isinstance(boundary, int) and isinstance(created, int)
        if created >= watermark_us:
            continue
        prev = newest.get((key, boundary))
        if prev is None or created > prev[0]:
            newest[(key, boundary)] = (created, tuple(values))

    entities = set(by_entity) | {k for k, _ in newest}
    zeros = tuple(0 if f.dtype == "int64" else 0.0 for f in view.features)
    appended: list[Row] = []
    for key in sorted(entities, key=str):
        evs = by_entity.get(str(key), [])
        stored_bounds = [b for k, b in newest if k == key]
        starts = [e.event_us for e in evs] + [b - c for b in stored_bounds]
        if not starts:
            continue
        # Walk the whole grid, one cadence at a time, from before the first event.
        boundary = (min(starts) // c) * c
        previous = zeros
        while boundary <= watermark_us:
            current = values_at(view, evs, labels, boundary)
            stored_version = newest.get((key, boundary))
            if stored_version is None:
                if current != previous:
                    appended.append((key, boundary, watermark_us, *current))
            elif stored_version[1] != current:
                appended.append((key, boundary, watermark_us, *current))
            previous = current
            boundary += c
    return appended
