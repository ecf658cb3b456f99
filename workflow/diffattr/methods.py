"""The attribution methods: one class each, owning what it differentiates and how it scores.

Gradient methods share the TRAK estimator (``scoring``) and differ in their model outputs and in
the target image and timesteps of the target output:

- ``journey_trak``: train f = Σ_k ℓ(x_i, t_k, ε_k), K random t; target f_t = Σ_r ℓ(x̂_0^t, t, ε_r).
- ``dtrak``: the same with D-TRAK's output mean(ε_θ(x_t,t)²) in place of the loss ℓ.
- ``trak``: D-TRAK's TRAK baseline; the target is the loss of the final image summed over K
  uniformly spaced timesteps (one score vector per target, repeated at every step).

Baselines: ``pixel_similarity`` (cosine of x̂_0^t with each training image) and ``random``.

Adding a method: one class here, one line in ``METHODS``, and its name in the schema's two
method enums (a test keeps them equal to the registry); add it to the default of
``attribution.methods`` (schema and ``config.AttributionConfig``) to run it by default.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .errors import ConfigError
from .scoring import BlockFn, Kernel, TrakScorer, pixel_similarity_block, random_block


@dataclass(frozen=True)
class TargetQuery:
    """One target output to featurize: ``images`` (targets, ...) at ``timesteps`` (one draw each);
    its features fill the attribution steps at positions ``step_indices``."""

    step_indices: list[int]
    images: np.ndarray
    timesteps: list[int]


@dataclass(frozen=True)
class ScoringInputs:
    """What scoring reads: training images, the targets, and per ensemble member (gradient
    methods) its training-feature store, kernel and target features (steps, targets, k)."""

    train_images: np.ndarray
    steps: list[int]
    target_ids: np.ndarray
    x0_hat: np.ndarray
    seed: int
    members: Sequence[tuple[Any, Kernel, np.ndarray]] = ()


class Method(ABC):
    """An attribution method: a name, a description and a scorer."""

    name: ClassVar[str]
    description: ClassVar[str]
    target_image: ClassVar[str] = "x0_hat"  # "x0_hat" (per step) or "final" (same at every step)
    uses_gradients: ClassVar[bool] = False
    train_output: ClassVar[str | None] = None

    @abstractmethod
    def scorer(self, inputs: ScoringInputs) -> BlockFn:
        """Blocks of scores τ (positive: supports the target)."""

    def attributes(self) -> dict[str, Any]:
        """What the score file records about the method."""
        return {
            "method": self.name,
            "description": self.description,
            "target_image": self.target_image,
        }


class GradientMethod(Method):
    """TRAK estimator on projected gradients of ``train_output`` and ``target_output``."""

    uses_gradients = True
    train_output: ClassVar[str]
    target_output: ClassVar[str]

    @abstractmethod
    def target_queries(
        self, x0_hat: np.ndarray, final: np.ndarray, steps: Sequence[int], K: int, R: int, T: int
    ) -> list[TargetQuery]:
        """The target outputs whose gradients are ψ, per attribution step."""

    def scorer(self, inputs: ScoringInputs) -> BlockFn:
        return TrakScorer(inputs.members)

    def attributes(self) -> dict[str, Any]:
        return {
            **super().attributes(),
            "train_output": self.train_output,
            "target_output": self.target_output,
        }


class PerStepGradient(GradientMethod):
    """f_t = Σ_r output(x̂_0^t, t, ε_r): R draws at the attribution step itself."""

    def target_queries(self, x0_hat, final, steps, K, R, T):
        return [TargetQuery([s], x0_hat[s], [t] * R) for s, t in enumerate(steps)]


class JourneyTrak(PerStepGradient):
    name = "journey_trak"
    description = "Journey-TRAK (per step)"
    train_output = "loss"
    target_output = "loss"


class DTrak(PerStepGradient):
    name = "dtrak"
    description = "D-TRAK, per step"
    train_output = "square_norm"
    target_output = "square_norm"


class Trak(GradientMethod):
    """The final image's loss at K uniformly spaced timesteps: the same ψ at every step."""

    name = "trak"
    description = "TRAK on the final image"
    target_image = "final"
    train_output = "loss"
    target_output = "loss"

    def target_queries(self, x0_hat, final, steps, K, R, T):
        from .features import uniform_timesteps  # (torch: only jobs that featurize need it)

        return [TargetQuery(list(range(len(steps))), final, uniform_timesteps(K, T))]


class PixelSimilarity(Method):
    name = "pixel_similarity"
    description = "cosine similarity of x̂_0^t to x_i"

    def scorer(self, inputs: ScoringInputs) -> BlockFn:
        return pixel_similarity_block(inputs.train_images, inputs.x0_hat)


class RandomScores(Method):
    name = "random"
    description = "seeded Gaussian scores (the floor)"

    def scorer(self, inputs: ScoringInputs) -> BlockFn:
        return random_block(inputs.seed, inputs.steps, inputs.target_ids, len(inputs.train_images))


METHODS: dict[str, Method] = {
    m.name: m for m in (JourneyTrak(), DTrak(), Trak(), PixelSimilarity(), RandomScores())
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown attribution method {name!r}; available: {sorted(METHODS)}")
    return METHODS[name]


def scorer(
    method: Method,
    train_images: np.ndarray,
    x0_hat: np.ndarray,
    steps: list[int],
    target_ids: np.ndarray,
    seed: int,
    members: Sequence[tuple[Any, Kernel, np.ndarray]] = (),
) -> BlockFn:
    """Blocks of the method's scores (steps, targets, n_train); gradient methods need, per
    ensemble member, its training features Φ, kernel and target features ψ."""
    if method.uses_gradients and not members:
        raise ValueError(f"{method.name} needs ensemble members (features and kernels)")
    inputs = ScoringInputs(train_images, steps, target_ids, x0_hat, seed, members)
    return method.scorer(inputs)


def gradient_method(name: str) -> GradientMethod:
    method = get_method(name)
    if not isinstance(method, GradientMethod):
        raise ConfigError(f"{name} does not use gradient features")
    return method
