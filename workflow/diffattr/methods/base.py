"""The attribution-method protocol: what every family shares.

A method declares what its score job reads (:meth:`Method.needs`: feature kinds, target
features, per-member score files; ``layout`` maps them to files) and has two verbs: the member job
(:meth:`PerMemberMethod.member_job`: one ensemble member's scores, computed by a job of its own,
for the methods that score per member) and :meth:`Method.scorer` (the score job: blocks of τ,
combining the ensemble members). Heavy numerics are imported inside the member job: building the
workflow's DAG imports no model library."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..draws import ModelDraws
from ..errors import ConfigError
from ..scoring import BlockFn, Kernel


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
class Needs:
    """What ``method``'s score job reads besides the data and the targets: per ensemble member the
    kernels and training shards of ``feature_kinds`` and its ``target_features``, or its
    ``member_scores`` (``pieces``: one file per block of targets × shard of training examples).
    ``layout.Paths.score_inputs`` names the files."""

    method: str
    feature_kinds: tuple[str, ...] = ()
    target_features: bool = False
    member_scores: bool = False
    pieces: bool = False


@dataclass(frozen=True)
class ScoringContext:
    """What scoring reads: training images, the targets, per ensemble member (gradient methods)
    its training-feature store, kernel and target features (steps, targets, k), for the optimal
    denoiser the schedule ᾱ_t and R draws, for a per-member method its members' score arrays."""

    train_images: np.ndarray
    steps: list[int]
    target_ids: np.ndarray
    x0_hat: np.ndarray
    seed: int
    members: Sequence[tuple[Any, Kernel, np.ndarray]] = ()
    alphas_cumprod: np.ndarray | None = None
    draws: int = 1
    member_scores: Sequence[np.ndarray] = ()
    settings: Any = None  # the method's own config section (Method.score_section)


ScoringInputs = ScoringContext  # (its earlier name)


MemberDraws = ModelDraws
"""The clump every member job hands its numerics (``diffattr.draws.ModelDraws``)."""


@dataclass(frozen=True)
class MemberJob:
    """One per-member job: the config (its method's slice), the member's name and
    :class:`MemberDraws`, the prepared data and targets, and the piece (block ``part`` of the
    targets, ``shard`` of the training examples) of a method scored in pieces."""

    cfg: Any
    member: str
    draws: MemberDraws
    data: Any
    targets: Any
    part: int = 0
    shard: int = 0


@dataclass(frozen=True)
class MemberResult:
    """A member job's scores (steps, targets, n) for ``targets`` (the block it scored) and the
    training examples ``train_ids``; what the score file records; an optional candidate grid."""

    targets: Any
    train_ids: np.ndarray
    scores: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    candidates: Any = None


class Method(ABC):
    """An attribution method: a name, a description, what its score job reads and a scorer.

    ``default``: in ``attribution.methods``' default; ``patches``: can score patches (a per-step
    target output, or the in-patch baseline); ``family``: ``model`` (reads the trained models:
    gradients, unlearning), ``gradient_free`` (a baseline from the training images alone) or
    ``floor`` (random) — the LDS report's model-vs-gradient-free contrast reads it."""

    name: ClassVar[str]
    description: ClassVar[str]
    family: ClassVar[str] = "model"
    target_image: ClassVar[str] = "x0_hat"  # "x0_hat" (per step) or "final" (same at every step)
    uses_gradients: ClassVar[bool] = False
    uses_member_scores: ClassVar[bool] = False  # scored per ensemble member by its own job
    # ... by several jobs per member: (blocks of the targets) × (shards of the training examples)
    scored_in_pieces: ClassVar[bool] = False
    # The config setting whose grid the method scores (a per-member method in its member jobs,
    # another in its score job: :meth:`candidates`), for the LDS to tune like a λ
    candidate_setting: ClassVar[str | None] = None
    train_output: ClassVar[str | None] = None
    default: ClassVar[bool] = False
    patches: ClassVar[bool] = False
    # A config section of its own that its score job reads (attribution.<score_section>)
    score_section: ClassVar[str | None] = None

    @property
    def tunable(self) -> bool:
        """An LDS tunes its λ: the ridge of the TRAK estimator, or the candidate setting."""
        return self.uses_gradients or self.candidate_setting is not None

    def needs(self, steps: Sequence[int]) -> Needs:
        """What its score job reads over the attribution ``steps`` (besides data and targets)."""
        return Needs(self.name)

    def candidate_value(self, cfg: Any) -> float | None:
        """The configured value of ``candidate_setting`` (its score job's λ), if it has one."""
        return None

    def candidates(self, ctx: ScoringContext) -> Any:
        """A score job's scores at every value of its ``candidate_setting`` grid
        (``artifacts.Candidates``), or None (per-member methods: their member files hold them)."""
        return None

    def with_tuned(self, settings: Any, tuned: list[float]) -> Any:
        """Its config section with the per-step values an LDS report tuned (score-job grids)."""
        return settings

    @abstractmethod
    def scorer(self, ctx: ScoringContext) -> BlockFn:
        """Blocks of scores τ (positive: supports the target)."""

    def blocks(self, ctx: ScoringContext) -> BlockFn:
        """:meth:`scorer`, after checking that ``ctx`` holds what the method needs."""
        return self.scorer(ctx)

    def attributes(self) -> dict[str, Any]:
        """What the score file records about the method."""
        return {
            "method": self.name,
            "description": self.description,
            "target_image": self.target_image,
        }


class PerMemberMethod(Method):
    """Scored by one job per ensemble member (its own score file, or one per piece); τ = (1/M)
    Σ_m τ_m. ``slice`` names the config slice of its member job (``config.SLICES``),
    ``resources`` the job's local resources and ``cluster_resources`` its resources on a
    cluster (the Slurm profile's ``member_scores`` row holds the largest)."""

    uses_member_scores = True
    slice: ClassVar[str]
    resources: ClassVar[dict[str, int]] = {"mem_mb": 8000, "runtime": 240}
    cluster_resources: ClassVar[dict[str, int]] = {"gpu": 1, "mem_mb": 32000, "runtime": 1440}

    def needs(self, steps: Sequence[int]) -> Needs:
        return Needs(self.name, member_scores=True, pieces=self.scored_in_pieces)

    def pieces(self, cfg: Any) -> tuple[int, int]:
        """(blocks of the targets, shards of the training examples) each member is scored in."""
        return 1, 1

    def blocks(self, ctx: ScoringContext) -> BlockFn:
        if not ctx.member_scores:
            raise ConfigError(f"{self.name} needs its ensemble members' score files")
        return self.scorer(ctx)

    def scorer(self, ctx: ScoringContext) -> BlockFn:
        mean = np.mean(np.stack(ctx.member_scores), axis=0)
        return lambda s, targets, rows: mean[s, targets, rows].astype(np.float32)

    @abstractmethod
    def member_job(self, job: MemberJob) -> MemberResult:
        """One ensemble member's scores (or one piece of them)."""
