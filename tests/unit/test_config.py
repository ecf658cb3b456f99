"""The typed config: one home for defaults, round trips through job slices, cross-field checks
at build time, and the contracts between the Slurm profile, the rules and the stages."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path

import pytest
import torch
import yaml
from diffattr import config_doc
from diffattr.config import (
    SLICES,
    AttributionConfig,
    LdsConfig,
    RunConfig,
    Section,
    TrainConfig,
    attribution_steps,
    load,
    sampler_timesteps,
    schema,
)
from diffattr.config import merge as config_merge
from diffattr.config_schema import without_nulls
from diffattr.errors import ConfigError
from diffattr.methods import METHODS
from diffattr.stages import METHOD_SLICE, slice_of
from diffattr.stages import load as load_stage

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "config" / "config.yaml"
TEST = REPO / "config" / "test.yaml"


def sections(cls=RunConfig, props=None, path=""):
    """(dataclass, schema properties, dotted path) for every section, recursively."""
    props = schema()["properties"] if props is None else props
    yield cls, props, path
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and issubclass(hint, Section):
            key = cls.key(f.name)
            yield from sections(hint, props[key]["properties"], f"{path}{key}.")


def test_schema_defaults_equal_dataclass_defaults_and_keys_agree():
    checked = 0
    for cls, props, path in sections():
        fields = {cls.key(f.name): f for f in dataclasses.fields(cls)}
        assert set(fields) == set(props), (path, set(fields) ^ set(props))
        for key, prop in props.items():
            f = fields[key]
            if f.default_factory is not dataclasses.MISSING:
                code = f.default_factory()
                code = code.to_dict() if isinstance(code, Section) else code
            else:
                code = f.default
            if "default" in prop:
                expected = prop["default"]
                value = list(code) if isinstance(code, tuple) else code
                if prop.get("type") == "object" and "properties" in prop and prop["default"] == {}:
                    continue  # a nested section: its own fields are checked one by one
                assert value == expected, f"{path}{key}: dataclass {code!r} ≠ schema {expected!r}"
            else:  # required in the schema, or None (unset) in code
                assert code in (dataclasses.MISSING, None), f"{path}{key} has a code-only default"
            checked += 1
    assert checked >= 90


def test_config_readme_tables_are_generated_from_the_schema():
    text = config_doc.README.read_text()
    assert config_doc.rendered(text) == text, "run python -m diffattr.config_doc"
    for _, props, path in sections():
        within = path.partition(".")[2]  # rows name keys relative to their section
        for key, prop in props.items():
            if path or prop.get("type") != "object":  # sections are headings
                assert f"| `{within}{key}` |" in text, f"{path}{key} undocumented"


def test_method_enums_in_the_schema_are_the_registry():
    props = schema()["properties"]
    enums = [
        props["attribution"]["properties"]["methods"]["items"]["enum"],
        props["counterfactual"]["properties"]["methods"]["items"]["enum"],
        props["counterfactual"]["properties"]["specificity"]["items"]["enum"],
    ]
    for enum in enums:
        assert sorted(enum) == sorted(METHODS)
    group = props["counterfactual"]["properties"]["group"]["properties"]["methods"]["items"]
    assert sorted([*group["enum"], "random"]) == sorted(METHODS)  # random is the group's null
    assert set(AttributionConfig().methods) <= set(METHODS)


def test_lds_train_overrides_exactly_the_train_recipe():
    props = schema()["properties"]
    overrides = props["lds"]["properties"]["train"]
    recipe = props["train"]["properties"]
    assert overrides["additionalProperties"] is False
    ensemble_keys = {"ensemble", "pretrained"}  # the full ensemble, not a recipe
    assert set(overrides["properties"]) == set(TrainConfig.RECIPE) == set(recipe) - ensemble_keys
    for key, prop in overrides["properties"].items():
        assert "default" not in prop, f"lds.train.{key} must not default (it overrides train)"
        same = {k: v for k, v in recipe[key].items() if k not in ("default", "description")}
        assert {k: v for k, v in prop.items() if k != "description"} == same, key


def test_default_and_test_configs_round_trip_through_every_slice():
    cfg = load([DEFAULT, TEST])
    assert cfg.run == "test" and cfg.train.steps == 150 and cfg.train.batch_size == 64
    assert cfg.attribution.lambda_ == 0.01 and cfg.lds.train == {"steps": 60}
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    for stage in SLICES:
        part = RunConfig.from_slice(cfg.slice(stage), stage)
        for section, keys in SLICES[stage].items():
            whole = getattr(cfg, section)
            if keys is None:
                assert getattr(part, section) == whole
            else:
                for key in keys:
                    name = "lambda_" if key == "lambda" else key
                    assert getattr(getattr(part, section), name) == getattr(whole, name)


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("test.yaml",),
        ("digits-lds.yaml",),
        ("digits-lds.yaml", "digits-cf.yaml"),
        ("fontdigits-lds.yaml", "fontdigits-lds-seed1.yaml"),
        ("fontdigits-lds.yaml", "fontdigits-cf.yaml"),
        ("cifar10.yaml",),
    ],
)
def test_slices_equal_the_keys_of_snakemakes_validated_config(extra, tmp_path):
    """A job's params are exactly the keys it reads of the config Snakemake validated (defaults
    filled, unset optional keys absent), so rerun triggers follow the config, nothing else."""
    from snakemake.utils import validate as snakemake_validate

    paths = [DEFAULT] + [REPO / "config" / name for name in extra]
    raw = {}
    for path in paths:
        raw = config_merge(raw, yaml.safe_load(path.read_text()))
    if raw["dataset"].get("root"):
        raw["dataset"]["root"] = str(tmp_path)  # the data must exist
    validated = yaml.safe_load(yaml.safe_dump(without_nulls(raw)))  # as the Snakefile does
    snakemake_validate(validated, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    typed = RunConfig.from_dict(raw)
    for stage, spec in SLICES.items():
        expected = {
            s: validated[s]
            if keys is None
            else {k: validated[s][k] for k in keys if k in validated[s]}
            for s, keys in spec.items()
        }
        assert yaml.safe_load(typed.slice(stage)) == expected, stage


def test_a_key_outside_the_slice_raises_naming_it():
    cfg = load([DEFAULT, TEST])
    kernel = RunConfig.from_slice(cfg.slice("kernel"), "kernel")
    assert kernel.attribution.lambda_ == 0.01
    with pytest.raises(ConfigError, match=r"attribution\.K is not passed"):
        _ = kernel.attribution.K
    with pytest.raises(ConfigError, match=r"config key device is not passed"):
        _ = kernel.device
    with pytest.raises(ConfigError, match=r"config key lambda is not passed|attribution\.lambda"):
        _ = RunConfig.from_slice(
            cfg.slice("featurize_train"), "featurize_train"
        ).attribution.lambda_


def test_subset_recipe_overrides_only_what_lds_train_names():
    cfg = load([DEFAULT, TEST])
    subset = cfg.for_subset_models()
    assert subset.train.steps == 60
    assert subset.train == dataclasses.replace(cfg.train, steps=60)
    assert "steps: 60" in subset.slice("train") and "ensemble" not in subset.slice("train")


def base() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["lds"]["train"].update(stpes=3), r"lds\.train.*stpes"),
        (lambda c: c["attribution"].update(K=-4), r"attribution\.K: -4 is less than"),
        (lambda c: c["attribution"].update(methods=["journey_trak"]), r"\['pixel_similarity'\]"),
        (lambda c: c["attribution"].update(methods=["dtrak"]), r"\['journey_trak', 'pixel_simil"),
        (lambda c: c["counterfactual"].update(targets=99), r"counterfactual\.targets \(99\)"),
        (lambda c: c["counterfactual"].update(steps=[123]), r"\[123\] are not attribution"),
        (
            lambda c: c.update(targets={"sampling_steps": 100}, attribution={"steps": [995]}),
            r"\[995\] are not visited by a 100-step sampler",
        ),
        (lambda c: c["targets"].update(sampling_steps=2000), r"exceeds diffusion"),
        (lambda c: c["model"].update(conditional=True), r"cross_attention_dim is required"),
    ],
)
def test_cross_field_and_schema_errors_name_the_key(change, message):
    values = base()
    change(values)
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(values)


def test_mscoco_with_counterfactual_is_refused():
    values = base()
    values["dataset"] = {"name": "mscoco", "root": ".", "vae": "v", "text_encoder": "t"}
    with pytest.raises(ConfigError, match="mscoco has none"):
        RunConfig.from_dict(values)
    values["counterfactual"] = {"enabled": False}
    assert RunConfig.from_dict(values).dataset.name == "mscoco"


def test_lds_train_step_mismatch_warns():
    cfg = load([DEFAULT])
    assert "lds.train.steps" in cfg.warnings()[0]
    values = base()
    values["lds"]["train"] = {}
    assert RunConfig.from_dict(values).warnings() == []


def test_attribution_steps():
    timesteps = list(range(950, -1, -50))  # a 20-step sampler
    assert attribution_steps(3, timesteps) == [650, 350, 0]
    assert attribution_steps(1, timesteps) == [0]
    assert attribution_steps(20, timesteps) == timesteps
    assert attribution_steps([0, 500, 500], timesteps) == [500, 0]
    with pytest.raises(ConfigError, match="between 1 and 20"):
        attribution_steps(21, timesteps)
    cfg = load([DEFAULT, TEST])
    assert cfg.attribution_steps() == [660, 340, 0]  # 50 steps of 1000: 980, 960, …, 0


@pytest.mark.parametrize(("T", "n"), [(1000, 1000), (1000, 50), (1000, 3), (1000, 7), (10, 10)])
def test_sampler_timesteps_equal_diffusers(T, n):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=T)
    scheduler.set_timesteps(n)
    assert sampler_timesteps(T, n) == [int(t) for t in scheduler.timesteps]


def test_counterfactual_case_count():
    cf = dataclasses.replace(load([DEFAULT]).counterfactual, targets=3)
    assert cf.n_cases == 3 * 1 * 3 * 1  # targets × k × steps × methods
    cf = dataclasses.replace(cf, steps=(500, 0), k=(0.1, 0.2))
    assert cf.n_cases == 3 * 2 * 3 * 2 and cf.scored_methods == ("journey_trak", "pixel_similarity")
    cf = dataclasses.replace(cf, steps=("emergence", 500, "final"), specificity=("journey_trak",))
    assert cf.labels == ("emergence", "500", "final") and cf.stepwise_labels == cf.labels[:2]
    assert cf.n_cases == 3 * 2 * (3 * 3 + 2 * 1)  # targets × k × (steps × methods + twins)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": [500, "later"]}, "'later' is not one of ['emergence', 'final']"),
        ({"steps": [123, "final"]}, r"counterfactual.steps [123] are not attribution steps"),
        ({"specificity": ["das"]}, "counterfactual.specificity das: list it in"),
        ({"steps": "final", "specificity": ["journey_trak"]}, "needs a step in"),
        (
            {"attribution": {"unlearning": {"shards": 99}}},
            r"unlearning.shards \(99\) exceeds targets.n",
        ),
    ],
)
def test_a_counterfactual_or_unlearning_design_that_cannot_run_is_refused(change, message):
    raw = yaml.safe_load(DEFAULT.read_text())
    if "attribution" in change:
        raw["attribution"] = raw.get("attribution", {}) | change["attribution"]
    else:
        raw["counterfactual"] = raw.get("counterfactual", {}) | change
    with pytest.raises(ConfigError, match=re.escape(message) if "[" in message else message):
        RunConfig.from_dict(raw)


def test_a_trajectory_free_method_has_no_step_specificity_to_test():
    from diffattr.methods import check_specificity

    check_specificity(["journey_trak", "das_step", "pixel_similarity"])
    with pytest.raises(ConfigError, match="das: its scores are the same at every step"):
        check_specificity(["journey_trak", "das"])


def test_typed_sections_have_no_silent_defaults_for_required_keys():
    with pytest.raises(ConfigError, match=r"train\.steps is required"):
        TrainConfig.from_dict({"batch_size": 3})
    assert LdsConfig().n_subsets == 12


def test_null_means_the_default_and_a_null_required_key_is_refused():
    """null is 'unset' (the schema check drops nulls): a field or a section set to null takes
    its default, not None (ekfac's damping scale; the patches section)."""
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["attribution"].update({"ekfac": {"damping": None}, "patches": None})
    cfg = RunConfig.from_dict(raw)
    assert cfg.attribution.ekfac.damping == AttributionConfig().ekfac.damping == 0.1
    assert not cfg.attribution.patches.enabled
    with pytest.raises(ConfigError, match=r"train\.steps is required"):
        TrainConfig.from_dict({"batch_size": 3, "steps": None})


# ---------------------------------------------------------------------------------------------
# Rules ↔ profile ↔ stages: every job the Slurm profile gives a GPU resolves the device


def gpu_rules() -> list[str]:
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    return sorted(r for r, res in profile["set-resources"].items() if res.get("gpu"))


def rule_commands() -> dict[str, tuple[str, str]]:
    """rule → (config slice, diffattr subcommand), read from the rule files."""
    out = {}
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"\n\s*rule ", path.read_text())[1:]:
            name = block.split(":")[0]
            slice_ = re.search(
                r"cfg=(?:lambda wildcards: )?"
                r"(?:(?:cfg_slice|RUN_CONFIG\.slice)\(\"(\w+)\"|(subset_train_cfg)\(\)"
                r"|(featurize_train_cfg)"
                r"|(member_cfg))",
                block,
            )
            command = re.search(r'"diffattr ([\w-]+) ', block)
            if slice_ and command:
                named = slice_[1] or ("train" if slice_[2] else "featurize_train")
                out[name] = (METHOD_SLICE if slice_[4] else named, command[1])
    text = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for parent, twin in re.findall(r"\nuse rule (\w+) as (\w+) with:", text):
        out[twin] = out[parent]  # (its parent's command and slice)
    return out


def test_every_gpu_rule_exists_and_its_slice_carries_the_device():
    commands = rule_commands()
    assert len(commands) >= 20
    for rule in gpu_rules():
        assert rule in commands, f"profiles/slurm gives unknown rule {rule} a GPU"
        slice_, command = commands[rule]
        if slice_ == METHOD_SLICE:  # member_scores: each per-member method's slice
            for name, method in METHODS.items():
                if method.uses_member_scores:
                    assert "device" in SLICES[method.slice], (rule, name)
                    assert slice_of(command, name) == method.slice
            continue
        assert "device" in SLICES[slice_], rule
        assert slice_of(command) == slice_, f"{rule}: rule slice ≠ the stage's slice"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    "rule",
    gpu_rules(),
)
def test_gpu_stages_resolve_the_configured_device_first(rule, tmp_path):
    """With device: cuda on a CPU-only machine, each GPU stage stops at once naming CUDA, before
    it reads any input: every GPU stage resolves the configured device (load_model requires it,
    so the models it loads go there)."""
    slice_, command = rule_commands()[rule]
    method = "ekfac" if slice_ == METHOD_SLICE else "journey_trak"
    slice_ = slice_of(command, method)
    stage = load_stage(command)
    cfg = dataclasses.replace(load([DEFAULT, TEST]), device="cuda")
    hints = typing.get_type_hints(stage)
    kwargs = {}
    for param in list(inspect.signature(stage).parameters.values())[1:]:
        if param.default is not inspect.Parameter.empty:
            continue
        hint = hints[param.name]
        kwargs[param.name] = {int: 0, str: "c0"}.get(hint, tmp_path / "missing")
        if typing.get_origin(hint) is list:
            kwargs[param.name] = [tmp_path / "missing"]
        if param.name == "member":
            kwargs[param.name] = "m0_final"
        if param.name == "method":
            kwargs[param.name] = method
    if command == "sample-extra-targets":  # (its source is checked before anything is read)
        kwargs["new_samples"] = 1
    with pytest.raises(ConfigError, match="CUDA is not available"):
        stage(RunConfig.from_slice(cfg.slice(slice_), slice_), **kwargs)


def test_a_job_slice_can_leave_out_keys_its_kind_does_not_read():
    """featurize_train jobs of kinds without a window get no local_window: changing it reruns
    only the step-local kinds; the job reads the default where it is left out."""
    cfg = load([DEFAULT, TEST])
    full = yaml.safe_load(cfg.slice("featurize_train"))["attribution"]
    part_text = cfg.slice("featurize_train", ["attribution.local_window"])
    assert "local_window" in full and "local_window" not in yaml.safe_load(part_text)["attribution"]
    job = RunConfig.from_slice(part_text, "featurize_train")
    assert job.attribution.local_window == 200 and job.attribution.K == cfg.attribution.K


def test_ekfac_is_refused_for_conditional_models_before_anything_runs():
    raw = yaml.safe_load((REPO / "config" / "mscoco.yaml").read_text())
    raw["dataset"]["root"] = str(REPO)
    raw["attribution"]["methods"] = ["journey_trak", "ekfac"]
    with pytest.raises(ConfigError, match="ekfac supports unconditional models only"):
        RunConfig.from_dict(raw)


def test_the_counterfactual_benchmark_keeps_the_lds_benchmarks_setting():
    """config/digits-cf.yaml is an overlay on digits-lds in its own run folder: every stage that
    makes the models, targets, features, scores and the tuning subsets' ground truth gets the same
    slice as under digits-lds alone (so removals rank by the attribution and λ the LDS benchmark
    measures and chooses); only the count of reporting subsets is cut (≈ 2 h from scratch)."""
    lds = load([DEFAULT, REPO / "config" / "digits-lds.yaml"])
    both = load([DEFAULT, REPO / "config" / "digits-lds.yaml", REPO / "config" / "digits-cf.yaml"])
    changed = {stage for stage in SLICES if lds.slice(stage) != both.slice(stage)}
    assert "cf_plan" in changed
    counterfactual = {"train_classifier", "emergence", "cf_plan", "cf_resample", "cf_report"}
    assert changed <= counterfactual | {"lds_subsets", "lds_report", "kit"}  # kit: the whole config
    assert both.run != lds.run and both.lds.tuning == lds.lds.tuning and both.lds.enabled
    assert both.counterfactual.targets >= 24 and both.counterfactual.specificity


@pytest.mark.parametrize("name", ["cifar10", "cifar2", "digits-lds"])
def test_shipped_lds_configs_set_their_subset_training_length(name):
    """Configs are merged over config/config.yaml, whose quick ``lds.train.steps`` would
    otherwise be inherited silently by a benchmark's subset models."""
    cfg = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    assert "steps" in cfg["lds"]["train"], f"{name}.yaml must set lds.train.steps"


@pytest.mark.parametrize("tuning", [1, 2])
def test_too_few_tuning_subsets_to_tune_lambda_are_refused_in_one_line(tuning):
    """A Spearman across 1 or 2 subsets cannot choose λ: refused at DAG build, with the fix;
    0 (report the config λ, labelled) and the default are accepted."""
    values = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert values["lds"]["tuning"] >= LdsConfig.MIN_TUNING  # the default run tunes λ
    values["lds"]["tuning"] = tuning
    with pytest.raises(
        ConfigError, match=rf"lds.tuning: {tuning} subsets cannot tune λ.*≥ 3, or 0"
    ):
        RunConfig.from_dict(values)
    values["lds"]["tuning"] = 0
    RunConfig.from_dict(values)


def test_a_nested_config_value_given_as_text_says_to_use_a_config_file():
    """Snakemake reads values nested in --config as text ('lds={tuning: 3}' gives '3'): the
    message says so and names the fix instead of blaming the user's integer."""
    values = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    values["lds"]["tuning"] = "3"
    with pytest.raises(ConfigError, match=r"lds.tuning: '3' is text, not integer.*--configfile"):
        RunConfig.from_dict(values)


@pytest.mark.parametrize(
    ("old", "new"),
    [("unlearning_window", "unlearning.window"), ("ekfac_damping", "ekfac.damping")],
)
def test_an_old_flat_method_key_is_one_line_naming_its_new_key(old, new):
    raw = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    raw["attribution"][old] = 1
    with pytest.raises(
        ConfigError, match=rf"^config key attribution\.{old} moved: write attribution\.{new}$"
    ):
        RunConfig.from_dict(raw)
    with pytest.raises(ConfigError, match=rf"attribution\.{old} moved"):
        AttributionConfig.from_dict({old: 1})
