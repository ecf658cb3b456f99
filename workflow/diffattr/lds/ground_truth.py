"""Ground truth of the LDS: f_t measured on a subset model with common random numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..features import rows_batch, target_draws
from ..outputs import evaluate


def ground_truth_draws(target_ids: Sequence[int], t: int, draws: int, shape: tuple, seed: int):
    """The ground truth's noise at step t, (targets, draws, *shape): the same ε for every subset
    model and for the memorization reference (common random numbers)."""
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
