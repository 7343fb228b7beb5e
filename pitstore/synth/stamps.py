"""How the synthetic sources stamp what they deliver: ids, event_ts strings, files.

Shared by every dataset the generator lands (card transactions, the account
ledger, loan applications), so an id or a timestamp looks the same whichever
feed it comes from.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pitstore.landing.schema import PartitionKey
from pitstore.synth.generate_fraud import TS_NAIVE, TS_UNPARSEABLE, US_PER_H, US_PER_S

# Source systems stamp event_ts in their own zone; "UTC" ones write "Z".
SOURCE_ZONES = ("UTC", "Europe/London", "Europe/Paris", "America/New_York")
SOURCE_ZONE_P = np.array([0.70, 0.15, 0.10, 0.05])


def to_us(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def offset_minutes(zone: str, base_us: int, n_hours: int) -> np.ndarray:
    """UTC offset (minutes) of `zone` for each UTC hour from base_us.

    An hourly table is exact here: the UK, EU and US DST switches all happen
    on a whole UTC hour (01:00 UTC in Europe, 06:00/07:00 UTC in New York).
    """
    tz = ZoneInfo(zone)
    base = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=base_us)
    out = np.empty(n_hours, np.int64)
    for h in range(n_hours):
        offset = (base + timedelta(hours=h)).astimezone(tz).utcoffset()
        out[h] = (offset or timedelta(0)) // timedelta(minutes=1)  # never None for ZoneInfo
    return out


def zone_offsets(base_us: int, days: int) -> np.ndarray:
    """Offsets of every source zone, hourly, for `days` days from base_us."""
    return np.stack([offset_minutes(z, base_us, days * 24) for z in SOURCE_ZONES])


def ids(prefix: str, width: int, codes: np.ndarray) -> pa.Array:
    """prefix + zero-padded code; negative codes become nulls (bad events)."""
    digits = pc.utf8_lpad(
        pc.cast(pa.array(codes, mask=codes < 0), pa.string()), width=width, padding="0"
    )
    return pc.binary_join_element_wise(prefix, digits, "")


def event_ts_strings(
    event_us: np.ndarray, zone: np.ndarray, style: np.ndarray, base_us: int, offsets: np.ndarray
) -> pa.Array:
    """ISO-8601 local times with the zone's offset ("Z" for UTC), as sources write them."""
    hour = np.clip((event_us - base_us) // US_PER_H, 0, offsets.shape[1] - 1)
    off = offsets[zone, hour]
    local = (event_us + off * 60 * US_PER_S).astype("datetime64[us]")
    text = np.datetime_as_string(local, unit="us").astype(object)
    uniq, inverse = np.unique(off, return_inverse=True)
    suffix = np.array(
        [f"{'+' if o >= 0 else '-'}{abs(o) // 60:02d}:{abs(o) % 60:02d}" for o in uniq],
        dtype=object,
    )[inverse]
    suffix[zone == 0] = "Z"
    suffix[style == TS_NAIVE] = ""
    text = text + suffix
    text[style == TS_UNPARSEABLE] = "not-a-time"
    return pa.array(text, type=pa.string())


def partitioned(
    rng: np.random.Generator,
    dataset: str,
    table: pa.Table,
    day: np.ndarray,
    part: np.ndarray,
    start: date,
) -> dict[PartitionKey, pa.Table]:
    """One table per (ingest day, part); `day` counts days from `start`."""
    # Shuffle, then stable-sort by partition: rows inside a file arrive out of
    # order, as they do from a real feed, but reproducibly.
    perm = rng.permutation(day.size)
    order = perm[np.argsort((day * 2 + part)[perm], kind="stable")]
    table, day, part = table.take(order), day[order], part[order]
    out: dict[PartitionKey, pa.Table] = {}
    bounds = np.flatnonzero(np.diff(day * 2 + part)) + 1
    for lo, hi in zip(
        np.concatenate([[0], bounds]), np.concatenate([bounds, [day.size]]), strict=True
    ):
        if hi > lo:
            d = (start + timedelta(days=int(day[lo]))).isoformat()
            out[(dataset, d, int(part[lo]))] = table.slice(lo, hi - lo)
    return out
