"""The audit log as evidence: every kind of tampering is detected and named.

Logs are written by the real ``AuditLog``; the tampering is done to the files
on disk, as someone with write access to the audit directory would."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pitstore.cli.app import app
from pitstore.serving.audit import AuditLog, count_records, new_decision_id
from pitstore.serving.audit_chain import genesis, link, load_key, sig_path, unlink
from pitstore.serving.audit_verify import FileReport, verify_tree

KEY = b"an audit key for the tests, 32b!"
DAY = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def record(i: int, decision: str = "decline") -> dict[str, Any]:
    return {
        "decision_id": new_decision_id(DAY),
        "decided_at": DAY.isoformat(),
        "n": i,
        "decision": decision,
        "score": 0.91,
    }


def write_log(root: Path, n: int = 10, **kw: Any) -> Path:
    """A closed log of ``n`` records (checkpoints every 4), its one file."""
    log = AuditLog(root, key=KEY, checkpoint_records=4, **kw)
    for i in range(n):
        log.append(record(i))
    log.close()
    (path,) = root.glob("day=*/*.jsonl")
    return path


def only(reports: list[FileReport]) -> FileReport:
    bad = [r for r in reports if not r.ok]
    assert len(bad) == 1, reports
    assert len(bad[0].problems) >= 1
    return bad[0]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_a_clean_log_verifies_with_its_checkpoints(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    sigs = [json.loads(x) for x in sig_path(path).read_bytes().splitlines()]
    assert [(s["reason"], s["records"]) for s in sigs] == [
        ("open", 0),
        ("periodic", 4),
        ("periodic", 8),
        ("close", 10),
    ]
    (report,) = verify_tree(tmp_path, KEY)
    assert report.ok and report.closed and report.records == report.signed == 10
    assert not report.notes


def test_an_edited_field_is_named(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    rows = lines(path)
    rows[4] = rows[4].replace(b'"decision":"decline"', b'"decision":"approve"')
    path.write_bytes(b"".join(rows))
    problem = only(verify_tree(tmp_path, KEY)).problems[0]
    assert (problem.kind, problem.line) == ("edited", 5), problem


def test_an_edit_with_its_hash_recomputed_is_caught_by_the_next_record(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    rows = lines(path)
    data, prev, _ = unlink(rows[4]) or pytest.fail("not chained")
    rows[4], _ = link(data.replace(b'"decline"', b'"approve"'), prev)
    path.write_bytes(b"".join(rows))
    problem = only(verify_tree(tmp_path, KEY)).problems[0]
    assert (problem.kind, problem.line) == (
        "deleted",
        6,
    ) and "line 5 was rewritten" in problem.message


def test_a_deleted_line_is_named(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    rows = lines(path)
    del rows[4]
    path.write_bytes(b"".join(rows))
    problem = only(verify_tree(tmp_path, KEY)).problems[0]
    assert (problem.kind, problem.line) == ("deleted", 5), problem


def test_two_swapped_lines_are_named(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    rows = lines(path)
    rows[3], rows[4] = rows[4], rows[3]
    path.write_bytes(b"".join(rows))
    problem = only(verify_tree(tmp_path, KEY)).problems[0]
    assert (problem.kind, problem.line) == ("reordered", 4), problem


def test_a_forged_line_with_a_valid_hash_is_named(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    rows = lines(path)
    _, _, prev = unlink(rows[3]) or pytest.fail("not chained")
    forged, _ = link(json.dumps(record(99, "approve"), separators=(",", ":")).encode(), prev)
    rows.insert(4, forged)
    path.write_bytes(b"".join(rows))
    problem = only(verify_tree(tmp_path, KEY)).problems[0]
    assert (problem.kind, problem.line) == ("inserted", 5), problem


def test_a_forged_line_with_the_whole_chain_recomputed_fails_the_hmac(tmp_path: Path) -> None:
    """The forger rewrites every hash after the insert and the checkpoints' counts
    and hashes too; without the key the checkpoints' HMACs cannot follow."""
    path = write_log(tmp_path)
    rows = [unlink(r) or pytest.fail("not chained") for r in lines(path)]
    bodies = [b for b, _, _ in rows]
    bodies.insert(4, json.dumps(record(99, "approve"), separators=(",", ":")).encode())
    name = path.relative_to(tmp_path).as_posix()
    prev, out, hashes = genesis(name), [], []
    for data in bodies:
        line, prev = link(data, prev)
        out.append(line)
        hashes.append(prev)
    path.write_bytes(b"".join(out))
    # Chain intact, checkpoints untouched: the first one past the insert no longer matches.
    (report,) = verify_tree(tmp_path, KEY)
    assert [(p.kind, p.line) for p in report.problems] == [("forged", 5)], report
    # Checkpoints rewritten to the new chain, with a made-up MAC: refused.
    sigs = [json.loads(x) for x in sig_path(path).read_bytes().splitlines()]
    for s in sigs[1:]:
        s["records"] += 1
        s["last"] = hashes[s["records"] - 1].decode()
        s["mac"] = hashlib.sha256(b"guess" + s["last"].encode()).hexdigest()
    sig_path(path).write_text("".join(json.dumps(s) + "\n" for s in sigs))
    problem = only(verify_tree(tmp_path, KEY)).problems[0]
    assert problem.kind == "forged" and "fails its HMAC" in problem.message, problem


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    rows = lines(path)
    path.write_bytes(b"".join(rows[:7]))  # cut 3 records, the closing checkpoint covered 10
    problem = only(verify_tree(tmp_path, KEY)).problems[0]
    assert (problem.kind, problem.line) == ("truncated", 8), problem
    assert "signs 8 records, the file holds 7" in problem.message  # the first past the cut


def test_a_line_appended_after_close_is_named(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    _, _, prev = unlink(lines(path)[-1]) or pytest.fail("not chained")
    extra, _ = link(json.dumps(record(11), separators=(",", ":")).encode(), prev)
    with path.open("ab") as fh:
        fh.write(extra)
    problem = only(verify_tree(tmp_path, KEY)).problems[0]
    assert (problem.kind, problem.line) == ("inserted", 11), problem


def test_a_deleted_file_and_a_truncated_earlier_file_are_named(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, key=KEY, rotate_bytes=1200)
    for i in range(20):
        log.append(record(i))
    log.close()
    files = sorted(tmp_path.glob("day=*/*.jsonl"))
    assert len(files) >= 4
    assert all(r.ok for r in verify_tree(tmp_path, KEY))
    files[1].unlink()
    sig_path(files[1]).unlink()
    problem = only(verify_tree(tmp_path, KEY)).problems[0]
    assert problem.kind == "deleted" and files[1].name in problem.message
    # An earlier file cut back to an earlier checkpoint, .sig and all: its
    # successor says it should have been closed.
    sig = sig_path(files[2])
    sig.write_bytes(sig.read_bytes().splitlines(keepends=True)[0])  # "open" alone
    files[2].write_bytes(b"")
    reports = {r.file.rsplit("/", 1)[-1]: r for r in verify_tree(tmp_path, KEY)}
    assert [p.kind for p in reports[files[2].name].problems] == ["truncated"]


def test_a_record_moved_to_another_file_does_not_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, key=KEY, rotate_bytes=1200)
    for i in range(8):
        log.append(record(i))
    log.close()
    first, second = sorted(tmp_path.glob("day=*/*.jsonl"))[:2]
    moved = lines(second)[0]
    first.write_bytes(first.read_bytes() + moved)
    problems = [p for r in verify_tree(tmp_path, KEY) for p in r.problems]
    assert problems and problems[0].kind in {"deleted", "inserted"}


def test_a_crashed_files_unsigned_tail_is_a_note_not_a_failure(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, key=KEY, checkpoint_records=4, checkpoint_seconds=3600)
    for i in range(6):
        log.append(record(i))
    # no close: as if the process had been killed (the file keeps its padding)
    (report,) = verify_tree(tmp_path, KEY)
    assert report.ok and not report.closed and (report.records, report.signed) == (6, 4)
    assert "2 records from line 5 on are chained but not yet signed" in report.notes[0]
    log.close()


def test_a_checkpoint_signs_within_its_interval_without_more_records(tmp_path: Path) -> None:
    import asyncio

    log = AuditLog(tmp_path, key=KEY, checkpoint_seconds=0.05)

    async def two_then_idle() -> None:
        await asyncio.gather(log.append_async(record(0)), log.append_async(record(1)))
        await asyncio.sleep(0.2)

    asyncio.run(two_then_idle())
    (report,) = verify_tree(tmp_path, KEY)
    assert report.ok and report.signed == 2 and not report.closed
    log.close()


def test_another_key_fails_every_file(tmp_path: Path) -> None:
    write_log(tmp_path)
    problem = only(verify_tree(tmp_path, b"some other key of 32 bytes......")).problems[0]
    assert problem.kind == "forged"


# --- the commands ------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("PITSTORE_AUDIT_DIR", "PITSTORE_AUDIT_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PITSTORE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_audit_verify_exits_0_clean_1_tampered_2_for_usage(home: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["audit", "verify"])
    assert out.exit_code == 2 and "no audit key" in out.output  # never made by verify
    log = AuditLog(home / "audit")  # the default key: <home>/audit.key, made here
    assert oct((home / "audit.key").stat().st_mode & 0o777) == "0o600"
    ids = [log.append(record(i)) for i in range(5)]
    log.close()
    out = runner.invoke(app, ["audit", "verify"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["audit", "verify", "--day", "2026-11-23", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["ok"] is True
    assert runner.invoke(app, ["audit", "verify", "--day", "yesterday"]).exit_code == 2
    (path,) = (home / "audit").glob("day=*/*.jsonl")
    path.write_bytes(path.read_bytes().replace(b"decline", b"approve", 1))
    out = runner.invoke(app, ["audit", "verify", "--json"])
    assert out.exit_code == 1
    (bad,) = json.loads(out.output)["files"]
    assert bad["problems"][0]["kind"] == "edited" and bad["problems"][0]["line"] == 1
    # explain refuses the edited record, and the untouched ones in that file too
    for line in (ids[0], ids[3]):
        decision_id = json.loads(line)["decision_id"]
        out = runner.invoke(app, ["explain", decision_id])
        assert out.exit_code == 1
        assert "fails audit verification" in out.output and "Traceback" not in out.output


def test_a_key_file_open_to_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    load_key(path, create=True)
    os.chmod(path, 0o644)
    with pytest.raises(RuntimeError, match="chmod 600"):
        load_key(path)
    assert count_records(tmp_path) == 0


def test_verifying_a_log_while_it_is_written_finds_no_false_failure(tmp_path: Path) -> None:
    import threading

    log = AuditLog(tmp_path, key=KEY, checkpoint_records=3, rotate_bytes=4000)
    done = threading.Event()

    def write() -> None:
        for i in range(300):
            log.append(record(i))
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    checks = 0
    while not done.is_set() or checks == 0:
        reports = verify_tree(tmp_path, KEY)
        assert all(r.ok for r in reports), [r for r in reports if not r.ok]
        checks += 1
    writer.join()
    log.close()
    reports = verify_tree(tmp_path, KEY)
    assert all(r.ok and r.closed for r in reports) and sum(r.records for r in reports) == 300
    assert checks > 1


@pytest.mark.parametrize(("gone", "kind", "line"), [(0, "deleted", 1), (9, "truncated", 10)])
def test_the_first_and_the_last_line_deleted(
    tmp_path: Path, gone: int, kind: str, line: int
) -> None:
    path = write_log(tmp_path)
    rows = lines(path)
    del rows[gone]
    path.write_bytes(b"".join(rows))
    problem = only(verify_tree(tmp_path, KEY)).problems[0]
    assert (problem.kind, problem.line) == (kind, line), problem
