"""The typed experiment configuration: one frozen dataclass per schema section, and ``RunConfig``.

The JSON schema (``workflow/schemas/config.schema.yaml``) says what is valid; these dataclasses
are the only home of the defaults in code (a test keeps schema default == dataclass default, and
``config/README.md``'s tables are generated from the schema). ``RunConfig.from_dict`` validates a
whole config with the schema and then runs the cross-field checks, so a dry run catches them.

Each workflow job receives only the keys it reads (``RunConfig.slice(stage)``, the table
``SLICES``): Snakemake reruns a job when its parameters change, so adding a method or a figure
option retrains nothing. A job rebuilds its slice with ``RunConfig.from_slice``; a key its slice
does not carry reads as an error naming the key, never as a silent default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_type_hints

import yaml

from . import config_checks
from .config_schema import SCHEMA, _without_unset, schema, validate, without_nulls
from .config_section import (
    MOVED,
    NOT_PASSED,
    Section,
    _convert,
    _section_type,
    check_moved,
)
from .config_slices import SLICES, TRAIN_RECIPE, _parse_slice, _slice_spec
from .errors import ConfigError
from .layout import group_random
from .schedule import alphas_cumprod, attribution_steps, sampler_timesteps, uniform_timesteps

__all__ = [  # (re-exported: the config's public names, wherever they live)
    "MOVED",
    "NOT_PASSED",
    "SCHEMA",
    "SLICES",
    "Section",
    "alphas_cumprod",
    "attribution_steps",
    "check_moved",
    "sampler_timesteps",
    "schema",
    "uniform_timesteps",
    "validate",
    "without_nulls",
]


# ---------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True, eq=False, repr=False)
class DatasetConfig(Section):
    """Which data, how it is read and (mscoco) encoded. Loaders receive it as a mapping."""

    path: ClassVar[str] = "dataset"
    name: str
    root: str | None = None
    split: str | None = None  # None: the dataset's training split
    classes: tuple[int, ...] | None = None
    per_class: int | None = None
    flip: bool = False
    limit: int | None = None
    image_size: int = 128
    captions_per_image: int = 5
    max_length: int = 77
    vae: str | None = None
    vae_subfolder: str = "vae"
    text_encoder: str | None = None
    tokenizer_subfolder: str = "tokenizer"
    text_encoder_subfolder: str = "text_encoder"
    prompts: tuple[str, ...] | None = None
    val_prompts: int | None = None

    PROCEDURAL: ClassVar[tuple[str, ...]] = ("fontdigits", "photopatches")
    PROCEDURAL_SIZES: ClassVar[tuple[int, ...]] = (8, 16, 32)

    @property
    def reads_seed(self) -> bool:
        """Drawn from the run's master seed (procedural data); the others ignore it."""
        return self.name in self.PROCEDURAL

    @property
    def has_labels(self) -> bool:
        """Class labels exist (counterfactual retraining measures a class probability)."""
        return self.name != "mscoco"

    def check_procedural(self) -> None:
        """A procedural dataset renders 8×8, 16×16 or 32×32 images (image_size's default, 128,
        is the photographs' side)."""
        if self.name in self.PROCEDURAL and self.image_size not in self.PROCEDURAL_SIZES:
            raise ConfigError(
                f"{self.name} renders images of side {list(self.PROCEDURAL_SIZES)}, not "
                f"dataset.image_size {self.image_size}; set dataset.image_size: 8 (or 16, 32)"
            )


@dataclass(frozen=True, eq=False, repr=False)
class ModelConfig(Section):
    """The diffusers UNet's architecture."""

    path: ClassVar[str] = "model"
    block_out_channels: tuple[int, ...]
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention_head_dim: int | None = None  # None: diffusers' own default
    dropout: float = 0.0
    conditional: bool = False
    cross_attention_dim: int | None = None

    UNET_KEYS: ClassVar[tuple[str, ...]] = (
        "block_out_channels",
        "layers_per_block",
        "down_block_types",
        "up_block_types",
        "norm_num_groups",
        "attention_head_dim",
        "dropout",
    )

    def differences(self, saved: Mapping[str, Any]) -> list[str]:
        """How a saved UNet's config.json differs from this architecture (keys set here)."""
        conditional = saved.get("_class_name") == "UNet2DConditionModel"
        differ = ["conditional"] if conditional != self.conditional else []
        for key in self.UNET_KEYS:
            want = getattr(self, key)
            want = list(want) if isinstance(want, tuple) else want
            if want is not None and key in saved and saved[key] != want:
                differ.append(f"{key} {saved[key]} ≠ {want}")
        return differ


@dataclass(frozen=True, eq=False, repr=False)
class DiffusionConfig(Section):
    """The DDPM noise schedule."""

    path: ClassVar[str] = "diffusion"
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    clip_sample: bool = True

    def differences(self, saved: Mapping[str, Any]) -> list[str]:
        """How a saved scheduler_config.json differs from this schedule (β, T, ε-prediction)."""
        want = {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": "linear",
            "prediction_type": "epsilon",
        }
        return [f"{k} {saved.get(k)} ≠ {v}" for k, v in want.items() if saved.get(k, v) != v]


@dataclass(frozen=True, eq=False, repr=False)
class TrainConfig(Section):
    """The training recipe of every model (full, subset, counterfactual) plus the ensemble size."""

    path: ClassVar[str] = "train"
    RECIPE: ClassVar[tuple[str, ...]] = TRAIN_RECIPE
    steps: int
    ensemble: int = 3
    batch_size: int = 128
    lr: float = 0.003
    warmup_steps: int = 100
    ema_decay: float = 0.999
    log_every: int = 100
    checkpoints: tuple[int, ...] = ()
    p_uncond: float = 0.1
    precision: Literal["fp32", "bf16"] = "fp32"
    pretrained: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False, repr=False)
class TargetsConfig(Section):
    """The generated targets."""

    path: ClassVar[str] = "targets"
    n: int = 16
    sampling_steps: int = 1000
    guidance_scale: float = 1.0


@dataclass(frozen=True, eq=False, repr=False)
class ProjectionConfig(Section):
    """The random projection of gradients."""

    path: ClassVar[str] = "attribution.projection"
    kind: Literal["factored", "dense", "identity"] = "factored"
    k_in: int = 8
    k_out: int = 8
    dim: int = 2048


PATCH_METHODS = (
    "journey_trak",
    "journey_trak_local",
    "dtrak_step",
    "das_step",
    "pixel_similarity",
)
"""Methods that can score patches: a per-step target output (or the in-patch baseline)."""


@dataclass(frozen=True, eq=False, repr=False)
class PatchesConfig(Section):
    """Patch-level attribution: rectangular boxes [y0, x0, y1, x1] in image pixels."""

    path: ClassVar[str] = "attribution.patches"
    grid: tuple[int, int] | None = None
    boxes: tuple[tuple[int, int, int, int], ...] | None = None
    file: str | None = None
    methods: tuple[str, ...] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.grid or self.boxes or self.file)

    def methods_of(self, methods: Sequence[str]) -> list[str]:
        """The methods scored per patch: ``methods`` (if set) or every patch-capable one of
        ``methods`` (attribution.methods)."""
        if self.methods is not None:
            return list(self.methods)
        return [m for m in methods if m in PATCH_METHODS]


@dataclass(frozen=True, eq=False, repr=False)
class LocalDenoiserConfig(Section):
    """local_denoiser's settings (its score job's): the patch size, one for every attribution
    step or one per step (noisy → clean), candidates from every position (equivariant), and a
    grid of patch sizes the score file also scores, for an LDS report to choose per step on its
    tuning subsets (empty: no tuning)."""

    path: ClassVar[str] = "attribution.local_denoiser"
    patch: tuple[int, ...] = (5,)
    equivariant: bool = False
    grid: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False, repr=False)
class MucsConfig(Section):
    """mucs / mucs_step's settings (their member jobs' slice, ``mucs_member``): MUCS's
    defaults (sony/mucs ``Attributor``)."""

    path: ClassVar[str] = "attribution.mucs"
    lr_factor: float = 10.0
    forget_weight: float = 0.2
    tolerance: float = 0.05
    max_steps: int = 200
    noises: int = 100
    infer_fraction: float = 0.7


@dataclass(frozen=True, eq=False, repr=False)
class EkfacConfig(Section):
    """ekfac's settings (its member jobs' slice, ``ekfac_member``)."""

    path: ClassVar[str] = "attribution.ekfac"
    damping: float = 0.1  # λ_l = 0.1 × mean eigenvalue of layer l (kronfluence's)
    fisher: Literal["mc", "empirical"] = "mc"


@dataclass(frozen=True, eq=False, repr=False)
class UnlearningConfig(Section):
    """The unlearning methods' settings (their member jobs' slice, ``unlearning_member``)."""

    path: ClassVar[str] = "attribution.unlearning"
    lr: float = 0.01
    steps: int = 1
    window: int = 200
    draws: int = 64
    eval_draws: int = 20
    fisher_draws: int = 5
    shards: int = 1
    train_shards: int = 1


ALL_METHODS = (
    "journey_trak",
    "trak",
    "dtrak",
    "das",
    "ekfac",
    "pixel_similarity",
    "optimal_denoiser",
    "random",
)


@dataclass(frozen=True, eq=False, repr=False)
class AttributionConfig(Section):
    """Which methods score which steps, and the TRAK estimator's settings."""

    path: ClassVar[str] = "attribution"
    renamed: ClassVar[dict[str, str]] = {"lambda_": "lambda"}
    methods: tuple[str, ...] = ALL_METHODS
    steps: int | tuple[int, ...] = 10
    checkpoints: tuple[str, ...] = ("final",)
    K: int = 10
    R: int = 20
    residual_timesteps: int = 100
    local_window: int = 200
    ekfac: EkfacConfig = field(default_factory=EkfacConfig)
    unlearning: UnlearningConfig = field(default_factory=UnlearningConfig)
    mucs: MucsConfig = field(default_factory=MucsConfig)
    local_denoiser: LocalDenoiserConfig = field(default_factory=LocalDenoiserConfig)
    shards: int = 2
    batch_size: int = 64
    lambda_: float = 0.01
    block_size: int = 8192
    top_k: int | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    patches: PatchesConfig = field(default_factory=PatchesConfig)


@dataclass(frozen=True, eq=False, repr=False)
class LdsConfig(Section):
    """The linear datamodeling score."""

    path: ClassVar[str] = "lds"
    # A Spearman across fewer than 3 subsets is ±1 per target: it cannot choose a λ.
    MIN_TUNING: ClassVar[int] = 3
    enabled: bool = True
    tuning: int = 4
    reporting: int = 8
    alpha: float = 0.5
    seeds: int = 2
    train: Mapping[str, Any] = field(default_factory=dict)  # overrides of the train recipe
    draws: int = 64
    final_timesteps: int = 100
    final_noise: int = 2
    null_draws: int = 200
    bootstrap: int = 500
    lambdas: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
    lambda_per_step: bool = True
    ekfac_dampings: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    memorization_reference: bool = False
    regime: bool = True
    regime_loss_images: int = 2000
    fidelity_patches: tuple[int, ...] = (3, 5, 7)

    @property
    def n_subsets(self) -> int:
        return self.tuning + self.reporting


@dataclass(frozen=True, eq=False, repr=False)
class ClassifierConfig(Section):
    """The feature classifier of the counterfactual evaluation."""

    path: ClassVar[str] = "counterfactual.classifier"
    steps: int = 1500
    width: int = 32
    held_out: float = 0.2
    lr: float = 0.002
    batch_size: int = 128


@dataclass(frozen=True, eq=False, repr=False)
class GroupConfig(Section):
    """The group-removal protocol (MUCS's): per method, remove the union of the top-k of a group
    of targets, retrain once, regenerate every target of the group from its noise, and compare
    with random removals of the same size (``diffattr.group_removal``)."""

    path: ClassVar[str] = "counterfactual.group"
    size: int = 0
    k: int = 10
    random: int = 8
    methods: tuple[str, ...] | None = None

    @property
    def enabled(self) -> bool:
        return self.size > 0


@dataclass(frozen=True, eq=False, repr=False)
class CounterfactualConfig(Section):
    """Counterfactual retraining without the top influencers."""

    path: ClassVar[str] = "counterfactual"
    enabled: bool = True
    targets: int = 3
    steps: str | tuple[int | str, ...] = "emergence"
    methods: tuple[str, ...] = ("journey_trak", "pixel_similarity", "random")
    k: tuple[float, ...] = (0.1,)
    specificity: tuple[str, ...] = ()
    delta: int = 100
    samples: int = 16
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    group: GroupConfig = field(default_factory=GroupConfig)

    EMERGENCE: ClassVar[str] = "emergence"  # each target at its own decision step
    FINAL: ClassVar[str] = "final"  # D-TRAK's protocol: the final image's attribution

    @property
    def labels(self) -> tuple[str, ...]:
        """The examined steps, as the report labels them: ``emergence``, ``final`` or a step."""
        steps = (self.steps,) if isinstance(self.steps, str) else self.steps
        return tuple(str(s) for s in steps)

    @property
    def stepwise_labels(self) -> tuple[str, ...]:
        """The labels examined from an x_t of the trajectory (all but ``final``)."""
        return tuple(label for label in self.labels if label != self.FINAL)

    @property
    def n_cases(self) -> int:
        """Counterfactual models: targets × removal sizes × (steps × methods + the step-
        specificity arm: stepwise steps × specificity methods)."""
        per_k = len(self.labels) * len(self.methods)
        per_k += len(self.stepwise_labels) * len(self.specificity)
        return self.targets * len(self.k) * per_k

    @property
    def scored_methods(self) -> tuple[str, ...]:
        """The removal rules that read score files (all but ``random``)."""
        return tuple(m for m in self.methods if m != "random")

    @property
    def group_methods(self) -> tuple[str, ...]:
        """The group protocol's removal rules: ``group.methods``, or every method but ``random``
        (its null); none while the protocol is off."""
        if not self.group.enabled:
            return ()
        return self.group.methods if self.group.methods is not None else self.scored_methods

    @property
    def group_models(self) -> tuple[str, ...]:
        """The group protocol's retrained models: one per method, then ``group.random`` random
        removals of each method's union size (``layout.group_random``)."""
        randoms = [group_random(m, r) for m in self.group_methods for r in range(self.group.random)]
        return (*self.group_methods, *randoms)


@dataclass(frozen=True, eq=False, repr=False)
class FiguresConfig(Section):
    """The attribution figures."""

    path: ClassVar[str] = "figures"
    n_targets: int = 4
    top_k: int = 4


@dataclass(frozen=True, eq=False, repr=False)
class ExtraTargetsConfig(Section):
    """More targets, each set scored against the run's stored training features and kernels
    (nothing on the training side is recomputed): images from a folder, or new samples."""

    path: ClassVar[str] = "extra_targets"
    images: Mapping[str, str] = field(default_factory=dict)  # set name → folder of images
    samples: Mapping[str, int] = field(default_factory=dict)  # set name → new samples of model 0

    @property
    def names(self) -> list[str]:
        return sorted({*self.images, *self.samples})


@dataclass(frozen=True, eq=False, repr=False)
class RunConfig(Section):
    """A whole experiment."""

    dataset: DatasetConfig
    model: ModelConfig
    train: TrainConfig
    run: str = "default"
    seed: int = 0
    device: str = "auto"
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    lds: LdsConfig = field(default_factory=LdsConfig)
    counterfactual: CounterfactualConfig = field(default_factory=CounterfactualConfig)
    figures: FiguresConfig = field(default_factory=FiguresConfig)
    extra_targets: ExtraTargetsConfig = field(default_factory=ExtraTargetsConfig)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:  # type: ignore[override]
        """A whole config: schema-validated, typed, cross-checked."""
        validate(values)
        config = super().from_dict(values)
        config.check()
        return config

    @classmethod
    def from_slice(cls, text: str, stage: str) -> RunConfig:
        """A job's config from its slice (:meth:`slice`'s YAML, or JSON): sections the stage reads
        whole take their defaults for absent keys; sections and keys outside the slice are not
        passed (reading them raises)."""
        spec = _slice_spec(stage)
        values = _parse_slice(text)
        unknown = sorted(set(values) - set(spec))
        if unknown:
            raise ConfigError(f"{stage} does not read config sections {unknown}")
        hints = get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in values:
                kwargs[f.name] = NOT_PASSED
                continue
            section = _section_type(hints[f.name])
            if section is None:
                kwargs[f.name] = _convert(hints[f.name], values[f.name])
            else:
                keys = spec[f.name]
                kwargs[f.name] = section.from_dict(values[f.name], partial=keys or False)
        return cls(**kwargs)

    def slice(self, stage: str, unused: Sequence[str] = ()) -> str:
        """The keys ``stage`` reads (``SLICES``) as one line of flow-style YAML, sorted for stable
        rerun triggers (YAML rather than JSON: the report shows job parameters with every double
        quote escaped, and flow YAML needs none).
        Unset optional keys (None, no schema default) are left out, as Snakemake's validated
        config leaves them out; so are ``unused`` keys ("section.key") a particular job of the
        stage does not read (they take their defaults there, and changing them reruns nothing),
        or a whole ``unused`` section such as "seed"."""
        whole = _without_unset(self.to_dict(), schema())
        out: dict[str, Any] = {}
        for section, keys in _slice_spec(stage).items():
            value = whole.get(section)
            if keys is None:
                if value is not None and section not in unused:
                    out[section] = value
            else:
                kept = [k for k in keys if f"{section}.{k}" not in unused]
                out[section] = {k: value[k] for k in kept if k in value}
        return yaml.safe_dump(out, default_flow_style=True, sort_keys=True, width=2**31).strip()

    @property
    def regime_diagnostics(self) -> bool:
        """The LDS report carries the regime diagnostics (``lds.regime``; unconditional models:
        the regeneration and loss gap use no captions)."""
        return self.lds.enabled and self.lds.regime and not self.model.conditional

    def for_subset_models(self) -> RunConfig:
        """The config whose train recipe is the LDS subset models' (``lds.train`` overrides)."""
        recipe = self.train.to_dict() | dict(self.lds.train)
        return dataclasses.replace(self, train=TrainConfig.from_dict(recipe))

    # -- cross-field checks (diffattr.config_checks) ---------------------------------------------

    def check(self) -> None:
        """Checks that span sections; each raises a ConfigError naming the keys and the fix."""
        config_checks.check(self)

    def check_extra_targets(self) -> None:
        config_checks.check_extra_targets(self)

    def check_pretrained(self) -> None:
        config_checks.check_pretrained(self)

    def check_patches(self) -> None:
        config_checks.check_patches(self)

    def warnings(self) -> list[str]:
        """Legal but probably unintended settings, shown when the workflow starts."""
        return config_checks.warnings(self)

    def first_timestep(self) -> int:
        """The sampler's first timestep, where x_T (the initial noise) enters."""
        return sampler_timesteps(self.diffusion.num_train_timesteps, self.targets.sampling_steps)[0]

    def attribution_steps(self) -> list[int]:
        """The attributed sampler timesteps, noisy → clean (see :func:`attribution_steps`)."""
        return attribution_steps(
            self.attribution.steps,
            sampler_timesteps(self.diffusion.num_train_timesteps, self.targets.sampling_steps),
        )


def load(paths: Sequence[str | Path]) -> RunConfig:
    """A RunConfig from YAML files merged left to right (as Snakemake merges --configfile)."""
    merged: dict[str, Any] = {}
    for path in paths:
        merged = merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    return RunConfig.from_dict(merged)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = merge(out[key], value) if both else value
    return out
