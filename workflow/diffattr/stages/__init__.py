"""The workflow's steps as typed functions ``stage(cfg: RunConfig, *, paths…)``: each reads its
inputs through ``artifacts``, runs the package's algorithms and writes its outputs atomically.
No argparse, no h5py, no path parsing here; the CLI exposes every stage as one subcommand.

Modules group stages by what they import: ``scoring``, ``topk``, ``attribution_figures`` and
``lds`` need no model (no torch or
diffusers: a kernel or report job starts in about a second), the others run models. A job
imports only its own stage's module (``load``)."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

from ..lazy_packages import defer_package_inits

Stage = Callable[..., None]

METHOD_SLICE = "<method>"
"""A stage whose slice is its ``--method``'s (``methods.PerMemberMethod.slice``)."""

# command → (module, function, the config slice it reads: a key of diffattr.config.SLICES, or
# METHOD_SLICE)
STAGES: dict[str, tuple[str, str, str]] = {
    "prepare-data": ("models", "prepare_data", "prepare_data"),
    "train": ("models", "train_model", "train"),
    "import-model": ("models", "import_model", "import_model"),
    "train-subset": ("models", "train_subset_model", "train"),
    "train-counterfactual": ("models", "train_cf_model", "train"),
    "train-floor": ("models", "train_cf_floor", "train"),
    "sample": ("models", "sample", "sample"),
    "sample-extra-targets": ("models", "sample_extra_targets", "sample"),
    "featurize-train": ("attribution", "featurize_train", "featurize_train"),
    "featurize-targets": ("attribution", "featurize_targets", "featurize_targets"),
    "member-scores": ("attribution", "member_scores", "<method>"),
    "make-patches": ("attribution_figures", "make_patches", "patches"),
    "featurize-patch-targets": ("attribution", "featurize_patch_targets", "featurize_targets"),
    "kernel": ("scoring", "kernel", "kernel"),
    "score": ("scoring", "score", "score"),
    "score-patches": ("scoring", "score_patches", "score"),
    "score-shard": ("topk", "score_shard", "score_shard"),
    "merge-top-k": ("topk", "merge_top_k", "merge_top_k"),
    "figure-attributions": ("attribution_figures", "figure_attributions", "figure_attributions"),
    "figure-patches": ("attribution_figures", "figure_patches", "figure_attributions"),
    "lds-subsets": ("lds", "lds_subsets", "lds_subsets"),
    "ground-truth": ("ground_truth", "ground_truth", "ground_truth"),
    "memorization-reference": ("ground_truth", "memorization_reference", "memorization_reference"),
    "train-regime": ("models", "train_regime_model", "train"),
    "regime": ("regime", "regime_diagnostics", "regime_diagnostics"),
    "lds-report": ("lds", "lds_report", "lds_report"),
    "lds-figures": ("figures", "lds_figures", "report_figures"),
    "data-figure": ("figures", "data_figure", "report_figures"),
    "ground-truth-patches": ("ground_truth", "ground_truth_patches", "ground_truth_patches"),
    "lds-patches-report": ("lds", "lds_patches_report", "lds_report"),
    "lds-patches-figure": ("figures", "lds_patches_figure", "report_figures"),
    "build-kit": ("kit", "build_kit", "kit"),
    "train-classifier": ("counterfactual", "train_classifier_stage", "train_classifier"),
    "emergence": ("counterfactual", "emergence_stage", "emergence"),
    "emergence-figure": ("figures", "emergence_figure_stage", "report_figures"),
    "cf-plan": ("counterfactual", "cf_plan", "cf_plan"),
    "cf-resample": ("counterfactual", "cf_resample", "cf_resample"),
    "cf-report": ("counterfactual", "cf_report", "cf_report"),
    "cf-figures": ("figures", "cf_figures", "report_figures"),
    "group-plan": ("counterfactual", "group_plan", "group_plan"),
    "train-group": ("models", "train_group_model", "train"),
    "group-regenerate": ("counterfactual", "group_regenerate", "group_regenerate"),
    "group-report": ("counterfactual", "group_report", "cf_report"),
    "group-figure": ("figures", "group_figure", "report_figures"),
}


def load(command: str) -> Stage:
    """The stage function of ``command`` (importing only its module, and of diffusers only the
    models it uses: ``lazy_packages``)."""
    defer_package_inits()
    module, function, _ = STAGES[command]
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def slice_of(command: str, method: str | None = None) -> str:
    """The config slice ``command`` reads (for ``member-scores``: that of ``method``)."""
    slice_ = STAGES[command][2]
    if slice_ == METHOD_SLICE:
        from ..methods import member_method

        if method is None:
            raise ValueError(f"{command} reads its method's slice: name the method")
        return member_method(method).slice
    return slice_


def summary(command: str) -> str:
    """The first sentence of ``command``'s stage docstring, read from its module's source (no
    import: ``diffattr --help`` starts without the model libraries)."""
    module, function, _ = STAGES[command]
    for node in _module_tree(module).body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return first_sentence(ast.get_docstring(node) or "")
    return ""


def first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, whole (never cut mid-sentence)."""
    text = " ".join(doc.strip().split("\n\n")[0].split())
    depth = 0
    for i, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if char == "." and depth == 0 and re.match(r"\s+[A-Z(`]|$", text[i + 1 :]):
            return text[: i + 1]
    return text


@cache
def _module_tree(module: str) -> ast.Module:
    return ast.parse(Path(__file__).with_name(f"{module}.py").read_text())
