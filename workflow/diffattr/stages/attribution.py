"""Stages that featurize with a model: training features per member and shard, target features."""

from __future__ import annotations

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
from ..config import RunConfig
from ..features import shard_positions
from ..layout import Member
from ..methods import FeatureKind, MemberDraws, MemberJob, gradient_method, member_method
from ..methods.ekfac import ekfac_dampings  # noqa: F401  (its earlier home)
from ..methods.unlearning import target_block  # noqa: F401  (its earlier home)
from ..models import load_model, made_from, resolve_device

log = logging.getLogger("diffattr")


def _attributor(cfg: RunConfig, model_dir: Path, member: str) -> Attributor:
    model, scheduler, parsed = _member_model(cfg, model_dir, member)
    return Attributor(model, scheduler, parsed, cfg.attribution, cfg.seed)


def featurize_train(  # noqa: PLR0913  (issue 32: not yet split)
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


def member_scores(
    cfg: RunConfig,
    *,
    method: str,
    data: Path,
    model: Path,
    member: str,
    targets: Path,
    out: Path,
) -> None:
    """One ensemble member's scores of a per-member method (``ekfac``, ``unlearning``,
    ``unlearning_final``; ``diffattr.methods``): its score file, or for a method scored in pieces
    the piece that ``out`` names (``<member>.t<block>.s<shard>.h5``: a block of the targets × a
    shard of the training examples)."""
    chosen = member_method(method)
    part, shard = layout.parse_member_piece(out)
    net, scheduler, parsed = _member_model(cfg, model, member)
    prepared, s = read_data(data), cfg.attribution
    draws = MemberDraws(
        net,
        scheduler.alphas_cumprod,
        prepared.images,
        prepared.ids,
        cfg.seed,
        parsed.index,
        s.batch_size,
    )
    job = MemberJob(cfg, member, draws, prepared, read_targets(targets), part, shard)
    result = chosen.member_job(job)
    _write_member_scores(
        out, result.targets, result.train_ids, result.scores, result.attrs, result.candidates
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
