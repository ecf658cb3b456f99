"""The workflow's steps as typed functions ``stage(cfg: RunConfig, *, paths…)``: each reads its
inputs through ``artifacts``, runs the package's algorithms and writes its outputs atomically.
No argparse, no h5py, no path parsing here; the CLI exposes every stage as one subcommand."""

from __future__ import annotations

from collections.abc import Callable

from .attribution import featurize_targets, featurize_train, figure_attributions, kernel, score
from .counterfactual import (
    cf_plan,
    cf_report,
    cf_resample,
    emergence_stage,
    train_classifier_stage,
)
from .lds import ground_truth, lds_report, lds_subsets, memorization_reference
from .models import (
    prepare_data,
    sample,
    train_cf_floor,
    train_cf_model,
    train_model,
    train_subset_model,
)

Stage = Callable[..., None]

# command name → (stage, the config slice it reads: a key of diffattr.config.SLICES)
STAGES: dict[str, tuple[Stage, str]] = {
    "prepare-data": (prepare_data, "prepare_data"),
    "train": (train_model, "train"),
    "train-subset": (train_subset_model, "train"),
    "train-counterfactual": (train_cf_model, "train"),
    "train-floor": (train_cf_floor, "train"),
    "sample": (sample, "sample"),
    "featurize-train": (featurize_train, "featurize_train"),
    "kernel": (kernel, "kernel"),
    "featurize-targets": (featurize_targets, "featurize_targets"),
    "score": (score, "score"),
    "figure-attributions": (figure_attributions, "figure_attributions"),
    "lds-subsets": (lds_subsets, "lds_subsets"),
    "ground-truth": (ground_truth, "ground_truth"),
    "memorization-reference": (memorization_reference, "memorization_reference"),
    "lds-report": (lds_report, "lds_report"),
    "train-classifier": (train_classifier_stage, "train_classifier"),
    "emergence": (emergence_stage, "emergence"),
    "cf-plan": (cf_plan, "cf_plan"),
    "cf-resample": (cf_resample, "cf_resample"),
    "cf-report": (cf_report, "cf_report"),
}
