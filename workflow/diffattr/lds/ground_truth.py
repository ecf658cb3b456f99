"""Ground truth of the LDS: f_t measured on a subset model with common random numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..features import rows_batch, target_draws
from ..outputs import add_noise, evaluate, predict_noise


def ground_truth_draws(target_ids: Sequence[int], t: int, draws: int, shape: tuple, seed: int):
    """The ground truth's noise at step t, (targets, draws, *shape): the same ε for every subset
    model and for the memorization reference (common random numbers)."""
    return target_draws(list(target_ids), list(range(draws)), shape, seed, f"gt-draw-{t}")


def ground_truth(  # noqa: PLR0913  (issue 32: not yet split)
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


def patch_weights(grid_boxes: np.ndarray, shape: tuple) -> np.ndarray:
    """(targets, patches, H, W) weights 1/(|P|·C) inside each box, 0 outside: Σ w·(ε_θ − ε)²
    over channels and pixels is the patch's mean squared error."""
    channels, h, w = shape
    out = np.zeros((*grid_boxes.shape[:2], h, w))
    for j, p in np.ndindex(*grid_boxes.shape[:2]):
        y0, x0, y1, x1 = grid_boxes[j, p]
        out[j, p, y0:y1, x0:x1] = 1.0 / ((y1 - y0) * (x1 - x0) * channels)
    return out


@torch.no_grad()
def patch_ground_truth(  # noqa: PLR0913  (issue 32: not yet split)
    model,
    alphas_cumprod,
    x0_hat: np.ndarray,
    steps: Sequence[int],
    target_ids: Sequence[int],
    draws: int,
    grid_boxes: np.ndarray,
    seed: int,
    chunk: int = 2048,
    cond: np.ndarray | None = None,
) -> np.ndarray:
    """f_t of every patch (n_steps, n_targets, n_patches) = mean_r of the patch's mean squared
    error, with the whole-image ground truth's draws (:func:`ground_truth_draws`: common random
    numbers across subset models, patches and the whole image)."""
    device = next(model.parameters()).device
    shape = tuple(x0_hat.shape[2:])
    weights = torch.from_numpy(patch_weights(grid_boxes, shape))
    out = np.empty((len(steps), len(target_ids), grid_boxes.shape[1]))
    c = None if cond is None else torch.from_numpy(cond).float()
    for s, t in enumerate(steps):
        eps = ground_truth_draws(target_ids, t, draws, shape, seed)
        ts = torch.tensor([t] * draws).expand(len(target_ids), draws)
        batch = rows_batch(torch.from_numpy(x0_hat[s]), ts, eps, c)
        owner = torch.arange(len(target_ids)).repeat_interleave(draws)
        total = torch.zeros(len(target_ids), grid_boxes.shape[1], dtype=torch.float64)
        for lo in range(0, len(owner), chunk):
            part = {k: v[lo : lo + chunk].to(device) for k, v in batch.items()}
            x_t = add_noise(alphas_cumprod, part["x0"], part["t"], part["eps"])
            pred = predict_noise(model, x_t, part["t"], part.get("cond")).to(part["eps"].dtype)
            err = ((pred - part["eps"]) ** 2).sum(1).double().cpu()  # (rows, H, W)
            rows = owner[lo : lo + chunk]
            per_row = torch.einsum("rhw,rphw->rp", err, weights[rows])
            total.index_add_(0, rows, per_row)
        out[s] = (total / draws).numpy()
    return out
