"""CLI for training: `pitstore training-frame [verify]`, `pitstore train`, `pitstore models`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from pitstore.cli.common import console, err, step
from pitstore.cli.common import fail as _fail
from pitstore.core.config import get_settings

if TYPE_CHECKING:
    import pandas as pd

frame_app = typer.Typer(
    help="Build a leakage-free training frame (or verify one).",
    invoke_without_command=True,
    no_args_is_help=False,
)
models_app = typer.Typer(help="List and promote model versions.", no_args_is_help=True)


def _date(text: str, what: str) -> datetime:
    """YYYY-MM-DD (midnight UTC) or an ISO timestamp with an offset."""
    from pitstore.core.timeutil import WatermarkError, parse_utc

    try:
        if len(text) == 10:
            return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        return parse_utc(text, what)
    except (ValueError, WatermarkError) as exc:
        _fail(f"{what}: {exc}")
        raise


def _maturity(days: float | None, credit: bool) -> float:
    """The label maturity in days: the option, else the service's default."""
    if days is not None:
        if days < 0:
            _fail("--label-maturity-days must not be negative")
        return days
    return 365.0 if credit else 14.0


def _policy(
    labels_known_by: str, maturity_days: float, immature: str, start: str | None, end: str | None
):  # type: ignore[no-untyped-def]
    from pitstore.training.labels import LabelPolicy

    return LabelPolicy(
        known_by=_date(labels_known_by, "--labels-known-by"),
        maturity=timedelta(days=maturity_days),
        immature=immature,
        start=_date(start, "--start") if start else None,
        end=_date(end, "--end") if end else None,
    )


@frame_app.callback()
def build(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Output directory (frame, audit, manifest).")] = Path(
        "frames/latest"
    ),
    requests: Annotated[
        Path | None, typer.Option(help="Request rows (parquet or csv: keys, ts, ...).")
    ] = None,
    labels_known_by: Annotated[
        str | None,
        typer.Option(
            help="Build labelled rows (fraud_v1: transactions; credit_v1: loan "
            "applications) with the labels known by DATE."
        ),
    ] = None,
    service: Annotated[str, typer.Option(help="Feature service: fraud_v1 or credit_v1.")] = (
        "fraud_v1"
    ),
    mode: Annotated[str, typer.Option(help="as_known (default) or as_of.")] = "as_known",
    engine: Annotated[str, typer.Option(help="duckdb or spark.")] = "duckdb",
    label_maturity_days: Annotated[
        float | None,
        typer.Option(
            help="Rows younger than this are immature (default 14 for fraud_v1, 365 for credit_v1)."
        ),
    ] = None,
    immature: Annotated[str, typer.Option(help="exclude or mark immature rows.")] = "exclude",
    start: Annotated[str | None, typer.Option(help="First event day (fraud rows).")] = None,
    end: Annotated[str | None, typer.Option(help="Event day end, exclusive.")] = None,
) -> None:
    """Build a training frame: `--requests FILE` or `--labels-known-by DATE`."""
    if ctx.invoked_subcommand is not None:
        return
    from pitstore.training.credit_pipeline import build_credit_frame, is_credit
    from pitstore.training.frames import FrameError, build_frame, write_frame
    from pitstore.training.joins import StoreError, use_system_allocator
    from pitstore.training.labels import LabelError
    from pitstore.training.pipeline import build_fraud_frame

    if requests and labels_known_by:
        _fail("give --requests FILE or --labels-known-by DATE, not both")
    if not requests and not labels_known_by:
        _fail("give --requests FILE or --labels-known-by DATE")
    if requests and (start or end):
        _fail("--start/--end select labelled rows: use them with --labels-known-by, not --requests")
    use_system_allocator()
    settings = get_settings()
    try:
        credit = is_credit(service)
        if labels_known_by:
            maturity = _maturity(label_maturity_days, credit)
            policy = _policy(labels_known_by, maturity, immature, start, end)
            rows = "loan applications" if credit else "transactions"
            step(f"building an {mode} frame of {service}: labelled {rows}, {labels_known_by}")
            if credit:
                frame = build_credit_frame(settings, policy, mode, engine)
            else:
                frame = build_fraud_frame(settings, policy, service, mode, engine)
        else:
            assert requests is not None
            table = _read_requests(requests)
            step(f"building an {mode} frame of {service} for {len(table)} request rows")
            frame = build_frame(settings, table, service, mode, engine)
    except (FrameError, LabelError, StoreError) as exc:
        _fail(str(exc))
    paths = write_frame(frame, out)
    a = frame.audit
    console.print(
        f"frame [bold]{paths['frame']}[/]: {a['rows']} rows, mode {a['mode']}, "
        f"fingerprint {frame.manifest['fingerprint'][:16]}"
    )
    console.print(
        f"leaks: event_ts>ts {a['leaks']['event_ts_after_ts']}, "
        f"created_ts>ts {a['leaks']['created_ts_after_ts']}"
    )
    for key in ("vs_as_of", "vs_as_known"):
        if key in a:
            console.print(
                f"{key}: {a[key]['values_changed']} values in "
                f"{a[key]['rows_changed']} rows would differ"
            )
    if "labels" in a:
        console.print(f"labels: {json.dumps(a['labels']['by_status'])}")
        if "immature_defaults_known_excluded" in a["labels"]:
            lab = a["labels"]
            console.print(
                f"excluded: {lab['immature_excluded']} immature (of which "
                f"{lab['immature_defaults_known_excluded']} already defaulted), "
                f"{lab['unknown_excluded']} mature with no outcome known; "
                f"default rate {lab['default_rate']}"
            )
    if a.get("unknown_entity_rows"):
        by_view = {v: m["unknown_entity"] for v, m in a["missing"].items() if m["unknown_entity"]}
        err.print(
            f"[bold yellow]warning:[/] {a['unknown_entity_rows']} request rows have entity keys "
            f"the store never saw ({by_view}): their features are null; audit ok=false",
            highlight=False,
        )
        raise typer.Exit(1)


def _read_requests(path: Path) -> pd.DataFrame:
    """Request rows from a .csv or .parquet file, or one clear error."""
    import pandas as pd
    import pyarrow as pa

    if not path.is_file():
        _fail(f"no such file {path}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        _fail(f"{path}: request rows must be a .csv or .parquet file, not {suffix or 'no suffix'}")
    try:
        return pd.read_csv(path, dtype=str) if suffix == ".csv" else pd.read_parquet(path)
    except (pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        _fail(f"{path}: cannot read request rows: {str(exc).splitlines()[0]}")


@frame_app.command("verify")
def verify_cmd(manifest: Annotated[Path, typer.Argument(help="manifest.json of a frame.")]) -> None:
    """Rebuild a frame from its manifest; exit 1 unless byte-for-byte identical."""
    from pitstore.training.manifest import verify

    if not manifest.exists():
        _fail(f"no such manifest {manifest}")
    result = verify(get_settings(), manifest)
    if result["identical"]:
        console.print(
            f"[green]identical[/]: frame rebuilt byte-for-byte "
            f"(fingerprint {result['fingerprint'][:16]}, "
            f"{'same' if result['fingerprint_match'] else 'different'} fingerprint)"
        )
    else:
        console.print("[red]frame differs[/]")
    for change in result["changes"]:
        console.print(f"  - {change}")
    if not result["identical"]:
        raise typer.Exit(1)


def train(
    labels_known_by: Annotated[
        str | None, typer.Option(help="Build the frame from labels known by DATE.")
    ] = None,
    frame_dir: Annotated[
        Path | None,
        typer.Option(
            "--frame",
            help="Train on a frame you built: a `training-frame --out` directory "
            "(frame.parquet with a label column, audit.json, manifest.json).",
        ),
    ] = None,
    service: Annotated[
        str, typer.Option(help="Feature service: fraud_v1 (fraud model) or credit_v1 (PD model).")
    ] = "fraud_v1",
    compare_modes: Annotated[
        bool, typer.Option(help="Also train on as_of and compare (fraud_v1).")
    ] = False,
    label_maturity_days: Annotated[
        float | None,
        typer.Option(help="Label maturity (default 14 for fraud_v1, 365 for credit_v1)."),
    ] = None,
    valid_share: Annotated[float, typer.Option(help="Latest share for validation.")] = 0.3,
    cost_missed_fraud: Annotated[float, typer.Option(help="Cost of a missed fraud.")] = 100.0,
    cost_false_decline: Annotated[
        float, typer.Option(help="Cost of a blocked good customer.")
    ] = 10.0,
    cost_review: Annotated[float, typer.Option(help="Cost of a manual review.")] = 2.0,
    margin: Annotated[
        float, typer.Option(help="credit_v1: net interest over a good loan's life, per unit lent.")
    ] = 0.10,
    loss_given_default: Annotated[
        float, typer.Option(help="credit_v1: share of the principal lost on a default.")
    ] = 0.60,
) -> None:
    """Train a model (fraud_v1 or credit_v1) on an as_known frame and register a new version."""
    from pitstore.training.credit_pipeline import is_credit
    from pitstore.training.frames import FrameError
    from pitstore.training.joins import use_system_allocator
    from pitstore.training.labels import LabelError
    from pitstore.training.model import Costs
    from pitstore.training.pipeline import train_fraud

    if (labels_known_by is None) == (frame_dir is None):
        _fail("give --labels-known-by DATE or --frame DIR (one of them)")
    use_system_allocator()
    try:
        credit = is_credit(service)
    except FrameError as exc:
        _fail(str(exc))
    if credit:
        if compare_modes:
            _fail("--compare-modes is for fraud_v1: credit frames are as_known only")
        _train_credit(
            labels_known_by, frame_dir, label_maturity_days, valid_share, margin, loss_given_default
        )
        return
    costs = Costs(cost_missed_fraud, cost_false_decline, cost_review)
    if frame_dir is not None:
        if compare_modes:
            _fail("--compare-modes builds its own frames: use it with --labels-known-by")
        report = _train_on_dir(frame_dir, costs, valid_share)
        _print_trained(report)
        return
    assert labels_known_by is not None
    policy = _policy(labels_known_by, _maturity(label_maturity_days, False), "exclude", None, None)
    step(
        "training on an as_known frame"
        + (", then on as_of for comparison (about twice as long)" if compare_modes else "")
    )
    try:
        report = train_fraud(
            get_settings(), policy, service, costs, valid_share, compare_modes=compare_modes
        )
    except (FrameError, LabelError, ValueError) as exc:
        _fail(str(exc))
        return
    _print_trained(report)


def _train_credit(
    labels_known_by: str | None,
    frame_dir: Path | None,
    maturity_days: float | None,
    valid_share: float,
    margin: float,
    loss_given_default: float,
) -> None:
    from pitstore.training.credit_cutoffs import Economics
    from pitstore.training.credit_model import CreditModelError
    from pitstore.training.credit_pipeline import train_credit, train_on_credit_frame
    from pitstore.training.frames import FrameError
    from pitstore.training.labels import LabelError

    if not (margin > 0 and 0 < loss_given_default <= 1):
        _fail("--margin must be positive and --loss-given-default in (0, 1]")
    economics = Economics(margin=margin, loss_given_default=loss_given_default)
    try:
        if frame_dir is not None:
            frame = _read_frame_dir(frame_dir)
            report = train_on_credit_frame(get_settings(), frame, economics, valid_share)
        else:
            assert labels_known_by is not None
            maturity = _maturity(maturity_days, True)
            policy = _policy(labels_known_by, maturity, "exclude", None, None)
            step(f"training the PD model on an as_known credit_v1 frame, {labels_known_by}")
            report = train_credit(get_settings(), policy, economics, valid_share)
    except (FrameError, LabelError, CreditModelError, ValueError) as exc:
        _fail(str(exc))
    _print_credit(report)


def _print_credit(report: Any) -> None:
    card = report.card
    m, labels = card["metrics"], card["frame_audit"].get("labels") or {}
    c = m["calibration_in_the_large"]
    console.print(f"model [bold]{report.version}[/] for credit_v1 (not promoted)")
    if labels:
        console.print(
            f"frame: {labels['rows']} labelled applications; excluded "
            f"{labels['immature_excluded']} immature, {labels['unknown_excluded']} unknown"
        )
    console.print(
        f"out of time: {m['rows']} applications, {m['defaults']} defaults; "
        f"Gini {_num(m['gini'])}, KS {_num(m['ks'])}, AUC {_num(m['auc'])}, "
        f"Brier {_num(m['brier'])}"
    )
    console.print(
        f"calibration in the large: mean PD {_num(c['mean_pd'])}, observed "
        f"{_num(c['observed_rate'])} (95% {_num(c['ci_low'])}-{_num(c['ci_high'])})"
    )
    low, high = card["review_band"]
    console.print(f"cut-offs: pre-qualify below PD {low:.4f}, decline at or above {high:.4f}")


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def _read_frame_dir(frame_dir: Path) -> Any:
    """A frame directory as `training-frame --out` writes it (checked first)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pitstore.training.frames import TrainingFrame

    files = {n: frame_dir / n for n in ("frame.parquet", "audit.json", "manifest.json")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        _fail(f"not a frame directory: missing {missing}")
    try:
        table = pq.read_table(files["frame.parquet"])
        audit = json.loads(files["audit.json"].read_text())
        manifest = json.loads(files["manifest.json"].read_text())
    except (OSError, ValueError, pa.ArrowException) as exc:
        _fail(f"{frame_dir}: cannot read the frame: {str(exc).splitlines()[0]}")
    step(f"training on {frame_dir} ({table.num_rows} rows, mode {audit.get('mode')})")
    return TrainingFrame.loaded(table, audit, manifest)


def _train_on_dir(frame_dir: Path, costs: Any, valid_share: float) -> Any:
    """Train on a frame directory as `training-frame --out` writes it (checked first)."""
    from pitstore.training.frames import FrameError
    from pitstore.training.pipeline import train_on_frame

    loaded = _read_frame_dir(frame_dir)
    try:
        return train_on_frame(get_settings(), loaded, costs, valid_share)
    except (FrameError, ValueError) as exc:
        _fail(str(exc))


def _print_trained(report: Any) -> None:
    m = report.card["metrics"]
    console.print(f"model [bold]{report.version}[/] (not promoted)")
    console.print(
        f"validation: {m['rows']} rows, {m['fraud']} fraud; PR-AUC {m['pr_auc']} "
        f"(baseline {m['baseline_pr_auc']}), ROC-AUC {m['roc_auc']}, "
        f"Brier {m['brier']}"
    )
    console.print(
        f"threshold {report.card['threshold']:.4f}, review band {report.card['review_band']}"
    )
    if report.comparison:
        console.print_json(json.dumps(report.comparison))


@models_app.command("list")
def models_list() -> None:
    """List model versions."""
    from pitstore.models.registry import list_models

    table = Table(title="models")
    for col in ("version", "service", "promoted", "created", "PR-AUC", "label cutoff"):
        table.add_column(col)
    for m in list_models(get_settings()):
        table.add_row(
            m["version"],
            m["service"],
            "*" if m["promoted"] else "",
            m["created_at"],
            f"{m['pr_auc']:.4f}" if m["pr_auc"] is not None else "-",
            m["label_cutoff"],
        )
    console.print(table)


@models_app.command("promote")
def models_promote(version: Annotated[str, typer.Argument(help="Model version id.")]) -> None:
    """Make VERSION the promoted model of its card's service (fraud_v1, credit_v1)."""
    from pitstore.models.registry import ModelRegistryError, promote

    try:
        service = promote(get_settings(), version)
    except ModelRegistryError as exc:
        _fail(str(exc))
    console.print(f"promoted {version} for {service}")


def compact(
    views: Annotated[
        list[str] | None, typer.Argument(help="Feature views to compact (default: all).")
    ] = None,
) -> None:
    """Write each view's key-sorted copy of its offline rows, for fast training frames.

    Run it after the daily transform (daily or weekly): training frames then
    binary-search the copy instead of hash-joining every run file. Run files
    written after the copy are read as they are; a copy whose files changed is
    ignored until the next compaction (joins stay correct either way).
    """
    from pitstore.core.spec import FEATURE_VIEWS
    from pitstore.training.compact import compact_store

    known = {v.name: v for v in FEATURE_VIEWS}
    unknown = sorted(set(views or []) - set(known))
    if unknown:
        _fail(f"unknown feature view(s) {unknown}: use any of {sorted(known)}")
    chosen = tuple(known[n] for n in views) if views else None
    table = Table(title="compaction")
    for col in ("view", "compacted", "rows", "run files", "seconds", "note"):
        table.add_column(col)
    for s in compact_store(get_settings(), chosen):
        table.add_row(
            s.view,
            "yes" if s.compacted else "no",
            str(s.rows),
            str(s.files),
            str(s.seconds),
            s.reason,
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("compact")(compact)
    app.add_typer(frame_app, name="training-frame")
    app.command("train")(train)
    app.add_typer(models_app, name="models")
