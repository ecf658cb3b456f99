"""The attribution methods: one class each, owning what it differentiates and how it scores.

Gradient methods share the TRAK estimator (``scoring``) and differ in their training features
(:class:`FeatureKind`: output function, where the K draws sit in time, per-draw normalisation)
and in the target image and timesteps of the target output:

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

``ekfac`` (EK-FAC influence functions through kronfluence, ``diffattr.ekfac``) and
``unlearning``/``unlearning_final`` (attribution by unlearning, ``diffattr.unlearning``; the
latter trajectory-free): one score file per ensemble member (``member_scores``), averaged here.

Baselines: ``pixel_similarity`` (cosine of x̂_0^t with each training image), ``optimal_denoiser``
(leave-one-out effect on f_t under the training set's empirical optimal denoiser, gradient-free)
and ``random``.

Adding a method: one class here, one line in ``METHODS``, and its name in the schema's three
method enums (a test keeps them equal to the registry); add it to the default of
``attribution.methods`` (schema and ``config.AttributionConfig``) to run it by default.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .config import uniform_timesteps
from .errors import ConfigError
from .layout import Paths
from .scoring import (
    BlockFn,
    Kernel,
    TrakScorer,
    optimal_denoiser_block,
    pixel_similarity_block,
    random_block,
)


@dataclass(frozen=True)
class FeatureKind:
    """Which training gradients a feature set holds: the model ``output``, whether the K draws sit
    on D-TRAK's uniform timestep grid (else K seeded random t: over all timesteps, or within
    ``attribution.local_window`` around the attribution step ``near``) and whether each draw's
    gradient is L2-normalised before the sum (DAS). ``key`` names the set in paths."""

    output: str
    uniform: bool = False
    normalize: bool = False
    near: int | None = None

    @property
    def key(self) -> str:
        flags = ["uniform"] * self.uniform + ["normalized"] * self.normalize
        return "-".join([self.output, *flags] + ([] if self.near is None else [f"near{self.near}"]))

    @classmethod
    def parse(cls, key: str) -> FeatureKind:
        output, *flags = key.split("-")
        near = [f for f in flags if re.fullmatch(r"near\d+", f)]
        rest = [f for f in flags if f not in near]
        if (
            not output
            or set(rest) - {"uniform", "normalized"}
            or len(set(rest)) != len(rest)
            or len(near) > 1
            or (near and rest)
        ):
            raise ConfigError(
                f"{key!r} is not a feature kind: <output>[-uniform][-normalized] or "
                "<output>-near<t>, e.g. loss-uniform"
            )
        return cls(
            output,
            "uniform" in rest,
            "normalized" in rest,
            int(near[0].removeprefix("near")) if near else None,
        )


@dataclass(frozen=True)
class TargetQuery:
    """One target output to featurize: ``images`` (targets, ...) at ``timesteps`` (one draw each);
    its features fill the attribution steps at positions ``step_indices``."""

    step_indices: list[int]
    images: np.ndarray
    timesteps: list[int]


@dataclass(frozen=True)
class ScoringInputs:
    """What scoring reads: training images, the targets, per ensemble member (gradient methods)
    its training-feature store, kernel and target features (steps, targets, k), and for the
    optimal denoiser the schedule ᾱ_t and R draws."""

    train_images: np.ndarray
    steps: list[int]
    target_ids: np.ndarray
    x0_hat: np.ndarray
    seed: int
    members: Sequence[tuple[Any, Kernel, np.ndarray]] = ()
    alphas_cumprod: np.ndarray | None = None
    draws: int = 1
    member_scores: Sequence[np.ndarray] = ()


class Method(ABC):
    """An attribution method: a name, a description and a scorer."""

    name: ClassVar[str]
    description: ClassVar[str]
    target_image: ClassVar[str] = "x0_hat"  # "x0_hat" (per step) or "final" (same at every step)
    uses_gradients: ClassVar[bool] = False
    uses_member_scores: ClassVar[bool] = False  # scored per ensemble member by its own job
    # ... by several jobs per member: (blocks of the targets) × (shards of the training examples)
    scored_in_pieces: ClassVar[bool] = False
    # The config setting a per-member method's jobs score a grid of, for the LDS to tune (its λ)
    candidate_setting: ClassVar[str | None] = None
    train_output: ClassVar[str | None] = None

    @property
    def tunable(self) -> bool:
        """An LDS tunes its λ: the ridge of the TRAK estimator, or the candidate setting."""
        return self.uses_gradients or self.candidate_setting is not None

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

    def score_inputs(
        self,
        run: Paths,
        targets: Paths,
        members: Sequence[str],
        steps: Sequence[int],
        shards: int,
        pieces: tuple[int, int] = (1, 1),
    ) -> dict[str, list[str]]:
        """The files its score job reads besides data and targets: the run's per-member scores
        (for a method scored in pieces, ``pieces`` = (target blocks, training-example shards) per
        member), or its kernels and training shards (every feature kind over ``steps``) with the
        target features of ``targets`` (the run's own paths, or an extra target set's)."""
        inputs: dict[str, list[str]] = {
            "kernels": [],
            "target_features": [],
            "train_features": [],
            "member_scores": [],
        }
        if self.uses_member_scores:
            grid = [(t, s) for t in range(pieces[0]) for s in range(pieces[1])]
            inputs["member_scores"] = [
                run.member_scores(self.name, m, *piece)
                for m in members
                for piece in (grid if self.scored_in_pieces else [(None, None)])
            ]
        if isinstance(self, GradientMethod):
            kinds = [k.key for k in self.kinds(steps)]
            inputs["kernels"] = [run.kernel(k, m) for k in kinds for m in members]
            inputs["target_features"] = [targets.target_features(self.name, m) for m in members]
            inputs["train_features"] = [
                run.train_features(k, m, s) for k in kinds for m in members for s in range(shards)
            ]
        return inputs


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

    @abstractmethod
    def target_queries(
        self, x0_hat: np.ndarray, final: np.ndarray, steps: Sequence[int], K: int, R: int, T: int
    ) -> list[TargetQuery]:
        """The target outputs whose gradients are ψ, per attribution step."""

    def scorer(self, inputs: ScoringInputs) -> BlockFn:
        return TrakScorer(inputs.members, self.row_weights(store for store, _, _ in inputs.members))

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

    def target_queries(self, x0_hat, final, steps, K, R, T):
        return [TargetQuery([s], x0_hat[s], [t] * R) for s, t in enumerate(steps)]


class JourneyTrak(PerStepGradient):
    name = "journey_trak"
    description = "Journey-TRAK (per step)"
    train_features = FeatureKind("loss")
    target_output = "loss"


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


class DTrak(FinalImage):
    name = "dtrak"
    description = "D-TRAK (final image, uniform timesteps, mean ε_θ²)"
    train_features = FeatureKind("square_norm", uniform=True)
    target_output = "square_norm"


class Das(FinalImage):
    name = "das"
    description = "DAS (final image, unit per-timestep gradients of mean ε_θ, residual weights)"
    train_features = FeatureKind("mean", uniform=True, normalize=True)
    target_output = "mean"
    target_normalized = True
    residual_weighted = True


class DasStep(PerStepGradient):
    name = "das_step"
    description = "DAS features and weights, target at each step"
    train_features = Das.train_features
    target_output = "mean"
    target_normalized = True
    residual_weighted = True


class PixelSimilarity(Method):
    name = "pixel_similarity"
    description = "cosine similarity of x̂_0^t to x_i"

    def scorer(self, inputs: ScoringInputs) -> BlockFn:
        return pixel_similarity_block(inputs.train_images, inputs.x0_hat)


class PerMemberMethod(Method):
    """Scored by one job per ensemble member (its own score file); τ = (1/M) Σ_m τ_m."""

    uses_member_scores = True

    def scorer(self, inputs: ScoringInputs) -> BlockFn:
        mean = np.mean(np.stack(inputs.member_scores), axis=0)
        return lambda s, targets, rows: mean[s, targets, rows].astype(np.float32)


class Ekfac(PerMemberMethod):
    name = "ekfac"
    description = "EK-FAC influence functions (kronfluence), per step"
    candidate_setting = "ekfac_damping"  # λ_l = damping × mean eigenvalue of layer l


class Unlearning(PerMemberMethod):
    name = "unlearning"
    description = "attribution by unlearning (AbU), step-specific objective"
    scored_in_pieces = True  # attribution.unlearning_(train_)shards


class UnlearningFinal(Unlearning):
    name = "unlearning_final"
    description = "attribution by unlearning (AbU), final image on the uniform grid"
    target_image = "final"


class OptimalDenoiser(Method):
    name = "optimal_denoiser"
    description = "leave-one-out effect on f_t under the empirical optimal denoiser"

    def scorer(self, inputs: ScoringInputs) -> BlockFn:
        return optimal_denoiser_block(
            inputs.train_images,
            inputs.x0_hat,
            inputs.steps,
            inputs.target_ids,
            inputs.alphas_cumprod,
            inputs.draws,
            inputs.seed,
        )


class RandomScores(Method):
    name = "random"
    description = "seeded Gaussian scores (the floor)"

    def scorer(self, inputs: ScoringInputs) -> BlockFn:
        return random_block(inputs.seed, inputs.steps, inputs.target_ids, len(inputs.train_images))


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        JourneyTrak(),
        JourneyTrakLocal(),
        DTrakStep(),
        Trak(),
        DTrak(),
        Das(),
        DasStep(),
        Ekfac(),
        Unlearning(),
        UnlearningFinal(),
        PixelSimilarity(),
        OptimalDenoiser(),
        RandomScores(),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown attribution method {name!r}; available: {sorted(METHODS)}")
    return METHODS[name]


def check_specificity(methods: Iterable[str]) -> None:
    """The step-specificity arm (``counterfactual.specificity``) compares removals chosen at two
    steps of the same target: only a step-specific method has two different rows to choose from."""
    for name in methods:
        if get_method(name).target_image == "final":
            raise ConfigError(
                f"counterfactual.specificity {name}: its scores are the same at every step "
                "(trajectory-free); choose a step-specific method such as journey_trak"
            )


def scorer(
    method: Method,
    train_images: np.ndarray,
    x0_hat: np.ndarray,
    steps: list[int],
    target_ids: np.ndarray,
    seed: int,
    members: Sequence[tuple[Any, Kernel, np.ndarray]] = (),
    alphas_cumprod: np.ndarray | None = None,
    draws: int = 1,
    member_scores: Sequence[np.ndarray] = (),
) -> BlockFn:
    """Blocks of the method's scores (steps, targets, n_train); gradient methods need, per
    ensemble member, its training features Φ, kernel and target features ψ; the optimal
    denoiser the schedule ᾱ and its number of noise draws; ekfac its members' scores."""
    if method.uses_gradients and not members:
        raise ValueError(f"{method.name} needs ensemble members (features and kernels)")
    if method.uses_member_scores and not member_scores:
        raise ConfigError(f"{method.name} needs its ensemble members' score files")
    inputs = ScoringInputs(
        train_images,
        steps,
        target_ids,
        x0_hat,
        seed,
        members,
        alphas_cumprod,
        draws,
        member_scores,
    )
    return method.scorer(inputs)


def gradient_method(name: str) -> GradientMethod:
    method = get_method(name)
    if not isinstance(method, GradientMethod):
        raise ConfigError(f"{name} does not use gradient features")
    return method
