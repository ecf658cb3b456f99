"""Stages that need no model: kernels, scores (every method, from stored features) and the
attribution figures."""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import layout
from ..artifacts import (
    FeatureStore,
    digest_key,
    read_data,
    read_kernel,
    read_scores,
    read_target_features,
    read_targets,
    write_kernel,
    write_scores,
)
from ..config import RunConfig, alphas_cumprod
from ..data import decode_latents
from ..errors import ArtifactError, ConfigError
from ..figures import attribution_grid, save
from ..layout import Member
from ..methods import get_method, scorer
from ..scoring import BlockFn, Kernel
from ..scoring import kernel as build_kernel
from ..storage import atomic_path, config_hash, read_json

log = logging.getLogger("diffattr")


def kernel(cfg: RunConfig, *, features: list[Path], out: Path) -> None:
    """Invert one member's regularised feature Gram matrix (ΦᵀΦ + λ_abs I)⁻¹ (or its dual)."""
    store = FeatureStore(features)
    lam = cfg.attribution.lambda_
    result = build_kernel(store, lam, cfg.attribution.block_size)
    attrs = {
        "lambda": lam,
        "n_train": store.n,
        "dim": store.dim,
        "features": [str(p) for p in features],
        "feature_digests": store.digests(),
    }
    write_kernel(out, dataclasses.replace(result, attrs=attrs))
    log.info("%s kernel %d×%d, λ_abs %.4g", result.form, *result.matrix.shape, result.lambda_abs)


def score(
    cfg: RunConfig,
    *,
    method: str,
    data: Path,
    targets: Path,
    out: Path,
    kernels: Sequence[Path] = (),
    target_features: Sequence[Path] = (),
    train_features: Sequence[Path] = (),
    member_scores: Sequence[Path] = (),
    lds: Path | None = None,
) -> None:
    """Score every training example for every (step, target): the method's score file. With
    ``lds`` (an LDS report's lds.json) a gradient method scores each step with the λ the report
    tuned for it on the tuning subsets (the scores figures and counterfactual removals use)."""
    chosen = get_method(method)
    prepared = read_data(data)
    stored = read_targets(targets)
    attrs: dict[str, Any] = {
        **chosen.attributes(),
        "config_hash": config_hash(cfg.to_dict()),
        "config": cfg.to_dict(),
    }
    # Per feature kind (one, or one per step for step-local methods): the ensemble members.
    step_kinds = [chosen.kind_at(t).key for t in stored.steps] if chosen.uses_gradients else []
    by_kind: dict[str, dict[Member, tuple[FeatureStore, Kernel, np.ndarray]]] = {
        kind: ensemble_members(kind, kernels, target_features, train_features)
        for kind in dict.fromkeys(step_kinds)
    }
    for members in by_kind.values():
        for member, (store, _, _) in members.items():
            if store.n != prepared.n:
                raise ConfigError(f"features of {member} cover {store.n} of {prepared.n} examples")
    if by_kind:
        first = next(iter(by_kind.values()))
        single = len(by_kind) == 1
        attrs.update(
            {
                "lambda_abs": [k.lambda_abs for m in by_kind.values() for _, k, _ in m.values()],
                "members": [str(m) for m in first],
                "lambda": cfg.attribution.lambda_,
                "K": cfg.attribution.K,
                "R": cfg.attribution.R,
                "projection": next(iter(first.values()))[0].attrs.get("projection"),
                "feature_digests": {
                    digest_key(kind, m, single): k.attrs.get("feature_digests")
                    for kind, members in by_kind.items()
                    for m, (_, k, _) in members.items()
                },
                "lambda_source": "config",
                "feature_kinds": step_kinds,  # per step
            }
        )
        if chosen.kinds(stored.steps)[0].near is not None:
            attrs["local_window"] = cfg.attribution.local_window
        costs = [st.cost() for members in by_kind.values() for st, _, _ in members.values()]
        attrs["featurize_cost"] = cost_attrs(costs)
    member_files = [read_scores(path) for path in member_scores]
    per_member = [f.scores for f in member_files]
    if per_member:
        attrs["ensemble_members"] = [str(layout.parse_member_scores(p)[1]) for p in member_scores]
        n_draws = [prepared.n * int(f.attrs.get("K", 0)) for f in member_files]
        seconds = [float(f.attrs.get("seconds", float("nan"))) for f in member_files]
        attrs["featurize_cost"] = cost_attrs(list(zip(seconds, n_draws, strict=True)))

    def blocks(members: Sequence[tuple[FeatureStore, Kernel, np.ndarray]]) -> BlockFn:
        return scorer(
            chosen,
            prepared.images,
            stored.x0_hat,
            stored.steps,
            stored.target_ids,
            cfg.seed,
            members,
            alphas_cumprod(cfg.diffusion),
            cfg.attribution.R,
            per_member,
        )

    tuned = tuned_lambdas(lds, chosen.name, stored.steps) if lds and by_kind else None
    if not by_kind:
        block_fn = blocks([])
    else:  # step s: its kind's members, with the config λ (kernel files) or its tuned λ
        lambdas = tuned or [None] * len(stored.steps)
        current: dict[tuple[str, float | None], BlockFn] = {}

        def block_fn(s: int, targets: slice, rows: slice) -> np.ndarray:
            """Step s with its kind's members and λ; kernels for a tuned λ are built when their
            step comes (steps are written in order) and only one (kind, λ) is held at a time."""
            key = (step_kinds[s], lambdas[s])
            if key not in current:
                current.clear()
                members = list(by_kind[key[0]].values())
                if key[1] is not None:
                    size = cfg.attribution.block_size
                    members = [(st, build_kernel(st, key[1], size), psi) for st, _, psi in members]
                current[key] = blocks(members)
            return current[key](s, targets, rows)

    if tuned is not None:
        attrs.update({"lambda_source": "tuned", "lambda_per_step": tuned, "lds_report": str(lds)})
        attrs.pop("lambda_abs")
    write_scores(
        out,
        stored.steps,
        stored.target_ids,
        prepared.ids,
        block_fn,
        attrs,
        train_block=cfg.attribution.block_size,
    )
    log.info(
        "wrote %s scores for %d steps × %d targets × %d training examples",
        chosen.name,
        len(stored.steps),
        stored.n,
        prepared.n,
    )


def ridge_caption(attrs: dict[str, Any]) -> str:
    """Which λ a gradient method's scores used, for figure titles ('' for other methods)."""
    if attrs.get("lambda_source") == "tuned":
        return " (λ tuned per step on the LDS tuning subsets)"
    if "lambda" in attrs:
        return f" (config λ = {attrs['lambda']:g}, not tuned)"
    return ""


def cost_attrs(costs: Sequence[tuple[float, int]]) -> dict[str, float]:
    """Total featurization seconds and example·draws of a method, and their rate."""
    seconds, rows = sum(c[0] for c in costs), sum(c[1] for c in costs)
    rate = rows / seconds if seconds > 0 else float("nan")
    return {"seconds": seconds, "example_draws": rows, "example_draws_per_s": rate}


def tuned_lambdas(lds: Path, method: str, steps: Sequence[int]) -> list[float] | None:
    """The λ an LDS report tuned per attribution step for ``method`` (None: it tuned none, e.g.
    too few tuning subsets; the config λ then stands, recorded as such)."""
    details = read_json(lds)
    chosen = details.get("methods", {}).get(method, {}).get("selected_lambda")
    if not chosen:
        log.warning("%s: no λ tuned for %s; keeping the config λ", lds, method)
        return None
    missing = [t for t in steps if str(t) not in chosen]
    if missing:
        raise ArtifactError(f"{lds} tuned no λ for steps {missing}; {layout.remake_hint(lds)}")
    return [float(chosen[str(t)]) for t in steps]


def ensemble_members(
    feature_kind: str,
    kernels: Sequence[Path],
    target_features: Sequence[Path],
    train_features: Sequence[Path],
) -> dict[Member, tuple[FeatureStore, Kernel, np.ndarray]]:
    """Per member, in the order of ``kernels``: (training features, kernel, target features)."""
    if not kernels:
        raise ConfigError("a gradient method needs the kernels, target and training features")
    shards: dict[Member, list[Path]] = defaultdict(list)
    for path in train_features:
        output, member, _ = layout.parse_train_features(path)
        if output == feature_kind:
            shards[member].append(path)
    psi = {layout.parse_target_features(p)[1]: p for p in target_features}
    members = {}
    for path in kernels:
        output, member = layout.parse_kernel(path)
        if output != feature_kind:
            continue  # another step's kind (step-local methods)
        if member not in psi or not shards[member]:
            raise ConfigError(f"kernel {path} has no matching target features or training shards")
        store, kernel_ = FeatureStore(shards[member]), read_kernel(path)
        store.check_unchanged_since(kernel_.attrs.get("feature_digests"), path)
        members[member] = (store, kernel_, read_target_features(psi[member]).features)
    if not members:
        raise ConfigError(f"no kernel of feature kind {feature_kind} among {list(kernels)}")
    return members


def figure_attributions(
    cfg: RunConfig, *, scores: Path, targets: Path, data: Path, out: Path
) -> None:
    """Draw, per target, x̂_0^t along the trajectory with its top positive/negative influencers."""
    prepared = read_data(data)
    result = read_scores(scores)
    x0_hat = read_targets(targets).x0_hat
    top_k = cfg.figures.top_k
    train_images = prepared.images
    if prepared.conditional:  # latents: decode what is shown with the dataset's VAE
        order = np.argsort(result.scores, axis=-1)
        shown = np.unique(np.concatenate([order[..., :top_k].ravel(), order[..., -top_k:].ravel()]))
        decoded = decode_latents(prepared.config, prepared.images[shown])
        train_images = np.zeros((prepared.n, *decoded.shape[1:]), np.float32)
        train_images[shown] = decoded
        flat = decode_latents(prepared.config, x0_hat.reshape(-1, *x0_hat.shape[2:]))
        x0_hat = flat.reshape(*x0_hat.shape[:2], *flat.shape[1:])
    n = min(cfg.figures.n_targets, len(result.target_ids))
    ridge = ridge_caption(result.attrs)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for j in range(n):
            fig = attribution_grid(
                x0_hat[:, j],
                result.steps,
                result.scores[:, j],
                train_images,
                prepared.labels,
                top_k,
                f"{result.method}: target {result.target_ids[j]}{ridge}",
            )
            save(fig, tmp / f"target-{j}.png")
