"""Group removal (MUCS's protocol, arXiv 2605.17938): one retraining per method serves a group.

- The group: the first ``group.size`` targets. Per method, the removal is the union over the
  group of each target's top-k positive influencers, ranked at the target's decision step (the
  emergence analysis's), or by the final-image attribution for a trajectory-free method (das,
  trak, …: the last attribution step's row, as the per-target protocol's ``final``).
- The null: ``group.random`` random removals of the same union size per method. Draw r is the
  first U of one seeded permutation of the training set, so the random removals of two methods
  at the same draw are nested (only the size differs).
- Every model (the methods', the random ones) trains with the full model's seed and randomness
  stream, as the per-target counterfactual models do, so the data is the only difference; each
  regenerates every target of the group from the target's own initial noise x_T with S paired
  streams (those the per-target ``final`` protocol uses), and so does the original model.
- Effects per (model, target), mean over the S paired samples: pixel L2, 1 − SSIM
  (``ssim_drop``) and the drop of the feature classifier's P(target class) (``prob_drop``).
  Against the null, per method and target: ratio = effect / mean random effect, AUC = the share
  of random removals with a smaller effect (ties count half); both averaged over the group's
  targets with percentile-bootstrap intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import CounterfactualConfig
from .counterfactual_summary import MIN_INTERVAL_TARGETS, bootstrap_interval
from .errors import ConfigError
from .layout import group_random
from .seeding import numpy_rng

METRICS = ("l2", "ssim_drop", "prob_drop")


@dataclass(frozen=True)
class GroupPlan:
    """The group protocol's removals: per model (``names``: methods, then random draws), the
    training examples kept (``keep`` (models, n)); the group's target positions; per method and
    target the step whose scores ranked it (``ranked_at`` (methods, targets))."""

    names: list[str]
    keep: np.ndarray
    targets: np.ndarray
    methods: list[str]
    ranked_at: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def removed(self, name: str) -> int:
        return int((~self.keep[self.names.index(name)]).sum())


def union_of_top_k(rows: np.ndarray, k: int) -> np.ndarray:
    """The sorted union over targets of each row's k largest scores (``rows`` (targets, n))."""
    from .counterfactual import top_influencers

    return np.unique(np.concatenate([top_influencers(row, k) for row in rows]))


def random_union(n: int, size: int, seed: int, draw: int) -> np.ndarray:
    """Random removal ``draw`` of ``size`` examples: the first ``size`` of a permutation keyed by
    the draw (nested across sizes), sorted."""
    return np.sort(numpy_rng(seed, "group-random", draw).permutation(n)[:size])


def ranking_step(trajectory_free: bool, decision: int, steps: Sequence[int]) -> int:
    """The attribution step whose scores rank a target's influencers: its decision step, or the
    last attribution step's row (the final-image attribution) for a trajectory-free method."""
    return int(steps[-1]) if trajectory_free else int(decision)


def plan(
    cf: CounterfactualConfig,
    n: int,
    steps: Sequence[int],
    decision_steps: Sequence[int],
    score_row: Callable[[str, int, int], np.ndarray],
    seed: int,
    trajectory_free: Collection[str] = (),
) -> GroupPlan:
    """The group protocol's models: per method the union of the group's top-k, then
    ``group.random`` random removals of each method's union size (:func:`random_union`).
    ``score_row(method, step, target)`` gives a method's scores (n,); ``trajectory_free``: the
    methods ranked by their final-image attribution (``Method.target_image == "final"``)."""
    group = cf.group
    targets = np.arange(group.size)
    keep: dict[str, np.ndarray] = {}
    ranked = np.zeros((len(cf.group_methods), group.size), dtype=np.int64)

    def mask(removed: np.ndarray) -> np.ndarray:
        out = np.ones(n, dtype=bool)
        out[removed] = False
        return out

    for i, method in enumerate(cf.group_methods):
        free = method in trajectory_free
        ranked[i] = [ranking_step(free, decision_steps[j], steps) for j in targets]
        rows = np.stack([score_row(method, int(ranked[i, j]), int(j)) for j in targets])
        removed = union_of_top_k(rows, group.k)
        if len(removed) >= n:
            raise ConfigError(
                f"counterfactual.group: {method}'s union of top-{group.k} removes all {n} "
                "training examples; choose a smaller k or group size"
            )
        keep[method] = mask(removed)
        for r in range(group.random):
            keep[group_random(method, r)] = mask(random_union(n, len(removed), seed, r))
    names = list(cf.group_models)
    return GroupPlan(
        names, np.stack([keep[m] for m in names]), targets, list(cf.group_methods), ranked
    )


# ---------------------------------------------------------------------------------------------
# Effects


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 2.0) -> np.ndarray:
    """SSIM of paired images (…, C, H, W) by scikit-image's ``structural_similarity`` (its
    uniform window of 7, or the largest odd side that fits a smaller image), channels averaged;
    images in [−1, 1] (``data_range`` 2)."""
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    shape = a.shape[-3:]
    side = min(shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    flat_a, flat_b = a.reshape(-1, *shape), b.reshape(-1, *shape)
    out = [
        structural_similarity(x, y, win_size=win, data_range=data_range, channel_axis=0)
        for x, y in zip(flat_a, flat_b, strict=True)
    ]
    return np.asarray(out).reshape(a.shape[:-3])


def effects(original, other, classifier, classes: Sequence[int]) -> dict[str, np.ndarray]:
    """Per target (mean over its S paired samples): pixel L2, 1 − SSIM, and the drop of
    P(target class) under ``classifier``. ``original``, ``other``: (targets, S, C, H, W)."""
    import torch

    original, other = np.asarray(original), np.asarray(other)
    n_targets, samples = original.shape[:2]
    l2 = np.linalg.norm((original - other).reshape(n_targets, samples, -1), axis=-1).mean(1)
    ssim_drop = 1 - ssim(original, other).mean(1)
    picked = torch.as_tensor(np.asarray(classes))[:, None].expand(n_targets, samples)

    def p_class(x: np.ndarray) -> np.ndarray:
        flat = torch.from_numpy(x.reshape(-1, *x.shape[2:])).float()
        p = classifier.probabilities(flat).view(n_targets, samples, -1)
        return p.gather(2, picked[..., None]).squeeze(2).mean(1).numpy()

    return {"l2": l2, "ssim_drop": ssim_drop, "prob_drop": p_class(original) - p_class(other)}


def against_random(effect: np.ndarray, random: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per target: (ratio of the effect to the mean random effect, AUC = the share of random
    removals with a smaller effect, ties counted half). ``effect`` (targets,), ``random``
    (draws, targets)."""
    effect, random = np.asarray(effect, np.float64), np.asarray(random, np.float64)
    ratio = effect / random.mean(0)
    auc = (random < effect).mean(0) + 0.5 * (random == effect).mean(0)
    return ratio, auc


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and bootstrap interval over targets (none below ``MIN_INTERVAL_TARGETS``)."""
    mean, low, high = bootstrap_interval(values)
    return (mean, np.nan, np.nan) if len(values) < MIN_INTERVAL_TARGETS else (mean, low, high)


def _with_interval(name: str, values: np.ndarray) -> dict[str, float]:
    return dict(zip([name, f"{name}_low", f"{name}_high"], _interval(values), strict=True))


def per_method(per_target) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Per (method, metric), over the group's targets (sorted): the method's own ``effect``, the
    ``random`` effects (draws, targets), ``ratio`` and ``auc`` (:func:`against_random`).
    ``per_target``: a DataFrame with columns method, draw (−1: the method's own removal),
    target, metric, value."""
    out = {}
    for (method, metric), g in per_target.groupby(["method", "metric"], sort=True):
        own = g[g.draw < 0].set_index("target").value.sort_index()
        null = g[g.draw >= 0].pivot(index="draw", columns="target", values="value")[own.index]
        ratio, auc = against_random(own.to_numpy(), null.to_numpy())
        out[method, metric] = {
            "effect": own.to_numpy(),
            "random": null.to_numpy(),
            "ratio": ratio,
            "auc": auc,
        }
    return out


def summarize(per_target, removed: dict[str, int]):
    """The report: per (method, metric) the mean effect over the group's targets, the random
    removals' mean effect and their spread (the standard deviation over draws, averaged over
    targets: how noisy one retraining is), ratio and AUC, and the paired effect − mean random
    effect, each with a bootstrap interval over targets (none below ``MIN_INTERVAL_TARGETS``
    targets). ``removed``: examples removed per method (each random draw removes as many)."""
    import pandas as pd

    rows = []
    for (method, metric), v in per_method(per_target).items():
        null = v["random"]
        row = {"method": method, "metric": metric, "removed": removed[method]}
        row |= {"n_targets": len(v["effect"]), "n_random": len(null)}
        row |= _with_interval("effect", v["effect"])
        row |= _with_interval("ratio", v["ratio"]) | _with_interval("auc", v["auc"])
        row |= _with_interval("minus_random", v["effect"] - null.mean(0))
        row["random"] = float(null.mean())
        row["random_sd"] = float(null.std(0, ddof=1).mean()) if len(null) > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def pairs(per_target):
    """Paired differences between every two methods over the group's targets, per metric: of
    the raw effect, the ratio and the AUC (each method against its own null of its own union
    size), with bootstrap intervals (none below ``MIN_INTERVAL_TARGETS`` targets)."""
    import pandas as pd

    values = per_method(per_target)
    rows = []
    for (a, metric), va in values.items():
        for (b, other_metric), vb in values.items():
            if a == b or metric != other_metric:
                continue
            row = {"method": a, "other": b, "metric": metric}
            for name in ("effect", "ratio", "auc"):
                row |= _with_interval(f"diff_{name}", va[name] - vb[name])
            rows.append(row)
    stats = [f"diff_{n}{x}" for n in ("effect", "ratio", "auc") for x in ("", "_low", "_high")]
    return pd.DataFrame(rows, columns=["method", "other", "metric", *stats])  # one method: none


BATCH = 512  # images denoised at once by :func:`regenerate`


def regenerate(
    predictor,
    scheduler,
    sampling_steps: int,
    noise,
    target_ids: Sequence[int],
    seed: int,
    samples: int,
    start: int,
):
    """S samples of every group target from its initial noise (``noise`` (targets, C, H, W))
    over the whole trajectory, with the paired streams of the per-target ``final`` protocol
    (``counterfactual.resample_generators`` keyed by (target id, x_T's timestep, s)); about
    ``BATCH`` images at once (each has its own stream, so chunks change nothing). Returns
    (targets, S, C, H, W) on the CPU."""
    import torch

    from .counterfactual import resample_generators
    from .diffusion import denoise

    shape = tuple(noise.shape[1:])
    out = torch.empty(len(target_ids), samples, *shape)
    per_chunk = max(1, BATCH // samples)
    for lo in range(0, len(target_ids), per_chunk):
        ids = [int(j) for j in target_ids[lo : lo + per_chunk]]
        x = noise[lo : lo + len(ids), None].expand(len(ids), samples, *shape)
        gens = [g for j in ids for g in resample_generators(seed, j, start, samples)]
        start_x = x.reshape(-1, *shape).clone()
        run = denoise(start_x, scheduler, sampling_steps, predictor, gens, start_at=start)
        out[lo : lo + len(ids)] = run.final.view(len(ids), samples, *shape).cpu()
    return out
