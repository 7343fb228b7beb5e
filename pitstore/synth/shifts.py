"""Documented shifts the generator can inject from a given day, for monitoring drills.

- ``zero_field``: an upstream bug in the batch extract writes 0 in one numeric
  field (``amount``) of every transaction from ``from_day`` on. The payment
  switch still sends the real amount to serving; only the landing zone, and so
  every feature aggregated from that field, sees zeros.
- ``fraud_campaign``: from ``from_day`` on, fraud moves to a new merchant
  category and channel: every fraud transaction is moved to a merchant of
  ``category`` (one already in the world) and to ``channel``.

Shifts only rewrite rows (never add or drop any) and draw from their own random
stream, so a shifted world is the unshifted one, row for row, before
``from_day``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

US_PER_DAY = 86_400_000_000
KINDS = ("zero_field", "fraud_campaign")
ZEROABLE = ("amount",)
BAD_COPY = 2  # generate.py's marker of a deliberately bad event


@dataclass(frozen=True)
class Shift:
    kind: str
    from_day: int
    field: str = "amount"  # zero_field
    category: str = "gambling"  # fraud_campaign
    channel: str = "ecom"  # fraud_campaign

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"shift kind must be one of {KINDS}, not {self.kind!r}")
        if self.from_day < 0:
            raise ValueError(f"shift from_day must be >= 0, got {self.from_day}")
        if self.kind == "zero_field" and self.field not in ZEROABLE:
            raise ValueError(f"zero_field can zero {ZEROABLE}, not {self.field!r}")

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "zero_field":
            return {"kind": self.kind, "from_day": self.from_day, "field": self.field}
        return {
            "kind": self.kind,
            "from_day": self.from_day,
            "category": self.category,
            "channel": self.channel,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shift:
        return cls(**d)


def apply_shifts(
    shifts: tuple[Shift, ...],
    rows: dict[str, np.ndarray],
    start_us: int,
    seed: int,
    categories: tuple[str, ...],
    channels: tuple[str, ...],
    genuine_kind: int,
) -> dict[str, np.ndarray]:
    """The rows with every shift applied (copies of the changed columns)."""
    if not shifts:
        return rows
    out = dict(rows)
    rng = np.random.default_rng([seed, 0x5817])  # its own stream: the world is unchanged
    for shift in shifts:
        after = out["event_us"] >= start_us + shift.from_day * US_PER_DAY
        # the deliberately bad events (copy 2) stay as they are: still quarantined
        after &= out["copy"] != BAD_COPY
        if shift.kind == "zero_field":
            out[shift.field] = np.where(after, 0, out[shift.field]).astype(out[shift.field].dtype)
            continue
        if shift.category not in categories:
            raise ValueError(f"unknown category {shift.category!r}: one of {categories}")
        if shift.channel not in channels:
            raise ValueError(f"unknown channel {shift.channel!r}: one of {channels}")
        cat = categories.index(shift.category)
        targets = np.unique(out["merchant"][out["category"] == cat])
        if targets.size == 0:
            raise ValueError(f"no merchant of category {shift.category!r} in this world")
        moved = after & (out["fraud_kind"] != genuine_kind)
        out["merchant"] = out["merchant"].copy()
        out["merchant"][moved] = rng.choice(targets, int(moved.sum()))
        out["category"] = np.where(moved, cat, out["category"])
        out["channel"] = np.where(moved, channels.index(shift.channel), out["channel"])
    return out
