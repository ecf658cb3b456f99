# Config validation, path naming and input functions: every path of the workflow is named here.
import json

from snakemake.utils import validate

from diffattr.methods import get_method, train_outputs


validate(config, schema="../schemas/config.schema.yaml")

RUN = f"results/{config['run']}"
METHODS = config["attribution"]["methods"]
GRADIENT_METHODS = [m for m in METHODS if get_method(m).uses_gradients]
MODELS = list(range(config["train"]["ensemble"]))
MEMBERS = [f"m{m}_{c}" for m in MODELS for c in config["attribution"]["checkpoints"]]
SHARDS = list(range(config["attribution"]["shards"]))
ENV = "../../envs/diffattr.yaml"


wildcard_constraints:
    model=r"\d+",
    member=r"m\d+_(final|step-\d+)",
    method=r"[a-z_]+",
    output=r"[a-z_]+",
    shard=r"\d+",


def cfg_json(*sections):
    """The config sections a rule needs, as JSON (changes to other sections do not rerun it)."""
    return json.dumps({s: config[s] for s in sections}, sort_keys=True)


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


def final_outputs():
    return attribution_outputs()
