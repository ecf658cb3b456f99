# Config validation and the run's paths. Paths come from diffattr.layout, the config slices each
# job receives from diffattr.config (SLICES); the seed tags (diffattr.layout) are applied by the
# package's training stages.
import os
import re
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

from diffattr import warm
from diffattr.config import RunConfig, without_nulls
from diffattr.errors import DiffattrError
from diffattr.layout import (
    FLOOR,
    ORIGINAL,
    REGIME_SUBSET,
    Member,
    Paths,
    case_name,
    export_workflow_root,
    members,
)
from diffattr.methods import (
    FeatureKind,
    check_specificity,
    get_method,
    member_method,
    unused_score_keys,
)
from diffattr.stages.extra import extra_target_jobs


def checked_config(values):
    """The run's typed config: schema and cross-field checks (dry runs too); a problem ends the
    workflow with its one line, without the package's frames."""
    try:
        run_config = RunConfig.from_dict(values)
        check_specificity(run_config.counterfactual.specificity)
    except DiffattrError as err:
        logger.error(f"diffattr: config error: {err}")
        sys.exit(1)
    return run_config


export_workflow_root(workflow.basedir)  # envs/diffattr.yaml installs the package from there
RUN_CONFIG = checked_config(config)
# Snakemake's own check (on a copy: a null means the key's default, which its schema check
# would reject)
validate(without_nulls(config), schema="../schemas/config.schema.yaml")
for _warning in RUN_CONFIG.warnings():
    logger.warning(_warning)

P = Paths(f"results/{RUN_CONFIG.run}")
# The rules that only draw (figures, HTML tables) name their outputs with the run folder as a
# wildcard that matches this run alone: Snakemake makes a rule forced with --forcerun a target
# of its own when it has no wildcards, so the README's figures-only command would otherwise add
# (and compute) an LDS, patch LDS or counterfactual the config does not have.
DRAWN = Paths("results/{run}")
METHODS = list(RUN_CONFIG.attribution.methods)
GRADIENT_METHODS = [m for m in METHODS if get_method(m).uses_gradients]
CANDIDATE_METHODS = [  # λ grid per member
    m for m in METHODS if get_method(m).candidate_setting and get_method(m).uses_member_scores
]
STEPS = RUN_CONFIG.attribution_steps()
FEATURE_KINDS = sorted({k.key for m in GRADIENT_METHODS for k in get_method(m).kinds(STEPS)})
MODELS = list(range(RUN_CONFIG.train.ensemble))
MEMBERS = [str(m) for m in members(RUN_CONFIG.train.ensemble, RUN_CONFIG.attribution.checkpoints)]
SHARDS = list(range(RUN_CONFIG.attribution.shards))
TOP_K = RUN_CONFIG.attribution.top_k  # None: dense scores; K: top-k per training shard, merged
ENV = "../../envs/diffattr.yaml"
LDS = RUN_CONFIG.lds
LDS_SUBSETS = list(range(LDS.n_subsets))
LDS_SEEDS = list(range(LDS.seeds))
PATCHES = RUN_CONFIG.attribution.patches
PATCH_METHODS = PATCHES.methods_of(METHODS) if PATCHES.enabled else []
CF = RUN_CONFIG.counterfactual
CF_CASES = [case_name(i) for i in range(CF.n_cases)]
GROUP_MODEL = r"random\d+-[a-z_]+|[a-z_]+"  # layout.parse_group_model's names
EXTRA = RUN_CONFIG.extra_targets
EXTRA_SETS = EXTRA.names
EXTRA_METHODS = [m for m in METHODS if not get_method(m).uses_member_scores]  # no per-target refit


wildcard_constraints:
    run=re.escape(RUN_CONFIG.run),
    model=r"\d+",
    member=Member.PATTERN,
    method=r"[a-z_]+",
    output=r"[a-z0-9_]+((-uniform)?(-normalized)?|-near\d+)",
    shard=r"\d+",
    subset=r"\d+",
    seed=r"\d+",
    target_set=r"[A-Za-z0-9_-]+",


def cfg_slice(stage):
    """The config keys ``stage`` reads, as one line of YAML (readable in the report): Snakemake
    reruns a job when its params change, so each job gets only what it reads (adding a method or
    a figure option retrains nothing)."""
    return RUN_CONFIG.slice(stage)


def featurize_train_cfg(wildcards):
    """featurize_train's slice without the keys its feature kind ignores, so changing the
    step-local window or DAS's residual grid re-featurizes only the kinds that use them."""
    kind = FeatureKind.parse(wildcards.output)
    unused = ["attribution.local_window"] * (kind.near is None)
    unused += ["attribution.residual_timesteps"] * (not kind.normalize)
    return RUN_CONFIG.slice("featurize_train", unused)


def member_cfg(wildcards):
    """A per-member method's job: its method's slice (``methods.PerMemberMethod.slice``)."""
    return RUN_CONFIG.slice(member_method(wildcards.method).slice)


def subset_train_cfg():
    """The subset models' recipe: the full-model recipe with ``lds.train`` overrides."""
    return RUN_CONFIG.for_subset_models().slice("train")


def model_dir_of(wildcards):
    return P.model_of_member(wildcards.member)


def train_shards(output, member):
    return [P.train_features(output, member, s) for s in SHARDS]


def shards_of_kernel(wildcards):
    return train_shards(wildcards.output, wildcards.member)


def score_inputs(wildcards):
    method = get_method(wildcards.method)
    needs = method.needs(STEPS)
    pieces = member_method(method.name).pieces(RUN_CONFIG) if needs.pieces else (1, 1)
    inputs = P.score_inputs(needs, P, MEMBERS, len(SHARDS), pieces)
    return {"data": P.data, "targets": P.targets, **inputs}


def patch_score_inputs(wildcards):
    """A patch score's inputs: the whole image's kernels and training shards, the patch target
    features, and with the LDS its lds.json (each step scored with the λ tuned there)."""
    inputs = score_inputs(wildcards)
    del inputs["member_scores"]
    inputs["patches"] = P.patches
    if get_method(wildcards.method).uses_gradients:
        inputs["target_features"] = [P.patch_target_features(wildcards.method, m) for m in MEMBERS]
        if LDS.enabled:
            inputs["lds"] = P.report("lds.json")
    return inputs


def downstream_scores(method):
    """The scores figures and counterfactual removals use: with attribution.top_k the merged
    top-k file; with an LDS, a tunable method's scores re-made with the λ tuned per step on the
    tuning subsets (the ridge of a gradient method, ekfac's damping); otherwise the config λ."""
    if TOP_K is not None:
        return P.top_k(method)
    if LDS.enabled and get_method(method).tunable:
        return P.tuned_scores(method)
    return P.scores(method)


def attribution_outputs():
    scores = [P.scores(m) if TOP_K is None else P.top_k(m) for m in METHODS]
    return scores + [P.attribution_figures(m) for m in METHODS]


def subset_models_of(wildcards):
    return [P.subset_model(wildcards.subset, r) for r in LDS_SEEDS]


def lds_report_inputs(wildcards):
    memorization = {"memorization": P.memorization} if LDS.memorization_reference else {}
    regime = {"regime": P.regime} if RUN_CONFIG.regime_diagnostics else {}
    return {
        **memorization,
        **regime,
        "subsets": P.subsets,
        "ground_truth": [P.ground_truth(j) for j in LDS_SUBSETS],
        "scores": [P.scores(m) for m in METHODS],
        "train_features": [s for o in FEATURE_KINDS for m in MEMBERS for s in train_shards(o, m)],
        "target_features": [P.target_features(g, m) for g in GRADIENT_METHODS for m in MEMBERS],
        "member_scores": [P.member_scores(m, member) for m in CANDIDATE_METHODS for member in MEMBERS],
    }


def lds_outputs():
    return [P.report("lds.csv"), P.figure("lds.png")]


def counterfactual_outputs():
    return [
        P.report("counterfactual.csv"),
        P.figure("counterfactual_metrics.png"),
        P.report("emergence.csv"),
        P.figure("emergence.png"),
    ] + group_outputs()


def group_model_dir(wildcards):
    """The model that regenerates: full model 0 for ``original``, else the group model."""
    return P.model(0) if wildcards.name == ORIGINAL else P.group_model(wildcards.name)


def group_outputs():
    """The group-removal protocol's report and figure (counterfactual.group)."""
    if not CF.group.enabled:
        return []
    return [P.report("group_removal.csv"), P.figure("group_removal.png")]


# The `figures` target: what the README's figures-only rerun redraws (forcing the rules that only
# draw from stored results; tests/workflow/test_workflow.py checks its dry run).
def figure_outputs():
    """Every figure (and HTML table) the config draws."""
    out = data_outputs() + [P.attribution_figures(m) for m in METHODS]
    out += [P.extra(name).attribution_figures(m) for name in EXTRA_SETS for m in EXTRA_METHODS]
    if PATCHES.enabled:
        out += [P.patch_figures(m) for m in PATCH_METHODS]
        out += [P.figure("lds_patches.png")] if LDS.enabled else []
    out += [P.figure("lds.png")] if LDS.enabled else []
    if CF.enabled:
        out += [P.figure("emergence.png"), P.figure("counterfactual_metrics.png")]
        out += [P.figure("group_removal.png")] if CF.group.enabled else []
    return out


def patch_outputs():
    """Patch scores and figures, and with the LDS the patch LDS report (attribution.patches)."""
    if not PATCHES.enabled:
        return []
    out = [P.patch_scores(m) for m in PATCH_METHODS] + [P.patch_figures(m) for m in PATCH_METHODS]
    if LDS.enabled:
        out += [P.report("lds_patches.csv"), P.figure("lds_patches.png")]
    return out


def extra_score_inputs(wildcards):
    """An extra target set's scores: the run's kernels and training shards (nothing on the
    training side is remade), the set's own targets and target features, and with the LDS its
    lds.json (each step scored with the λ tuned there, as the run's figures are): the inputs of
    its score call in ``stages.extra.extra_target_jobs`` (which Run.add_targets runs)."""
    jobs = extra_target_jobs(RUN_CONFIG, P, wildcards.target_set, [wildcards.method], {}, LDS.enabled)
    score = next(kwargs for command, kwargs in jobs if command == "score")
    keys = ("data", "targets", "kernels", "target_features", "train_features", "lds")
    as_text = lambda v: [str(p) for p in v] if isinstance(v, list) else str(v)
    return {k: as_text(score[k]) for k in keys if k in score} | {"member_scores": []}


def lds_option(wildcards, input):
    """``--lds <lds.json>`` for a score job that reads the LDS report (tuned λ), else nothing."""
    return f"--lds {input.lds}" if "lds" in input.keys() else ""


def extra_source(wildcards):
    """The CLI option naming where an extra target set comes from (a rerun trigger)."""
    name = wildcards.target_set
    if name in EXTRA.images:
        return f"--image-folder {EXTRA.images[name]}"
    return f"--new-samples {EXTRA.samples[name]}"


def extra_outputs():
    return [
        path
        for name in EXTRA_SETS
        for m in EXTRA_METHODS
        for path in (P.extra(name).scores(m), P.extra(name).attribution_figures(m))
    ]


def data_outputs():
    """The training data's figure (not for latent datasets: mscoco's data.h5 holds latents)."""
    return [P.figure("data.png")] if RUN_CONFIG.dataset.name != "mscoco" else []


def final_outputs():
    return (
        data_outputs()
        + attribution_outputs()
        + extra_outputs()
        + patch_outputs()
        + (lds_outputs() if LDS.enabled else [])
        + (counterfactual_outputs() if CF.enabled else [])
    )


def kit_inputs(wildcards):
    """The report's inputs (the features only to make the tuning grids), the data, targets, full
    models and the run's own report."""
    return {
        **lds_report_inputs(wildcards),
        "data": P.data,
        "targets": P.targets,
        "models": [P.model(i) for i in MODELS],
        "table": P.report("lds.csv"),
        "details": P.report("lds.json"),
    }


def kit_command():
    """The command that rebuilds the kit, as this run was asked for it (paths relative)."""
    files = [os.path.relpath(f) for f in workflow.overwrite_configfiles]
    # the target first: --configfile takes every word after it
    return " ".join(["snakemake kit --cores all --configfile", *files])
