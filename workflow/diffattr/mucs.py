"""MUCS: attribution by bounded ("mirrored") unlearning with a skew score (Serrà et al., arXiv
2605.17938; code sony/mucs, ``attribution/mucs.py``), for this project's DDPM ε-prediction UNets.

For a target image x̂ (the final image: ``mucs``; x̂₀ᵗ at timestep t: ``mucs_step``), a copy of
the model takes optimizer steps on

    L = L_retain − λ · mean(min(ℓ_forget, L_null))

(retain: a shuffled training batch with training noise; forget: x̂ repeated over the batch, its
own noise — at t alone for ``mucs_step``), the forget loss clipped at L_null, the loss of the
untrained model, so the ascent is bounded; it stops once mean(min(ℓ_forget, L_null)) ≥ (1 − tol)
L_null or after ``max_steps``. Only the convolution weights of the residual blocks and samplers
move; frozen, as MUCS freezes its DiT's embedders, attention, adapters, output layer and biases:
the time embedding and its per-block projections, ``conv_in``, ``conv_out`` and its norm, every
attention module, every norm and every bias. Then for every training example i and the same
``noises`` draws (common random numbers, MUCS's ``use_same_noise_infer``) at timesteps of a
truncated schedule — the noisiest ``infer_fraction`` of [0, T) evenly spaced (MUCS's
``t_sched_infer = 0.7``, skipping the low-noise collapse regime), or t alone for ``mucs_step`` —

    τ_i = mean_r (L_u − L_o) / (L_u + L_o + ε),

the normalised skew of the unlearned (u) against the original (o) model's loss: positive = x_i's
fit worsens when x̂ is unlearned = x_i supports the target. Defaults are MUCS's: λ = 0.2,
tol = 0.05, 100 noises = the batch size, ε = 1e-3, the training optimizer (AdamW) at a tenth of
its learning rate. Left out: MUCS's data augmentation and instance weights (off by default
there), its automatic t-schedule estimate, and EDM's loss weighting (these models are DDPM).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .outputs import add_noise, predict_noise

FROZEN = (
    "time_embedding.",
    "time_emb_proj.",
    "conv_in.",
    "conv_out.",
    "conv_norm_out.",
    "attentions.",
    "norm",
    ".bias",
)
"""Parameter-name fragments MUCS keeps fixed (diffusers UNet2DModel names)."""


@dataclass(frozen=True)
class MucsSettings:
    """MUCS's hyper-parameters (sony/mucs ``Attributor`` defaults)."""

    lr: float = 3e-4  # the training lr (0.003) / MUCS's lr_factor 10
    forget_weight: float = 0.2  # λ
    tolerance: float = 0.05
    max_steps: int = 200
    noises: int = 100  # inference draws and unlearning batch size
    infer_fraction: float = 0.7
    eps: float = 1e-3
    null_batches: int = 20


def unlearnable(name: str) -> bool:
    """A parameter MUCS moves (residual-block and sampler convolution weights)."""
    return not any(part in name for part in FROZEN)


def _loss(model: nn.Module, alphas: Tensor, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """ℓ per row: mean over pixels of (ε_θ(x_t, t) − ε)²."""
    pred = predict_noise(model, add_noise(alphas, x0, t, eps), t)
    return ((pred - eps) ** 2).flatten(1).mean(1)


@torch.no_grad()
def null_loss(
    untrained: nn.Module, alphas: Tensor, images: Tensor, settings: MucsSettings, gen
) -> float:
    """L_null: the untrained model's mean training loss over ``null_batches`` random batches."""
    T, total = len(alphas), 0.0
    for _ in range(settings.null_batches):
        rows = torch.randint(len(images), (settings.noises,), generator=gen)
        t = torch.randint(T, (settings.noises,), generator=gen)
        eps = torch.randn((settings.noises, *images.shape[1:]), generator=gen, dtype=images.dtype)
        total += float(_loss(untrained, alphas, images[rows], t, eps).mean())
    return total / settings.null_batches


def unlearn(
    model: nn.Module,
    alphas: Tensor,
    images: Tensor,
    forget: Tensor,
    step: int | None,
    limit: float,
    settings: MucsSettings,
    gen,
) -> tuple[nn.Module, int]:
    """A copy of ``model`` that has unlearned ``forget`` (C, H, W) — at every timestep, or at
    ``step`` alone — with the forget loss bounded by ``limit`` = L_null; and its step count."""
    copy_ = copy.deepcopy(model).eval()  # eval on purpose, as MUCS (no dropout)
    params = []
    for name, p in copy_.named_parameters():
        p.requires_grad_(unlearnable(name))
        if p.requires_grad:
            params.append(p)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    T, b = len(alphas), settings.noises
    taken = 0
    while True:
        rows = torch.randint(len(images), (b,), generator=gen)
        t_r = torch.randint(T, (b,), generator=gen)
        eps_r = torch.randn((b, *images.shape[1:]), generator=gen, dtype=images.dtype)
        t_f = torch.full((b,), step) if step is not None else torch.randint(T, (b,), generator=gen)
        eps_f = torch.randn((b, *images.shape[1:]), generator=gen, dtype=images.dtype)
        retain = _loss(copy_, alphas, images[rows], t_r, eps_r).mean()
        forgotten = _loss(copy_, alphas, forget.expand(b, *forget.shape), t_f, eps_f)
        forgotten = forgotten.clamp(max=limit).mean()
        if (
            float(forgotten.detach()) >= (1 - settings.tolerance) * limit
            or taken >= settings.max_steps
        ):
            break
        optimizer.zero_grad(set_to_none=True)
        (retain - settings.forget_weight * forgotten).backward()
        optimizer.step()
        taken += 1
    return copy_.requires_grad_(False), taken


def inference_timesteps(T: int, noises: int, fraction: float, step: int | None) -> Tensor:
    """The draws' timesteps: ``step`` for every draw, or the first ``noises`` of
    ⌊noises/fraction⌋ evenly spaced from T − 1 to 0 (the noisiest ``fraction`` of the schedule)."""
    if step is not None:
        return torch.full((noises,), step)
    grid = torch.linspace(T - 1, 0, int(noises / fraction))
    return grid[:noises].round().long()


@torch.no_grad()
def inference_losses(
    model: nn.Module, alphas: Tensor, images: Tensor, t: Tensor, eps: Tensor, batch: int = 4096
) -> Tensor:
    """ℓ(x_i, t_r, ε_r) for every image i and draw r (the same draws for every image): (n, R)."""
    n, draws = len(images), len(t)
    x0 = images.repeat_interleave(draws, 0)
    tt, ee = t.repeat(n), eps.repeat(n, 1, 1, 1)
    out = torch.cat(
        [
            _loss(model, alphas, x0[lo : lo + batch], tt[lo : lo + batch], ee[lo : lo + batch])
            for lo in range(0, len(x0), batch)
        ]
    )
    return out.view(n, draws)


def skew_scores(unlearned: Tensor, original: Tensor, eps: float) -> np.ndarray:
    """τ_i = mean_r (L_u − L_o)/(L_u + L_o + ε): (n, R) losses → (n,)."""
    u, o = unlearned.double(), original.double()
    return ((u - o) / (u + o + eps)).mean(1).numpy()


def mucs_scores(draws, targets, settings: MucsSettings, untrained: nn.Module, finals=None):
    """One member's MUCS scores (steps, targets, n): every target x̂₀ᵗ unlearned at its step t
    (``mucs_step``), or, with ``finals`` (targets, …), each final image unlearned once and its
    scores repeated at every step (``mucs``). ``draws``: the member's ``ModelDraws``; every
    random draw is keyed by (seed, "mucs", model index, …)."""
    from .seeding import generator

    d = draws
    images = torch.as_tensor(d.images)
    keys = (d.seed, "mucs", d.model_index)
    limit = null_loss(untrained, d.alphas_cumprod, images, settings, generator(*keys, "null"))
    steps = [None] if finals is not None else list(targets.steps)
    out = np.empty((len(steps), len(targets.target_ids), len(images)))
    for s, step in enumerate(steps):
        tag = "final" if step is None else int(step)
        t = inference_timesteps(d.T, settings.noises, settings.infer_fraction, step)
        eps = torch.randn(
            (settings.noises, *images.shape[1:]), generator=generator(*keys, "eps", tag)
        )
        original = inference_losses(d.model, d.alphas_cumprod, images, t, eps)
        for j, target in enumerate(targets.target_ids):
            image = finals[j] if step is None else targets.x0_hat[s, j]
            unlearned, _ = unlearn(
                d.model,
                d.alphas_cumprod,
                images,
                torch.as_tensor(image),
                step,
                limit,
                settings,
                generator(*keys, "unlearn", int(target), tag),
            )
            losses = inference_losses(unlearned, d.alphas_cumprod, images, t, eps)
            out[s, j] = skew_scores(losses, original, settings.eps)
    return out if finals is None else np.repeat(out, len(targets.steps), 0)
