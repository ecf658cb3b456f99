"""TRAK kernel and blockwise scores, the score-file layout, and the non-gradient baselines.

For ensemble member m with training features Φ_m (n × k) and target features ψ_m:

    A_m = (Φ_mᵀΦ_m + λ_m I)⁻¹        (float64, Cholesky)
    τ   = (1/M) Σ_m Φ_m A_m ψ_m       (one n-vector per (step, target))

λ_m = λ · mean(diag(Φ_mᵀΦ_m)) with λ the configured, scale-free ridge. No per-model
renormalisation of A (TRAK's A/mean|A| reweights models arbitrarily). When k > n the same
scores come from the dual form τ = (Φ_mΦ_mᵀ + λ_m I)⁻¹ Φ_m ψ_m.

Everything streams over blocks of training rows and targets, so memory is bounded by the block
sizes and k, never by n_train × n_targets.

Score file: dataset ``scores`` float32 (n_steps, n_targets, n_train), chunked per (step, target)
row; ``steps``, ``target_ids``, ``train_ids``; attributes name the method and the sign convention.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy.linalg import cho_factor, cho_solve

from .methods import SIGN_CONVENTION
from .seeding import numpy_rng
from .storage import create_h5, read_attrs


class FeatureStore:
    """A feature matrix stored as shard files (``features`` at ``positions``), read in blocks."""

    def __init__(self, paths: Sequence[str | Path]):
        if not paths:
            raise ValueError("no feature shards given")
        shards = []
        for path in paths:
            with h5py.File(path, "r") as f:
                pos = f["positions"][()]
                shards.append(
                    (int(pos[0]) if len(pos) else 0, len(pos), Path(path), f["features"].shape[1])
                )
                self.attrs = read_attrs(f)
        shards.sort()
        self.shards = [(Path(p), lo, lo + size) for lo, size, p, _ in shards]
        self.dim = shards[0][3]
        expected = 0
        for path, lo, hi in self.shards:
            if lo != expected:
                raise ValueError(f"feature shards do not tile the training set (gap before {path})")
            expected = hi
        self.n = expected

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, block) pairs of at most ``rows`` rows, in order."""
        for path, lo, hi in self.shards:
            with h5py.File(path, "r") as f:
                data = f["features"]
                for a in range(0, hi - lo, rows):
                    yield lo + a, data[a : min(a + rows, hi - lo)]

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) (may span shards)."""
        parts = []
        for path, s_lo, s_hi in self.shards:
            a, b = max(lo, s_lo), min(hi, s_hi)
            if a < b:
                with h5py.File(path, "r") as f:
                    parts.append(f["features"][a - s_lo : b - s_lo])
        return np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32)


def gram(store: FeatureStore, block_rows: int) -> np.ndarray:
    """ΦᵀΦ in float64, accumulated over row blocks."""
    xtx = np.zeros((store.dim, store.dim))
    for _, block in store.blocks(block_rows):
        b = block.astype(np.float64)
        xtx += b.T @ b
    return xtx


def ridge(xtx_trace: float, dim: int, lam: float) -> float:
    """Absolute ridge λ · mean(diag(ΦᵀΦ))."""
    return lam * xtx_trace / dim


def kernel(store: FeatureStore, lam: float, block_rows: int) -> dict[str, Any]:
    """The kernel of one member: primal (k×k) A = (ΦᵀΦ+λI)⁻¹ if k ≤ n, else dual (n×n)."""
    if store.dim <= store.n:
        xtx = gram(store, block_rows)
        lam_abs = ridge(np.trace(xtx), store.dim, lam)
        xtx[np.diag_indices_from(xtx)] += lam_abs
        inverse = _spd_inverse(xtx, lam)
        return {"form": "primal", "matrix": inverse, "lambda_abs": lam_abs}
    phi = store.read(0, store.n).astype(np.float64)
    gram_dual = phi @ phi.T
    lam_abs = ridge(np.trace(gram_dual), store.dim, lam)
    gram_dual[np.diag_indices_from(gram_dual)] += lam_abs
    return {"form": "dual", "matrix": _spd_inverse(gram_dual, lam), "lambda_abs": lam_abs}


def _spd_inverse(matrix: np.ndarray, lam: float) -> np.ndarray:
    try:
        factor = cho_factor(matrix, lower=True)
    except np.linalg.LinAlgError as err:
        raise np.linalg.LinAlgError(
            f"the kernel is not positive definite (λ = {lam}); increase scoring.lambda"
        ) from err
    return cho_solve(factor, np.eye(len(matrix)))


def write_kernel(path: str | Path, result: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
    with create_h5(
        path, {**attrs, "form": result["form"], "lambda_abs": result["lambda_abs"]}
    ) as f:
        f.create_dataset("matrix", data=result["matrix"])


def read_kernel(path: str | Path) -> tuple[str, np.ndarray, dict[str, Any]]:
    with h5py.File(path, "r") as f:
        attrs = read_attrs(f)
        return attrs["form"], f["matrix"][()], attrs


# ---------------------------------------------------------------------------------------------
# Score files

BlockFn = Callable[[int, slice, slice], np.ndarray]
"""(step index, target slice, train slice) -> scores block (n_targets_block, n_train_block)."""


def write_scores(
    path: str | Path,
    steps: Sequence[int],
    target_ids: np.ndarray,
    train_ids: np.ndarray,
    block_fn: BlockFn,
    attrs: Mapping[str, Any],
    train_block: int = 8192,
    target_block: int = 256,
) -> None:
    """Write a score file, computing it block by block with ``block_fn``."""
    n_steps, n_targets, n_train = len(steps), len(target_ids), len(train_ids)
    chunk = (1, 1, max(1, min(n_train, 65536)))
    with create_h5(path, {"sign": SIGN_CONVENTION, **attrs}) as f:
        f.create_dataset("steps", data=np.asarray(steps, dtype=np.int64))
        f.create_dataset("target_ids", data=np.asarray(target_ids, dtype=np.int64))
        f.create_dataset("train_ids", data=np.asarray(train_ids, dtype=np.int64))
        scores = f.create_dataset("scores", (n_steps, n_targets, n_train), np.float32, chunks=chunk)
        for s in range(n_steps):
            for t_lo in range(0, n_targets, target_block):
                targets = slice(t_lo, min(t_lo + target_block, n_targets))
                for i_lo in range(0, n_train, train_block):
                    train = slice(i_lo, min(i_lo + train_block, n_train))
                    scores[s, targets, train] = block_fn(s, targets, train)


def read_scores(path: str | Path) -> dict[str, Any]:
    """Load a whole score file (small runs; use h5py directly for row-wise access)."""
    with h5py.File(path, "r") as f:
        return {
            "scores": f["scores"][()],
            "steps": f["steps"][()],
            "target_ids": f["target_ids"][()],
            "train_ids": f["train_ids"][()],
            "attrs": read_attrs(f),
        }


class TrakScorer:
    """Blockwise τ = (1/M) Σ_m Φ_m A_m ψ_m over ensemble members.

    ``members`` holds, per member, (train FeatureStore, kernel form, kernel matrix, target
    features (n_steps, n_targets, k)).
    """

    def __init__(self, members: Sequence[tuple[FeatureStore, str, np.ndarray, np.ndarray]]):
        self.members = members
        self._cache: tuple[tuple[int, int, int], list[np.ndarray]] | None = None
        self._phi: dict[int, np.ndarray] = {}

    def _dual_phi(self, store: FeatureStore) -> np.ndarray:
        """All of Φ in float64, read once per member (the dual form needs it whole anyway)."""
        key = id(store)
        if key not in self._phi:
            self._phi[key] = store.read(0, store.n).astype(np.float64)
        return self._phi[key]

    def _weights(self, s: int, targets: slice) -> list[np.ndarray]:
        key = (s, targets.start, targets.stop)
        if self._cache is None or self._cache[0] != key:
            weights = []
            for store, form, matrix, psi in self.members:
                q = psi[s, targets].astype(np.float64).T  # (k, tb)
                if form == "primal":
                    weights.append(matrix @ q)  # A ψ: (k, tb)
                else:  # dual: (ΦΦᵀ+λI)⁻¹ Φ ψ, all n rows at once (small n only)
                    weights.append(matrix @ (self._dual_phi(store) @ q))
            self._cache = (key, weights)
        return self._cache[1]

    def __call__(self, s: int, targets: slice, train: slice) -> np.ndarray:
        total = 0.0
        for (store, form, _, _), w in zip(self.members, self._weights(s, targets), strict=True):
            if form == "primal":
                total = total + store.read(train.start, train.stop).astype(np.float64) @ w
            else:
                total = total + w[train]
        return (np.asarray(total) / len(self.members)).T.astype(np.float32)


def pixel_similarity_block(train_images: np.ndarray, target_images: np.ndarray) -> BlockFn:
    """cos(x̂_j, x_i) with ``target_images`` (n_steps, n_targets, ...) and flat training images."""
    train = train_images.reshape(len(train_images), -1).astype(np.float64)
    train /= np.linalg.norm(train, axis=1, keepdims=True) + 1e-12
    tgt = target_images.reshape(*target_images.shape[:2], -1).astype(np.float64)
    tgt /= np.linalg.norm(tgt, axis=2, keepdims=True) + 1e-12

    def block(s: int, targets: slice, rows: slice) -> np.ndarray:
        return (tgt[s, targets] @ train[rows].T).astype(np.float32)

    return block


def random_block(seed: int, steps: Sequence[int], target_ids: np.ndarray, n_train: int) -> BlockFn:
    """Seeded N(0, 1) scores, one independent vector per (step, target)."""

    def block(s: int, targets: slice, rows: slice) -> np.ndarray:
        out = [
            numpy_rng(seed, "random-scores", int(steps[s]), int(t)).standard_normal(n_train)[rows]
            for t in target_ids[targets]
        ]
        return np.asarray(out, dtype=np.float32)

    return block
