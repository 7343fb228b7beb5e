"""The synthetic credit world: customer profiles and their account ledger (pure numpy).

Every card account of the fraud world is also a current-account customer with
a latent financial profile: an employment type (salaried, irregular earner,
benefits or pension), an income, a spending pressure (the share of net income
committed to direct debits) and a hidden *stress* that, for some customers,
rises from a day on (a job loss, a debt spiral). The profile drives the ledger
below and, in `credit_outcomes`, whether a loan defaults: the ledger features
carry signal because both come from the same latent state.

The ledger is simulated month by month (vectorised over customers): inflows,
direct debits, missed loan repayments, bounced direct debits and overdraft
fees, with a running balance. Only flows move the balance: ``salary`` and
``credit`` add, ``direct_debit`` and ``overdraft_fee`` subtract;
``missed_payment`` and ``returned_payment`` record a payment that did not
leave. A ``balance_snapshot`` (the end-of-day balance) is written on each day
the account had any other ledger event, not every day: it keeps volumes small,
and a day without events has the balance of the last snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pitstore.landing.schema import LEDGER_EVENT_TYPES
from pitstore.synth.generate_fraud import US_PER_DAY, US_PER_H

SALARY, CREDIT, DIRECT_DEBIT, OVERDRAFT_FEE, MISSED, RETURNED, SNAPSHOT = (
    LEDGER_EVENT_TYPES.index(t)
    for t in (
        "salary",
        "credit",
        "direct_debit",
        "overdraft_fee",
        "missed_payment",
        "returned_payment",
        "balance_snapshot",
    )
)
INFLOWS = (SALARY, CREDIT)
OUTFLOWS = (DIRECT_DEBIT, OVERDRAFT_FEE)
SALARIED, IRREGULAR, BENEFITS = 0, 1, 2
_EMPLOY_P = np.array([0.72, 0.20, 0.08])
# Coarse UK regions (ITL1) with rough population weights.
REGIONS = (
    "London",
    "South East",
    "South West",
    "East of England",
    "West Midlands",
    "East Midlands",
    "Yorkshire and The Humber",
    "North West",
    "North East",
    "Wales",
    "Scotland",
    "Northern Ireland",
)
_REGION_P = np.array([13.4, 13.8, 8.5, 9.4, 8.9, 7.3, 8.2, 11.0, 4.0, 4.7, 8.1, 2.7])
_DD_SLOTS = 3  # up to three household direct debits besides a loan repayment
_FEE_PER_DAY = 300  # overdraft fee: 3.00 per day ending overdrawn...
_FEE_CAP = 8_000  # ...plus 1% of the deepest balance, at most 80.00 a month


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Profiles:
    """One row per customer (index = account number); amounts in minor units."""

    employ: np.ndarray
    gross: np.ndarray  # annual gross income
    net: np.ndarray  # expected monthly net inflow
    pressure: np.ndarray  # share of net income committed to direct debits
    s0: np.ndarray  # baseline stress
    onset: np.ndarray  # day (from the world's start) a stress episode begins
    ramp: np.ndarray  # days the episode takes to reach its magnitude
    magnitude: np.ndarray  # 0 for customers without an episode
    payday: np.ndarray  # day of month (0-based) of the salary / benefit credit
    dd_day: np.ndarray  # (n, _DD_SLOTS) day of month of each direct debit
    dd_share: np.ndarray  # (n, _DD_SLOTS) share of the committed outflow
    repayment: np.ndarray  # monthly repayment on existing credit (0: none)
    repayment_day: np.ndarray
    limit: np.ndarray  # arranged overdraft limit (a direct debit past it bounces)
    balance0: np.ndarray
    age0: np.ndarray  # age in years at the world's start
    employment0: np.ndarray  # months in the current job at the world's start
    region: np.ndarray
    bureau_default: np.ndarray  # day of a default on other credit (nan: none)

    def stress(self, who: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Latent stress of customers `who` on `day` (days from the world's start)."""
        rise = np.clip((day - self.onset[who]) / self.ramp[who], 0.0, 1.0)
        return self.s0[who] + self.magnitude[who] * rise


def draw_profiles(rng: np.random.Generator, n: int, n_days: int) -> Profiles:
    employ = rng.choice(3, n, p=_EMPLOY_P)
    median = np.where(employ == BENEFITS, 1_300_000, 3_200_000)
    gross = np.clip(np.exp(np.log(median) + 0.5 * rng.normal(size=n)), 900_000, 25_000_000)
    gross = np.round(gross, -2)
    net = np.round(gross * 0.76 / 12)
    s0 = 0.6 * rng.normal(size=n)
    episode = rng.random(n) < 0.30
    magnitude = np.where(episode, rng.uniform(1.5, 3.5, n), 0.0)
    has_credit = rng.random(n) < 0.45
    shares = rng.dirichlet(np.array([6.0, 2.0, 1.5]), n)
    shares[rng.random(n) < 0.5, 2] = 0.0  # half the customers have two direct debits
    shares /= shares.sum(axis=1, keepdims=True)
    payday = rng.choice(np.array([14, 24, 25, 26, 27]), n, p=[0.1, 0.2, 0.3, 0.2, 0.2])
    # Direct debits cluster on a few days (rent on the 1st): fewer active days.
    dd_day = rng.choice(np.array([0, 0, 4, 14, 27]), size=(n, _DD_SLOTS))
    dd_day[:, 0] = 0
    arranged = rng.random(n) < 0.85
    limit = np.where(arranged, np.round(np.minimum(net * 0.8, 250_000), -3), 0.0)
    age0 = np.where(rng.random(n) < 0.015, rng.uniform(15.0, 17.0, n), 18 + 55 * rng.beta(2, 3, n))
    tenure = rng.exponential(np.where(employ == SALARIED, 60.0, 30.0))
    employment0 = np.where(employ == BENEFITS, 0, np.minimum(tenure, (age0 - 16) * 12).clip(0))
    onset = rng.uniform(-180.0, n_days, n)
    ramp = rng.uniform(60.0, 300.0, n)
    # Defaults on other credit: more likely for customers whose stress rises,
    # some months into the episode; others at any time in the past six years.
    has_default = rng.random(n) < np.where(episode, 0.25, 0.06)
    default_day = np.where(
        episode, onset + rng.uniform(60.0, 400.0, n), rng.uniform(-6 * 365.0, n_days, n)
    )
    return Profiles(
        employ=employ,
        gross=gross,
        net=net,
        pressure=np.clip(0.80 + 0.10 * rng.normal(size=n), 0.55, 1.10),
        s0=s0,
        onset=onset,
        ramp=ramp,
        magnitude=magnitude,
        payday=payday,
        dd_day=dd_day,
        dd_share=shares,
        repayment=np.where(has_credit, np.round(net * rng.uniform(0.05, 0.25, n)), 0.0),
        repayment_day=rng.choice(np.array([0, 4, 14, 27]), n),
        limit=limit,
        balance0=np.round(net * rng.uniform(-0.2, 1.5, n)),
        age0=age0,
        employment0=np.floor(employment0).astype(np.int64),
        region=rng.choice(len(REGIONS), n, p=_REGION_P / _REGION_P.sum()),
        bureau_default=np.where(has_default, default_day, np.nan),
    )


def _group_cumsum(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each run of equal `group` values (sorted)."""
    total = np.cumsum(values)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    lengths = np.diff(np.r_[starts, values.size])
    return total - np.repeat(total[starts] - values[starts], lengths)


def _month_flows(
    rng: np.random.Generator, p: Profiles, dim: int, stress: np.ndarray, balance: np.ndarray
) -> dict[str, np.ndarray]:
    """One calendar month's flows (no fees, no bounces yet), unordered."""
    n = p.net.size
    who = np.arange(n)
    cust, kind, amount, day, hour = [], [], [], [], []

    def add(c: np.ndarray, k: np.ndarray | int, a: np.ndarray, d: np.ndarray, h: tuple) -> None:
        cust.append(c)
        kind.append(np.broadcast_to(k, c.shape))
        amount.append(np.round(a))
        day.append(np.minimum(d, dim - 1))
        hour.append(rng.uniform(h[0], h[1], c.size))

    # Salaries: a stressed salaried customer sometimes has a month without one.
    sal = who[(p.employ == SALARIED) & (rng.random(n) >= sigmoid(-5.0 + stress))]
    add(sal, SALARY, p.net[sal] * (1 + 0.03 * rng.normal(size=sal.size)), p.payday[sal], (1, 6))
    ben = who[p.employ == BENEFITS]
    add(ben, CREDIT, p.net[ben], p.payday[ben], (1, 6))
    # Irregular earners: 0-5 payments a month of varying size, some via payroll.
    irr = who[p.employ == IRREGULAR]
    k = rng.poisson(2.0 * np.exp(-0.3 * np.maximum(stress[irr], 0)))
    c = np.repeat(irr, k)
    a = p.net[c] / 2 * np.exp(rng.normal(-0.18, 0.6, c.size))
    add(
        c,
        np.where(rng.random(c.size) < 0.4, SALARY, CREDIT),
        a,
        rng.integers(0, dim, c.size),
        (1, 6),
    )
    # Other credits: transfers in, refunds.
    c = np.repeat(who, rng.poisson(0.35, n))
    add(
        c,
        CREDIT,
        np.exp(rng.normal(np.log(6000), 1.0, c.size)),
        rng.integers(0, dim, c.size),
        (8, 22),
    )
    # Household direct debits: the committed share of income, higher under stress.
    # A customer with a large balance spends part of it (the second debit, a
    # card bill, grows): balances stay bounded without extra events.
    committed = np.maximum(
        p.net * (p.pressure + 0.10 * np.maximum(stress, 0)) - p.repayment, 0.3 * p.net
    )
    spend = 0.6 * np.maximum(balance - 1.5 * p.net, 0)
    for s in range(_DD_SLOTS):
        c = who[p.dd_share[:, s] > 0]
        noise = 1.0 if s == 0 else 1 + 0.08 * rng.normal(size=c.size)
        a = committed[c] * p.dd_share[c, s] * noise + (spend[c] if s == 1 else 0)
        add(c, DIRECT_DEBIT, a, p.dd_day[c, s], (6, 9))
    # Loan repayments: missed more often under stress and when overdrawn.
    c = who[p.repayment > 0]
    miss = rng.random(c.size) < sigmoid(-4.8 + 1.2 * stress[c] + 1.0 * (balance[c] < 0))
    add(c, np.where(miss, MISSED, DIRECT_DEBIT), p.repayment[c], p.repayment_day[c], (6, 9))
    return {
        "cust": np.concatenate(cust),
        "kind": np.concatenate(kind).astype(np.int64),
        "amount": np.concatenate(amount).astype(np.int64),
        "day": np.concatenate(day).astype(np.int64),
        "us": (np.concatenate(hour) * US_PER_H).astype(np.int64),
    }


def simulate_ledger(
    rng: np.random.Generator, p: Profiles, first_day: np.datetime64, n_days: int
) -> dict[str, np.ndarray]:
    """Every ledger event of days [0, n_days) from `first_day`, sorted by time then account.

    Columns: account, kind (LEDGER_EVENT_TYPES index), amount (int, -1 for a
    snapshot), balance (int, end of day; 0 but for snapshots), event_us
    (microseconds from first_day 00:00 UTC). The first month is simulated
    from its 1st, so a world starting mid-month opens with a settled balance.
    """
    n = p.net.size
    balance = p.balance0.astype(np.int64)
    fee = np.zeros(n, np.int64)
    months = np.arange(
        first_day.astype("datetime64[M]"),
        (first_day + np.timedelta64(n_days, "D")).astype("datetime64[M]") + 1,
    )
    out: list[dict[str, np.ndarray]] = []
    for month in months:
        d0 = int((month.astype("datetime64[D]") - first_day).astype(np.int64))
        dim = int(((month + 1).astype("datetime64[D]") - month.astype("datetime64[D]")).astype(int))
        stress = p.stress(np.arange(n), np.full(n, d0 + dim / 2))
        ev = _month_flows(rng, p, dim, stress, balance)
        charged = np.flatnonzero(fee > 0)  # last month's overdraft fee, on the 1st
        for col, extra in (
            ("cust", charged),
            ("kind", np.full(charged.size, OVERDRAFT_FEE)),
            ("amount", fee[charged]),
            ("day", np.zeros(charged.size, np.int64)),
            ("us", np.full(charged.size, 3 * US_PER_H)),
        ):
            ev[col] = np.concatenate([ev[col], extra])
        keep = ev["amount"] > 0
        ev = {k: v[keep] for k, v in ev.items()}
        order = np.lexsort((ev["us"], ev["day"], ev["cust"]))
        ev = {k: v[order] for k, v in ev.items()}
        sign = np.select([np.isin(ev["kind"], INFLOWS), np.isin(ev["kind"], OUTFLOWS)], [1, -1], 0)
        running = balance[ev["cust"]] + _group_cumsum(sign * ev["amount"], ev["cust"])
        # A direct debit that would take the balance past the arranged limit bounces.
        bounced = (ev["kind"] == DIRECT_DEBIT) & (running < -p.limit[ev["cust"]])
        ev["kind"] = np.where(bounced, RETURNED, ev["kind"])
        sign = np.where(bounced, 0, sign)
        flow = sign * ev["amount"]
        daily = np.zeros((n, dim), np.int64)
        np.add.at(daily, (ev["cust"], ev["day"]), flow)
        eod = balance[:, None] + np.cumsum(daily, axis=1)
        overdrawn = eod < 0
        fee = np.where(
            overdrawn.any(axis=1),
            np.minimum(
                _FEE_PER_DAY * overdrawn.sum(axis=1) + np.round(-0.01 * eod.min(axis=1)), _FEE_CAP
            ),
            0,
        ).astype(np.int64)
        balance = eod[:, -1]
        # End-of-day snapshots on the days with events.
        cd = np.unique(ev["cust"] * dim + ev["day"])
        snap_c, snap_d = cd // dim, cd % dim
        rows = {
            "account": np.concatenate([ev["cust"], snap_c]),
            "kind": np.concatenate([ev["kind"], np.full(cd.size, SNAPSHOT)]),
            "amount": np.concatenate([ev["amount"], np.full(cd.size, -1)]),
            "balance": np.concatenate([np.zeros(ev["cust"].size, np.int64), eod[snap_c, snap_d]]),
            "day": d0 + np.concatenate([ev["day"], snap_d]),
            "us": np.concatenate([ev["us"], np.full(cd.size, US_PER_DAY - 1_000_000)]),
        }
        inside = (rows["day"] >= 0) & (rows["day"] < n_days)
        out.append({k: v[inside] for k, v in rows.items()})
    led = {k: np.concatenate([o[k] for o in out]) for k in out[0]}
    led["event_us"] = led.pop("day") * US_PER_DAY + led.pop("us")
    order = np.lexsort((led["kind"], led["account"], led["event_us"]))
    return {k: v[order] for k, v in led.items()}
