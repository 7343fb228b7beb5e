"""The landing zone on disk: atomic append-only writes, manifest, validation.

Layout under ROOT (the contract other modules read):

    ROOT/transactions/ingest_date=YYYY-MM-DD/part-00000.parquet
    ROOT/labels/ingest_date=YYYY-MM-DD/part-00000.parquet
    ROOT/_manifest.json

The manifest is written last, so a landing zone without one is an interrupted
write, never a complete one. A transform run with watermark W may only trust
the zone if W <= complete_through (otherwise rows with ingested_at <= W could
still arrive and the run would not be repeatable) and every file it reads is
byte-for-byte the one the manifest lists.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pitstore.landing.schema import DATASETS, BatchParams, LandingBatch

MANIFEST_NAME = "_manifest.json"
FORMAT = 1
_PATH_RE = re.compile(
    r"^(?P<dataset>[a-z_]+)/ingest_date=(?P<date>\d{4}-\d{2}-\d{2})/part-\d{5}\.parquet$"
)
# Our temp files: ".<final name>.tmp-<pid>" next to the final file.
_TMP_RE = re.compile(r"^\..+\.tmp-\d+$")


class LandingError(Exception):
    """The landing zone cannot be written or trusted as asked."""


@dataclass(frozen=True)
class PartitionEntry:
    dataset: str
    ingest_date: date
    path: str  # relative to the root, POSIX separators
    rows: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "ingest_date": self.ingest_date.isoformat(),
            "path": self.path,
            "rows": self.rows,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class LandingManifest:
    root: Path  # absolute; not serialised, so a zone can be moved
    params: dict[str, Any]
    start: datetime
    complete_through: datetime
    partitions: tuple[PartitionEntry, ...]
    format: int = FORMAT

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "format": self.format,
                    "params": self.params,
                    "start": self.start.isoformat(),
                    "complete_through": self.complete_through.isoformat(),
                    "partitions": [p.to_dict() for p in self.partitions],
                },
                indent=2,
            )
            + "\n"
        )


def _utc(watermark: datetime, what: str = "watermark") -> datetime:
    if not isinstance(watermark, datetime):
        raise LandingError(f"{what} must be a datetime, got {watermark!r}")
    if watermark.tzinfo is None or watermark.utcoffset() is None:
        raise LandingError(
            f"{what} {watermark.isoformat()} is naive; pass a timezone-aware UTC datetime "
            "(a naive time is ambiguous and would make the run unrepeatable)"
        )
    return watermark.astimezone(UTC)


def _serialize(table: pa.Table) -> bytes:
    # In memory first: the sha256 is of exactly the bytes that land on disk.
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    return buf.getvalue()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds: best effort
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via temp file + fsync + os.replace: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _check_file(root: Path, entry: PartitionEntry) -> None:
    path = root / entry.path
    where = f"{entry.dataset} partition ingest_date={entry.ingest_date.isoformat()} ({path})"
    if not path.is_file():
        raise LandingError(f"missing file for {where}: listed in the manifest but not on disk")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise LandingError(
            f"corrupt file for {where}: sha256 {digest} does not match the "
            f"manifest's {entry.sha256}"
        )
    try:
        rows = pq.read_metadata(pa.BufferReader(data)).num_rows
    except Exception as exc:  # pyarrow raises several types for bad files
        raise LandingError(f"corrupt file for {where}: not readable parquet ({exc})") from exc
    if rows != entry.rows:
        raise LandingError(f"corrupt file for {where}: {rows} rows, manifest says {entry.rows}")


def read_manifest(root: Path) -> LandingManifest:
    """Load and sanity-check ROOT/_manifest.json."""
    root = Path(root).absolute()
    path = root / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LandingError(
            f"no landing manifest at {path}: not a landing zone, or its "
            "write was interrupted (the manifest is written last)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LandingError(f"unreadable landing manifest {path}: {exc}") from exc
    try:
        if raw["format"] != FORMAT:
            raise LandingError(
                f"landing manifest {path} has format {raw['format']!r}; "
                f"this code reads format {FORMAT}"
            )
        start = _utc(datetime.fromisoformat(raw["start"]), "manifest start")
        through = _utc(datetime.fromisoformat(raw["complete_through"]), "manifest complete_through")
        if through < start:
            raise LandingError(
                f"landing manifest {path}: complete_through {through} is before start {start}"
            )
        params = raw["params"]
        if not isinstance(params, dict):
            raise LandingError(f"landing manifest {path}: params must be an object")
        entries = []
        for p in raw["partitions"]:
            m = _PATH_RE.match(p["path"])
            # Paths must be exactly ours: no "..", no absolute paths, and the
            # path must agree with the dataset and date it is listed under.
            if (
                m is None
                or m["dataset"] != p["dataset"]
                or m["date"] != p["ingest_date"]
                or p["dataset"] not in DATASETS
            ):
                raise LandingError(f"landing manifest {path}: bad partition entry {p!r}")
            if not isinstance(p["rows"], int) or not re.fullmatch(r"[0-9a-f]{64}", p["sha256"]):
                raise LandingError(f"landing manifest {path}: bad rows/sha256 in {p!r}")
            entries.append(
                PartitionEntry(
                    p["dataset"],
                    date.fromisoformat(p["ingest_date"]),
                    p["path"],
                    p["rows"],
                    p["sha256"],
                )
            )
    except LandingError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise LandingError(f"malformed landing manifest {path}: {exc!r}") from exc
    return LandingManifest(
        root=root,
        params=params,
        start=start,
        complete_through=through,
        partitions=tuple(entries),
        format=FORMAT,
    )


def _manifest_for(batch: LandingBatch, root: Path) -> tuple[LandingManifest, dict[str, bytes]]:
    files: dict[str, bytes] = {}
    entries = []
    for key, table in batch.tables.items():
        rel = batch.relative_path(key)
        files[rel] = _serialize(table)
        entries.append(
            PartitionEntry(
                key[0],
                date.fromisoformat(key[1]),
                rel,
                table.num_rows,
                hashlib.sha256(files[rel]).hexdigest(),
            )
        )
    entries.sort(key=lambda e: (e.dataset, e.ingest_date, e.path))
    p: BatchParams = batch.params
    return LandingManifest(
        root=root,
        params=p.to_dict(),
        start=p.start,
        complete_through=p.complete_through,
        partitions=tuple(entries),
    ), files


def write_landing(batch: LandingBatch, root: Path) -> LandingManifest:
    """Land `batch` under `root` atomically; a no-op if it is already there.

    The landing zone is append-only: an existing zone made with other params is
    never modified. A zone without a manifest (an interrupted write) is
    completed, provided it holds nothing but files this batch would write.
    """
    root = Path(root).absolute()
    wanted, files = _manifest_for(batch, root)
    if (root / MANIFEST_NAME).exists():
        existing = read_manifest(root)
        if existing.params != wanted.params:
            raise LandingError(
                f"landing zone {root} was generated with params {existing.params}, not "
                f"{wanted.params}; the landing zone is append-only: use another --out "
                "or remove it first"
            )
        for entry in existing.partitions:
            _check_file(root, entry)
        if existing.partitions != wanted.partitions:
            raise LandingError(
                f"landing zone {root} has the same params but different files than this "
                "generator produces (was the generator changed?); use another --out or "
                "remove it first"
            )
        return existing
    if root.exists() and not root.is_dir():
        raise LandingError(f"landing root {root} exists and is not a directory")
    if root.exists():
        stray = sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file()
            and not _TMP_RE.match(p.name)
            and p.relative_to(root).as_posix() not in files
        )
        if stray:
            raise LandingError(
                f"landing root {root} has no manifest but holds other files "
                f"(e.g. {stray[:3]}); refusing to mix them in: use another --out or remove it"
            )
        for p in root.rglob(".*.tmp-*"):
            if p.is_file() and _TMP_RE.match(p.name):
                p.unlink()  # leftovers of an interrupted write of ours
    for rel, data in files.items():
        _atomic_write(root / rel, data)
    # Manifest last: its presence certifies every file above is complete.
    _atomic_write(root / MANIFEST_NAME, wanted.to_json().encode("utf-8"))
    return wanted


def validate_for_watermark(root: Path, watermark: datetime) -> LandingManifest:
    """Check the zone can serve a repeatable run with watermark W.

    Only partitions with ingest_date <= date(W) are read by such a run, so
    only they are checked (hash, parquet footer, row count).
    """
    w = _utc(watermark)
    manifest = read_manifest(root)
    if w > manifest.complete_through:
        raise LandingError(
            f"watermark {w.isoformat()} is after the landing zone's complete_through "
            f"{manifest.complete_through.isoformat()} ({manifest.root}): its run could not "
            f"be repeated: data with ingested_at <= W may still arrive"
        )
    for entry in manifest.partitions:
        if entry.ingest_date <= w.date():
            _check_file(manifest.root, entry)
    return manifest


def partition_files(manifest: LandingManifest, dataset: str, watermark: datetime) -> list[Path]:
    """Absolute paths of `dataset`'s files with ingest_date <= date(W), in order.

    Files of the watermark's own day also hold rows ingested after W: the
    reader must still filter on ingested_at <= W.
    """
    if dataset not in DATASETS:
        raise LandingError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    day = _utc(watermark).date()
    return [
        manifest.root / e.path
        for e in manifest.partitions
        if e.dataset == dataset and e.ingest_date <= day
    ]
