"""Regime diagnostics: does a model at attribution step t memorize its training set or generalize?

Three measurements on a pair of models trained on complementary halves (disjoint data), beside
the memorization reference's LDS (``lds.report``):

- agreement: both models regenerate each target from the same x_t with the same sampler noise;
  the Pearson correlation of the two final images (Kadkhodaie et al. 2024's reproducibility
  test, from step t instead of from x_T). Models that generalize agree; models that memorize
  snap to images of their own, disjoint, training sets.
- near copies: the share of regenerated images whose nearest training image (of the model's own
  half) is much nearer than the second, d₁/d₂ < 1/3 (Gu et al. 2025).
- loss gap: (L_held − L_train) / L_held, the model's denoising loss at t on held-out images (the
  other half) against its own training images, same noise draws (Kadkhodaie's criterion: ≈ 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR_COPY_RATIO = 1 / 3


@dataclass(frozen=True)
class VerdictRule:
    """memorizing: near copies ≥ ``memorized_copies`` or a loss gap ≥ ``memorized_gap`` or the
    memorization reference's LDS ≥ ``memorized_reference`` × ceiling; generalizing: near copies
    < ``general_copies``, loss gap < ``general_gap`` and (where measured) the reference below
    ``general_reference`` × ceiling; transitional otherwise."""

    memorized_copies: float = 0.5
    memorized_gap: float = 0.25
    memorized_reference: float = 0.5
    general_copies: float = 0.1
    general_gap: float = 0.05
    general_reference: float = 0.5

    def text(self) -> str:
        return (
            f"memorizing: near copies ≥ {self.memorized_copies:.0%} or loss gap ≥ "
            f"{self.memorized_gap:.0%} or memorization reference ≥ "
            f"{self.memorized_reference} × ceiling; generalizing: near copies < "
            f"{self.general_copies:.0%}, loss gap < {self.general_gap:.0%} and reference < "
            f"{self.general_reference} × ceiling; transitional otherwise"
        )


RULE = VerdictRule()


def verdict(
    near_copies: float, loss_gap: float, reference_share: float | None = None, rule=RULE
) -> str:
    """The step's regime under ``rule``; ``reference_share`` = memorization reference's LDS /
    ceiling (None: not measured, e.g. in the sweep, or no usable ceiling)."""
    ref = (
        -np.inf if reference_share is None or not np.isfinite(reference_share) else reference_share
    )
    if (
        near_copies >= rule.memorized_copies
        or loss_gap >= rule.memorized_gap
        or ref >= rule.memorized_reference
    ):
        return "memorizing"
    if (
        near_copies < rule.general_copies
        and loss_gap < rule.general_gap
        and ref < rule.general_reference
    ):
        return "generalizing"
    return "transitional"


def near_copy(samples: np.ndarray, train: np.ndarray, ratio: float = NEAR_COPY_RATIO) -> np.ndarray:
    """Per sample: its nearest training image is much nearer than the second, d₁/d₂ < ratio
    (Euclidean distances; ``samples`` (m, ...), ``train`` (n, ...), n ≥ 2)."""
    a = samples.reshape(len(samples), -1).astype(np.float64)
    b = train.reshape(len(train), -1).astype(np.float64)
    sq = (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None]
    two = np.sqrt(np.maximum(np.partition(sq, 1, axis=1)[:, :2], 0.0))
    return two[:, 0] < ratio * two[:, 1]


def agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation over pixels of a[i] and b[i] (1 where both are constant and equal)."""
    x = a.reshape(len(a), -1).astype(np.float64)
    y = b.reshape(len(b), -1).astype(np.float64)
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    norm = np.sqrt((x**2).sum(1) * (y**2).sum(1))
    return np.where(norm > 0, (x * y).sum(1) / np.where(norm > 0, norm, 1.0), 1.0)


def pair_losses(models, alphas_cumprod, halves, t: int, seed: int) -> tuple[float, float]:
    """(train, held-out) loss at t of two models of complementary ``halves`` (their images):
    each model on its own half and on the other's, 2 draws keyed by (seed, t, half), averaged
    over the two models."""
    losses = np.array(
        [
            [
                denoising_loss(m, alphas_cumprod, x, t, 2, (seed, "regime-loss", t, k))
                for k, x in enumerate(halves)
            ]
            for m in models
        ]
    )  # [model, half]: each model's own half on the diagonal
    return float(np.mean(np.diag(losses))), float(np.mean(losses[[0, 1], [1, 0]]))


def relative_gap(train_loss: float, held_loss: float) -> float:
    """(L_held − L_train) / L_held: 0 when the model does as well on images it never saw."""
    return (held_loss - train_loss) / held_loss


def regenerate(models, scheduler, x_t, start_at: int | None, sampling_steps: int, keys):
    """Each model's final images from the same x_t (``start_at`` None: x_T) and the same sampler
    noise, one generator per image keyed by ``keys(j)``: a list of (m, ...) arrays."""
    from ..diffusion import denoise, model_predictor
    from ..seeding import generator

    finals = []
    for model in models:
        gens = [generator(*keys(j)) for j in range(len(x_t))]
        run = denoise(x_t, scheduler, sampling_steps, model_predictor(model), gens, start_at)
        finals.append(run.final.numpy())
    return finals


def denoising_loss(model, alphas_cumprod, images, t: int, draws: int, seed_keys) -> float:
    """Mean ‖ε_θ(x_t, t) − ε‖² / d over ``images`` × ``draws`` noise draws keyed by
    ``seed_keys`` (the same ε for every model asked with the same keys and image count)."""
    import torch

    from ..outputs import add_noise, predict_noise
    from ..seeding import generator

    gen = generator(*seed_keys)
    x0 = torch.as_tensor(images).repeat(draws, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=gen)
    ts = torch.full((len(x0),), t, dtype=torch.long)
    total = 0.0
    with torch.no_grad():
        for lo in range(0, len(x0), 2048):
            part = slice(lo, lo + 2048)
            pred = predict_noise(
                model, add_noise(alphas_cumprod, x0[part], ts[part], eps[part]), ts[part]
            )
            total += float(((pred - eps[part]) ** 2).sum())
    return total / eps.numel()


def report_section(diagnostics: dict, context: dict, memorization: dict | None) -> dict:
    """lds.json's ``regime``: per step the diagnostics (regime.json), the memorization
    reference's share of the ceiling (its Spearman / √reliability, where reliability ≥ 0.5)
    and the verdict under :data:`RULE`. ``context[step]``: {"ceiling", "reliability"}."""
    steps = {}
    for step, measured in diagnostics["steps"].items():
        ctx = context.get(step, {})
        spearman = (memorization or {}).get(step, {}).get("spearman")
        usable = spearman is not None and ctx.get("reliability", -1) >= 0.5
        share = spearman / ctx["ceiling"] if usable and ctx["ceiling"] > 0 else None
        summary = {k: v for k, v in measured.items() if not k.endswith(("per_target", "per_model"))}
        steps[step] = {
            **summary,
            "reference_share": share,
            "verdict": verdict(measured["near_copies"], measured["loss_gap"], share),
        }
    return {"steps": steps, "rule": RULE.text(), "pair": diagnostics.get("models", [])}


def r_squared(model: np.ndarray, estimate: np.ndarray) -> float:
    """1 − Σ(model − estimate)² / Σ(model − mean(model))², pooled over targets and pixels:
    how much of the trained model's x̂₀ a gradient-free denoiser explains (Kamb & Ganguli)."""
    model, estimate = np.asarray(model, np.float64), np.asarray(estimate, np.float64)
    return float(1.0 - ((model - estimate) ** 2).sum() / ((model - model.mean()) ** 2).sum())
