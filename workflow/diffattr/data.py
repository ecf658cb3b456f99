"""Dataset registry and the prepared-data HDF5 layout.

A dataset is prepared once into ``data.h5``: ``images`` float32 (n, C, H, W) in [-1, 1], ``labels``
int64 (n,), ``ids`` int64 (n,) stable ids (indices into the original source), plus attributes
(``dataset``, ``class_names``). Training, featurizing and evaluation read only this file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import ConfigError, DatasetError
from .storage import create_h5, read_attrs


@dataclass(frozen=True)
class PreparedData:
    """Images in [-1, 1] with labels and stable ids; ``extra`` holds dataset-specific arrays."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    class_names: list[str]
    name: str
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        if not (len(self.labels) == len(self.ids) == n):
            raise DatasetError(f"{self.name}: images, labels and ids differ in length")
        if len(np.unique(self.ids)) != n:
            raise DatasetError(f"{self.name}: example ids are not unique")

    @property
    def n(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


Loader = Callable[[Mapping[str, Any]], PreparedData]
DATASETS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Register a dataset loader under ``name`` (the config's ``dataset.name``)."""

    def wrap(fn: Loader) -> Loader:
        DATASETS[name] = fn
        return fn

    return wrap


def select_classes(
    labels: np.ndarray, classes: list[int] | None, per_class: int | None
) -> np.ndarray:
    """Positions kept by a class filter and a per-class cap (the first ``per_class`` of each)."""
    keep = np.arange(len(labels))
    if classes is not None:
        missing = sorted(set(classes) - set(np.unique(labels).tolist()))
        if missing:
            raise ConfigError(f"dataset.classes names labels {missing} that the dataset lacks")
        keep = keep[np.isin(labels, classes)]
    if per_class is not None:
        if per_class < 1:
            raise ConfigError("dataset.per_class must be at least 1")
        kept = [keep[labels[keep] == c][:per_class] for c in np.unique(labels[keep])]
        keep = np.sort(np.concatenate(kept))
    return keep


@register("digits")
def load_digits(cfg: Mapping[str, Any]) -> PreparedData:
    """scikit-learn's bundled 8×8 digits (1797 images, 10 classes), scaled to [-1, 1]."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = (bunch.images.astype(np.float32) / 16.0 * 2.0 - 1.0)[:, None]
    labels = bunch.target.astype(np.int64)
    keep = select_classes(labels, cfg.get("classes"), cfg.get("per_class"))
    return PreparedData(
        images=images[keep],
        labels=labels[keep],
        ids=keep.astype(np.int64),
        class_names=[str(c) for c in range(10)],
        name="digits",
    )


def prepare(cfg: Mapping[str, Any]) -> PreparedData:
    """Load the configured dataset through the registry."""
    name = cfg.get("name")
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}")
    return DATASETS[name](cfg)


def write_prepared(data: PreparedData, path: str | Path, config: Mapping[str, Any]) -> None:
    """Write ``data.h5`` atomically."""
    attrs = {"dataset": data.name, "class_names": data.class_names, "config": dict(config)}
    with create_h5(path, attrs) as f:
        f.create_dataset("images", data=data.images.astype(np.float32))
        f.create_dataset("labels", data=data.labels)
        f.create_dataset("ids", data=data.ids)
        for key, value in data.extra.items():
            f.create_dataset(key, data=value)


def load_prepared(path: str | Path) -> PreparedData:
    """Read ``data.h5`` written by :func:`write_prepared`."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"prepared data {path} does not exist; run the prepare_data rule first")
    with h5py.File(path, "r") as f:
        attrs = read_attrs(f)
        core = {"images", "labels", "ids"}
        extra = {k: f[k][()] for k in f if k not in core}
        return PreparedData(
            images=f["images"][()],
            labels=f["labels"][()],
            ids=f["ids"][()],
            class_names=list(attrs.get("class_names", [])),
            name=str(attrs.get("dataset", "")),
            extra=extra,
        )
