"""Fraud, labels and malformed events for the synthetic landing zone (pure numpy).

Each injector returns event columns in the same integer-coded layout that
`pitstore.generate` uses for genuine events (see `EVENT_COLUMNS`), so they can
be concatenated before transaction ids are assigned. The patterns are chosen
so that the platform's windowed features can see them:

- card testing: a burst of many small ecom amounts on one card within minutes,
  at one to three merchants (txn counts per card per hour spike);
- account takeover: a new device, a foreign country and large ecom amounts
  (new-device / foreign / amount-vs-history features);
- compromised merchants: for some days a share of one merchant's transactions
  are fraud (the merchant's chargeback rate rises, once labels arrive).
"""

from __future__ import annotations

import numpy as np

US_PER_S = 1_000_000
US_PER_MIN = 60 * US_PER_S
US_PER_H = 60 * US_PER_MIN
US_PER_DAY = 24 * US_PER_H

# Fraud kinds, kept in the generator's bookkeeping only (never written: the
# landing zone must not leak the answer beyond the labels themselves).
GENUINE, CARD_TESTING, ACCOUNT_TAKEOVER, COMPROMISED_MERCHANT = 0, 1, 2, 3

EVENT_COLUMNS = (
    "account",
    "card",
    "merchant",
    "channel",
    "amount",
    "country",
    "device",
    "event_us",
    "fraud_kind",
)

# Malformed raw events a transform must reject (or default) loudly.
BAD_KINDS = (
    "null_account_id",
    "null_merchant_id",
    "null_transaction_id",
    "nan_amount",
    "inf_amount",
    "negative_amount",
    "naive_event_ts",
    "unparseable_event_ts",
    "event_ts_after_ingested_at",
)
TS_OK, TS_NAIVE, TS_UNPARSEABLE = 0, 1, 2  # how event_ts is rendered

# Small amounts card testers use to probe a stolen card (cents).
_PROBE_AMOUNTS = np.array([1, 50, 99, 100, 101, 150, 199, 200, 250, 300])
_MAX_AMOUNT = 2_500_000  # a card limit: keeps lognormal tails believable


def _pick_card(rng: np.random.Generator, account: np.ndarray, n_cards: np.ndarray) -> np.ndarray:
    # card_id C{account*10 + k}: k indexes the account's own cards.
    return account * 10 + (rng.random(account.size) * n_cards[account]).astype(np.int64)


def card_testing_bursts(
    rng: np.random.Generator,
    n_bursts: int,
    n_cards: np.ndarray,
    start_us: int,
    end_us: int,
    probe_merchants: np.ndarray,
    merchant_country: np.ndarray,
    ecom: int,
    first_device: int,
) -> dict[str, np.ndarray]:
    """Bursts of 6-25 small ecom payments on one card, seconds apart."""
    account = rng.integers(0, n_cards.size, n_bursts)
    card = _pick_card(rng, account, n_cards)
    t0 = rng.integers(start_us, max(start_us + 1, end_us - 2 * US_PER_H), n_bursts)
    size = rng.integers(6, 26, n_bursts)
    # Few merchants per burst: testers reuse the one checkout that lets them.
    merchants = rng.choice(probe_merchants, size=(n_bursts, 3))
    n_merch = rng.integers(1, 4, n_bursts)

    burst = np.repeat(np.arange(n_bursts), size)
    n = burst.size
    gaps = (rng.exponential(15.0, n) + 1.0) * US_PER_S
    # cumulative gap within each burst: global cumsum minus the burst's offset
    csum = np.cumsum(gaps)
    first = np.concatenate([[0], np.cumsum(size)[:-1]])
    offset = csum[first] - gaps[first]
    event_us = t0[burst] + (csum - offset[burst]).astype(np.int64)

    merchant = merchants[burst, (rng.random(n) * n_merch[burst]).astype(np.int64)]
    amount = rng.choice(_PROBE_AMOUNTS, n).astype(np.float64)
    # Some bursts end in a cash-out once a card is confirmed live.
    last = np.cumsum(size) - 1
    cash_out = last[rng.random(n_bursts) < 0.3]
    amount[cash_out] = np.minimum(
        np.round(np.exp(rng.normal(np.log(30_000), 0.5, cash_out.size))), _MAX_AMOUNT
    )
    return {
        "account": account[burst],
        "card": card[burst],
        "merchant": merchant,
        "channel": np.full(n, ecom, np.int64),
        "amount": amount,
        "country": merchant_country[merchant],
        "device": first_device + burst.astype(np.int64),
        "event_us": event_us,
        "fraud_kind": np.full(n, CARD_TESTING, np.int64),
    }


def account_takeovers(
    rng: np.random.Generator,
    n_takeovers: int,
    n_cards: np.ndarray,
    start_us: int,
    end_us: int,
    target_merchants: np.ndarray,
    foreign_countries: np.ndarray,
    ecom: int,
    first_device: int,
) -> dict[str, np.ndarray]:
    """1-4 large ecom payments from a new device in a foreign country."""
    account = rng.integers(0, n_cards.size, n_takeovers)
    card = _pick_card(rng, account, n_cards)
    t0 = rng.integers(start_us, max(start_us + 1, end_us - 6 * US_PER_H), n_takeovers)
    size = rng.integers(1, 5, n_takeovers)
    country = rng.choice(foreign_countries, n_takeovers)

    ato = np.repeat(np.arange(n_takeovers), size)
    n = ato.size
    gaps = rng.exponential(20.0 * US_PER_MIN, n)
    csum = np.cumsum(gaps)
    first = np.concatenate([[0], np.cumsum(size)[:-1]])
    offset = csum[first] - gaps[first]
    event_us = t0[ato] + (csum - offset[ato]).astype(np.int64)
    amount = np.minimum(np.round(np.exp(rng.normal(np.log(45_000), 0.7, n))), _MAX_AMOUNT)
    return {
        "account": account[ato],
        "card": card[ato],
        "merchant": rng.choice(target_merchants, n),
        "channel": np.full(n, ecom, np.int64),
        "amount": amount,
        "country": country[ato],
        "device": first_device + ato.astype(np.int64),
        "event_us": event_us,
        "fraud_kind": np.full(n, ACCOUNT_TAKEOVER, np.int64),
    }


def compromise_merchants(
    rng: np.random.Generator,
    events: dict[str, np.ndarray],
    n_compromised: int,
    candidates: np.ndarray,
    candidate_weights: np.ndarray,
    start_us: int,
    days: int,
    share: float = 0.35,
) -> dict[str, np.ndarray]:
    """Turn a share of some merchants' transactions into fraud for 4-10 days.

    Returns new arrays for `amount` and `fraud_kind` (inputs are not mutated).
    """
    n_compromised = min(n_compromised, candidates.size)
    chosen = rng.choice(
        candidates, n_compromised, replace=False, p=candidate_weights / candidate_weights.sum()
    )
    w_start = start_us + rng.integers(0, max(1, days - 3), n_compromised) * US_PER_DAY
    w_len = rng.integers(4, 11, n_compromised) * US_PER_DAY
    amount = events["amount"].copy()
    kind = events["fraud_kind"].copy()
    draw = rng.random(kind.size)
    inflate = rng.uniform(1.5, 4.0, kind.size)
    for m, lo, length in zip(chosen, w_start, w_len, strict=True):
        hit = (
            (events["merchant"] == m)
            & (events["event_us"] >= lo)
            & (events["event_us"] < lo + length)
            & (kind == GENUINE)
            & (draw < share)
        )
        kind[hit] = COMPROMISED_MERCHANT
        amount[hit] = np.minimum(np.round(amount[hit] * inflate[hit]), _MAX_AMOUNT)
    return {"amount": amount, "fraud_kind": kind}


def labels(
    rng: np.random.Generator,
    event_us: np.ndarray,
    is_fraud: np.ndarray,
) -> dict[str, np.ndarray]:
    """Chargebacks for most fraud, a few disputes resolved as genuine.

    Returns the labelled transaction indices with `is_fraud`, `label_us` and
    `ingested_us` (label_ts plus hours to a day: the bank's ingestion lag).
    """
    n = event_us.size
    draw = rng.random(n)
    labelled = np.flatnonzero(np.where(is_fraud, draw < 0.9, draw < 0.0015))
    # Chargebacks take days to weeks: 3 days minimum, long right tail, 45 max.
    delay_days = np.minimum(3.0 + rng.gamma(2.0, 6.0, labelled.size), 45.0)
    label_us = event_us[labelled] + (delay_days * US_PER_DAY).astype(np.int64)
    ingested_us = label_us + rng.integers(US_PER_H, US_PER_DAY, labelled.size)
    return {
        "index": labelled,
        "is_fraud": is_fraud[labelled],
        "label_us": label_us,
        "ingested_us": ingested_us,
    }


def bad_events(
    rng: np.random.Generator,
    rows: dict[str, np.ndarray],
    n_bad: int,
    eligible: np.ndarray,
    first_txn: int,
) -> dict[str, np.ndarray]:
    """Copies of landed events, each broken in one way, with fresh ids."""
    src = rng.choice(eligible, n_bad)
    bad = {k: v[src] for k, v in rows.items()}
    # Every kind at least once, so the transform's handling of each is tested.
    kind = np.concatenate(
        [np.arange(len(BAD_KINDS)), rng.integers(0, len(BAD_KINDS), n_bad - len(BAD_KINDS))]
    )
    bad["txn"] = first_txn + np.arange(n_bad)
    bad["fraud_kind"] = np.zeros(n_bad, np.int64)
    bad["bad_kind"] = kind
    amount = bad["amount"].copy()
    amount[kind == BAD_KINDS.index("nan_amount")] = np.nan
    amount[kind == BAD_KINDS.index("inf_amount")] = np.inf
    neg = kind == BAD_KINDS.index("negative_amount")
    amount[neg] = -amount[neg]
    bad["amount"] = amount
    for col, name in (
        ("account", "null_account_id"),
        ("merchant", "null_merchant_id"),
        ("txn", "null_transaction_id"),
    ):
        bad[col] = np.where(kind == BAD_KINDS.index(name), -1, bad[col])
    bad["ts_style"] = np.select(
        [
            kind == BAD_KINDS.index("naive_event_ts"),
            kind == BAD_KINDS.index("unparseable_event_ts"),
        ],
        [TS_NAIVE, TS_UNPARSEABLE],
        TS_OK,
    )
    future = kind == BAD_KINDS.index("event_ts_after_ingested_at")
    bad["event_us"] = np.where(
        future, bad["ingested_us"] + rng.integers(US_PER_H, 2 * US_PER_DAY, n_bad), bad["event_us"]
    )
    return bad
