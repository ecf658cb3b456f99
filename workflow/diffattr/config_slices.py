"""What each job reads (``SLICES``: section → None, all of it, or the keys it reads) and the
parsing of a job's ``--cfg`` slice. Snakemake reruns a job when its slice's text changes."""

from __future__ import annotations

import json
from typing import Any

import yaml

from .errors import ConfigError

TRAIN_RECIPE = (  # the train keys every model's training reads (``TrainConfig.RECIPE``)
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

# ---------------------------------------------------------------------------------------------
# What each job reads: section → None (all of it) or the keys it reads.

_MODEL_RUN = {"seed": None, "device": None, "model": None}  # jobs that load models check them
_SCORE_KEYS = ("lambda", "ekfac", "K", "R", "block_size", "local_window", "local_denoiser")
"""The attribution keys a score job reads (its method's own section among them)."""


SLICES: dict[str, dict[str, tuple[str, ...] | None]] = {
    "prepare_data": {"seed": None, "device": None, "dataset": None},  # seed: procedural only
    "train": {
        **_MODEL_RUN,
        "dataset": None,
        "diffusion": None,
        "train": TRAIN_RECIPE,
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
    "mucs_member": {
        **_MODEL_RUN,
        "train": ("lr",),
        "attribution": ("batch_size", "mucs"),
    },
    "ekfac_member": {
        **_MODEL_RUN,
        "dataset": ("flip",),
        "attribution": ("K", "R", "batch_size", "ekfac"),
        "lds": ("enabled", "ekfac_dampings"),
    },
    "score": {"seed": None, "diffusion": None, "attribution": _SCORE_KEYS},
    "score_shard": {  # score's keys, K and the shard boundaries (whole featurization batches)
        "seed": None,
        "diffusion": None,
        "attribution": (*_SCORE_KEYS, "top_k", "batch_size"),
    },
    "merge_top_k": {"attribution": ("top_k",)},
    "figure_attributions": {"figures": None},
    "lds_subsets": {"seed": None, "lds": ("tuning", "reporting", "alpha")},
    "ground_truth": {**_MODEL_RUN, "lds": ("draws", "final_timesteps", "final_noise")},
    "ground_truth_patches": {**_MODEL_RUN, "lds": ("draws",)},
    "memorization_reference": {"seed": None, "diffusion": None, "lds": ("draws",)},
    "regime_diagnostics": {
        **_MODEL_RUN,
        "targets": ("sampling_steps",),
        "lds": ("regime_loss_images", "fidelity_patches"),
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
    "group_plan": {"seed": None, "counterfactual": ("methods", "group")},
    "group_regenerate": {**_MODEL_RUN, "targets": None, "counterfactual": ("samples",)},
    "report_figures": {},  # figures and tables drawn from stored reports: no config key
    "kit": {  # the LDS kit records the run's resolved config (not the machine's device)
        section: None
        for section in (
            "run",
            "seed",
            "dataset",
            "model",
            "diffusion",
            "train",
            "targets",
            "attribution",
            "lds",
        )
    },
}


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
