"""Codecs of training features, kernels, target features and patches (the table: the package)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError
from ..layout import remake_hint
from ..patches import Patches
from ..scoring import Kernel
from ..storage import DIGEST, create_h5, file_digest, read_attrs
from ._h5 import reading, refuse_non_finite


def write_feature_shard(
    path: str | Path,
    features: np.ndarray,
    positions: np.ndarray,
    train_ids: np.ndarray,
    attrs: Mapping[str, Any],
    residual_weights: np.ndarray | None = None,
) -> None:
    """One shard of Φ: ``features`` (rows, k) of the examples at ``positions``, and for DAS's
    normalised feature kinds the examples' ``residual_weights`` (rows,)."""
    refuse_non_finite(path, features=features)
    if residual_weights is not None:
        refuse_non_finite(path, residual_weights=residual_weights)
    with create_h5(path, attrs) as f:
        f.create_dataset("features", data=features)
        f.create_dataset("positions", data=positions)
        f.create_dataset("train_ids", data=train_ids)
        if residual_weights is not None:
            f.create_dataset("residual_weights", data=residual_weights)


class FeatureStore:
    """A feature matrix Φ (n, k) stored as shard files (``features`` at ``positions``), read in
    blocks of rows. The shards may be given in any order; they must tile rows 0..n−1."""

    def __init__(self, paths: Sequence[str | Path]):
        if not paths:
            raise ValueError("no feature shards given")
        shards, data_digests = [], {}
        for path in paths:
            with reading(path) as f:
                pos = f["positions"][()]
                shards.append(
                    (int(pos[0]) if len(pos) else 0, len(pos), Path(path), f["features"].shape[1])
                )
                self.attrs = read_attrs(f)
            if self.attrs.get("data_digest"):  # not recorded by shards of older versions
                data_digests.setdefault(self.attrs["data_digest"], Path(path))
        if len(data_digests) > 1:
            first, other = list(data_digests.values())[:2]
            raise ArtifactError(
                f"{other} was made from other training data than {first} (their data.h5 "
                f"digests differ); {remake_hint(other)}"
            )
        self.data_digest: str | None = next(iter(data_digests), None)
        shards.sort()
        self.shards = [(Path(p), lo, lo + size) for lo, size, p, _ in shards]
        self.dim = shards[0][3]
        expected = 0
        for path, lo, hi in self.shards:
            if lo != expected:
                raise ValueError(f"feature shards do not tile the training set (gap before {path})")
            expected = hi
        self.n = expected

    def digests(self) -> dict[str, str]:
        """Each shard's digest by file name (recorded by the kernel made from them): the datasets
        digest it records and :func:`reading` verified, or for shards of older versions the
        sha256 of the file."""
        out = {}
        for path, _, _ in self.shards:
            with reading(path) as f:
                recorded = f.attrs.get(DIGEST)
            out[path.name] = str(recorded) if recorded is not None else file_digest(path)
        return out

    def check_unchanged_since(self, recorded: Mapping[str, str] | None, made: str | Path) -> None:
        """The shards are the bytes ``made`` (a kernel, a score file) was computed from, by the
        digests it recorded (None: made before digests were recorded, not checked; a file's
        sha256, recorded by older versions, is accepted too)."""
        if recorded is None:
            return
        for name, digest in self.digests().items():
            path = next(p for p, _, _ in self.shards if p.name == name)
            known = recorded.get(name)
            if known != digest and (known is None or known != file_digest(path)):
                raise ArtifactError(
                    f"{path} changed after {made} was made from it; {remake_hint(made)}"
                )

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, block) pairs of at most ``rows`` rows, in order."""
        for path, lo, hi in self.shards:
            with reading(path) as f:
                data = f["features"]
                for a in range(0, hi - lo, rows):
                    yield lo + a, data[a : min(a + rows, hi - lo)]

    def cost(self) -> tuple[float, int]:
        """(seconds, example·draws) the shards took to featurize (from their attributes)."""
        seconds, rows = 0.0, 0
        for path, lo, hi in self.shards:
            with reading(path) as f:
                attrs = read_attrs(f)
            seconds += float(attrs.get("seconds", float("nan")))
            rows += (hi - lo) * int(attrs.get("K", 0))
        return seconds, rows

    def residual_weights(self) -> np.ndarray:
        """DAS's residual weight of every example (n,), stored beside normalised features."""
        parts = []
        for path, _, _ in self.shards:
            with reading(path) as f:
                if "residual_weights" not in f:
                    raise ArtifactError(f"{path} has no residual_weights; {remake_hint(path)}")
                parts.append(f["residual_weights"][()])
        return np.concatenate(parts)

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) (may span shards)."""
        parts = []
        for path, s_lo, s_hi in self.shards:
            a, b = max(lo, s_lo), min(hi, s_hi)
            if a < b:
                with reading(path) as f:
                    parts.append(f["features"][a - s_lo : b - s_lo])
        return np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32)


# ---------------------------------------------------------------------------------------------
# Kernels and target features


def write_kernel(path: str | Path, kernel: Kernel) -> None:
    refuse_non_finite(path, matrix=kernel.matrix)
    attrs = {**kernel.attrs, "form": kernel.form, "lambda_abs": kernel.lambda_abs}
    with create_h5(path, attrs) as f:
        f.create_dataset("matrix", data=kernel.matrix)


def read_kernel(path: str | Path) -> Kernel:
    with reading(path) as f:
        attrs = read_attrs(f)
        return Kernel(attrs["form"], f["matrix"][()], attrs["lambda_abs"], attrs)


@dataclass(frozen=True)
class TargetFeatures:
    """Projected target gradients ψ of one member: (steps, targets, k)."""

    features: np.ndarray
    steps: list[int]
    target_ids: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


def write_target_features(path: str | Path, value: TargetFeatures) -> None:
    refuse_non_finite(path, features=value.features)
    with create_h5(path, value.attrs) as f:
        f.create_dataset("features", data=value.features)
        f.create_dataset("steps", data=np.asarray(value.steps))
        f.create_dataset("target_ids", data=value.target_ids)


def read_target_features(path: str | Path) -> TargetFeatures:
    with reading(path) as f:
        return TargetFeatures(
            f["features"][()], f["steps"][()].tolist(), f["target_ids"][()], read_attrs(f)
        )


def write_patches(path: str | Path, value: Patches, attrs: Mapping[str, Any]) -> None:
    with create_h5(
        path, {**attrs, "image_size": list(value.image_size), "grid_size": list(value.grid_size)}
    ) as f:
        f.create_dataset("boxes", data=value.boxes)
        f.create_dataset("grid_boxes", data=value.grid_boxes)


def read_patches(path: str | Path) -> Patches:
    with reading(path) as f:
        attrs = read_attrs(f)
        return Patches(
            f["boxes"][()],
            f["grid_boxes"][()],
            tuple(attrs["image_size"]),
            tuple(attrs["grid_size"]),
        )
