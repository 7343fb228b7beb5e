"""Shared benchmark machinery: timing, memory, Redis, machine info, synthetic data.

Rules every benchmark follows (issue 7):

- the same data, the same Redis, the same process settings for every contender;
- the contenders' outputs are compared before anything is timed;
- contenders are interleaved (round-robin, rotating the order every sample),
  so drift on a shared machine hits them all alike;
- a warm-up, then several repeats; a repeat's figure is a percentile over its
  samples and the reported figure is the median over repeats.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from bench.machine import idle_info
from pitstore.core.spec import FEATURE_VIEWS, FeatureView

# --- machine ------------------------------------------------------------------

PACKAGES = ("feast", "redis", "hiredis", "duckdb", "pandas", "pyarrow", "protobuf", "fastapi")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    exe = shutil.which("redis-server")
    if exe:
        text = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
        out["redis-server"] = next(
            (p.split("=")[1] for p in text.split() if p.startswith("v=")), text.strip()
        )
    return out


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem_gb = round(kb / 1024 / 1024, 1)
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": mem_gb,
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "versions": versions(),
        "idle": idle_info(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    Linux's ``VmHWM`` (reset by exec) rather than ``ru_maxrss``, which a child
    inherits from the parent that forked it and so would report the parent's
    peak when that was larger.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --- CPU pinning --------------------------------------------------------------


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def server_core() -> int | None:
    """The core Redis gets when there are at least two; the client takes another."""
    c = cores()
    return c[-1] if len(c) >= 2 else None


def client_cores() -> set[int]:
    c = cores()
    return set(c[:-1]) if len(c) >= 2 else set(c)


@contextlib.contextmanager
def pinned(core_set: set[int]) -> Iterator[None]:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, core_set)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# --- Redis --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    core: int | None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def redis_server(workdir: Path, cores: Sequence[int] | None = None) -> Iterator[RedisServer]:
    """A private redis-server on a free port, pinned to ``cores`` (default: a core
    of its own if there is one; empty: not pinned)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed: run `make redis-server`")
    port = free_port()
    if cores is None:
        own = server_core()
        cores = [] if own is None else [own]
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(workdir)]
    if cores and shutil.which("taskset"):
        cmd = ["taskset", "-c", ",".join(map(str, cores)), *cmd]
    else:
        cores = []
    core = cores[0] if len(cores) == 1 else None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"redis-server did not start on port {port}")
        yield RedisServer(port, proc, core)
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- timing -------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def latency_samples(
    contenders: dict[str, Callable[[], object]],
    samples: int,
    repeats: int,
    warmup: int,
) -> dict[str, dict[str, Any]]:
    """Interleaved per-call latencies (ms): p50/p99/mean per repeat, median over repeats."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    per_repeat: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    clock = time.perf_counter_ns
    for _ in range(repeats):
        times: dict[str, list[float]] = {n: [] for n in names}
        for i in range(samples):
            k = i % len(names)
            for name in names[k:] + names[:k]:  # rotate who goes first
                fn = contenders[name]
                t0 = clock()
                fn()
                times[name].append((clock() - t0) / 1e6)
        for name in names:
            t = times[name]
            per_repeat[name].append(
                {
                    "p50_ms": percentile(t, 50),
                    "p99_ms": percentile(t, 99),
                    "mean_ms": statistics.fmean(t),
                }
            )
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        reps = per_repeat[name]
        out[name] = {
            key: statistics.median(r[key] for r in reps) for key in ("p50_ms", "p99_ms", "mean_ms")
        }
        out[name]["samples_per_repeat"] = samples
        out[name]["repeats"] = repeats
        out[name]["per_repeat"] = reps
    return out


def bulk_runs(
    contenders: dict[str, Callable[[], Any]],
    repeats: int,
    setup: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Interleaved whole-job timings (s), median of repeats. ``setup`` runs untimed."""
    names = list(contenders)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if setup is not None:
                setup(name)
            t0 = time.perf_counter()
            contenders[name]()
            seconds[name].append(time.perf_counter() - t0)
    return {
        n: {"seconds": statistics.median(s), "per_repeat_s": s, "repeats": repeats}
        for n, s in seconds.items()
    }


def run_child(module: str, args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m module args`` and parse the JSON object on its last stdout line.

    Used where memory is measured: each contender gets a fresh process, so its
    peak RSS (``ru_maxrss``, reported by the child itself) is its own.
    """
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def not_measurable(reason: str) -> dict[str, Any]:
    """A benchmark's entry when it could not be measured (the table says why)."""
    return {"measurable": False, "reason": reason}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# --- synthetic offline store ---------------------------------------------------


@dataclass(frozen=True)
class DataSize:
    name: str
    accounts: int
    merchants: int
    days: int  # daily transform runs
    hourly_density: float  # share of (account, hour) boundaries with a row
    daily_density: float  # share of (entity, day) boundaries with a row
    restate: float  # share of a run's rows that restate an earlier boundary
    requests: int  # training-frame request rows (#5)


SIZES = {
    "tiny": DataSize("tiny", 2_000, 100, 4, 0.05, 0.8, 0.05, 5_000),
    "small": DataSize("small", 100_000, 2_000, 7, 0.035, 0.8, 0.05, 100_000),
    "medium": DataSize("medium", 250_000, 5_000, 14, 0.1, 0.8, 0.05, 1_000_000),
}
START = datetime(2026, 1, 5, tzinfo=UTC)


def run_watermarks(size: DataSize) -> list[datetime]:
    return [START + timedelta(days=d) for d in range(1, size.days + 1)]


def _entity_sql(view: FeatureView) -> str:
    if view.entity.join_key == "account_id":
        return "'A' || lpad(e::varchar, 6, '0')"
    return "'M' || lpad(e::varchar, 5, '0')"


def synth_offline(offline_root: Path, size: DataSize, seed: int = 7) -> dict[str, int]:
    """Write an offline store in the transform's layout: ``<view>/run-<W>.parquet``.

    Each run file holds the rows that run created (``created_timestamp = W``):
    rows at the boundaries in ``(previous W, W]`` for a random share of
    entities, plus restated rows at boundaries of the previous day. Values are
    deterministic hashes (ints up to ~10^6, so multi-byte varints occur, and
    doubles). Returns rows written per view. Only the shape matters here: the
    benchmarks measure joins and loads, not the transform (that is #6).
    """
    from dataclasses import asdict

    from pitstore.core.runs import RunSummary
    from pitstore.core.timeutil import stamp, to_us

    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    totals: dict[str, int] = {}
    watermarks = run_watermarks(size)
    for vi, view in enumerate(FEATURE_VIEWS):
        out_dir = offline_root / view.name
        out_dir.mkdir(parents=True, exist_ok=True)
        n = size.accounts if view.entity.join_key == "account_id" else size.merchants
        cadence_us = int(view.cadence.total_seconds()) * 1_000_000
        density = size.hourly_density if view.cadence < timedelta(days=1) else size.daily_density
        per_run = 86_400_000_000 // cadence_us  # boundaries per daily run
        key = view.entity.join_key
        total = 0
        for d, w in enumerate(watermarks):
            w_us = to_us(w)
            first_b = w_us - (per_run - 1) * cadence_us  # boundaries in (W - 1 day, W]
            feats = []
            for fi, f in enumerate(view.features):
                h = f"hash(e, b_us, {d}, {seed}, {vi}, {fi})"
                if f.dtype == "int64":
                    mod = 1_000_000 if "amount" in f.name else 200
                    feats.append(f'({h} % {mod})::bigint as "{f.name}"')
                else:
                    feats.append(f'(({h} % 1000000) / 1000000.0)::double as "{f.name}"')
            thr = int(density * 1_000_000)
            rthr = int(density * size.restate * 1_000_000)
            restated = (
                ""
                if d == 0
                else f"""
                union all
                select e, {first_b - per_run * cadence_us} + b * {cadence_us} as b_us
                from range({n}) t1(e), range({per_run}) t2(b)
                where hash(e, b, {seed}, {vi}, {d}, 'r') % 1000000 < {rthr}"""
            )
            sql = f"""
                with g as (
                    select e, {first_b} + b * {cadence_us} as b_us
                    from range({n}) t1(e), range({per_run}) t2(b)
                    where hash(e, b, {seed}, {vi}, {d}) % 1000000 < {thr}
                    {restated}
                )
                select {_entity_sql(view)} as {key},
                       make_timestamptz(b_us) as event_timestamp,
                       make_timestamptz({w_us}::bigint) as created_timestamp,
                       {", ".join(feats)}
                from g order by all
            """
            path = out_dir / f"run-{stamp(w)}.parquet"
            con.execute(f"copy ({sql}) to '{path}' (format parquet, compression zstd)")
            total += con.execute(f"select count(*) from '{path}'").fetchall()[0][0]
        totals[view.name] = total
    con.close()
    # Record the runs as a transform does (one completed-run marker each, through
    # the bookkeeping's owner): the materializer refuses a W without one.
    from pitstore.core.runs import RunMarker, write_marker

    for w in watermarks:
        summary = RunSummary("synth", w.isoformat(), None)
        marker = RunMarker("synth", to_us(w), {}, asdict(summary))
        write_marker(offline_root, marker)
    return totals


def synth_requests(
    size: DataSize, n: int | None = None, seed: int = 11
) -> Any:  # -> pa.Table (account_id, merchant_id, ts)
    """Training requests: random (account, merchant, ts) over the data's time range."""
    from pitstore.core.timeutil import to_us

    n = n or size.requests
    lo = to_us(START + timedelta(days=1))
    hi = to_us(run_watermarks(size)[-1])
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    sql = f"""
        select 'A' || lpad((hash(i, {seed}, 'a') % {size.accounts})::varchar, 6, '0')
                   as account_id,
               'M' || lpad((hash(i, {seed}, 'm') % {size.merchants})::varchar, 5, '0')
                   as merchant_id,
               make_timestamptz(({lo} + hash(i, {seed}, 't') % {hi - lo})::bigint) as ts
        from range({n}) t(i)
        order by i
    """
    table = con.sql(sql).to_arrow_table()
    con.close()
    import pyarrow as pa

    return table.cast(
        pa.schema(
            [
                ("account_id", pa.string()),
                ("merchant_id", pa.string()),
                ("ts", pa.timestamp("us", tz="UTC")),
            ]
        )
    )
