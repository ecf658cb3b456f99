"""Stages: prepare the data, train models (full, LDS subset, counterfactual, seed floor), sample
targets with their trajectories."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from .. import layout
from ..artifacts import (
    Targets,
    read_data,
    read_group_plan,
    read_plan,
    read_subsets,
    write_data,
    write_targets,
)
from ..config import RunConfig
from ..data import load_target_images, prepare
from ..diffusion import (
    denoise,
    forward_trajectory,
    guided_predictor,
    inference_timesteps,
    init_seeded,
    initial_noise,
    model_predictor,
    target_generators,
    train,
)
from ..errors import ConfigError
from ..models import (
    build_scheduler,
    build_unet,
    load_model,
    n_parameters,
    resolve_device,
    save_model,
)
from ..schedule import attribution_steps
from ..seeding import derive_seed, generator
from ..storage import atomic_path, write_json

log = logging.getLogger("diffattr")


def prepare_data(cfg: RunConfig, *, out: Path) -> None:
    """Load the configured dataset (encoding mscoco once) into data.h5."""
    device = str(resolve_device(cfg.device))
    seed = {"seed": cfg.seed} if cfg.dataset.reads_seed else {}  # procedural data only
    data = prepare({**cfg.dataset.to_dict(), "device": device, **seed})
    write_data(out, data, {**cfg.dataset.to_dict(), **seed})
    log.info("prepared %s: %d images of shape %s", data.name, data.n, data.shape)


def train_model(
    cfg: RunConfig, *, data: Path, out: Path, model_index: int, progress: bool = True
) -> None:
    """Train full ensemble model i on all examples."""
    seed_tag = layout.full_model_seed(model_index)
    _train(cfg, resolve_device(cfg.device), data, out, seed_tag, None, progress)


def import_model(cfg: RunConfig, *, source: Path, out: Path) -> None:
    """Bring a pretrained diffusers model in as a full ensemble member (``train.pretrained``):
    its UNet (architecture checked against ``model:`` before the weights are read) with the
    configured noise schedule, saved as the member's ``final`` checkpoint."""
    unet, _ = load_model(source, "cpu", cfg.model)
    n_params = n_parameters(unet)
    with atomic_path(out) as tmp:
        save_model(
            unet,
            build_scheduler(cfg.diffusion),
            layout.checkpoint(tmp),
            made_from={"pretrained": str(source)},
        )
    log.info("imported %s (%d parameters) as %s", source, n_params, out)


def train_subset_model(
    cfg: RunConfig,
    *,
    data: Path,
    subsets: Path,
    subset: int,
    seed_index: int,
    out: Path,
    progress: bool = True,
) -> None:
    """Train an LDS subset model: subset j's examples with training seed r (shared by subsets)."""
    device = resolve_device(cfg.device)
    keep = read_subsets(subsets).masks[subset]
    _train(cfg, device, data, out, layout.subset_model_seed(seed_index), keep, progress)


def train_regime_model(
    cfg: RunConfig, *, data: Path, subsets: Path, out: Path, progress: bool = True
) -> None:
    """Train the regime diagnostics' complement model: the examples LDS subset 0 leaves out,
    with the subset models' recipe and a seed of its own (``lds.regime``)."""
    device = resolve_device(cfg.device)
    keep = ~read_subsets(subsets).masks[layout.REGIME_SUBSET]
    _train(cfg, device, data, out, layout.regime_model_seed(), keep, progress)


def train_cf_model(
    cfg: RunConfig, *, data: Path, plan: Path, case: int, out: Path, progress: bool = True
) -> None:
    """Train a counterfactual model: model 0's seed without the case's removed examples."""
    device = resolve_device(cfg.device)
    keep = read_plan(plan).keep[case]
    _train(cfg, device, data, out, layout.counterfactual_seed(), keep, progress)


def train_group_model(
    cfg: RunConfig, *, data: Path, plan: Path, name: str, out: Path, progress: bool = True
) -> None:
    """Train a group-removal model: model 0's seed without a method's union of the group's
    top-k (``<method>``) or a random removal of its size (``random<r>-<method>``)."""
    device = resolve_device(cfg.device)
    planned = read_group_plan(plan)
    layout.parse_group_model(name)
    if name not in planned.names:
        raise ConfigError(f"{plan} plans no group model {name!r}; it has {planned.names}")
    keep = planned.keep[planned.names.index(name)]
    _train(cfg, device, data, out, layout.counterfactual_seed(), keep, progress)


def train_cf_floor(cfg: RunConfig, *, data: Path, out: Path, progress: bool = True) -> None:
    """Train the seed floor: all examples with another seed than model 0."""
    _train(cfg, resolve_device(cfg.device), data, out, layout.floor_seed(), None, progress)


def _train(
    cfg: RunConfig,
    device: torch.device,
    data_path: Path,
    out: Path,
    seed_tag: str,
    keep: np.ndarray | None,
    progress: bool,
) -> None:
    """Train on the examples where ``keep`` (n,) is True (all when None)."""
    data = read_data(data_path)
    if keep is not None and keep.shape != (data.n,):
        raise ConfigError(f"a keep mask of shape {keep.shape} for the {data.n} rows of {data_path}")
    seed = derive_seed(cfg.seed, seed_tag)
    recipe = cfg.train
    model = init_seeded(lambda: build_unet(cfg.model, data.shape), seed, "init").to(device)
    scheduler = build_scheduler(cfg.diffusion)
    positions = None if keep is None else torch.from_numpy(np.flatnonzero(keep))
    n_train = data.n if positions is None else len(positions)
    log.info(
        "training %s: %d parameters on %d examples, seed tag %s",
        out,
        n_parameters(model),
        n_train,
        seed_tag,
    )
    start = time.time()
    with atomic_path(out) as tmp:

        def on_checkpoint(step: int, weights: torch.nn.Module) -> None:
            save_model(
                weights,
                scheduler,
                layout.checkpoint(tmp, layout.checkpoint_name(step, recipe.steps)),
                made_from={"data_digest": data.digest},
            )

        conditions = null = None
        if data.conditional:
            conditions = data.extra["caption_embeddings"]  # read per batch from data.h5
            null = torch.from_numpy(data.extra["null_embedding"])
        losses = train(
            model,
            scheduler,
            torch.from_numpy(data.images),
            recipe,
            seed,
            positions=positions,
            on_checkpoint=on_checkpoint,
            progress=progress,
            conditions=conditions,
            null_condition=null,
            flip=cfg.dataset.flip,
        )
        write_json(
            tmp / "train_log.json",
            {
                "seed_tag": seed_tag,
                "seed": seed,
                "losses": losses,
                "log_every": recipe.log_every,
                "n_train": n_train,
                "n_parameters": n_parameters(model),
                "seconds": time.time() - start,
            },
        )
    log.info("trained in %.1f s, final loss %.5f", time.time() - start, losses[-1])


def sample(cfg: RunConfig, *, model: Path, data: Path, out: Path, progress: bool = True) -> None:
    """Sample the targets from model 0, recording x_t and x̂_0^t at the attribution steps."""
    device = resolve_device(cfg.device)
    unet, scheduler = load_model(layout.checkpoint(model), device, cfg.model)
    n, sampling_steps = cfg.targets.n, cfg.targets.sampling_steps
    steps = attribution_steps(cfg.attribution.steps, inference_timesteps(scheduler, sampling_steps))
    gens = target_generators(cfg.seed, range(n))
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x = initial_noise(shape, gens).to(device)
    prepared = read_data(data)
    cond, prompts = None, None
    predictor = model_predictor(unet)
    if prepared.conditional:  # target j is generated from prompt j mod P, with guidance
        pool = prepared.extra["prompt_embeddings"]
        cond = torch.from_numpy(pool[np.arange(n) % len(pool)]).float().to(device)
        prompts = [prepared.extra["prompts"][j % len(pool)] for j in range(n)]
        null = torch.from_numpy(prepared.extra["null_embedding"]).float().to(device)[None]
        predictor = guided_predictor(unet, cond, null, cfg.targets.guidance_scale)
    traj = denoise(x, scheduler, sampling_steps, predictor, gens, record=steps, progress=progress)
    targets = Targets(
        final=traj.final.cpu().numpy(),
        x_t=traj.x_t.cpu().numpy(),
        x0_hat=traj.x0_hat.cpu().numpy(),
        steps=traj.steps,
        target_ids=np.arange(n),
        cond=None if cond is None else cond.cpu().numpy(),
        prompts=None if prompts is None else [p.decode() for p in prompts],
        attrs={
            "seed": cfg.seed,
            "sampling_steps": sampling_steps,
            "model": str(layout.checkpoint(model)),
            "config": cfg.targets.to_dict(),
            "x0_hat": "pred_original_sample of DDPMScheduler.step",
        },
    )
    write_targets(out, targets)
    log.info("sampled %d targets, recorded steps %s", n, traj.steps)


def sample_extra_targets(
    cfg: RunConfig,
    *,
    model: Path,
    data: Path,
    target_set: str,
    out: Path,
    image_folder: Path | None = None,
    new_samples: int = 0,
    progress: bool = True,
) -> None:
    """An extra target set (``extra_targets``) with trajectories at the attribution steps:
    the images of ``image_folder`` forward-diffused at each step with keyed noise
    (``forward_trajectory``), or ``new_samples`` new samples of model 0 (noise keyed by the
    set's name). Scored later against the run's stored training side."""
    device = resolve_device(cfg.device)
    if (image_folder is None) == (new_samples == 0):
        raise ConfigError("give an extra target set either --image-folder or --new-samples")
    unet, scheduler = load_model(layout.checkpoint(model), device, cfg.model)
    prepared = read_data(data)
    if prepared.conditional:
        raise ConfigError("extra_targets are not supported for text-conditioned latent models")
    sampling_steps = cfg.targets.sampling_steps
    steps = attribution_steps(cfg.attribution.steps, inference_timesteps(scheduler, sampling_steps))
    predictor = model_predictor(unet)
    if image_folder is not None:
        images, files = load_target_images(image_folder, prepared.shape)
        gens = [generator(cfg.seed, "extra-target", target_set, j) for j in range(len(images))]
        x0 = torch.from_numpy(images).to(device)
        traj = forward_trajectory(x0, scheduler, sampling_steps, steps, predictor, gens)
        source = {
            "images": str(image_folder),
            "files": files,
            "x_t": "forward-diffused from the image with keyed noise at each step",
        }
    else:
        gens = [generator(cfg.seed, "extra-sample", target_set, j) for j in range(new_samples)]
        x = initial_noise(prepared.shape, gens).to(device)
        traj = denoise(
            x, scheduler, sampling_steps, predictor, gens, record=steps, progress=progress
        )
        source = {"samples": new_samples}
    targets = Targets(
        final=traj.final.cpu().numpy(),
        x_t=traj.x_t.cpu().numpy(),
        x0_hat=traj.x0_hat.cpu().numpy(),
        steps=traj.steps,
        target_ids=np.arange(len(traj.final)),
        attrs={
            "seed": cfg.seed,
            "sampling_steps": sampling_steps,
            "model": str(layout.checkpoint(model)),
            "target_set": target_set,
            "source": source,
            "x0_hat": "pred_original_sample of DDPMScheduler (model 0)",
        },
    )
    write_targets(out, targets)
    log.info("extra target set %s: %d targets, steps %s", target_set, len(traj.final), traj.steps)
