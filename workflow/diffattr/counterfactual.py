"""Counterfactual retraining: remove the top influencers at step t, retrain, resample from x_t.

- Removal sets: the top-k positive influencers of a method at (target, step) (``random``: k
  seeded random examples). Counterfactual models train with the full model's seed and randomness
  stream, so the data is the only difference; the *seed floor* is the full data retrained with
  another seed, i.e. how much p(·|x_t) moves for no data reason at all.
- ``final`` (D-TRAK's protocol): the final image's attribution removed, the target regenerated
  from its own x_T. Step specificity: the same x_t resampled after removing the top-k of the
  attribution at another step t' (a *twin* of the case).
- Paired resampling: from the stored x_t, S noise streams keyed by (target, step, s) and shared by
  the original and the counterfactual model. Protocol ``a`` (the paper's) uses the counterfactual
  model on the sampler steps in [t − Δ, t] and the original elsewhere; ``b`` uses it for every
  remaining step.
- Metrics: mean paired pixel L2; drop of the classifier's probability of the target's final class;
  Fréchet distance between the sample sets in the classifier's embedding space.
- Feature emergence: the probability that samples from p(·|x_t) have the final image's class, along
  the trajectory; the step just before its steepest rise is where the feature gets decided.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import linalg
from torch import Tensor

from .config import CounterfactualConfig
from .diffusion import Predictor, denoise, swapped_predictor
from .errors import ConfigError
from .layout import Case
from .seeding import generator, numpy_rng
from .topk import Ranked


def removal_size(k: float, n: int) -> int:
    """k as a fraction of the training set (k < 1) or as a count."""
    size = round(k * n) if k < 1 else int(k)
    if not 0 < size < n:
        raise ConfigError(
            f"counterfactual.k {k:g} removes {size} of {n} training examples; choose a fraction "
            "below 1 or a count between 1 and n − 1"
        )
    return size


def top_influencers(scores: np.ndarray | Ranked, k: int) -> np.ndarray:
    """Indices of the k largest scores (positive influencers), ties broken by index (lower
    first); from dense scores (n,) or a top-k row (``topk.Ranked`` (2, K), K ≥ k)."""
    if isinstance(scores, Ranked):
        if k > scores.k:
            raise ConfigError(
                f"counterfactual.k removes {k} training examples but attribution.top_k keeps "
                f"the top {scores.k} per (step, target); raise attribution.top_k to ≥ {k} or "
                "lower counterfactual.k"
            )
        return scores.index[0, :k]
    return np.argsort(-scores, kind="stable")[:k]


def random_removal(n: int, k: int, seed: int, target: int, step: int) -> np.ndarray:
    """k seeded random examples, drawn per (target position, step)."""
    return np.sort(numpy_rng(seed, "cf-random", target, step).choice(n, k, replace=False))


def plan(  # noqa: C901  (issue 32: not yet split)
    cf: CounterfactualConfig,
    n: int,
    steps: Sequence[int],
    decision_steps: Sequence[int],
    score_row: Callable[[str, int, int], np.ndarray | Ranked],
    seed: int,
    first_timestep: int,
) -> tuple[list[Case], np.ndarray]:
    """The counterfactual design: for each of the first ``cf.targets`` targets, each examined
    step label, each method and each removal size, one case that removes that method's top-k
    influencers (``random``: k seeded examples); then the step-specificity twins.

    Labels: ``emergence`` (the target's decision step), an attribution step t, or ``final``
    (D-TRAK's protocol: the final image's attribution, i.e. the last attribution step's row as in
    the LDS's final column, resampled from x_T at ``first_timestep``). A twin of a case at step t
    removes the top-k of the attribution at the step farthest from t (``other_step``) and is
    resampled from the same x_t. ``score_row(method, step, target)`` gives a method's scores (n,)
    or, from a top-k file, their top K (``topk.Ranked``).
    Returns the cases and the keep masks (cases, n): False on the removed examples.
    """
    cases, keep = [], []

    def add(method: str, target: int, label: str, step: int, scored_at: int, k: float) -> None:
        size = removal_size(float(k), n)
        if method == "random":
            removed = random_removal(n, size, seed, target, step)
        else:
            removed = top_influencers(score_row(method, scored_at, target), size)
        mask = np.ones(n, dtype=bool)
        mask[removed] = False
        cases.append(Case(len(cases), method, target, step, size, label, scored_at))
        keep.append(mask)

    for target in range(cf.targets):
        decision = int(decision_steps[target])
        for label in cf.labels:
            step, scored_at = examined_step(label, decision, steps, first_timestep)
            for method in cf.methods:
                for k in cf.k:
                    add(method, target, label, step, scored_at, k)
        for label in cf.stepwise_labels:
            step, _ = examined_step(label, decision, steps, first_timestep)
            for method in cf.specificity:
                for k in cf.k:
                    add(method, target, label, step, other_step(step, steps), k)
    if len(cases) != cf.n_cases:  # the workflow made cf.n_cases jobs
        raise ConfigError(f"planned {len(cases)} cases, the workflow expects {cf.n_cases}")
    return cases, np.stack(keep)


def examined_step(
    label: str, decision: int, steps: Sequence[int], first_timestep: int
) -> tuple[int, int]:
    """(the step resampled from, the step whose scores choose the removal) of a label; ``final``
    resamples from x_T at the sampler's first timestep and reads the last attribution step's row."""
    if label == CounterfactualConfig.EMERGENCE:
        step = decision
    elif label == CounterfactualConfig.FINAL:
        return first_timestep, steps[-1]
    else:
        step = int(label)
    if step not in steps:
        raise ConfigError(f"counterfactual step {step} is not an attribution step {list(steps)}")
    return step, step


def other_step(step: int, steps: Sequence[int]) -> int:
    """The attribution step farthest from ``step`` (the larger on a tie): the step-specificity
    test's alternative removal."""
    return max(steps, key=lambda u: (abs(u - step), u))


PROTOCOLS = ("a", "b")


def protocols_at(step: int, timesteps: Sequence[int]) -> tuple[str, ...]:
    """The protocols run from ``step``: both from an x_t of the trajectory; from x_T (D-TRAK's
    regeneration) only ``b``, the whole trajectory (``a`` would swap the model in for the first
    Δ steps of pure noise only)."""
    return ("b",) if step == timesteps[0] else PROTOCOLS


def protocol_predictors(
    original: Predictor, counterfactual: Predictor, step: int, delta: int, timesteps: Sequence[int]
) -> dict[str, Predictor]:
    """The runs compared from x_t: ``original``; ``a`` the counterfactual model on the sampler
    steps in [t − Δ, t] and the original elsewhere (the paper's protocol); ``b`` the
    counterfactual model for every remaining step (:func:`protocols_at` says which run)."""
    runs = {
        "a": swapped_predictor(original, counterfactual, swap_window(step, delta, timesteps)),
        "b": counterfactual,
    }
    return {"original": original} | {p: runs[p] for p in protocols_at(step, timesteps)}


def floor_pairs(cases: Sequence[Case]) -> list[tuple[int, int]]:
    """The (target, step) pairs the seed floor is measured at: every pair some case examines."""
    return sorted({(c.target, c.step) for c in cases})


def resample_generators(seed: int, target_id: int, step: int, samples: int):
    return [generator(seed, "cf-resample", target_id, step, s) for s in range(samples)]


def resample(
    x_t: Tensor,
    step: int,
    scheduler,
    sampling_steps: int,
    predictor: Predictor,
    seed: int,
    target_id: int,
    samples: int,
) -> Tensor:
    """S samples of p(·|x_t) from the stored x_t (C, H, W), with streams shared across models."""
    x = x_t[None].expand(samples, *x_t.shape).clone()
    gens = resample_generators(seed, target_id, step, samples)
    return denoise(x, scheduler, sampling_steps, predictor, gens, start_at=step).final


def swap_window(step: int, delta: int, timesteps: Sequence[int]) -> list[int]:
    """Sampler timesteps in [t − Δ, t] (protocol a)."""
    return [u for u in timesteps if step - delta <= u <= step]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^{1/2}) between two sets of row vectors.

    Tr((Σ_a Σ_b)^{1/2}) is computed as Σ √eig(Σ_a^{1/2} Σ_b Σ_a^{1/2}) (symmetric PSD), which
    stays exact when the covariances are singular (fewer samples than dimensions).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = linalg.eigh(ca)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(linalg.eigvalsh(root_a @ cb @ root_a), 0, None)).sum()
    return float(max(mu @ mu + np.trace(ca) + np.trace(cb) - 2 * cross, 0.0))


def sample_metrics(original: Tensor, other: Tensor, classifier, target_class: int) -> dict:
    """Paired L2, drop of P(target class), Fréchet distance in the classifier's embedding."""
    with torch.no_grad():
        l2 = (original - other).flatten(1).norm(dim=1).mean().item()
        p_orig = classifier.probabilities(original)[:, target_class].mean().item()
        p_other = classifier.probabilities(other)[:, target_class].mean().item()
        fd = frechet_distance(classifier.embed(original).numpy(), classifier.embed(other).numpy())
    return {"l2": l2, "prob_drop": p_orig - p_other, "frechet": fd}


def emergence(  # noqa: PLR0913  (issue 32: not yet split)
    predictor: Predictor,
    scheduler,
    sampling_steps: int,
    x_t: Tensor,
    steps: Sequence[int],
    target_ids: Sequence[int],
    classifier,
    classes: Sequence[int],
    samples: int,
    seed: int,
    batch: int = 512,
) -> tuple[np.ndarray, Tensor]:
    """P(final class) among S samples of p(·|x_t) per (step, target), and the samples themselves.

    ``x_t`` is (n_steps, n_targets, C, H, W); returns probabilities (n_steps, n_targets) and
    samples (n_steps, n_targets, S, C, H, W). Targets are denoised a few at a time (about
    ``batch`` images at once; every image has its own noise stream, so chunks change nothing).
    """
    n_steps, n_targets = x_t.shape[:2]
    shape = x_t.shape[2:]
    probs = np.zeros((n_steps, n_targets))
    out = torch.empty(n_steps, n_targets, samples, *shape)
    per_chunk = max(1, batch // samples)
    for s, t in enumerate(steps):
        for lo in range(0, n_targets, per_chunk):
            ids, cls = target_ids[lo : lo + per_chunk], list(classes[lo : lo + per_chunk])
            x = x_t[s, lo : lo + len(ids), None].expand(len(ids), samples, *shape)
            gens = [g for j in ids for g in resample_generators(seed, int(j), int(t), samples)]
            start = x.reshape(-1, *shape).clone()
            run = denoise(start, scheduler, sampling_steps, predictor, gens, start_at=int(t))
            final = run.final
            out[s, lo : lo + len(ids)] = final.view(len(ids), samples, *shape).cpu()
            p = classifier.probabilities(final).view(len(ids), samples, -1)
            picked = p[torch.arange(len(ids)), :, torch.as_tensor(cls, device=p.device)]
            probs[s, lo : lo + len(ids)] = picked.mean(1).cpu().numpy()
    return probs, out


def decision_step(probs: np.ndarray, steps: Sequence[int]) -> int:
    """The step just before the steepest rise of P(final class) along the trajectory
    (``probs`` ordered noisy → clean): from x_t at this step the feature is still being decided."""
    if len(steps) < 2:
        return int(steps[0])
    rise = np.diff(probs)
    return int(steps[int(np.argmax(rise))])
