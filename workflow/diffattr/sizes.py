"""The sizes a run's cost scales with, from its config alone (no data read, no weights made).

- ``n``, image shape (C, H, W): the dataset registry's known sizes after ``classes``,
  ``per_class`` and ``limit`` (digits: scikit-learn's bundled label counts; CIFAR-10: 5000 per
  class; COCO 2017: 118 287 images, latents (4, s/8, s/8); folder: its image files).
- The UNet's forward FLOPs per example (one image, one timestep), counted by torch's
  ``FlopCounterMode`` on a model built on the meta device; its parameters p; the feature
  dimension k of the projection (factored: Σ_layers min(k_in, fan_in + 1)·min(k_out, out)).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from .config import RunConfig

CIFAR_PER_CLASS, CIFAR_CLASSES = 5000, 10
COCO_IMAGES, VAE_FACTOR, LATENT_CHANNELS = 118_287, 8, 4
TEXT_TOKENS = 77


@dataclass(frozen=True)
class Sizes:
    n: int  # training examples
    shape: tuple[int, int, int]  # one example (C, H, W): pixels, or latents
    flops: float  # UNet forward FLOPs per example
    params: int  # UNet parameters p
    k: int  # feature dimension per member and kind

    @property
    def d(self) -> int:
        """Values per example (C·H·W)."""
        return int(np.prod(self.shape))


def _per_class(labels: np.ndarray, classes, per_class) -> int:
    kept = np.unique(labels) if classes is None else np.asarray(classes)
    counts = [int((labels == c).sum()) for c in kept]
    return sum(counts if per_class is None else [min(c, per_class) for c in counts])


def dataset_size(cfg: RunConfig) -> tuple[int, tuple[int, int, int]]:
    """(n, example shape) of the config's dataset."""
    ds, side = cfg.dataset, cfg.dataset.image_size
    if ds.name == "digits":
        from sklearn.datasets import load_digits

        n, shape = _per_class(load_digits().target, ds.classes, ds.per_class), (1, 8, 8)
    elif ds.name == "fontdigits":
        n = (ds.per_class or 180) * len(ds.classes or range(10))
        shape = (1, side, side)
    elif ds.name == "photopatches":
        n, shape = ds.limit or 2000, (1, side, side)
    elif ds.name == "cifar10":
        per = min(ds.per_class or CIFAR_PER_CLASS, CIFAR_PER_CLASS)
        n, shape = per * len(ds.classes or range(CIFAR_CLASSES)), (3, 32, 32)
    elif ds.name == "mscoco":
        n = COCO_IMAGES
        shape = (LATENT_CHANNELS, side // VAE_FACTOR, side // VAE_FACTOR)
    else:  # folder: count the images
        root = Path(ds.root or ".")
        n = sum(1 for p in root.glob("*/*") if p.is_file()) if root.is_dir() else 0
        shape = (3, side, side)
    return (min(n, ds.limit) if ds.limit and ds.name != "photopatches" else n), shape


@cache
def _unet_cost(model_key: str, shape: tuple[int, int, int], k_in: int, k_out: int, kind: str):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .config import ModelConfig
    from .models import build_unet
    from .projection import _factorable, _fan_in

    model_cfg = ModelConfig.from_dict(__import__("json").loads(model_key))
    with torch.device("meta"):
        unet = build_unet(model_cfg, shape)
        x, t = torch.zeros(1, *shape), torch.zeros(1, dtype=torch.long)
        extra = {}
        if model_cfg.conditional:
            extra = {
                "encoder_hidden_states": torch.zeros(1, TEXT_TOKENS, model_cfg.cross_attention_dim)
            }
        with FlopCounterMode(display=False) as counter:
            unet(x, t, **extra)
    params = sum(p.numel() for p in unet.parameters())
    k = sum(
        min(k_in, _fan_in(m) + int(m.bias is not None)) * min(k_out, m.weight.shape[0])
        for m in unet.modules()
        if _factorable(m)
    )
    return float(counter.get_total_flops()), params, k


def sizes(cfg: RunConfig) -> Sizes:
    """The run's :class:`Sizes`."""
    import json

    n, shape = dataset_size(cfg)
    proj = cfg.attribution.projection
    key = json.dumps(cfg.model.to_dict(), sort_keys=True, default=list)
    flops, params, k = _unet_cost(key, shape, proj.k_in, proj.k_out, proj.kind)
    k = {"factored": k, "dense": proj.dim, "identity": params}[proj.kind]
    return Sizes(n=n, shape=shape, flops=flops, params=params, k=k)
