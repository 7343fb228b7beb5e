"""Loan applications and whether they default: the credit world's documented mechanism.

Applications are drawn per customer over the world's span once the ledger has
180 days of history, more often when the customer's latent stress is high
(credit-hungry customers apply more: adverse selection). Whether a booked loan
defaults (90+ days past due within 12 months) is a logistic draw:

    P(default) = sigmoid(INTERCEPT + sum_k COEFFICIENTS[k] * x_k)

with the inputs ``x_k`` (behaviour measured on the ledger events dated in the
90 or 180 days up to the application, as the credit features see them):

- ``missed_180``: missed and returned payments in 180 days (capped at 6)
- ``overdraft_days_90``: days ending overdrawn in 90 days (capped at 20)
- ``salary_regularity``: days with a salary in 90 days, capped at 3, divided by 3
- ``outflow_ratio``: outflows / inflows in 90 days, minus 1, clipped to [-0.5, 1]
- ``debt_to_income``: 12 x existing monthly debt / stated annual income (capped at 1)
- ``payment_to_income``: 12 x the new loan's monthly payment / stated income (capped at 0.6)
- ``age_years``: applicant age minus 18, capped at 52
- ``employment_years``: employment months / 12, capped at 10
- ``recent_default``: 1 if the bureau shows a default in the last 24 months
- ``future_stress``: the customer's latent stress 180 days after applying, which
  no feature can see: the irreducible part of credit risk.
"""

from __future__ import annotations

import numpy as np

from pitstore.synth import credit_world as cw
from pitstore.synth.credit_world import Profiles, sigmoid
from pitstore.synth.generate_fraud import US_PER_DAY, US_PER_H

INTERCEPT = -3.75
COEFFICIENTS = {
    "missed_180": 0.30,
    "overdraft_days_90": 0.05,
    "salary_regularity": -0.60,
    "outflow_ratio": 1.00,
    "debt_to_income": 1.50,
    "payment_to_income": 2.50,
    "age_years": -0.015,
    "employment_years": -0.06,
    "recent_default": 0.70,
    "future_stress": 0.45,
}
TERMS = np.array([12, 24, 36, 48, 60])
PURPOSES = ("debt_consolidation", "home_improvement", "car", "holiday", "wedding", "other")
_PURPOSE_P = np.array([0.30, 0.22, 0.22, 0.10, 0.04, 0.12])
MIN_HISTORY_DAYS = 180
PERFORMANCE_DAYS = 365  # the outcome window: 12 months, counted as 365 days
_MONTHLY_RATE = 0.01  # ~12.7% APR: the repayment the new loan would add
_DAY_S = 86_400


def draw_applications(
    rng: np.random.Generator, p: Profiles, n_days: int, per_year: float
) -> dict[str, np.ndarray]:
    """Applications in days [MIN_HISTORY_DAYS, n_days), sorted by time then account."""
    n = p.net.size
    window = max(n_days - MIN_HISTORY_DAYS, 0)
    # Propose at twice the rate, keep with a stress-driven probability that
    # averages one half: the mean rate is `per_year`, tilted to stressed customers.
    proposed = rng.poisson(2.0 * per_year * window / 365.0, n)
    cust = np.repeat(np.arange(n), proposed)
    day = MIN_HISTORY_DAYS + rng.integers(0, max(window, 1), cust.size)
    tilt = np.exp(0.5 * np.clip(p.stress(cust, day.astype(float)), -2.0, 4.0))
    keep = rng.random(cust.size) < np.minimum(0.5 * tilt / max(tilt.mean(), 1e-9), 1.0)
    cust, day = cust[keep], day[keep]
    m = cust.size
    event_us = day * US_PER_DAY + (rng.uniform(8.0, 23.0, m) * US_PER_H).astype(np.int64)
    order = np.lexsort((cust, event_us))
    cust, day, event_us = cust[order], day[order], event_us[order]
    years = day / 365.25
    stress = p.stress(cust, day.astype(float))
    amount = np.exp(
        np.log(600_000) + 0.5 * np.log(p.gross[cust] / 3_200_000) + 0.6 * rng.normal(size=m)
    )
    amount = np.round(np.clip(amount, 100_000, 3_500_000), -4)
    term_i = rng.choice(5, m, p=[0.15, 0.25, 0.30, 0.15, 0.15]) + (amount > 1_500_000)
    # People round their income up, irregular earners more so.
    overstate = np.abs(rng.normal(0, np.where(p.employ[cust] == cw.IRREGULAR, 0.2, 0.08)))
    purpose_p = np.tile(_PURPOSE_P, (m, 1))
    purpose_p[:, 0] *= np.exp(0.4 * np.clip(stress, 0, 3))  # stress: consolidate debt
    purpose = (
        rng.random(m)[:, None] > np.cumsum(purpose_p / purpose_p.sum(1, keepdims=True), 1)[:, :-1]
    ).sum(1)
    since = np.floor((day - p.bureau_default[cust]) / 30.44)
    return {
        "account": cust,
        "event_us": event_us,
        "age": np.floor(p.age0[cust] + years).astype(np.int64),
        "amount": amount,
        "term": TERMS[np.minimum(term_i, 4)],
        "stated_income": np.round(p.gross[cust] * np.exp(overstate), -4),
        "employment": np.where(
            p.employ[cust] == cw.BENEFITS, 0, p.employment0[cust] + np.floor(years * 12)
        ).astype(np.int64),
        "existing_debt": np.round(p.repayment[cust] * (1 + 0.05 * rng.normal(size=m))),
        "purpose": purpose,
        "region": p.region[cust],
        # null (-1) when no default on file yet
        "months_since_default": np.where(np.isnan(since) | (since < 0), -1, since).astype(np.int64),
        "future_stress": p.stress(cust, day + 180.0),
    }


def behaviour(
    ledger: dict[str, np.ndarray], account: np.ndarray, at_us: np.ndarray
) -> dict[str, np.ndarray]:
    """Ledger behaviour of each (account, time) over the 90 / 180 days up to it.

    ``ledger`` is simulate_ledger's output (event_us from the world's start).
    """
    span_s = (
        int(max(ledger["event_us"].max(initial=0), at_us.max(initial=0)) // 1_000_000)
        + 400 * _DAY_S
    )
    order = np.lexsort((ledger["event_us"], ledger["account"]))
    acc, us, kind = ledger["account"][order], ledger["event_us"][order], ledger["kind"][order]
    amount, balance = ledger["amount"][order], ledger["balance"][order]
    key = acc * span_s + us // 1_000_000
    day = us // US_PER_DAY
    # days with a salary: the first salary of each (account, day)
    sal = np.flatnonzero(kind == cw.SALARY)
    new_day = np.r_[True, (acc[sal][1:] != acc[sal][:-1]) | (day[sal][1:] != day[sal][:-1])]
    first_salary = np.zeros(kind.size, bool)
    first_salary[sal[new_day]] = True
    signals = {
        "missed": np.isin(kind, (cw.MISSED, cw.RETURNED)),
        "overdrawn": (kind == cw.SNAPSHOT) & (balance < 0),
        "salary_days": first_salary,
        "inflow": np.where(np.isin(kind, cw.INFLOWS), amount, 0),
        "outflow": np.where(np.isin(kind, cw.OUTFLOWS), amount, 0),
    }
    end = np.searchsorted(key, account * span_s + at_us // 1_000_000, side="right")
    out = {}
    for name, x in signals.items():
        cum = np.r_[0, np.cumsum(x)]
        for days in (90, 180):
            lo = np.searchsorted(
                key, account * span_s + at_us // 1_000_000 - days * _DAY_S, side="right"
            )
            out[f"{name}_{days}"] = cum[end] - cum[lo]
    return out


def monthly_payment(amount: np.ndarray, term: np.ndarray) -> np.ndarray:
    r = _MONTHLY_RATE
    return amount * r / (1 - (1 + r) ** -term.astype(float))


def default_inputs(app: dict[str, np.ndarray], beh: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The mechanism's inputs x_k (see the module docstring)."""
    income = np.maximum(app["stated_income"], 1.0)
    return {
        "missed_180": np.minimum(beh["missed_180"], 6),
        "overdraft_days_90": np.minimum(beh["overdrawn_90"], 20),
        "salary_regularity": np.minimum(beh["salary_days_90"], 3) / 3,
        "outflow_ratio": np.clip(
            beh["outflow_90"] / np.maximum(beh["inflow_90"], 1.0) - 1, -0.5, 1.0
        ),
        "debt_to_income": np.minimum(12 * app["existing_debt"] / income, 1.0),
        "payment_to_income": np.minimum(
            12 * monthly_payment(app["amount"], app["term"]) / income, 0.6
        ),
        "age_years": np.clip(app["age"] - 18, 0, 52),
        "employment_years": np.minimum(app["employment"] / 12, 10.0),
        "recent_default": (
            (app["months_since_default"] >= 0) & (app["months_since_default"] <= 24)
        ).astype(float),
        "future_stress": app["future_stress"],
    }


def outcomes(
    rng: np.random.Generator, app: dict[str, np.ndarray], beh: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per application: booked, defaulted, pd and label_us (from the world's start).

    Applicants under 18 are declined, so never booked and never labelled.
    """
    x = default_inputs(app, beh)
    logit = np.full(app["account"].size, INTERCEPT)
    for name, coefficient in COEFFICIENTS.items():
        logit += coefficient * x[name]
    pd_ = sigmoid(logit)
    m = pd_.size
    defaulted = rng.random(m) < pd_
    # 90 days past due can only happen from the fourth month on.
    default_days = rng.uniform(120.0, PERFORMANCE_DAYS, m)
    delay = np.where(defaulted, default_days, PERFORMANCE_DAYS) * US_PER_DAY
    return {
        "booked": app["age"] >= 18,
        "defaulted": defaulted,
        "pd": pd_,
        "label_us": app["event_us"] + delay.astype(np.int64),
    }
