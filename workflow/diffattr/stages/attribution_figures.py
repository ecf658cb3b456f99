"""Stages that draw what the scores say: the attribution grids and the patch overview (and the
patch boxes they use); no model, stored scores only."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..artifacts import (
    TopKFile,
    is_top_k,
    read_data,
    read_scores,
    read_targets,
    ridge_caption,
    write_patches,
)
from ..config import RunConfig
from ..data import decode_latents
from ..figures import attribution_grid, patches_overview, save
from ..patches import resolve
from ..storage import atomic_path
from ..topk import Ranked, rank_dense

log = logging.getLogger("diffattr")


def decoded_for_figures(
    prepared, x0_hat: np.ndarray, scores: np.ndarray | Ranked, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Latent data: x̂_0 decoded, and the training images decoded where some score row ranks
    them in its top or bottom ``top_k`` (zeros elsewhere: never shown); ``scores`` dense or
    their top-k."""
    ranked = scores if isinstance(scores, Ranked) else rank_dense(scores, top_k)
    shown = np.unique(ranked.index[..., :top_k])
    decoded = decode_latents(prepared.config, prepared.images[shown])
    train_images = np.zeros((prepared.n, *decoded.shape[1:]), np.float32)
    train_images[shown] = decoded
    flat = decode_latents(prepared.config, x0_hat.reshape(-1, *x0_hat.shape[2:]))
    return flat.reshape(*x0_hat.shape[:2], *flat.shape[1:]), train_images


def figure_attributions(
    cfg: RunConfig, *, scores: Path, targets: Path, data: Path, out: Path
) -> None:
    """Draw, per target, x̂_0^t along the trajectory with its top positive/negative influencers
    (a trajectory-free method's scores are the same at every step: one column, the final image)."""
    prepared = read_data(data)
    stored = read_targets(targets)
    top_k = cfg.figures.top_k
    n = min(cfg.figures.n_targets, stored.n)
    if is_top_k(scores):  # attribution.top_k: the K strongest of each sign per (step, target)
        with TopKFile(scores) as f:
            result_steps, target_ids, attrs = f.steps, f.target_ids, f.attrs
            kept = f.rows(slice(0, n))
        tau: np.ndarray | Ranked = kept
        train_ids = prepared.ids
    else:
        result = read_scores(scores)
        result_steps, target_ids, attrs = result.steps, result.target_ids, result.attrs
        tau, train_ids = result.scores[:, :n], result.train_ids
        tau = rank_dense(tau, top_k)  # the figure's picks, in the top-k file's order
    shown, steps = stored.x0_hat, list(result_steps)
    if attrs.get("target_image") == "final":
        shown, steps = stored.final[None], ["final image"]
        tau = Ranked(tau.index[:, :1], tau.score[:, :1])
    train_images = prepared.images
    if prepared.conditional:  # latents: decode what is shown with the dataset's VAE
        shown, train_images = decoded_for_figures(prepared, shown, tau, top_k)
    ridge = ridge_caption(attrs)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for j in range(n):
            fig = attribution_grid(
                shown[:, j],
                steps,
                Ranked(tau.index[:, :, j], tau.score[:, :, j]),
                train_images,
                prepared.labels,
                top_k,
                f"{attrs['method']}: target {target_ids[j]}{ridge}",
                train_ids=train_ids,
            )
            save(fig, tmp / f"target-{j}.png")


def make_patches(cfg: RunConfig, *, data: Path, targets: Path, out: Path) -> None:
    """Resolve ``attribution.patches`` into every target's boxes (image pixels and the model's
    sample grid: latent models cover the latent positions under the box)."""
    prepared, stored = read_data(data), read_targets(targets)
    grid = tuple(stored.x0_hat.shape[-2:])
    image = (prepared.config["image_size"],) * 2 if prepared.conditional else grid
    value = resolve(cfg.attribution.patches, stored.n, image, grid)
    write_patches(out, value, {"config": cfg.attribution.patches.to_dict()})
    log.info("%d patches per target (image %s, sample grid %s)", value.n, image, grid)


def figure_patches(cfg: RunConfig, *, scores: Path, targets: Path, data: Path, out: Path) -> None:
    """Per target and patch: the trajectory with the patch outlined and each step's top
    influencers for that patch (outlined on them too); per target: its patches side by side."""
    prepared, result = read_data(data), read_scores(scores)
    x0_hat, boxes, top_k = read_targets(targets).x0_hat, result.boxes, cfg.figures.top_k
    n = min(cfg.figures.n_targets, len(result.target_ids))
    train_images = prepared.images
    if prepared.conditional:  # latents: decode what is shown (boxes are in image pixels)
        x0_hat, train_images = decoded_for_figures(prepared, x0_hat, result.scores[:, :n], top_k)
    ridge = ridge_caption(result.attrs)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for j in range(n):
            for p in range(boxes.shape[1]):
                fig = attribution_grid(
                    x0_hat[:, j],
                    result.steps,
                    result.scores[:, j, p],
                    train_images,
                    prepared.labels,
                    top_k,
                    f"{result.method}: target {result.target_ids[j]}, patch {p}{ridge}",
                    box=boxes[j, p],
                    train_ids=result.train_ids,
                )
                save(fig, tmp / f"target-{j}-patch-{p}.png")
            fig = patches_overview(
                x0_hat[:, j],
                result.steps,
                result.scores[:, j],
                boxes[j],
                train_images,
                prepared.labels,
                top_k,
                f"{result.method}: target {result.target_ids[j]}, what each patch draws on",
            )
            save(fig, tmp / f"target-{j}-patches.png")
