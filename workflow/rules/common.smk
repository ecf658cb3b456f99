# Config validation, path naming and input functions: every path of the workflow is named here.
import json

from snakemake.logging import logger
from snakemake.utils import validate

from diffattr.methods import get_method


validate(config, schema="../schemas/config.schema.yaml")

RUN = f"results/{config['run']}"
METHODS = config["attribution"]["methods"]
GRADIENT_METHODS = [m for m in METHODS if get_method(m).uses_gradients]
MODELS = list(range(config["train"]["ensemble"]))
MEMBERS = [f"m{m}_{c}" for m in MODELS for c in config["attribution"]["checkpoints"]]
SHARDS = list(range(config["attribution"]["shards"]))
ENV = "../../envs/diffattr.yaml"
LDS = config["lds"]
LDS_SUBSETS = list(range(LDS["tuning"] + LDS["reporting"]))
LDS_SEEDS = list(range(LDS["seeds"]))
CF = config["counterfactual"]
CF_STEPS = 1 if CF["steps"] == "emergence" else len(CF["steps"])
CF_CASES = list(range(CF["targets"] * CF_STEPS * len(CF["methods"]) * len(CF["k"])))
CF_SCORED = [m for m in CF["methods"] if m != "random"]
_missing = sorted(set(CF_SCORED) - set(METHODS))
if CF["enabled"] and _missing:
    raise ValueError(
        f"counterfactual.methods {_missing} have no scores: add them to attribution.methods"
    )
if CF["enabled"] and config["dataset"]["name"] == "mscoco":
    raise ValueError(
        "counterfactual retraining needs class labels; mscoco has none: "
        "set counterfactual.enabled: false"
    )
if CF["enabled"] and CF["targets"] > config["targets"]["n"]:
    raise ValueError("counterfactual.targets exceeds targets.n")
if LDS["enabled"] and LDS["train"].get("steps", config["train"]["steps"]) != config["train"]["steps"]:
    # lds.train is merged over config/config.yaml's, so a quick override there is inherited.
    logger.warning(
        f"LDS subset models train {LDS['train']['steps']} steps, the full models "
        f"{config['train']['steps']} (lds.train.steps); set it in your config to change that"
    )


wildcard_constraints:
    model=r"\d+",
    member=r"m\d+_(final|step-\d+)",
    method=r"[a-z_]+",
    output=r"[a-z_]+",
    shard=r"\d+",


def cfg_json(*sections, **keys):
    """Config passed to a job as JSON params: whole ``sections`` plus, per keyword, only the
    listed keys of that section. Snakemake reruns a job when its params change, so each job gets
    only what it reads (adding a method or a figure option retrains nothing)."""
    cfg = {s: config[s] for s in sections}
    cfg.update({s: {k: config[s][k] for k in ks if k in config[s]} for s, ks in keys.items()})
    return json.dumps(cfg, sort_keys=True)


TRAIN_KEYS = ["steps", "batch_size", "lr", "warmup_steps", "ema_decay", "log_every",
              "checkpoints", "p_uncond", "precision"]


def train_cfg(overrides=None):
    """A model's recipe (not the ensemble size), optionally with overrides (``lds.train``)."""
    cfg = json.loads(cfg_json("seed", "device", "dataset", "model", "diffusion",
                              train=TRAIN_KEYS))
    cfg["train"].update(overrides or {})
    return json.dumps(cfg, sort_keys=True)


def subset_train_cfg():
    """The subset models' recipe: the full-model recipe with ``lds.train`` overrides."""
    return train_cfg(LDS["train"])


def model_dir_of(wildcards):
    return f"{RUN}/models/m{wildcards.member.split('_')[0][1:]}"


def train_shards(output, member):
    return expand(
        f"{RUN}/features/train/{output}/{member}/shard{{shard}}.h5", shard=SHARDS
    )


def shards_of_kernel(wildcards):
    return train_shards(wildcards.output, wildcards.member)


def score_inputs(wildcards):
    method = get_method(wildcards.method)
    inputs = {
        "data": f"{RUN}/data.h5",
        "targets": f"{RUN}/targets.h5",
        "kernels": [],
        "target_features": [],
        "train_features": [],
    }
    if method.uses_gradients:
        out = method.train_output
        inputs["kernels"] = [f"{RUN}/kernels/{out}/{m}.h5" for m in MEMBERS]
        inputs["target_features"] = [
            f"{RUN}/features/targets/{wildcards.method}/{m}.h5" for m in MEMBERS
        ]
        inputs["train_features"] = [s for m in MEMBERS for s in train_shards(out, m)]
    return inputs


def attribution_outputs():
    return expand(f"{RUN}/scores/{{method}}.h5", method=METHODS) + expand(
        f"{RUN}/figures/attributions/{{method}}", method=METHODS
    )


def subset_models_of(wildcards):
    return expand(f"{RUN}/lds/models/s{wildcards.subset}-r{{seed}}", seed=LDS_SEEDS)


def lds_report_inputs(wildcards):
    gradient = [get_method(m) for m in GRADIENT_METHODS]
    outs = sorted({m.train_output for m in gradient})
    memorization = {}
    if LDS["memorization_reference"]:
        memorization["memorization"] = f"{RUN}/lds/memorization.h5"
    return {
        **memorization,
        "subsets": f"{RUN}/lds/subsets.h5",
        "ground_truth": expand(f"{RUN}/lds/ground_truth/s{{j}}.h5", j=LDS_SUBSETS),
        "scores": expand(f"{RUN}/scores/{{method}}.h5", method=METHODS),
        "train_features": [s for o in outs for m in MEMBERS for s in train_shards(o, m)],
        "target_features": expand(
            f"{RUN}/features/targets/{{method}}/{{member}}.h5",
            method=GRADIENT_METHODS,
            member=MEMBERS,
        ),
    }


def lds_outputs():
    return [f"{RUN}/reports/lds.csv", f"{RUN}/figures/lds.png"]


def counterfactual_outputs():
    return [
        f"{RUN}/reports/counterfactual.csv",
        f"{RUN}/reports/emergence.csv",
        f"{RUN}/figures/emergence.png",
    ]


def final_outputs():
    return (
        attribution_outputs()
        + (lds_outputs() if LDS["enabled"] else [])
        + (counterfactual_outputs() if CF["enabled"] else [])
    )
