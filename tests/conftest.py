"""Shared fixtures: tiny diffusers UNets and schedulers built in-process (no downloads)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from diffattr.config import DiffusionConfig, ModelConfig
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


COND_UNET = {  # a tiny text-conditioned UNet (cross-attention on 16-dim caption embeddings)
    "conditional": True,
    "cross_attention_dim": 16,
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "attention_head_dim": 2,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture
def scheduler():
    return build_scheduler(DiffusionConfig())


def make_unet(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return build_unet(ModelConfig.from_dict(TINY_UNET), (1, 8, 8)).to(dtype).eval()


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


# ---------------------------------------------------------------------------------------------
# End-to-end runs of config/test.yaml through Snakemake's CLI

RUN = "results/test"


def workdir(tmp: Path) -> Path:
    """A copy of the workflow (not the package, which is installed) in ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    for item in ["Snakefile", "config", "profiles", "envs"]:
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / item)
    shutil.copytree(
        REPO / "workflow",
        tmp / "workflow",
        ignore=shutil.ignore_patterns("diffattr", "*.egg-info", "__pycache__"),
    )
    return tmp


NO_SLURM = REPO / "tests" / "no-slurm.conf"  # why: the file's comment (≈ 9 s per Snakemake start)


def workflow_env(**extra: str) -> dict[str, str]:
    """The environment of a test's Snakemake run: this venv first on PATH; no Slurm controller
    unless ``extra`` names one (SLURM_CONF)."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "SLURM_CONF": str(NO_SLURM), **extra}


def snakemake(
    cwd: Path,
    *args: str,
    timeout: int | None = None,
    check: bool = True,
    env=None,
    cores: bool = True,
    configfile: str = "config/test.yaml",
):
    """Run Snakemake in ``cwd``; no wall-clock limit by default (Snakemake ends by itself, and a
    fixed limit fails correct runs on a slower or busier machine); failures carry its output."""
    cmd = [sys.executable, "-m", "snakemake", f"--configfile={configfile}", *args]
    if cores:
        cmd[4:4] = ["--cores", "2"]
    proc = subprocess.run(
        cmd, cwd=cwd, env=env or workflow_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def scores(cwd: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted((cwd / RUN / "scores").glob("*.h5")):
        with h5py.File(path) as f:
            out[path.stem] = f["scores"][()]
    return out


@pytest.fixture(scope="session")
def local_run(tmp_path_factory) -> Path:
    """The whole test config run once locally with --cores 2 (shared by several test modules),
    with patch attribution on (a 2 × 2 grid; off in config/test.yaml itself) and each member's
    training features in one job (the reruns below shard them: their scores equal these bit for
    bit, so shards equal one job end to end)."""
    cwd = workdir(tmp_path_factory.mktemp("run"))
    edit_test_config(cwd, {"attribution": {"patches": PATCHES, "shards": 1}})
    snakemake(cwd)
    return cwd


PATCHES = {"grid": [2, 2]}  # the shared run's patches: 4 patches of 4×4 pixels

# Runs that re-make the shared run's scores another way (killed and resumed; Slurm, with the
# first of them) score these methods only, one per kind of job (a gradient method on random and
# on uniform timesteps, a model-free one), without the LDS (which the figures would otherwise
# wait for); their scores must equal the shared run's bit for bit (no score job reads the LDS or
# the method list).
RERUN_METHODS = ["journey_trak", "trak", "pixel_similarity"]


def rerun_workdir(tmp: Path, methods: list[str] = RERUN_METHODS) -> Path:
    """A workflow copy whose config/test.yaml scores ``methods`` without the LDS and the
    counterfactual (which ranks by methods the copy may not score), with the training features
    in 2 shards per member (the shared run has 1)."""
    cwd = workdir(tmp)
    edit_test_config(
        cwd,
        {
            "attribution": {"methods": methods, "shards": 2},
            "lds": {"enabled": False},
            "counterfactual": {"enabled": False},
        },
    )
    return cwd


def reuse_trained(source: Path, cwd: Path) -> None:
    """Copy the data, models and targets of the run in ``source`` into ``cwd`` with their
    timestamps, so a rerun there starts at featurization (the training stages' own
    reproducibility is checked by the killed-run test, which starts from scratch)."""
    for name in ["data.h5", "targets.h5", "models"]:
        src, dst = source / RUN / name, cwd / RUN / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


def edit_test_config(cwd: Path, changes: dict) -> None:
    """Merge ``changes`` (section → keys) into the copy's config/test.yaml."""
    path = cwd / "config" / "test.yaml"
    cfg = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        cfg.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
