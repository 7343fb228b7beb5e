"""Online / offline parity: what Redis serves equals what training sees, value for value.

DESIGN ("Online / offline parity"): after materializing the run with watermark
``W``, for every entity the Redis value equals the offline ``as_known``
point-in-time value at ``ts = W`` - exactly. This module checks it:

- online: ``pitstore.online_read`` (the serving read path) at ``at = W``;
- offline: an independent DuckDB point-in-time join over the offline parquet
  (dedupe versions known at ``W`` per ``(entity, event_timestamp)``, then an
  ``ASOF`` join of the entity spine at ``W``); it shares no SQL with the
  materializer.

Both sides apply the view's TTL the same way: a value whose event timestamp is
older than ``ttl`` at ``W`` (``W - event_timestamp > ttl``) is missing.

The report is a list of sections (``ReportSection``): the online check is one;
engine parity (dbt vs Spark) or any other check can add its own section and
the JSON / Markdown files carry them all.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import duckdb
import redis

from pitstore.core.config import Settings
from pitstore.core.feast_store import FEAST_PROJECT
from pitstore.core.spec import Entity, FeatureService, FeatureView
from pitstore.core.timeutil import from_us, stamp, to_us
from pitstore.online.codec import entity_value
from pitstore.online.materialize import MARKER
from pitstore.online.reader import OnlineReader, OnlineRow, td_us


class ParityError(RuntimeError):
    """The check could not run (no offline data, Redis unreachable, bad arguments)."""


# --- Report model -------------------------------------------------------------


class ReportSection(Protocol):
    """One check in a parity report (online parity, engine parity, ...)."""

    name: str
    title: str

    @property
    def passed(self) -> bool: ...

    def to_dict(self) -> dict[str, Any]: ...

    def to_markdown(self) -> str: ...


@dataclass
class ExternalSection:
    """A section produced elsewhere (e.g. engine parity), carried as given."""

    name: str
    title: str
    ok: bool
    data: dict[str, Any]
    markdown: str

    @property
    def passed(self) -> bool:
        return self.ok

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "passed": self.ok, **self.data}

    def to_markdown(self) -> str:
        return self.markdown

    @classmethod
    def load(cls, path: Path) -> ExternalSection:
        """Read a section from JSON: ``{"name", "title", "passed", "markdown"?, ...}``."""
        raw = json.loads(path.read_text())
        try:
            name, title, ok = raw.pop("name"), raw.pop("title"), bool(raw.pop("passed"))
        except KeyError as exc:
            raise ParityError(
                f"{path}: a report section needs {exc} (name, title, passed)"
            ) from exc
        markdown = raw.pop("markdown", None) or f"```json\n{json.dumps(raw, indent=2)}\n```"
        return cls(name, title, ok, raw, markdown)


@dataclass
class ParityReport:
    title: str
    sections: list[ReportSection] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.sections) and all(s.passed for s in self.sections)

    def add(self, section: ReportSection) -> None:
        self.sections.append(section)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "passed": self.passed,
            "sections": [s.to_dict() for s in self.sections],
        }

    def to_markdown(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        parts = [f"# {self.title}: {verdict}", ""]
        for s in self.sections:
            mark = "pass" if s.passed else "FAIL"
            parts.append(f"- {s.title}: **{mark}**")
        parts.append("")
        parts.extend(s.to_markdown() for s in self.sections)
        return "\n".join(parts).rstrip() + "\n"

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.json`` and ``<stem>.md`` (atomically) into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = (directory / f"{stem}.json", directory / f"{stem}.md")
        texts = (json.dumps(self.to_dict(), indent=2, default=str) + "\n", self.to_markdown())
        for path, text in zip(paths, texts, strict=True):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            tmp.replace(path)
        return paths


# --- Online parity results ----------------------------------------------------


@dataclass
class FeatureParity:
    view: str
    feature: str
    dtype: str
    compared: int = 0
    matches: int = 0  # both present, exactly equal
    both_missing: int = 0  # both sides agree there is no (fresh) value
    mismatches: int = 0  # both present, different
    online_only: int = 0  # Redis has a value, offline has none
    offline_only: int = 0  # offline has a value, Redis has none
    smape_pct: float | None = None  # over pairs present on both sides, numeric features
    _smape_sum: float = field(default=0.0, repr=False)
    _smape_n: int = field(default=0, repr=False)

    @property
    def failures(self) -> int:
        return self.mismatches + self.online_only + self.offline_only

    @property
    def consistency(self) -> float | None:
        return None if not self.compared else (self.matches + self.both_missing) / self.compared

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        out["consistency"] = self.consistency
        return out


@dataclass
class ViewParity:
    view: str
    entity: str
    entities: int = 0
    online_present: int = 0
    offline_present: int = 0
    online_stale: int = 0  # Redis holds a value older than the TTL (counted as missing)
    offline_stale: int = 0
    timestamp_mismatches: int = 0  # both present, different event timestamps
    materialized_watermark: str | None = None
    features: list[FeatureParity] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return self.timestamp_mismatches + sum(f.failures for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "features"}
        out["features"] = [f.to_dict() for f in self.features]
        return out


@dataclass
class Mismatch:
    kind: str  # value | online_only | offline_only | event_timestamp
    view: str
    feature: str
    entity: dict[str, str]
    online_value: Any
    offline_value: Any
    online_event_timestamp: str | None
    offline_event_timestamp: str | None
    offline_created_timestamp: str | None


@dataclass
class OnlineParity:
    service: str
    watermark: str
    sample: int | None  # None: all entities
    entities: dict[str, int]  # join key -> entities compared
    views: list[ViewParity]
    mismatches: list[Mismatch]  # the first ones, in (view, feature, key) order
    seconds: float = 0.0
    name: str = "online"
    title: str = "Online / offline parity"

    @property
    def compared(self) -> int:
        return sum(f.compared for v in self.views for f in v.features)

    @property
    def agreeing(self) -> int:
        return sum(f.matches + f.both_missing for v in self.views for f in v.features)

    @property
    def failures(self) -> int:
        return sum(v.failures for v in self.views)

    @property
    def consistency(self) -> float | None:
        return None if not self.compared else self.agreeing / self.compared

    @property
    def passed(self) -> bool:
        return self.compared > 0 and self.failures == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "passed": self.passed,
            "service": self.service,
            "watermark": self.watermark,
            "sample": self.sample,
            "entities": self.entities,
            "values_compared": self.compared,
            "failures": self.failures,
            "consistency": self.consistency,
            "seconds": self.seconds,
            "views": [v.to_dict() for v in self.views],
            "first_mismatches": [asdict(m) for m in self.mismatches],
        }

    def to_markdown(self) -> str:
        scope = "all entities" if self.sample is None else f"a sample of {self.sample} per entity"
        ents = ", ".join(f"{n} {k}" for k, n in self.entities.items())
        rate = "n/a" if self.consistency is None else f"{self.consistency:.4%}"
        lines = [
            f"## {self.title}: service `{self.service}` at W = {self.watermark}",
            "",
            f"Online (Redis, TTL applied at W) vs offline `as_known` at ts = W, {scope} "
            f"({ents}). Values compared: {self.compared}; failures: {self.failures}; "
            f"consistency: {rate}.",
            "",
        ]
        if not self.compared:
            lines += ["**Nothing was compared**: no entities. This counts as a failure.", ""]
        lines += [
            "| view | entities | online | offline | stale on/off | ts mismatches "
            "| materialized W |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for v in self.views:
            lines.append(
                f"| {v.view} | {v.entities} | {v.online_present} | {v.offline_present} "
                f"| {v.online_stale}/{v.offline_stale} | {v.timestamp_mismatches} "
                f"| {v.materialized_watermark or '-'} |"
            )
        lines += [
            "",
            "| view | feature | compared | exact | both missing | mismatches | online-only "
            "| offline-only | SMAPE % | consistency |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for v in self.views:
            for f in v.features:
                smape = "-" if f.smape_pct is None else f"{f.smape_pct:.4f}"
                cons = "-" if f.consistency is None else f"{f.consistency:.4%}"
                lines.append(
                    f"| {f.view} | {f.feature} | {f.compared} | {f.matches} | {f.both_missing} "
                    f"| {f.mismatches} | {f.online_only} | {f.offline_only} | {smape} | {cons} |"
                )
        if self.mismatches:
            lines += [
                "",
                f"### First {len(self.mismatches)} mismatches",
                "",
                "| kind | view | feature | entity | online | offline | online ts | offline ts "
                "| offline created |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for m in self.mismatches:
                ent = ", ".join(f"{k}={v}" for k, v in m.entity.items())
                lines.append(
                    f"| {m.kind} | {m.view} | {m.feature} | {ent} | {m.online_value} "
                    f"| {m.offline_value} | {m.online_event_timestamp or '-'} "
                    f"| {m.offline_event_timestamp or '-'} | {m.offline_created_timestamp or '-'} |"
                )
        return "\n".join(lines) + "\n"


# --- The offline side: an independent point-in-time join ----------------------


@dataclass(frozen=True)
class OfflineValue:
    event_us: int
    created_us: int
    values: tuple[Any, ...]  # in view.features order


def _glob(settings: Settings, view: FeatureView) -> str:
    return str(settings.offline_view_dir(view.name) / "run-*.parquet")


def _has_data(settings: Settings, view: FeatureView) -> bool:
    return any(settings.offline_view_dir(view.name).glob("run-*.parquet"))


def offline_entities(
    settings: Settings, entity: Entity, views: Sequence[FeatureView], w_us: int
) -> set[str]:
    """Every key of ``entity`` with a row known at W in any of ``views``."""
    key = entity.join_key
    con = duckdb.connect()
    try:
        out: set[str] = set()
        for view in views:
            if not _has_data(settings, view):
                continue
            rows = con.execute(
                f"select distinct {key} from read_parquet('{_glob(settings, view)}') "
                f"where epoch_us(created_timestamp) <= {w_us}"
            ).fetchall()
            out.update(r[0] for r in rows)
        return out
    finally:
        con.close()


def offline_as_known(
    settings: Settings, view: FeatureView, keys: Sequence[str], at: datetime
) -> dict[str, OfflineValue | None]:
    """The ``as_known`` value at ``at`` per key (None: no row at or before ``at``).

    Versions created after ``at`` are invisible; among the rest, the newest
    ``created_timestamp`` per ``(entity, event_timestamp)`` wins; then an ASOF
    join picks the newest ``event_timestamp <= at``. TTL is applied by the caller.
    """
    out: dict[str, OfflineValue | None] = dict.fromkeys(keys)
    if not keys or not _has_data(settings, view):
        return out
    at_us = to_us(at)
    key = view.entity.join_key
    cols = ", ".join(f"v.{f.name}" for f in view.features)
    con = duckdb.connect()
    try:
        con.execute("set timezone = 'UTC'")
        con.execute("create temp table spine (k varchar, ts bigint)")
        con.executemany("insert into spine values (?, ?)", [(k, at_us) for k in keys])
        rows = con.execute(
            f"""
            with known as (
                select {key} as k, epoch_us(event_timestamp) as ets,
                       epoch_us(created_timestamp) as cts, *
                from read_parquet('{_glob(settings, view)}')
                where epoch_us(created_timestamp) <= {at_us}
                qualify row_number() over (
                    partition by {key}, event_timestamp order by created_timestamp desc
                ) = 1
            )
            select s.k, v.ets, v.cts, {cols}
            from spine s asof left join known v on s.k = v.k and s.ts >= v.ets
            """
        ).fetchall()
    finally:
        con.close()
    for row in rows:
        if row[1] is not None:
            out[row[0]] = OfflineValue(row[1], row[2], tuple(row[3:]))
    return out


# --- Online entities that the offline store does not know -------------------


def redis_entities(client: redis.Redis, entity: Entity) -> set[str]:
    """Keys of ``entity`` that have a Feast hash in Redis (SCAN; for ``--all``)."""
    found: set[str] = set()
    for raw in client.scan_iter(match=b"*" + FEAST_PROJECT.encode(), count=1000):
        value = entity_value(entity.join_key, raw)
        if value is not None:
            found.add(value)
    return found


# --- The check -------------------------------------------------------------------


def _sample(keys: set[str], n: int | None, seed: int) -> list[str]:
    if n is None or n >= len(keys):
        return sorted(keys)
    ranked = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).digest())
    return sorted(ranked[:n])


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        fa, fb = float(a), float(b)
        return fa == fb or (math.isnan(fa) and math.isnan(fb))
    return bool(a == b)


def _iso(micros: int | None) -> str | None:
    return None if micros is None else from_us(micros).isoformat()


def check_online(
    settings: Settings,
    service: FeatureService,
    watermark: datetime,
    sample: int | None = None,
    seed: int = 0,
    max_mismatches: int = 20,
    reader: OnlineReader | None = None,
    client: redis.Redis | None = None,
) -> OnlineParity:
    """Compare every feature of ``service`` online vs offline at ``ts = W``.

    ``sample=None`` compares every entity known offline at W plus every entity
    Redis holds a hash for; ``sample=N`` a deterministic sample of N per entity
    type. ``reader`` replaces the serving read path (tests inject broken ones).
    """
    started = time.perf_counter()
    w_us = to_us(watermark)
    if not any(_has_data(settings, v) for v in service.views):
        raise ParityError(
            f"no offline data under {settings.offline}: run `pitstore transform` first"
        )
    own_client = client is None
    client = client or redis.Redis.from_url(
        settings.redis_url, socket_timeout=10, socket_connect_timeout=2
    )
    try:
        try:
            markers: list[Any] = client.mget(  # type: ignore[assignment]
                [MARKER.format(view=v.name) for v in service.views]
            )
        except redis.exceptions.RedisError as exc:
            raise ParityError(f"Redis at {settings.redis_url} is unreachable: {exc}") from exc
        materialized = {
            v.name: (None if m is None else _iso(int(m)))
            for v, m in zip(service.views, markers, strict=True)
        }
        entities: dict[str, int] = {}
        views_out: list[ViewParity] = []
        mismatches: list[Mismatch] = []
        by_entity: dict[str, list[FeatureView]] = {}
        for v in service.views:
            by_entity.setdefault(v.entity.join_key, []).append(v)
        for join_key, views in by_entity.items():
            entity = views[0].entity
            universe = offline_entities(settings, entity, views, w_us)
            if sample is None:
                universe |= redis_entities(client, entity)
            keys = _sample(universe, sample, seed)
            entities[join_key] = len(keys)
            view_reader = reader or OnlineReader(service, views=views)
            view_reader = _restricted(view_reader, service, views)
            online_rows: list[OnlineRow] = []
            for i in range(0, len(keys), 1000):
                chunk = [{join_key: k} for k in keys[i : i + 1000]]
                online_rows.extend(view_reader.read(client, chunk, watermark))
            for view in views:
                offline = offline_as_known(settings, view, keys, watermark)
                vp = _compare_view(view, keys, online_rows, offline, w_us, mismatches)
                vp.materialized_watermark = materialized[view.name]
                views_out.append(vp)
    finally:
        if own_client:
            client.close()
    mismatches.sort(key=lambda m: (m.view, m.feature, tuple(m.entity.values())))
    return OnlineParity(
        service=service.name,
        watermark=watermark.isoformat(),
        sample=sample,
        entities=entities,
        views=views_out,
        mismatches=mismatches[:max_mismatches],
        seconds=round(time.perf_counter() - started, 3),
    )


def _restricted(
    reader: OnlineReader, service: FeatureService, views: list[FeatureView]
) -> OnlineReader:
    """The same reader (same TTLs) limited to one entity type's views."""
    if [v.name for v in reader.views] == [v.name for v in views]:
        return reader
    return OnlineReader(service, views=views, ttls={v.name: reader.ttls[v.name] for v in views})


def _compare_view(
    view: FeatureView,
    keys: list[str],
    online_rows: list[OnlineRow],
    offline: dict[str, OfflineValue | None],
    w_us: int,
    mismatches: list[Mismatch],
) -> ViewParity:
    join_key = view.entity.join_key
    ttl_us = td_us(view.ttl)
    feats = [FeatureParity(view.name, f.name, f.dtype) for f in view.features]
    names = view.columns
    vp = ViewParity(view.name, view.entity.name, entities=len(keys), features=feats)
    for key, row in zip(keys, online_rows, strict=True):
        read = row.views[view.name]
        on_ts = None if read.event_timestamp is None else to_us(read.event_timestamp)
        vp.online_stale += read.stale
        on_present = not read.missing
        off = offline[key]
        off_present = off is not None and w_us - off.event_us <= ttl_us
        vp.offline_stale += off is not None and not off_present
        vp.online_present += on_present
        vp.offline_present += off_present

        def record(
            kind: str,
            feature: str,
            on_val: Any,
            off_val: Any,
            key: str = key,
            on_ts: int | None = on_ts,
            off: OfflineValue | None = off,
        ) -> None:
            mismatches.append(
                Mismatch(
                    kind=kind,
                    view=view.name,
                    feature=feature,
                    entity={join_key: key},
                    online_value=on_val,
                    offline_value=off_val,
                    online_event_timestamp=_iso(on_ts),
                    offline_event_timestamp=None if off is None else _iso(off.event_us),
                    offline_created_timestamp=None if off is None else _iso(off.created_us),
                )
            )

        if on_present and off_present and off is not None and on_ts != off.event_us:
            vp.timestamp_mismatches += 1
            record("event_timestamp", "event_timestamp", _iso(on_ts), _iso(off.event_us))
        for i, fp in enumerate(feats):
            on_val = row.values[names[i]] if on_present else None
            off_val = off.values[i] if (off_present and off is not None) else None
            fp.compared += 1
            if on_val is None and off_val is None:
                fp.both_missing += 1
            elif off_val is None:
                fp.online_only += 1
                record("online_only", fp.feature, on_val, None)
            elif on_val is None:
                fp.offline_only += 1
                record("offline_only", fp.feature, None, off_val)
            else:
                a, b = float(on_val), float(off_val)
                denom = (abs(a) + abs(b)) / 2
                fp._smape_sum += 0.0 if denom == 0 else abs(a - b) / denom
                fp._smape_n += 1
                if _equal(on_val, off_val):
                    fp.matches += 1
                else:
                    fp.mismatches += 1
                    record("value", fp.feature, on_val, off_val)
    for fp in feats:
        fp.smape_pct = None if not fp._smape_n else 100.0 * fp._smape_sum / fp._smape_n
    return vp


def report_stem(service: str, watermark: datetime) -> str:
    return f"parity-online-{service}-{stamp(watermark)}"
