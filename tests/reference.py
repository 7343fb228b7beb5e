"""A brute-force, plain-Python statement of DESIGN.md's aggregate semantics.

Slow on purpose and written for reading, not speed: it walks every boundary of
the grid and recomputes every window from scratch. The tests compare the dbt
and Spark engines against it; it shares no code with them except the spec.
It also states the staging rules (docs/landing.md) for raw transaction rows:
which are quarantined and why, and the instant a valid ``event_ts`` names.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

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
    source = "transactions"  # the landing dataset (FeatureView.source) it belongs to

    @property
    def event_id(self) -> str:
        return self.transaction_id

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


def known_first_copies(items: Iterable[Any], watermark_us: int) -> list[Any]:
    """Events known at W, one per id (transaction_id, ledger_event_id): the first
    ingested copy wins."""
    best: dict[str, Any] = {}
    for e in items:
        if e.ingested_us > watermark_us:
            continue
        current = best.get(e.event_id)
        if current is None or (e.ingested_us, e.source_order) < (
            current.ingested_us,
            current.source_order,
        ):
            best[e.event_id] = e
    return list(best.values())


def stddev(values: Sequence[int]) -> float:
    """Population stddev as the spec defines it: exact integer sums, then IEEE doubles
    (the order of operations is the definition, so every engine rounds alike)."""
    if not values:
        return 0.0
    n = float(len(values))
    s1, s2 = float(sum(values)), float(sum(v * v for v in values))
    mean = s1 / n
    return math.sqrt(max(s2 / n - mean * mean, 0.0))


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
    view: FeatureView, events: Sequence[Any], labels: dict[str, Label], boundary: int
) -> tuple[float | int, ...]:
    """The feature vector at boundary T, straight from the definition."""
    out: list[float | int] = []
    for feature in view.features:
        agg = feature.aggregation
        inside = [e for e in events if boundary - us(feature.window) <= e.event_us < boundary]
        n = len(inside)
        present = [v for e in inside if (v := getattr(e, agg.input or "", None)) is not None]
        frauds = sum(
            1
            for e in inside
            if (lab := labels.get(e.event_id)) is not None
            and lab.is_fraud
            and lab.label_us <= boundary
        )
        if agg.function == "count":
            out.append(n)
        elif agg.function == "sum":
            out.append(sum(present))
        elif agg.function == "stddev":
            out.append(stddev(present))
        elif agg.function == "days_with":
            # UTC calendar days (event_us is after 1970: floor and truncation agree).
            out.append(
                len({e.event_us // 86_400_000_000 for e in inside if getattr(e, agg.input or "")})
            )
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
    all_events: Iterable[Any],
    all_labels: Iterable[Label],
    watermark_us: int,
    stored: Sequence[Row],
) -> list[Row]:
    """The rows a run at W appends, given the rows already stored (any created_us < W)."""
    c = us(view.cadence)
    key_attr = view.entity.join_key
    # Events of every dataset may be passed together: the view reads its source's.
    events = known_first_copies((e for e in all_events if e.source == view.source), watermark_us)
    labels = known_labels(all_labels, watermark_us)
    by_entity: dict[str, list[Any]] = {}
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


# --- Staging: raw landing rows -> events or quarantine reasons ------------------

_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:Z|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # \d is 0-9 only, as in RE2 and Java
)
_NAIVE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?", re.ASCII)
# The offsets real zones use: -12:00 (Etc/GMT+12) to +14:00 (Pacific/Kiritimati).
OFFSET_MINUTES = (-12 * 60, 14 * 60)
MAX_AMOUNT = 1e15
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def event_ts_us(raw: str | None) -> int | str:
    """The instant a landing ``event_ts`` names (microseconds), or why it is quarantined."""
    if raw is None:
        return "null event_ts"
    if _NAIVE.fullmatch(raw):
        return "naive event_ts (no UTC offset)"
    m = _ISO.fullmatch(raw)
    if m is None:
        return "unparseable event_ts"
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = int((m[7] or "").ljust(6, "0"))
    offset = 0
    if m[8] is not None:
        hh, mm = int(m[9]), int(m[10])
        offset = (hh * 60 + mm) * (-1 if m[8] == "-" else 1)
        if mm > 59 or not OFFSET_MINUTES[0] <= offset <= OFFSET_MINUTES[1]:
            return "event_ts offset out of range"
    try:
        days = (date(year, month, day) - date(1970, 1, 1)).days
    except ValueError:
        return "unparseable event_ts"
    # ISO 8601's end of day, 24:00:00, is the next midnight; nothing else past 23:59:59.
    if not (
        (hour < 24 and minute < 60 and second < 60)
        or (hour, minute, second, fraction) == (24, 0, 0, 0)
    ):
        return "unparseable event_ts"
    local = ((days * 24 + hour) * 60 + minute) * 60 + second
    return (local - offset * 60) * 1_000_000 + fraction


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def quarantine_reason(row: Mapping[str, Any]) -> str | None:
    """Why a raw transaction row is quarantined (the first rule it breaks), or None."""
    for column in ("transaction_id", "account_id", "merchant_id", "ingested_at", "amount"):
        if row[column] is None:
            return f"null {column}"
    amount = row["amount"]
    assert isinstance(amount, float)
    if math.isnan(amount) or math.isinf(amount):
        return "amount is NaN or infinite"
    if amount < 0:
        return "negative amount"
    if amount != math.floor(amount):
        return "amount is not in whole minor units"
    if amount > MAX_AMOUNT:
        return "amount out of range"
    event_us = event_ts_us(row["event_ts"])
    if isinstance(event_us, str):
        return event_us
    ingested = row["ingested_at"]
    assert isinstance(ingested, datetime)
    if event_us > _us(ingested):
        return "event_ts after ingested_at"
    return None


LandedRow = tuple[int, int, Mapping[str, Any]]  # (ingested_us, source_order, raw row)


def landed_events(rows: Iterable[LandedRow]) -> list[Event]:
    """The events the staging keeps from raw transaction rows, with the instants they name."""
    events = []
    for ingested_us, order, row in rows:
        if quarantine_reason(row) is not None:
            continue
        event_us = event_ts_us(row["event_ts"])
        assert isinstance(event_us, int) and _us(row["ingested_at"]) == ingested_us
        events.append(
            Event(
                str(row["transaction_id"]),
                str(row["account_id"]),
                str(row["merchant_id"]),
                int(row["amount"]),
                str(row["country"]),
                str(row["channel"]),
                event_us,
                ingested_us,
                order,
            )
        )
    return events


def quarantined_new(
    rows: Iterable[LandedRow], watermark_us: int, previous_us: int | None
) -> dict[str, int]:
    """Quarantined rows per reason that run W sees and the previous run did not."""
    new = Counter(
        reason
        for ingested_us, _, row in rows
        if (reason := quarantine_reason(row)) is not None
        and ingested_us <= watermark_us
        and (previous_us is None or ingested_us > previous_us)
    )
    return dict(new)
