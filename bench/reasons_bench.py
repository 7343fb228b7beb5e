"""CPU cost of scoring one request with its reasons: before (one-input
substitutions against the training median) vs now (exact TreeSHAP), same run.

``python -m bench.reasons_bench [--rows 10000] [--repeats 3] [--rev b4f4777]``

The "before" code is the scoring path as of ``--rev`` (``serving/scoring.py``,
``models/fast_model.py``, ``models/tree_kernels.py`` read with ``git show``),
loaded beside today's; both score the same production-shape model (the
``training.model.fit`` booster on the fraud_v1 inputs) and the same rows, in
alternating repeats. Reported: process CPU time per ``score_row`` call (the
min over repeats), and, for the tree-kernel decision, sklearn's own
``predict_proba`` against the compiled walk on one row and on 64.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from pitstore.core.request_features import REQUEST_FEATURES
from pitstore.core.spec import FRAUD_V1
from pitstore.models.fast_model import with_fast_path
from pitstore.serving import scoring
from pitstore.training.model import explanation_card, fit, reference_stats

COLUMNS = [v.column(f) for v in FRAUD_V1.views for f in v.features] + list(REQUEST_FEATURES)


def synthetic(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.gamma(2.0, 2.0, size=(n, len(COLUMNS))), columns=COLUMNS)
    for flag in ("is_foreign", "is_card_not_present", "is_foreign_currency"):
        frame[flag] = rng.integers(0, 2, n).astype(float)
    logit = (
        0.5 * frame[COLUMNS[0]] + 0.6 * frame["amount_vs_30d_mean"]
        + 1.5 * frame["is_card_not_present"] - 7.0
    )  # fmt: skip
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def old_modules(rev: str) -> tuple[types.ModuleType, types.ModuleType]:
    """The scoring and fast-path modules as of ``rev``, wired to each other."""

    def load(path: str, name: str, inject: dict[str, Any], drop: str = "") -> types.ModuleType:
        source = subprocess.run(
            ["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True
        ).stdout
        module = types.ModuleType(name)
        module.__dict__.update(inject)
        sys.modules[name] = module  # dataclasses look their module up
        exec(compile(source.replace(drop, ""), path, "exec"), module.__dict__)  # noqa: S102
        return module

    kernels = load("pitstore/models/tree_kernels.py", "old_tree_kernels", {})
    fast = load(
        "pitstore/models/fast_model.py",
        "old_fast_model",
        {"tree_kernels": kernels},
        "from pitstore.models import tree_kernels\n",
    )
    scoring_then = load(
        "pitstore/serving/scoring.py",
        "old_scoring",
        {"substitution_matrix": fast.substitution_matrix},
        "from pitstore.models.fast_model import substitution_matrix\n",
    )
    return scoring_then, fast


class Loaded:  # the registry's LoadedModel, as serving sees it
    def __init__(self, model: Any, card: dict[str, Any]) -> None:
        self.model, self.card, self.feature_columns = model, card, COLUMNS

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(df[COLUMNS].to_numpy())[:, 1]  # type: ignore[no-any-return]


def cpu_per_call(fn: Callable[[dict[str, float]], Any], rows: list[dict[str, float]]) -> float:
    """Process CPU microseconds per call over ``rows``."""
    start = time.process_time()
    for row in rows:
        fn(row)
    return (time.process_time() - start) / len(rows) * 1e6


def per_call(fn: Callable[[], Any], n: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rev", default="b4f4777")
    args = parser.parse_args()

    with threadpool_limits(1, user_api="openmp"):
        train = synthetic(5000, 0)
        model = fit(train, COLUMNS)
    reference = reference_stats(train, COLUMNS)
    card = {
        "threshold": 0.5,
        "review_band": [0.3, 0.7],
        "reference": reference,
        "explanation": explanation_card(model),
        "feature_medians": reference["medians"],  # what the old reasons read
    }
    new = with_fast_path(Loaded(model, card))
    old_scoring, old_fast = old_modules(args.rev)
    old = old_fast.with_fast_path(Loaded(model, card))
    test = synthetic(args.rows, 1)
    rows = [{c: float(v) for c, v in zip(COLUMNS, r, strict=True)} for r in test[COLUMNS].values]
    assert old_scoring.score_row(old, rows[0]).score == scoring.score_row(new, rows[0]).score

    results: dict[str, list[float]] = {"before": [], "now": [], "now_adverse": []}
    for _ in range(args.repeats):
        results["before"].append(cpu_per_call(lambda r: old_scoring.score_row(old, r), rows))
        results["now"].append(cpu_per_call(lambda r: scoring.score_row(new, r), rows))
        results["now_adverse"].append(
            cpu_per_call(lambda r: scoring.score_row(new, r, "adverse"), rows)
        )
    before, now = min(results["before"]), min(results["now"])
    adverse = min(results["now_adverse"])
    approved = sum(scoring.score_row(new, r, "adverse").decision == "approve" for r in rows)

    x1 = test[COLUMNS].to_numpy()[:1]
    x64 = test[COLUMNS].to_numpy()[:64]
    kernels: dict[str, float] = {}
    with threadpool_limits(1, user_api="openmp"):
        kernels["sklearn_1_row_1_thread_us"] = per_call(lambda: model.predict_proba(x1), 300)
        kernels["sklearn_64_rows_1_thread_us"] = per_call(lambda: model.predict_proba(x64), 300)
    kernels["sklearn_1_row_openmp_us"] = per_call(lambda: model.predict_proba(x1), 300)
    kernels["sklearn_64_rows_openmp_us"] = per_call(lambda: model.predict_proba(x64), 300)
    kernels["numba_1_row_us"] = per_call(lambda: new.fast.proba(x1), 3000)
    kernels["numba_64_rows_us"] = per_call(lambda: new.fast.proba(x64), 3000)
    kernels["contributions_1_row_us"] = per_call(lambda: new.fast.contributions(x1), 3000)
    kernels["old_substitutions_1_row_us"] = per_call(
        lambda: old.fast.proba_substitutions(x1[0], x64[1]), 3000
    )
    print(
        json.dumps(
            {
                "rows": args.rows,
                "score_row_cpu_us": results,
                "ratio_now_over_before": round(now / before, 3),
                "ratio_adverse_over_before": round(adverse / before, 3),
                "approve_share": round(approved / len(rows), 4),
                "trees": len(new.fast.roots),
                "leaf_slots": int(new.fast._paths.n_unique.sum()),
                "kernels": {k: round(v, 1) for k, v in kernels.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
