"""Where every artefact of a run lives, the names inside those paths, and the seed tags.

``Paths(run)`` names every file and folder of ``results/<run>/``; the Snakemake rules build their
inputs and outputs from it (with ``{wildcard}`` strings in place of values), and the package reads
structure back only through the parsers here. The seed tags are the contract that makes retraining
comparisons valid: a counterfactual model reuses full model 0's randomness stream, so removing
examples is the only difference, while the seed floor retrains the full data with another stream.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Names


@dataclass(frozen=True, order=True)
class Member:
    """An ensemble member: checkpoint ``checkpoint`` (``final``, ``step-<n>``) of full model i."""

    index: int
    checkpoint: str

    PATTERN = r"m\d+_(final|step-\d+)"

    def __str__(self) -> str:
        return f"m{self.index}_{self.checkpoint}"

    @classmethod
    def parse(cls, name: str) -> Member:
        """``m<index>_<checkpoint>`` (e.g. ``m0_final``, ``m1_step-500``) → Member."""
        if not re.fullmatch(cls.PATTERN, name):
            raise ConfigError(f"bad ensemble member name {name!r}; expected m<index>_<checkpoint>")
        head, _, checkpoint = name.partition("_")
        return cls(int(head[1:]), checkpoint)


def members(ensemble: int, checkpoints: tuple[str, ...] | list[str]) -> list[Member]:
    """Every (model, checkpoint) of the ensemble, model-major."""
    return [Member(i, c) for i in range(ensemble) for c in checkpoints]


@dataclass(frozen=True)
class Case:
    """One counterfactual model: remove ``k`` examples chosen by ``method`` for (target, step)."""

    index: int
    method: str
    target: int  # position in targets.h5
    step: int  # timestep t resampled from (x_T's for final; the emergence analysis's decision)
    k: int
    label: str  # the examined step as configured: emergence, final or t
    scored_at: int  # the step whose scores chose the removal (≠ step: a step-specificity twin)

    @property
    def twin(self) -> bool:
        """A step-specificity twin: the removal was chosen at another step than resampled."""
        return self.label != "final" and self.scored_at != self.step

    def as_dict(self) -> dict:
        return asdict(self)


ROOT_VARIABLE = "DIFFATTR_ROOT"


def export_workflow_root(folder: str | Path) -> None:
    """Export the workflow's folder as ``DIFFATTR_ROOT``: envs/diffattr.yaml (``--sdm conda``)
    installs the package from ``${DIFFATTR_ROOT}``, since Snakemake copies the file into
    .snakemake/conda/, where a relative path would point elsewhere (pip expands the variable)."""
    os.environ[ROOT_VARIABLE] = str(Path(folder).resolve())


def case_name(index: int) -> str:
    """A counterfactual case's name (``c<index>``)."""
    return f"c{index}"


FLOOR = "floor"  # the seed-floor model's name beside the cases
ORIGINAL = "original"  # the group protocol's regeneration by the original model (full model 0)


def group_random(method: str, draw: int) -> str:
    """The group protocol's ``draw``-th random removal of ``method``'s union size."""
    return f"random{draw}-{method}"


def parse_group_model(name: str) -> tuple[str, int | None]:
    """A group model's name → (method, random draw or None for the method's own removal)."""
    match = re.fullmatch(r"random(\d+)-([a-z_]+)|([a-z_]+)", name)
    if not match or name == ORIGINAL:
        raise ConfigError(f"bad group model name {name!r}; expected <method> or random<r>-<method>")
    if match[3]:
        return match[3], None
    return match[2], int(match[1])


FINAL = "final"  # the checkpoint saved at the end of training


def checkpoint_name(step: int, total: int) -> str:
    """A checkpoint folder's name: ``final`` after the last step, ``step-<n>`` before."""
    return FINAL if step == total else f"step-{step}"


def checkpoint(model_dir: str | Path, name: str = FINAL) -> Path:
    """The folder of one checkpoint of a trained model."""
    return Path(model_dir) / name


def model_files(folder: str | Path) -> tuple[Path, Path]:
    """(UNet folder, scheduler folder) of a saved diffusers model: the ``DDPMPipeline`` layout
    (``unet/``, ``scheduler/``, which diffattr writes) or a flat ``save_pretrained`` folder
    (``config.json`` and ``scheduler_config.json`` side by side, as earlier versions wrote)."""
    folder = Path(folder)
    if (folder / "unet" / "config.json").exists():
        return folder / "unet", folder / "scheduler"
    return folder, folder


def parse_case(name: str) -> int:
    if not re.fullmatch(r"c\d+", name):
        raise ConfigError(f"bad counterfactual case name {name!r}; expected c<index>")
    return int(name[1:])


def sample_group(target: int, step: int) -> str:
    """The group of a resampled-case file holding the samples of (target position, step)."""
    return f"t{target}-s{step}"


def parse_sample_group(name: str) -> tuple[int, int]:
    match = re.fullmatch(r"t(\d+)-s(\d+)", name)
    if not match:
        raise ConfigError(f"bad sample group {name!r}; expected t<target>-s<step>")
    return int(match[1]), int(match[2])


# ---------------------------------------------------------------------------------------------
# Seed tags: what makes two trainings share (or not share) their randomness


def full_model_seed(index: int | str) -> str:
    """Full ensemble model i."""
    return f"model-{index}"


def subset_model_seed(seed: int | str) -> str:
    """LDS subset models: training seed r is shared by every subset (common random numbers)."""
    return f"lds-seed-{seed}"


REGIME_SUBSET = 0
"""The regime diagnostics' pair: subset 0's model of seed 0 and a model of its complement."""


def regime_model_seed() -> str:
    """The complement model of the regime diagnostics (its own initialisation and batches)."""
    return "lds-regime-complement"


def counterfactual_seed() -> str:
    """Counterfactual models reuse full model 0's stream: the data is the only difference."""
    return full_model_seed(0)


def floor_seed() -> str:
    """The seed floor: full data, another stream (how far p(·|x_t) moves for no data reason)."""
    return "model-0-reseed"


# ---------------------------------------------------------------------------------------------
# Paths


@dataclass(frozen=True)
class Paths:
    """Every path of one run. Arguments may be values or ``"{wildcard}"`` strings (rules)."""

    run: str

    @property
    def data(self) -> str:
        return f"{self.run}/data.h5"

    def extra(self, target_set: str) -> Paths:
        """An extra target set's own targets, target features, scores and figures (the same
        names as the run's, under ``extra/<set>/``); the training side stays the run's."""
        return Paths(f"{self.run}/extra/{target_set}")

    def model(self, index: int | str) -> str:
        """Full model i: a folder of checkpoints ``final``, ``step-<n>``."""
        return f"{self.run}/models/m{index}"

    def model_of_member(self, member: str) -> str:
        return self.model(Member.parse(member).index)

    @property
    def targets(self) -> str:
        return f"{self.run}/targets.h5"

    def train_features(self, output: str, member: str | Member, shard: int | str) -> str:
        return f"{self.run}/features/train/{output}/{member}/shard{shard}.h5"

    def kernel(self, output: str, member: str | Member) -> str:
        return f"{self.run}/kernels/{output}/{member}.h5"

    def target_features(self, method: str, member: str | Member) -> str:
        return f"{self.run}/features/targets/{method}/{member}.h5"

    def scores(self, method: str) -> str:
        return f"{self.run}/scores/{method}.h5"

    def member_scores(
        self,
        method: str,
        member: str | Member,
        part: int | str | None = None,
        shard: int | str | None = None,
    ) -> str:
        """One ensemble member's scores of a method that scores per model (ekfac), or one
        piece of them (unlearning: block ``part`` of the targets, ``shard`` of the training
        examples)."""
        suffix = ("" if part is None else f".t{part}") + ("" if shard is None else f".s{shard}")
        return f"{self.run}/scores/members/{method}/{member}{suffix}.h5"

    def score_inputs(
        self,
        needs: Any,
        targets: Paths,
        members: Sequence[str],
        shards: int,
        pieces: tuple[int, int] = (1, 1),
    ) -> dict[str, list[str]]:
        """The files a score job reads besides data and targets, from what its method
        ``needs`` (``methods.Needs``): the run's per-member scores (for a method scored in
        pieces, ``pieces`` = (target blocks, training-example shards) per member), or the
        kernels and training shards of its feature kinds with the target features of ``targets``
        (the run's own paths, or an extra target set's)."""
        grid = [(t, s) for t in range(pieces[0]) for s in range(pieces[1])]
        kinds, member_scores = needs.feature_kinds, needs.member_scores
        return {
            "kernels": [self.kernel(k, m) for k in kinds for m in members],
            "target_features": (
                [targets.target_features(needs.method, m) for m in members]
                if needs.target_features
                else []
            ),
            "train_features": [
                self.train_features(k, m, s) for k in kinds for m in members for s in range(shards)
            ],
            "member_scores": [
                self.member_scores(needs.method, m, *piece)
                for m in members
                for piece in (grid if needs.pieces else [(None, None)])
            ]
            if member_scores
            else [],
        }

    def top_k(self, method: str) -> str:
        """The K strongest of each sign per (step, target) (attribution.top_k), merged."""
        return f"{self.run}/scores/topk/{method}.h5"

    def top_k_shard(self, method: str, shard: int | str) -> str:
        """The top K of one training shard (rows of ``attribution.shards``'s shard ``shard``)."""
        return f"{self.run}/scores/topk/shards/{method}/shard{shard}.h5"

    def tuned_scores(self, method: str) -> str:
        """Scores with the λ the LDS tuned per step (what figures and removals use)."""
        return f"{self.run}/scores/tuned/{method}.h5"

    def attribution_figures(self, method: str) -> str:
        return f"{self.run}/figures/attributions/{method}"

    # Patches
    @property
    def patches(self) -> str:
        """Every target's patch boxes (``attribution.patches`` resolved)."""
        return f"{self.run}/patches.h5"

    def patch_target_features(self, method: str, member: str | Member) -> str:
        return f"{self.run}/features/patch_targets/{method}/{member}.h5"

    def patch_scores(self, method: str) -> str:
        """Scores (steps, targets, patches, n_train) of a method's patch-restricted f_t."""
        return f"{self.run}/scores/patches/{method}.h5"

    def patch_figures(self, method: str) -> str:
        return f"{self.run}/figures/patches/{method}"

    def patch_ground_truth(self, subset: int | str) -> str:
        return f"{self.run}/lds/ground_truth_patches/s{subset}.h5"

    # LDS
    @property
    def subsets(self) -> str:
        return f"{self.run}/lds/subsets.h5"

    def subset_model(self, subset: int | str, seed: int | str) -> str:
        return f"{self.run}/lds/models/s{subset}-r{seed}"

    def ground_truth(self, subset: int | str) -> str:
        return f"{self.run}/lds/ground_truth/s{subset}.h5"

    @property
    def memorization(self) -> str:
        return f"{self.run}/lds/memorization.h5"

    @property
    def regime_model(self) -> str:
        return f"{self.run}/lds/regime/complement"

    @property
    def regime(self) -> str:
        return f"{self.run}/lds/regime.json"

    @property
    def kit(self) -> str:
        """The run's LDS kit (``diffattr.kit``): this layout again inside, plus a manifest."""
        return f"{self.run}/kit"

    # Counterfactual
    @property
    def classifier(self) -> str:
        return f"{self.run}/classifier"

    @property
    def emergence(self) -> str:
        return f"{self.run}/counterfactual/emergence.h5"

    @property
    def plan(self) -> str:
        return f"{self.run}/counterfactual/plan.h5"

    def cf_model(self, name: str) -> str:
        """A counterfactual model (``c<i>``) or the seed floor (``floor``)."""
        return f"{self.run}/counterfactual/models/{name}"

    def cf_samples(self, name: str) -> str:
        return f"{self.run}/counterfactual/samples/{name}.h5"

    @property
    def group_plan(self) -> str:
        return f"{self.run}/counterfactual/group/plan.h5"

    def group_model(self, name: str) -> str:
        """A group-removal model: ``<method>`` or ``random<r>-<method>``."""
        return f"{self.run}/counterfactual/group/models/{name}"

    def group_samples(self, name: str) -> str:
        """A group model's regenerations of the group (``original``: full model 0's)."""
        return f"{self.run}/counterfactual/group/samples/{name}.h5"

    # Reports, figures, logs
    def report(self, name: str) -> str:
        return f"{self.run}/reports/{name}"

    def figure(self, name: str) -> str:
        return f"{self.run}/figures/{name}"

    def log(self, rule: str, name: str | None = None) -> str:
        return (
            f"{self.run}/logs/{rule}.log" if name is None else f"{self.run}/logs/{rule}/{name}.log"
        )

    def benchmark(self, rule: str, name: str | None = None) -> str:
        """Snakemake's per-job benchmark (wall s, max RSS, CPU time) beside the job's log."""
        return (
            f"{self.run}/benchmarks/{rule}.tsv"
            if name is None
            else (f"{self.run}/benchmarks/{rule}/{name}.tsv")
        )


# ---------------------------------------------------------------------------------------------
# Parsers: the only place that reads structure back out of a path


def parse_train_features(path: str | Path) -> tuple[str, Member, int]:
    """``…/features/train/<output>/<member>/shard<s>.h5`` → (output, member, shard)."""
    path = Path(path)
    match = re.fullmatch(r"shard(\d+)\.h5", path.name)
    if not match:
        raise ConfigError(
            f"{path} is not a training-feature shard (…/<output>/<member>/shard<s>.h5)"
        )
    return path.parent.parent.name, Member.parse(path.parent.name), int(match[1])


def parse_kernel(path: str | Path) -> tuple[str, Member]:
    """``…/kernels/<output>/<member>.h5`` → (output, member)."""
    path = Path(path)
    return path.parent.name, Member.parse(path.stem)


def parse_target_features(path: str | Path) -> tuple[str, Member]:
    """``…/features/targets/<method>/<member>.h5`` → (method, member)."""
    path = Path(path)
    return path.parent.name, Member.parse(path.stem)


def parse_member_scores(path: str | Path) -> tuple[str, Member]:
    """``…/scores/members/<method>/<member>[.t<part>][.s<shard>].h5`` → (method, member)."""
    path = Path(path)
    return path.parent.name, Member.parse(path.stem.split(".t")[0])


def parse_member_piece(path: str | Path) -> tuple[int, int]:
    """``…/<member>.t<part>.s<shard>.h5`` → (part, shard); a whole member's file → (0, 0)."""
    name = Path(path).name
    match = re.fullmatch(r"[^.]+\.t(\d+)\.s(\d+)\.h5", name)
    if match:
        return int(match[1]), int(match[2])
    if ".t" in name or ".s" in name.removesuffix(".h5"):
        raise ConfigError(f"bad member-score file {name!r}; expected <member>[.t<b>.s<s>].h5")
    return 0, 0


def parse_scores(path: str | Path) -> str:
    """``…/scores/<method>.h5`` → method."""
    return Path(path).stem


def parse_ground_truth(path: str | Path) -> int:
    """``…/lds/ground_truth/s<j>.h5`` → subset j."""
    match = re.fullmatch(r"s(\d+)\.h5", Path(path).name)
    if not match:
        raise ConfigError(f"{path} is not a ground-truth file (…/ground_truth/s<j>.h5)")
    return int(match[1])


_RULES = [  # (path pattern within a run, the rule that makes it)
    (r"kit(/.*)?", "build_kit"),
    (r"extra/[^/]+/targets\.h5", "sample_extra_targets"),
    (r"extra/[^/]+/features/targets/.+\.h5", "featurize_extra_targets"),
    (r"extra/[^/]+/scores/.+\.h5", "score_extra"),
    (r"data\.h5", "prepare_data"),
    (r"patches\.h5", "make_patches"),
    (r"features/patch_targets/.+\.h5", "featurize_patch_targets"),
    (r"scores/patches/.+\.h5", "score_patches"),
    (r"lds/ground_truth_patches/.+\.h5", "ground_truth_patches"),
    (r"reports/lds_patches.*\.csv", "lds_patches_report"),
    (r"targets\.h5", "sample_targets"),
    (r"features/train/.+\.h5", "featurize_train"),
    (r"features/targets/.+\.h5", "featurize_targets"),
    (r"kernels/.+\.h5", "kernel"),
    (r"scores/topk/shards/.+\.h5", "score_shard"),
    (r"scores/topk/[^/]+\.h5", "merge_top_k"),
    (r"scores/tuned/.+\.h5", "tuned_scores"),
    (r"scores/members/.+\.h5", "member_scores"),
    (r"scores/.+\.h5", "score"),
    (r"reports/lds\.(json|csv)", "lds_report"),
    (r"models/m\d+(/.*)?", "train_model"),
    (r"lds/subsets\.h5", "lds_subsets"),
    (r"lds/models/.+", "train_subset_model"),
    (r"lds/regime/complement(/.*)?", "train_regime_model"),
    (r"lds/regime\.json", "regime_diagnostics"),
    (r"lds/ground_truth/.+\.h5", "ground_truth"),
    (r"lds/memorization\.h5", "memorization_reference"),
    (r"classifier(/.*)?", "train_classifier"),
    (r"counterfactual/emergence\.h5", "emergence"),
    (r"counterfactual/group/plan\.h5", "group_plan"),
    (r"counterfactual/group/models/[^/]+(/.*)?", "train_group_model"),
    (r"counterfactual/group/samples/.+\.h5", "group_regenerate"),
    (r"counterfactual/plan\.h5", "cf_plan"),
    (r"counterfactual/models/floor(/.*)?", "train_cf_floor"),
    (r"counterfactual/models/c\d+(/.*)?", "train_cf_model"),
    (r"counterfactual/samples/.+\.h5", "cf_resample"),
]


def shard_positions(n: int, batch_size: int, shards: int, shard: int) -> np.ndarray:
    """Positions of shard ``shard`` of ``shards``: a contiguous run of whole batches."""
    if not 0 <= shard < shards:
        raise ConfigError(f"shard {shard} out of range for {shards} shards (0 … {shards - 1})")
    return np.arange(*shard_bounds(n, batch_size, shards, shard))


def shard_bounds(n: int, batch_size: int, shards: int, shard: int) -> tuple[int, int]:
    """[lo, hi) of shard ``shard``'s rows (lo = hi for a shard without a batch)."""
    if not 0 <= shard < shards:
        raise ConfigError(f"shard {shard} out of range for {shards} shards (0 … {shards - 1})")
    n_batches = -(-n // batch_size)
    lo, hi = shard * n_batches // shards, (shard + 1) * n_batches // shards
    return min(lo * batch_size, n), min(hi * batch_size, n)


def remake_hint(path: str | Path) -> str:
    """How to make a broken result again: delete it and rerun (naming the rule that makes it)."""
    text = Path(path).as_posix()
    for pattern, rule in _RULES:
        if re.search(rf"(^|/){pattern}$", text):
            return f"delete it and run the workflow again to remake it (rule {rule})"
    return "delete it and make it again"


def parse_group_samples(path: str | Path) -> str:
    """``…/counterfactual/group/samples/<name>.h5`` → ``original`` or a group model's name."""
    name = Path(path).stem
    if name != ORIGINAL:
        parse_group_model(name)
    return name


def parse_cf_samples(path: str | Path) -> str:
    """``…/counterfactual/samples/<name>.h5`` → ``c<i>`` or ``floor``."""
    name = Path(path).stem
    if name != FLOOR:
        parse_case(name)
    return name
