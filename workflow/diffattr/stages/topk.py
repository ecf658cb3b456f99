"""Top-k scoring stages (attribution.top_k): one job per training shard keeps the K strongest
training examples of each sign per (step, target); a merge job joins the shards."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .. import layout
from ..artifacts import (
    TopKFile,
    write_top_k,
)
from ..config import RunConfig
from ..errors import ArtifactError, ConfigError
from ..layout import shard_bounds
from ..scoring import BlockFn
from ..topk import Ranked, Running, merge
from .scoring import scoring

log = logging.getLogger("diffattr")


def top_k_of(cfg: RunConfig, n_train: int) -> int:
    """attribution.top_k, checked against the training set's size."""
    k = cfg.attribution.top_k
    if k is None:
        raise ConfigError("attribution.top_k is not set: this run writes dense scores")
    if k > n_train:
        raise ConfigError(
            f"attribution.top_k: {k} exceeds the {n_train} training examples; choose K ≤ n"
        )
    return int(k)


def ranked_rows(
    block_fn: BlockFn,
    n_steps: int,
    n_targets: int,
    lo: int,
    hi: int,
    k: int,
    train_block: int,
    target_block: int = 256,
) -> Iterator[tuple[int, slice, Ranked]]:
    """Per (step, block of targets): the top-k among the training positions [lo, hi), scored
    ``train_block`` rows at a time (memory: one block and the running top-k, whatever n)."""
    for s in range(n_steps):
        for t_lo in range(0, n_targets, target_block):
            targets = slice(t_lo, min(t_lo + target_block, n_targets))
            running = Running(targets.stop - targets.start, k)
            for i_lo in range(lo, hi, train_block):
                train = slice(i_lo, min(i_lo + train_block, hi))
                running.add(block_fn(s, targets, train), np.arange(train.start, train.stop))
            yield s, targets, running.result()


def score_shard(  # noqa: PLR0913  (issue 32: not yet split)
    cfg: RunConfig,
    *,
    method: str,
    data: Path,
    targets: Path,
    shard: int,
    shards: int,
    out: Path,
    kernels: Sequence[Path] = (),
    target_features: Sequence[Path] = (),
    train_features: Sequence[Path] = (),
    member_scores: Sequence[Path] = (),
) -> None:
    """Score one shard of the training set (the featurization shards' rows) for every (step,
    target) and keep its K strongest of each sign (attribution.top_k): a top-k shard file."""
    job = scoring(
        cfg, method, data, targets, kernels, target_features, train_features, member_scores
    )
    n = job.prepared.n
    k = top_k_of(cfg, n)
    lo, hi = shard_bounds(n, cfg.attribution.batch_size, shards, shard)
    width = min(k, hi - lo)
    attrs = {**job.attrs, "top_k": k, "shard": shard, "shards": shards, "rows": [lo, hi]}
    size = (len(job.stored.steps), job.stored.n)
    parts = ranked_rows(job.block_fn, *size, lo, hi, k, cfg.attribution.block_size)
    write_top_k(out, job.stored.steps, job.stored.target_ids, n, width, parts, attrs)
    log.info(
        "wrote the top %d of %s for %d steps × %d targets over training rows %s of %d",
        width,
        method,
        len(job.stored.steps),
        job.stored.n,
        attrs["rows"],
        n,
    )


def check_tiling(files: Sequence[TopKFile]) -> None:
    """The shard files' training rows tile 0 … n − 1 exactly (each row in one shard)."""
    n, expected = files[0].n_train, 0
    for lo, hi, path in sorted((*f.attrs["rows"], f.path) for f in files):
        if lo != expected:
            raise ArtifactError(
                f"the top-k shards do not tile the {n} training examples (rows "
                f"{min(lo, expected)}–{max(lo, expected)} missing or twice, at {path})"
            )
        expected = hi
    if expected != n:
        raise ArtifactError(f"the top-k shards cover rows 0–{expected} of {n}: pass every shard")


def merge_top_k(cfg: RunConfig, *, shard_files: list[Path], out: Path) -> None:
    """Merge the top-k shard files of one method into its top-k file: per (step, target) the K
    strongest of each sign among every shard's (exact: each holds its own top K)."""
    files = [TopKFile(p) for p in shard_files]
    try:
        first = files[0]
        k = top_k_of(cfg, first.n_train)
        for f in files:
            same = f.steps == first.steps and np.array_equal(f.target_ids, first.target_ids)
            if not same or f.n_train != first.n_train or f.method != first.method:
                raise ArtifactError(
                    f"{f.path} scores other steps, targets, training set or method than "
                    f"{first.path}; {layout.remake_hint(f.path)}"
                )
            if f.k != k:
                raise ArtifactError(
                    f"{f.path} kept the top {f.k}, attribution.top_k is {k}; "
                    f"{layout.remake_hint(f.path)}"
                )
        check_tiling(files)

        def parts() -> Iterator[tuple[int, slice, Ranked]]:
            block = 256
            for t_lo in range(0, len(first.target_ids), block):
                targets = slice(t_lo, min(t_lo + block, len(first.target_ids)))
                merged = merge((f.rows(targets) for f in files), k)
                for s in range(len(first.steps)):
                    yield s, targets, Ranked(merged.index[:, s], merged.score[:, s])

        attrs = {
            key: value
            for key, value in first.attrs.items()
            if key not in ("shard", "rows", "datasets_digest", "steps", "target_ids", "n_train")
        }
        attrs["shard_digests"] = {f.path.name: str(f.attrs.get("datasets_digest")) for f in files}
        write_top_k(out, first.steps, first.target_ids, first.n_train, k, parts(), attrs)
    finally:
        for f in files:
            f.close()
    log.info("merged %d top-%d shards of %s", len(files), k, first.method)
