"""Point-in-time joins over a view's key-sorted copy (written by ``training.compact``).

Per request row, a binary search in the copy and in each run file the copy does
not cover (each run file is written sorted, so it is encoded as read, without a
sort); the greatest ``(event_timestamp, created_timestamp)`` wins. The layout,
the encodings and the ``as_of``/``as_known`` rules are described in
``training.compact``; ``training.joins`` decides when this path is used.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pitstore.core.config import Settings
from pitstore.core.spec import FeatureView
from pitstore.training.compact import (
    BATCH_ROWS,
    FORMAT,
    MAX_CODE,
    Built,
    compact_root,
    feature_types,
    file_snapshot,
    rows_schema,
)


@dataclass
class Compact:
    """A published, still valid copy, and the run files it does not cover."""

    path: Path
    meta: dict[str, Any]
    new_files: list[Path] = field(default_factory=list)


def open_compact(settings: Settings, view: FeatureView) -> Compact | None:
    """The view's sorted copy if every file it covers is unchanged, else None."""
    root = compact_root(settings, view)
    try:
        version = (root / "CURRENT").read_text().strip()
        meta = json.loads((root / version / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if (
        meta.get("format") != FORMAT
        or meta.get("view") != view.name
        or meta.get("key") != view.entity.join_key
        or meta.get("features") != feature_types(view)
        or "null_columns" not in meta
    ):
        return None
    files = sorted(settings.offline_view_dir(view.name).glob("*.parquet"))
    now = {s["name"]: s for s in file_snapshot(files)}
    for s in meta["files"]:
        if now.get(s["name"]) != s:
            return None
    covered = {s["name"] for s in meta["files"]}
    return Compact(root / version, meta, [p for p in files if p.name not in covered])


@dataclass
class SortedRequests:
    """One entity's request keys, dictionary-encoded, and the rows sorted by (key, ts).

    Shared by the views of that entity: each view maps the (sorted) dictionary
    to its own key indices, which keeps the sort order, so each view's search
    targets come out sorted (a sorted searchsorted is ~30x faster).
    """

    order: np.ndarray  # request rows, sorted by (key, ts)
    rank: np.ndarray  # per sorted row: index into ``keys``
    ts: np.ndarray  # per sorted row: ts in µs
    keys: pa.Array  # distinct request keys, sorted


def sort_requests(keys: pa.ChunkedArray | pa.Array, ts_us: np.ndarray) -> SortedRequests:
    col = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    enc = col.dictionary_encode()
    by_value = pc.sort_indices(enc.dictionary).to_numpy()
    rank_of = np.empty(len(by_value), dtype=np.int64)
    rank_of[by_value] = np.arange(len(by_value), dtype=np.int64)
    rank = np.take(rank_of, enc.indices.to_numpy())
    lo = int(ts_us.min())
    width = int(ts_us.max()) - lo + 1
    if len(by_value) * width < MAX_CODE:
        order = np.argsort(rank * width + (ts_us - lo), kind="stable")
    else:
        order = np.lexsort((ts_us, rank))
    return SortedRequests(
        order, np.take(rank, order), np.take(ts_us, order), enc.dictionary.take(by_value)
    )


# np.load parses each .npy header with ast.literal_eval, and CPython 3.11's AST
# constructor keeps its recursion depth in per-interpreter state: two threads
# parsing at once can fail with "SystemError: AST constructor recursion depth
# mismatch" (python/cpython#106905; seen in CI on 3.11.7). The views are joined
# on a thread pool, so header parsing is serialised; mapping the data is not.
_NPY_HEADER_LOCK = threading.Lock()


def _load_npy(path: Path) -> np.ndarray:
    with _NPY_HEADER_LOCK:
        return np.load(path, mmap_mode="r")


def _floor_div(a: np.ndarray, unit: int) -> np.ndarray:
    return a // unit if unit != 1 else a


@dataclass
class _Rows:
    """Sorted, encoded rows to search: the published copy or a few run files in memory."""

    meta: dict[str, Any]
    keys: Callable[[], pa.Array]
    comp: Callable[[], np.ndarray]
    known: Callable[[], np.ndarray]
    known_pos: Callable[[], np.ndarray]
    batch: Callable[[int], AbstractContextManager[pa.RecordBatch]]
    created: np.ndarray | None = None  # per row, µs (newer run files only)


def _disk_rows(compact: Compact) -> _Rows:
    path = compact.path

    def keys() -> pa.Array:
        with pa.memory_map(str(path / "keys.arrow")) as src:
            return pa.ipc.open_file(src).read_all().column(0).combine_chunks()

    @contextmanager
    def batch(b: int) -> Iterator[pa.RecordBatch]:
        # One batch mapped at a time: its pages leave the resident set after.
        with pa.memory_map(str(path / "rows.arrow")) as src:
            yield pa.ipc.open_file(src).get_batch(b)

    return _Rows(
        compact.meta,
        keys,
        lambda: _load_npy(path / "comp.npy"),
        lambda: _load_npy(path / "known.npy"),
        lambda: _load_npy(path / "known_pos.npy"),
        batch,
    )


def _memory_rows(
    built: Built, batches: list[pa.RecordBatch], created: np.ndarray | None = None
) -> _Rows:
    return _Rows(
        built.meta,
        lambda: built.keys,
        lambda: built.comp,
        lambda: built.known,
        lambda: built.known_pos,
        lambda b: nullcontext(batches[b]),
        created,
    )


Part = tuple[list[pa.Array], np.ndarray, np.ndarray]


class AmbiguousVersions(RuntimeError):
    """Two sources answer a request row with the same (key, event, created)."""


def join_view_sorted(
    compact: Compact,
    newer: list[Path],
    view: FeatureView,
    mode: str,
    req: SortedRequests,
    n: int,
) -> Part | None:
    """The view's columns in request order, from its sorted copy and ``newer`` run files.

    Returns the columns (features, feature_ts, created_ts), which request rows
    got a value, and which request rows' keys are in none of the sources. A
    run file is written sorted by (key, event, created) (``export_view``:
    ``order by all``), so the newer files are encoded as they are read, with
    no sort. None when a newer file is not sorted so, holds rows the DuckDB
    path must judge (it raises), or was created at or before the copy's
    newest version: the caller then takes the DuckDB path for the view.
    """
    sources = [_disk_rows(compact)]
    newest_copy = (
        compact.meta["created_base"]
        + (compact.meta["created_span"] - 1) * compact.meta["created_unit"]
    )
    for path in newer:
        got = _read_sorted_file(view, path)
        if got is None or got[0].meta["created_base"] <= newest_copy:
            return None
        sources.append(_memory_rows(*got))
    hits = [_search(src, view, mode, req, n) for src in sources]
    if len(hits) > 1:
        _keep_newest(sources, hits, n)
    answered = np.zeros(n, dtype=bool)
    unknown = np.ones(n, dtype=bool)
    for h in hits:
        answered[h.rows] = True
        unknown &= h.unknown
    cols = _gather(sources, hits, rows_schema(view), answered)
    return [*cols[2:], *cols[:2]], answered, unknown


@dataclass
class _Hits:
    win: np.ndarray  # winning row positions in the source, ascending
    rows: np.ndarray  # the request row each one answers
    event: np.ndarray  # its event_timestamp (µs)
    unknown: np.ndarray  # per request row: its key is not in the source


def _keep_newest(sources: list[_Rows], hits: list[_Hits], n: int) -> None:
    """Per request row, keep only the source with the greatest (event, created).

    Newer run files were all created after the copy's newest version, so the
    copy loses every tie on event time; among the files, created decides.
    """
    low = np.iinfo(np.int64).min
    best_e = np.full(n, low, dtype=np.int64)
    best_c = np.full(n, low, dtype=np.int64)
    best_s = np.full(n, -1, dtype=np.int64)
    tied = np.zeros(n, dtype=bool)
    for s, (src, h) in enumerate(zip(sources, hits, strict=True)):
        created = src.created
        c = np.full(len(h.win), low + 1) if created is None else np.take(created, h.win)
        cur_e, cur_c = np.take(best_e, h.rows), np.take(best_c, h.rows)
        greater = (h.event > cur_e) | ((h.event == cur_e) & (c > cur_c))
        up = h.rows[greater]
        tied[up] = False
        tied[h.rows[(h.event == cur_e) & (c == cur_c)]] = True
        best_e[up], best_c[up], best_s[up] = h.event[greater], c[greater], s
    if tied.any():
        raise AmbiguousVersions()
    for s, h in enumerate(hits):
        keep = np.take(best_s, h.rows) == s
        h.win, h.rows, h.event = h.win[keep], h.rows[keep], h.event[keep]


def _read_sorted_file(
    view: FeatureView, path: Path
) -> tuple[Built, list[pa.RecordBatch], np.ndarray] | None:
    """One run file, already sorted, encoded for the search; None if it cannot be."""
    key = view.entity.join_key
    schema = rows_schema(view)
    try:
        table = pq.read_table(path, columns=[key, *schema.names])
        table = table.cast(pa.schema([pa.field(key, pa.string()), *schema]))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, KeyError):
        return None
    m = table.num_rows
    if m == 0:
        return None
    keys = table.column(key).combine_chunks()
    ev = table.column("event_timestamp").combine_chunks()
    cr = table.column("created_timestamp").combine_chunks()
    if keys.null_count or ev.null_count or cr.null_count:
        return None
    e = ev.view(pa.int64()).to_numpy()
    c = cr.view(pa.int64()).to_numpy()
    if bool(np.any(e > c)):
        return None
    if m > 1:
        a, b = keys.slice(0, m - 1), keys.slice(1)
        if pc.any(pc.less(b, a)).as_py():
            return None  # not sorted by key
        new_key = pc.not_equal(b, a).to_numpy(zero_copy_only=False)
        same = ~new_key
        e_up, c_up = e[1:] - e[:-1], c[1:] - c[:-1]
        if bool(np.any(same & ((e_up < 0) | ((e_up == 0) & (c_up <= 0))))):
            return None  # not sorted by time within a key, or a duplicate version
        kidx = np.concatenate([[0], np.cumsum(new_key, dtype=np.int64)])
        starts = np.concatenate([[True], new_key])
    else:
        kidx = np.zeros(1, dtype=np.int64)
        starts = np.ones(1, dtype=bool)
    e_lo, c_lo = int(e.min()), int(c.min())
    e_unit = int(np.gcd.reduce(e - e_lo)) or 1
    c_unit = int(np.gcd.reduce(c - c_lo)) or 1
    e_span = (int(e.max()) - e_lo) // e_unit + 1
    c_span = (int(c.max()) - c_lo) // c_unit + 1
    n_keys = int(kidx[-1]) + 1
    if n_keys * max(e_span, c_span) >= MAX_CODE:
        return None
    comp = kidx * e_span + (e - e_lo) // e_unit
    known = kidx * c_span + (c - c_lo) // c_unit
    order = np.argsort(known, kind="stable")
    rows = table.select(schema.names).combine_chunks().to_batches(max_chunksize=BATCH_ROWS)
    bounds = [0]
    for batch in rows:
        bounds.append(bounds[-1] + batch.num_rows)
    meta = {
        "rows": m,
        "keys": n_keys,
        "event_base": e_lo,
        "event_unit": e_unit,
        "event_span": e_span,
        "created_base": c_lo,
        "created_unit": c_unit,
        "created_span": c_span,
        "bounds": bounds,
        "null_columns": sorted(
            {c for b in rows for c, col in enumerate(b.columns) if col.null_count}
        ),
    }
    built = Built(
        meta,
        keys.filter(pa.array(starts)),
        comp,
        np.take(known, order),
        np.maximum.accumulate(order),
    )
    return built, rows, c


def _search(rows_src: _Rows, view: FeatureView, mode: str, req: SortedRequests, n: int) -> _Hits:
    """Per request row, the winning row of one source (binary searches)."""
    meta = rows_src.meta
    store_keys = rows_src.keys()
    # Per distinct request key: its index in the copy, or -1.
    kd = pc.fill_null(pc.index_in(req.keys, value_set=store_keys), -1).to_numpy()
    # np.take rather than fancy indexing: it releases the GIL (views run in threads).
    kk = np.take(kd, req.rank)
    idx = np.flatnonzero(kk >= 0)  # sorted request rows whose key is in the copy
    k = np.take(kk, idx).astype(np.int64)
    ts = np.take(req.ts, idx)
    ttl_us = int(view.ttl.total_seconds()) * 1_000_000
    e_base, e_unit, e_span = meta["event_base"], meta["event_unit"], meta["event_span"]
    comp = rows_src.comp()
    # event <= ts  <=>  event offset (in units) <= floor((ts - base) / unit);
    # clipped to [-1, span - 1] so that it never reaches another key's range.
    hi = np.clip(_floor_div(ts - e_base, e_unit), -1, e_span - 1)
    # event >= ts - ttl  <=>  offset >= ceil((ts - ttl - base) / unit).
    lo = np.maximum(-_floor_div(-(ts - ttl_us - e_base), e_unit), 0)
    k_e = k * e_span
    if mode == "as_of":
        pos = np.searchsorted(comp, k_e + hi, side="right") - 1
    else:
        c_base, c_unit, c_span = (
            meta["created_base"],
            meta["created_unit"],
            meta["created_span"],
        )
        known = rows_src.known()
        k_c = k * c_span
        chi = np.clip(_floor_div(ts - c_base, c_unit), -1, c_span - 1)
        j = np.searchsorted(known, k_c + chi, side="right") - 1
        jj = np.maximum(j, 0)
        same_key = (j >= 0) & (np.take(known, jj) >= k_c)
        pos = np.where(same_key, np.take(rows_src.known_pos(), jj), -1)
        del known
    # The same key, and within the TTL.
    ok = (pos >= 0) & (np.take(comp, np.maximum(pos, 0)) >= k_e + lo)
    sel = np.flatnonzero(ok)
    win = np.take(pos, sel)  # winners' row positions, by sorted request row
    rows = np.take(req.order, np.take(idx, sel))  # ... and their request rows
    event = e_base + (np.take(comp, win) - np.take(k_e, sel)) * e_unit
    del comp
    if len(win) > 1 and not bool(np.all(win[1:] >= win[:-1])):
        perm = np.argsort(win, kind="stable")
        win, rows, event = np.take(win, perm), np.take(rows, perm), np.take(event, perm)
    unknown = np.zeros(n, dtype=bool)
    unknown[np.take(req.order, np.flatnonzero(kk < 0))] = True
    return _Hits(win, rows, event, unknown)


def _gather(
    sources: list[_Rows], hits: list[_Hits], schema: pa.Schema, answered: np.ndarray
) -> list[pa.Array]:
    """Columns in request order: row ``h.rows[i]`` gets source row ``h.win[i]``."""
    n = len(answered)
    outs = [np.zeros(n, dtype=np.int64 if f.type != pa.float64() else np.float64) for f in schema]
    # Columns with nulls anywhere go through Arrow's take (validity included);
    # the others are gathered as plain numbers.
    has_nulls = {c for src in sources for c in src.meta["null_columns"]}
    taken: dict[int, list[pa.Array]] = {c: [] for c in has_nulls}
    taken_rows: list[np.ndarray] = []
    for src, h in zip(sources, hits, strict=True):
        bounds = src.meta["bounds"]
        cuts = np.searchsorted(h.win, np.asarray(bounds, dtype=np.int64))
        for b in range(len(bounds) - 1):
            a, z = int(cuts[b]), int(cuts[b + 1])
            if a == z:
                continue
            with src.batch(b) as batch:
                local = h.win[a:z] - bounds[b]
                rows = h.rows[a:z]
                if has_nulls:
                    taken_rows.append(rows)
                for c in range(batch.num_columns):
                    col = batch.column(c)
                    if c in taken:
                        taken[c].append(col.take(pa.array(local)))
                        continue
                    values = col.to_numpy() if c >= 2 else col.view(pa.int64()).to_numpy()
                    outs[c][rows] = np.take(values, local)
    validity = pa.py_buffer(np.packbits(answered, bitorder="little"))
    nulls = n - int(np.count_nonzero(answered))
    inv = None
    if has_nulls:
        inv = np.full(n, -1, dtype=np.int64)
        if taken_rows:
            all_rows = np.concatenate(taken_rows)
            inv[all_rows] = np.arange(len(all_rows), dtype=np.int64)
    result = []
    for c, f in enumerate(schema):
        if c in taken:
            assert inv is not None
            if not taken[c]:
                result.append(pa.nulls(n, f.type))
                continue
            result.append(pa.concat_arrays(taken[c]).take(pa.array(inv, mask=inv < 0)))
            continue
        result.append(
            pa.Array.from_buffers(
                f.type, n, [validity if nulls else None, pa.py_buffer(outs[c])], nulls
            )
        )
    return result
