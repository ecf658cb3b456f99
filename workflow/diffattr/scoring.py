"""TRAK kernel and blockwise scores, and the non-gradient baselines (no file I/O here).

For ensemble member m with training features Φ_m (n × k) and target features ψ_m:

    A_m = (Φ_mᵀΦ_m + λ_m I)⁻¹        (float64, Cholesky)
    τ   = (1/M) Σ_m Φ_m A_m ψ_m       (one n-vector per (step, target))

λ_m = λ · mean(diag(Φ_mᵀΦ_m)) with λ the configured, scale-free ridge
(``ridge.absolute_ridge``). No per-model
renormalisation of A (TRAK's A/mean|A| reweights models arbitrarily). When k > n the same
scores come from the dual form τ = (Φ_mΦ_mᵀ + λ_m I)⁻¹ Φ_m ψ_m.

Everything streams over blocks of training rows and targets, so memory is bounded by the block
sizes and k, never by n_train × n_targets.

Score blocks are produced by a ``BlockFn`` and written by ``artifacts.write_scores``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from .ridge import absolute_ridge
from .seeding import numpy_rng


def gram(store: RowBlocks, block_rows: int) -> np.ndarray:
    """ΦᵀΦ in float64, accumulated over row blocks."""
    xtx = np.zeros((store.dim, store.dim))
    for _, block in store.blocks(block_rows):
        b = block.astype(np.float64)
        xtx += b.T @ b
    return xtx


@dataclass(frozen=True)
class Kernel:
    """One member's kernel: ``primal`` (ΦᵀΦ + λ_abs I)⁻¹ (k × k) or ``dual`` (ΦΦᵀ + λ_abs I)⁻¹."""

    form: str
    matrix: np.ndarray
    lambda_abs: float
    attrs: dict[str, Any] = field(default_factory=dict)


class RowBlocks(Protocol):
    """Φ (n × k) readable in row blocks (``artifacts.FeatureStore``)."""

    n: int
    dim: int

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]: ...

    def read(self, lo: int, hi: int) -> np.ndarray: ...


def kernel(store: RowBlocks, lam: float, block_rows: int) -> Kernel:
    """The kernel of one member: primal (k×k) A = (ΦᵀΦ+λ_abs I)⁻¹ if k ≤ n, else dual (n×n)."""
    if store.dim <= store.n:
        xtx = gram(store, block_rows)
        lam_abs = absolute_ridge(lam, np.trace(xtx), store.dim)
        xtx[np.diag_indices_from(xtx)] += lam_abs
        return Kernel("primal", _spd_inverse(xtx, lam), lam_abs)
    phi = store.read(0, store.n).astype(np.float64)
    gram_dual = phi @ phi.T
    lam_abs = absolute_ridge(lam, np.trace(gram_dual), store.dim)
    gram_dual[np.diag_indices_from(gram_dual)] += lam_abs
    return Kernel("dual", _spd_inverse(gram_dual, lam), lam_abs)


def _spd_inverse(matrix: np.ndarray, lam: float) -> np.ndarray:
    try:
        factor = cho_factor(matrix, lower=True)
    except np.linalg.LinAlgError as err:
        raise np.linalg.LinAlgError(
            f"the kernel is not positive definite (λ = {lam}); increase attribution.lambda"
        ) from err
    return cho_solve(factor, np.eye(len(matrix)))


BlockFn = Callable[[int, slice, slice], np.ndarray]
"""(step index, target slice, train slice) → scores block (targets in block, train in block)."""


class TrakScorer:
    """Blockwise τ = (1/M) Σ_m diag(w_m) Φ_m A_m ψ_m over ensemble members.

    ``members`` holds, per member, (training features Φ, its kernel, target features ψ
    (n_steps, n_targets, k)); ``row_weights`` optional per-member weights w_m (n,) of the
    training examples (DAS's residual term; none: w = 1).
    """

    def __init__(
        self,
        members: Sequence[tuple[RowBlocks, Kernel, np.ndarray]],
        row_weights: Sequence[np.ndarray] | None = None,
    ):
        self.members = members
        self.row_weights = row_weights
        self._cache: tuple[tuple[int, int, int], list[np.ndarray]] | None = None
        self._phi: dict[int, np.ndarray] = {}

    def _dual_phi(self, store: RowBlocks) -> np.ndarray:
        """All of Φ in float64, read once per member (the dual form needs it whole anyway)."""
        key = id(store)
        if key not in self._phi:
            self._phi[key] = store.read(0, store.n).astype(np.float64)
        return self._phi[key]

    def _weights(self, s: int, targets: slice) -> list[np.ndarray]:
        key = (s, targets.start, targets.stop)
        if self._cache is None or self._cache[0] != key:
            weights = []
            for store, kern, psi in self.members:
                q = psi[s, targets].astype(np.float64).T  # (k, tb)
                if kern.form == "primal":
                    weights.append(kern.matrix @ q)  # A ψ: (k, tb)
                else:  # dual: (ΦΦᵀ+λI)⁻¹ Φ ψ, all n rows at once (small n only)
                    weights.append(kern.matrix @ (self._dual_phi(store) @ q))
            self._cache = (key, weights)
        return self._cache[1]

    def __call__(self, s: int, targets: slice, train: slice) -> np.ndarray:
        total = 0.0
        for m, ((store, kern, _), w) in enumerate(
            zip(self.members, self._weights(s, targets), strict=True)
        ):
            if kern.form == "primal":
                part = store.read(train.start, train.stop).astype(np.float64) @ w
            else:
                part = w[train]
            if self.row_weights is not None:
                part = part * self.row_weights[m][train, None]
            total = total + part
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


def patch_pixel_similarity_block(
    train_images: np.ndarray, x0_hat: np.ndarray, grid_boxes: np.ndarray
) -> BlockFn:
    """cos(x̂_j[P], x_i[P]) inside each patch P; queries are (target, patch) pairs, target-major
    (``grid_boxes`` (targets, patches, 4) on the images' grid)."""
    n_patches = grid_boxes.shape[1]
    unit: dict[tuple[int, ...], np.ndarray] = {}

    def flat_unit(images: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
        y0, x0, y1, x1 = box
        x = images[..., y0:y1, x0:x1].reshape(*images.shape[:-3], -1).astype(np.float64)
        return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)

    def block(s: int, queries: slice, rows: slice) -> np.ndarray:
        out = []
        for q in range(queries.start, queries.stop):
            j, p = divmod(q, n_patches)
            box = tuple(int(v) for v in grid_boxes[j, p])
            if box not in unit:
                unit[box] = flat_unit(train_images, box)
            out.append(unit[box][rows] @ flat_unit(x0_hat[s, j], box))
        return np.asarray(out, dtype=np.float32)

    return block


def optimal_denoiser_block(
    train_images: np.ndarray,
    x0_hat: np.ndarray,
    steps: Sequence[int],
    target_ids: np.ndarray,
    alphas_cumprod: np.ndarray,
    draws: int,
    seed: int,
) -> BlockFn:
    """τ_i = mean_r [f^{−i} − f]: how much target j's f_t = mean((ε̂(x_t) − ε)²) rises when x_i
    leaves the empirical optimal denoiser of the training set (positive: x_i supports it).

    With x_t = √ᾱ x̂₀ + √(1−ᾱ) ε_r, posterior weights w = softmax_i(−‖x_t − √ᾱ x_i‖²/2(1−ᾱ)),
    m = Σ_i w_i x_i and ε̂ = (x_t − √ᾱ m)/√(1−ᾱ), removing x_i renormalises the rest:
    m^{−i} = (m − w_i x_i)/(1 − w_i). With u = x_t/√(1−ᾱ) − ε and c = √ᾱ/√(1−ᾱ),
    ‖ε̂^{−i} − ε‖² = ‖u‖² − 2c u·m^{−i} + c²‖m^{−i}‖², all from x_i·u, x_i·m and ‖x_i‖²:
    O(n·d) per draw, no n×d intermediate. Noise draws are seeded by (seed, target, t, r).
    Gradient-free; a principled pixel similarity (NDA-like, without patches).
    """
    train = train_images.reshape(len(train_images), -1).astype(np.float64)
    sq_train = (train**2).sum(1)
    d = train.shape[1]

    def one(s: int, j: int) -> np.ndarray:
        """Mean over the R draws of f^{−i} − f, for every i; the draws in one matrix product."""
        t = int(steps[s])
        a, sd = np.sqrt(alphas_cumprod[t]), np.sqrt(1.0 - alphas_cumprod[t])
        x0 = x0_hat[s, j].reshape(-1).astype(np.float64)
        eps = np.stack(
            [
                numpy_rng(seed, "optimal-denoiser", int(target_ids[j]), t, r).standard_normal(d)
                for r in range(draws)
            ]
        )  # (R, d)
        x_t = a * x0 + sd * eps
        logits = (a * (train @ x_t.T) - 0.5 * alphas_cumprod[t] * sq_train[:, None]) / sd**2
        w = np.exp(logits - logits.max(0))
        w /= w.sum(0)  # (n, R) posterior weights
        m = w.T @ train  # (R, d)
        u = x_t / sd - eps
        c = a / sd
        uu, um_full, mm_full = (u * u).sum(1), (u * m).sum(1), (m * m).sum(1)
        full = uu - 2 * c * um_full + c**2 * mm_full
        xu, xm = train @ u.T, train @ m.T  # (n, R)
        top = np.argmax(w, axis=0)  # w_top may be ≈ 1: renormalise without it explicitly
        keep = 1.0 - w
        keep[top, np.arange(draws)] = 1.0
        um = (um_full - w * xu) / keep
        mm = (mm_full - 2 * w * xm + w**2 * sq_train[:, None]) / keep**2
        rest = logits.copy()
        rest[top, np.arange(draws)] = -np.inf
        w_rest = np.exp(rest - rest.max(0))
        w_rest /= w_rest.sum(0)
        m_rest = w_rest.T @ train  # (R, d): the denoiser without each draw's top example
        um[top, np.arange(draws)] = (u * m_rest).sum(1)
        mm[top, np.arange(draws)] = (m_rest * m_rest).sum(1)
        loo = uu - 2 * c * um + c**2 * mm
        return ((loo - full) / d).mean(1)

    cache: dict[tuple[int, int], np.ndarray] = {}

    def block(s: int, targets: slice, rows: slice) -> np.ndarray:
        idx = range(*targets.indices(x0_hat.shape[1]))
        if any((s, j) not in cache for j in idx):
            cache.clear()
            cache.update({(s, j): one(s, j) for j in idx})
        return np.asarray([cache[s, j][rows] for j in idx], dtype=np.float32)

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
