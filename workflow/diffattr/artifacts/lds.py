"""Codecs of the LDS: subsets, ground truth, memorization reference and the kit's grids."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..lds.report import Grid
from ..storage import create_h5, read_attrs, write_attrs
from ._h5 import reading, refuse_non_finite


@dataclass(frozen=True)
class Subsets:
    """LDS subsets: ``masks`` (subsets, n); ``role`` says which tune λ and which are reported."""

    masks: np.ndarray
    role: np.ndarray  # "tuning" | "reporting" per subset
    train_ids: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def kept_positions(self, subset: int) -> np.ndarray:
        return np.flatnonzero(self.masks[subset])


def write_subsets(path: str | Path, value: Subsets) -> None:
    with create_h5(path, value.attrs) as f:
        f.create_dataset("masks", data=value.masks)
        f.create_dataset("role", data=value.role.astype("S9"))
        f.create_dataset("train_ids", data=value.train_ids)


def read_subsets(path: str | Path) -> Subsets:
    with reading(path) as f:
        role = np.array([r.decode() for r in f["role"][()]])
        return Subsets(f["masks"][()], role, f["train_ids"][()], read_attrs(f))


@dataclass(frozen=True)
class GroundTruth:
    """f_t (seeds, steps, targets) and the final image's loss (seeds, targets) of one subset."""

    f_t: np.ndarray
    final_loss: np.ndarray
    steps: list[int]
    target_ids: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


def write_ground_truth(path: str | Path, value: GroundTruth) -> None:
    refuse_non_finite(path, f_t=value.f_t, final_loss=value.final_loss)
    with create_h5(path, value.attrs) as f:
        f.create_dataset("f_t", data=value.f_t)
        f.create_dataset("final_loss", data=value.final_loss)
        f.create_dataset("steps", data=np.asarray(value.steps))
        f.create_dataset("target_ids", data=np.asarray(value.target_ids))


def read_ground_truth(path: str | Path) -> GroundTruth:
    with reading(path) as f:
        return GroundTruth(
            f["f_t"][()],
            f["final_loss"][()],
            f["steps"][()].tolist(),
            f["target_ids"][()],
            read_attrs(f),
        )


@dataclass(frozen=True)
class PatchGroundTruth:
    """f_t of every patch (seeds, steps, targets, patches) of one subset, and the ``boxes``."""

    f_t: np.ndarray
    steps: list[int]
    target_ids: np.ndarray
    boxes: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


def write_patch_ground_truth(path: str | Path, value: PatchGroundTruth) -> None:
    refuse_non_finite(path, f_t=value.f_t)
    with create_h5(path, value.attrs) as f:
        f.create_dataset("f_t", data=value.f_t)
        f.create_dataset("steps", data=np.asarray(value.steps))
        f.create_dataset("target_ids", data=np.asarray(value.target_ids))
        f.create_dataset("boxes", data=np.asarray(value.boxes))


def read_patch_ground_truth(path: str | Path) -> PatchGroundTruth:
    with reading(path) as f:
        return PatchGroundTruth(
            f["f_t"][()],
            f["steps"][()].tolist(),
            f["target_ids"][()],
            f["boxes"][()],
            read_attrs(f),
        )


@dataclass(frozen=True)
class Memorization:
    """f_t of every subset's empirical optimal denoiser: ``loss`` (steps, targets, subsets)."""

    loss: np.ndarray
    steps: list[int]
    target_ids: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


def write_memorization(path: str | Path, value: Memorization) -> None:
    refuse_non_finite(path, loss=value.loss)
    with create_h5(path, value.attrs) as f:
        f.create_dataset("loss", data=value.loss)
        f.create_dataset("steps", data=np.asarray(value.steps))
        f.create_dataset("target_ids", data=np.asarray(value.target_ids))


def read_memorization(path: str | Path) -> Memorization:
    with reading(path) as f:
        return Memorization(
            f["loss"][()], f["steps"][()].tolist(), f["target_ids"][()], read_attrs(f)
        )


def write_grids(path: str | Path, grids: Mapping[str, Grid], attrs: Mapping[str, Any]) -> None:
    """An LDS kit's tuning grids: per method a dataset ``<method>`` holding its whole-ensemble
    predictions (values, steps, targets, subsets), with the grid ``values`` and ensemble
    ``size`` as attributes (``lds.report.Grid``)."""
    with create_h5(path, attrs) as f:
        for method, grid in sorted(grids.items()):
            data = f.create_dataset(method, data=grid.predictions)
            write_attrs(data, {"values": [float(v) for v in grid.values], "size": grid.size})


def read_grids(path: str | Path) -> dict[str, Grid]:
    with reading(path) as f:
        out = {}
        for method, data in f.items():
            meta = read_attrs(data)
            out[method] = Grid([float(v) for v in meta["values"]], int(meta["size"]), data[()])
        return out
