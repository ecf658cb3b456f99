"""The counterfactual report's statistics: per (method, step, k, protocol, metric) the mean
effect over targets with a bootstrap interval (none with fewer than ``MIN_INTERVAL_TARGETS``
targets), the seed floor, and paired differences to random and pixel-similarity removal."""

from __future__ import annotations

import numpy as np

# A percentile bootstrap of a mean over fewer targets spans little more than the values' range
# (over 2 targets: their min and max); below this count no interval is reported or drawn.
MIN_INTERVAL_TARGETS = 8

METRICS = ("l2", "prob_drop", "frechet")


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval over targets (NaN interval with fewer than two values)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean()) if len(values) else float("nan")
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, mean - half, mean + half


def bootstrap_interval(
    values: np.ndarray, level: float = 0.95, draws: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval of the mean over targets (seeded resamples). The
    interval stays within the values' range, so a non-negative metric (Fréchet, L2) keeps a
    non-negative interval, unlike a t-interval on few targets."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (draws, len(values)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(values.mean()), float(low), float(high)


def summarize(cases, floor):
    """Aggregate per-case metrics (DataFrame: case columns + protocol + metrics) into the report.

    ``floor`` holds the seed-floor metrics per (target, step, protocol). For every (method, step
    label, k, protocol, metric): mean over targets with a bootstrap interval (non-negative metrics
    keep non-negative intervals; NaN below ``MIN_INTERVAL_TARGETS`` targets), the seed floor,
    the random-removal baseline, and the paired differences to random removal, to
    pixel-similarity removal, to the floor and (methods with a step-specificity arm) to
    removing the attribution of another step, with t-intervals;
    ``counts`` when both same-seed differences to random and pixel-similarity removal are above 0.
    """
    import pandas as pd

    twin = (cases.label != "final") & (cases.scored_at != cases.step)
    paired = ["target", "label", "k", "protocol", "metric"]

    def long_form(frame):
        return frame.melt(
            id_vars=["method", "target", "step", "k", "protocol", "label"],
            value_vars=list(METRICS),
            var_name="metric",
        )

    long = long_form(cases[~twin])
    fl = floor.melt(
        id_vars=["target", "step", "protocol"],
        value_vars=list(METRICS),
        var_name="metric",
        value_name="floor",
    )
    long = long.merge(fl, on=["target", "step", "protocol", "metric"], how="left")
    for baseline in ("random", "pixel_similarity"):  # the same seed stream: paired per target
        removed = long[long.method == baseline][[*paired, "value"]]
        long = long.merge(removed.rename(columns={"value": baseline}), on=paired, how="left")
    other = long_form(cases[twin])[["method", *paired, "value"]]
    long = long.merge(
        other.rename(columns={"value": "other_step"}), on=["method", *paired], how="left"
    )
    rows = []
    keys = ["method", "label", "k", "protocol", "metric"]
    for key, g in long.groupby(keys, sort=True):
        mean, lo, hi = bootstrap_interval(g.value.to_numpy())
        few = g.target.nunique() < MIN_INTERVAL_TARGETS
        row = {
            **dict(zip(keys, key, strict=True)),
            "mean": mean,
            "ci_low": np.nan if few else lo,
            "ci_high": np.nan if few else hi,
            "seed_floor": float(g.floor.mean()),
            "random": float(g.random.mean()),
        }
        floor_band = bootstrap_interval(g.floor.dropna().to_numpy())[1:]
        row["floor_low"], row["floor_high"] = (np.nan, np.nan) if few else floor_band
        for name, column in [
            ("random", "random"),
            ("pixel", "pixel_similarity"),
            ("floor", "floor"),
            ("other_step", "other_step"),
        ]:
            diff = t_interval((g.value - g[column]).dropna().to_numpy())
            names = [f"diff_vs_{name}{x}" for x in ("", "_low", "_high")]
            row |= dict(zip(names, diff, strict=True))
        rows.append(row | {"n_targets": int(g.target.nunique())})
    out = pd.DataFrame(rows).rename(columns={"label": "step"})
    # counts: the removal moves the samples more than removing random examples and than removing
    # pixel similarity's top examples, paired over targets under the same seed stream (data is
    # the only difference). The seed floor (a reseeded full-data model) is a reference band, not
    # a bar: no same-seed removal is built to clear a change of seed.
    beats_pixel = (out.diff_vs_pixel_low > 0) | out.diff_vs_pixel.isna()
    beats_pixel |= out.method == "pixel_similarity"  # the baseline is compared with random only
    out["counts"] = (out.diff_vs_random_low > 0) & beats_pixel & (out.method != "random")
    return out


def shows_an_effect(table) -> bool:
    """Whether a counterfactual summary shows more than a pipeline check: some removal other
    than random counts (:func:`summarize`) over at least ``MIN_INTERVAL_TARGETS`` targets."""
    rows = table[(table.method != "random") & (table.n_targets >= MIN_INTERVAL_TARGETS)]
    return bool(rows["counts"].astype(bool).any())
