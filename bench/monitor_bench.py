"""Benchmark #7: ``pitstore monitor`` against Evidently on the same decisions.

Data (``bench/monitor_data.py``, its own process and home): a real world's
decisions appended to a real audit log and its model's reference, replayed to
1M decisions and 1M reference rows at size medium. Saved once as the frames
the monitor reads (``load_decisions``' output, matured labels, the reference),
so both contenders start from the same frames in memory.

Contenders, each in a fresh process (``python -m bench.monitor_bench --child
NAME``) so its peak RSS (VmHWM) is its own; untimed: imports and reading the
parquet frames (both with one reader; pitstore asks for the columns the
monitor reads, as ``monitor()`` does: its reference without the segments, its
decisions without the challenger's columns); timed: the computation, through
to a JSON-ready result:

- ``pitstore``: the monitor's drift and performance parts, as ``monitor()``
  calls them: ``input_drift`` (PSI and missing rate per input, window and per
  day), ``prediction_drift`` (score PSI, decision mix), ``performance.baseline``
  and ``performance.weekly`` (PR-AUC, precision/recall at the threshold,
  bands, ECE, segments, per week) and their alerts;
- ``evidently``: what a risk team would run instead (telemetry off,
  ``DO_NOT_TRACK=1``): a Report with ``DataDriftPreset(method="psi")`` over
  every input and the score (all scored decisions against the reference), and
  one with ``ClassificationPreset`` (matured labelled decisions against the
  labelled reference), both run and read out (``snapshot.dict()``);
- ``pitstore_job`` (context, not in the ratio): the whole ``monitor()`` job on
  the home: reading the 1M-record audit log, the reference cache, the labels
  through the pipeline, the run markers.

Checked before the figures count: each input's PSI from Evidently equals ours
computed on Evidently's bins with its empty-bin rule (``bench/monitor_psi.py``
says why the headline PSIs differ by design).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import current_rss_mb, peak_rss_mb, ratio, run_child

GOAL = {"time_vs_evidently_max": 0.3, "peak_rss_vs_evidently_max": 0.5}
# decisions (= reference rows) per bench size; medium is the documented 1M
ROWS = {"tiny": 20_000, "small": 100_000, "medium": 1_000_000}
ACCOUNTS = {"tiny": 400, "small": 2_000, "medium": 2_000}
TELEMETRY_OFF = {"DO_NOT_TRACK": "1"}  # evidently.telemetry.DO_NOT_TRACK_ENV


def _context(data: Path) -> dict[str, Any]:
    return json.loads((data / "context.json").read_text())  # type: ignore[no-any-return]


def _read(path: Path, columns: list[str] | None = None) -> Any:
    """A saved frame as both contenders read it: column by column, Arrow's
    buffers freed as they are converted (no second, consolidated copy)."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=columns).to_pandas(split_blocks=True, self_destruct=True)


def _frames(data: Path) -> tuple[Any, Any, Any]:
    return (
        _read(data / "reference.parquet"),
        _read(data / "decisions.parquet"),
        _read(data / "labels.parquet"),
    )


def _window(ctx: dict[str, Any]) -> Any:
    from datetime import date

    from pitstore.monitor.report import Window

    return Window(date.fromisoformat(ctx["window"][0]), date.fromisoformat(ctx["window"][1]))


def child_pitstore(data: Path) -> dict[str, Any]:
    from pitstore.monitor import performance
    from pitstore.monitor.reference import maturity, read_reference
    from pitstore.monitor.report import decision_columns, input_drift, prediction_drift
    from pitstore.monitor.settings import MonitorSettings

    ctx = _context(data)
    card, columns, window = ctx["card"], ctx["columns"], _window(ctx)
    # only the columns the monitor reads (as monitor() does: no challenger here)
    ref = read_reference(data / "reference.parquet", columns, None)
    decisions = _read(data / "decisions.parquet", decision_columns(columns, shadow=False))
    labels = _read(data / "labels.parquet")
    cfg = MonitorSettings()
    before = current_rss_mb()
    t0 = time.perf_counter()
    last = window.end.isoformat()
    inputs, alerts, _ = input_drift(ref, decisions, columns, cfg, last)
    prediction, p_alerts, _ = prediction_drift(ref, decisions, card, cfg, last)
    base = performance.baseline(card, ref.labels, ref.scores, cfg)
    mature_before = window.report_ts - maturity(card)
    days = (window.start, window.end)
    perf = performance.weekly(decisions, labels, card, base, mature_before, cfg, days)
    alerts += p_alerts + list(performance.alerts(perf, cfg))
    seconds = time.perf_counter() - t0
    psi = {r["feature"]: r["psi"] for r in inputs["window"]}
    psi["score"] = prediction["score"]["psi"]
    return {
        "seconds": seconds,
        "rss_before_mb": before,
        "psi": psi,
        "weeks": [{k: w[k] for k in ("week", "rows", "frauds", "pr_auc")} for w in perf["weeks"]],
        "alerts": len(alerts),
    }


def evidently_frames(ctx: dict[str, Any], ref: Any, decisions: Any, labels: Any) -> dict[str, Any]:
    """The four frames Evidently's reports take: drift (every scored decision) and
    classification (matured labelled decisions; the labelled reference)."""
    import pandas as pd

    from pitstore.monitor.reference import LABEL, SCORE, maturity

    columns = ctx["columns"]
    scored = decisions[~decisions["fallback"] & decisions["score"].notna()]
    cur = scored[columns].copy()
    cur[SCORE] = scored["score"].to_numpy()
    mature_before = _window(ctx).report_ts - maturity(ctx["card"])
    matured = scored[scored["decided_at"] < pd.Timestamp(mature_before)]
    joined = matured[["transaction_id", "score"]].merge(labels, on="transaction_id", how="inner")
    labelled = ref[ref[LABEL].notna()]
    return {
        "drift_ref": ref[[*columns, SCORE]],
        "drift_cur": cur,
        "cls_ref": pd.DataFrame(
            {LABEL: labelled[LABEL].astype("int64"), SCORE: labelled[SCORE].to_numpy()}
        ),
        "cls_cur": pd.DataFrame(
            {LABEL: joined["label"].astype("int64"), SCORE: joined["score"].to_numpy()}
        ),
    }


def child_evidently(data: Path) -> dict[str, Any]:
    os.environ.update(TELEMETRY_OFF)
    import warnings

    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset, DataDriftPreset

    from pitstore.monitor.reference import LABEL, SCORE

    warnings.simplefilter("ignore")  # sklearn's zero-division warnings, per metric
    ctx = _context(data)
    columns, card = ctx["columns"], ctx["card"]
    ref, decisions, labels = _frames(data)
    before = current_rss_mb()
    t0 = time.perf_counter()
    f = evidently_frames(ctx, ref, decisions, labels)
    drift_def = DataDefinition(numerical_columns=[*columns, SCORE])
    drift = Report([DataDriftPreset(method="psi")]).run(
        Dataset.from_pandas(f["drift_cur"], data_definition=drift_def),
        Dataset.from_pandas(f["drift_ref"], data_definition=drift_def),
    )
    cls_def = DataDefinition(
        numerical_columns=[SCORE],
        classification=[BinaryClassification(target=LABEL, prediction_probas=SCORE)],
    )
    cls = Report([ClassificationPreset(probas_threshold=float(card["threshold"]))]).run(
        Dataset.from_pandas(f["cls_cur"], data_definition=cls_def),
        Dataset.from_pandas(f["cls_ref"], data_definition=cls_def),
    )
    drift_doc, cls_doc = drift.dict(), cls.dict()
    seconds = time.perf_counter() - t0
    psi = {}
    for m in drift_doc["metrics"]:
        cfg = m["config"]
        if cfg.get("type", "").endswith("ValueDrift"):
            psi["score" if cfg["column"] == SCORE else cfg["column"]] = float(m["value"])
    return {
        "seconds": seconds,
        "rss_before_mb": before,
        "psi": psi,
        "classification_metrics": len(cls_doc["metrics"]),
        "rows": {k: len(v) for k, v in f.items()},
    }


def child_job(data: Path) -> dict[str, Any]:
    from pitstore.core.config import Settings
    from pitstore.models.registry import load_model
    from pitstore.monitor.report import monitor
    from pitstore.monitor.settings import MonitorSettings

    ctx = _context(data)
    settings = Settings()  # PITSTORE_HOME: the data's home
    model = load_model(settings, ctx["version"])
    before = current_rss_mb()
    t0 = time.perf_counter()
    doc = monitor(settings, Path(ctx["audit_dir"]), model, _window(ctx), MonitorSettings())
    return {
        "seconds": time.perf_counter() - t0,
        "rss_before_mb": before,
        "decisions": doc["decisions"],
        "alerts": len(doc["alerts"]),
    }


CHILDREN = {"pitstore": child_pitstore, "evidently": child_evidently, "pitstore_job": child_job}


def child_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", required=True, choices=sorted(CHILDREN))
    ap.add_argument("--data", type=Path, required=True)
    args = ap.parse_args(argv)
    out = CHILDREN[args.child](args.data)
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_delta_mb"] = out["peak_rss_mb"] - out["rss_before_mb"]
    print(json.dumps(out, default=str))


# --- parent -----------------------------------------------------------------------


def psi_check(data: Path, theirs: dict[str, float], ours: dict[str, float | None]) -> dict:
    """Evidently's PSI per input against ours on its bins (bench/monitor_psi.py)."""
    from bench.monitor_psi import compare
    from pitstore.monitor.reference import SCORE

    ctx = _context(data)
    f = evidently_frames(ctx, *_frames(data))
    columns = [*ctx["columns"], "score"]
    as_np = {"score": SCORE}

    def arrays(frame: Any) -> dict[str, Any]:
        return {c: frame[as_np.get(c, c)].to_numpy(dtype="float64") for c in columns}

    return compare(columns, arrays(f["drift_ref"]), arrays(f["drift_cur"]), theirs, ours)


def run(size_name: str, repeats: int = 1, work: Path | None = None) -> dict[str, Any]:
    n = ROWS[size_name]
    base = Path(tempfile.mkdtemp(prefix="monitor-", dir=work))
    home, data = base / "home", base / "data"
    build = run_child(
        "bench.monitor_data",
        [
            *("--home", str(home), "--out", str(data)),
            *("--decisions", str(n), "--reference", str(n)),
            *("--accounts", str(ACCOUNTS[size_name])),
        ],
        env={"PITSTORE_HOME": str(home)},
    )
    print(f"    monitor data: {json.dumps(build)}", file=sys.stderr)
    # one Arrow allocator for both (as #5): the C library's malloc, so the memory
    # ratio compares the computations, not allocators keeping freed pages
    env = {"PITSTORE_HOME": str(home), "ARROW_DEFAULT_MEMORY_POOL": "system", **TELEMETRY_OFF}
    names = ["pitstore", "evidently"]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in names}
    for r in range(repeats):
        for name in names[r % 2 :] + names[: r % 2]:
            res = run_child("bench.monitor_bench", ["--child", name, "--data", str(data)], env)
            print(
                f"    monitor {name}: {res['seconds']:.2f} s, {res['peak_rss_mb']:.0f} MB peak "
                f"({res['rss_before_mb']:.0f} MB with the frames loaded)",
                file=sys.stderr,
            )
            runs[name].append(res)
    job = run_child("bench.monitor_bench", ["--child", "pitstore_job", "--data", str(data)], env)
    print(f"    monitor job: {job['seconds']:.1f} s, {job['peak_rss_mb']:.0f} MB", file=sys.stderr)
    contenders: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        contenders[name] = {
            k: statistics.median(x[k] for x in rs)
            for k in ("seconds", "peak_rss_mb", "peak_delta_mb", "rss_before_mb")
        }
        contenders[name]["per_repeat_s"] = [x["seconds"] for x in rs]
    check = psi_check(data, runs["evidently"][-1]["psi"], runs["pitstore"][-1]["psi"])
    t = ratio(contenders["pitstore"]["seconds"], contenders["evidently"]["seconds"])
    m = ratio(contenders["pitstore"]["peak_rss_mb"], contenders["evidently"]["peak_rss_mb"])
    verified = bool(check["all_equal"])
    return {
        "measurable": True,
        "decisions": build["decisions"],
        "reference_rows": build["reference_rows"],
        "data": build,
        "contenders": contenders,
        "evidently_rows": runs["evidently"][-1]["rows"],
        "pitstore_job": job,
        "psi_check": check,
        "verified": verified,
        "ratios": {
            "time_vs_evidently": t,
            "peak_rss_vs_evidently": m,
            "peak_delta_vs_evidently": ratio(
                contenders["pitstore"]["peak_delta_mb"], contenders["evidently"]["peak_delta_mb"]
            ),
        },
        "goal": {
            **GOAL,
            "met": bool(
                verified
                and t is not None
                and m is not None
                and t <= GOAL["time_vs_evidently_max"]
                and m <= GOAL["peak_rss_vs_evidently_max"]
            ),
        },
    }


if __name__ == "__main__":
    child_main(sys.argv[1:])
