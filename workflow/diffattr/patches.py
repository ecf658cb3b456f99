"""Patches of a target: rectangular boxes [y0, x0, y1, x1) in image pixels, and their place on the
model's sample grid.

A patch restricts the step-specific output to its pixels, f_t^P = mean_{p ∈ P} (ε_θ − ε)²_p over
all channels (the masked DDPM loss normalised by the patch area), so patches that tile the image
satisfy Σ_P (|P|/|image|) f_t^P = f_t. Latent models: a box in image pixels covers the latent
positions ⌊y0/f⌋ … ⌈y1/f⌉ (and likewise in x), f = image size / latent size (8 for Stable
Diffusion's VAE); every latent position whose receptive centre lies in the box or on its border.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import PatchesConfig
from .errors import ConfigError

COLUMNS = ["target", "y0", "x0", "y1", "x1"]


@dataclass(frozen=True)
class Patches:
    """Per target its boxes: ``boxes`` (targets, patches, 4) in image pixels and ``grid_boxes``
    the same on the model's sample grid (equal for pixel models)."""

    boxes: np.ndarray
    grid_boxes: np.ndarray
    image_size: tuple[int, int]
    grid_size: tuple[int, int]

    @property
    def n(self) -> int:
        return self.boxes.shape[1]

    def areas(self) -> np.ndarray:
        """Pixels per box on the sample grid (targets, patches)."""
        b = self.grid_boxes
        return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def grid_boxes(grid: Sequence[int], size: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """gh × gw equal boxes tiling an image of ``size`` (H, W), row-major."""
    (gh, gw), (h, w) = grid, size
    if h % gh or w % gw:
        raise ConfigError(
            f"attribution.patches.grid {[gh, gw]} does not divide the {h}×{w} image: choose "
            "divisors of its height and width, or give boxes"
        )
    ph, pw = h // gh, w // gw
    return [(r * ph, c * pw, (r + 1) * ph, (c + 1) * pw) for r in range(gh) for c in range(gw)]


def read_box_file(path: str | Path) -> dict[int, list[tuple[int, int, int, int]]]:
    """Per-target boxes from a CSV with header ``target,y0,x0,y1,x1`` (target = position)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != COLUMNS:
            raise ConfigError(
                f"{path}: header {reader.fieldnames}, expected {','.join(COLUMNS)} "
                "(attribution.patches.file)"
            )
        out: dict[int, list[tuple[int, int, int, int]]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                target, *box = (int(row[c]) for c in COLUMNS)
            except (TypeError, ValueError):
                raise ConfigError(f"{path}:{line}: expected integers, got {row}") from None
            out.setdefault(target, []).append(tuple(box))  # type: ignore[arg-type]
    return out


def resolve(
    cfg: PatchesConfig, n_targets: int, image_size: Sequence[int], grid_size: Sequence[int]
) -> Patches:
    """Every target's boxes: the grid's, then ``boxes``, then its own from ``file`` (padded with
    the whole image to the largest count), checked against the image and mapped to the grid."""
    h, w = image_size
    shared = list(grid_boxes(cfg.grid, image_size)) if cfg.grid else []
    shared += [tuple(int(v) for v in b) for b in cfg.boxes or ()]
    own = read_box_file(cfg.file) if cfg.file else {}
    unknown = sorted(set(own) - set(range(n_targets)))
    if unknown:
        raise ConfigError(
            f"{cfg.file} names targets {unknown}; the run has positions 0 … {n_targets - 1}"
        )
    extra = max((len(v) for v in own.values()), default=0)
    whole = (0, 0, h, w)
    rows = [
        shared + own.get(j, []) + [whole] * (extra - len(own.get(j, []))) for j in range(n_targets)
    ]
    boxes = np.array(rows, dtype=np.int64).reshape(n_targets, -1, 4)
    if boxes.shape[1] == 0:
        raise ConfigError("attribution.patches gives no boxes: set grid, boxes or file")
    bad = [b.tolist() for b in boxes.reshape(-1, 4) if not _inside(b, h, w)]
    if bad:
        raise ConfigError(
            f"patch boxes {bad[:3]} are empty or leave the {h}×{w} image: "
            "[y0, x0, y1, x1] with 0 ≤ y0 < y1 ≤ H and 0 ≤ x0 < x1 ≤ W"
        )
    return Patches(boxes, to_grid(boxes, image_size, grid_size), (h, w), tuple(grid_size))


def _inside(box: np.ndarray, h: int, w: int) -> bool:
    y0, x0, y1, x1 = box.tolist()
    return 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w


def to_grid(boxes: np.ndarray, image_size: Sequence[int], grid_size: Sequence[int]) -> np.ndarray:
    """Image-pixel boxes → the positions of a (coarser) sample grid they cover."""
    fy, fx = image_size[0] / grid_size[0], image_size[1] / grid_size[1]
    out = np.empty_like(boxes)
    out[..., 0] = np.floor(boxes[..., 0] / fy)
    out[..., 1] = np.floor(boxes[..., 1] / fx)
    out[..., 2] = np.ceil(boxes[..., 2] / fy)
    out[..., 3] = np.ceil(boxes[..., 3] / fx)
    return out


def crop(x, box: Sequence[int]):
    """x[..., y0:y1, x0:x1] (a tensor or array; the whole box returns the same values)."""
    y0, x0, y1, x1 = (int(v) for v in box)
    return x[..., y0:y1, x0:x1]


def groups(boxes: np.ndarray) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Targets sharing a box, for one patch column ``boxes`` (targets, 4): [(box, positions)]."""
    unique, inverse = np.unique(boxes, axis=0, return_inverse=True)
    return [
        (tuple(int(v) for v in b), np.flatnonzero(inverse.ravel() == k))
        for k, b in enumerate(unique)
    ]
