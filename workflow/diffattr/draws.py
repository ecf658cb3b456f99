"""The value objects the per-member numerics share (no model library: the DAG imports them).

:class:`ModelDraws` is one ensemble member's clump — its model and schedule, the training images
and ids, the run's seed, the member's model index (its keyed draws' tag) and the batch size —
and :class:`TargetSet` the targets a member job scores (x̂_0 per step, the steps, target ids);
:class:`FeatureDraws` how a training feature set draws."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelDraws:
    """One member's model, schedule ᾱ_t, training ``images``/``ids``, ``seed``, ``model_index``
    and ``batch_size``."""

    model: Any
    alphas_cumprod: Any
    images: np.ndarray
    ids: np.ndarray
    seed: int
    model_index: int
    batch_size: int = 64

    @property
    def T(self) -> int:
        return len(self.alphas_cumprod)


@dataclass(frozen=True)
class TargetSet:
    """The targets a member job scores: x̂_0 (steps, targets, …), the steps t and target ids."""

    x0_hat: np.ndarray
    steps: Sequence[int]
    target_ids: np.ndarray


@dataclass(frozen=True)
class FeatureDraws:
    """How a training feature set draws: the model ``output`` differentiated, K ``draws`` per
    example, the autocast ``precision``, seeded mirror ``flip``s, D-TRAK's ``uniform`` timestep
    grid, DAS's unit per-draw gradients (``normalize``) and a timestep ``window`` (lo, hi)."""

    output: str
    draws: int
    precision: str = "fp32"
    flip: bool = False
    uniform: bool = False
    normalize: bool = False
    window: tuple[int, int] | None = None


@dataclass(frozen=True)
class TargetDraws:
    """Targets whose output gradients are featurized: ``images`` (targets, …), their ids (which
    key the noise draws), one draw at each of ``timesteps`` and optional ``conditions``."""

    images: Any
    target_ids: Sequence[int]
    timesteps: Sequence[int]
    conditions: Any = None
