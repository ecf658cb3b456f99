"""The ridge of the TRAK kernel, in one place: the scale-free λ and its absolute value, and the LDS
predictions of ridge scores for a whole grid of λ at once.

λ is relative to the mean eigenvalue of ΦᵀΦ: λ_abs = λ · tr(ΦᵀΦ) / k, so the same λ means the
same regularisation whatever the feature scale, dimension or dataset size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def absolute_ridge(lam: float, trace: float, dim: int) -> float:
    """λ_abs = λ · tr(ΦᵀΦ) / k (``trace`` of ΦᵀΦ or of ΦΦᵀ, which agree)."""
    return lam * trace / dim


def ridge_predictions(
    blocks: Iterable[tuple[int, np.ndarray]],
    psi: np.ndarray,
    lambdas: Sequence[float],
    masks: np.ndarray,
) -> np.ndarray:
    """LDS predictions −M τ_λ for several relative ridges without forming the (n-sized) scores.

    τ_λ = Φ(ΦᵀΦ + λ_abs I)⁻¹ψᵀ, so with ΦᵀΦ = V diag(e) Vᵀ:
    −M τ_λ = −(MΦV) diag(1/(e + λ_abs)) (ψV)ᵀ. Φ arrives as (first row, rows) blocks and is
    never held whole: memory O(k² + (m + q)·k), one k × k eigendecomposition.
    ``psi`` (q, k), ``masks`` (m, n) → (len(lambdas), q, m).
    """
    k = psi.shape[1]
    gram = np.zeros((k, k))
    m_phi = np.zeros((masks.shape[0], k))
    for lo, block in blocks:
        block = np.asarray(block, dtype=np.float64)
        gram += block.T @ block
        m_phi += masks[:, lo : lo + len(block)].astype(np.float64) @ block
    e, v = np.linalg.eigh(gram)
    e = np.clip(e, 0.0, None)
    left = psi.astype(np.float64) @ v  # (q, k)
    right = m_phi @ v  # (m, k)
    return np.stack([-(left / (e + absolute_ridge(lam, e.sum(), k))) @ right.T for lam in lambdas])
