"""Rank statistics of the LDS: Spearman per target, the bootstrap, the shared null, the split-half
ceiling, the ground truth's variance components and paired margins between methods."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from ..seeding import numpy_rng


def predictions(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """−Σ_{i∈S_j} τ_i: (..., n) scores and (m, n) masks → (..., m), summed in float64 by
    einsum's own loop rather than a BLAS matmul, whose blocking (hence the float32 rounding,
    hence near-tied ranks) follows the thread count: the same numbers in a 1-thread job and
    in ``diffattr evaluate`` on all cores."""
    return -np.einsum("...n,mn->...m", scores.astype(np.float64), masks.astype(np.float64))


def _unit_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks along the last axis (ties averaged), centred and scaled to unit norm; NaN rows
    where all values tie. Spearman correlation = dot product of two such rows."""
    r = rankdata(x, axis=-1)
    r -= r.mean(-1, keepdims=True)
    norm = np.sqrt((r**2).sum(-1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, r / norm, np.nan)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``a`` with the same row of ``b`` (ties averaged)."""
    return (_unit_ranks(a) * _unit_ranks(b)).sum(-1)


def lds(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over targets of the Spearman correlation across subsets; (targets, subsets) inputs."""
    return float(np.nanmean(spearman_rows(pred, truth)))


def bootstrap_lds(
    pred: np.ndarray, truth: np.ndarray, draws: int, seed: int, chunk: int = 256
) -> np.ndarray:
    """LDS of ``draws`` resamples of subsets (columns) and targets (rows), drawn jointly.

    Resample b draws rows then columns from one keyed stream, so every method of the same shape
    gets the same resamples and differences between methods are paired. ``chunk`` resamples are
    ranked at once (the same numbers as one at a time)."""
    rng = numpy_rng(seed, "lds-bootstrap")
    n_t, n_s = pred.shape
    picks = [(rng.integers(n_t, size=n_t), rng.integers(n_s, size=n_s)) for _ in range(draws)]
    values = np.empty(draws)
    for lo in range(0, draws, chunk):
        rows = np.stack([r for r, _ in picks[lo : lo + chunk]])[:, :, None]
        cols = np.stack([c for _, c in picks[lo : lo + chunk]])[:, None, :]
        values[lo : lo + chunk] = np.nanmean(spearman_rows(pred[rows, cols], truth[rows, cols]), -1)
    return values


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    lo, hi = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_interval(
    pred: np.ndarray,
    truth: np.ndarray,
    draws: int,
    seed: int,
    level: float = 0.95,
    chunk: int = 256,
) -> tuple[float, float]:
    """Percentile interval of LDS resampling subsets and targets jointly (:func:`bootstrap_lds`)."""
    return percentile_interval(bootstrap_lds(pred, truth, draws, seed, chunk), level)


def paired_margins(table, resamples: Sequence[np.ndarray]) -> None:
    """Add, in place, each row's margin over the best other method at the same step and ground
    truth (``margin_over``, ``margin`` = LDS difference, ``margin_ci_low/high`` = 95 % interval of
    the difference over the same bootstrap resamples), among the rows to read
    (:func:`rows_to_read`: a method's config-λ rows only where it has no tuned ones)."""
    table["margin_over"] = ""
    for col in ("margin", "margin_ci_low", "margin_ci_high"):
        table[col] = np.nan
    compared = rows_to_read(table)
    for _, group in compared.groupby(["ground_truth", "step"]):
        for i in group.index:
            others = group.drop(index=i)
            if others.empty:
                continue
            best = others["lds"].idxmax()
            lo, hi = percentile_interval(resamples[i] - resamples[best])
            table.loc[i, "margin_over"] = table.at[best, "method"]
            table.loc[i, ["margin", "margin_ci_low", "margin_ci_high"]] = [
                table.at[i, "lds"] - table.at[best, "lds"],
                lo,
                hi,
            ]


def pairwise_margins(table, resamples: Sequence[np.ndarray]) -> list:
    """Every pair of methods at every ground truth and step, among the rows to read: the margin
    LDS(method) − LDS(other) with its 95 % interval over the same paired bootstrap resamples
    (each unordered pair once, in the table's order; the reverse is the negation)."""
    compared = rows_to_read(table)
    out = []
    for (truth, step), group in compared.groupby(["ground_truth", "step"], sort=False):
        index = list(group.index)
        for k, i in enumerate(index):
            for j in index[k + 1 :]:
                lo, hi = percentile_interval(resamples[i] - resamples[j])
                out.append(
                    {
                        "ground_truth": truth,
                        "step": int(step),
                        "method": table.at[i, "method"],
                        "other": table.at[j, "method"],
                        "margin": float(table.at[i, "lds"] - table.at[j, "lds"]),
                        "margin_ci_low": lo,
                        "margin_ci_high": hi,
                    }
                )
    return out


def family_contrast(table, resamples: Sequence[np.ndarray], families: dict[str, str]) -> list:
    """Per ground truth and step: the best method that reads the trained models (``model``)
    against the best gradient-free baseline (``gradient_free``), among the rows to read — the
    margin LDS(model) − LDS(baseline) with its 95 % interval over the same paired bootstrap
    resamples as :func:`paired_margins`. ``families[method]``; a name it lacks (a kit user's
    method) counts as ``model``; the floor (random) is on neither side. Steps missing either
    side are left out."""
    compared = rows_to_read(table)
    family = compared.method.map(lambda m: families.get(m, "model"))
    out = []
    for (truth, step), group in compared.groupby(["ground_truth", "step"], sort=False):
        sides = [group[family[group.index] == f] for f in ("model", "gradient_free")]
        if any(side.empty for side in sides):
            continue
        model, free = (side["lds"].idxmax() for side in sides)
        lo, hi = percentile_interval(resamples[model] - resamples[free])
        out.append(
            {
                "ground_truth": truth,
                "step": int(step),
                "model": table.at[model, "method"],
                "model_lds": float(table.at[model, "lds"]),
                "gradient_free": table.at[free, "method"],
                "gradient_free_lds": float(table.at[free, "lds"]),
                "margin": float(table.at[model, "lds"] - table.at[free, "lds"]),
                "margin_ci_low": lo,
                "margin_ci_high": hi,
            }
        )
    return out


def rows_to_read(table):
    """The LDS rows to read: a method's ``config`` rows (attribution.lambda, untuned) only where
    it has no others (``tuned``: λ chosen on the tuning subsets; ``none``: nothing to tune). The
    one definition behind the table, the figure, ``Run.lds()`` and the paired margins."""
    read = set(table.method[table.lambda_source != "config"])
    keep = (table.lambda_source != "config") | ~table.method.isin(read)
    return table[keep]


def untuned_methods(table) -> list[str]:
    """Methods whose rows to read carry the config λ: no λ was tuned for them."""
    return sorted(set(rows_to_read(table).query("lambda_source == 'config'").method))


def shared_null(masks: np.ndarray, truth: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """LDS of ``draws`` random score vectors, each shared by all targets."""
    rng = numpy_rng(seed, "lds-null")
    scores = np.stack([rng.standard_normal(masks.shape[1]) for _ in range(draws)])
    # Spearman of every draw's prediction with every target's truth, averaged over targets.
    return np.nanmean(_unit_ranks(predictions(scores, masks)) @ _unit_ranks(truth).T, axis=1)


def split_half_reliability(per_seed: np.ndarray) -> float:
    """Reliability of the S-seed average ground truth: (seeds, targets, subsets) → r, the
    correlation (across subsets, mean over targets) of two disjoint h-seed averages
    (h = ⌊S/2⌋), stepped up by Spearman–Brown to S seeds: m r / (1 + (m − 1) r), m = S/h
    (m = 2 for even S; an odd S leaves one seed out of the split but not of the count).

    A negative split-half correlation means no measurable reliability and is reported as 0.
    """
    seeds = per_seed.shape[0]
    if seeds < 2:
        return float("nan")
    half = seeds // 2
    a, b = per_seed[:half].mean(0), per_seed[half : 2 * half].mean(0)
    r = float(np.nanmean(spearman_rows(a, b)))
    m = seeds / half
    return m * r / (1 + (m - 1) * r) if r > 0 else 0.0


def variance_components(per_seed: np.ndarray) -> dict:
    """Why a ground truth is (un)reliable: two-way decomposition per target, pooled over targets.

    ``per_seed`` (seeds S, targets, subsets m). For each target, f_js = μ + a_j + b_s + e_js
    (subset effect a, seed effect b shared by all subsets — common random numbers —, interaction
    e). With MS_a = S·Var_j(f̄_j·) and MS_e = Σ e²/((m−1)(S−1)):
    σ²_a = (MS_a − MS_e)/S, σ²_e = MS_e; the S-seed mean has reliability σ²_a/(σ²_a + σ²_e/S),
    and reaching reliability ρ takes S_ρ = ρ/(1−ρ)·σ²_e/σ²_a seeds. ``common_share``: the part of
    the across-subset variance of f̄ that is one component shared by all targets.
    """
    seeds, _, m = per_seed.shape
    if seeds < 2 or m < 3:
        nan = float("nan")
        return dict.fromkeys(
            ["subset_var", "noise_var", "reliability", "seeds_for_half", "common_share"], nan
        )
    x = per_seed - per_seed.mean((0, 2), keepdims=True)
    row = x.mean(0)  # (targets, subsets): the seed average
    resid = x - row[None] - x.mean(2, keepdims=True)
    ms_a = seeds * (row**2).sum(-1) / (m - 1)
    ms_e = (resid**2).sum((0, 2)) / ((m - 1) * (seeds - 1))
    subset_var = float(np.mean((ms_a - ms_e) / seeds))
    noise_var = float(np.mean(ms_e))
    total = subset_var + noise_var / seeds
    common = row.mean(0)  # (subsets,)
    return {
        "subset_var": subset_var,
        "noise_var": noise_var,
        "reliability": subset_var / total if total > 0 else float("nan"),
        "seeds_for_half": noise_var / subset_var if subset_var > 0 else float("inf"),
        "common_share": float((common**2).sum() / (row**2).sum(-1).mean()),
    }


def shows_a_result(table) -> bool:
    """Whether an LDS table (``reports/lds.csv``) shows more than noise: some method other than
    random, where the ground truth is reliable (≥ 0.5), with its interval above the null's 95th
    percentile (``ci_low > null_high``). Otherwise the run's LDS is a pipeline check only."""
    rows = table[(table.method != "random") & (table.reliability >= 0.5)]
    return bool((rows.ci_low > rows.null_high).any())
