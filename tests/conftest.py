"""Shared fixtures: tiny diffusers UNets and schedulers built in-process (no downloads)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from diffattr.models import build_scheduler, build_unet
from diffattr.outputs import row_outputs

REPO = Path(__file__).resolve().parents[1]

TINY_UNET = {
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "norm_num_groups": 4,
}


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture
def scheduler():
    return build_scheduler({})


def make_unet(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return build_unet(TINY_UNET, (1, 8, 8)).to(dtype).eval()


@pytest.fixture
def unet64():
    return make_unet(torch.float64)


def loss_rows(scheduler, output="loss"):
    """A RowFn computing the per-row output on a model callable."""
    fn = partial(row_outputs, alphas_cumprod=scheduler.alphas_cumprod, output=output)
    return lambda model, batch: fn(model, batch=batch)


def random_rows(n_owners, draws, dtype=torch.float64, seed=0, shape=(1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    rows = n_owners * draws
    return {
        "x0": torch.randn(rows, *shape, generator=g, dtype=dtype),
        "t": torch.randint(1000, (rows,), generator=g),
        "eps": torch.randn(rows, *shape, generator=g, dtype=dtype),
    }
