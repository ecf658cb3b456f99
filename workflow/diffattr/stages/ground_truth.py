"""Stages that measure the LDS ground truth: f_t on every subset model, and on every subset's
empirical optimal denoiser (the memorization reference)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import layout
from ..artifacts import (
    GroundTruth,
    Memorization,
    PatchGroundTruth,
    read_data,
    read_patches,
    read_subsets,
    read_targets,
    write_ground_truth,
    write_memorization,
    write_patch_ground_truth,
)
from ..config import RunConfig
from ..features import uniform_timesteps
from ..lds.ground_truth import ground_truth as measure_ground_truth
from ..lds.ground_truth import ground_truth_draws, patch_ground_truth
from ..lds.memorization import memorization_loss
from ..models import build_scheduler, load_model, resolve_device

log = logging.getLogger("diffattr")


def ground_truth(cfg: RunConfig, *, models: list[Path], targets: Path, out: Path) -> None:
    """Measure f_t (and the final image's loss) on one subset's models, common random numbers."""
    device = resolve_device(cfg.device)
    lds = cfg.lds
    stored = read_targets(targets)
    f_t, final_loss = [], []
    for folder in models:
        model, scheduler = load_model(layout.checkpoint(folder), device, cfg.model)
        timesteps = uniform_timesteps(lds.final_timesteps, len(scheduler.alphas_cumprod))
        per_step, final = measure_ground_truth(
            model,
            scheduler.alphas_cumprod,
            stored.x0_hat,
            stored.final,
            stored.steps,
            stored.target_ids.tolist(),
            lds.draws,
            timesteps,
            lds.final_noise,
            cfg.seed,
            cond=stored.cond,
        )
        f_t.append(per_step)
        final_loss.append(final)
    attrs = {
        "models": [str(m) for m in models],
        "draws": lds.draws,
        "common_random_numbers": True,
        "output": "loss",
    }
    value = GroundTruth(np.stack(f_t), np.stack(final_loss), stored.steps, stored.target_ids, attrs)
    write_ground_truth(out, value)


def ground_truth_patches(
    cfg: RunConfig, *, models: list[Path], targets: Path, patches: Path, out: Path
) -> None:
    """Measure every patch's f_t on one subset's models, with the whole image's noise draws."""
    device = resolve_device(cfg.device)
    stored, boxes = read_targets(targets), read_patches(patches)
    f_t = []
    for folder in models:
        model, scheduler = load_model(layout.checkpoint(folder), device, cfg.model)
        f_t.append(
            patch_ground_truth(
                model,
                scheduler.alphas_cumprod,
                stored.x0_hat,
                stored.steps,
                stored.target_ids.tolist(),
                cfg.lds.draws,
                boxes.grid_boxes,
                cfg.seed,
                cond=stored.cond,
            )
        )
    attrs = {
        "models": [str(m) for m in models],
        "draws": cfg.lds.draws,
        "common_random_numbers": True,
        "output": "loss restricted to the patch (mean over its pixels and channels)",
    }
    value = PatchGroundTruth(np.stack(f_t), stored.steps, stored.target_ids, boxes.boxes, attrs)
    write_patch_ground_truth(out, value)


def memorization_reference(
    cfg: RunConfig, *, data: Path, subsets: Path, targets: Path, out: Path, progress: bool = True
) -> None:
    """Measure f_t on every subset's empirical optimal denoiser (the ground truth's draws)."""
    draws = cfg.lds.draws
    images = read_data(data).images
    alphas_cumprod = build_scheduler(cfg.diffusion).alphas_cumprod.double().numpy()
    masks = read_subsets(subsets).masks
    stored = read_targets(targets)
    target_ids = stored.target_ids.tolist()
    shape = tuple(stored.x0_hat.shape[2:])
    start = time.time()
    loss = np.empty((len(stored.steps), len(target_ids), len(masks)))
    steps = tqdm(stored.steps, desc="memorization reference", disable=not progress)
    for s, t in enumerate(steps):
        eps = ground_truth_draws(target_ids, t, draws, shape, cfg.seed)
        loss[s] = memorization_loss(images, masks, stored.x0_hat[s], alphas_cumprod[t], eps.numpy())
    attrs = {
        "draws": draws,
        "common_random_numbers": True,
        "output": "loss of the subset's empirical optimal denoiser",
        "seconds": time.time() - start,
    }
    write_memorization(out, Memorization(loss, stored.steps, stored.target_ids, attrs))
    log.info(
        "memorization reference: %d steps × %d targets × %d subsets in %.1f s",
        len(stored.steps),
        len(target_ids),
        len(masks),
        time.time() - start,
    )
