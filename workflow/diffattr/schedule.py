"""The noise schedule and the timesteps: ᾱ_t, D-TRAK's uniform grid, the sampler's timesteps and
the attribution steps among them (no model library: the workflow checks configs with them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ConfigError


def uniform_timesteps(count: int, num_timesteps: int) -> list[int]:
    """D-TRAK's uniformly spaced timesteps 0, T/K, 2T/K, … floored (``range(0, T, T // K)`` when
    K divides T; K = ``count``)."""
    return [k * num_timesteps // count for k in range(count)]


def alphas_cumprod(diffusion: Any) -> np.ndarray:
    """ᾱ_t = Π_{s≤t} (1 − β_s) of the linear schedule (float64; diffusers' DDPMScheduler holds
    the same values in float32)."""
    betas = np.linspace(diffusion.beta_start, diffusion.beta_end, diffusion.num_train_timesteps)
    return np.cumprod(1.0 - betas)


def sampler_timesteps(num_train_timesteps: int, sampling_steps: int) -> list[int]:
    """The timesteps a ``sampling_steps``-step DDPM sampler visits, noisy → clean: diffusers'
    "leading" spacing k·⌊T/n⌋ (a test keeps it equal to ``DDPMScheduler.set_timesteps``; the
    workflow checks configs without importing diffusers)."""
    if sampling_steps > num_train_timesteps:
        raise ConfigError(
            f"targets.sampling_steps ({sampling_steps}) exceeds diffusion.num_train_timesteps "
            f"({num_train_timesteps})"
        )
    ratio = num_train_timesteps // sampling_steps
    return [k * ratio for k in reversed(range(sampling_steps))]


def attribution_steps(spec: int | Sequence[int], timesteps: Sequence[int]) -> list[int]:
    """Attribution timesteps (noisy → clean). An int n picks n evenly spaced sampler timesteps
    ending with the last one; a list is checked against the sampler's timesteps."""
    timesteps = list(timesteps)
    if isinstance(spec, int):
        if not 1 <= spec <= len(timesteps):
            raise ConfigError(f"attribution.steps must be between 1 and {len(timesteps)}")
        idx = sorted({len(timesteps) - 1 - round(i * len(timesteps) / spec) for i in range(spec)})
        return [timesteps[i] for i in idx]
    missing = [t for t in spec if t not in timesteps]
    if missing:
        raise ConfigError(
            f"attribution.steps {missing} are not visited by a {len(timesteps)}-step sampler; "
            f"choose from its timesteps (e.g. {timesteps[:3]} … {timesteps[-3:]})"
        )
    return sorted(set(spec), reverse=True)
