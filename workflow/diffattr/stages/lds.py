"""Stages of the linear datamodeling score that need no model: the subsets and the report (the
ground truth is measured in ``stages.ground_truth``)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import layout
from ..artifacts import (
    FeatureStore,
    Scores,
    Subsets,
    digest_key,
    read_data,
    read_ground_truth,
    read_memorization,
    read_patch_ground_truth,
    read_scores,
    read_subsets,
    read_target_features,
    write_subsets,
)
from ..config import RunConfig
from ..errors import ArtifactError
from ..lds.patches import patch_lds_table
from ..lds.regime import report_section
from ..lds.report import LdsInputs, lds_table
from ..lds.stats import shows_a_result, untuned_methods
from ..lds.subsets import make_subsets, subset_roles
from ..methods import METHODS, gradient_method
from ..storage import atomic_path, read_json, write_json

log = logging.getLogger("diffattr")


def lds_subsets(cfg: RunConfig, *, data: Path, out: Path) -> None:
    """Draw the LDS subsets (fixed size ⌊α·n⌋), the tuning ones first."""
    lds = cfg.lds
    prepared = read_data(data)
    masks = make_subsets(prepared.n, lds.n_subsets, lds.alpha, cfg.seed)
    attrs = {
        "alpha": lds.alpha,
        "seed": cfg.seed,
        "subset_size": int(masks[0].sum()),
        "data_digest": prepared.digest,
    }
    roles = subset_roles(lds.tuning, lds.reporting)
    write_subsets(out, Subsets(masks, roles, prepared.ids, attrs))
    log.info("%d subsets of %d/%d examples", lds.n_subsets, masks[0].sum(), prepared.n)


def lds_report(  # noqa: PLR0913  (issue 32: not yet split)
    cfg: RunConfig,
    *,
    subsets: Path,
    ground_truth: list[Path],
    scores: list[Path],
    out_csv: Path,
    out_json: Path,
    train_features: Sequence[Path] = (),
    target_features: Sequence[Path] = (),
    member_scores: Sequence[Path] = (),
    memorization: Path | None = None,
    regime: Path | None = None,
) -> None:
    """LDS per (method, step) with λ tuned on the tuning subsets: the CSV and the JSON details
    (the figure and HTML table: ``stages.figures.lds_figures``), with the regime verdict per
    step where the regime diagnostics were measured."""
    inputs = lds_inputs(
        subsets, ground_truth, scores, train_features, target_features, memorization, member_scores
    )
    write_lds_report(cfg, inputs, None if regime is None else read_json(regime), out_csv, out_json)


def write_lds_report(
    cfg: RunConfig, inputs: LdsInputs, regime: dict | None, out_csv: Path, out_json: Path
) -> None:
    """The report of ``inputs`` (a run's files, or an LDS kit's): lds.csv and lds.json, with
    the regime verdict per step where ``regime`` (regime.json's diagnostics) is given."""
    families = {name: method.family for name, method in METHODS.items()}
    table, details = lds_table(inputs, cfg.lds, cfg.seed, families)
    details["pipeline_check"] = not shows_a_result(table)
    if details["pipeline_check"]:
        log.warning(
            "no method's interval clears the null where the ground truth is reliable (≥ 0.5): "
            "this LDS is a pipeline check, not a result (more subsets and seeds, or "
            "config/digits-lds.yaml)"
        )
    details["untuned_methods"] = untuned_methods(table)
    if details["untuned_methods"]:
        log.warning(
            "λ not tuned for %s (lds.tuning = %d subsets): their rows carry attribution.lambda",
            ", ".join(details["untuned_methods"]),
            cfg.lds.tuning,
        )
    if regime is not None:
        details["regime"] = regime_section(regime, table, details)
    details["featurize_cost"] = {
        r.method: r.attrs["featurize_cost"]
        for r in inputs.scores.values()
        if "featurize_cost" in r.attrs
    }
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    write_json(out_json, details)
    log.info("LDS report:\n%s", table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def regime_section(diagnostics: dict, table, details: dict) -> dict:
    """The regime verdict per step from regime.json, the table's ceilings and the memorization
    reference (``lds.regime.report_section``), logged one line per step."""
    per_step = table[table.ground_truth == "f_t"].drop_duplicates("step")
    context = {
        str(r.step): {"ceiling": r.ceiling, "reliability": r.reliability}
        for r in per_step.itertuples()
    }
    section = report_section(diagnostics, context, details.get("memorization_reference"))
    for step, d in section["steps"].items():
        log.info(
            "regime at t=%s: %s (near copies %.0f%%, loss gap %+.1f%%, agreement %.2f)",
            step,
            d["verdict"],
            100 * d["near_copies"],
            100 * d["loss_gap"],
            d["agreement"],
        )
    return section


def lds_patches_report(
    cfg: RunConfig,
    *,
    subsets: Path,
    ground_truth: list[Path],
    patch_scores: list[Path],
    scores: list[Path],
    out_csv: Path,
    out_localization: Path,
) -> None:
    """The patch LDS per (method, step, patch) against each patch's ground truth, whole-image
    scores (``scores``) beside the patch scores, and the localization margins (the figure:
    ``stages.figures.lds_patches_figure``)."""
    split = read_subsets(subsets)
    truths = [
        read_patch_ground_truth(p) for p in sorted(ground_truth, key=layout.parse_ground_truth)
    ]
    local = {r.method: r for r in map(read_scores, patch_scores)}
    whole = {r.method: r for r in map(read_scores, scores)}
    first = truths[0]
    for name, result in [*local.items(), *whole.items()]:
        if result.steps != first.steps or not np.array_equal(result.target_ids, first.target_ids):
            raise ArtifactError(
                f"the {name} scores cover steps {result.steps}, the patch ground truth "
                f"{first.steps}; remake the older of them"
            )
        if result.boxes is not None and not np.array_equal(result.boxes, first.boxes):
            raise ArtifactError(
                f"the {name} patch scores and the patch ground truth use other boxes"
            )
    table, localized = patch_lds_table(
        split.masks,
        split.role,
        np.stack([t.f_t for t in truths]),  # (subsets, seeds, steps, targets, patches)
        first.steps,
        local,
        whole,
        cfg.lds,
        cfg.seed,
    )
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(out_localization) as tmp:
        localized.to_csv(tmp, index=False, float_format="%.4f")
    log.info(
        "patch LDS, localization:\n%s",
        localized.to_string(index=False, float_format=lambda v: f"{v:.3f}"),
    )


def lds_inputs(
    subsets: Path,
    ground_truth: Sequence[Path],
    scores: Sequence[Path],
    train_features: Sequence[Path],
    target_features: Sequence[Path],
    memorization: Path | None = None,
    member_scores: Sequence[Path] = (),
) -> LdsInputs:
    """Read what the report needs; ensemble members in the order of each score file's members
    (for a method with candidate scores, each member's, to tune λ by ensemble size)."""
    split = read_subsets(subsets)
    truths = [read_ground_truth(p) for p in sorted(ground_truth, key=layout.parse_ground_truth)]
    shards: dict[tuple[str, layout.Member], list[Path]] = defaultdict(list)
    for path in train_features:
        output, member, _ = layout.parse_train_features(path)
        shards[output, member].append(path)
    psi = {layout.parse_target_features(p): p for p in target_features}
    results, score_path = {}, {}
    for path in scores:
        result = read_scores(path)
        results[result.method], score_path[result.method] = result, path
    members = {}
    steps = [int(t) for t in results[next(iter(results))].steps] if results else []
    for method, result in results.items():
        if "members" not in result.attrs:
            continue
        members[method] = []
        recorded = result.attrs.get("feature_digests") or {}
        chosen = gradient_method(method)
        kinds = [chosen.kind_at(t).key for t in steps]
        for m in result.attrs["members"]:
            member = layout.Member.parse(m)
            stores = {}
            for kind in dict.fromkeys(kinds):
                stores[kind] = FeatureStore(shards[kind, member])
                key = digest_key(kind, m, len(set(kinds)) == 1)
                stores[kind].check_unchanged_since(recorded.get(key), score_path[method])
            psi_m = read_target_features(psi[method, member]).features
            weights = chosen.row_weights([stores[kinds[0]]])
            members[method].append(
                ([stores[k] for k in kinds], psi_m, None if weights is None else weights[0])
            )
    check_consistent(subsets, split, ground_truth, truths, scores, list(results.values()))
    for method, stores in members.items():
        for per_step, features, _ in stores:
            n = per_step[0].n
            if n != len(split.train_ids) or features.shape[:2] != truths[0].f_t.shape[1:]:
                raise ArtifactError(
                    f"the features of {method} do not match the subsets and ground truth "
                    f"({n} examples, ψ {features.shape[:2]}); remake them"
                )
    memorized = None if memorization is None else read_memorization(memorization).loss
    return LdsInputs.of(
        split,
        truths,
        results,
        memorized,
        memorization,
        member_candidates=member_candidates(member_scores, results),
        members=members,
    )


def member_candidates(paths: Sequence[Path], results: dict[str, Scores]) -> dict:
    """Per method, its members' candidate scores (values, steps, targets, n) in the order of the
    score file's ``ensemble_members``; each must hold the score file's candidate values."""
    found: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for path in paths:
        method, member = layout.parse_member_scores(path)
        result, own = results.get(method), read_scores(path)
        grid = None if result is None else result.candidates
        if grid is None or own.candidates is None or own.candidates.values != grid.values:
            raise ArtifactError(
                f"{path} does not hold the candidate scores of {method}'s score file; "
                f"{layout.remake_hint(path)}"
            )
        found[method][str(member)] = own.candidates.scores
    return {
        method: [by_member[m] for m in results[method].attrs["ensemble_members"]]
        for method, by_member in found.items()
    }


def check_consistent(subsets_path, split, truth_paths, truths, score_paths, results) -> None:
    """Steps, target ids and training ids agree across subsets, ground truth and scores."""
    first, first_path = truths[0], sorted(truth_paths, key=layout.parse_ground_truth)[0]
    for path, truth in zip(sorted(truth_paths, key=layout.parse_ground_truth), truths, strict=True):
        if truth.steps != first.steps or not np.array_equal(truth.target_ids, first.target_ids):
            raise ArtifactError(f"{path} and {first_path} measure other steps or targets")
    for path, result in zip(score_paths, results, strict=True):
        if result.steps != first.steps or not np.array_equal(result.target_ids, first.target_ids):
            raise ArtifactError(
                f"{path} scores steps {result.steps} of targets {result.target_ids.tolist()}, the "
                f"ground truth {first_path} steps {first.steps} of {first.target_ids.tolist()}"
            )
        if not np.array_equal(result.train_ids, split.train_ids):
            raise ArtifactError(f"{path} and {subsets_path} index different training examples")
        made, subsets_made = result.attrs.get("data_digest"), split.attrs.get("data_digest")
        if made and subsets_made and made != subsets_made:
            raise ArtifactError(
                f"{path} and {subsets_path} were made from different data.h5 files; "
                f"{layout.remake_hint(path)}"
            )
    if split.masks.shape[1] != len(split.train_ids):
        raise ArtifactError(f"{subsets_path}: masks and train_ids differ in length")
