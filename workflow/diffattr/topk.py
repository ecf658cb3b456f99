"""Top-k scores: the K strongest positive and K strongest negative training examples per
(step, target), selected while the scores stream by (no file I/O here).

Order (the one every reader and the tests use): positive = the K highest scores, highest first;
negative = the K lowest, lowest first; equal scores rank the lower training position first on
both sides. Under this total order the top-K set of a row is unique, so it is exact to select it
shard by shard and merge: the global top K of a row lies in the union of its shards' top K.

Memory: an accumulator holds (rows × K) entries per sign; folding in a block of b columns holds
(rows × (K + b)) more. Nothing grows with the number of training examples n.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

SIGNS = ("positive", "negative")


def dense_required(what: object) -> str:
    """Why the LDS (and ``diffattr evaluate``) cannot read top-k scores, in one line."""
    return (
        f"{what} holds top-k scores (attribution.top_k: the K strongest of each sign per "
        "(step, target)), but the LDS and diffattr evaluate need dense scores: the LDS "
        "correlates each target's score vector over all n training examples with the subset "
        "models' outputs; run with attribution.top_k: null (dense scores) to evaluate"
    )


@dataclass(frozen=True)
class Ranked:
    """Top-k of some rows: ``index`` (2, *rows, k) int64 training positions, ``score`` (2, *rows,
    k) float32; axis 0 is the sign (0: positive, highest first; 1: negative, lowest first)."""

    index: np.ndarray
    score: np.ndarray

    @property
    def k(self) -> int:
        return int(self.index.shape[-1])

    def positions(self) -> np.ndarray:
        """Every training position held (sorted, unique)."""
        return np.unique(self.index)


def _best(key: np.ndarray, index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``key`` (rows, m) with positions ``index`` (rows, m): the k entries that rank
    first by (key descending, index ascending), in no particular order (k ≥ m: all of them)."""
    m = key.shape[1]
    if k >= m:
        return key, index
    part = np.argpartition(-key, k - 1, axis=1)[:, :k]
    kept = np.take_along_axis(key, part, 1)
    kth = kept.min(1, keepdims=True)
    # argpartition breaks ties at the boundary arbitrarily: rows with more entries equal to the
    # k-th value than it kept are redone by a full (key, index) sort
    tied = (key == kth).sum(1) > (kept == kth).sum(1)
    out_key, out_index = kept, np.take_along_axis(index, part, 1)
    for r in np.flatnonzero(tied):
        order = np.lexsort((index[r], -key[r]))[:k]
        out_key[r], out_index[r] = key[r, order], index[r, order]
    return out_key, out_index


def _sorted(key: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((index, -key), axis=-1)
    return np.take_along_axis(key, order, -1), np.take_along_axis(index, order, -1)


class Running:
    """The top-k of ``rows`` score rows, folded in block by block (columns = training examples)."""

    def __init__(self, rows: int, k: int):
        if k < 1:
            raise ValueError(f"k = {k}: keep at least one example of each sign")
        self.k = k
        # per sign: key (larger ranks first: score for positive, −score for negative), index
        self.key = [np.empty((rows, 0), np.float32) for _ in SIGNS]
        self.index = [np.empty((rows, 0), np.int64) for _ in SIGNS]

    def add(self, scores: np.ndarray, index: np.ndarray) -> None:
        """Fold in ``scores`` (rows, b) of the training positions ``index`` ((b,) or (rows, b))."""
        scores = np.asarray(scores, np.float32)
        index = np.broadcast_to(np.asarray(index, np.int64), scores.shape)
        for s, key in enumerate((scores, -scores)):
            both = np.concatenate([self.key[s], key], axis=1)
            at = np.concatenate([self.index[s], index], axis=1)
            self.key[s], self.index[s] = _best(both, at, self.k)

    def add_ranked(self, part: Ranked) -> None:
        """Fold in another top-k of the same rows (a shard's: ``part`` (2, rows, k'))."""
        for s in range(len(SIGNS)):
            key = part.score[s] if s == 0 else -part.score[s]
            both = np.concatenate([self.key[s], key.astype(np.float32)], axis=1)
            at = np.concatenate([self.index[s], part.index[s].astype(np.int64)], axis=1)
            self.key[s], self.index[s] = _best(both, at, self.k)

    def result(self) -> Ranked:
        """(2, rows, min(k, columns seen)), each sign in its order."""
        (pos_key, pos_index), (neg_key, neg_index) = (
            _sorted(self.key[s], self.index[s]) for s in range(len(SIGNS))
        )
        score = np.stack([pos_key, -neg_key]).astype(np.float32)
        return Ranked(np.stack([pos_index, neg_index]), score)


def rank_dense(scores: np.ndarray, k: int) -> Ranked:
    """Top-k of dense scores (..., n) in the order above: (2, ..., min(k, n))."""
    scores = np.asarray(scores, np.float32)
    lead, n = scores.shape[:-1], scores.shape[-1]
    running = Running(int(np.prod(lead, dtype=int)), k)
    running.add(scores.reshape(-1, n), np.arange(n))
    out = running.result()
    width = out.index.shape[-1]
    return Ranked(out.index.reshape(2, *lead, width), out.score.reshape(2, *lead, width))


def merge(parts: Iterable[Ranked], k: int) -> Ranked:
    """The top-k of the union of ``parts`` (each (2, *rows, k_i), the same rows): exact, since
    each part holds the top k_i = min(k, its columns) of its own columns."""
    running: Running | None = None
    lead: tuple[int, ...] = ()
    for part in parts:
        if running is None:
            lead = part.index.shape[1:-1]
            running = Running(int(np.prod(lead, dtype=int)), k)
        flat = Ranked(
            part.index.reshape(2, -1, part.index.shape[-1]),
            part.score.reshape(2, -1, part.score.shape[-1]),
        )
        running.add_ranked(flat)
    if running is None:
        raise ValueError("no top-k parts to merge")
    out = running.result()
    width = out.index.shape[-1]
    return Ranked(out.index.reshape(2, *lead, width), out.score.reshape(2, *lead, width))
