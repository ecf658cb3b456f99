"""Linear datamodeling score (LDS) per step, with intervals, a structured null and a noise ceiling.

- Subsets S_j ⊂ train of exactly ⌊α·n⌋ examples (fixed size: Bernoulli masks let subset size pass
  for attribution), seeded; the first ``tuning`` subsets tune knobs (λ), the rest are reported.
- Ground truth: f_t on every subset model with the same x̂_0^t and the same noise draws for every
  model (common random numbers), averaged over the training seeds of the subset.
- Prediction for subset j: −Σ_{i∈S_j} τ_i (positive scores lower the output).
- LDS_t = mean over targets of Spearman(prediction, ground truth) across subsets.
- Interval: bootstrap resampling subsets and targets jointly. Null: LDS of random score vectors
  each shared by all targets (targets share a per-model component, so a per-target null is too
  optimistic). Ceiling: split-half reliability of the ground truth over training seeds,
  Spearman–Brown corrected; a perfect attribution correlates at most √reliability with it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.stats import rankdata

from .seeding import numpy_rng

log = logging.getLogger(__name__)


def make_subsets(n: int, count: int, alpha: float, seed: int) -> np.ndarray:
    """Boolean masks (count, n), each with exactly ⌊α·n⌋ members, subset j keyed by (seed, j)."""
    size = int(np.floor(alpha * n))
    if not 0 < size < n:
        raise ValueError(f"α = {alpha} gives subsets of {size} of {n} examples")
    masks = np.zeros((count, n), dtype=bool)
    for j in range(count):
        masks[j, numpy_rng(seed, "lds-subset", j).choice(n, size, replace=False)] = True
    return masks


def predictions(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """−Σ_{i∈S_j} τ_i: (..., n) scores and (m, n) masks → (..., m)."""
    return -(scores @ masks.T.astype(scores.dtype))


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
    the difference over the same bootstrap resamples). Rows with ``lambda_source == config`` are
    left out of the comparison."""
    table["margin_over"] = ""
    for col in ("margin", "margin_ci_low", "margin_ci_high"):
        table[col] = np.nan
    compared = table[table.lambda_source != "config"]
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


def shared_null(masks: np.ndarray, truth: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """LDS of ``draws`` random score vectors, each shared by all targets."""
    rng = numpy_rng(seed, "lds-null")
    scores = np.stack([rng.standard_normal(masks.shape[1]) for _ in range(draws)])
    # Spearman of every draw's prediction with every target's truth, averaged over targets.
    return np.nanmean(_unit_ranks(predictions(scores, masks)) @ _unit_ranks(truth).T, axis=1)


def split_half_reliability(per_seed: np.ndarray) -> float:
    """Reliability of the seed-averaged ground truth: (seeds, targets, subsets) → Spearman–Brown
    corrected correlation (across subsets, mean over targets) of the two halves' averages.

    A negative split-half correlation means no measurable reliability and is reported as 0.
    """
    seeds = per_seed.shape[0]
    if seeds < 2:
        return float("nan")
    half = seeds // 2
    a, b = per_seed[:half].mean(0), per_seed[half : 2 * half].mean(0)
    r = float(np.nanmean(spearman_rows(a, b)))
    return 2 * r / (1 + r) if r > 0 else 0.0


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


def ridge_predictions(
    blocks: Iterable[tuple[int, np.ndarray]],
    psi: np.ndarray,
    lambdas: Sequence[float],
    masks: np.ndarray,
) -> np.ndarray:
    """LDS predictions −M τ_λ for several relative ridges without forming the (n-sized) scores.

    τ_λ = Φ(ΦᵀΦ + λ_abs I)⁻¹ψᵀ with λ_abs = λ·‖Φ‖²_F / k, so with ΦᵀΦ = V diag(e) Vᵀ:
    −M τ_λ = −(MΦV) diag(1/(e + λ_abs)) (ψV)ᵀ. Φ arrives as (first row, rows) blocks and is
    never held whole: memory O(k² + (m + q)·k), one k × k eigendecomposition.
    ``psi`` (q, k), ``masks`` (m, n) → (len(lambdas), q, m).
    """
    k = psi.shape[1]
    gram = np.zeros((k, k))
    m_phi = np.zeros((masks.shape[0], k))
    for lo, block in blocks:
        block = np.asarray(block, dtype=np.float64)
        gram += block.T @ block
        m_phi += masks[:, lo : lo + len(block)].astype(np.float64) @ block
    e, v = np.linalg.eigh(gram)
    e = np.clip(e, 0.0, None)
    scale = e.sum() / k
    left = psi.astype(np.float64) @ v  # (q, k)
    right = m_phi @ v  # (m, k)
    return np.stack([-(left / (e + lam * scale)) @ right.T for lam in lambdas])


def ground_truth_draws(target_ids: Sequence[int], t: int, draws: int, shape: tuple, seed: int):
    """The ground truth's noise at step t, (targets, draws, *shape): the same ε for every subset
    model and for the memorization reference (common random numbers)."""
    from .features import target_draws

    return target_draws(list(target_ids), list(range(draws)), shape, seed, f"gt-draw-{t}")


def ground_truth(
    model,
    alphas_cumprod,
    x0_hat: np.ndarray,
    final: np.ndarray,
    steps: Sequence[int],
    target_ids: Sequence[int],
    draws: int,
    final_timesteps: Sequence[int],
    final_noise: int,
    seed: int,
    chunk: int = 2048,
    cond: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs on one subset model, with common random numbers across models.

    Returns f_t (n_steps, n_targets) = mean_r ℓ(x̂_0^t, t, ε_r) over ``draws`` keyed draws, and the
    trajectory-free output (n_targets,) = mean over ``final_timesteps`` × ``final_noise`` draws of
    the final image's loss (the D-TRAK benchmark's measurement).
    """
    import torch

    from .features import rows_batch, target_draws
    from .outputs import evaluate

    device = next(model.parameters()).device
    shape = tuple(x0_hat.shape[2:])

    def mean_loss(images: np.ndarray, ts: list[int], eps: torch.Tensor) -> np.ndarray:
        t = torch.tensor(ts).expand(len(target_ids), len(ts))
        c = None if cond is None else torch.from_numpy(cond).float()
        batch = {
            k: v.to(device) for k, v in rows_batch(torch.from_numpy(images), t, eps, c).items()
        }
        values = evaluate(model, alphas_cumprod, batch, "loss", chunk)
        return values.view(len(target_ids), len(ts)).mean(1).cpu().numpy()

    f_t = np.stack(
        [
            mean_loss(x0_hat[s], [t] * draws, ground_truth_draws(target_ids, t, draws, shape, seed))
            for s, t in enumerate(steps)
        ]
    )
    ts = [t for t in final_timesteps for _ in range(final_noise)]
    keys = [t * final_noise + e for t in final_timesteps for e in range(final_noise)]
    final_loss = mean_loss(final, ts, target_draws(list(target_ids), keys, shape, seed, "gt-final"))
    return f_t, final_loss


def memorization_loss(
    train: np.ndarray, masks: np.ndarray, x0: np.ndarray, alpha_bar: float, eps: np.ndarray
) -> np.ndarray:
    """The measurement f_t of the model that memorizes its subset: the empirical optimal denoiser.

    With x_t = √ᾱ x̂₀ + √(1−ᾱ) ε, the optimal ε-predictor for the training distribution uniform
    on S is ε̂*(x_t) = (x_t − √ᾱ E[x₀ | x_t]) / √(1−ᾱ), E[x₀ | x_t] = Σ_{i∈S} w_i x_i,
    w = softmax_i(−‖x_t − √ᾱ x_i‖² / 2(1−ᾱ)); the output is mean_r mean((ε̂*(x_t^r) − ε_r)²).
    No training, no attribution: a reference for how much of the subset models' behaviour is
    memorization (unconditional; pixel or latent space alike).
    ``train`` (n, ...), ``masks`` (m, n), ``x0`` (q, ...), ``eps`` (q, R, ...) → (q, m).
    """
    q, draws = eps.shape[:2]
    train = train.reshape(len(train), -1).astype(np.float64)
    x0 = x0.reshape(q, -1).astype(np.float64)
    eps = eps.reshape(q, draws, -1).astype(np.float64)
    a, s = np.sqrt(alpha_bar), np.sqrt(1.0 - alpha_bar)
    half_sq = 0.5 * alpha_bar * (train**2).sum(1)
    out = np.empty((q, len(masks)))
    for j in range(q):
        x_t = a * x0[j] + s * eps[j]  # (R, d)
        # −‖x_t − √ᾱ x_i‖² / 2(1−ᾱ) up to a term constant in i (softmax ignores it)
        logits = (a * x_t @ train.T - half_sq) / (1.0 - alpha_bar)
        for k, mask in enumerate(masks.astype(bool)):
            w = logits[:, mask]
            w = np.exp(w - w.max(1, keepdims=True))
            w /= w.sum(1, keepdims=True)
            eps_hat = (x_t - a * (w @ train[mask])) / s
            out[j, k] = np.mean((eps_hat - eps[j]) ** 2)
    return out


# ---------------------------------------------------------------------------------------------
# The LDS report


def load_lds_inputs(
    subsets: str,
    ground_truths: Sequence[str],
    scores: Sequence[str],
    train_features: Sequence[str],
    target_features: Sequence[str],
    memorization: str | None = None,
) -> dict:
    """Read everything the LDS report needs. Feature paths are grouped by their folders:
    ``.../train/<output>/<member>/shard<s>.h5`` and ``.../targets/<method>/<member>.h5``;
    ``memorization``: the optional memorization reference (steps, targets, subsets)."""
    from pathlib import Path

    import h5py

    from .scoring import read_scores

    with h5py.File(subsets, "r") as f:
        masks = f["masks"][()]
        role = np.array([r.decode() for r in f["role"][()]])
    gts = sorted(ground_truths, key=lambda p: int(Path(p).stem.lstrip("s")))
    f_t, final_loss = [], []
    for path in gts:
        with h5py.File(path, "r") as f:
            f_t.append(f["f_t"][()])
            final_loss.append(f["final_loss"][()])
            steps = f["steps"][()]
    train: dict[tuple[str, str], list[str]] = {}
    for p in train_features:
        train.setdefault((Path(p).parent.parent.name, Path(p).parent.name), []).append(p)
    targets = {(Path(p).parent.name, Path(p).stem): p for p in target_features}
    memorized = None
    if memorization:
        with h5py.File(memorization, "r") as f:
            memorized = f["loss"][()]
    return {
        "memorization": memorized,
        "masks": masks,
        "role": role,
        "f_t": np.stack(f_t),  # (subsets, seeds, steps, targets)
        "final_loss": np.stack(final_loss),  # (subsets, seeds, targets)
        "steps": steps,
        "scores": {Path(p).stem: read_scores(p) for p in scores},
        "train_features": train,
        "target_features": targets,
    }


def _member_predictions(
    inputs: dict, method: str, attrs: dict, lambdas: Sequence[float], block: int = 8192
) -> np.ndarray:
    """Predictions of every ensemble member's scores on every subset, for every λ:
    (members, lambdas, steps, targets, subsets). The ensemble's prediction is their mean
    (predictions are linear in the scores)."""
    import h5py

    from .scoring import FeatureStore

    out = []
    for member in attrs["members"]:
        store = FeatureStore(inputs["train_features"][(attrs["train_output"], member)])
        with h5py.File(inputs["target_features"][(method, member)], "r") as f:
            psi = f["features"][()]  # (steps, targets, k)
        n_steps, n_targets, k = psi.shape
        pred = ridge_predictions(store.blocks(block), psi.reshape(-1, k), lambdas, inputs["masks"])
        out.append(pred.reshape(len(lambdas), n_steps, n_targets, -1))
    return np.stack(out)


def _per_step_lds(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """pred, truth (steps, targets, subsets) → LDS per step."""
    return np.array([lds(pred[s], truth[s]) for s in range(len(pred))])


def _tune_lambda(
    pred: np.ndarray, truth: np.ndarray, tune: np.ndarray, report: np.ndarray, per_step: bool
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """λ chosen on the tuning subsets only: per step (the best tuning LDS at that step) or one λ
    shared by all steps (the best mean over steps). ``pred`` (lambdas, steps, targets, subsets),
    ``truth`` (steps, targets, subsets). Returns the chosen λ index per step, the tuning LDS
    (lambdas, steps) and the reporting LDS per step at the chosen λ."""
    tuned = np.array([_per_step_lds(p[..., tune], truth[..., tune]) for p in pred])
    if per_step:
        best = np.nanargmax(np.nan_to_num(tuned, nan=-np.inf), axis=0)
    else:
        best = np.full(tuned.shape[1], int(np.nanargmax(np.nanmean(tuned, axis=1))))
    chosen = pred[best, np.arange(len(best))]  # (steps, targets, subsets)
    return best, tuned, _per_step_lds(chosen[..., report], truth[..., report]).tolist()


def lds_table(inputs: dict, cfg: dict):
    """LDS per (method, step) on the reporting subsets, λ tuned on the tuning subsets."""
    import pandas as pd

    lds_cfg = cfg["lds"]
    seed = int(cfg["seed"])
    masks, role = inputs["masks"], inputs["role"]
    tune, report = role == "tuning", role == "reporting"
    per_seed = np.moveaxis(inputs["f_t"], 0, -1)  # (seeds, steps, targets, subsets)
    truth = per_seed.mean(0)  # (steps, targets, subsets)
    final_per_seed = np.moveaxis(inputs["final_loss"], 0, -1)  # (seeds, targets, subsets)
    final_truth = final_per_seed.mean(0)
    steps = inputs["steps"].tolist()
    n_seeds = per_seed.shape[0]

    def context(values: np.ndarray, seeds: np.ndarray) -> dict:
        null = shared_null(masks[report], values, int(lds_cfg["null_draws"]), seed)
        rel = split_half_reliability(seeds)
        return {
            "null_low": float(np.percentile(null, 5)),
            "null_high": float(np.percentile(null, 95)),
            "reliability": rel,
            "ceiling": float(np.sqrt(rel)) if rel >= 0 else float("nan"),
        }

    step_context = [
        context(truth[s][:, report], per_seed[:, s][..., report]) for s in range(len(steps))
    ]
    final_context = context(final_truth[:, report], final_per_seed[..., report])
    rows, details = (
        [],
        {"methods": {}, "n_tuning": int(tune.sum()), "n_reporting": int(report.sum())},
    )
    # Diagnostics over all subsets (nothing is tuned on them): where the ground-truth noise is.
    details["ground_truth_variance"] = {
        **{str(step): variance_components(per_seed[:, s]) for s, step in enumerate(steps)},
        "final_loss": variance_components(final_per_seed),
    }
    if inputs.get("memorization") is not None:
        # How far the subset models behave like their subset's empirical optimal denoiser (a
        # Spearman across reporting subsets like the LDS; not an attribution, nothing tuned).
        memo = inputs["memorization"]
        details["memorization_reference"] = {}
        for s, step in enumerate(steps):
            lo, hi = bootstrap_interval(
                memo[s][:, report], truth[s][:, report], int(lds_cfg["bootstrap"]), seed
            )
            value = lds(memo[s][:, report], truth[s][:, report])
            details["memorization_reference"][str(step)] = {
                "spearman": value,
                "ci_low": lo,
                "ci_high": hi,
            }
            log.info("memorization reference at t=%d: %.3f [%.3f, %.3f]", step, value, lo, hi)
    lambdas = [float(v) for v in lds_cfg["lambdas"]]
    per_step = lds_cfg.get("lambda_per_step", True)
    # The final image's loss is tuned and reported like one more step (on the last step's scores).
    columns = [*(str(step) for step in steps), "final_loss"]
    all_truth = np.concatenate([truth, final_truth[None]])
    contexts = [*step_context, final_context]

    def with_final(pred: np.ndarray) -> np.ndarray:
        """(..., steps, targets, subsets) → (..., steps + 1, ...): the last step's predictions
        again, scored against the final image's loss."""
        return np.concatenate([pred, pred[..., -1:, :, :]], axis=-3)

    for method, result in sorted(inputs["scores"].items()):
        attrs = result["attrs"]
        config_lam = attrs.get("lambda")
        fixed = with_final(predictions(result["scores"], masks))
        variants = [("config", [config_lam] * len(columns), fixed)]
        if "members" in attrs and tune.sum() >= 3 and lambdas:
            members = with_final(_member_predictions(inputs, method, attrs, lambdas))
            # Ensemble size: the first `size` members, λ re-tuned on the tuning subsets; the
            # last size is the reported ensemble.
            by_size = {}
            for size in range(1, len(members) + 1):
                ensemble = members[:size].mean(0)
                best, tuned, reporting = _tune_lambda(ensemble, all_truth, tune, report, per_step)
                by_size[str(size)] = {
                    "lambda": dict(zip(columns, (lambdas[b] for b in best), strict=True)),
                    "reporting_lds": dict(zip(columns, reporting, strict=True)),
                }
            chosen = [lambdas[b] for b in best]
            variants.insert(0, ("tuned", chosen, ensemble[best, np.arange(len(best))]))
            edges = [c for c, b in zip(columns, best, strict=True) if b in (0, len(lambdas) - 1)]
            if edges and len(lambdas) > 1:
                log.warning(
                    "%s: the tuned λ is at the edge of lds.lambdas %s at %s; extend the grid",
                    method,
                    [lambdas[0], lambdas[-1]],
                    ", ".join(edges),
                )
            details["methods"][method] = {
                "lambdas": lambdas,
                "lambda_per_step": per_step,
                "tuning_lds": {c: tuned[:, i].tolist() for i, c in enumerate(columns)},
                "selected_lambda": dict(zip(columns, chosen, strict=True)),
                "ensemble_size": by_size,
            }
        for source, lams, pred in variants:
            for i, column in enumerate(columns):
                final = column == "final_loss"
                rows.append(
                    _row(
                        method,
                        steps[-1] if final else steps[i],
                        "final_loss" if final else "f_t",
                        source,
                        lams[i],
                        pred[i][:, report],
                        all_truth[i][:, report],
                        contexts[i],
                        lds_cfg,
                        seed,
                    )
                )
    table = pd.DataFrame([row for row, _ in rows])
    paired_margins(table, [values for _, values in rows])
    table["n_seeds"] = n_seeds
    table["flagged"] = ~(table["reliability"] >= 0.5)
    cols = [
        "method",
        "step",
        "ground_truth",
        "lds",
        "ci_low",
        "ci_high",
        "null_low",
        "null_high",
        "ceiling",
        "reliability",
        "flagged",
        "n_targets",
        "n_subsets",
        "n_seeds",
        "lambda",
        "lambda_source",
        "margin_over",
        "margin",
        "margin_ci_low",
        "margin_ci_high",
    ]
    return table[cols], details


def _row(method, step, gt, source, lam, pred, truth, ctx, lds_cfg, seed) -> tuple[dict, np.ndarray]:
    """One CSV row and its bootstrap resamples (kept for the paired margins)."""
    values = bootstrap_lds(pred, truth, int(lds_cfg["bootstrap"]), seed)
    lo, hi = percentile_interval(values)
    row = {
        "method": method,
        "step": int(step),
        "ground_truth": gt,
        "lds": lds(pred, truth),
        "ci_low": lo,
        "ci_high": hi,
        **ctx,
        "n_targets": truth.shape[0],
        "n_subsets": truth.shape[1],
        "lambda": np.nan if lam is None else float(lam),
        "lambda_source": source if lam is not None else "none",
    }
    return row, values
