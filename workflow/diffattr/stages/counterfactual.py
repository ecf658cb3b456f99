"""Stages of counterfactual retraining: the classifier, feature emergence, the removal plan,
paired resampling of each case (and of the seed floor), the report; the group-removal
protocol's plan, regenerations and report (``diffattr.group_removal``)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import group_removal, layout
from ..artifacts import (
    Emergence,
    Plan,
    ScoreFile,
    TopKFile,
    is_top_k,
    read_data,
    read_emergence,
    read_group_plan,
    read_group_samples,
    read_plan,
    read_resampled,
    read_targets,
    write_emergence,
    write_group_plan,
    write_group_samples,
    write_plan,
    write_resampled,
)
from ..classifier import load_classifier, save_classifier, train_classifier
from ..config import RunConfig
from ..counterfactual import (
    PROTOCOLS,
    decision_step,
    emergence,
    floor_pairs,
    plan,
    protocol_predictors,
    resample,
    sample_metrics,
)
from ..counterfactual_summary import summarize
from ..diffusion import inference_timesteps, model_predictor, target_noise
from ..errors import ConfigError
from ..methods import check_specificity, get_method
from ..models import load_model, resolve_device
from ..storage import atomic_path

log = logging.getLogger("diffattr")


def train_classifier_stage(cfg: RunConfig, *, data: Path, out: Path) -> None:
    """Train the feature classifier that reads the class of generated samples."""
    prepared = read_data(data)
    n_classes = max(len(prepared.class_names), int(prepared.labels.max()) + 1)
    model, info = train_classifier(
        prepared.images, prepared.labels, n_classes, cfg.counterfactual.classifier, cfg.seed
    )
    with atomic_path(out) as tmp:
        save_classifier(model, tmp, info)
    log.info(
        "classifier: held-out accuracy %.3f (%d images), train accuracy %.3f",
        info["held_out_accuracy"] or float("nan"),
        info["n_held_out"],
        info["train_accuracy"],
    )


def emergence_stage(
    cfg: RunConfig,
    *,
    model: Path,
    targets: Path,
    classifier: Path,
    out: Path,
    out_csv: Path,
) -> None:
    """P(final class) of samples from p(·|x_t) along each trajectory, and the decision steps
    (the figure: ``stages.figures.emergence_figure_stage``)."""
    device = resolve_device(cfg.device)
    unet, scheduler = load_model(layout.checkpoint(model), device, cfg.model)
    reader, _ = load_classifier(classifier)
    reader = reader.to(device)
    stored = read_targets(targets)
    classes = (
        reader.probabilities(torch.from_numpy(stored.final).to(device)).argmax(1).cpu().numpy()
    )
    steps = stored.steps
    samples_per_step = cfg.counterfactual.samples
    probs, samples = emergence(
        model_predictor(unet),
        scheduler,
        cfg.targets.sampling_steps,
        torch.from_numpy(stored.x_t).to(device),
        steps,
        stored.target_ids.tolist(),
        reader,
        classes.tolist(),
        samples_per_step,
        cfg.seed,
    )
    decided = [decision_step(probs[:, j], steps) for j in range(probs.shape[1])]
    attrs = {"samples_per_step": samples_per_step}
    write_emergence(
        out, Emergence(probs, samples.numpy(), steps, classes, np.asarray(decided), attrs)
    )
    rows = [
        {
            "target": int(j),
            "step": int(st),
            "class": int(classes[j]),
            "probability": float(probs[s, j]),
            "decision_step": decided[j],
        }
        for s, st in enumerate(steps)
        for j in range(probs.shape[1])
    ]
    with atomic_path(out_csv) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.4f")
    log.info("decision steps per target: %s", decided)


def cf_plan(
    cfg: RunConfig, *, data: Path, emergence: Path, out: Path, scores: Sequence[Path] = ()
) -> None:
    """Plan the counterfactual models: per (target, step, method, k), the examples removed."""
    cf = cfg.counterfactual
    check_specificity(cf.specificity)
    n = read_data(data).n
    found = read_emergence(emergence)
    files = {}
    try:
        for path in scores:  # dense, or top-k files (attribution.top_k)
            f = TopKFile(path) if is_top_k(path) else ScoreFile(path)
            files[f.attrs["method"]] = f
        cases, keep = plan(
            cf,
            n,
            found.steps,
            found.decision_step,
            lambda method, step, target: files[method].row(step, target),
            cfg.seed,
            cfg.first_timestep(),
        )
    finally:
        for f in files.values():
            f.close()
    write_plan(out, Plan(cases, keep, {"config": cf.to_dict()}))
    log.info("planned %d counterfactual models", len(cases))


def cf_resample(
    cfg: RunConfig,
    *,
    plan: Path,
    case: str,
    original: Path,
    model: Path,
    targets: Path,
    out: Path,
) -> None:
    """Sample p(·|x_t) from the stored x_t with the original model and under protocols a and b
    (one case, or the seed floor at every examined (target, step))."""
    device = resolve_device(cfg.device)
    cf = cfg.counterfactual
    sampling_steps = cfg.targets.sampling_steps
    original_model, scheduler = load_model(layout.checkpoint(original), device, cfg.model)
    other_model, _ = load_model(layout.checkpoint(model), device, cfg.model)
    cases = read_plan(plan).cases
    stored = read_targets(targets)
    if case == layout.FLOOR:
        pairs = floor_pairs(cases)
    else:
        chosen = cases[layout.parse_case(case)]
        pairs = [(chosen.target, chosen.step)]
    timesteps = inference_timesteps(scheduler, sampling_steps)
    original_p, other_p = model_predictor(original_model), model_predictor(other_model)
    samples = {}
    shape = stored.final.shape[1:]
    for target, step in pairs:
        if step in stored.steps:
            x = torch.from_numpy(stored.x_t[stored.steps.index(step), target]).to(device)
        else:  # D-TRAK's protocol: the target's own x_T, drawn again from its sampling stream
            x = target_noise(cfg.seed, int(stored.target_ids[target]), shape).to(device)
        runs = protocol_predictors(original_p, other_p, step, cf.delta, timesteps)
        samples[target, step] = {
            name: resample(
                x,
                step,
                scheduler,
                sampling_steps,
                predictor,
                cfg.seed,
                int(stored.target_ids[target]),
                cf.samples,
            )
            .cpu()
            .numpy()
            for name, predictor in runs.items()
        }
    write_resampled(out, samples, {"case": case, "delta": cf.delta})
    log.info("resampled %d (target, step) pairs for case %s", len(pairs), case)


def cf_report(
    cfg: RunConfig,
    *,
    plan: Path,
    samples: list[Path],
    floor: Path,
    classifier: Path,
    emergence: Path,
    out_csv: Path,
    out_cases: Path,
) -> None:
    """Metrics of every case against the original samples, summarized with intervals (the
    figures and HTML table: ``stages.figures.cf_figures``)."""
    reader, info = load_classifier(classifier)
    cases = read_plan(plan).cases
    classes = read_emergence(emergence).classes
    files = {layout.parse_case(layout.parse_cf_samples(p)): p for p in samples}
    rows = []
    for case in cases:
        runs = read_resampled(files[case.index])[case.target, case.step]
        original = torch.from_numpy(runs["original"])
        for protocol in PROTOCOLS:
            if protocol not in runs:  # D-TRAK's regeneration runs b only
                continue
            other = torch.from_numpy(runs[protocol])
            metrics = sample_metrics(original, other, reader, int(classes[case.target]))
            fields = dict(sorted(case.as_dict().items()))  # case columns by name, as always
            rows.append({**fields, "protocol": protocol, **metrics})
    floor_rows = []
    for (target, step), runs in read_resampled(floor).items():
        original = torch.from_numpy(runs["original"])
        for protocol in PROTOCOLS:
            if protocol not in runs:
                continue
            other = torch.from_numpy(runs[protocol])
            metrics = sample_metrics(original, other, reader, int(classes[target]))
            floor_rows.append({"target": target, "step": step, "protocol": protocol, **metrics})
    per_case = pd.DataFrame(rows)
    table = summarize(per_case, pd.DataFrame(floor_rows))
    table["classifier_accuracy"] = info["held_out_accuracy"]
    with atomic_path(out_cases) as tmp:
        per_case.to_csv(tmp, index=False, float_format="%.5f")
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.5f")
    log.info(
        "counterfactual report:\n%s",
        table[table.protocol == "a"].to_string(index=False, float_format=lambda v: f"{v:.3f}"),
    )


# ---------------------------------------------------------------------------------------------
# Group removal


def group_plan(
    cfg: RunConfig, *, data: Path, emergence: Path, out: Path, scores: Sequence[Path] = ()
) -> None:
    """Plan the group protocol's models: per method the union of the group's top-k, and the
    random removals of each union's size."""
    cf = cfg.counterfactual
    n = read_data(data).n
    found = read_emergence(emergence)
    files = {}
    try:
        for path in scores:
            f = ScoreFile(path)
            files[f.attrs["method"]] = f
        planned = group_removal.plan(
            cf,
            n,
            found.steps,
            found.decision_step,
            lambda method, step, target: files[method].row(step, target),
            cfg.seed,
            [m for m in cf.group_methods if get_method(m).target_image == "final"],
        )
    finally:
        for f in files.values():
            f.close()
    attrs = {"config": {"methods": list(cf.methods), "group": cf.group.to_dict()}}
    write_group_plan(out, dataclasses.replace(planned, attrs=attrs))
    log.info(
        "group of %d targets: %s",
        len(planned.targets),
        ", ".join(f"{m} removes {planned.removed(m)}" for m in planned.methods),
    )


def group_regenerate(cfg: RunConfig, *, plan: Path, model: Path, targets: Path, out: Path) -> None:
    """Regenerate every target of the group from its initial noise with one model (a group
    model, or the original full model 0), S paired samples each."""
    device = resolve_device(cfg.device)
    unet, scheduler = load_model(layout.checkpoint(model), device, cfg.model)
    positions = read_group_plan(plan).targets
    stored = read_targets(targets)
    ids = stored.target_ids[positions]
    shape = stored.final.shape[1:]
    noise = torch.stack([target_noise(cfg.seed, int(j), shape) for j in ids]).to(device)
    sampling_steps = cfg.targets.sampling_steps
    start = inference_timesteps(scheduler, sampling_steps)[0]
    samples = group_removal.regenerate(
        model_predictor(unet),
        scheduler,
        sampling_steps,
        noise,
        ids.tolist(),
        cfg.seed,
        cfg.counterfactual.samples,
        start,
    )
    write_group_samples(out, samples.numpy(), positions, {"model": str(model), "start": start})
    log.info("regenerated %d targets × %d samples", len(ids), cfg.counterfactual.samples)


def group_report(  # noqa: PLR0913  (three tables from one pass over the samples)
    cfg: RunConfig,
    *,
    plan: Path,
    samples: list[Path],
    reference: Path,
    classifier: Path,
    emergence: Path,
    out_csv: Path,
    out_targets: Path,
    out_pairs: Path,
) -> None:
    """The group protocol's effects per model and target, and per method their ratio and AUC
    against the random removals, with intervals over the group's targets (the figure:
    ``stages.figures.group_figure``)."""
    reader, info = load_classifier(classifier)
    planned = read_group_plan(plan)
    classes = read_emergence(emergence).classes[planned.targets]
    original, positions, _ = read_group_samples(reference)
    files = {layout.parse_group_samples(p): p for p in samples}
    rows = []
    for name in planned.names:
        regenerated, at, _ = read_group_samples(files[name])
        if not np.array_equal(at, positions):
            raise ConfigError(f"{files[name]} regenerates other targets than {reference}")
        method, draw = layout.parse_group_model(name)
        found = group_removal.effects(original, regenerated, reader, classes.tolist())
        for metric, values in found.items():
            rows += [
                {
                    "model": name,
                    "method": method,
                    "draw": -1 if draw is None else draw,
                    "removed": planned.removed(name),
                    "target": int(t),
                    "metric": metric,
                    "value": float(v),
                }
                for t, v in zip(positions, values, strict=True)
            ]
    per_target = pd.DataFrame(rows)
    table = group_removal.summarize(per_target, {m: planned.removed(m) for m in planned.methods})
    table["classifier_accuracy"] = info["held_out_accuracy"]
    paired = group_removal.pairs(per_target)
    for path, frame in [(out_targets, per_target), (out_csv, table), (out_pairs, paired)]:
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.5f")
    shown = table.to_string(index=False, float_format="{:.3f}".format)
    log.info("group removal report:\n%s", shown)
