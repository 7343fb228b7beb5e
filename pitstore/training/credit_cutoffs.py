"""Decision cut-offs of a PD model: pre-qualified / refer / decline.

The economics fix one number, the break-even PD: a loan earning ``margin`` (net
interest over its life, as a share of the principal) and losing
``loss_given_default`` of it on default breaks even at::

    PD * loss_given_default = (1 - PD) * margin
    break_even = margin / (margin + loss_given_default)

The validation set then places the two cut-offs. Its applications, ordered by
PD, are cut into consecutive bands of equal size (``bands_for``: about 20, at
least ``MIN_BAND_ROWS`` each); each band's observed default rate gets a Wilson
95% interval, and:

- from the lowest band up, while the band's upper bound is below the break-even
  PD, the band is pre-qualified (95% sure these applicants earn);
- from the highest band down, while the band's lower bound is above the
  break-even PD, the band is declined (95% sure they lose money);
- the bands between, where the data cannot tell the rate from the break-even,
  are referred to a person.

``prequalify_below`` is the lowest PD of the first referred band (PD below it
pre-qualifies) and ``decline_pd`` the lowest PD of the first declined band (PD
at or above it declines); with no band declined it is 1.0, with none
pre-qualified ``prequalify_below`` is 0.0. Bands are marginal on purpose: a
cumulative rule ("everyone above x") lets a bad tail make a group look bad, or a
good bulk make one look good, that contains applicants who are not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pitstore.training.credit_metrics import wilson_bounds

MIN_BAND_ROWS = 50
TARGET_BANDS = 10


@dataclass(frozen=True)
class Economics:
    # Net interest earned over a performing loan's life, per unit of principal.
    margin: float = 0.10
    # Share of the principal lost when a loan defaults (after recoveries).
    loss_given_default: float = 0.60

    @property
    def break_even_pd(self) -> float:
        return self.margin / (self.margin + self.loss_given_default)


def bands_for(n: int) -> int:
    """How many equal-size PD bands ``n`` validation rows are cut into."""
    return max(1, min(TARGET_BANDS, n // MIN_BAND_ROWS))


def choose_cutoffs(y: np.ndarray, p: np.ndarray, economics: Economics) -> dict[str, Any]:
    """The cut-offs (see the module doc) and what they do on the validation set."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    be = economics.break_even_pd
    order = np.argsort(p, kind="stable")
    chunks = np.array_split(order, bands_for(len(p)))
    k = np.array([y[c].sum() for c in chunks])
    n = np.array([len(c) for c in chunks])
    lo, hi = wilson_bounds(k, n)
    verdict = np.full(len(chunks), "refer", dtype=object)
    i = 0
    while i < len(chunks) and hi[i] < be:
        verdict[i] = "prequalified"
        i += 1
    j = len(chunks) - 1
    while j >= i and lo[j] > be:
        verdict[j] = "decline"
        j -= 1
    # The cut-offs act on PDs (as serving will): a PD tied across two bands follows them.
    prequalify = float(p[chunks[i][0]]) if i < len(chunks) else 1.0
    decline = float(p[chunks[j + 1][0]]) if j + 1 < len(chunks) else 1.0
    if i == 0:
        prequalify = 0.0
    bands = [
        {
            "pd_min": float(p[c[0]]),
            "pd_max": float(p[c[-1]]),
            "n": int(nn),
            "defaults": int(kk),
            "ci_low": float(ll),
            "ci_high": float(hh),
            "decision": str(v),
        }
        for c, nn, kk, ll, hh, v in zip(chunks, n, k, lo, hi, verdict, strict=True)
    ]
    decisions = np.where(p >= decline, "decline", np.where(p < prequalify, "prequalified", "refer"))
    outcome = {}
    for name in ("prequalified", "refer", "decline"):
        mask = decisions == name
        dk, dn = int(y[mask].sum()), int(mask.sum())
        dlo, dhi = wilson_bounds(np.array(dk), np.array(dn))
        outcome[name] = {
            "share": dn / len(y) if len(y) else 0.0,
            "rows": dn,
            "default_rate": dk / dn if dn else None,
            "ci_low": float(dlo),
            "ci_high": float(dhi),
        }
    return {
        "rule": (
            "equal-size PD bands of the validation set; from the bottom, bands whose Wilson 95% "
            "upper bound is below break-even pre-qualify; from the top, bands whose lower bound "
            "is above it decline; the rest refer"
        ),
        "economics": {**asdict(economics), "break_even_pd": be},
        "prequalify_below": prequalify,
        "decline_pd": decline,
        "on_validation": outcome,
        "bands": bands,
    }
