"""The LDS kit of a finished run (``diffattr.kit``): no model is run, nothing is recomputed but
the tuning grids (the ridge of every λ, from the training features the kit leaves out)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..artifacts import write_grids
from ..config import RunConfig
from ..kit import GRIDS, REFERENCE_CSV, REFERENCE_JSON, write_manifest
from ..layout import Member, members
from ..lds.report import Grid, grids_by_size
from ..storage import atomic_path
from .lds import lds_inputs

log = logging.getLogger("diffattr")


def build_kit(  # noqa: PLR0913  (one option per kind of input file, as the rule passes them)
    cfg: RunConfig,
    *,
    data: Path,
    targets: Path,
    models: list[Path],
    subsets: Path,
    ground_truth: list[Path],
    scores: list[Path],
    table: Path,
    details: Path,
    out: Path,
    train_features: Sequence[Path] = (),
    target_features: Sequence[Path] = (),
    member_scores: Sequence[Path] = (),
    memorization: Path | None = None,
    regime: Path | None = None,
    rebuild: str = "",
) -> None:
    """Bundle a finished LDS run into a versioned kit: its files copied byte for byte in the
    run's layout, the whole ensemble's tuning grids in place of the features, the run's report
    as the reference, and a manifest (sha256 and size of every file, the config, ``rebuild``)."""
    inputs = lds_inputs(
        subsets, ground_truth, scores, train_features, target_features, memorization, member_scores
    )
    lambdas = [float(v) for v in cfg.lds.lambdas]
    grids: dict[str, Grid] = {}
    for method, result in inputs.scores.items():
        for grid in grids_by_size(inputs, method, result, lambdas):
            grids[method] = grid  # the last: the whole ensemble
    run = Path(data).parent
    files = [data, targets, subsets, *ground_truth, *scores, memorization, regime]
    with atomic_path(out) as tmp:
        for path in filter(None, files):
            copy(path, tmp / Path(path).relative_to(run))
        for folder in models:
            kept = [m.checkpoint for m in used_members(cfg) if f"m{m.index}" == Path(folder).name]
            for name in [*kept, "train_log.json"]:
                if (Path(folder) / name).exists():
                    copy(Path(folder) / name, tmp / Path(folder).relative_to(run) / name)
        write_grids(tmp / GRIDS, grids, {"lambdas": lambdas})
        copy(table, tmp / REFERENCE_CSV)
        copy(details, tmp / REFERENCE_JSON)
        config = yaml.safe_load(cfg.slice("kit"))
        manifest = write_manifest(tmp, config, list(inputs.scores), rebuild)
    size = sum(f["bytes"] for f in manifest["files"].values())
    log.info("kit %s: %d files, %.1f MB", out, len(manifest["files"]), size / 1e6)


def used_members(cfg: RunConfig) -> list[Member]:
    """The ensemble members (m<i>_<checkpoint>) the scores average over."""
    return members(cfg.train.ensemble, cfg.attribution.checkpoints)


def copy(source: Path, target: Path) -> None:
    """A file or folder copied byte for byte (file modes and times are not part of the kit)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if Path(source).is_dir():
        shutil.copytree(source, target, copy_function=shutil.copyfile)
    else:
        shutil.copyfile(source, target)
