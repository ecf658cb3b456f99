"""The local empirical denoiser and each training example's leave-one-out effect under it.

At noise level t (x_t = √ᾱ x̂₀ + √(1−ᾱ) ε), the local denoiser estimates each pixel q from the
p×p patch of x_t around q alone (Kamb & Ganguli, ICML 2025; Niedoba et al., ICML 2025):

    m(q) = Σ_c w_c(q) v_c,   w(q) = softmax_c(−‖P_q x_t − √ᾱ P_c‖² / 2(1−ᾱ)),

over candidate training patches P_c with centre values v_c: the patch of every training image at
the same position (``equivariant=False``: locality only) or at every position (``True``: the
equivariant local score machine, ELS). Patches are zero-padded at the border. The ε-prediction
is ε̂(q) = (x_t(q) − √ᾱ m(q)) / √(1−ᾱ) and the target's output f_t = mean_q ‖ε̂(q) − ε(q)‖²/C.

Attribution (as ``scoring.optimal_denoiser_block`` defines it for the whole image): τ_i =
mean_r [f^{−i} − f], exact leave-one-out — removing image i drops all its candidates from every
pixel's softmax: m^{−i}(q) = (m(q) − S_i(q)) / (1 − W_i(q)) with W_i(q) = Σ_{c∈i} w_c(q) and
S_i(q) = Σ_{c∈i} w_c(q) v_c; where one image holds almost all the weight (1 − W ≈ 0) its
removal is recomputed from the logits without it. With locality only and a patch covering the
whole image (p ≥ 2·max(H, W) − 1) this is the whole-image empirical denoiser:
``local_denoiser_block`` then calls ``optimal_denoiser_block`` itself (bit for bit).

Cost per (target, step, draw): locality O(n·C·H·W) time, pixels in blocks so that memory is
O(n·block); equivariant O(n·(HW)²·p²C) time and O(n·HW·block) memory — small images only
(8×8, 16×16 at n ≲ 10⁴); at CIFAR scale the locality variant (≈ 2·10⁸ flops per draw at
n = 50 000) is the one that fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .scoring import BlockFn, optimal_denoiser_block
from .seeding import numpy_rng


def covers_image(patch: int, shape: Sequence[int]) -> bool:
    """A p×p window centred anywhere covers the whole (H, W) image."""
    return patch >= 2 * max(shape[-2:]) - 1


def box_sum(a: np.ndarray, patch: int) -> np.ndarray:
    """Σ of ``a`` (..., H, W) over the p×p window centred at each pixel (zeros outside)."""
    h = patch // 2
    padded = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(h + 1, h), (h + 1, h)])
    c = padded.cumsum(-1).cumsum(-2)
    rows, cols = a.shape[-2:]
    return (
        c[..., patch:, patch:][..., :rows, :cols]
        - c[..., :-patch, patch:][..., :rows, :cols]
        - c[..., patch:, :-patch][..., :rows, :cols]
        + c[..., :-patch, :-patch][..., :rows, :cols]
    )


def patches_of(images: np.ndarray, patch: int) -> np.ndarray:
    """Zero-padded p×p patches at every pixel: (..., C, H, W) → (..., H·W, C·p·p)."""
    h = patch // 2
    c, rows, cols = images.shape[-3:]
    padded = np.pad(images, [(0, 0)] * (images.ndim - 2) + [(h, h), (h, h)])
    view = np.lib.stride_tricks.sliding_window_view(padded, (patch, patch), axis=(-2, -1))
    view = np.moveaxis(view, -5, -3)  # (..., H, W, C, p, p)
    return view.reshape(*images.shape[:-3], rows * cols, c * patch * patch)


def _weights(logits: np.ndarray) -> np.ndarray:
    """Softmax over the candidate axes (all but the last: the pixels)."""
    flat = logits.reshape(-1, logits.shape[-1])
    w = np.exp(flat - flat.max(0))
    return (w / w.sum(0)).reshape(logits.shape)


def loo_losses(logits: np.ndarray, values: np.ndarray, u: np.ndarray, c: float) -> np.ndarray:
    """Σ_q ‖u(q) − c·m^{−i}(q)‖² for every training image i, and for none (last entry).

    ``logits`` (n, K, Q): candidate k of image i for pixel q (K = 1: locality); ``values``
    (n, K, Q, C): the candidates' centre values; ``u`` (Q, C) = x_t/√(1−ᾱ) − ε; c = √ᾱ/√(1−ᾱ).
    """
    q = logits.shape[-1]
    w = _weights(logits)
    S = np.einsum("nkq,nkqc->nqc", w, values)  # (n, Q, C)
    W = w.sum(1)  # (n, Q)
    m = S.sum(0)  # (Q, C)
    top = W.argmax(0)  # (Q,)
    keep = 1.0 - W
    keep[top, np.arange(q)] = 1.0
    m_loo = (m[None] - S) / keep[..., None]  # (n, Q, C); wrong at the tops, fixed below
    rest = logits.copy()
    rest[top, :, np.arange(q)] = -np.inf
    m_rest = np.einsum("nkq,nkqc->qc", _weights(rest), values)
    m_loo[top, np.arange(q)] = m_rest
    loo = ((u[None] - c * m_loo) ** 2).sum((1, 2))
    full = ((u - c * m) ** 2).sum()
    return np.append(loo, full)


def candidate_blocks(train, x_t, alpha_bar: float, patch: int, equivariant: bool, block: int):
    """Per block of pixels: (pixels, logits (n, K, B), values (n, K, B, C)) — the candidates of
    every pixel of the block for the noisy image ``x_t`` (C, H, W), float64."""
    n, channels, rows, cols = train.shape
    a, sd = np.sqrt(alpha_bar), np.sqrt(1.0 - alpha_bar)
    centre = train.reshape(n, channels, rows * cols).transpose(0, 2, 1)  # (n, Q, C)
    if equivariant:
        bank = patches_of(train, patch).reshape(n * rows * cols, -1)  # (n·Q', P)
        bank_sq = (bank**2).sum(1)
        queries = patches_of(x_t, patch)  # (Q, P)
        for lo in range(0, rows * cols, block):
            pixels = slice(lo, min(rows * cols, lo + block))
            logits = a * bank @ queries[pixels].T - 0.5 * alpha_bar * bank_sq[:, None]
            logits = (logits / sd**2).reshape(n, rows * cols, -1)  # (n, K = Q', B)
            yield pixels, logits, np.broadcast_to(centre[:, :, None, :], (*logits.shape, channels))
        return
    band, h = max(1, block // cols), patch // 2  # locality: image rows per block
    for y0 in range(0, rows, band):
        y1 = min(rows, y0 + band)
        lo, hi = max(0, y0 - h), min(rows, y1 + h)  # the rows their windows reach
        part = train[:, :, lo:hi]
        dot = box_sum((part * x_t[:, lo:hi]).sum(1), patch)[:, y0 - lo : y1 - lo]
        sq = box_sum((part**2).sum(1), patch)[:, y0 - lo : y1 - lo]
        logits = ((a * dot - 0.5 * alpha_bar * sq) / sd**2).reshape(n, 1, -1)
        pixels = slice(y0 * cols, y1 * cols)
        yield pixels, logits, centre[:, None, pixels]  # values (n, 1, B, C)


def local_estimate(
    train: np.ndarray,
    x_t: np.ndarray,
    alpha_bar: float,
    patch: int,
    equivariant: bool = False,
    block: int = 64,
) -> np.ndarray:
    """The local denoiser's x̂₀ = m (C, H, W) of ``x_t`` (C, H, W) under ``train``."""
    train, x_t = train.astype(np.float64), x_t.astype(np.float64)
    channels, rows, cols = x_t.shape
    m = np.empty((rows * cols, channels))
    for pixels, logits, values in candidate_blocks(
        train, x_t, alpha_bar, patch, equivariant, block
    ):
        m[pixels] = np.einsum("nkq,nkqc->qc", _weights(logits), values)
    return m.T.reshape(channels, rows, cols)


def local_scores(
    train: np.ndarray,
    x0: np.ndarray,
    eps: np.ndarray,
    alpha_bar: float,
    patch: int,
    equivariant: bool = False,
    block: int = 64,
) -> np.ndarray:
    """τ_i = mean_r [f^{−i} − f] of one target: ``train`` (n, C, H, W), ``x0`` (C, H, W),
    ``eps`` (R, C, H, W) the draws; pixels in blocks of ``block`` (memory ∝ n·block)."""
    n, channels, rows, cols = train.shape
    d = channels * rows * cols
    a, sd = np.sqrt(alpha_bar), np.sqrt(1.0 - alpha_bar)
    train = train.astype(np.float64)
    total = np.zeros(n)
    for e in eps.astype(np.float64):
        x_t = a * x0.astype(np.float64) + sd * e
        u = (x_t / sd - e).reshape(channels, -1).T  # (Q, C)
        losses = np.zeros(n + 1)
        for pixels, logits, values in candidate_blocks(
            train, x_t, alpha_bar, patch, equivariant, block
        ):
            losses += loo_losses(logits, values, u[pixels], a / sd)
        total += (losses[:n] - losses[n]) / d
    return total / len(eps)


@dataclass(frozen=True)
class PatchSchedule:
    """The patch size at each attribution step, and whether candidates come from every position
    (equivariant) or the same one (locality only)."""

    sizes: tuple[int, ...]
    equivariant: bool = False


def local_denoiser_block(
    train_images: np.ndarray,
    x0_hat: np.ndarray,
    steps: Sequence[int],
    target_ids: np.ndarray,
    alphas_cumprod: np.ndarray,
    draws: int,
    seed: int,
    schedule: PatchSchedule,
) -> BlockFn:
    """Scores of the local denoiser with patch size ``schedule.sizes[s]`` at step s, with the
    optimal denoiser's noise draws (keyed by seed, target, t, r: the same ε for both)."""
    patch_sizes, equivariant = schedule.sizes, schedule.equivariant
    whole = optimal_denoiser_block(
        train_images, x0_hat, steps, target_ids, alphas_cumprod, draws, seed
    )
    shape = train_images.shape[1:]
    cache: dict[tuple[int, int], np.ndarray] = {}

    def one(s: int, j: int) -> np.ndarray:
        t = int(steps[s])
        eps = np.stack(
            [
                numpy_rng(seed, "optimal-denoiser", int(target_ids[j]), t, r).standard_normal(
                    int(np.prod(shape))
                )
                for r in range(draws)
            ]
        ).reshape(draws, *shape)
        return local_scores(
            train_images, x0_hat[s, j], eps, alphas_cumprod[t], patch_sizes[s], equivariant
        )

    def block(s: int, targets: slice, rows: slice) -> np.ndarray:
        if covers_image(patch_sizes[s], shape) and not equivariant:
            return whole(s, targets, rows)
        idx = range(*targets.indices(x0_hat.shape[1]))
        if any((s, j) not in cache for j in idx):
            cache.clear()
            cache.update({(s, j): one(s, j) for j in idx})
        return np.asarray([cache[s, j][rows] for j in idx], dtype=np.float32)

    return block
