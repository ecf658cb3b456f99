"""Stages that featurize with a model: training features per member and shard, target features."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from .. import layout
from ..artifacts import (
    Candidates,
    TargetFeatures,
    Targets,
    check_made_from,
    read_data,
    read_patches,
    read_targets,
    write_feature_shard,
    write_scores,
    write_target_features,
)
from ..attribution import Attributor
from ..config import SLICES, RunConfig
from ..errors import ConfigError
from ..features import shard_positions
from ..layout import Member
from ..methods import FeatureKind, get_method, gradient_method
from ..models import load_model, made_from, resolve_device

log = logging.getLogger("diffattr")


def _attributor(cfg: RunConfig, model_dir: Path, member: str) -> Attributor:
    model, scheduler, parsed = _member_model(cfg, model_dir, member)
    return Attributor(model, scheduler, parsed, cfg.attribution, cfg.seed)


def featurize_train(
    cfg: RunConfig,
    *,
    data: Path,
    model: Path,
    member: str,
    model_output: str,
    shard: int,
    shards: int,
    out: Path,
    progress: bool = True,
) -> None:
    """Project the training examples' gradients of one feature kind (``model_output``: output
    [-uniform][-normalized]): one shard of one member; normalised kinds also store DAS's residual
    weights."""
    kind = FeatureKind.parse(model_output)
    attributor = _attributor(cfg, model, member)
    prepared = read_data(data)
    checkpoint = layout.checkpoint(model, Member.parse(member).checkpoint)
    check_made_from(prepared, model, made_from(checkpoint).get("data_digest"))
    batch_size = cfg.attribution.batch_size
    positions = shard_positions(prepared.n, batch_size, shards, shard)
    start = time.time()
    features = attributor.featurize_train(kind, prepared, positions, cfg.dataset.flip, progress)
    weights = attributor.residual_weights(prepared, positions) if kind.normalize else None
    seconds = time.time() - start
    K = cfg.attribution.K
    attrs = {
        "output": kind.output,
        "feature_kind": kind.key,
        "uniform_timesteps": kind.uniform,
        "normalized": kind.normalize,
        "member": member,
        "K": K,
        "projection": attributor.projector.describe(),
        "seed": cfg.seed,
        "shard": shard,
        "shards": shards,
        "seconds": seconds,
        "data_digest": prepared.digest,
    }
    if weights is not None:
        attrs["residual_timesteps"] = cfg.attribution.residual_timesteps
    window = attributor.window(kind)
    if window is not None:
        attrs["timestep_window"] = list(window)
    write_feature_shard(out, features, positions, prepared.ids[positions], attrs, weights)
    log.info(
        "featurized %d examples × %d draws in %.1f s (%.0f example·timesteps/s), dim %d",
        len(positions),
        K,
        seconds,
        len(positions) * K / max(seconds, 1e-9),
        attributor.projector.dim,
    )


def _member_model(cfg: RunConfig, model_dir: Path, member: str):
    """One ensemble member's model and scheduler on the configured device, and its Member."""
    device = resolve_device(cfg.device)  # first: a missing device fails before any input is read
    parsed = Member.parse(member)
    folder = layout.checkpoint(model_dir, parsed.checkpoint)
    net, scheduler = load_model(folder, device, cfg.model)
    return net, scheduler, parsed


def _write_member_scores(
    out: Path,
    stored: Targets,
    train_ids: np.ndarray,
    scores: np.ndarray,
    attrs: dict,
    candidates: Candidates | None = None,
) -> None:
    """A per-member method's score array (steps, targets, n_train) as a score file."""
    block = lambda i, t, r: scores[i, t, r].astype(np.float32)  # noqa: E731
    write_scores(
        out, stored.steps, stored.target_ids, train_ids, block, attrs, candidates=candidates
    )


def ekfac_dampings(cfg: RunConfig) -> list[float]:
    """The damping scales an ekfac member scores: the config's, and with an LDS its grid."""
    grid = cfg.lds.ekfac_dampings if cfg.lds.enabled else ()
    return sorted({float(cfg.attribution.ekfac_damping), *map(float, grid)})


def ekfac_member(
    cfg: RunConfig, *, data: Path, model: Path, member: str, targets: Path, out: Path
) -> None:
    """EK-FAC influence scores of one ensemble member (``diffattr.ekfac``): its score file."""
    from ..ekfac import ekfac_scores  # (kronfluence: only this job needs it)

    net, scheduler, parsed = _member_model(cfg, model, member)
    prepared, stored, s = read_data(data), read_targets(targets), cfg.attribution
    dampings = ekfac_dampings(cfg)
    start = time.time()
    grid = ekfac_scores(
        net,
        scheduler.alphas_cumprod,
        prepared.images,
        prepared.ids,
        stored.x0_hat,
        stored.steps,
        stored.target_ids,
        s.K,
        s.R,
        cfg.seed,
        parsed.index,
        s.batch_size,
        dampings,
        s.ekfac_fisher,
        cfg.dataset.flip,
    )
    seconds = time.time() - start
    attrs = {
        "method": "ekfac",
        "member": member,
        "K": s.K,
        "R": s.R,
        "damping": s.ekfac_damping,
        "damping_meaning": "λ_l = damping × mean EK-FAC eigenvalue of layer l",
        "fisher": s.ekfac_fisher,
        "seed": cfg.seed,
        "seconds": seconds,
    }
    candidates = Candidates("ekfac_damping", dampings, grid) if len(dampings) > 1 else None
    scores = grid[dampings.index(float(s.ekfac_damping))]
    _write_member_scores(out, stored, prepared.ids, scores, attrs, candidates)
    log.info(
        "EK-FAC scores of %s: %d examples × %d draws, dampings %s, in %.1f s",
        member,
        prepared.n,
        s.K,
        dampings,
        seconds,
    )


def unlearning_member(
    cfg: RunConfig,
    *,
    data: Path,
    model: Path,
    member: str,
    targets: Path,
    out: Path,
    method: str = "unlearning",
    target_shard: int = 0,
    shard: int = 0,
) -> None:
    """Attribution-by-unlearning scores of one ensemble member (``diffattr.unlearning``):
    ``unlearning`` (step-specific) or ``unlearning_final`` (trajectory-free), for the block
    ``target_shard`` of ``attribution.unlearning_shards`` contiguous blocks of the targets and
    the training examples of ``shard`` of ``attribution.unlearning_train_shards``."""
    from ..unlearning import loss_examples, unlearning_scores

    chosen = get_method(method)
    if chosen.name not in ("unlearning", "unlearning_final"):
        raise ConfigError(f"{method} is not an unlearning method (unlearning, unlearning_final)")

    net, scheduler, parsed = _member_model(cfg, model, member)
    prepared, s = read_data(data), cfg.attribution
    stored = target_block(read_targets(targets), target_shard, s.unlearning_shards)
    examples = loss_examples(prepared.n, s.batch_size, s.unlearning_train_shards, shard)
    start = time.time()
    scores = unlearning_scores(
        net,
        scheduler.alphas_cumprod,
        prepared.images,
        prepared.ids,
        stored.x0_hat,
        stored.steps,
        stored.target_ids,
        cfg.seed,
        parsed.index,
        s.unlearning_lr,
        s.unlearning_steps,
        s.unlearning_window,
        s.unlearning_draws,
        s.unlearning_eval_draws,
        s.unlearning_fisher_draws,
        s.batch_size,
        progress=True,
        final=stored.final if chosen.target_image == "final" else None,
        examples=examples,
    )
    seconds = time.time() - start
    settings = {k: getattr(s, k) for k in SLICES["unlearning_member"]["attribution"]}
    attrs = {"method": chosen.name, "member": member, "seed": cfg.seed, "seconds": seconds}
    attrs["K"] = s.unlearning_eval_draws
    attrs["settings"] = settings
    cases = stored.n * (1 if chosen.target_image == "final" else stored.x0_hat.shape[0])
    attrs["seconds_per_unlearning"] = seconds / max(1, cases)
    _write_member_scores(out, stored, prepared.ids[examples], scores, attrs)
    log.info("unlearning scores of %s in %.1f s", member, seconds)


def target_block(stored: Targets, shard: int, shards: int) -> Targets:
    """Block ``shard`` of ``shards`` contiguous blocks of the targets (numpy's array_split)."""
    if not 0 <= shard < shards:
        raise ConfigError(f"target shard {shard} out of range for {shards} shards")
    if shards > stored.n:
        raise ConfigError(
            f"attribution.unlearning_shards ({shards}) exceeds the {stored.n} targets; lower it"
        )
    keep = np.array_split(np.arange(stored.n), shards)[shard]
    cond = None if stored.cond is None else stored.cond[keep]
    prompts = None if stored.prompts is None else [stored.prompts[i] for i in keep]
    return dataclasses.replace(
        stored,
        final=stored.final[keep],
        x_t=stored.x_t[:, keep],
        x0_hat=stored.x0_hat[:, keep],
        target_ids=stored.target_ids[keep],
        cond=cond,
        prompts=prompts,
    )


def featurize_targets(
    cfg: RunConfig, *, model: Path, member: str, method: str, targets: Path, out: Path
) -> None:
    """Project the gradients of a method's target output at every attribution step: one member."""
    chosen = gradient_method(method)
    attributor = _attributor(cfg, model, member)
    stored = read_targets(targets)
    psi = attributor.featurize_targets(chosen, stored)
    attrs = {
        "method": chosen.name,
        "member": member,
        "R": cfg.attribution.R,
        "projection": attributor.projector.describe(),
        "seed": cfg.seed,
    }
    write_target_features(out, TargetFeatures(psi, stored.steps, stored.target_ids, attrs))
    log.info("target features %s for %s: %s", chosen.name, member, psi.shape)


def featurize_patch_targets(
    cfg: RunConfig,
    *,
    model: Path,
    member: str,
    method: str,
    targets: Path,
    patches: Path,
    out: Path,
) -> None:
    """Project the gradients of a method's per-step target output restricted to every patch:
    ψ (steps, targets, patches, k) of one member (the training features are the whole image's)."""
    chosen = gradient_method(method)
    attributor = _attributor(cfg, model, member)
    stored, boxes = read_targets(targets), read_patches(patches)
    start = time.time()
    psi = attributor.featurize_patch_targets(chosen, stored, boxes)
    attrs = {
        "method": chosen.name,
        "member": member,
        "R": cfg.attribution.R,
        "projection": attributor.projector.describe(),
        "seed": cfg.seed,
        "boxes": boxes.boxes.tolist(),
        "seconds": time.time() - start,
    }
    write_target_features(out, TargetFeatures(psi, stored.steps, stored.target_ids, attrs))
    log.info("patch target features %s for %s: %s", chosen.name, member, psi.shape)
