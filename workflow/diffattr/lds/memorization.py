"""The memorization reference: f_t of each subset's empirical optimal denoiser (closed form)."""

from __future__ import annotations

import numpy as np


def memorization_loss(
    train: np.ndarray, masks: np.ndarray, x0: np.ndarray, alpha_bar: float, eps: np.ndarray
) -> np.ndarray:
    """The measurement f_t of the model that memorizes its subset: the empirical optimal denoiser.

    With x_t = √ᾱ x̂₀ + √(1−ᾱ) ε, the optimal ε-predictor for the training distribution uniform
    on S is ε̂*(x_t) = (x_t − √ᾱ E[x₀ | x_t]) / √(1−ᾱ), E[x₀ | x_t] = Σ_{i∈S} w_i x_i,
    w = softmax_i(−‖x_t − √ᾱ x_i‖² / 2(1−ᾱ)); the output is mean_r mean((ε̂*(x_t^r) − ε_r)²).
    No training, no attribution: a reference for how much of the subset models' behaviour is
    memorization (unconditional; pixel or latent space alike).
    ``train`` (n, ...), ``masks`` (m, n), ``x0`` (q, ...), ``eps`` (q, R, ...) → (q, m).
    """
    q, draws = eps.shape[:2]
    train = train.reshape(len(train), -1).astype(np.float64)
    x0 = x0.reshape(q, -1).astype(np.float64)
    eps = eps.reshape(q, draws, -1).astype(np.float64)
    a, s = np.sqrt(alpha_bar), np.sqrt(1.0 - alpha_bar)
    half_sq = 0.5 * alpha_bar * (train**2).sum(1)
    out = np.empty((q, len(masks)))
    for j in range(q):
        x_t = a * x0[j] + s * eps[j]  # (R, d)
        # −‖x_t − √ᾱ x_i‖² / 2(1−ᾱ) up to a term constant in i (softmax ignores it)
        logits = (a * x_t @ train.T - half_sq) / (1.0 - alpha_bar)
        for k, mask in enumerate(masks.astype(bool)):
            w = logits[:, mask]
            w = np.exp(w - w.max(1, keepdims=True))
            w /= w.sum(1, keepdims=True)
            eps_hat = (x_t - a * (w @ train[mask])) / s
            out[j, k] = np.mean((eps_hat - eps[j]) ** 2)
    return out
