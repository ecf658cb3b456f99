"""``RunConfig``'s cross-field checks: each raises a ConfigError naming the keys and the fix
(``check``), and the warnings shown when the workflow starts. Functions of a ``RunConfig``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .hub import download_hint, is_hub_name
from .layout import model_files


def check(cfg: Any) -> None:
    """Checks that span sections; each raises a ConfigError naming the keys and the fix."""
    cfg.attribution_steps()
    _check_checkpoints(cfg)
    check_pretrained(cfg)
    check_extra_targets(cfg)
    if "ekfac" in cfg.attribution.methods and cfg.model.conditional:
        raise ConfigError(
            "ekfac supports unconditional models only (it draws no captions): remove it from "
            "attribution.methods"
        )
    check_patches(cfg)
    if cfg.lds.enabled and 0 < cfg.lds.tuning < cfg.lds.MIN_TUNING:
        raise ConfigError(
            f"lds.tuning: {cfg.lds.tuning} subsets cannot tune λ (a Spearman across fewer "
            f"than {cfg.lds.MIN_TUNING} subsets is ±1); set lds.tuning ≥ "
            f"{cfg.lds.MIN_TUNING}, or 0 to report attribution.lambda untuned"
        )
    _check_top_k(cfg)
    _check_counterfactual(cfg)
    cfg.dataset.check_procedural()
    root = cfg.dataset.root
    if cfg.dataset.name in ("cifar10", "mscoco", "folder") and root and not Path(root).exists():
        raise ConfigError(
            f"dataset.root {root} does not exist: {cfg.dataset.name} reads your copy of the "
            "data from there (config/README.md, dataset.root)"
        )
    if cfg.attribution.unlearning.shards > cfg.targets.n:
        raise ConfigError(
            f"attribution.unlearning.shards ({cfg.attribution.unlearning.shards}) exceeds "
            f"targets.n ({cfg.targets.n}); lower it"
        )
    if cfg.model.conditional and cfg.model.cross_attention_dim is None:
        raise ConfigError("model.cross_attention_dim is required when model.conditional")


def _check_checkpoints(cfg: Any) -> None:
    """The attributed checkpoints are ones training saves."""
    saved = set(cfg.train.checkpoints) - {cfg.train.steps}  # the last step is `final`
    for name in cfg.attribution.checkpoints:
        if name != "final" and int(name.removeprefix("step-")) not in saved:
            raise ConfigError(
                f"attribution.checkpoints names {name}, which training does not save: add "
                f"its step to train.checkpoints (below train.steps = {cfg.train.steps}; "
                "the last step is the checkpoint `final`)"
            )


def _check_top_k(cfg: Any) -> None:
    """Top-k scoring keeps 2K of n scores per (step, target): the LDS, which correlates all n,
    cannot run on them (K ≤ n and removals ≤ K are checked where n is known)."""
    k = cfg.attribution.top_k
    if k is None:
        return
    if k < 1:
        raise ConfigError(f"attribution.top_k: {k}; keep K ≥ 1 examples of each sign, or null")
    if cfg.lds.enabled:
        raise ConfigError(
            f"attribution.top_k: {k} with lds.enabled: the LDS correlates every training "
            "example's score with the subset models' outputs, so it needs dense scores; set "
            "lds.enabled: false, or attribution.top_k: null"
        )


def _check_counterfactual(cfg: Any) -> None:
    """The counterfactual's methods are scored, its data has labels, its steps are attribution
    steps (or emergence, final) and its specificity arm can be built."""
    cf = cfg.counterfactual
    if not cf.enabled:
        return
    missing = sorted(set(cf.scored_methods) - set(cfg.attribution.methods))
    if missing:
        raise ConfigError(
            f"counterfactual.methods {missing} have no scores: add them to attribution.methods"
        )
    if not cfg.dataset.has_labels:
        raise ConfigError(
            f"counterfactual retraining needs class labels; {cfg.dataset.name} has "
            "none: set counterfactual.enabled: false"
        )
    if cf.targets > cfg.targets.n:
        raise ConfigError(
            f"counterfactual.targets ({cf.targets}) exceeds targets.n ({cfg.targets.n})"
        )
    fixed = {int(s) for s in cf.labels if s.isdigit()}
    named = (cf.EMERGENCE, cf.FINAL)
    unknown = [s for s in cf.labels if not s.isdigit() and s not in named]
    outside = sorted(fixed - set(cfg.attribution_steps()), reverse=True)
    if unknown or outside:
        raise ConfigError(
            f"counterfactual.steps {unknown + outside} are not attribution steps "
            f"{cfg.attribution_steps()}; choose among those, emergence or final"
        )
    if len(set(cf.labels)) != len(cf.labels):
        raise ConfigError(f"counterfactual.steps {list(cf.labels)} repeat a step")
    _check_specificity(cfg)
    _check_group(cfg)


def _check_group(cfg: Any) -> None:
    """The group protocol's targets exist and it has a method to compare with random."""
    group = cfg.counterfactual.group
    if not group.enabled:
        return
    if group.size > cfg.targets.n:
        raise ConfigError(
            f"counterfactual.group.size ({group.size}) exceeds targets.n ({cfg.targets.n})"
        )
    outside = sorted(set(cfg.counterfactual.group_methods) - set(cfg.counterfactual.methods))
    if outside:
        raise ConfigError(
            f"counterfactual.group.methods {outside}: list them in counterfactual.methods"
        )
    if not cfg.counterfactual.group_methods:
        raise ConfigError(
            "counterfactual.group needs a method other than random in counterfactual.methods "
            "(random removals are its null distribution)"
        )


def _check_specificity(cfg: Any) -> None:
    """The step-specificity arm needs a step-specific method among counterfactual.methods
    and a second attribution step to take the other removal from."""
    cf = cfg.counterfactual
    for method in cf.specificity:  # trajectory-free methods: methods.check_specificity
        if method not in cf.methods or method == "random":
            raise ConfigError(
                f"counterfactual.specificity {method}: list it in counterfactual.methods "
                "(random has no step to be specific to)"
            )
    if cf.specificity and len(cfg.attribution_steps()) < 2:
        raise ConfigError("counterfactual.specificity needs two or more attribution.steps")
    if cf.specificity and not cf.stepwise_labels:
        raise ConfigError(
            "counterfactual.specificity needs a step in counterfactual.steps (emergence or "
            "an attribution step), not only final"
        )


def check_extra_targets(cfg: Any) -> None:
    """Extra target sets have distinct file-safe names and existing image folders."""
    extra = cfg.extra_targets
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
            raise ConfigError(f"extra_targets.images.{name}: {folder} is not a folder of images")


def check_pretrained(cfg: Any) -> None:
    """Pretrained ensemble members exist, one per member, and are the configured model and
    noise schedule (their config files are read; weights are checked when imported)."""
    folders = cfg.train.pretrained
    if not folders:
        return
    if len(folders) != cfg.train.ensemble:
        raise ConfigError(
            f"train.pretrained lists {len(folders)} models for train.ensemble = "
            f"{cfg.train.ensemble}: set train.ensemble: {len(folders)}"
        )
    if list(cfg.attribution.checkpoints) != ["final"]:
        raise ConfigError(
            "attribution.checkpoints must be [final] with train.pretrained (a pretrained "
            "model has no intermediate checkpoints)"
        )
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
        differ = cfg.model.differences(saved) + cfg.diffusion.differences(schedule)
        if differ:
            raise ConfigError(
                f"train.pretrained {folder} is not the configured model ({'; '.join(differ)}):"
                " set model: and diffusion: as it was trained (subset and counterfactual "
                "models are trained with them)"
            )


def check_patches(cfg: Any) -> None:
    """Patch boxes are non-empty and the patch methods are scored at all (the image size is
    checked when the boxes are resolved, ``patches.resolve``)."""
    patches = cfg.attribution.patches
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
        chosen = set(patches.methods_of(cfg.attribution.methods))
        missing = sorted(chosen - set(cfg.attribution.methods))
        if missing:
            raise ConfigError(
                f"attribution.patches.methods {missing} are not in attribution.methods: "
                "add them there (patch scores reuse their training features)"
            )


def warnings(cfg: Any) -> list[str]:
    """Legal but probably unintended settings, shown when the workflow starts."""
    subset_steps = cfg.lds.train.get("steps", cfg.train.steps)
    if cfg.lds.enabled and subset_steps != cfg.train.steps:
        # lds.train is merged over config/config.yaml's, so a quick override there is inherited.
        return [
            f"LDS subset models train {subset_steps} steps, the full models "
            f"{cfg.train.steps} (lds.train.steps); set it in your config to change that"
        ]
    return []
