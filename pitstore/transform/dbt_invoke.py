"""Invoke dbt in-process, parsing the project once instead of on every run.

Per-run values (the watermark, the landing files) reach dbt as ``--vars``. dbt
folds the vars into its partial-parsing check, so passing them to ``dbt run``
made every run re-parse the whole project (~1.5 s, most of an incremental day).
Instead the project is parsed *without* run vars (so ``partial_parse.msgpack``
stays valid from one process to the next) and ``dbt run`` gets that manifest:
vars only matter when a node is compiled, which ``run`` does anyway with its
own ``--vars``. Within one process the parsed manifest is reused as long as no
project file changed (keyed on their paths, sizes and mtimes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pitstore.core.config import Settings
from pitstore.transform.codegen import DBT_DIR

# Parsed manifests by (project files' fingerprint, warehouse name).
_MANIFESTS: dict[tuple[object, ...], Any] = {}
_PROJECT_PARTS = ("dbt_project.yml", "profiles.yml", "models", "macros", "tests")


class DbtError(RuntimeError):
    """dbt failed; the message names the failing nodes."""


def _project_fingerprint(project: Path) -> tuple[tuple[str, int, int], ...]:
    entries = []
    for part in _PROJECT_PARTS:
        root = project / part
        paths = [root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []
        for p in paths:
            if p.is_file():
                st = p.stat()
                entries.append((str(p), st.st_size, st.st_mtime_ns))
    return tuple(entries)


def _common_args(settings: Settings) -> list[str]:
    return [
        "--project-dir",
        str(DBT_DIR),
        "--profiles-dir",
        str(DBT_DIR),
        "--target-path",
        str(settings.home / "dbt" / "target"),
        "--log-path",
        str(settings.home / "dbt" / "logs"),
        "--quiet",
    ]


def parsed_manifest(settings: Settings) -> Any:
    """The project's manifest, parsed without run vars (see the module docstring)."""
    from dbt.cli.main import dbtRunner

    # The manifest names the warehouse by its file stem (dbt-duckdb's database
    # name), not its directory: homes with the same file name share a manifest.
    key = (_project_fingerprint(DBT_DIR), settings.warehouse.stem)
    manifest = _MANIFESTS.get(key)
    if manifest is None:
        result = dbtRunner().invoke(["parse", *_common_args(settings)])
        if not result.success:
            raise DbtError(f"dbt parse failed: {result.exception}")
        manifest = result.result
        _MANIFESTS.clear()  # one project, one warehouse at a time: keep memory flat
        _MANIFESTS[key] = manifest
    return manifest


def invoke(args: list[str], settings: Settings, write_json: bool = True) -> None:
    """``dbt <args>`` against ``settings``' warehouse; raise DbtError unless it succeeded.

    ``write_json=False`` skips run_results.json / manifest.json: nothing reads them
    on the transform path, and writing them costs more than a small run.
    """
    from dbt.cli.main import dbtRunner

    os.environ["PITSTORE_WAREHOUSE"] = str(settings.warehouse)
    extra = [] if write_json else ["--no-write-json"]
    try:
        runner = dbtRunner(manifest=parsed_manifest(settings))
        result = runner.invoke([*args, *_common_args(settings), *extra])
    finally:
        release_duckdb()
    if not result.success:
        detail = result.exception or _failed_nodes(result.result)
        raise DbtError(f"dbt {args[0]} failed: {detail}")


def release_duckdb() -> None:
    """Close dbt-duckdb's cached database so this process can open the warehouse.

    dbt-duckdb keeps its DuckDB instance open between in-process invocations,
    and DuckDB refuses a second, differently configured instance on the same file.
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()
            DuckDBConnectionManager._ENV = None


def _failed_nodes(result: object) -> str:
    try:
        return "; ".join(
            f"{r.node.name}: {r.message}"
            for r in result  # type: ignore[attr-defined]
            if str(r.status) in {"error", "fail"}
        )
    except TypeError:
        return str(result)
