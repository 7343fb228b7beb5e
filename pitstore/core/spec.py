"""The feature spec: the single source of truth for every aggregate pitstore computes.

dbt SQL (``pitstore.render_sql``), the Spark job and the Feast ``Field``s are all
derived from the objects declared here, in the spirit of Chronon's
``Aggregation(..., windows=[...])``: declare once, compute everywhere.

Semantics (see DESIGN.md): a view holds, per entity and per boundary ``T`` on
its cadence grid, aggregates over the events with ``T - window <= event_ts < T``
that were known at the run's watermark ``W``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Literal

AggFunction = Literal[
    "count",  # number of events in the window
    "sum",  # exact integer sum (amounts are integer cents)
    "max",  # largest value, 0 when the window is empty
    "mean",  # sum / count as float64, 0.0 when the window is empty
    "count_distinct",  # distinct non-null values of the input column
    "share",  # events whose boolean input is true / count, 0.0 when empty
    "fraud_count",  # events carrying a fraud label known at both T and W
    "fraud_rate",  # fraud_count / count, 0.0 when empty
    # Population standard deviation of the non-null values of the input, from
    # exact integer sums (so both engines round identically); 0.0 when empty.
    "stddev",
    # Distinct UTC calendar days with at least one event whose boolean input is true.
    "days_with",
]
# Where a view's events come from: a landing dataset, deduplicated.
Source = Literal["transactions", "ledger"]
DType = Literal["int64", "float64"]

# The bank's home country: a transaction elsewhere is "foreign".
HOME_COUNTRY = "GB"
# Channels where the card is not physically present.
CARD_NOT_PRESENT_CHANNELS = ("ecom",)

_FLOAT_FUNCTIONS = {"mean", "share", "fraud_rate", "stddev"}


def window_label(window: timedelta) -> str:
    """``timedelta(hours=1)`` -> ``"1h"``, ``24h`` -> ``"24h"``, ``30 days`` -> ``"30d"``."""
    seconds = int(window.total_seconds())
    if seconds % 86400 == 0 and seconds > 86400:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


@dataclass(frozen=True)
class Entity:
    name: str
    join_key: str
    description: str


@dataclass(frozen=True)
class Aggregation:
    """One aggregation over one input, computed for each of several windows."""

    name: str
    function: AggFunction
    input: str | None
    windows: tuple[timedelta, ...]
    description: str

    @property
    def dtype(self) -> DType:
        return "float64" if self.function in _FLOAT_FUNCTIONS else "int64"

    def features(self) -> list[Feature]:
        return [
            Feature(
                name=f"{self.name}_{window_label(w)}",
                aggregation=self,
                window=w,
                description=f"{self.description} over the last {window_label(w)}",
            )
            for w in self.windows
        ]


# The one place a frame / online-row column for a view's feature is named. Feast
# names joined columns the same way (``full_feature_names=True``).
COLUMN_SEP = "__"


def feature_column(view_name: str, feature_name: str) -> str:
    """``<view>__<feature>``: the column name of a feature in frames and online rows."""
    return f"{view_name}{COLUMN_SEP}{feature_name}"


def split_feature_column(column: str) -> tuple[str, str] | None:
    """``(view, feature)`` of a column made by :func:`feature_column`, else None."""
    view_name, sep, feature_name = column.partition(COLUMN_SEP)
    return (view_name, feature_name) if sep and view_name and feature_name else None


@dataclass(frozen=True)
class Feature:
    name: str
    aggregation: Aggregation
    window: timedelta
    description: str

    @property
    def dtype(self) -> DType:
        return self.aggregation.dtype


@dataclass(frozen=True)
class FeatureView:
    name: str
    entity: Entity
    cadence: timedelta
    aggregations: tuple[Aggregation, ...]
    description: str
    tags: dict[str, str] = field(default_factory=dict)
    source: Source = "transactions"

    @cached_property  # the spec is static; the scoring hot path reads this per request
    def features(self) -> list[Feature]:
        return [f for agg in self.aggregations for f in agg.features()]

    def column(self, feature: str | Feature) -> str:
        """The frame / online-row column of one of this view's features."""
        return feature_column(self.name, feature if isinstance(feature, str) else feature.name)

    @cached_property
    def columns(self) -> list[str]:
        return [self.column(f) for f in self.features]

    @property
    def windows(self) -> list[timedelta]:
        return sorted({w for agg in self.aggregations for w in agg.windows})

    @property
    def max_window(self) -> timedelta:
        return max(self.windows)

    @property
    def ttl(self) -> timedelta:
        # DESIGN: TTL >= longest window + one cadence, so that no valid value
        # (the newest sparse row is at most that old while a window is non-empty,
        # and the all-zero row is written at the boundary where it empties)
        # ever counts as stale. A zero row older than this is "missing".
        # Rounded up to whole days: Feast 0.67's DuckDB offline store turns the
        # TTL into an ibis interval literal, which fails on mixed units (25h =
        # 1 day + 3600 s). A longer TTL is allowed by DESIGN ("at least").
        needed = self.max_window + self.cadence
        return timedelta(days=-(-needed // timedelta(days=1)))

    @property
    def uses_labels(self) -> bool:
        return any(a.function in ("fraud_count", "fraud_rate") for a in self.aggregations)

    def validate(self) -> None:
        names = [f.name for f in self.features]
        if len(names) != len(set(names)):
            raise ValueError(f"view {self.name}: duplicate feature names {names}")
        if self.uses_labels and self.source != "transactions":
            raise ValueError(f"view {self.name}: fraud labels join transactions only")
        for w in self.windows:
            if w % self.cadence:
                raise ValueError(
                    f"view {self.name}: window {w} is not a multiple of cadence {self.cadence}"
                )


@dataclass(frozen=True)
class FeatureService:
    """A model version's features: the same object drives training and serving."""

    name: str
    views: tuple[FeatureView, ...]
    description: str

    @property
    def columns(self) -> list[str]:
        """Every feature column this service serves, in view then feature order."""
        return [c for v in self.views for c in v.columns]


# --- Entities ---------------------------------------------------------------

ACCOUNT = Entity("account", "account_id", "A customer's current account (card holder).")
MERCHANT = Entity("merchant", "merchant_id", "A card acceptor, as identified by the acquirer.")

# --- Inputs -----------------------------------------------------------------
# Derived boolean inputs: computed once in staging from raw columns, as SQL that
# both DuckDB and Spark SQL evaluate identically.
DERIVED_INPUTS: dict[str, str] = {
    "is_foreign": f"(country <> '{HOME_COUNTRY}')",
    "is_card_not_present": "(channel in ({}))".format(
        ", ".join(f"'{c}'" for c in CARD_NOT_PRESENT_CHANNELS)
    ),
}
# The ledger's derived inputs, over its staged columns (``event_type``, and
# ``amount`` / ``balance`` as bigint minor units). An amount input is null for
# events of another kind, so ``sum`` and ``stddev`` see only the kind they name.
LEDGER_DERIVED_INPUTS: dict[str, str] = {
    "inflow_amount": "(case when event_type in ('salary', 'credit') then amount end)",
    "is_salary": "(event_type = 'salary')",
    "outflow_amount": "(case when event_type in ('direct_debit', 'overdraft_fee') then amount end)",
    "is_overdrawn": "(event_type = 'balance_snapshot' and balance < 0)",
    "overdraft_fee_amount": "(case when event_type = 'overdraft_fee' then amount end)",
    # An integer 0/1: the view sums it.
    "is_missed_payment": (
        "(case when event_type in ('missed_payment', 'returned_payment') then 1 else 0 end)"
    ),
}
# Per source: the derived inputs its staging computes (``balance`` is a staged column).
DERIVED_INPUTS_BY_SOURCE: dict[str, dict[str, str]] = {
    "transactions": DERIVED_INPUTS,
    "ledger": LEDGER_DERIVED_INPUTS,
}

H1, H24 = timedelta(hours=1), timedelta(hours=24)
D1, D7, D30 = timedelta(days=1), timedelta(days=7), timedelta(days=30)

ACCOUNT_HOURLY = FeatureView(
    name="account_hourly",
    entity=ACCOUNT,
    cadence=H1,
    description="Short-term account velocity, for card-testing bursts and takeovers.",
    aggregations=(
        Aggregation("txn_count", "count", None, (H1, H24), "Number of transactions"),
        Aggregation("amount_sum", "sum", "amount", (H1, H24), "Total amount in minor units"),
        Aggregation("amount_max", "max", "amount", (H1, H24), "Largest amount in minor units"),
        Aggregation(
            "distinct_merchants", "count_distinct", "merchant_id", (H24,), "Distinct merchants"
        ),
    ),
)

ACCOUNT_DAILY = FeatureView(
    name="account_daily",
    entity=ACCOUNT,
    cadence=D1,
    description="Longer-term account behaviour: the baseline a fraud deviates from.",
    aggregations=(
        Aggregation("txn_count", "count", None, (D7, D30), "Number of transactions"),
        Aggregation("amount_sum", "sum", "amount", (D7, D30), "Total amount in minor units"),
        Aggregation("amount_mean", "mean", "amount", (D7, D30), "Mean amount in minor units"),
        Aggregation("amount_max", "max", "amount", (D7, D30), "Largest amount in minor units"),
        Aggregation(
            "distinct_merchants", "count_distinct", "merchant_id", (D30,), "Distinct merchants"
        ),
        Aggregation(
            "distinct_countries", "count_distinct", "country", (D30,), "Distinct countries"
        ),
        Aggregation("foreign_share", "share", "is_foreign", (D30,), "Share of foreign txns"),
        Aggregation(
            "card_not_present_share",
            "share",
            "is_card_not_present",
            (D30,),
            "Share of card-not-present transactions",
        ),
    ),
)

MERCHANT_DAILY = FeatureView(
    name="merchant_daily",
    entity=MERCHANT,
    cadence=D1,
    description="Merchant risk: volume and chargebacks known at the boundary.",
    aggregations=(
        Aggregation("txn_count", "count", None, (D7, D30), "Number of transactions"),
        Aggregation("amount_sum", "sum", "amount", (D7,), "Total amount in minor units"),
        Aggregation(
            "chargeback_count",
            "fraud_count",
            None,
            (D30,),
            "Transactions with a fraud label known at the boundary",
        ),
        Aggregation(
            "chargeback_rate",
            "fraud_rate",
            None,
            (D30,),
            "Share of transactions with a fraud label known at the boundary",
        ),
    ),
)

# Credit: account behaviour from the ledger (salary and other credits, direct
# debits, overdraft fees, missed and returned payments, end-of-day balances).
# Derived ledger inputs (``inflow_amount``, ``is_salary``, ...) are computed in
# the ledger staging; see the ledger's entries in the derived inputs.
D90, D180 = timedelta(days=90), timedelta(days=180)
ACCOUNT_LEDGER_DAILY = FeatureView(
    name="account_ledger_daily",
    entity=ACCOUNT,
    cadence=D1,
    source="ledger",
    description="Account cash-flow behaviour: income, its regularity, overdraft and arrears.",
    aggregations=(
        Aggregation("inflow_sum", "sum", "inflow_amount", (D90,), "Salary and other credits"),
        Aggregation("inflow_stddev", "stddev", "inflow_amount", (D90,), "Spread of credits"),
        Aggregation("salary_days", "days_with", "is_salary", (D90,), "Days a salary came in"),
        Aggregation("outflow_sum", "sum", "outflow_amount", (D90,), "Direct debits and fees"),
        Aggregation("overdraft_days", "days_with", "is_overdrawn", (D90,), "Days ending overdrawn"),
        Aggregation(
            "overdraft_fee_sum", "sum", "overdraft_fee_amount", (D90,), "Overdraft fees charged"
        ),
        Aggregation(
            "missed_payments",
            "sum",
            "is_missed_payment",
            (D90, D180),
            "Missed or returned payments",
        ),
        Aggregation(
            "balance_stddev", "stddev", "balance", (D90,), "Volatility of end-of-day balances"
        ),
    ),
)

FEATURE_VIEWS: tuple[FeatureView, ...] = (
    ACCOUNT_HOURLY,
    ACCOUNT_DAILY,
    MERCHANT_DAILY,
    ACCOUNT_LEDGER_DAILY,
)
ENTITIES: tuple[Entity, ...] = (ACCOUNT, MERCHANT)

FRAUD_V1 = FeatureService(
    name="fraud_v1",
    views=(ACCOUNT_HOURLY, ACCOUNT_DAILY, MERCHANT_DAILY),
    description="Card fraud model v1: account velocity, account baseline, merchant risk.",
)
# Credit pre-screening v1: the account's cash flow and arrears from the ledger.
# Not the card-spend views: a PD model learns from applications a year and more
# old, and a bank's ledger history reaches back that far where its card feed
# (here, as often, a later system) may not: an input missing in every training
# row cannot inform the PD.
CREDIT_V1 = FeatureService(
    name="credit_v1",
    views=(ACCOUNT_LEDGER_DAILY,),
    description="Credit pre-screening PD model v1: cash flow, income regularity and arrears.",
)
FEATURE_SERVICES: tuple[FeatureService, ...] = (FRAUD_V1, CREDIT_V1)

for _view in FEATURE_VIEWS:
    _view.validate()


def view_by_name(name: str) -> FeatureView:
    for view in FEATURE_VIEWS:
        if view.name == name:
            return view
    known = ", ".join(v.name for v in FEATURE_VIEWS)
    raise KeyError(f"unknown feature view {name!r}; known views: {known}")


def service_by_name(name: str) -> FeatureService:
    for service in FEATURE_SERVICES:
        if service.name == name:
            return service
    known = ", ".join(s.name for s in FEATURE_SERVICES)
    raise KeyError(f"unknown feature service {name!r}; known services: {known}")


def spec_fingerprint(views: tuple[FeatureView, ...] = FEATURE_VIEWS) -> str:
    """A stable hash of the definitions: changes whenever a feature's meaning does."""
    payload = [
        {
            "view": v.name,
            "entity": v.entity.join_key,
            "cadence_s": v.cadence.total_seconds(),
            "ttl_s": v.ttl.total_seconds(),
            "features": [
                [f.name, f.aggregation.function, f.aggregation.input, f.window.total_seconds()]
                for f in v.features
            ],
        }
        for v in views
    ]
    # The derived inputs of the views' sources only: a fraud service's fingerprint
    # does not change when a ledger input is redefined.
    sources = sorted({v.source for v in views})
    derived = DERIVED_INPUTS
    if sources != ["transactions"]:
        derived = {n: e for s in sources for n, e in DERIVED_INPUTS_BY_SOURCE[s].items()}
    blob = json.dumps([payload, derived], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
