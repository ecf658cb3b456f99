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
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

import numpy as np
import yaml

from .errors import ConfigError

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


class _NotPassed:
    def __repr__(self) -> str:
        return "<not passed to this job>"


NOT_PASSED: Any = _NotPassed()


class Section:
    """A frozen config section. Reading a field that the job's slice did not carry raises."""

    path: ClassVar[str] = ""
    renamed: ClassVar[dict[str, str]] = {}  # field name → config key (``lambda_`` → ``lambda``)

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if value is NOT_PASSED:
            key = type(self).key(name)
            key = f"{type(self).path}.{key}" if type(self).path else key
            raise ConfigError(
                f"config key {key} is not passed to this job; add it to the job's slice in "
                "diffattr.config.SLICES"
            )
        return value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def key(cls, name: str) -> str:
        return cls.renamed.get(name, name)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], partial: bool | Sequence[str] = False):
        """Build from a config mapping. ``partial``: fields absent from ``values`` are not
        passed (a job's slice) instead of taking their defaults, except the keys it lists (the
        slice's keys: an unset optional one is left out of the slice but read as None); nested
        sections are whole."""
        hints = get_type_hints(cls)
        known = {cls.key(f.name) for f in dataclasses.fields(cls)}
        check_moved(sorted(set(values) - known), cls.path)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown} in {cls.path or 'the top level'}")
        listed = () if isinstance(partial, bool) else partial
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = cls.key(f.name)
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            value = values.get(key)
            if value is not None:
                kwargs[f.name] = _convert(hints[f.name], value)
            elif key in values and not required:  # null means unset: the default
                factory = f.default_factory
                kwargs[f.name] = f.default if factory is dataclasses.MISSING else factory()
            elif partial and key not in listed and key not in values:
                kwargs[f.name] = NOT_PASSED
            elif required:
                name = f"{cls.path}.{key}" if cls.path else key
                raise ConfigError(f"config key {name} is required")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values under config keys (fields not passed are left out; unset
        ones are None)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = object.__getattribute__(self, f.name)
            if value is NOT_PASSED:
                continue
            out[type(self).key(f.name)] = _plain(value)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _section_type(hint: Any) -> type[Section] | None:
    options = get_args(hint) if get_origin(hint) is not None else (hint,)
    for option in options:
        if isinstance(option, type) and issubclass(option, Section):
            return option
    return None


def _convert(hint: Any, value: Any) -> Any:
    """Config value → field value: nested sections built (whole), lists frozen as tuples."""
    section = _section_type(hint)
    if section is not None and isinstance(value, Mapping):
        return section.from_dict(value)
    if isinstance(value, list):
        return tuple(value)
    return value


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
    RECIPE: ClassVar[tuple[str, ...]] = (
        "steps",
        "batch_size",
        "lr",
        "warmup_steps",
        "ema_decay",
        "log_every",
        "checkpoints",
        "p_uncond",
        "precision",
    )
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


MOVED = {  # an old flat key → where it lives now (a one-line error names it, never a silent drop)
    **{f"attribution.ekfac_{k}": f"attribution.ekfac.{k}" for k in ("damping", "fisher")},
    **{
        f"attribution.unlearning_{k}": f"attribution.unlearning.{k}"
        for k in (
            "lr",
            "steps",
            "window",
            "draws",
            "eval_draws",
            "fisher_draws",
            "shards",
            "train_shards",
        )
    },
}


def check_moved(keys: Sequence[str], where: str) -> None:
    """A key of ``MOVED`` among ``keys`` (of section ``where``) is an error naming its new key."""
    for key in keys:
        name = f"{where}.{key}" if where else str(key)
        if name in MOVED:
            raise ConfigError(f"config key {name} moved: write {MOVED[name]}")


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
    shards: int = 2
    batch_size: int = 64
    lambda_: float = 0.01
    block_size: int = 8192
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

    # -- cross-field checks ---------------------------------------------------------------------

    def check(self) -> None:  # noqa: C901  (issue 32: not yet split)
        """Checks that span sections; each raises a ConfigError naming the keys and the fix."""
        self.attribution_steps()
        saved = set(self.train.checkpoints) - {self.train.steps}  # the last step is `final`
        for name in self.attribution.checkpoints:
            if name != "final" and int(name.removeprefix("step-")) not in saved:
                raise ConfigError(
                    f"attribution.checkpoints names {name}, which training does not save: add "
                    f"its step to train.checkpoints (below train.steps = {self.train.steps}; "
                    "the last step is the checkpoint `final`)"
                )
        self.check_pretrained()
        self.check_extra_targets()
        if "ekfac" in self.attribution.methods and self.model.conditional:
            raise ConfigError(
                "ekfac supports unconditional models only (it draws no captions): remove it from "
                "attribution.methods"
            )
        self.check_patches()
        if self.lds.enabled and 0 < self.lds.tuning < LdsConfig.MIN_TUNING:
            raise ConfigError(
                f"lds.tuning: {self.lds.tuning} subsets cannot tune λ (a Spearman across fewer "
                f"than {LdsConfig.MIN_TUNING} subsets is ±1); set lds.tuning ≥ "
                f"{LdsConfig.MIN_TUNING}, or 0 to report attribution.lambda untuned"
            )
        cf = self.counterfactual
        if cf.enabled:
            missing = sorted(set(cf.scored_methods) - set(self.attribution.methods))
            if missing:
                raise ConfigError(
                    f"counterfactual.methods {missing} have no scores: add them to "
                    "attribution.methods"
                )
            if not self.dataset.has_labels:
                raise ConfigError(
                    f"counterfactual retraining needs class labels; {self.dataset.name} has "
                    "none: set counterfactual.enabled: false"
                )
            if cf.targets > self.targets.n:
                raise ConfigError(
                    f"counterfactual.targets ({cf.targets}) exceeds targets.n ({self.targets.n})"
                )
            fixed = {int(s) for s in cf.labels if s.isdigit()}
            named = (cf.EMERGENCE, cf.FINAL)
            unknown = [s for s in cf.labels if not s.isdigit() and s not in named]
            outside = sorted(fixed - set(self.attribution_steps()), reverse=True)
            if unknown or outside:
                raise ConfigError(
                    f"counterfactual.steps {unknown + outside} are not attribution steps "
                    f"{self.attribution_steps()}; choose among those, emergence or final"
                )
            if len(set(cf.labels)) != len(cf.labels):
                raise ConfigError(f"counterfactual.steps {list(cf.labels)} repeat a step")
            self._check_specificity()
        self.dataset.check_procedural()
        root = self.dataset.root
        if (
            self.dataset.name in ("cifar10", "mscoco", "folder")
            and root
            and not Path(root).exists()
        ):
            raise ConfigError(
                f"dataset.root {root} does not exist: {self.dataset.name} reads your copy of the "
                "data from there (config/README.md, dataset.root)"
            )
        if self.attribution.unlearning.shards > self.targets.n:
            raise ConfigError(
                f"attribution.unlearning.shards ({self.attribution.unlearning.shards}) exceeds "
                f"targets.n ({self.targets.n}); lower it"
            )
        if self.model.conditional and self.model.cross_attention_dim is None:
            raise ConfigError("model.cross_attention_dim is required when model.conditional")

    def _check_specificity(self) -> None:
        """The step-specificity arm needs a step-specific method among counterfactual.methods
        and a second attribution step to take the other removal from."""
        cf = self.counterfactual
        for method in cf.specificity:  # trajectory-free methods: methods.check_specificity
            if method not in cf.methods or method == "random":
                raise ConfigError(
                    f"counterfactual.specificity {method}: list it in counterfactual.methods "
                    "(random has no step to be specific to)"
                )
        if cf.specificity and len(self.attribution_steps()) < 2:
            raise ConfigError("counterfactual.specificity needs two or more attribution.steps")
        if cf.specificity and not cf.stepwise_labels:
            raise ConfigError(
                "counterfactual.specificity needs a step in counterfactual.steps (emergence or "
                "an attribution step), not only final"
            )

    def check_extra_targets(self) -> None:
        """Extra target sets have distinct file-safe names and existing image folders."""
        extra = self.extra_targets
        both = sorted(set(extra.images) & set(extra.samples))
        if both:
            raise ConfigError(
                f"extra_targets {both} are named under both images and samples: rename one"
            )
        for name in extra.names:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ConfigError(
                    f"extra_targets name {name!r} is not a plain name: use letters, digits, _ or -"
                )
        for name, folder in extra.images.items():
            if not Path(folder).is_dir():
                raise ConfigError(
                    f"extra_targets.images.{name}: {folder} is not a folder of images"
                )

    def check_pretrained(self) -> None:
        """Pretrained ensemble members exist, one per member, and are the configured model and
        noise schedule (their config files are read; weights are checked when imported)."""
        folders = self.train.pretrained
        if not folders:
            return
        if len(folders) != self.train.ensemble:
            raise ConfigError(
                f"train.pretrained lists {len(folders)} models for train.ensemble = "
                f"{self.train.ensemble}: set train.ensemble: {len(folders)}"
            )
        if list(self.attribution.checkpoints) != ["final"]:
            raise ConfigError(
                "attribution.checkpoints must be [final] with train.pretrained (a pretrained "
                "model has no intermediate checkpoints)"
            )
        from .hub import download_hint, is_hub_name
        from .layout import model_files

        for folder in folders:
            if is_hub_name(folder):
                raise ConfigError(
                    f"train.pretrained {folder} is not a local folder; a hub name? "
                    f"train.pretrained takes local folders: {download_hint(folder)}"
                )
            unet, scheduler = model_files(folder)
            files = [unet / "config.json", scheduler / "scheduler_config.json"]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise ConfigError(
                    f"train.pretrained {folder} is not a diffusers model folder "
                    f"({', '.join(missing)} missing): give a DDPMPipeline folder (unet/, "
                    "scheduler/) or a UNet folder with its scheduler_config.json"
                )
            try:
                saved, schedule = (json.loads(f.read_text()) for f in files)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ConfigError(f"train.pretrained {folder}: a config file is not JSON") from None
            differ = self.model.differences(saved) + self.diffusion.differences(schedule)
            if differ:
                raise ConfigError(
                    f"train.pretrained {folder} is not the configured model ({'; '.join(differ)}):"
                    " set model: and diffusion: as it was trained (subset and counterfactual "
                    "models are trained with them)"
                )

    def check_patches(self) -> None:
        """Patch boxes are non-empty and the patch methods are scored at all (the image size is
        checked when the boxes are resolved, ``patches.resolve``)."""
        patches = self.attribution.patches
        for box in patches.boxes or ():
            y0, x0, y1, x1 = box
            if not (y0 < y1 and x0 < x1):
                raise ConfigError(
                    f"attribution.patches.boxes {list(box)} is empty: give [y0, x0, y1, x1] "
                    "with y0 < y1 and x0 < x1 (image pixels, half-open)"
                )
        if patches.file and not Path(patches.file).is_file():
            raise ConfigError(
                f"attribution.patches.file {patches.file} does not exist: give a CSV with "
                "header target,y0,x0,y1,x1"
            )
        if patches.enabled:
            chosen = set(patches.methods_of(self.attribution.methods))
            missing = sorted(chosen - set(self.attribution.methods))
            if missing:
                raise ConfigError(
                    f"attribution.patches.methods {missing} are not in attribution.methods: "
                    "add them there (patch scores reuse their training features)"
                )

    def warnings(self) -> list[str]:
        """Legal but probably unintended settings, shown when the workflow starts."""
        subset_steps = self.lds.train.get("steps", self.train.steps)
        if self.lds.enabled and subset_steps != self.train.steps:
            # lds.train is merged over config/config.yaml's, so a quick override there is inherited.
            return [
                f"LDS subset models train {subset_steps} steps, the full models "
                f"{self.train.steps} (lds.train.steps); set it in your config to change that"
            ]
        return []

    def first_timestep(self) -> int:
        """The sampler's first timestep, where x_T (the initial noise) enters."""
        return sampler_timesteps(self.diffusion.num_train_timesteps, self.targets.sampling_steps)[0]

    def attribution_steps(self) -> list[int]:
        """The attributed sampler timesteps, noisy → clean (see :func:`attribution_steps`)."""
        return attribution_steps(
            self.attribution.steps,
            sampler_timesteps(self.diffusion.num_train_timesteps, self.targets.sampling_steps),
        )


def _parse_slice(text: str) -> dict[str, Any]:
    """A ``--cfg`` slice: JSON first (YAML 1.1 would read JSON's ``1e-3`` as a string), else
    the flow YAML :meth:`RunConfig.slice` writes."""
    if not text:
        return {}
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as err:
            problem = str(err).replace("\n", " ")
            raise ConfigError(
                f"--cfg is not a config slice ({problem}); pass a rule's slice or --configfile"
            ) from None
    if not isinstance(values, dict):
        raise ConfigError("--cfg is not a mapping of config sections; pass a rule's slice")
    return values


def _slice_spec(stage: str) -> dict[str, tuple[str, ...] | None]:
    if stage not in SLICES:
        raise ConfigError(f"no config slice for stage {stage!r}; add it to diffattr.config.SLICES")
    return SLICES[stage]


def _without_unset(values: dict[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without the None of keys that have no schema default (recursively)."""
    props = node.get("properties", {})
    out = {}
    for key, value in values.items():
        prop = props.get(key, {})
        if value is None and "default" not in prop:
            continue
        nested = isinstance(value, dict) and "properties" in prop
        out[key] = _without_unset(value, prop) if nested else value
    return out


def uniform_timesteps(count: int, num_timesteps: int) -> list[int]:
    """D-TRAK's uniformly spaced timesteps 0, T/K, 2T/K, … floored (``range(0, T, T // K)`` when
    K divides T; K = ``count``)."""
    return [k * num_timesteps // count for k in range(count)]


def alphas_cumprod(diffusion: DiffusionConfig) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------
# What each job reads: section → None (all of it) or the keys it reads.

_MODEL_RUN = {"seed": None, "device": None, "model": None}  # jobs that load models check them
SLICES: dict[str, dict[str, tuple[str, ...] | None]] = {
    "prepare_data": {"seed": None, "device": None, "dataset": None},  # seed: procedural only
    "train": {
        **_MODEL_RUN,
        "dataset": None,
        "diffusion": None,
        "train": TrainConfig.RECIPE,
    },
    "import_model": {**_MODEL_RUN, "diffusion": None},
    "sample": {**_MODEL_RUN, "targets": None, "attribution": ("steps",)},
    "featurize_train": {
        **_MODEL_RUN,
        "dataset": None,
        "attribution": (
            "K",
            "batch_size",
            "projection",
            "precision",
            "residual_timesteps",
            "local_window",
        ),
    },
    "patches": {"attribution": ("patches",)},
    "kernel": {"attribution": ("lambda", "block_size")},
    "featurize_targets": {
        **_MODEL_RUN,
        "attribution": ("K", "R", "batch_size", "projection", "precision"),
    },
    "unlearning_member": {
        **_MODEL_RUN,
        "attribution": ("batch_size", "unlearning"),
    },
    "ekfac_member": {
        **_MODEL_RUN,
        "dataset": ("flip",),
        "attribution": ("K", "R", "batch_size", "ekfac"),
        "lds": ("enabled", "ekfac_dampings"),
    },
    "score": {
        "seed": None,
        "diffusion": None,
        "attribution": ("lambda", "ekfac", "K", "R", "block_size", "local_window"),
    },
    "figure_attributions": {"figures": None},
    "lds_subsets": {"seed": None, "lds": ("tuning", "reporting", "alpha")},
    "ground_truth": {**_MODEL_RUN, "lds": ("draws", "final_timesteps", "final_noise")},
    "ground_truth_patches": {**_MODEL_RUN, "lds": ("draws",)},
    "memorization_reference": {"seed": None, "diffusion": None, "lds": ("draws",)},
    "regime_diagnostics": {
        **_MODEL_RUN,
        "targets": ("sampling_steps",),
        "lds": ("regime_loss_images",),
    },
    "lds_report": {"seed": None, "lds": None},
    "train_classifier": {"seed": None, "counterfactual": ("classifier",)},
    "emergence": {**_MODEL_RUN, "targets": None, "counterfactual": ("samples",)},
    "cf_plan": {
        "seed": None,
        "diffusion": ("num_train_timesteps",),
        "targets": ("sampling_steps",),
        "counterfactual": ("targets", "steps", "methods", "k", "specificity"),
    },
    "cf_resample": {**_MODEL_RUN, "targets": None, "counterfactual": ("samples", "delta")},
    "cf_report": {"seed": None},
    "report_figures": {},  # figures and tables drawn from stored reports: no config key
}


# ---------------------------------------------------------------------------------------------
# Schema


@cache
def schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA.read_text())


def validate(values: Mapping[str, Any]) -> None:
    """Validate a config mapping against the JSON schema; one line naming the key on failure.
    A null value means unset (as if the key were absent)."""
    import jsonschema

    _check_keys(values, schema(), "")
    try:
        jsonschema.validate(without_nulls(values), schema(), cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as err:
        where = ".".join(str(p) for p in err.absolute_path) or "the top level"
        if err.validator == "type" and isinstance(err.instance, str) and len(err.path) > 1:
            kinds = err.validator_value
            kinds = " or ".join(kinds) if isinstance(kinds, list) else kinds
            raise ConfigError(
                f"invalid config at {where}: {err.instance!r} is text, not {kinds} "
                "(Snakemake reads values nested in --config as text): put nested overrides in a "
                "YAML file and pass it with --configfile"
            ) from None
        raise ConfigError(f"invalid config at {where}: {err.message}") from None


def _check_keys(values: Any, node: Mapping[str, Any], where: str) -> None:
    """Unknown keys, one line each with the closest valid key (before the schema's own message)."""
    import difflib

    props = node.get("properties")
    if not isinstance(values, Mapping) or props is None:
        return
    check_moved([k for k in values if k not in props], where.rstrip("."))
    for key, value in values.items():
        if key not in props:
            close = difflib.get_close_matches(str(key), list(props), n=1)
            hint = f"; did you mean {where}{close[0]}?" if close else f"; valid: {sorted(props)}"
            raise ConfigError(f"unknown config key {where}{key}{hint}")
        _check_keys(value, props[key], f"{where}{key}.")


def without_nulls(value: Any) -> Any:
    """``value`` without its null entries (a null means the key's default), recursively."""
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    return _plain(value)


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
