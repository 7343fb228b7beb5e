"""Manifest and fingerprint of a training frame, and the rebuild proof (``verify``).

The fingerprint is a SHA-256 over everything that determines the frame's bytes:
the request rows, the feature definitions (spec fingerprint and the Feast
registry's view/service specs), the checksums of the offline files the join
actually read, the join policy (mode, TTLs), the engine, and the code version
(git commit plus a hash of the training sources). ``verify`` rebuilds the
frame from the manifest and either proves it byte-for-byte identical or says
exactly what changed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pitstore.core.config import Settings
from pitstore.core.spec import FeatureService, spec_fingerprint
from pitstore.training.joins import JoinResult

FORMAT = 1
REPO = Path(__file__).resolve().parents[1]  # the pitstore package
_CODE_FILES = (
    "training/joins.py",
    "training/join_sql.py",
    "training/frames.py",
    "training/audit.py",
    "core/request_features.py",
    "training/labels.py",
    "training/spark_join.py",
    "core/offline_layout.py",
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


@cache
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def code_version() -> dict[str, Any]:
    """Git commit (if any) and a hash of the sources that shape a frame's bytes."""
    import duckdb
    import feast

    h = hashlib.sha256()
    for rel in _CODE_FILES:
        path = REPO / rel
        if path.exists():
            h.update(rel.encode() + b"\0" + path.read_bytes())
    return {
        "git_commit": git_commit(),
        "training_sources_sha256": h.hexdigest(),
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
        "feast": feast.__version__,
    }


def registry_snapshot(settings: Settings, service: FeatureService) -> dict[str, Any] | None:
    """The Feast registry's specs for the service and its views (no timestamps).

    Paths under PITSTORE_HOME are written relative to it, so a snapshot does not
    depend on where the store is mounted. None when nothing was applied.
    """
    registry = settings.feast_dir / "registry.db"
    if not registry.exists():
        return None
    from google.protobuf.json_format import MessageToDict

    from pitstore.core.feast_store import FEAST_PROJECT, get_store

    store = get_store(settings)
    try:
        fs = store.registry.get_feature_service(service.name, FEAST_PROJECT, allow_cache=False)
    except Exception:  # noqa: BLE001 - Feast raises its own not-found types
        return None
    specs: dict[str, Any] = {"service": MessageToDict(fs.to_proto().spec)}
    for view in service.views:
        fv = store.registry.get_feature_view(view.name, FEAST_PROJECT, allow_cache=False)
        specs[view.name] = MessageToDict(fv.to_proto().spec)
    text = json.dumps(specs, sort_keys=True).replace(str(settings.home), "$PITSTORE_HOME")
    return {"sha256": sha256_bytes(text.encode()), "specs": json.loads(text)}


def _rel(settings: Settings, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(settings.home))
    except ValueError:
        return str(path)


def offline_checksums(settings: Settings, join: JoinResult) -> dict[str, list[dict[str, Any]]]:
    return {
        view: [
            {"path": _rel(settings, p), "sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(paths)
        ]
        for view, paths in sorted(join.files_read.items())
    }


def build_manifest(
    settings: Settings,
    requests: pa.Table,
    service: FeatureService,
    mode: str,
    engine: str,
    join: JoinResult,
    frame: pa.Table,
    audit: dict[str, Any],
) -> dict[str, Any]:
    from pitstore.training.frames import json_bytes, table_bytes

    registry = registry_snapshot(settings, service)
    inputs = {
        "format": FORMAT,
        "service": service.name,
        "mode": mode,
        "engine": engine,
        "ttl_seconds": {v.name: int(v.ttl.total_seconds()) for v in service.views},
        "spec_fingerprint": spec_fingerprint(service.views),
        "registry_sha256": registry["sha256"] if registry else None,
        "requests": {"rows": requests.num_rows, "sha256": sha256_bytes(table_bytes(requests))},
        "offline_files": offline_checksums(settings, join),
        "code_version": code_version(),
    }
    return {
        "fingerprint": sha256_bytes(canonical(inputs)),
        "inputs": inputs,
        "registry": registry,
        "outputs": {
            "frame": {"rows": frame.num_rows, "sha256": sha256_bytes(table_bytes(frame))},
            "audit_sha256": sha256_bytes(json_bytes(audit)),
        },
        "pitstore_home": str(settings.home),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _diff_inputs(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if a == b:
            continue
        if key == "offline_files" and isinstance(a, dict) and isinstance(b, dict):
            changes.extend(_diff_files(a, b))
        elif isinstance(a, dict) and isinstance(b, dict):
            changes.extend(_diff_inputs(a, b, f"{name}."))
        else:
            changes.append(f"{name}: {a!r} -> {b!r}")
    return changes


def _diff_files(old: dict[str, list[dict]], new: dict[str, list[dict]]) -> list[str]:
    out = []
    for view in sorted(set(old) | set(new)):
        a = {f["path"]: f["sha256"] for f in old.get(view, [])}
        b = {f["path"]: f["sha256"] for f in new.get(view, [])}
        out += [f"offline file removed or no longer read: {p}" for p in sorted(set(a) - set(b))]
        out += [f"offline file added: {p}" for p in sorted(set(b) - set(a))]
        out += [f"offline file changed: {p}" for p in sorted(set(a) & set(b)) if a[p] != b[p]]
    return out


def diff_frames(old: pa.Table, new: pa.Table) -> list[str]:
    if old.schema != new.schema:
        return [f"schema changed:\n  old {old.schema}\n  new {new.schema}"]
    if old.num_rows != new.num_rows:
        return [f"rows: {old.num_rows} -> {new.num_rows}"]
    import pyarrow.compute as pc

    out = []
    for name in old.column_names:
        a, b = old.column(name), new.column(name)
        neq = pc.fill_null(pc.not_equal(a, b), False)
        xor = pc.xor(pc.is_null(a), pc.is_null(b))
        n = int(pc.sum(pc.or_(neq, xor)).as_py() or 0)
        if n:
            out.append(f"column {name}: {n} values differ")
    return out


def verify(settings: Settings, manifest_path: Path, spark: object | None = None) -> dict[str, Any]:
    """Rebuild the frame described by ``manifest_path`` and compare byte-for-byte.

    Returns ``{"identical": bool, "fingerprint_match": bool, "changes": [...]}``.
    """
    from pitstore.training.frames import build_frame, table_bytes

    manifest = json.loads(manifest_path.read_text())
    inputs = manifest["inputs"]
    folder = manifest_path.parent
    req_path, frame_path = folder / "requests.parquet", folder / "frame.parquet"
    changes: list[str] = []
    requests = pq.read_table(req_path)
    if sha256_bytes(table_bytes(requests)) != inputs["requests"]["sha256"]:
        changes.append(f"{req_path}: request rows differ from the manifest's hash")
    rebuilt = build_frame(
        settings,
        requests,
        service=inputs["service"],
        mode=inputs["mode"],
        engine=inputs["engine"],
        spark=spark,
        compare_modes=f"vs_{'as_of' if inputs['mode'] == 'as_known' else 'as_known'}"
        in json.loads((folder / "audit.json").read_text()),
        extra_audit=_extra_audit(folder),
    )
    new_inputs = rebuilt.manifest["inputs"]
    changes += _diff_inputs(inputs, new_inputs)
    new_bytes = table_bytes(rebuilt.table)
    new_sha = sha256_bytes(new_bytes)
    identical = new_sha == manifest["outputs"]["frame"]["sha256"]
    if not identical:
        changes.append(
            f"frame bytes: {manifest['outputs']['frame']['sha256'][:12]} -> {new_sha[:12]}"
        )
        if frame_path.exists():
            changes += diff_frames(pq.read_table(frame_path), rebuilt.table)
    if frame_path.exists() and sha256_file(frame_path) != manifest["outputs"]["frame"]["sha256"]:
        changes.append(f"{frame_path} on disk does not match the manifest (edited after build?)")
    return {
        "identical": identical,
        "fingerprint_match": rebuilt.manifest["fingerprint"] == manifest["fingerprint"],
        "fingerprint": manifest["fingerprint"],
        "rebuilt_fingerprint": rebuilt.manifest["fingerprint"],
        "changes": changes,
    }


def _extra_audit(folder: Path) -> dict[str, Any] | None:
    audit = json.loads((folder / "audit.json").read_text())
    return {"labels": audit["labels"]} if "labels" in audit else None
