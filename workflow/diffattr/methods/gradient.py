"""The TRAK family: the TRAK estimator on projected gradients, ensembled over members.

Gradient methods differ in their training features (:class:`FeatureKind`: output function, where
the K draws sit in time, per-draw normalisation) and in the target image and timesteps of the
target output:

- ``journey_trak``: train f = Σ_k ℓ(x_i, t_k, ε_k), K random t; target f_t = Σ_r ℓ(x̂_0^t, t, ε_r).
- ``journey_trak_local``: the same, but the K training draws scoring step t have timesteps in
  t ± ``attribution.local_window``/2, clipped to 0…T−1 (a feature set and kernel per step).
- ``dtrak_step``: the same with D-TRAK's output mean(ε_θ²) in place of the loss ℓ.
- ``trak`` and ``dtrak`` (the D-TRAK paper's protocol): training and target features at the same
  K uniformly spaced timesteps ⌊kT/K⌋, k < K (D-TRAK's ``range(0, T, T // K)`` when K divides
  T); the target is the final image (one score vector per target, repeated at every step);
  outputs ℓ and mean(ε_θ²).
- ``das`` (Lin et al. 2025, code Jinxu-Lin/DAS): output mean(ε_θ) on the uniform grid, every
  per-timestep gradient L2-normalised before the sum (training and target side), and scores
  weighted per training example by DAS's residual term w_i = mean_t e_it / ‖e_i·‖₂ with
  e_it = RMS(ε_θ(x_t, t) − ε) on a uniform grid. ``das_step``: the same features and weights,
  target f_t = Σ_r unit ∇ mean(ε_θ(x̂_0^t, t, ε_r)) at the attribution step. Left out: DAS's
  optional leverage correction 1/(1 − h)² (its ``DAS0`` mode).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from ..schedule import uniform_timesteps
from ..scoring import BlockFn, TrakScorer
from .base import FeatureKind, Method, Needs, ScoringContext, TargetQuery


class GradientMethod(Method):
    """TRAK estimator on projected gradients: training features of kind ``train_features``,
    target features of ``target_output`` (unit per draw when ``target_normalized``)."""

    uses_gradients = True
    train_features: ClassVar[FeatureKind]
    target_output: ClassVar[str]
    target_normalized: ClassVar[bool] = False
    residual_weighted: ClassVar[bool] = False  # scores × DAS's per-example residual weights

    @property
    def train_output(self) -> str:
        return self.train_features.output

    def kind_at(self, step: int) -> FeatureKind:
        """The training features scoring attribution step ``step`` (the same at every step but
        for step-local methods)."""
        return self.train_features

    def kinds(self, steps: Sequence[int]) -> list[FeatureKind]:
        """The distinct feature kinds over ``steps``, in order of first use."""
        return list(dict.fromkeys(self.kind_at(t) for t in steps))

    def needs(self, steps: Sequence[int]) -> Needs:
        return Needs(self.name, tuple(k.key for k in self.kinds(steps)), target_features=True)

    @abstractmethod
    def target_queries(
        self, x0_hat: np.ndarray, final: np.ndarray, steps: Sequence[int], K: int, R: int, T: int
    ) -> list[TargetQuery]:
        """The target outputs whose gradients are ψ, per attribution step."""

    def blocks(self, ctx: ScoringContext) -> BlockFn:
        if not ctx.members:
            raise ValueError(f"{self.name} needs ensemble members (features and kernels)")
        return self.scorer(ctx)

    def scorer(self, ctx: ScoringContext) -> BlockFn:
        return TrakScorer(ctx.members, self.row_weights(store for store, _, _ in ctx.members))

    def row_weights(self, stores: Iterable[Any]) -> list[np.ndarray] | None:
        """Per member, the training examples' score weights (None: unweighted)."""
        return [s.residual_weights() for s in stores] if self.residual_weighted else None

    def attributes(self) -> dict[str, Any]:
        return {
            **super().attributes(),
            "train_output": self.train_output,
            "train_features": self.train_features.key,
            "target_output": self.target_output,
            "target_normalized": self.target_normalized,
            "residual_weighted": self.residual_weighted,
        }


class PerStepGradient(GradientMethod):
    """f_t = Σ_r output(x̂_0^t, t, ε_r): R draws at the attribution step itself."""

    patches = True

    def target_queries(self, x0_hat, final, steps, K, R, T):
        return [TargetQuery([s], x0_hat[s], [t] * R) for s, t in enumerate(steps)]


class JourneyTrak(PerStepGradient):
    name = "journey_trak"
    description = "Journey-TRAK (per step)"
    train_features = FeatureKind("loss")
    target_output = "loss"
    default = True


class JourneyTrakLocal(PerStepGradient):
    """Journey-TRAK whose training draws at step t have timesteps within ``local_window`` of t:
    one feature set, kernel and score per attribution step."""

    name = "journey_trak_local"
    description = "Journey-TRAK with training timesteps near each step"
    train_features = FeatureKind("loss")
    target_output = "loss"

    def kind_at(self, step: int) -> FeatureKind:
        return FeatureKind("loss", near=int(step))


class DTrakStep(PerStepGradient):
    name = "dtrak_step"
    description = "D-TRAK's output, per step"
    train_features = FeatureKind("square_norm")
    target_output = "square_norm"


class FinalImage(GradientMethod):
    """The D-TRAK protocol: the final image's output at the K uniformly spaced timesteps of the
    training features; the same ψ at every step."""

    target_image = "final"

    def target_queries(self, x0_hat, final, steps, K, R, T):
        return [TargetQuery(list(range(len(steps))), final, uniform_timesteps(K, T))]


class Trak(FinalImage):
    name = "trak"
    description = "TRAK (D-TRAK protocol: final image, uniform timesteps)"
    train_features = FeatureKind("loss", uniform=True)
    target_output = "loss"
    default = True


class DTrak(FinalImage):
    name = "dtrak"
    description = "D-TRAK (final image, uniform timesteps, mean ε_θ²)"
    train_features = FeatureKind("square_norm", uniform=True)
    target_output = "square_norm"
    default = True


class Das(FinalImage):
    name = "das"
    description = "DAS (final image, unit per-timestep gradients of mean ε_θ, residual weights)"
    train_features = FeatureKind("mean", uniform=True, normalize=True)
    target_output = "mean"
    target_normalized = True
    residual_weighted = True
    default = True


class DasStep(PerStepGradient):
    name = "das_step"
    description = "DAS features and weights, target at each step"
    train_features = Das.train_features
    target_output = "mean"
    target_normalized = True
    residual_weighted = True
