"""The attribution methods: the registry. One class each, in the module of its family:

- ``gradient``: the TRAK family (journey_trak, journey_trak_local, dtrak_step, trak, dtrak, das,
  das_step) on projected training and target gradients;
- ``baselines``: pixel_similarity, optimal_denoiser, random (gradient-free);
- ``ekfac``, ``unlearning``: per-member methods, each member scored by a job of its own
  (``diffattr member-scores --method M``), the members averaged by the score job.

``base`` holds the protocol (``Method``, ``PerMemberMethod``, ``Needs``, the contexts).
Adding a method: its class in a module here, one line in ``METHODS`` (the schema's method enums
and ``config.ALL_METHODS``/``config.PATCH_METHODS`` are tested against the registry and the
classes' ``default``/``patches``); a per-member method adds its config section and slice (the
README's "Adding a method").
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ConfigError
from .base import (
    FeatureKind,
    MemberDraws,
    MemberJob,
    MemberResult,
    Method,
    Needs,
    PerMemberMethod,
    ScoringContext,
    ScoringInputs,
    TargetQuery,
)
from .baselines import OptimalDenoiser, PixelSimilarity, RandomScores
from .ekfac import Ekfac
from .gradient import (
    Das,
    DasStep,
    DTrak,
    DTrakStep,
    FinalImage,
    GradientMethod,
    JourneyTrak,
    JourneyTrakLocal,
    PerStepGradient,
    Trak,
)
from .local_denoiser import LocalDenoiser
from .mucs import Mucs, MucsStep
from .unlearning import Unlearning, UnlearningFinal

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "PATCH_METHODS",
    "DTrak",
    "DTrakStep",
    "Das",
    "DasStep",
    "Ekfac",
    "FeatureKind",
    "FinalImage",
    "GradientMethod",
    "JourneyTrak",
    "JourneyTrakLocal",
    "MemberDraws",
    "MemberJob",
    "MemberResult",
    "Method",
    "Needs",
    "OptimalDenoiser",
    "PerMemberMethod",
    "PerStepGradient",
    "PixelSimilarity",
    "RandomScores",
    "ScoringContext",
    "ScoringInputs",
    "TargetQuery",
    "Trak",
    "Unlearning",
    "UnlearningFinal",
    "check_specificity",
    "get_method",
    "gradient_method",
    "member_method",
]

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
        Mucs(),
        MucsStep(),
        PixelSimilarity(),
        OptimalDenoiser(),
        LocalDenoiser(),
        RandomScores(),
    )
}

DEFAULT_METHODS = tuple(name for name, m in METHODS.items() if m.default)
"""``attribution.methods``' default (``config.ALL_METHODS``, tested equal)."""
PATCH_METHODS = tuple(name for name, m in METHODS.items() if m.patches)
"""Methods that can score patches (``config.PATCH_METHODS``, tested equal)."""


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown attribution method {name!r}; available: {sorted(METHODS)}")
    return METHODS[name]


def gradient_method(name: str) -> GradientMethod:
    method = get_method(name)
    if not isinstance(method, GradientMethod):
        raise ConfigError(f"{name} does not use gradient features")
    return method


def member_method(name: str) -> PerMemberMethod:
    """A method scored per ensemble member by jobs of its own (``member-scores``)."""
    method = get_method(name)
    if not isinstance(method, PerMemberMethod):
        per_member = sorted(n for n, m in METHODS.items() if isinstance(m, PerMemberMethod))
        raise ConfigError(f"{name} is not scored per member; per-member methods: {per_member}")
    return method


def check_specificity(methods: Iterable[str]) -> None:
    """The step-specificity arm (``counterfactual.specificity``) compares removals chosen at two
    steps of the same target: only a step-specific method has two different rows to choose from."""
    for name in methods:
        if get_method(name).target_image == "final":
            raise ConfigError(
                f"counterfactual.specificity {name}: its scores are the same at every step "
                "(trajectory-free); choose a step-specific method such as journey_trak"
            )


def unused_score_keys(method: str) -> tuple[str, ...]:
    """The config sections of other methods' score jobs (``Method.score_section``): left out of
    ``method``'s score slice, so a setting of one method reruns no other method's scores."""
    return tuple(
        f"attribution.{m.score_section}"
        for m in METHODS.values()
        if m.score_section is not None and m.name != method
    )
