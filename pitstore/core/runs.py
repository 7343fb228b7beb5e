"""Run bookkeeping shared by both engines: what a run reports and which runs completed.

A run is identified by its watermark W (see docs/semantics.md). Both engines
(dbt and Spark) record a completed run the same way, and this module owns that
record: every reader (the materializer, training, the checks, the engines
themselves) asks :func:`completed_watermarks` or :func:`read_markers`.

**The completed-run marker**: ``<offline>/_runs/run-<stamp(W)>.json``, one per
completed run (``stamp`` keeps every microsecond of W, see ``timeutil.stamp``)::

    {"format": 1, "engine": "dbt" | "spark",
     "watermark": "2026-01-09T12:00:00.250000+00:00", "watermark_us": 1767960000250000,
     "files": {"<view>/run-<stamp>.parquet": {"bytes": 1234, "sha256": "..."}, ...},
     "summary": {... RunSummary ...},
     "engine_state": {...}}            # what the engine needs from its previous run

``files`` are the files the run published, relative to ``<offline>`` (each
view's rows; for Spark also its ``_state/<dataset>/`` files); ``bytes`` and
``sha256`` are null where the engine wrote to a remote store. The marker is
written *last*, after every listed file was published and flushed to disk, and
atomically (temporary name, fsync, rename, fsync of the directory): a run that
has no marker never happened, whatever files it left.

**Invariants every run keeps**, under the home's run lock (``run_lock.py``),
before it computes anything:

* files in the engine-owned parts of the offline store (each view's directory,
  ``_state/``, ``_runs/``) that no marker lists are a killed run's leftovers:
  hidden temporaries are deleted, anything else is moved to ``<offline>/_orphans/``
  (never read by anyone; kept in case an operator put it there);
* every listed file still has the size its run recorded, else the run stops:
  a changed file means the store no longer holds what was published.

``_compact/`` (training's sorted copy, which checks its own inputs) and any other
directory are left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pitstore.core.config import Settings
from pitstore.core.spec import FEATURE_VIEWS
from pitstore.core.timeutil import from_us, stamp

MARKERS = "_runs"
STATE = "_state"  # the Spark engine's deduplicated events (one file per run)
ORPHANS = "_orphans"
MARKER_FORMAT = 1
# Where a home written before the shared marker kept its run records.
LEGACY_SUMMARIES = ("dbt-*.json", "spark-*.json")


class TransformError(RuntimeError):
    """A run that must not proceed; the offline store is left as it was.

    ``exit_code`` is the CLI's: 2 for a request that cannot be served as asked
    (bad watermark order, landing zone), 1 for a failure of the store or machine.
    """

    exit_code = 2


class RunFailed(TransformError):
    """The run was valid but failed (dbt, Spark, the machine): it published nothing."""

    exit_code = 1


class StoreError(RunFailed):
    """The offline store, the warehouse or the disk failed: the run stopped."""


@dataclass
class RunSummary:
    engine: str
    watermark: str
    previous_watermark: str | None
    rows_appended: dict[str, int] = field(default_factory=dict)
    rows_restated: dict[str, int] = field(default_factory=dict)
    rows_total: dict[str, int] = field(default_factory=dict)
    quarantined_new: dict[str, int] = field(default_factory=dict)
    quarantined_total: int = 0
    drifted_files: list[str] = field(default_factory=list)
    orphans_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


@dataclass
class RunMarker:
    """What a completed run published (see the module docstring)."""

    engine: str
    watermark_us: int
    files: dict[str, dict[str, Any]]
    summary: dict[str, Any]
    engine_state: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        body = {
            "format": MARKER_FORMAT,
            "engine": self.engine,
            "watermark": from_us(self.watermark_us).isoformat(timespec="microseconds"),
            "watermark_us": self.watermark_us,
            "files": self.files,
            "summary": self.summary,
            "engine_state": self.engine_state,
        }
        return json.dumps(body, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> RunMarker:
        try:
            body = json.loads(text)
            if body.get("format") != MARKER_FORMAT:
                raise TransformError(
                    f"{source} is a run record of an earlier pitstore: rebuild the store "
                    "with `pitstore transform --full-refresh`"
                )
            return cls(
                engine=str(body["engine"]),
                watermark_us=int(body["watermark_us"]),
                files=dict(body["files"]),
                summary=dict(body["summary"]),
                engine_state=dict(body.get("engine_state") or {}),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"run marker {source} is unreadable ({exc})") from exc


def marker_name(watermark_us: int) -> str:
    return f"run-{stamp(from_us(watermark_us))}.json"


def is_marker_name(name: str) -> bool:
    return name.startswith("run-") and name.endswith(".json")


def engine_dirs() -> list[str]:
    """The parts of the offline store the engines write (relative to ``<offline>``)."""
    return [view.name for view in FEATURE_VIEWS] + [STATE, MARKERS]


# --- reading -----------------------------------------------------------------


def read_markers(offline: Path) -> dict[int, RunMarker]:
    """The completed runs of a local offline store, by watermark (µs)."""
    folder = offline / MARKERS
    if not folder.is_dir():
        return {}
    markers = {}
    for path in sorted(folder.iterdir()):
        if is_marker_name(path.name):
            try:
                marker = RunMarker.from_json(path.read_text(encoding="utf-8"), str(path))
            except OSError as exc:
                raise StoreError(f"cannot read run marker {path}: {exc.strerror}") from exc
            markers[marker.watermark_us] = marker
    return markers


def completed_watermarks(settings: Settings) -> list[int]:
    """Watermarks (µs, ascending) of the runs that completed, whichever engine ran them.

    A run is complete once its marker exists (module docstring): each engine
    writes it last, after every file it lists was published. A run that crashed
    before that never counts.
    """
    return sorted(read_markers(settings.offline))


def published_files(offline: Path) -> list[Path]:
    """Every file a completed run published (what readers may trust)."""
    return sorted(offline / rel for m in read_markers(offline).values() for rel in m.files)


def legacy_records(runs_dir: Path | None) -> list[Path]:
    """Run records of a home written before the shared marker existed."""
    found = []
    if runs_dir is not None and runs_dir.is_dir():
        for pattern in LEGACY_SUMMARIES:
            found += sorted(runs_dir.glob(pattern))
    return found


# --- writing -----------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_entry(path: Path) -> dict[str, Any]:
    """Size and sha256 of a published file, after flushing it to disk."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        os.fsync(fh.fileno())
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def write_marker(offline: Path, marker: RunMarker) -> Path:
    """Publish ``marker`` atomically: the run counts from this moment on."""
    folder = offline / MARKERS
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / marker_name(marker.watermark_us)
    tmp = folder / f".{final.name}.tmp-{os.getpid()}"
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(marker.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        # The directories of the files it lists first: their renames must be
        # durable before the marker that vouches for them.
        for parent in {(offline / rel).parent for rel in marker.files}:
            fsync_dir(parent)
        os.replace(tmp, final)
        fsync_dir(folder)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write run marker {final}: {exc.strerror or exc}") from exc
    return final


def forget_runs(offline: Path, runs_dir: Path | None = None) -> None:
    """A full refresh: every file of the engines' directories and legacy records go
    (history is rebuilt as one run; nothing there is kept, not even orphans)."""
    import shutil

    for top in engine_dirs():
        root = offline / top
        if root.is_dir():
            for child in root.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    for path in legacy_records(runs_dir):
        path.unlink()


def begin_run(
    offline: Path, runs_dir: Path | None, engine: str, watermark_us: int, full_refresh: bool
) -> tuple[dict[int, RunMarker], list[str]]:
    """The completed runs a run at W builds on, after enforcing the invariants
    (module docstring); returns them and the orphans removed. Call under the lock.

    A full refresh builds on nothing: the caller calls :func:`forget_runs` once its
    inputs are validated, so a refused full refresh leaves the store as it was.
    """
    if full_refresh:
        return {}, []
    markers = read_markers(offline)
    legacy = legacy_records(runs_dir)
    if legacy and not markers:
        raise TransformError(
            f"this home was written by an earlier pitstore (run records such as {legacy[0]}): "
            "rebuild it with `pitstore transform --full-refresh`"
        )
    check_engine(engine, markers)
    check_published(offline, markers, skip_us=watermark_us)
    return markers, sweep_unlisted(offline, markers)


# --- the invariants -------------------------------------------------------------


def check_published(offline: Path, markers: dict[int, RunMarker], skip_us: int | None) -> None:
    """Refuse a store whose published files changed since their run (sizes only:
    a stat per file, cheap on every run; ``sha256`` is there for audits).

    ``skip_us``: the run about to be repeated, which rewrites its own files.
    """
    for w_us, marker in sorted(markers.items()):
        if w_us == skip_us:
            continue
        for rel, entry in marker.files.items():
            path = offline / rel
            expected = entry.get("bytes")
            try:
                actual = path.stat().st_size
            except FileNotFoundError:
                raise StoreError(
                    f"offline file {path} published by the run at "
                    f"{from_us(w_us).isoformat()} is missing: restore it or rebuild with "
                    "--full-refresh"
                ) from None
            if expected is not None and actual != expected:
                raise StoreError(
                    f"offline file {path} is {actual} bytes but the run at "
                    f"{from_us(w_us).isoformat()} published {expected}: it was changed "
                    "or damaged; re-run that watermark to rewrite it, or rebuild with "
                    "--full-refresh"
                )


def sweep_unlisted(offline: Path, markers: dict[int, RunMarker]) -> list[str]:
    """Remove what no completed run published from the engines' directories.

    Hidden names (a writer's temporaries) are deleted; other files and folders
    move to ``<offline>/_orphans/`` under their relative path. Returns the
    relative paths removed.
    """
    listed = {rel for m in markers.values() for rel in m.files}
    marker_names = {marker_name(w) for w in markers}
    removed = []
    for top in engine_dirs():
        root = offline / top
        if not root.is_dir():
            continue
        for path in _entries(root):
            rel = path.relative_to(offline).as_posix()
            if rel in listed or (top == MARKERS and path.name in marker_names):
                continue
            if path.is_dir() and any(r.startswith(rel + "/") for r in listed):
                continue  # a folder that holds published files (_state/<dataset>)
            removed.append(rel)
            _remove(offline, path, rel)
    return removed


def _entries(root: Path) -> Iterable[Path]:
    """Files and folders under ``root``: a folder holding no published file is one entry."""
    for child in sorted(root.iterdir()):
        yield child
        if child.is_dir() and not child.name.startswith("."):
            yield from _entries(child)


def _remove(offline: Path, path: Path, rel: str) -> None:
    import shutil

    if not path.exists():
        return  # inside a folder already moved
    try:
        if path.name.startswith("."):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            return
        target = offline / ORPHANS / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(path, target)
    except OSError as exc:
        raise StoreError(f"cannot remove unpublished file {path}: {exc.strerror}") from exc


def check_run_order(watermark_us: int, runs: list[int]) -> int | None:
    """Runs move forward; repeating an earlier run is allowed (it is idempotent).

    Inserting a *new* run before the newest one would leave later versions
    computed against a history that did not include it, so it is refused.
    Returns the previous run's watermark, if any.
    """
    if runs and watermark_us < max(runs) and watermark_us not in runs:
        raise TransformError(
            "watermark is earlier than the newest run and was never run before: "
            "runs must move forward (re-running an existing watermark is allowed)"
        )
    earlier = [r for r in runs if r < watermark_us]
    return max(earlier) if earlier else None


def check_engine(engine: str, markers: dict[int, RunMarker]) -> None:
    """One engine per home: each keeps its own state (dbt's warehouse, Spark's
    ``_state``), which the other's runs never updated."""
    others = sorted({m.engine for m in markers.values()} - {engine})
    if others:
        raise TransformError(
            f"this offline store's runs were made by the {others[0]} engine: use "
            f"--engine {others[0]}, or rebuild it with --engine {engine} --full-refresh"
        )
