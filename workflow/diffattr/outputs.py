"""Model-output functions f whose parameter-gradients are the attribution features.

A *row* is one (image, timestep, noise[, condition]) draw. Each output maps a batch of rows
to one scalar per row; an example's (or target's) output is the sum over its rows:

- ``loss``        ℓ = mean((ε_θ(x_t, t) − ε)²)   (Journey-TRAK, TRAK; the DDPM loss)
- ``square_norm`` ℓ = mean(ε_θ(x_t, t)²)         (D-TRAK's L_square; no target noise)

with x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from .errors import ConfigError

Batch = Mapping[str, Tensor]


def _loss(pred: Tensor, eps: Tensor) -> Tensor:
    return (pred - eps) ** 2


def _square_norm(pred: Tensor, eps: Tensor) -> Tensor:
    return pred**2


OUTPUTS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "loss": _loss,
    "square_norm": _square_norm,
}


def add_noise(alphas_cumprod: Tensor, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, broadcasting ᾱ_t over the image dimensions."""
    abar = alphas_cumprod.to(device=x0.device, dtype=x0.dtype)[t].reshape(-1, *[1] * (x0.dim() - 1))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def predict_noise(model: nn.Module, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
    """ε_θ(x_t, t[, c]) for a diffusers UNet (conditional when ``cond`` is given)."""
    if cond is None:
        return model(x_t, t).sample
    return model(x_t, t, encoder_hidden_states=cond).sample


def row_outputs(model: nn.Module, alphas_cumprod: Tensor, batch: Batch, output: str) -> Tensor:
    """One scalar per row of ``batch`` (``x0``, ``t``, ``eps``; optional ``cond``)."""
    if output not in OUTPUTS:
        raise ConfigError(f"unknown model output {output!r}; available: {sorted(OUTPUTS)}")
    x0, t, eps = batch["x0"], batch["t"], batch["eps"]
    pred = predict_noise(model, add_noise(alphas_cumprod, x0, t, eps), t, batch.get("cond"))
    err = OUTPUTS[output](pred.to(eps.dtype), eps)  # the output in full precision
    return err.flatten(1).mean(1)


@torch.no_grad()
def evaluate(
    model: nn.Module, alphas_cumprod: Tensor, batch: Batch, output: str, chunk: int = 1024
) -> Tensor:
    """:func:`row_outputs` without gradients, in chunks of rows (for ground truth)."""
    n = batch["x0"].shape[0]
    parts = []
    for lo in range(0, n, chunk):
        part = {k: v[lo : lo + chunk] for k, v in batch.items()}
        parts.append(row_outputs(model, alphas_cumprod, part, output))
    return torch.cat(parts)
