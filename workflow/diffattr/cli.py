"""The ``diffattr`` command line: one subcommand per workflow step (what the Snakemake rules call).

Every subcommand takes ``--cfg`` (a JSON object holding the config sections it needs, as validated
by the workflow's schema) and writes its outputs atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DiffattrError

log = logging.getLogger("diffattr")


def _cfg(args: argparse.Namespace) -> dict[str, Any]:
    return json.loads(args.cfg) if args.cfg else {}


def _setup(args: argparse.Namespace) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    # The job's thread budget for torch and for numpy's BLAS (an unlimited BLAS spins on the
    # cores of the other jobs Snakemake runs beside this one).
    threadpool_limits(max(1, args.threads))
    torch.set_num_threads(max(1, args.threads))
    torch.use_deterministic_algorithms(True, warn_only=True)


def parse_member(name: str) -> tuple[int, str]:
    """``m<index>_<checkpoint>`` (e.g. ``m0_final``, ``m1_step-500``) → (index, checkpoint)."""
    head, _, checkpoint = name.partition("_")
    if not head.startswith("m") or not head[1:].isdigit() or not checkpoint:
        raise ConfigError(f"bad ensemble member name {name!r}; expected m<index>_<checkpoint>")
    return int(head[1:]), checkpoint


def attribution_steps(spec: int | Sequence[int], timesteps: Sequence[int]) -> list[int]:
    """Attribution timesteps (noisy → clean). An int n picks n evenly spaced sampler timesteps
    ending with the last one; a list is checked against the sampler's timesteps."""
    timesteps = list(timesteps)
    if isinstance(spec, int):
        if not 1 <= spec <= len(timesteps):
            raise ConfigError(f"attribution.steps must be between 1 and {len(timesteps)}")
        idx = sorted({len(timesteps) - 1 - round(i * len(timesteps) / spec) for i in range(spec)})
        return [timesteps[i] for i in idx]
    missing = [t for t in spec if t not in timesteps]
    if missing:
        raise ConfigError(
            f"attribution.steps {missing} are not visited by a {len(timesteps)}-step sampler; "
            f"choose from its timesteps (e.g. {timesteps[:3]} … {timesteps[-3:]})"
        )
    return sorted(set(spec), reverse=True)


# ---------------------------------------------------------------------------------------------


def cmd_prepare_data(args: argparse.Namespace) -> None:
    from .data import prepare, write_prepared
    from .models import resolve_device

    cfg = _cfg(args)
    device = str(resolve_device(cfg.get("device", "auto")))
    data = prepare({**cfg["dataset"], "device": device})
    write_prepared(data, args.out, cfg["dataset"])
    log.info("prepared %s: %d images of shape %s", data.name, data.n, data.shape)


def _load_mask(spec: str | None, n: int):
    """``FILE.h5:DATASET:ROW`` → positions kept (a boolean mask row of length n)."""
    import h5py
    import torch

    if spec is None:
        return None
    path, dataset, row = spec.rsplit(":", 2)
    with h5py.File(path, "r") as f:
        mask = f[dataset][int(row)]
    if mask.shape != (n,):
        raise ConfigError(f"mask {spec} has shape {mask.shape}, expected ({n},)")
    return torch.from_numpy(np.flatnonzero(mask))


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    from .data import load_prepared
    from .diffusion import TrainConfig, init_seeded, train
    from .models import build_scheduler, build_unet, n_parameters, resolve_device, save_model
    from .seeding import derive_seed
    from .storage import atomic_path, write_json

    cfg = _cfg(args)
    data = load_prepared(args.data)
    device = resolve_device(cfg.get("device", "auto"))
    seed = derive_seed(int(cfg["seed"]), args.seed_tag)
    recipe = TrainConfig.from_config(cfg["train"])
    model = init_seeded(lambda: build_unet(cfg["model"], data.shape), seed, "init").to(device)
    scheduler = build_scheduler(cfg["diffusion"])
    positions = _load_mask(args.keep, data.n)
    log.info(
        "training %s: %d parameters on %d examples, seed tag %s",
        args.out,
        n_parameters(model),
        data.n if positions is None else len(positions),
        args.seed_tag,
    )
    start = time.time()
    with atomic_path(args.out) as tmp:

        def on_checkpoint(step: int, weights: torch.nn.Module) -> None:
            name = "final" if step == recipe.steps else f"step-{step}"
            save_model(weights, scheduler, tmp / name)

        conditions = null = None
        if data.conditional:
            conditions = torch.from_numpy(data.extra["caption_embeddings"])
            null = torch.from_numpy(data.extra["null_embedding"])
        losses = train(
            model,
            scheduler,
            torch.from_numpy(data.images),
            recipe,
            seed,
            positions=positions,
            on_checkpoint=on_checkpoint,
            progress=not args.no_progress,
            conditions=conditions,
            null_condition=null,
            p_uncond=float(cfg["train"].get("p_uncond", 0.1)),
            flip=bool(cfg.get("dataset", {}).get("flip", False)),
        )
        write_json(
            tmp / "train_log.json",
            {
                "seed_tag": args.seed_tag,
                "seed": seed,
                "losses": losses,
                "log_every": recipe.log_every,
                "n_train": data.n if positions is None else len(positions),
                "n_parameters": n_parameters(model),
                "seconds": time.time() - start,
            },
        )
    log.info("trained in %.1f s, final loss %.5f", time.time() - start, losses[-1])


def cmd_sample(args: argparse.Namespace) -> None:
    import torch

    from .data import load_prepared
    from .diffusion import (
        denoise,
        guided_predictor,
        inference_timesteps,
        initial_noise,
        model_predictor,
    )
    from .models import load_model, resolve_device
    from .seeding import generator
    from .storage import create_h5

    cfg = _cfg(args)
    device = resolve_device(cfg.get("device", "auto"))
    model, scheduler = load_model(args.model, device)
    n = int(cfg["targets"]["n"])
    sampling_steps = int(cfg["targets"]["sampling_steps"])
    steps = attribution_steps(
        cfg["attribution"]["steps"], inference_timesteps(scheduler, sampling_steps)
    )
    seed = int(cfg["seed"])
    gens = [generator(seed, "sample", j) for j in range(n)]
    shape = (model.config.in_channels, model.config.sample_size, model.config.sample_size)
    x = initial_noise(shape, gens).to(device)
    data = load_prepared(args.data)
    cond, prompts = None, []
    predictor = model_predictor(model)
    if data.conditional:  # target j is generated from prompt j mod P, with guidance
        pool = data.extra["prompt_embeddings"]
        cond = torch.from_numpy(pool[np.arange(n) % len(pool)]).float().to(device)
        prompts = [data.extra["prompts"][j % len(pool)] for j in range(n)]
        null = torch.from_numpy(data.extra["null_embedding"]).float().to(device)[None]
        scale = float(cfg["targets"].get("guidance_scale", 1.0))
        predictor = guided_predictor(model, cond, null, scale)
    traj = denoise(
        x,
        scheduler,
        sampling_steps,
        predictor,
        gens,
        record=steps,
        progress=not args.no_progress,
    )
    attrs = {
        "seed": seed,
        "sampling_steps": sampling_steps,
        "model": str(args.model),
        "config": cfg["targets"],
        "x0_hat": "pred_original_sample of DDPMScheduler.step",
    }
    with create_h5(args.out, attrs) as f:
        f.create_dataset("target_ids", data=np.arange(n))
        f.create_dataset("steps", data=np.asarray(traj.steps))
        f.create_dataset("final", data=traj.final.cpu().numpy())
        f.create_dataset("x_t", data=traj.x_t.cpu().numpy())
        f.create_dataset("x0_hat", data=traj.x0_hat.cpu().numpy())
        if cond is not None:
            f.create_dataset("cond", data=cond.cpu().numpy().astype(np.float16))
            f.create_dataset("prompts", data=np.array(prompts, dtype="S"))
    log.info("sampled %d targets, recorded steps %s", n, traj.steps)


def _load_member(args: argparse.Namespace, cfg: dict[str, Any]):
    from .models import checkpoint_folder, load_model, resolve_device
    from .projection import make_projector

    model_index, checkpoint = parse_member(args.member)
    device = resolve_device(cfg.get("device", "auto"))
    model, scheduler = load_model(checkpoint_folder(args.model, checkpoint), device)
    projector = make_projector(
        cfg["attribution"]["projection"],
        model,
        int(cfg["seed"]),
        "projector",
        model_index,
        checkpoint,
    )
    return model, scheduler, projector, model_index


def cmd_featurize_train(args: argparse.Namespace) -> None:
    from .data import load_prepared
    from .features import featurize_training, shard_positions
    from .storage import create_h5

    cfg = _cfg(args)
    att = cfg["attribution"]
    data = load_prepared(args.data)
    model, scheduler, projector, model_index = _load_member(args, cfg)
    positions = shard_positions(data.n, int(att["batch_size"]), args.shards, args.shard)
    start = time.time()
    feats = featurize_training(
        model,
        projector,
        scheduler.alphas_cumprod,
        args.output,
        data.images,
        data.ids,
        positions,
        int(att["K"]),
        int(att["batch_size"]),
        int(cfg["seed"]),
        model_index,
        progress=not args.no_progress,
        conditions=data.extra.get("caption_embeddings"),
        flip=bool(cfg.get("dataset", {}).get("flip", False)),
        precision=att.get("precision", "fp32"),
    )
    seconds = time.time() - start
    attrs = {
        "output": args.output,
        "member": args.member,
        "K": int(att["K"]),
        "projection": projector.describe(),
        "seed": int(cfg["seed"]),
        "shard": args.shard,
        "shards": args.shards,
        "seconds": seconds,
    }
    with create_h5(args.out, attrs) as f:
        f.create_dataset("features", data=feats)
        f.create_dataset("positions", data=positions)
        f.create_dataset("train_ids", data=data.ids[positions])
    rate = len(positions) * int(att["K"]) / max(seconds, 1e-9)
    log.info(
        "featurized %d examples × %d draws in %.1f s (%.0f example·timesteps/s), dim %d",
        len(positions),
        int(att["K"]),
        seconds,
        rate,
        projector.dim,
    )


def cmd_kernel(args: argparse.Namespace) -> None:
    from .scoring import FeatureStore, kernel, write_kernel

    cfg = _cfg(args)
    store = FeatureStore(args.features)
    lam = float(cfg["attribution"]["lambda"])
    result = kernel(store, lam, int(cfg["attribution"]["block_size"]))
    write_kernel(
        args.out,
        result,
        {
            "lambda": lam,
            "n_train": store.n,
            "dim": store.dim,
            "features": [str(p) for p in args.features],
        },
    )
    log.info(
        "%s kernel %d×%d, λ_abs %.4g", result["form"], *result["matrix"].shape, result["lambda_abs"]
    )


def _target_images(targets_path: str | Path, method) -> tuple[np.ndarray, list[int], np.ndarray]:
    import h5py

    with h5py.File(targets_path, "r") as f:
        steps = f["steps"][()].tolist()
        ids = f["target_ids"][()]
        images = f["x0_hat"][()] if method.target_image == "x0_hat" else f["final"][()]
    return images, steps, ids


def _target_conditions(targets_path: str | Path):
    """Caption embeddings of the targets (text-conditioned data), or None."""
    import h5py
    import torch

    with h5py.File(targets_path, "r") as f:
        return torch.from_numpy(f["cond"][()]).float() if "cond" in f else None


def cmd_featurize_targets(args: argparse.Namespace) -> None:
    import torch

    from .features import featurize_targets, uniform_timesteps
    from .methods import get_method
    from .storage import create_h5

    cfg = _cfg(args)
    att = cfg["attribution"]
    method = get_method(args.method)
    model, scheduler, projector, _ = _load_member(args, cfg)
    images, steps, ids = _target_images(args.targets, method)
    cond = _target_conditions(args.targets)
    T = len(scheduler.alphas_cumprod)
    seed, bs = int(cfg["seed"]), int(att["batch_size"])
    out = np.empty((len(steps), len(ids), projector.dim), dtype=np.float32)
    if method.target_image == "final":  # one feature per target, repeated at every step
        ts = uniform_timesteps(int(att["K"]), T)
        out[:] = featurize_targets(
            model,
            projector,
            scheduler.alphas_cumprod,
            method.target_output,
            torch.from_numpy(images),
            ids.tolist(),
            ts,
            seed,
            bs,
            cond,
            att.get("precision", "fp32"),
        )[None]
    else:
        for s, t in enumerate(steps):
            out[s] = featurize_targets(
                model,
                projector,
                scheduler.alphas_cumprod,
                method.target_output,
                torch.from_numpy(images[s]),
                ids.tolist(),
                [t] * int(att["R"]),
                seed,
                bs,
                cond,
                att.get("precision", "fp32"),
            )
    attrs = {
        "method": method.name,
        "member": args.member,
        "R": int(att["R"]),
        "projection": projector.describe(),
        "seed": seed,
    }
    with create_h5(args.out, attrs) as f:
        f.create_dataset("features", data=out)
        f.create_dataset("steps", data=np.asarray(steps))
        f.create_dataset("target_ids", data=ids)
    log.info("target features %s for %s: %s", method.name, args.member, out.shape)


def cmd_score(args: argparse.Namespace) -> None:
    import h5py

    from .data import load_prepared
    from .methods import get_method
    from .scoring import (
        FeatureStore,
        TrakScorer,
        pixel_similarity_block,
        random_block,
        read_kernel,
        write_scores,
    )
    from .storage import config_hash

    cfg = _cfg(args)
    att = cfg["attribution"]
    method = get_method(args.method)
    data = load_prepared(args.data)
    images, steps, target_ids = _target_images(args.targets, method)
    attrs: dict[str, Any] = {
        "method": method.name,
        "description": method.description,
        "config_hash": config_hash(cfg),
        "config": cfg,
        "target_image": method.target_image,
    }
    if method.uses_gradients:
        members = []
        for kernel_path, target_path in zip(args.kernels, args.target_features, strict=True):
            member = Path(kernel_path).stem
            shards = [p for p in args.train_features if Path(p).parent.name == member]
            form, matrix, kattrs = read_kernel(kernel_path)
            with h5py.File(target_path, "r") as f:
                psi = f["features"][()]
            store = FeatureStore(shards)
            if store.n != data.n:
                raise ConfigError(f"features of {member} cover {store.n} of {data.n} examples")
            members.append((store, form, matrix, psi))
            attrs.setdefault("lambda_abs", []).append(kattrs["lambda_abs"])
        block_fn = TrakScorer(members)
        attrs.update(
            {
                "members": [Path(k).stem for k in args.kernels],
                "lambda": att["lambda"],
                "K": att["K"],
                "R": att["R"],
                "train_output": method.train_output,
                "target_output": method.target_output,
                "projection": members[0][0].attrs.get("projection"),
            }
        )
    elif method.family == "pixel":
        if method.target_image != "x0_hat":
            images = np.broadcast_to(images[None], (len(steps), *images.shape))
        block_fn = pixel_similarity_block(data.images, images)
    else:
        block_fn = random_block(int(cfg["seed"]), steps, target_ids, data.n)
    write_scores(
        args.out, steps, target_ids, data.ids, block_fn, attrs, train_block=int(att["block_size"])
    )
    log.info(
        "wrote %s scores for %d steps × %d targets × %d training examples",
        method.name,
        len(steps),
        len(target_ids),
        data.n,
    )


def cmd_figure_attributions(args: argparse.Namespace) -> None:
    import h5py

    from .data import decode_latents, load_prepared
    from .figures import attribution_grid, save
    from .scoring import read_scores
    from .storage import atomic_path

    cfg = _cfg(args)
    data = load_prepared(args.data)
    result = read_scores(args.scores)
    with h5py.File(args.targets, "r") as f:
        x0_hat = f["x0_hat"][()]
    train_images = data.images
    if data.conditional:  # latents: decode what is shown with the dataset's VAE
        top = int(cfg["figures"]["top_k"])
        order = np.argsort(result["scores"], axis=-1)
        shown = np.unique(np.concatenate([order[..., :top].ravel(), order[..., -top:].ravel()]))
        decoded = decode_latents(data.config, data.images[shown])
        train_images = np.zeros((data.n, *decoded.shape[1:]), np.float32)
        train_images[shown] = decoded
        flat = decode_latents(data.config, x0_hat.reshape(-1, *x0_hat.shape[2:]))
        x0_hat = flat.reshape(*x0_hat.shape[:2], *flat.shape[1:])
    n = min(int(cfg["figures"]["n_targets"]), len(result["target_ids"]))
    with atomic_path(args.out) as tmp:
        tmp.mkdir(parents=True)
        for j in range(n):
            fig = attribution_grid(
                x0_hat[:, j],
                result["steps"].tolist(),
                result["scores"][:, j],
                train_images,
                data.labels,
                int(cfg["figures"]["top_k"]),
                f"{result['attrs']['method']}: target {result['target_ids'][j]}",
            )
            save(fig, tmp / f"target-{j}.png")


# ---------------------------------------------------------------------------------------------
# Linear datamodeling score


def cmd_lds_subsets(args: argparse.Namespace) -> None:
    from .data import load_prepared
    from .evaluation import make_subsets
    from .storage import create_h5

    cfg = _cfg(args)
    lds = cfg["lds"]
    data = load_prepared(args.data)
    count = int(lds["tuning"]) + int(lds["reporting"])
    masks = make_subsets(data.n, count, float(lds["alpha"]), int(cfg["seed"]))
    role = np.array(["tuning"] * int(lds["tuning"]) + ["reporting"] * int(lds["reporting"]))
    with create_h5(
        args.out,
        {
            "alpha": float(lds["alpha"]),
            "seed": int(cfg["seed"]),
            "subset_size": int(masks[0].sum()),
        },
    ) as f:
        f.create_dataset("masks", data=masks)
        f.create_dataset("role", data=role.astype("S9"))
        f.create_dataset("train_ids", data=data.ids)
    log.info("%d subsets of %d/%d examples", count, masks[0].sum(), data.n)


def cmd_ground_truth(args: argparse.Namespace) -> None:
    import h5py

    from .evaluation import ground_truth
    from .features import uniform_timesteps
    from .models import load_model, resolve_device
    from .storage import create_h5

    cfg = _cfg(args)
    lds = cfg["lds"]
    device = resolve_device(cfg.get("device", "auto"))
    with h5py.File(args.targets, "r") as f:
        x0_hat, final = f["x0_hat"][()], f["final"][()]
        steps, target_ids = f["steps"][()].tolist(), f["target_ids"][()].tolist()
        cond = f["cond"][()] if "cond" in f else None
    f_t, final_loss = [], []
    for folder in args.models:
        model, scheduler = load_model(Path(folder) / "final", device)
        timesteps = uniform_timesteps(int(lds["final_timesteps"]), len(scheduler.alphas_cumprod))
        a, b = ground_truth(
            model,
            scheduler.alphas_cumprod,
            x0_hat,
            final,
            steps,
            target_ids,
            int(lds["draws"]),
            timesteps,
            int(lds["final_noise"]),
            int(cfg["seed"]),
            cond=cond,
        )
        f_t.append(a)
        final_loss.append(b)
    attrs = {
        "models": [str(m) for m in args.models],
        "draws": int(lds["draws"]),
        "common_random_numbers": True,
        "output": "loss",
    }
    with create_h5(args.out, attrs) as f:
        f.create_dataset("f_t", data=np.stack(f_t))  # (seeds, n_steps, n_targets)
        f.create_dataset("final_loss", data=np.stack(final_loss))  # (seeds, n_targets)
        f.create_dataset("steps", data=np.asarray(steps))
        f.create_dataset("target_ids", data=np.asarray(target_ids))


def cmd_memorization_reference(args: argparse.Namespace) -> None:
    import h5py
    from tqdm.auto import tqdm

    from .data import load_prepared
    from .evaluation import ground_truth_draws, memorization_loss
    from .models import build_scheduler
    from .storage import create_h5

    cfg = _cfg(args)
    draws, seed = int(cfg["lds"]["draws"]), int(cfg["seed"])
    images = load_prepared(args.data).images
    alphas_cumprod = build_scheduler(cfg.get("diffusion", {})).alphas_cumprod.double().numpy()
    with h5py.File(args.subsets, "r") as f:
        masks = f["masks"][()]
    with h5py.File(args.targets, "r") as f:
        x0_hat = f["x0_hat"][()]
        steps, target_ids = f["steps"][()].tolist(), f["target_ids"][()].tolist()
    shape = tuple(x0_hat.shape[2:])
    start = time.time()
    loss = np.empty((len(steps), len(target_ids), len(masks)))
    for s, t in enumerate(tqdm(steps, desc="memorization reference", disable=args.no_progress)):
        eps = ground_truth_draws(target_ids, t, draws, shape, seed)
        loss[s] = memorization_loss(images, masks, x0_hat[s], alphas_cumprod[t], eps.numpy())
    attrs = {
        "draws": draws,
        "common_random_numbers": True,
        "output": "loss of the subset's empirical optimal denoiser",
        "seconds": time.time() - start,
    }
    with create_h5(args.out, attrs) as f:
        f.create_dataset("loss", data=loss)  # (steps, targets, subsets)
        f.create_dataset("steps", data=np.asarray(steps))
        f.create_dataset("target_ids", data=np.asarray(target_ids))
    log.info(
        "memorization reference: %d steps × %d targets × %d subsets in %.1f s",
        len(steps),
        len(target_ids),
        len(masks),
        time.time() - start,
    )


def cmd_lds_report(args: argparse.Namespace) -> None:
    from .evaluation import lds_table, load_lds_inputs
    from .figures import lds_figure, save
    from .storage import atomic_path, write_json

    cfg = _cfg(args)
    inputs = load_lds_inputs(
        args.subsets,
        args.ground_truth,
        args.scores,
        args.train_features,
        args.target_features,
        args.memorization,
    )
    table, details = lds_table(inputs, cfg)
    with atomic_path(args.out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    write_json(args.out_json, details)
    save(lds_figure(table, details.get("memorization_reference")), args.out_figure)
    log.info("LDS report:\n%s", table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


# ---------------------------------------------------------------------------------------------
# Counterfactual retraining


def cmd_train_classifier(args: argparse.Namespace) -> None:
    from .classifier import save_classifier, train_classifier
    from .data import load_prepared
    from .storage import atomic_path

    cfg = _cfg(args)
    data = load_prepared(args.data)
    if data.labels.min() < 0:
        raise ConfigError(
            f"{data.name} has no class labels for the feature classifier; "
            "set counterfactual.enabled: false"
        )
    n_classes = max(len(data.class_names), int(data.labels.max()) + 1)
    model, info = train_classifier(
        data.images, data.labels, n_classes, cfg["counterfactual"]["classifier"], int(cfg["seed"])
    )
    with atomic_path(args.out) as tmp:
        save_classifier(model, tmp, info)
    log.info(
        "classifier: held-out accuracy %.3f (%d images), train accuracy %.3f",
        info["held_out_accuracy"] or float("nan"),
        info["n_held_out"],
        info["train_accuracy"],
    )


def _targets_and_classes(targets_path, classifier):
    import h5py
    import torch

    with h5py.File(targets_path, "r") as f:
        t = {k: f[k][()] for k in ("x_t", "final", "steps", "target_ids")}
    t["classes"] = classifier.probabilities(torch.from_numpy(t["final"])).argmax(1).numpy()
    return t


def cmd_emergence(args: argparse.Namespace) -> None:
    import pandas as pd
    import torch

    from .classifier import load_classifier
    from .counterfactual import decision_step, emergence
    from .diffusion import model_predictor
    from .figures import emergence_figure, save
    from .models import load_model
    from .storage import atomic_path, create_h5

    cfg = _cfg(args)
    cf = cfg["counterfactual"]
    model, scheduler = load_model(Path(args.model) / "final")
    classifier, _ = load_classifier(args.classifier)
    t = _targets_and_classes(args.targets, classifier)
    steps = t["steps"].tolist()
    probs, samples = emergence(
        model_predictor(model),
        scheduler,
        int(cfg["targets"]["sampling_steps"]),
        torch.from_numpy(t["x_t"]),
        steps,
        t["target_ids"].tolist(),
        classifier,
        t["classes"].tolist(),
        int(cf["samples"]),
        int(cfg["seed"]),
    )
    decided = [decision_step(probs[:, j], steps) for j in range(probs.shape[1])]
    with create_h5(args.out, {"samples_per_step": int(cf["samples"])}) as f:
        f.create_dataset("probability", data=probs)
        f.create_dataset("samples", data=samples.numpy())
        f.create_dataset("steps", data=np.asarray(steps))
        f.create_dataset("classes", data=t["classes"])
        f.create_dataset("decision_step", data=np.asarray(decided))
    rows = [
        {
            "target": int(j),
            "step": int(st),
            "class": int(t["classes"][j]),
            "probability": float(probs[s, j]),
            "decision_step": decided[j],
        }
        for s, st in enumerate(steps)
        for j in range(probs.shape[1])
    ]
    with atomic_path(args.out_csv) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.4f")
    save(emergence_figure(probs, steps, decided), args.out_figure)
    log.info("decision steps per target: %s", decided)


def cmd_cf_plan(args: argparse.Namespace) -> None:
    import h5py

    from .counterfactual import Case, random_removal, removal_size, top_influencers
    from .data import load_prepared
    from .scoring import read_scores
    from .storage import create_h5

    cfg = _cfg(args)
    cf = cfg["counterfactual"]
    data = load_prepared(args.data)
    with h5py.File(args.emergence, "r") as f:
        decided = f["decision_step"][()]
        steps = f["steps"][()].tolist()
    scores = {Path(p).stem: read_scores(p) for p in args.scores}
    cases, keep = [], []
    for target in range(int(cf["targets"])):
        wanted = [int(decided[target])] if cf["steps"] == "emergence" else list(cf["steps"])
        for step in wanted:
            if step not in steps:
                raise ConfigError(f"counterfactual step {step} is not an attribution step {steps}")
            for method in cf["methods"]:
                for k in cf["k"]:
                    size = removal_size(float(k), data.n)
                    if method == "random":
                        removed = random_removal(data.n, size, int(cfg["seed"]), target, step)
                    else:
                        row = scores[method]["scores"][steps.index(step), target]
                        removed = top_influencers(row, size)
                    mask = np.ones(data.n, dtype=bool)
                    mask[removed] = False
                    cases.append(Case(len(cases), method, target, step, size).as_dict())
                    keep.append(mask)
    if len(cases) != args.expected_cases:
        raise ConfigError(f"planned {len(cases)} cases, the workflow expects {args.expected_cases}")
    with create_h5(args.out, {"cases": cases, "config": cf}) as f:
        f.create_dataset("keep", data=np.stack(keep))
    log.info("planned %d counterfactual models", len(cases))


def cmd_cf_resample(args: argparse.Namespace) -> None:
    import h5py
    import torch

    from .counterfactual import resample, swap_window
    from .diffusion import inference_timesteps, model_predictor, swapped_predictor
    from .models import load_model
    from .storage import create_h5, read_attrs

    cfg = _cfg(args)
    cf = cfg["counterfactual"]
    sampling_steps = int(cfg["targets"]["sampling_steps"])
    original, scheduler = load_model(Path(args.original) / "final")
    other, _ = load_model(Path(args.model) / "final")
    with h5py.File(args.plan, "r") as f:
        cases = read_attrs(f)["cases"]
    with h5py.File(args.targets, "r") as f:
        x_t, steps, ids = f["x_t"][()], f["steps"][()].tolist(), f["target_ids"][()]
    if args.case == "floor":
        pairs = sorted({(c["target"], c["step"]) for c in cases})
    else:
        case = cases[int(args.case.lstrip("c"))]
        pairs = [(case["target"], case["step"])]
    timesteps = inference_timesteps(scheduler, sampling_steps)
    orig_p, other_p = model_predictor(original), model_predictor(other)
    seed, n_samples = int(cfg["seed"]), int(cf["samples"])
    with create_h5(args.out, {"case": args.case, "delta": int(cf["delta"])}) as f:
        for target, step in pairs:
            x = torch.from_numpy(x_t[steps.index(step), target])
            window = swap_window(step, int(cf["delta"]), timesteps)
            runs = {
                "original": orig_p,
                "a": swapped_predictor(orig_p, other_p, window),
                "b": other_p,
            }
            group = f.create_group(f"t{target}-s{step}")
            for name, predictor in runs.items():
                out = resample(
                    x, step, scheduler, sampling_steps, predictor, seed, int(ids[target]), n_samples
                )
                group.create_dataset(name, data=out.numpy())
    log.info("resampled %d (target, step) pairs for case %s", len(pairs), args.case)


def cmd_cf_report(args: argparse.Namespace) -> None:
    import h5py
    import pandas as pd
    import torch

    from .classifier import load_classifier
    from .counterfactual import sample_metrics, summarize
    from .figures import counterfactual_metrics_figure, counterfactual_samples_figure, save
    from .storage import atomic_path, read_attrs

    cfg = _cfg(args)
    cf = cfg["counterfactual"]
    classifier, info = load_classifier(args.classifier)
    with h5py.File(args.plan, "r") as f:
        cases = read_attrs(f)["cases"]
    with h5py.File(args.emergence, "r") as f:
        classes = f["classes"][()]
    samples = {int(Path(p).stem.lstrip("c")): p for p in args.samples}
    label = "emergence" if cf["steps"] == "emergence" else None
    rows, shown = [], []
    for case in cases:
        with h5py.File(samples[case["index"]], "r") as f:
            group = f[f"t{case['target']}-s{case['step']}"]
            orig = torch.from_numpy(group["original"][()])
            for protocol in ("a", "b"):
                other = torch.from_numpy(group[protocol][()])
                m = sample_metrics(orig, other, classifier, int(classes[case["target"]]))
                rows.append(
                    {**case, "protocol": protocol, "step_label": label or case["step"], **m}
                )
                if protocol == "a" and case["target"] == 0:
                    shown.append((case, orig.numpy(), other.numpy()))
    floor_rows = []
    with h5py.File(args.floor, "r") as f:
        for name, group in f.items():
            target, step = (int(v[1:]) for v in name.split("-"))
            orig = torch.from_numpy(group["original"][()])
            for protocol in ("a", "b"):
                m = sample_metrics(
                    orig, torch.from_numpy(group[protocol][()]), classifier, int(classes[target])
                )
                floor_rows.append({"target": target, "step": step, "protocol": protocol, **m})
    per_case = pd.DataFrame(rows)
    table = summarize(per_case, pd.DataFrame(floor_rows))
    table["classifier_accuracy"] = info["held_out_accuracy"]
    with atomic_path(args.out_cases) as tmp:
        per_case.to_csv(tmp, index=False, float_format="%.5f")
    with atomic_path(args.out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.5f")
    save(counterfactual_metrics_figure(table), args.out_figure_metrics)
    save(counterfactual_samples_figure(shown), args.out_figure_samples)
    log.info(
        "counterfactual report:\n%s",
        table[table.protocol == "a"].to_string(index=False, float_format=lambda v: f"{v:.3f}"),
    )


# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffattr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], None], **arguments: dict) -> None:
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip().split("\n")[0])
        p.add_argument("--cfg", default="{}", help="JSON object with the config sections needed")
        p.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        for flag, kwargs in arguments.items():
            p.add_argument(f"--{flag.replace('_', '-')}", **kwargs)
        p.set_defaults(func=fn)

    req = {"required": True}
    add("prepare-data", cmd_prepare_data, out=req)
    add(
        "train",
        cmd_train,
        data=req,
        out=req,
        seed_tag=req,
        keep={"default": None, "help": "FILE.h5:DATASET:ROW boolean mask of examples to train on"},
    )
    add("sample", cmd_sample, model=req, data=req, out=req)
    add(
        "featurize-train",
        cmd_featurize_train,
        data=req,
        model=req,
        member=req,
        output=req,
        shard={"type": int, "default": 0},
        shards={"type": int, "default": 1},
        out=req,
    )
    add("kernel", cmd_kernel, features={"nargs": "+", **req}, out=req)
    add(
        "featurize-targets",
        cmd_featurize_targets,
        model=req,
        member=req,
        method=req,
        targets=req,
        out=req,
    )
    add(
        "score",
        cmd_score,
        method=req,
        data=req,
        targets=req,
        out=req,
        kernels={"nargs": "*", "default": []},
        target_features={"nargs": "*", "default": []},
        train_features={"nargs": "*", "default": []},
    )
    add("figure-attributions", cmd_figure_attributions, scores=req, targets=req, data=req, out=req)
    add("lds-subsets", cmd_lds_subsets, data=req, out=req)
    add("ground-truth", cmd_ground_truth, models={"nargs": "+", **req}, targets=req, out=req)
    add(
        "memorization-reference",
        cmd_memorization_reference,
        data=req,
        subsets=req,
        targets=req,
        out=req,
    )
    add(
        "lds-report",
        cmd_lds_report,
        subsets=req,
        ground_truth={"nargs": "+", **req},
        scores={"nargs": "+", **req},
        train_features={"nargs": "*", "default": []},
        target_features={"nargs": "*", "default": []},
        memorization={"default": None},
        out_csv=req,
        out_json=req,
        out_figure=req,
    )
    add("train-classifier", cmd_train_classifier, data=req, out=req)
    add(
        "emergence",
        cmd_emergence,
        model=req,
        targets=req,
        classifier=req,
        out=req,
        out_csv=req,
        out_figure=req,
    )
    add(
        "cf-plan",
        cmd_cf_plan,
        data=req,
        emergence=req,
        scores={"nargs": "+", **req},
        out=req,
        expected_cases={"type": int, **req},
    )
    add(
        "cf-resample",
        cmd_cf_resample,
        plan=req,
        case=req,
        original=req,
        model=req,
        targets=req,
        out=req,
    )
    add(
        "cf-report",
        cmd_cf_report,
        plan=req,
        samples={"nargs": "+", **req},
        floor=req,
        classifier=req,
        targets=req,
        emergence=req,
        out_csv=req,
        out_cases=req,
        out_figure_metrics=req,
        out_figure_samples=req,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    _setup(args)
    try:
        args.func(args)
    except DiffattrError as err:
        print(f"diffattr {args.command}: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
