"""Time handling: UTC, microseconds, explicit offsets. Nothing depends on wall-clock time."""

from __future__ import annotations

from datetime import UTC, datetime


class WatermarkError(ValueError):
    """A watermark (or request timestamp) that cannot be used as given."""


def parse_utc(text: str, what: str = "watermark") -> datetime:
    """Parse an ISO-8601 timestamp that carries an offset; return it in UTC.

    A naive time is refused: guessing a zone is how a batch silently reads the
    wrong hour of data (DST, servers in other regions).
    """
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise WatermarkError(
            f"{what} {text!r} is not an ISO-8601 timestamp (e.g. 2026-01-05T00:00:00+00:00)"
        ) from exc
    if value.tzinfo is None or value.utcoffset() is None:
        # The hint is built from the parsed value, so it is itself valid input
        # (a bare date "2026-02-19" becomes "2026-02-19T00:00:00+00:00").
        hint = value.replace(tzinfo=UTC).isoformat()
        raise WatermarkError(f"{what} {text!r} has no UTC offset; write it as e.g. {hint}")
    return value.astimezone(UTC)


def to_us(value: datetime) -> int:
    """Microseconds since the epoch (exact, no float rounding)."""
    if value.tzinfo is None:
        raise WatermarkError(f"naive datetime {value!r}: pitstore times are UTC-aware")
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, tz=UTC).replace(
        microsecond=micros % 1_000_000
    )


def stamp(value: datetime) -> str:
    """A file-name-safe UTC stamp that keeps every microsecond:
    2026-01-05T00:00:00.25+00:00 -> 20260105T000000.250000Z.

    A run's files are named by its watermark, so the stamp must tell any two
    watermarks apart: with whole seconds, runs at 12:00:00.250 and 12:00:00.750
    wrote the same file names and the second replaced the first's rows. The
    fraction always has 6 digits, so names sort as the instants do (readers list
    ``run-*.parquet`` in name order) and a name maps back to one instant.
    """
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def stamp_us(micros: int) -> str:
    """:func:`stamp` of a time in microseconds since the epoch."""
    return stamp(from_us(micros))
