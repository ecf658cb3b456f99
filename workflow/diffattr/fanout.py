"""How many jobs each workflow rule runs for a config (the default target ``all``).

The same fan-out as ``workflow/rules/*.smk`` and ``common.smk``, without Snakemake: models ×
checkpoints (members), feature kinds of each gradient method × members × shards, one score
file per method, subsets × seeds, counterfactual cases, extra target sets, patches. Feature
and member-score jobs are counted as the distinct files the methods' ``score_inputs`` name
(two methods sharing a feature kind share its jobs). A test compares every count with
Snakemake's own dry run.
"""

from __future__ import annotations

from collections import Counter

from .config import RunConfig
from .layout import Member, Paths, members
from .methods import get_method

MEMBER_RULE = "member_scores"  # every per-member method's jobs (rule member_scores)


def attribution_jobs(cfg: RunConfig, jobs: Counter) -> None:
    """Models, targets, features, kernels, per-member scores, score files and figures."""
    a, paths = cfg.attribution, Paths("run")
    names = [str(m) for m in members(cfg.train.ensemble, a.checkpoints)]
    steps = cfg.attribution_steps()
    files: dict[str, set[str]] = {r: set() for r in ("featurize_train", "kernel")}
    files |= {"featurize_targets": set(), MEMBER_RULE: set()}
    used: set[int] = {0}  # model 0 samples the targets
    for name in a.methods:
        method = get_method(name)
        pieces = method.pieces(cfg) if method.uses_member_scores else (1, 1)
        inputs = paths.score_inputs(method.needs(steps), paths, names, a.shards, pieces)
        files["featurize_train"].update(inputs["train_features"])
        files["kernel"].update(inputs["kernels"])
        files["featurize_targets"].update(inputs["target_features"])
        if method.uses_member_scores:
            files[MEMBER_RULE].update(inputs["member_scores"])
        if method.uses_gradients or method.uses_member_scores:
            used |= {Member.parse(m).index for m in names}
    jobs["import_model" if cfg.train.pretrained else "train_model"] = len(used)
    jobs["prepare_data"] = jobs["sample_targets"] = 1
    jobs["data_figure"] = int(cfg.dataset.name != "mscoco")
    jobs.update({rule: len(f) for rule, f in files.items()})
    jobs["figure_attributions"] = len(a.methods)
    if a.top_k is None:
        jobs["score"] = len(a.methods)
    else:  # one top-k job per method and training shard, then one merge per method
        jobs["score_shard"] = len(a.methods) * a.shards
        jobs["merge_top_k"] = len(a.methods)
    if cfg.lds.enabled:
        jobs["tuned_scores"] = sum(get_method(m).tunable for m in a.methods)


def lds_jobs(cfg: RunConfig, jobs: Counter) -> None:
    """Subsets, subset models (subsets × seeds), ground truth per subset, the references, the
    report and its figure."""
    lds = cfg.lds
    if not lds.enabled:
        return
    jobs["lds_subsets"] = jobs["lds_report"] = jobs["lds_figures"] = 1
    jobs["train_subset_model"] = lds.n_subsets * lds.seeds
    jobs["ground_truth"] = lds.n_subsets
    jobs["memorization_reference"] = int(lds.memorization_reference)
    jobs["train_regime_model"] = jobs["regime_diagnostics"] = int(cfg.regime_diagnostics)


def patch_jobs(cfg: RunConfig, jobs: Counter) -> None:
    """Patches: boxes, patch target features per gradient method × member, patch scores and
    figures per method; with the LDS, patch ground truth per subset and the patch report."""
    patches = cfg.attribution.patches
    if not patches.enabled:
        return
    methods = patches.methods_of(cfg.attribution.methods)
    n_members = cfg.train.ensemble * len(cfg.attribution.checkpoints)
    jobs["make_patches"] = 1
    jobs["featurize_patch_targets"] = n_members * sum(get_method(m).uses_gradients for m in methods)
    jobs["score_patches"] = jobs["figure_patches"] = len(methods)
    if cfg.lds.enabled:
        jobs["ground_truth_patches"] = cfg.lds.n_subsets
        jobs["lds_patches_report"] = jobs["lds_patches_figure"] = 1


def extra_jobs(cfg: RunConfig, jobs: Counter) -> None:
    """Extra target sets: sampled (or read) per set, featurized per gradient method × member,
    scored and drawn per method without per-member jobs."""
    sets = cfg.extra_targets.names
    if not sets:
        return
    methods = [m for m in cfg.attribution.methods if not get_method(m).uses_member_scores]
    n_members = cfg.train.ensemble * len(cfg.attribution.checkpoints)
    gradient = sum(get_method(m).uses_gradients for m in methods)
    jobs["sample_extra_targets"] = len(sets)
    jobs["featurize_extra_targets"] = len(sets) * gradient * n_members
    jobs["score_extra"] = jobs["figure_extra"] = len(sets) * len(methods)


def counterfactual_jobs(cfg: RunConfig, jobs: Counter) -> None:
    """Classifier, emergence, the plan, one model per case plus the seed floor, one resampling
    per model, the report and figures; the group protocol's plan, models, regenerations (its
    models' and the original's), report and figure."""
    cf = cfg.counterfactual
    if not cf.enabled:
        return
    for rule in ("train_classifier", "emergence", "emergence_figure", "cf_plan"):
        jobs[rule] = 1
    jobs["train_cf_model"] = cf.n_cases
    jobs["train_cf_floor"] = jobs["cf_report"] = jobs["cf_figures"] = 1
    jobs["cf_resample"] = cf.n_cases + 1
    if cf.group.enabled:  # a model per method and random draw; they and the original regenerate
        jobs["group_plan"] = jobs["group_report"] = jobs["group_figure"] = 1
        jobs["train_group_model"] = len(cf.group_models)
        jobs["group_regenerate"] = len(cf.group_models) + 1


def rule_jobs(cfg: RunConfig) -> dict[str, int]:
    """Jobs per rule of ``snakemake`` (target ``all``) for ``cfg``; rules without jobs left out."""
    jobs: Counter = Counter()
    for part in (attribution_jobs, lds_jobs, patch_jobs, extra_jobs, counterfactual_jobs):
        part(cfg, jobs)
    return {rule: n for rule, n in jobs.items() if n > 0}
