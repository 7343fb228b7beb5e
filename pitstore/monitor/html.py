"""The monitor document as one self-contained HTML file: plots are inline
base64 PNGs (matplotlib, Agg), no scripts, styles or fonts from elsewhere."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
from matplotlib.figure import Figure  # noqa: E402

from pitstore.monitor.report import psi_table  # noqa: E402

TOP_INPUTS = 8  # inputs drawn in the PSI plot: the highest window PSI first


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _psi_plot(doc: dict[str, Any]) -> str:
    table = psi_table(doc)
    fig, ax = plt.subplots(figsize=(9, 4))
    top = [r["feature"] for r in doc["input_drift"]["window"][:TOP_INPUTS]]
    for col in top:
        if col in table:
            ax.plot(table.index, table[col], marker="o", label=col)
    t = doc["thresholds"]
    ax.axhline(t["psi_warn"], ls="--", c="orange", label="warn")
    ax.axhline(t["psi_alert"], ls="--", c="red", label="alert")
    ax.set_ylabel("PSI vs reference")
    ax.set_title("Input drift by day (highest window PSI)")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def _score_plot(doc: dict[str, Any]) -> str:
    pred = doc["prediction_drift"]
    ref, cur = pred["reference_histogram"], pred["window_histogram"]
    n_ref, n_cur = max(sum(ref), 1), max(sum(cur), 1)
    labels = ["<= " + f"{e:.4f}" for e in pred["score_edges"]] + ["above"]
    x = range(len(ref))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar([i - 0.2 for i in x], [c / n_ref for c in ref], width=0.4, label="reference")
    ax.bar([i + 0.2 for i in x], [c / n_cur for c in cur], width=0.4, label="window")
    ax.set_xticks(list(x), labels, rotation=45, fontsize=7)
    ax.set_ylabel("share of decisions")
    psi = pred["score"]["psi"]
    ax.set_title(f"Score distribution (reference-decile bins), PSI {psi or 0:.3f}")
    ax.legend()
    return _png(fig)


def _calibration_plot(weeks: list[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot([0, 1], [0, 1], ls="--", c="grey")
    top = 0.0
    for w in weeks:
        xs = [r["mean_score"] for r in w["calibration"]]
        ys = [r["fraud_rate"] for r in w["calibration"]]
        top = max([top, *xs, *ys])
        ax.plot(
            xs, ys, marker="o", label=f"week {w['week']}" + ("" if w["judged"] else " (not judged)")
        )
    lim = min(1.0, top * 1.1 or 1.0)
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    ax.set_xlabel("mean score")
    ax.set_ylabel("observed fraud rate")
    ax.set_title("Calibration per week (equal-count bins)")
    if weeks:
        ax.legend(fontsize=7)
    return _png(fig)


def _segment_plot(weeks: list[dict[str, Any]]) -> str:
    kinds = sorted({k for w in weeks for k in w["segments"]})
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(12, 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=False):
        keys = sorted({k for w in weeks for k in w["segments"].get(kind, {})})
        for key in keys:
            pts = [
                (w["week"], w["segments"][kind][key]["pr_auc"])
                for w in weeks
                if key in w["segments"].get(kind, {})
                and w["segments"][kind][key]["pr_auc"] is not None
            ]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
        ax.set_title(f"PR-AUC by {kind}")
        ax.tick_params(axis="x", rotation=45)
        ax.legend(fontsize=6)
    return _png(fig)


def _alerts_table(alerts: list[dict[str, Any]], title: str) -> str:
    if not alerts:
        return f"<h2>{title}</h2><p class=ok>none</p>"
    head = "".join(f"<th>{c}</th>" for c in ("day", "kind", "subject", "value", "threshold"))

    def cell(a: dict[str, Any], c: str) -> str:
        text = f"{a[c]:.4g}" if c in ("value", "threshold") else str(a[c])
        return f"<td>{html.escape(text)}</td>"

    rows = "".join(
        "<tr>"
        + "".join(cell(a, c) for c in ("day", "kind", "subject", "value", "threshold"))
        + "</tr>"
        for a in alerts
    )
    return f"<h2>{title} ({len(alerts)})</h2><table><tr>{head}</tr>{rows}</table>"


STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; background: #fff; }
table { border-collapse: collapse; } td, th { border: 1px solid #bbb; padding: 2px 8px; }
th { background: #eee; } .alert h2 { color: #b00; } .ok { color: #070; }
"""


def _credit_verdict(perf: dict[str, Any]) -> str:
    v = perf["verdict"]
    if v is None:
        return html.escape(perf["note"].capitalize()) + "."
    oe = v["observed_over_expected"]
    text = (
        f"{v['rows']} matured decisions (applications before {perf['mature_before'][:10]}), "
        f"{v['defaults']} defaults: observed default rate / mean PD "
        f"{'n/a' if oe is None else f'{oe:.2f}'} (reference "
        f"{v['reference_observed_over_expected'] or float('nan'):.2f})"
    )
    if not v["judged"]:
        text += f"; {v['note']}"
    return html.escape(text) + f"; {perf['pending_maturity']} decisions not matured yet."


def _credit_mix(credit: dict[str, Any] | None) -> str:
    """Credit: every decision's mix by day, rule declines and refers included."""
    if credit is None:
        return ""
    names = list(credit["mix"])
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    head += "<th>rule declines</th><th>referred for data/model</th>"

    def row(label: str, r: dict[str, Any]) -> str:
        cells = "".join(f"<td>{r['mix'][n]:.1%}</td>" for n in names)
        cells += f"<td>{r['rule_decline_share']:.1%}</td><td>{r['refer_for_data_rate']:.1%}</td>"
        return f"<tr><td>{html.escape(label)}</td><td>{r['decisions']}</td>{cells}</tr>"

    rows = [row(d["day"], d) for d in credit["days"]] + [row("window", credit)]
    ref = credit["reference_rule_decline_share"]
    ref_text = "n/a" if ref is None else f"{ref:.1%}"
    return (
        "<h2>Credit decisions</h2>"
        f"<p>Rule declines in the reference frame: {ref_text}.</p>"
        f"<table><tr><th>day</th><th>decisions</th>{head}</tr>{''.join(rows)}</table>"
    )


def render(doc: dict[str, Any]) -> str:
    perf = doc["performance"]
    weeks = perf.get("weeks", [])
    if "unavailable" in perf:
        perf_note = f"Performance not judged: {html.escape(perf['unavailable'])}"
    elif "verdict" in perf:
        perf_note = _credit_verdict(perf)
    else:
        perf_note = (
            f"{sum(w['judged'] for w in weeks)} judged week(s); "
            f"{perf['pending_maturity']} decisions younger than the label maturity "
            f"(decided after {html.escape(perf['mature_before'][:10])}) not judged yet."
        )
    ref = doc["reference"]
    title = f"pitstore monitor: model {html.escape(doc['model_version'])}"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
        f"<style>{STYLE}</style></head><body><h1>{title}</h1>",
        f"<p>Window {doc['window']['from']} .. {doc['window']['to']}: {doc['decisions']} "
        f"decisions; reference {ref['rows']} rows "
        f"(frame {html.escape(str(ref['frame_fingerprint'])[:12])}"
        f"{'' if ref['matches_card'] else ', DIFFERS from the card'}).</p>",
        f"<div class=alert>{_alerts_table(doc['alerts'], 'Alerts')}</div>",
        _alerts_table(doc["warnings"], "Warnings"),
        "<h2>Input drift</h2>",
        _psi_plot(doc),
        "<h2>Prediction drift</h2>",
        _score_plot(doc),
        _credit_mix(doc.get("credit")),
        f"<h2>Performance on matured labels</h2><p>{perf_note}</p>",
        _calibration_plot(weeks),
        _segment_plot(weeks),
        "</body></html>",
    ]
    return "\n".join(parts)
