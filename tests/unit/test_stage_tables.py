"""The hand-kept tables that declare a stage, checked against one another in both directions:
``stages.STAGES`` (command → module, function, slice), ``config.SLICES``, ``cli.HELP`` (one line
per option), the rules in workflow/rules/*.smk (which command each runs), ``layout._RULES`` (the
rule that remakes a file) and the Slurm profile's ``set-resources`` (a GPU exactly for the rules
that load a model, i.e. whose slice carries the device)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml
from diffattr import layout
from diffattr.cli import COMMANDS, HELP
from diffattr.config import SLICES
from diffattr.methods import METHODS, PerMemberMethod
from diffattr.stages import METHOD_SLICE, STAGES, load, slice_of

REPO = Path(__file__).resolve().parents[2]
PROFILE = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
PER_MEMBER = [m for m in METHODS.values() if isinstance(m, PerMemberMethod)]


def smk_text() -> str:
    return "\n".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))


def twins() -> dict[str, str]:
    """``use rule X as Y with:``: Y → X."""
    return {y: x for x, y in re.findall(r"\nuse rule (\w+) as (\w+) with:", smk_text())}


def rules() -> dict[str, list[str]]:
    """rule → the diffattr commands its shell runs (several where it chooses one); a rule made
    with ``use rule X as Y with:`` runs X's."""
    out = {}
    for block in re.split(r"\n\s*rule ", smk_text())[1:]:
        name = re.match(r"(\w+)", block)[1]
        out[name] = re.findall(r'"diffattr ([a-z-]+) ', block.split("\nuse rule ")[0])
    for twin, parent in twins().items():
        out[twin] = out[parent]
    return out


def stage_slices(command: str) -> list[str]:
    """The slices a stage reads (for ``member-scores``: each per-member method's)."""
    if STAGES[command][2] == METHOD_SLICE:
        return [slice_of(command, m.name) for m in PER_MEMBER]
    return [slice_of(command)]


def test_stages_and_slices_name_each_other():
    used = {s for command in STAGES for s in stage_slices(command)}
    assert used <= set(SLICES), sorted(used - set(SLICES))
    assert set(SLICES) <= used, f"slices no stage reads: {sorted(set(SLICES) - used)}"


def test_every_stage_option_has_a_help_line_and_every_help_line_an_option():
    options = set()
    for command in STAGES:
        options |= set(list(inspect.signature(load(command)).parameters)[1:])
    for command in COMMANDS.values():
        options |= set(inspect.signature(command).parameters)
    options -= {"progress"}  # (a --no-progress switch, no help line)
    assert options <= set(HELP), f"options without help: {sorted(options - set(HELP))}"
    assert set(HELP) <= options, f"help for no option: {sorted(set(HELP) - options)}"


def test_rules_run_stages_and_every_stage_has_a_rule():
    commands = {c for cs in rules().values() for c in cs}
    assert commands <= set(STAGES), sorted(commands - set(STAGES))
    assert set(STAGES) <= commands, f"stages no rule runs: {sorted(set(STAGES) - commands)}"


def test_the_remake_table_names_rules_and_every_run_file_has_one():
    known = set(rules())
    assert {rule for _, rule in layout._RULES} <= known
    p = layout.Paths("results/x")
    files = [
        p.data,
        p.targets,
        p.patches,
        p.subsets,
        p.memorization,
        p.regime,
        p.emergence,
        p.plan,
        p.train_features("loss", "m0_final", 0),
        p.kernel("loss", "m0_final"),
        p.target_features("journey_trak", "m0_final"),
        p.scores("journey_trak"),
        p.tuned_scores("journey_trak"),
        p.member_scores("ekfac", "m0_final"),
        p.member_scores("unlearning", "m0_final", 0, 1),
        p.patch_target_features("journey_trak", "m0_final"),
        p.patch_scores("journey_trak"),
        p.patch_ground_truth(0),
        p.ground_truth(0),
        p.cf_samples("c0"),
        p.extra("s").targets,
        p.extra("s").target_features("journey_trak", "m0_final"),
        p.extra("s").scores("journey_trak"),
        p.report("lds.json"),
        p.report("lds_patches.csv"),
        p.model(0) + "/final",
        p.subset_model(0, 0),
        p.regime_model,
        p.classifier,
        p.cf_model("c0"),
        p.cf_model("floor"),
    ]
    for path in files:
        hint = layout.remake_hint(path)
        rule = re.search(r"\(rule (\w+)\)", hint)
        assert rule, f"{path}: no rule remakes it ({hint})"
        assert rule[1] in known, path


def model_rules() -> dict[str, bool]:
    """rule → whether it loads a model (its stage's slice carries the device)."""
    out = {}
    for rule, commands in rules().items():
        if commands:
            out[rule] = any("device" in SLICES[s] for c in commands for s in stage_slices(c))
    return out


ON_THE_CPU = {"import_model"}  # copies a pretrained UNet on the CPU (its slice's device unread)


@pytest.mark.parametrize("rule", sorted(model_rules()))
def test_a_rule_gets_a_gpu_on_slurm_exactly_when_it_loads_a_model(rule):
    resources = PROFILE["set-resources"].get(rule, {})
    if rule == "train_model":  # import-model or train: both load one
        assert resources.get("gpu") == 1
        return
    loads = model_rules()[rule] and rule not in ON_THE_CPU
    assert bool(resources.get("gpu")) == loads, (rule, resources)


def test_a_twin_rule_has_its_parent_s_slurm_rows():
    assert twins(), "no use rule … with: found"
    for twin, parent in twins().items():
        for section in ("set-resources", "set-threads"):
            assert PROFILE[section].get(twin) == PROFILE[section].get(parent), (twin, section)


def test_every_slurm_row_is_a_rule():
    known = set(rules())
    for section in ("set-resources", "set-threads"):
        assert set(PROFILE[section]) <= known, sorted(set(PROFILE[section]) - known)
