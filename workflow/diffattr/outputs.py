"""Model-output functions f whose parameter-gradients are the attribution features.

A *row* is one (image, timestep, noise[, condition]) draw. Each output maps a batch of rows
to one scalar per row; an example's (or target's) output is the sum over its rows:

- ``loss``        mean((ε_θ − ε)²)   (Journey-TRAK, TRAK; the DDPM loss L_simple)
- ``square_norm`` mean(ε_θ²)         (D-TRAK's L_square; no target noise)
- ``mean``        mean(ε_θ)          (D-TRAK's L_avg; DAS's output)
- ``l1_norm``     ‖ε_θ‖₁             (D-TRAK's L_1-norm)
- ``l2_norm``     ‖ε_θ‖₂             (D-TRAK's L_2-norm)

with ε_θ = ε_θ(x_t, t[, c]), x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε and means/norms over one row's pixels
(as in D-TRAK's and DAS's code; the scale of an output does not change TRAK's scale-free scores).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .patches import crop

Batch = Mapping[str, Tensor]


OUTPUTS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "loss": lambda pred, eps: ((pred - eps) ** 2).mean(1),
    "square_norm": lambda pred, eps: (pred**2).mean(1),
    "mean": lambda pred, eps: pred.mean(1),
    "l1_norm": lambda pred, eps: pred.abs().sum(1),
    "l2_norm": lambda pred, eps: pred.norm(dim=1),
}
"""Output name → f(ε_θ, ε) per row, both flattened to (rows, pixels)."""


def add_noise(alphas_cumprod: Tensor, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, broadcasting ᾱ_t over the image dimensions."""
    abar = alphas_cumprod.to(device=x0.device, dtype=x0.dtype)[t].reshape(-1, *[1] * (x0.dim() - 1))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def predict_noise(model: nn.Module, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
    """ε_θ(x_t, t[, c]) for a diffusers UNet (conditional when ``cond`` is given)."""
    if cond is None:
        return model(x_t, t).sample
    return model(x_t, t, encoder_hidden_states=cond).sample


def row_outputs(
    model: nn.Module,
    alphas_cumprod: Tensor,
    batch: Batch,
    output: str,
    box: Sequence[int] | None = None,
) -> Tensor:
    """One scalar per row of ``batch`` (``x0``, ``t``, ``eps``; optional ``cond``); with ``box``
    [y0, x0, y1, x1) the output of the patch's pixels only (all channels; the whole box gives
    the whole-image output bit for bit)."""
    if output not in OUTPUTS:
        raise ConfigError(f"unknown model output {output!r}; available: {sorted(OUTPUTS)}")
    x0, t, eps = batch["x0"], batch["t"], batch["eps"]
    pred = predict_noise(model, add_noise(alphas_cumprod, x0, t, eps), t, batch.get("cond"))
    pred = pred.to(eps.dtype)  # the output in full precision
    if box is not None:
        pred, eps = crop(pred, box), crop(eps, box)
    return OUTPUTS[output](pred.flatten(1), eps.flatten(1))


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
