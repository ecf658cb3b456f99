"""Attribution features: projected gradients of the model outputs of training examples and targets.

Draws are keyed, never sequential: training example ``id`` at draw k of model m uses
``generator(seed, "train-draw", m, id, k)`` for (t_k, ε_k); a target's draw r at timestep t uses
``generator(seed, "target-draw", target_id, t, r)``. Shards are unions of whole batches at fixed
positions, so a sharded run computes every example in the same batch as a single job does and the
features agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .data import take_rows
from .diffusion import autocast
from .draws import FeatureDraws, ModelDraws, TargetDraws
from .layout import shard_positions  # noqa: F401  (re-exported: the shards' rows)
from .outputs import Batch, evaluate, row_outputs
from .projection import Projector
from .schedule import uniform_timesteps
from .seeding import generator


def train_draws(  # noqa: PLR0913  (issue 32: not yet split)
    ids: Sequence[int],
    draws: int,
    num_timesteps: int,
    shape: tuple[int, ...],
    seed: int,
    model: int,
    captions: int = 0,
    flip: bool = False,
    grid: Sequence[int] | None = None,
    window: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Timesteps (n, K), noise (n, K, *shape), caption index (n, K) and mirror flag (n, K) for
    training examples, all keyed by (model, id, k). Captions and flips are drawn only when used.
    With ``grid`` (K timesteps) draw k of every example is at ``grid[k]`` instead of a random t;
    with ``window`` (lo, hi) random t are uniform on lo…hi instead of 0…T−1."""
    lo, hi = (0, num_timesteps - 1) if window is None else window
    ts = torch.empty(len(ids), draws, dtype=torch.long)
    eps = torch.empty(len(ids), draws, *shape)
    caps = torch.zeros(len(ids), draws, dtype=torch.long)
    flips = torch.zeros(len(ids), draws, dtype=torch.bool)
    for i, example in enumerate(ids):
        for k in range(draws):
            g = generator(seed, "train-draw", model, int(example), k)
            if grid is None:
                ts[i, k] = torch.randint(lo, hi + 1, (1,), generator=g)
            else:
                ts[i, k] = grid[k]
            eps[i, k] = torch.randn(shape, generator=g)
            if captions:
                caps[i, k] = torch.randint(captions, (1,), generator=g)
            if flip:
                flips[i, k] = bool(torch.rand(1, generator=g) < 0.5)
    return ts, eps, caps, flips


def target_draws(
    target_ids: Sequence[int], timesteps: Sequence[int], shape: tuple[int, ...], seed: int, tag: str
) -> Tensor:
    """Noise (n, R, *shape) for targets: draw r of target j at the r-th of ``timesteps``.

    ``tag`` separates independent families of draws (attribution vs. ground truth).
    """
    eps = torch.empty(len(target_ids), len(timesteps), *shape)
    for j, target in enumerate(target_ids):
        for r, t in enumerate(timesteps):
            eps[j, r] = torch.randn(shape, generator=generator(seed, tag, int(target), int(t), r))
    return eps


def rows_batch(x0: Tensor, t: Tensor, eps: Tensor, cond: Tensor | None = None) -> dict[str, Tensor]:
    """Flatten (owners, draws, ...) draws into a batch of rows. ``x0`` and ``cond`` are either
    per owner (repeated over draws) or already per draw (owners, draws, ...)."""
    owners, draws = t.shape

    def rows(v: Tensor, per_owner_dims: int) -> Tensor:
        if v.dim() == per_owner_dims + 1:  # per owner: repeat for each draw
            v = v[:, None].expand(owners, draws, *v.shape[1:])
        return v.reshape(-1, *v.shape[2:])

    batch = {
        "x0": rows(x0, len(eps.shape) - 2),
        "t": t.reshape(-1),
        "eps": eps.reshape(-1, *eps.shape[2:]),
    }
    if cond is not None:
        batch["cond"] = rows(cond, 2)
    return batch


def project_rows(
    model: nn.Module,
    projector: Projector,
    alphas_cumprod: Tensor,
    spec: FeatureDraws,
    batch: Batch,
    box: Sequence[int] | None = None,
) -> Tensor:
    """Projected gradient features (owners, dim) of owner-summed outputs (of unit row gradients
    with ``normalize``; of the patch ``box`` only when given), in float32; ``spec``: the output,
    the draws per owner, the precision and the normalisation."""
    output, draws, precision, normalize = spec.output, spec.draws, spec.precision, spec.normalize
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    batch = {
        k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
        for k, v in batch.items()
    }
    row_fn = partial(
        _row_fn, alphas_cumprod=alphas_cumprod, output=output, precision=precision, box=box
    )
    return projector.project(model, row_fn, batch, draws, normalize).float()


def _row_fn(
    model, batch: Batch, alphas_cumprod: Tensor, output: str, precision: str, box=None
) -> Tensor:
    with autocast(batch["x0"].device, precision):
        return row_outputs(model, alphas_cumprod, batch, output, box)


def featurize_training(
    member: ModelDraws,
    projector: Projector,
    spec: FeatureDraws,
    positions: np.ndarray,
    conditions: np.ndarray | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Features (len(positions), dim) of the training examples at ``positions``.

    ``positions`` must consist of whole batches (see :func:`shard_positions`). With caption
    embeddings ``conditions`` (n, captions, L, D) every draw uses one seeded caption; ``flip``
    mirrors each draw's image with a seeded coin. ``uniform`` puts the K draws on D-TRAK's grid
    (:func:`uniform_timesteps`) instead of random timesteps; ``normalize`` sums unit per-draw
    gradients (DAS); ``window`` (lo, hi) restricts random timesteps to lo…hi (``spec``).
    """
    model, alphas_cumprod, images, ids = (
        member.model,
        member.alphas_cumprod,
        member.images,
        member.ids,
    )
    batch_size, seed, model_index = member.batch_size, member.seed, member.model_index
    output, draws, flip = spec.output, spec.draws, spec.flip
    uniform, window = spec.uniform, spec.window
    T = len(alphas_cumprod)
    shape = tuple(images.shape[1:])
    grid = uniform_timesteps(draws, T) if uniform else None
    out = np.empty((len(positions), projector.dim), dtype=np.float32)
    starts = range(0, len(positions), batch_size)
    for lo in tqdm(starts, desc=f"featurize {output}", disable=not progress, mininterval=2):
        pos = positions[lo : lo + batch_size]
        n_caps = 0 if conditions is None else conditions.shape[1]
        ts, eps, caps, flips = train_draws(
            ids[pos].tolist(), draws, T, shape, seed, model_index, n_caps, flip, grid, window
        )
        x0 = torch.from_numpy(images[pos])[:, None].expand(len(pos), draws, *shape)
        x0 = torch.where(flips[..., None, None, None], x0.flip(-1), x0)
        cond = None
        if conditions is not None:
            rows = np.broadcast_to(pos[:, None], caps.shape)
            cond = torch.from_numpy(take_rows(conditions, rows, caps.numpy()))
        batch = rows_batch(x0, ts, eps, None if cond is None else cond.float())
        out[lo : lo + len(pos)] = (
            project_rows(model, projector, alphas_cumprod, spec, batch).cpu().numpy()
        )
    return out


def featurize_targets(
    model: nn.Module,
    projector: Projector,
    alphas_cumprod: Tensor,
    spec: FeatureDraws,
    targets: TargetDraws,
    seed: int,
    batch_size: int,
    box: Sequence[int] | None = None,
) -> np.ndarray:
    """Features (n_targets, dim) of f = Σ_r f(images[j], timesteps[r], ε_r[, c_j]) per target j
    (of Σ_r unit gradients with ``normalize``; of the patch ``box`` of every target when given).
    The draws ε_r are keyed by target id, so patches and the whole image share them. ``spec``:
    the output, precision and normalisation (its ``draws`` are the ``targets``' timesteps)."""
    images, target_ids, timesteps = targets.images, targets.target_ids, targets.timesteps
    conditions, output, precision, normalize = (
        targets.conditions,
        spec.output,
        spec.precision,
        spec.normalize,
    )
    shape = tuple(images.shape[1:])
    out = np.empty((len(target_ids), projector.dim), dtype=np.float32)
    draws = len(timesteps)
    per_target = FeatureDraws(output, draws, precision, normalize=normalize)
    for lo in range(0, len(target_ids), batch_size):
        ids = list(target_ids[lo : lo + batch_size])
        eps = target_draws(ids, timesteps, shape, seed, "target-draw")
        ts = torch.tensor(list(timesteps), dtype=torch.long).expand(len(ids), draws)
        cond = None if conditions is None else conditions[lo : lo + len(ids)].float()
        batch = rows_batch(images[lo : lo + len(ids)], ts, eps, cond)
        out[lo : lo + len(ids)] = (
            project_rows(model, projector, alphas_cumprod, per_target, batch, box).cpu().numpy()
        )
    return out


def residual_weights(
    member: ModelDraws,
    positions: np.ndarray,
    timesteps: int,
    conditions: np.ndarray | None = None,
) -> np.ndarray:
    """DAS's residual weight per example: w_i = mean_t e_it / ‖e_i·‖₂ with e_it the RMS residual
    √mean((ε_θ(x_t, t) − ε)²) at ``timesteps`` uniformly spaced t, one draw each, seeded by
    (model, id, t). Conditional data uses each example's first caption."""
    model, alphas_cumprod, images, ids = (
        member.model,
        member.alphas_cumprod,
        member.images,
        member.ids,
    )
    batch_size, seed, model_index = member.batch_size, member.seed, member.model_index
    T = len(alphas_cumprod)
    grid = uniform_timesteps(timesteps, T)
    shape = tuple(images.shape[1:])
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out = np.empty(len(positions))
    for lo in range(0, len(positions), batch_size):
        pos = positions[lo : lo + batch_size]
        eps = torch.stack(
            [
                torch.stack(
                    [
                        torch.randn(
                            shape, generator=generator(seed, "residual", model_index, int(i), t)
                        )
                        for t in grid
                    ]
                )
                for i in ids[pos]
            ]
        )
        ts = torch.tensor(grid, dtype=torch.long).expand(len(pos), len(grid))
        first = np.zeros(len(pos), dtype=np.int64)
        cond = None if conditions is None else torch.from_numpy(take_rows(conditions, pos, first))
        cond = None if cond is None else cond.float()
        batch = rows_batch(torch.from_numpy(images[pos]), ts, eps, cond)
        batch = {
            k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
            for k, v in batch.items()
        }
        err = evaluate(model, alphas_cumprod, batch, "loss").double().sqrt().view(len(pos), -1)
        out[lo : lo + len(pos)] = (err.mean(1) / err.norm(dim=1).clamp_min(1e-30)).cpu().numpy()
    return out
