"""The extra-target sub-DAG, declared once: which stage calls score a new target set against a
run's stored training side (``extra_targets`` in the workflow, ``results.Run.add_targets`` in
a process). The workflow's rules read their inputs from these calls; ``add_targets`` runs them.
No stage is imported here (the DAG builds without the model libraries)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..layout import Paths, members
from ..methods import get_method
from . import STAGES, Stage

Job = tuple[str, dict[str, Any]]  # (stage command, its keyword arguments)


def extra_target_jobs(
    cfg: RunConfig,
    run: Paths,
    name: str,
    methods: Sequence[str],
    source: Mapping[str, Any],
    lds: bool,
) -> list[Job]:
    """In order: sampling the set ``name`` (``source``: ``image_folder`` or ``new_samples``),
    per method its target features of every ensemble member and its score file; a gradient
    method scores with the λ the run's LDS tuned when ``lds`` (lds.json exists or will)."""
    extra = run.extra(name)
    names = [str(m) for m in members(cfg.train.ensemble, cfg.attribution.checkpoints)]
    steps = cfg.attribution_steps()
    sample = {"model": Path(run.model(0)), "data": Path(run.data), "target_set": name}
    jobs: list[Job] = [("sample-extra-targets", {**sample, "out": Path(extra.targets), **source})]
    for method in methods:
        chosen = get_method(method)
        files = run.score_inputs(chosen.needs(steps), extra, names, cfg.attribution.shards)
        for member, out in zip(names, files["target_features"], strict=False):
            featurize = {"model": Path(run.model_of_member(member)), "member": member}
            featurize |= {"method": method, "targets": Path(extra.targets), "out": Path(out)}
            jobs.append(("featurize-targets", featurize))
        tuned = {"lds": Path(run.report("lds.json"))} if chosen.uses_gradients and lds else {}
        score = {"method": method, "data": Path(run.data), "targets": Path(extra.targets)}
        score["out"] = Path(extra.scores(method))
        for key in ("kernels", "target_features", "train_features"):
            score[key] = [Path(f) for f in files[key]]
        jobs.append(("score", {**score, **tuned}))
    return jobs


def stage_function(command: str) -> Stage:
    """The stage function of ``command``, imported in this process (``stages.load`` without its
    deferred package inits: a library caller's process may already hold diffusers)."""
    module, function, _ = STAGES[command]
    return getattr(importlib.import_module(f"{__package__}.{module}"), function)
