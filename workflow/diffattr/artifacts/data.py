"""Codecs of prepared data and targets (the table: ``diffattr.artifacts``)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..data import PreparedData
from ..errors import ArtifactError, DatasetError
from ..layout import remake_hint
from ..storage import create_h5, read_attrs
from ._h5 import reading, refuse_non_finite


def content_digest(images: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> str:
    """sha256 of the examples as stored (float32 images, labels, ids): the identity of a
    ``data.h5`` that every artefact made from it records as ``data_digest``. The streamed caption
    embeddings are left out (tens of GB at full COCO); they are checked by shape only."""
    digest = hashlib.sha256()
    for array in (np.asarray(images, np.float32), np.asarray(labels), np.asarray(ids)):
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def check_made_from(data: PreparedData, made: str | Path, recorded: str | None) -> None:
    """``made`` (an artefact recording ``data_digest``) was made from the examples of ``data``
    (None: made before digests were recorded, not checked)."""
    if recorded and data.digest and recorded != data.digest:
        raise ArtifactError(
            f"{made} was made from other training data than the current data.h5 (data digest "
            f"{recorded[:12]} ≠ {data.digest[:12]}); {remake_hint(made)}"
        )


def write_data(path: str | Path, data: PreparedData, config: Mapping[str, Any]) -> None:
    """Write ``data.h5`` with the examples' ``content_digest``."""
    refuse_non_finite(path, images=data.images)
    attrs = {
        "dataset": data.name,
        "class_names": data.class_names,
        "config": dict(config),
        "content_digest": content_digest(data.images, data.labels, data.ids),
    }
    with create_h5(path, attrs, digest=False) as f:  # its content_digest is checked instead
        f.create_dataset("images", data=data.images.astype(np.float32))
        f.create_dataset("labels", data=data.labels)
        f.create_dataset("ids", data=data.ids)
        for key, value in data.extra.items():
            f.create_dataset(key, data=value)


STREAMED = ("caption_embeddings",)
"""Datasets of ``data.h5`` read on demand (:class:`StoredRows`), never loaded whole."""


class StoredRows:
    """A dataset of an HDF5 file read row by row on demand: ``take_rows(rows[, columns])`` reads
    the distinct rows asked for (sorted, one read) and returns ``x[rows]`` or ``x[rows, columns]``
    exactly as the in-memory array would (``data.take_rows``). Memory: the rows of one batch."""

    def __init__(self, path: str | Path, name: str):
        self.path, self.name = Path(path), name
        with reading(self.path) as f:
            self.shape: tuple[int, ...] = f[name].shape
            self.dtype = f[name].dtype
        self._file: h5py.File | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def take_rows(self, rows: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        unique, inverse = np.unique(rows.ravel(), return_inverse=True)
        block = self._file[self.name][unique] if len(unique) else np.empty((0, *self.shape[1:]))
        where = inverse.reshape(rows.shape)
        return block[where] if columns is None else block[where, columns]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        with reading(self.path) as f:
            return np.asarray(f[self.name][()], dtype=dtype)

    def __getstate__(self):  # no open handle crosses a process boundary
        return {**self.__dict__, "_file": None}


def read_data(path: str | Path) -> PreparedData:
    """Read ``data.h5`` written by :func:`write_data`, verifying its content digest; the
    ``STREAMED`` datasets (caption embeddings) stay on disk as :class:`StoredRows`."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"prepared data {path} does not exist; run the prepare_data rule first")
    with reading(path) as f:
        attrs = read_attrs(f)
        core = {"images", "labels", "ids"}
        extra = {k: f[k][()] for k in f if k not in core and k not in STREAMED}
        streamed = [k for k in STREAMED if k in f]
        data = dict(
            images=f["images"][()],
            labels=f["labels"][()],
            ids=f["ids"][()],
            class_names=list(attrs.get("class_names", [])),
            name=str(attrs.get("dataset", "")),
            config=dict(attrs.get("config") or {}),
        )
    digest = content_digest(data["images"], data["labels"], data["ids"])
    recorded = attrs.get("content_digest")
    if recorded is not None and recorded != digest:
        raise ArtifactError(
            f"{path} does not hold the examples it was written with (content digest {digest[:12]}"
            f" ≠ recorded {str(recorded)[:12]}: corrupted or edited in place); {remake_hint(path)}"
        )
    extra.update({k: StoredRows(path, k) for k in streamed})
    return PreparedData(extra=extra, digest=digest, **data)


# ---------------------------------------------------------------------------------------------
# Targets


@dataclass(frozen=True)
class Targets:
    """Generated targets and their trajectories at the attribution steps (noisy → clean)."""

    final: np.ndarray  # (q, C, H, W)
    x_t: np.ndarray  # (steps, q, C, H, W)
    x0_hat: np.ndarray  # (steps, q, C, H, W)
    steps: list[int]
    target_ids: np.ndarray  # (q,)
    cond: np.ndarray | None = None  # (q, L, D) caption embeddings of text-conditioned targets
    prompts: list[str] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.target_ids)


def write_targets(path: str | Path, targets: Targets) -> None:
    refuse_non_finite(path, final=targets.final, x_t=targets.x_t, x0_hat=targets.x0_hat)
    with create_h5(path, targets.attrs) as f:
        f.create_dataset("target_ids", data=np.asarray(targets.target_ids))
        f.create_dataset("steps", data=np.asarray(targets.steps))
        f.create_dataset("final", data=targets.final)
        f.create_dataset("x_t", data=targets.x_t)
        f.create_dataset("x0_hat", data=targets.x0_hat)
        if targets.cond is not None:
            f.create_dataset("cond", data=targets.cond.astype(np.float16))
            prompts = [p.encode("utf-8") for p in targets.prompts or []]
            f.create_dataset("prompts", data=np.array(prompts, dtype="S"))


def read_targets(path: str | Path) -> Targets:
    with reading(path) as f:
        conditional = "cond" in f
        return Targets(
            final=f["final"][()],
            x_t=f["x_t"][()],
            x0_hat=f["x0_hat"][()],
            steps=f["steps"][()].tolist(),
            target_ids=f["target_ids"][()],
            cond=f["cond"][()] if conditional else None,
            prompts=[p.decode("utf-8") for p in f["prompts"][()]] if conditional else None,
            attrs=read_attrs(f),
        )
