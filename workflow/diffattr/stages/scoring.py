"""Stages that need no model: kernels and scores (every method, from stored features; patch
scores too). Top-k scoring: ``topk``; the attribution figures: ``attribution_figures``."""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import layout
from ..artifacts import (
    Candidates,
    FeatureStore,
    Scores,
    check_made_from,
    digest_key,
    read_data,
    read_kernel,
    read_patches,
    read_scores,
    read_target_features,
    read_targets,
    write_kernel,
    write_patch_scores,
    write_scores,
)
from ..config import PATCH_METHODS, RunConfig
from ..errors import ArtifactError, ConfigError
from ..layout import Member
from ..methods import Method, ScoringContext, get_method
from ..schedule import alphas_cumprod
from ..scoring import BlockFn, Kernel, TrakScorer, patch_pixel_similarity_block
from ..scoring import kernel as build_kernel
from ..storage import config_hash, read_json

log = logging.getLogger("diffattr")

Members = dict[Member, tuple[FeatureStore, Kernel, np.ndarray]]


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


def member_arrays(
    paths: Sequence[Path], files: Sequence[Scores], target_ids: np.ndarray, train_ids: np.ndarray
) -> list[np.ndarray]:
    """Each ensemble member's scores (steps, targets, n_train): its pieces (one per job: a block
    of the targets × a shard of the training examples) placed by their ids; every (target,
    training example) exactly once."""
    pieces: dict[str, list[Scores]] = {}
    for path, f in zip(paths, files, strict=True):
        pieces.setdefault(str(layout.parse_member_scores(path)[1]), []).append(f)
    target_at = {int(t): i for i, t in enumerate(target_ids)}
    train_at = {int(i): k for k, i in enumerate(train_ids)}
    out = []
    for member, parts in pieces.items():
        shape = (parts[0].scores.shape[0], len(target_ids), len(train_ids))
        joined = np.zeros(shape, dtype=parts[0].scores.dtype)
        covered = np.zeros(shape[1:], dtype=int)
        for part in parts:
            rows = [target_at.get(int(t), -1) for t in part.target_ids]
            cols = [train_at.get(int(i), -1) for i in part.train_ids]
            if -1 in rows or -1 in cols:
                raise ArtifactError(
                    f"a score piece of member {member} holds targets or training examples this "
                    "run does not have; delete the member's pieces and rerun"
                )
            cells = np.ix_(rows, cols)
            joined[(slice(None), *cells)] = part.scores
            covered[cells] += 1
        if (covered != 1).any():
            missing, twice = int((covered == 0).sum()), int((covered > 1).sum())
            raise ArtifactError(
                f"the score pieces of member {member} leave {missing} (target, training example) "
                f"pairs out and hold {twice} twice or more; delete them and rerun"
            )
        out.append(joined)
    return out


def mean_candidates(
    paths: Sequence[Path], files: Sequence[Scores], target_ids: np.ndarray, train_ids: np.ndarray
) -> Candidates | None:
    """The ensemble mean of the members' candidate scores (one whole file per member), which the
    LDS report tunes the setting on; None when the members hold no candidates."""
    held = [f.candidates for f in files if f.candidates is not None]
    if not held:
        return None
    first = held[0]
    for path, f in zip(paths, files, strict=True):
        same_rows = np.array_equal(f.target_ids, target_ids) and np.array_equal(
            f.train_ids, train_ids
        )
        if f.candidates is None or f.candidates.values != first.values or not same_rows:
            raise ArtifactError(
                f"{path} does not hold {first.setting} scores {first.values} for this run's "
                f"targets and training examples; {layout.remake_hint(path)}"
            )
    return Candidates(first.setting, first.values, np.mean([c.scores for c in held], axis=0))


def at_tuned_candidates(member: Scores, tuned: Sequence[float], path: Path) -> Scores:
    """A member's scores with step s taken from its candidate scored at the tuned ``tuned[s]``."""
    if member.candidates is None:
        raise ArtifactError(
            f"{path} holds no candidate scores to choose the tuned values {list(tuned)} from; "
            f"{layout.remake_hint(path)}"
        )
    per_step = [member.candidates.at(v)[s] for s, v in enumerate(tuned)]
    return dataclasses.replace(member, scores=np.stack(per_step), candidates=None)


@dataclasses.dataclass(frozen=True)
class Scoring:
    """What a score job computes: ``block_fn`` (step, targets, training rows) → scores, the
    attributes its file records, the data and targets, and ``grid`` → the candidate scores of
    the setting an LDS report tunes (a dense score file's; called only where one is written,
    a score-job grid being computed over every training example)."""

    block_fn: BlockFn
    attrs: dict[str, Any]
    prepared: Any
    stored: Any
    grid: Callable[[], Candidates | None]


def scoring(  # noqa: PLR0913  (issue 32: not yet split)
    cfg: RunConfig,
    method: str,
    data: Path,
    targets: Path,
    kernels: Sequence[Path] = (),
    target_features: Sequence[Path] = (),
    train_features: Sequence[Path] = (),
    member_scores: Sequence[Path] = (),
    lds: Path | None = None,
) -> Scoring:
    """The block function and attributes of ``method``'s scores (``score``, ``score_shard``)."""
    chosen = get_method(method)
    prepared = read_data(data)
    stored = read_targets(targets)
    attrs: dict[str, Any] = {
        **chosen.attributes(),
        "config_hash": config_hash(cfg.to_dict()),
        "config": cfg.to_dict(),
        "data_digest": prepared.digest,
    }
    by_kind = members_by_kind(
        chosen, stored.steps, prepared.n, kernels, target_features, train_features
    )
    for members in by_kind.values():
        for store, _, _ in members.values():
            check_made_from(prepared, store.shards[0][0], store.data_digest)
    attrs.update(gradient_attrs(cfg, chosen, stored.steps, by_kind))
    member_files = [read_scores(path) for path in member_scores]
    candidates = mean_candidates(member_scores, member_files, stored.target_ids, prepared.ids)
    settings = getattr(cfg.attribution, chosen.score_section or "", None)
    tuned = None
    if chosen.candidate_setting is not None:
        attrs.update(
            {
                "lambda": chosen.candidate_value(cfg),
                "lambda_source": "config",
                "lambda_means": chosen.candidate_setting,
            }
        )
        tuned = tuned_lambdas(lds, chosen.name, stored.steps) if lds else None
        if tuned is not None:
            attrs.update({"lambda_source": "tuned", "lambda_per_step": tuned})
            attrs["lds_report"] = str(lds)
            member_files = [
                at_tuned_candidates(f, tuned, path)
                for f, path in zip(member_files, member_scores, strict=True)
            ]
            settings = chosen.with_tuned(settings, tuned)
            candidates = None  # (the grid is the report's input, not the tuned file's)
    per_member = member_arrays(member_scores, member_files, stored.target_ids, prepared.ids)
    if per_member:
        members_seen = (str(layout.parse_member_scores(p)[1]) for p in member_scores)
        attrs["ensemble_members"] = list(dict.fromkeys(members_seen))
        n_draws = [len(f.train_ids) * int(f.attrs.get("K", 0)) for f in member_files]
        seconds = [float(f.attrs.get("seconds", float("nan"))) for f in member_files]
        attrs["featurize_cost"] = cost_attrs(list(zip(seconds, n_draws, strict=True)))

    def context(members: Sequence[tuple[FeatureStore, Kernel, np.ndarray]]) -> ScoringContext:
        return ScoringContext(
            prepared.images,
            stored.steps,
            stored.target_ids,
            stored.x0_hat,
            cfg.seed,
            members,
            alphas_cumprod(cfg.diffusion),
            cfg.attribution.R,
            per_member,
            settings,
        )

    def blocks(members: Sequence[tuple[FeatureStore, Kernel, np.ndarray]]) -> BlockFn:
        return chosen.blocks(context(members))

    if by_kind:
        block_fn = per_step_blocks(cfg, chosen, stored.steps, by_kind, lds, blocks, attrs)
    else:
        block_fn = blocks([])
        if tuned is None and candidates is None:  # a grid of the score job's own setting
            return Scoring(
                block_fn, attrs, prepared, stored, lambda: chosen.candidates(context([]))
            )
    return Scoring(block_fn, attrs, prepared, stored, lambda: candidates)


def score(  # noqa: PLR0913  (issue 32: not yet split)
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
    job = scoring(
        cfg, method, data, targets, kernels, target_features, train_features, member_scores, lds
    )
    write_scores(
        out,
        job.stored.steps,
        job.stored.target_ids,
        job.prepared.ids,
        job.block_fn,
        job.attrs,
        train_block=cfg.attribution.block_size,
        candidates=job.grid(),
    )
    log.info(
        "wrote %s scores for %d steps × %d targets × %d training examples",
        method,
        len(job.stored.steps),
        job.stored.n,
        job.prepared.n,
    )


def members_by_kind(
    chosen: Method,
    steps: Sequence[int],
    n_train: int,
    kernels: Sequence[Path],
    target_features: Sequence[Path],
    train_features: Sequence[Path],
) -> dict[str, Members]:
    """Per feature kind of a gradient method (one, or one per step for step-local methods): its
    ensemble members, each covering all ``n_train`` examples ({} for other methods)."""
    if not chosen.uses_gradients:
        return {}
    kinds = [chosen.kind_at(t).key for t in steps]
    by_kind = {
        kind: ensemble_members(kind, kernels, target_features, train_features)
        for kind in dict.fromkeys(kinds)
    }
    for members in by_kind.values():
        for member, (store, _, _) in members.items():
            if store.n != n_train:
                raise ConfigError(f"features of {member} cover {store.n} of {n_train} examples")
    return by_kind


def gradient_attrs(
    cfg: RunConfig, chosen: Method, steps: Sequence[int], by_kind: dict[str, Members]
) -> dict[str, Any]:
    """What a gradient method's score file records: members, λ, K/R, projection, the feature
    digests it was computed from, feature kinds per step and the featurization cost."""
    if not by_kind:
        return {}
    first = next(iter(by_kind.values()))
    single = len(by_kind) == 1
    attrs = {
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
        "feature_kinds": [chosen.kind_at(t).key for t in steps],  # per step
    }
    if chosen.kinds(steps)[0].near is not None:
        attrs["local_window"] = cfg.attribution.local_window
    costs = [st.cost() for members in by_kind.values() for st, _, _ in members.values()]
    attrs["featurize_cost"] = cost_attrs(costs)
    return attrs


def per_step_blocks(
    cfg: RunConfig,
    chosen: Method,
    steps: Sequence[int],
    by_kind: dict[str, Members],
    lds: Path | None,
    blocks: Callable[[Sequence[tuple[FeatureStore, Kernel, np.ndarray]]], BlockFn],
    attrs: dict[str, Any],
) -> BlockFn:
    """Step s scored with its kind's members and the config λ (kernel files) or, with ``lds``,
    the λ the report tuned for it (recorded in ``attrs``, updated in place)."""
    step_kinds = [chosen.kind_at(t).key for t in steps]
    tuned = tuned_lambdas(lds, chosen.name, steps) if lds else None
    if tuned is not None:
        attrs.update({"lambda_source": "tuned", "lambda_per_step": tuned, "lds_report": str(lds)})
        attrs.pop("lambda_abs", None)
    lambdas = tuned or [None] * len(steps)
    current: dict[tuple[str, float | None], BlockFn] = {}

    def block_fn(s: int, targets: slice, rows: slice) -> np.ndarray:
        """Kernels for a tuned λ are built when their step comes (steps are written in order)
        and only one (kind, λ) is held at a time."""
        key = (step_kinds[s], lambdas[s])
        if key not in current:
            current.clear()
            members = list(by_kind[key[0]].values())
            if key[1] is not None:
                size = cfg.attribution.block_size
                members = [(st, build_kernel(st, key[1], size), psi) for st, _, psi in members]
            current[key] = blocks(members)
        return current[key](s, targets, rows)

    return block_fn


def score_patches(  # noqa: PLR0913  (issue 32: not yet split)
    cfg: RunConfig,
    *,
    method: str,
    data: Path,
    targets: Path,
    patches: Path,
    out: Path,
    kernels: Sequence[Path] = (),
    target_features: Sequence[Path] = (),
    train_features: Sequence[Path] = (),
    lds: Path | None = None,
) -> None:
    """Score every training example for every (step, target, patch): the method's patch score
    file. Gradient methods reuse the whole image's training features and kernels (and, with
    ``lds``, its per-step tuned λ) with the patch target features; ``pixel_similarity`` compares
    the patch's pixels."""
    chosen = get_method(method)
    if chosen.name not in PATCH_METHODS:
        raise ConfigError(
            f"{chosen.name} cannot score patches; attribution.patches.methods: "
            f"{', '.join(PATCH_METHODS)}"
        )
    prepared, stored, boxes = read_data(data), read_targets(targets), read_patches(patches)
    attrs: dict[str, Any] = {
        **chosen.attributes(),
        "patches": "per target: boxes[target, patch] = [y0, x0, y1, x1) in image pixels",
        "image_size": list(boxes.image_size),
        "config_hash": config_hash(cfg.to_dict()),
        "config": cfg.to_dict(),
    }
    by_kind = members_by_kind(
        chosen, stored.steps, prepared.n, kernels, target_features, train_features
    )
    for members in by_kind.values():  # ψ (steps, targets, patches, k) → queries target-major
        for member, (store, kern, psi) in members.items():
            if psi.shape[1:3] != (stored.n, boxes.n):
                raise ArtifactError(
                    f"patch target features of {member} have shape {psi.shape[:3]}, expected "
                    f"(steps, {stored.n}, {boxes.n}); {layout.remake_hint(patches)}"
                )
            members[member] = (store, kern, psi.reshape(psi.shape[0], -1, psi.shape[-1]))
    attrs.update(gradient_attrs(cfg, chosen, stored.steps, by_kind))
    if by_kind:
        blocks = lambda members: TrakScorer(  # noqa: E731
            members, chosen.row_weights(st for st, _, _ in members)
        )
        block_fn = per_step_blocks(cfg, chosen, stored.steps, by_kind, lds, blocks, attrs)
    else:
        block_fn = patch_pixel_similarity_block(prepared.images, stored.x0_hat, boxes.grid_boxes)
    write_patch_scores(
        out,
        stored.steps,
        stored.target_ids,
        prepared.ids,
        boxes.boxes,
        block_fn,
        attrs,
        train_block=cfg.attribution.block_size,
    )
    log.info(
        "wrote %s patch scores: %d steps × %d targets × %d patches × %d training examples",
        chosen.name,
        len(stored.steps),
        stored.n,
        boxes.n,
        prepared.n,
    )


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
