"""Codecs of counterfactual retraining and group removal (the table: ``diffattr.artifacts``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..group_removal import GroupPlan
from ..layout import Case, parse_sample_group, sample_group
from ..storage import create_h5, read_attrs
from ._h5 import reading, refuse_non_finite


@dataclass(frozen=True)
class Emergence:
    """P(final class) along each trajectory, its samples, and each target's decision step."""

    probability: np.ndarray  # (steps, targets)
    samples: np.ndarray  # (steps, targets, S, C, H, W)
    steps: list[int]
    classes: np.ndarray  # (targets,) the final image's class
    decision_step: np.ndarray  # (targets,)
    attrs: dict[str, Any] = field(default_factory=dict)


def write_emergence(path: str | Path, value: Emergence) -> None:
    refuse_non_finite(path, probability=value.probability, samples=value.samples)
    with create_h5(path, value.attrs) as f:
        f.create_dataset("probability", data=value.probability)
        f.create_dataset("samples", data=value.samples)
        f.create_dataset("steps", data=np.asarray(value.steps))
        f.create_dataset("classes", data=value.classes)
        f.create_dataset("decision_step", data=value.decision_step)


def read_emergence(path: str | Path) -> Emergence:
    with reading(path) as f:
        return Emergence(
            f["probability"][()],
            f["samples"][()],
            f["steps"][()].tolist(),
            f["classes"][()],
            f["decision_step"][()],
            read_attrs(f),
        )


@dataclass(frozen=True)
class Plan:
    """Counterfactual cases and, per case, the training examples kept (``keep`` (cases, n))."""

    cases: list[Case]
    keep: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def kept_positions(self, case: int) -> np.ndarray:
        return np.flatnonzero(self.keep[case])


def write_plan(path: str | Path, value: Plan) -> None:
    attrs = {**value.attrs, "cases": [c.as_dict() for c in value.cases]}
    with create_h5(path, attrs) as f:
        f.create_dataset("keep", data=value.keep)


def read_plan(path: str | Path) -> Plan:
    with reading(path) as f:
        attrs = read_attrs(f)
        return Plan([Case(**c) for c in attrs["cases"]], f["keep"][()], attrs)


Runs = dict[str, np.ndarray]  # "original", "a", "b" → samples (S, C, H, W)


def write_resampled(
    path: str | Path, samples: Mapping[tuple[int, int], Runs], attrs: Mapping[str, Any]
) -> None:
    """Samples of p(·|x_t) per (target position, step), one group each."""
    for runs in samples.values():
        refuse_non_finite(path, **runs)
    with create_h5(path, attrs) as f:
        for (target, step), runs in samples.items():
            group = f.create_group(sample_group(target, step))
            for name, values in runs.items():
                group.create_dataset(name, data=values)


def read_resampled(path: str | Path) -> dict[tuple[int, int], Runs]:
    with reading(path) as f:
        return {
            parse_sample_group(name): {k: v[()] for k, v in group.items()}
            for name, group in f.items()
        }


# ---------------------------------------------------------------------------------------------
# Group removal (diffattr.group_removal)


def write_group_plan(path: str | Path, value: GroupPlan) -> None:
    attrs = {**value.attrs, "names": value.names, "methods": value.methods}
    with create_h5(path, attrs) as f:
        f.create_dataset("keep", data=value.keep)
        f.create_dataset("targets", data=value.targets)
        f.create_dataset("ranked_at", data=value.ranked_at)


def read_group_plan(path: str | Path) -> GroupPlan:
    with reading(path) as f:
        attrs = read_attrs(f)
        names, methods = attrs.pop("names"), attrs.pop("methods")
        return GroupPlan(names, f["keep"][()], f["targets"][()], methods, f["ranked_at"][()], attrs)


def write_group_samples(
    path: str | Path, samples: np.ndarray, targets: np.ndarray, attrs: Mapping[str, Any]
) -> None:
    """One model's regenerations of the group: (targets, S, C, H, W)."""
    refuse_non_finite(path, samples=samples)
    with create_h5(path, attrs) as f:
        f.create_dataset("samples", data=samples)
        f.create_dataset("targets", data=targets)


def read_group_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    with reading(path) as f:
        return f["samples"][()], f["targets"][()], read_attrs(f)
