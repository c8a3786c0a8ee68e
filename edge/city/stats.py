"""The study's statistics: rates per exposure, distribution tests, and speed percentiles from window statistics.

Rates (conflicts per 1,000 entering vehicles, per hour observed; volumes per hour observed)
    Counts per local day with the day's exposure. The primary estimate of the after/before rate ratio is a
    negative-binomial (NB2) regression with log exposure as offset (statsmodels ``NegativeBinomial``, maximum
    likelihood with the dispersion estimated): conflict counts vary from day to day more than a Poisson count
    does, and a Poisson interval would then be too narrow. It needs at least :data:`MIN_DAYS_NB` days in each
    period; otherwise (or when the fit does not converge) the exact conditional Poisson test is primary:
    given ``x0 + x1`` events, ``x1`` is binomial with ``p = E1 / (E0 + E1)`` under no change (scipy
    ``binomtest``, Clopper-Pearson interval mapped to the rate ratio). Both are always computed.
    With a comparison site the effect is the ratio of the two sites' rate ratios (the interaction term of the
    same regression): what changed at the treated site beyond what changed where nothing was done.
Distributions (speeds, TTC, PET)
    Two-sided Mann-Whitney U (a shift) and Kolmogorov-Smirnov (any difference of shape) tests (scipy), with a
    bootstrap interval of the change in the median.
Speed percentiles
    A device publishes a window's count, mean, p50 and p85 per line, direction and class, never single speeds.
    The report estimates a period's percentiles from a count-weighted mixture: each window is a normal with
    its mean and ``sigma = (p85 - p50) / z(0.85)`` (at least :data:`MIN_SIGMA_KMH`), weighted by its count;
    the mixture's CDF is inverted for p15, p50, p85, p95. On generated data (tests/test_report.py) the estimates
    are within 0.5 km/h of the drawn speeds' percentiles, a little too narrow (p85 about 0.4 km/h low): a
    window's p85 - p50 from a few crossings runs small. Windows under the device's minimum count publish no
    statistics and are left out (their crossings are counted in the "withheld" column). Intervals come from a
    bootstrap over days. The tests check the estimate against the individual speeds a generator drew.
Share over the limit
    Exact from the records (over_limit / measured crossings); compared as a rate of over-limit crossings per
    measured crossing over days, like the conflicts: crossings come in platoons, and a test that took them as
    independent (a two-proportion z test) would claim changes that are not there.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import special, stats

MIN_DAYS_NB: Final = 3
MIN_SIGMA_KMH: Final = 0.5
Z85: Final = float(special.ndtri(0.85))
ALPHA: Final = 0.05
SPEED_GRID: Final = np.arange(0.0, 160.0, 0.25)
SPEED_GRID.flags.writeable = False  # shared by every study: read only
QUANTILES: Final = (0.15, 0.5, 0.85, 0.95)


@dataclass(frozen=True)
class RateRatio:
    """After/before (or, with a comparison site, treated/comparison) ratio of rates per exposure."""

    x0: float  # events before
    e0: float  # exposure before
    x1: float
    e1: float
    ratio: float
    low: float
    high: float
    p_value: float
    method: str
    exact_low: float = math.nan  # the exact conditional Poisson interval, always computed
    exact_high: float = math.nan
    exact_p: float = math.nan
    dispersion: float | None = None  # NB2 alpha (variance = mu + alpha mu^2), when the NB fit is primary

    @property
    def change_pct(self) -> float:
        return 100.0 * (self.ratio - 1.0)

    @property
    def claims_change(self) -> bool:
        return self.p_value < ALPHA and not (self.low <= 1.0 <= self.high)


@dataclass(frozen=True)
class Comparison:
    """Two samples compared: medians, their difference with a bootstrap interval, MWU and KS tests."""

    n0: int
    n1: int
    median0: float
    median1: float
    diff: float
    low: float
    high: float
    mwu_p: float
    ks_p: float

    @property
    def claims_change(self) -> bool:
        return self.mwu_p < ALPHA and not (self.low <= 0.0 <= self.high)


def exact_poisson(x0: float, e0: float, x1: float, e1: float, level: float = 0.95) -> tuple[float, float, float, float]:
    """(ratio, low, high, p) of the rate ratio (x1/e1)/(x0/e0) by the exact conditional binomial test."""
    n = round(x0 + x1)
    if n == 0 or e0 <= 0 or e1 <= 0:
        return math.nan, 0.0, math.inf, 1.0
    res = stats.binomtest(round(x1), n, e1 / (e0 + e1))
    ci = res.proportion_ci(confidence_level=level, method="exact")

    def to_ratio(p: float) -> float:
        return math.inf if p >= 1.0 else (p / (1.0 - p)) * (e0 / e1)

    ratio = (x1 / e1) / (x0 / e0) if x0 > 0 else math.inf
    return ratio, to_ratio(float(ci.low)), to_ratio(float(ci.high)), float(res.pvalue)


def _nb_fit(y: np.ndarray, design: np.ndarray, exposure: np.ndarray, level: float
            ) -> tuple[float, float, float, float, float] | None:
    """exp(last coefficient), its interval, p and the NB2 alpha; None when the fit fails or does not converge."""
    from statsmodels.discrete.discrete_model import NegativeBinomial

    keep = exposure > 0
    if y[keep].sum() == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and overflow warnings are judged from the result below
        try:
            model = NegativeBinomial(y[keep], design[keep], offset=np.log(exposure[keep]), loglike_method="nb2")
            res = model.fit(disp=0, maxiter=300, method="bfgs")
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            return None
    params, bse = np.asarray(res.params), np.asarray(res.bse)
    k = design.shape[1] - 1
    if not res.mle_retvals.get("converged", False) or not (np.isfinite(params[k]) and np.isfinite(bse[k])):
        return None
    z = float(special.ndtri(0.5 + level / 2))
    p = float(2 * stats.norm.sf(abs(params[k] / bse[k])))
    return (math.exp(params[k]), math.exp(params[k] - z * bse[k]), math.exp(params[k] + z * bse[k]), p,
            float(params[-1]))


def rate_ratio(counts0: np.ndarray, exposure0: np.ndarray, counts1: np.ndarray, exposure1: np.ndarray,
               level: float = 0.95) -> RateRatio:
    """After/before rate ratio from daily counts and exposures (see the module docstring)."""
    c0, e0, c1, e1 = (np.asarray(a, dtype=np.float64) for a in (counts0, exposure0, counts1, exposure1))
    x0, x1, t0, t1 = float(c0.sum()), float(c1.sum()), float(e0.sum()), float(e1.sum())
    ratio, lo, hi, p = exact_poisson(x0, t0, x1, t1, level)
    exact = {"exact_low": lo, "exact_high": hi, "exact_p": p}
    if min(np.count_nonzero(e0 > 0), np.count_nonzero(e1 > 0)) >= MIN_DAYS_NB:
        y = np.concatenate([c0, c1])
        design = np.column_stack([np.ones(len(y)), np.r_[np.zeros(len(c0)), np.ones(len(c1))]])
        fit = _nb_fit(y, design, np.concatenate([e0, e1]), level)
        if fit is not None:
            return RateRatio(x0, t0, x1, t1, fit[0], fit[1], fit[2], fit[3], "negative binomial (NB2) regression",
                             dispersion=fit[4], **exact)
    return RateRatio(x0, t0, x1, t1, ratio, lo, hi, p, "exact conditional Poisson", **exact)


def ratio_of_ratios(treated: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                    comparison: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                    level: float = 0.95) -> RateRatio | None:
    """The treated site's after/before rate ratio over the comparison site's: the after x treated coefficient of
    one NB2 regression of all four (site, period) groups of days. None when it cannot be fitted."""
    ys, rows, exposures = [], [], []
    for treated_flag, (c0, e0, c1, e1) in ((1.0, treated), (0.0, comparison)):
        for after, (c, e) in ((0.0, (c0, e0)), (1.0, (c1, e1))):
            ys.append(np.asarray(c, dtype=np.float64))
            exposures.append(np.asarray(e, dtype=np.float64))
            rows += [[1.0, after, treated_flag, after * treated_flag]] * len(c)
    if min(np.count_nonzero(e > 0) for e in exposures) < MIN_DAYS_NB:
        return None
    fit = _nb_fit(np.concatenate(ys), np.asarray(rows), np.concatenate(exposures), level)
    if fit is None:
        return None
    t_rate = (float(treated[2].sum()) / float(treated[3].sum())) / (float(treated[0].sum()) / float(treated[1].sum())) \
        if float(treated[0].sum()) > 0 else math.inf
    return RateRatio(float(treated[0].sum()), float(treated[1].sum()), float(treated[2].sum()),
                     float(treated[3].sum()), fit[0], fit[1], fit[2], fit[3],
                     f"NB2 regression with comparison site (treated ratio alone {t_rate:.2f})", dispersion=fit[4])


def compare_samples(a: np.ndarray, b: np.ndarray, *, rng: np.random.Generator, boots: int = 1000,
                    level: float = 0.95) -> Comparison | None:
    """Before ``a`` and after ``b`` (NaNs dropped); None with fewer than 2 values on either side."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return None
    m0, m1 = float(np.median(a)), float(np.median(b))
    diffs = (np.median(rng.choice(b, (boots, len(b))), axis=1) - np.median(rng.choice(a, (boots, len(a))), axis=1))
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    mwu = stats.mannwhitneyu(a, b, alternative="two-sided")
    ks = stats.ks_2samp(a, b)
    return Comparison(len(a), len(b), m0, m1, m1 - m0, float(lo), float(hi), float(mwu.pvalue), float(ks.pvalue))


# ---------------------------------------------------------------------------------------- speed mixtures
def mixture_cdf_by_group(groups: np.ndarray, count: np.ndarray, mean: np.ndarray, p50: np.ndarray,
                         p85: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group labels, CDF mass on :data:`SPEED_GRID` per group): the count-weighted normal mixture of the windows
    of each group (a day), not normalised (a row sums the counts it holds)."""
    ok = np.isfinite(mean) & np.isfinite(p50) & np.isfinite(p85) & (count > 0)
    sigma = np.maximum((p85[ok] - p50[ok]) / Z85, MIN_SIGMA_KMH)
    labels, inverse = np.unique(groups[ok], return_inverse=True)
    out = np.zeros((len(labels), len(SPEED_GRID)))
    mu, n = mean[ok], count[ok]
    for start in range(0, len(mu), 2048):  # bounded memory: 2048 windows x 640 grid points at a time
        sl = slice(start, start + 2048)
        cdf = special.ndtr((SPEED_GRID[None, :] - mu[sl, None]) / sigma[sl, None]) * n[sl, None]
        np.add.at(out, inverse[sl], cdf)
    return labels, out


def quantiles_of_cdf(mass: np.ndarray, qs: tuple[float, ...] = QUANTILES) -> np.ndarray:
    """Quantiles of a CDF mass row (or rows) on :data:`SPEED_GRID`, linearly interpolated."""
    rows = np.atleast_2d(mass)
    out = np.full((len(rows), len(qs)), np.nan)
    for i, row in enumerate(rows):
        total = row[-1]
        if total <= 0:
            continue
        cdf = row / total
        for j, q in enumerate(qs):
            k = int(np.searchsorted(cdf, q))
            if 0 < k < len(cdf):
                f = (q - cdf[k - 1]) / max(cdf[k] - cdf[k - 1], 1e-12)
                out[i, j] = SPEED_GRID[k - 1] + f * (SPEED_GRID[k] - SPEED_GRID[k - 1])
    return out


def bootstrap_quantiles(day_mass: np.ndarray, *, rng: np.random.Generator, boots: int = 400,
                        qs: tuple[float, ...] = QUANTILES) -> np.ndarray:
    """``(boots, len(qs))`` quantiles of the mixture with its days resampled with replacement."""
    if len(day_mass) == 0:
        return np.full((boots, len(qs)), np.nan)
    weights = rng.multinomial(len(day_mass), np.full(len(day_mass), 1.0 / len(day_mass)), size=boots)
    return quantiles_of_cdf(weights @ day_mass, qs)
