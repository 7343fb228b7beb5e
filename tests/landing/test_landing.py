"""Writing the landing zone atomically, its manifest, and validation for a run."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pitstore.landing.zone import (
    MANIFEST_NAME,
    LandingError,
    LandingManifest,
    partition_files,
    read_manifest,
    validate_for_watermark,
    write_landing,
)
from pitstore.synth.generate import GeneratorParams, LandingBatch, generate

PARAMS = GeneratorParams(accounts=60, merchants=30, days=12, seed=5)
START = PARAMS.start  # 2026-01-05T00:00Z
THROUGH = PARAMS.complete_through  # 2026-01-17T00:00Z


@pytest.fixture(scope="module")
def batch() -> LandingBatch:
    return generate(PARAMS)


@pytest.fixture(scope="module")
def landed(batch: LandingBatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("landing") / "landing"
    write_landing(batch, root)
    return root


@pytest.fixture
def scratch(landed: Path, tmp_path: Path) -> Path:
    """A private copy that a test may damage."""
    root = tmp_path / "landing"
    shutil.copytree(landed, root)
    return root


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- write_landing ------------------------------------------------------------


def test_layout_and_manifest_match_the_contract(landed: Path, batch: LandingBatch) -> None:
    raw = json.loads((landed / MANIFEST_NAME).read_text())
    assert set(raw) == {"format", "params", "start", "complete_through", "partitions"}
    assert raw["format"] == 1 and raw["params"] == PARAMS.to_dict()
    assert datetime.fromisoformat(raw["start"]) == START
    assert datetime.fromisoformat(raw["complete_through"]) == THROUGH
    assert len(raw["partitions"]) == len(batch.tables)
    for p in raw["partitions"]:
        assert set(p) == {"dataset", "ingest_date", "path", "rows", "sha256"}
        assert p["path"].startswith(f"{p['dataset']}/ingest_date={p['ingest_date']}/part-")
        data = (landed / p["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == p["sha256"]
        assert pq.read_metadata(landed / p["path"]).num_rows == p["rows"]
    assert [p["path"] for p in raw["partitions"] if p["path"].endswith("part-00001.parquet")]
    files = {str(p.relative_to(landed)) for p in landed.rglob("*") if p.is_file()}
    assert files == {MANIFEST_NAME} | {p["path"] for p in raw["partitions"]}  # no temp files


def test_same_params_give_identical_bytes(
    landed: Path, batch: LandingBatch, tmp_path: Path
) -> None:
    write_landing(generate(PARAMS), tmp_path / "again")
    assert {k: v[0] for k, v in snapshot(tmp_path / "again").items()} == {
        k: v[0] for k, v in snapshot(landed).items()
    }


def test_rewrite_with_same_params_is_a_no_op(scratch: Path, batch: LandingBatch) -> None:
    before = snapshot(scratch)
    manifest = write_landing(batch, scratch)
    assert manifest == read_manifest(scratch)
    assert snapshot(scratch) == before  # not even rewritten (mtimes unchanged)


def test_rewrite_with_other_params_is_refused(scratch: Path) -> None:
    other = generate(GeneratorParams(accounts=60, merchants=30, days=12, seed=6))
    before = snapshot(scratch)
    with pytest.raises(LandingError, match="append-only.*another --out"):
        write_landing(other, scratch)
    assert snapshot(scratch) == before


def test_rewrite_onto_a_damaged_zone_is_refused(scratch: Path, batch: LandingBatch) -> None:
    victim = next(scratch.glob("labels/*/part-00000.parquet"))
    victim.unlink()
    with pytest.raises(LandingError, match="missing file"):
        write_landing(batch, scratch)


def test_interrupted_write_is_completed(scratch: Path, landed: Path, batch: LandingBatch) -> None:
    # A crash before the manifest: some files, a stray temp file, no manifest.
    (scratch / MANIFEST_NAME).unlink()
    next(scratch.glob("transactions/*/part-00000.parquet")).unlink()
    (scratch / "labels" / ".part-00000.parquet.tmp-4242").write_bytes(b"half")
    with pytest.raises(LandingError, match="no landing manifest"):
        read_manifest(scratch)
    write_landing(batch, scratch)
    assert {k: v[0] for k, v in snapshot(scratch).items()} == {
        k: v[0] for k, v in snapshot(landed).items()
    }


def test_foreign_files_without_manifest_are_refused(tmp_path: Path, batch: LandingBatch) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LandingError, match="holds other files"):
        write_landing(batch, tmp_path)
    assert not (tmp_path / MANIFEST_NAME).exists()


# --- read_manifest ------------------------------------------------------------


def test_read_manifest_errors(scratch: Path, tmp_path: Path) -> None:
    with pytest.raises(LandingError, match="no landing manifest"):
        read_manifest(tmp_path / "nowhere")
    manifest_path = scratch / MANIFEST_NAME
    raw = json.loads(manifest_path.read_text())
    manifest_path.write_text("{not json")
    with pytest.raises(LandingError, match="unreadable landing manifest"):
        read_manifest(scratch)
    raw["partitions"][0]["path"] = "../../etc/passwd"
    manifest_path.write_text(json.dumps(raw))
    with pytest.raises(LandingError, match="bad partition entry"):
        read_manifest(scratch)


def test_manifest_paths_are_relative_to_where_the_zone_is(scratch: Path) -> None:
    m = read_manifest(scratch)
    assert isinstance(m, LandingManifest) and m.root == scratch.absolute()
    assert m.start == START and m.complete_through == THROUGH


# --- validate_for_watermark -----------------------------------------------------


def test_validate_accepts_watermarks_up_to_complete_through(landed: Path) -> None:
    assert validate_for_watermark(landed, THROUGH).complete_through == THROUGH
    validate_for_watermark(landed, START + timedelta(hours=50, minutes=7))
    validate_for_watermark(landed, START - timedelta(days=1))  # nothing to read yet
    validate_for_watermark(landed, THROUGH.astimezone(timezone(timedelta(hours=-5))))


def test_validate_rejects_naive_watermark(landed: Path) -> None:
    with pytest.raises(LandingError, match="naive"):
        validate_for_watermark(landed, datetime(2026, 1, 8, 12))


def test_validate_rejects_watermark_past_complete_through(landed: Path) -> None:
    with pytest.raises(
        LandingError, match="could not be repeated: data with ingested_at <= W may still arrive"
    ):
        validate_for_watermark(landed, THROUGH + timedelta(microseconds=1))


def test_validate_reports_missing_file_only_if_the_run_needs_it(scratch: Path) -> None:
    victim = scratch / "transactions/ingest_date=2026-01-08/part-00000.parquet"
    victim.unlink()
    validate_for_watermark(scratch, datetime(2026, 1, 7, 23, 59, tzinfo=UTC))
    with pytest.raises(LandingError, match="missing file.*ingest_date=2026-01-08"):
        validate_for_watermark(scratch, datetime(2026, 1, 8, 0, 0, tzinfo=UTC))


def test_validate_detects_a_flipped_byte(scratch: Path) -> None:
    victim = scratch / "transactions/ingest_date=2026-01-06/part-00000.parquet"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(LandingError, match=r"corrupt.*ingest_date=2026-01-06.*sha256"):
        validate_for_watermark(scratch, THROUGH)


def test_validate_detects_unreadable_parquet(scratch: Path) -> None:
    # A file that matches a (tampered) manifest hash but is not parquet.
    manifest_path = scratch / MANIFEST_NAME
    raw = json.loads(manifest_path.read_text())
    entry = raw["partitions"][0]
    (scratch / entry["path"]).write_bytes(b"not parquet at all")
    entry["sha256"] = hashlib.sha256(b"not parquet at all").hexdigest()
    manifest_path.write_text(json.dumps(raw))
    with pytest.raises(LandingError, match="not readable parquet"):
        validate_for_watermark(scratch, THROUGH)


# --- partition_files ----------------------------------------------------------


def test_partition_files_by_watermark_date(landed: Path) -> None:
    m = read_manifest(landed)
    w = datetime(2026, 1, 8, 0, 30, tzinfo=timezone(timedelta(hours=1)))  # 01-07 23:30Z
    files = partition_files(m, "transactions", w)
    assert files and all(p.is_absolute() and p.is_file() for p in files)
    dates = {p.parent.name for p in files}
    assert max(dates) == "ingest_date=2026-01-07"
    assert len(files) == len({p for p in files})
    assert partition_files(m, "transactions", START - timedelta(microseconds=1)) == []
    every = partition_files(m, "transactions", THROUGH)
    assert any(p.name == "part-00001.parquet" for p in every)  # the drifted file is listed
    assert all(p.parent.parent.name == "labels" for p in partition_files(m, "labels", THROUGH))


def test_partition_files_rejects_bad_arguments(landed: Path) -> None:
    m = read_manifest(landed)
    with pytest.raises(LandingError, match="unknown dataset"):
        partition_files(m, "accounts", THROUGH)
    with pytest.raises(LandingError, match="naive"):
        partition_files(m, "labels", datetime(2026, 1, 8))
