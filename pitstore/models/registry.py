"""Model artifacts under ``PITSTORE_HOME/models/<version>/`` and the loader serving uses.

Each version directory holds ``model.joblib``, ``model_card.json``,
``model_card.md``, ``pr_curve.png`` and ``calibration.png``.
Promotion is per service: a card's ``service`` names the decision it serves
(``fraud_v1`` scoring, ``credit_v1`` pre-screening; a card without one is a
fraud model, as every card was before credit existed). ``models/PROMOTED``
names the promoted fraud_v1 version (the file serving has always read) and
``models/PROMOTED.<service>`` that of any other service, so promoting a credit
model never replaces the fraud model serving scores with, and vice versa.

An artifact is a pickle, and unpickling runs code: the card records the
artifact's sha256 (``artifact_sha256``) at save, and ``load_model`` reads the
bytes once, checks the hash, and only then unpickles those same bytes. A
version id must match ``VERSION_ID`` and resolve (symlinks followed) inside
the models directory before anything is read: a version named by an audit
record or a ``PROMOTED`` marker is input, not trusted.

Loader contract (serving builds on it)::

    m = load_model(settings, "promoted")    # or a version id; service="fraud_v1"
    m = load_model(settings, "promoted", service="credit_v1")
    m.feature_columns   # Feast features "<view>__<feature>", then request features
    m.card["threshold"], m.card["review_band"]   # score >= high: decline; low <= s < high: review
    m.predict_proba(frame)   # frame: DataFrame with feature_columns; NaN = missing
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from pitstore.core.config import Settings

CARD_KEYS = (
    "version",
    "feature_service",
    "spec_fingerprint",
    "frame_fingerprint",
    "training_window",
    "label_cutoff",
    "metrics",
    "threshold",
    "review_band",
    "feature_columns",
    "code_version",
    "created_at",
)


# Letters, digits, '.', '_', '-'; no path separator, no leading dot (no "..").
VERSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ARTIFACT = "model.joblib"
# A service id becomes part of a marker file's name: same rule, no dots.
SERVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
DEFAULT_SERVICE = "fraud_v1"


class ModelRegistryError(LookupError):
    pass


def version_dir(settings: Settings, version: str) -> Path:
    """The version's directory, refused unless the id is well-formed and the
    real path (symlinks resolved) is a directory right inside ``models/``."""
    if not VERSION_ID.fullmatch(version) or ".." in version:
        raise ModelRegistryError(f"invalid model version id {version!r}")
    root = models_dir(settings).resolve()
    folder = (root / version).resolve()
    if folder.parent != root:
        raise ModelRegistryError(f"model version {version!r} resolves outside {root}")
    return folder


def _inside(folder: Path, name: str) -> Path:
    path = (folder / name).resolve()
    if path.parent != folder:
        raise ModelRegistryError(f"{folder / name} resolves outside its version directory")
    return path


def card_service(card: dict[str, Any]) -> str:
    """The service a card's model serves; cards written before services existed are fraud's."""
    return str(card.get("service") or DEFAULT_SERVICE)


def _marker(settings: Settings, service: str) -> Path:
    if not SERVICE_ID.fullmatch(service):
        raise ModelRegistryError(f"invalid service id {service!r}")
    name = "PROMOTED" if service == DEFAULT_SERVICE else f"PROMOTED.{service}"
    return models_dir(settings) / name


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def models_dir(settings: Settings) -> Path:
    return settings.home / "models"


@dataclass
class LoadedModel:
    version: str
    card: dict[str, Any]
    model: Any
    feature_columns: list[str]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated fraud probability per row (1-D). Missing features may be NaN."""
        missing = [c for c in self.feature_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"frame lacks feature columns {missing}")
        x = frame[self.feature_columns].astype("float64").to_numpy()
        return self.model.predict_proba(x)[:, 1]

    def decide(self, score: float) -> str:
        low, high = self.card["review_band"]
        return "decline" if score >= high else "review" if score >= low else "approve"


def new_version(card_seed: dict[str, Any], now: datetime) -> str:
    digest = hashlib.sha256(json.dumps(card_seed, sort_keys=True, default=str).encode())
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{digest.hexdigest()[:8]}"


def save_model(
    settings: Settings, model: Any, card: dict[str, Any], y: np.ndarray, p: np.ndarray
) -> Path:
    """Write a version directory atomically (temp dir, then rename)."""
    missing = [k for k in CARD_KEYS if k not in card]
    if missing:
        raise ValueError(f"model card lacks {missing}")
    root = models_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    final = version_dir(settings, str(card["version"]))
    if final.exists():
        raise ModelRegistryError(f"model version {card['version']} already exists")
    tmp = root / f".{card['version']}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    joblib.dump(model, tmp / ARTIFACT)
    card = {
        **card,
        "service": card_service(card),
        "artifact_sha256": sha256_file(tmp / ARTIFACT),
    }
    (tmp / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True, default=str))
    _plots(tmp, y, p, card)
    (tmp / "model_card.md").write_text(render_card(card))
    os.replace(tmp, final)
    return final


def calibration_extent(table: list[dict[str, float]]) -> float:
    """The calibration plot's upper limit on both axes: the scores' range, not 0-1.

    Fraud scores sit near 0; a 0-1 frame squeezes every point into the corner.
    """
    values = [r["mean_score"] for r in table] + [r["fraud_rate"] for r in table]
    return max([*values, 1e-4]) * 1.1


def _plots(folder: Path, y: np.ndarray, p: np.ndarray, card: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    prec, rec, _ = precision_recall_curve(y, p)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(rec, prec, label=f"model (PR-AUC {card['metrics'].get('pr_auc') or 0:.3f})")
    ax.axhline(y.mean(), ls="--", c="grey", label=f"baseline ({y.mean():.4f})")
    threshold = card.get("threshold")
    if threshold is not None and len(y):
        # The operating point: where the card's threshold puts precision and recall.
        flagged = p >= threshold
        tp = float((flagged & (y == 1)).sum())
        op_rec = tp / max(1.0, float((y == 1).sum()))
        op_prec = tp / max(1.0, float(flagged.sum()))
        ax.plot([op_rec], [op_prec], "o", c="red", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"PR curve, out-of-time validation\n{card['version']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "pr_curve.png", dpi=80)
    plt.close(fig)
    table = card["metrics"].get("calibration", [])
    fig, ax = plt.subplots(figsize=(5, 4))
    xs = [r["mean_score"] for r in table]
    ys = [r["fraud_rate"] for r in table]
    top = calibration_extent(table)
    ax.plot([0, top], [0, top], ls="--", c="grey", label="perfectly calibrated")
    ax.plot(xs, ys, marker="o", label="model")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.legend()
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed fraud rate")
    ax.set_title("Calibration (deciles of score)")
    fig.tight_layout()
    fig.savefig(folder / "calibration.png", dpi=80)
    plt.close(fig)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _render_credit(card: dict[str, Any]) -> list[str]:
    """The PD model's sections: discrimination, calibration with intervals, cut-offs."""
    m = card["metrics"]
    c = m.get("calibration_in_the_large") or {}
    lines = ["| metric | value |", "|---|---|"]
    for key in ("rows", "defaults", "default_rate", "auc", "gini", "ks", "pr_auc", "brier"):
        lines.append(f"| {key} | {_fmt(m.get(key))} |")
    lines += [
        f"| calibration slope / intercept | {_fmt(m.get('calibration_slope'))} / "
        f"{_fmt(m.get('calibration_intercept'))} |",
        "",
        f"Calibration in the large: mean PD {_fmt(c.get('mean_pd'))} against an observed "
        f"default rate {_fmt(c.get('observed_rate'))} (95% interval {_fmt(c.get('ci_low'))} to "
        f"{_fmt(c.get('ci_high'))}; within: {c.get('within_interval')}).",
        "",
    ]
    low, high = card["review_band"]
    lines += [
        f"Decision: PD >= {high:.4f} decline; {low:.4f} <= PD < {high:.4f} refer; "
        "otherwise pre-qualified.",
        "",
        "![Calibration](calibration.png)",
        "",
        "## Calibration by PD band",
        "",
        "| band | n | mean PD | default rate | 95% interval |",
        "|---|---|---|---|---|",
        *[
            f"| {r['band']} | {r['n']} | {_fmt(r['mean_pd'])} | {_fmt(r['observed_rate'])} | "
            f"{_fmt(r['ci_low'])}-{_fmt(r['ci_high'])} |"
            for r in m.get("calibration_by_band", [])
        ],
        "",
        "## By segment (mean PD / default rate, n)",
        "",
    ]
    for seg, values in m.get("by_segment", {}).items():
        cells = ", ".join(
            f"{k}: {_fmt(v.get('mean_pd'))} / {_fmt(v.get('observed_rate'))} (n={v['n']})"
            for k, v in values.items()
        )
        lines.append(f"- {seg}: {cells}")
    directions = card.get("monotone_directions") or {}
    lines += ["", "## Monotone directions", ""]
    lines += [f"- `{k}`: {'+1' if v > 0 else '-1'}" for k, v in directions.items() if v]
    return lines


def render_card(card: dict[str, Any]) -> str:
    m = card["metrics"]
    lines = [
        f"# Model {card['version']}",
        "",
        f"- service: `{card_service(card)}`",
        f"- feature service: `{card['feature_service']}` (spec `{card['spec_fingerprint']}`)",
        f"- training frame fingerprint: `{card['frame_fingerprint']}`",
        f"- training window: {card['training_window']}",
        f"- label cutoff: {card['label_cutoff']}",
        f"- code version: `{card['code_version']}`",
        f"- created: {card['created_at']}",
        "",
        "## Out-of-time validation",
        "",
    ]
    if card.get("model_kind") == "credit_pd":
        return "\n".join([*lines, *_render_credit(card)]) + "\n"
    lines += ["| metric | value |", "|---|---|"]
    for key in (
        "rows",
        "fraud",
        "base_rate",
        "pr_auc",
        "baseline_pr_auc",
        "roc_auc",
        "brier",
        "precision_at_threshold",
        "recall_at_threshold",
        "review_share",
    ):
        lines.append(f"| {key} | {_fmt(m.get(key))} |")
    low, high = card["review_band"]
    lines += [
        "",
        f"Decision: score >= {high:.4f} decline; {low:.4f} <= score < {high:.4f} review; "
        "otherwise approve.",
        "",
        "![PR curve](pr_curve.png) ![Calibration](calibration.png)",
        "",
        "## Calibration",
        "",
        "| n | mean score | fraud rate |",
        "|---|---|---|",
        *[
            f"| {r['n']} | {r['mean_score']:.4f} | {r['fraud_rate']:.4f} |"
            for r in m.get("calibration", [])
        ],
        "",
        "## By segment (PR-AUC)",
        "",
    ]
    for seg, values in m.get("by_segment", {}).items():
        cells = ", ".join(
            # fraud segments count "rows", credit's calibration segments "n"
            f"{k}: {_fmt(v.get('pr_auc'))} (n={v.get('rows', v.get('n'))})"
            for k, v in values.items()
        )
        lines.append(f"- {seg}: {cells}")
    return "\n".join(lines) + "\n"


def list_models(settings: Settings) -> list[dict[str, Any]]:
    """Every version, with its service and whether it is that service's promoted one."""
    root = models_dir(settings)
    promoted: dict[str, str | None] = {}
    out = []
    for folder in sorted(root.glob("*/model_card.json")) if root.exists() else []:
        card = json.loads(folder.read_text())
        service = card_service(card)
        if service not in promoted:
            promoted[service] = promoted_version(settings, service)
        out.append(
            {
                "version": card["version"],
                "service": service,
                "promoted": card["version"] == promoted[service],
                "created_at": card["created_at"],
                "pr_auc": card["metrics"].get("pr_auc"),
                "label_cutoff": card["label_cutoff"],
                "mode": card.get("mode"),
            }
        )
    return out


def promoted_version(settings: Settings, service: str = DEFAULT_SERVICE) -> str | None:
    """The version promoted for ``service``, or None."""
    marker = _marker(settings, service)
    return marker.read_text().strip() or None if marker.exists() else None


def promote(settings: Settings, version: str) -> str:
    """Promote ``version`` within its card's service; returns that service."""
    folder = version_dir(settings, version)
    card_path = folder / "model_card.json"
    if not card_path.exists():
        known = [m["version"] for m in list_models(settings)]
        raise ModelRegistryError(f"no model version {version!r}; known: {known}")
    service = card_service(json.loads(card_path.read_text()))
    marker = _marker(settings, service)
    tmp = marker.with_name(f".{marker.name}.tmp")
    tmp.write_text(version + "\n")
    os.replace(tmp, marker)
    return service


def load_model(
    settings: Settings, which: str = "promoted", service: str = DEFAULT_SERVICE
) -> LoadedModel:
    """Load a version (or ``service``'s promoted one) after checking its artifact's hash."""
    version = promoted_version(settings, service) if which == "promoted" else which
    if version is None:
        raise ModelRegistryError(
            f"no {service} model is promoted: run `pitstore models promote VERSION`"
        )
    folder = version_dir(settings, version)
    artifact = _inside(folder, ARTIFACT)
    if not artifact.is_file():
        raise ModelRegistryError(f"no model version {version!r} under {models_dir(settings)}")
    card = json.loads(_inside(folder, "model_card.json").read_text())
    expected = card.get("artifact_sha256")
    if not isinstance(expected, str):
        raise ModelRegistryError(
            f"model version {version!r} records no artifact hash: re-save it to load it"
        )
    data = artifact.read_bytes()  # hashed and unpickled from the same bytes
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelRegistryError(
            f"model version {version!r}: {ARTIFACT} has sha256 {actual[:12]}..., its card "
            f"recorded {expected[:12]}...: refusing to unpickle it"
        )
    if which == "promoted" and card_service(card) != service:
        # A marker edited by hand (or copied across services) must not serve
        # a fraud model as a PD model: their features and decisions differ.
        raise ModelRegistryError(
            f"the promoted {service} version {version!r} is a {card_service(card)} model"
        )
    return LoadedModel(version, card, joblib.load(io.BytesIO(data)), list(card["feature_columns"]))


def now_utc() -> datetime:
    return datetime.now(UTC)
