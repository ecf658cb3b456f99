"""The local (patch) empirical denoiser's leave-one-out scores against a brute-force numpy
computation (loops over pixels, candidates and removed images), both variants; equal to the
whole-image optimal denoiser when the patch covers the image."""

import dataclasses

import numpy as np
import pytest
from diffattr.local_denoiser import (
    PatchSchedule,
    box_sum,
    covers_image,
    local_denoiser_block,
    local_estimate,
    local_scores,
    patches_of,
)
from diffattr.scoring import optimal_denoiser_block


def brute_f(train, x_t, e, ab, patch, equivariant, drop=None, estimate=None):
    """f_t of the local denoiser built from every image but ``drop``, pixel by pixel (its x̂₀
    into ``estimate`` when given)."""
    n, _, H, W = train.shape
    h = patch // 2
    pad = lambda img: np.pad(img, [(0, 0), (h, h), (h, h)])  # noqa: E731
    xp, tp = pad(x_t), [pad(x) for x in train]
    a, sd = np.sqrt(ab), np.sqrt(1 - ab)
    total = 0.0
    for y in range(H):
        for x in range(W):
            query = xp[:, y : y + patch, x : x + patch]
            logits, values = [], []
            for i in range(n):
                if i == drop:
                    continue
                spots = (
                    [(yy, xx) for yy in range(H) for xx in range(W)] if equivariant else [(y, x)]
                )
                for yy, xx in spots:
                    cand = tp[i][:, yy : yy + patch, xx : xx + patch]
                    logits.append(-((query - a * cand) ** 2).sum() / (2 * sd**2))
                    values.append(train[i][:, yy, xx])
            logits = np.array(logits)
            w = np.exp(logits - logits.max())
            w /= w.sum()
            m = (w[:, None] * np.array(values)).sum(0)
            if estimate is not None:
                estimate[:, y, x] = m
            eps_hat = (x_t[:, y, x] - a * m) / sd
            total += ((eps_hat - e[:, y, x]) ** 2).sum()
    return total / train[0].size


@pytest.mark.parametrize("equivariant", [False, True])
@pytest.mark.parametrize(("patch", "ab", "block"), [(3, 0.5, 5), (5, 0.2, 8), (3, 0.995, 16)])
def test_leave_one_out_scores_equal_brute_force(equivariant, patch, ab, block):
    rng = np.random.default_rng(patch)
    train = rng.uniform(-1, 1, (5, 2, 4, 4))
    x0 = rng.uniform(-1, 1, (2, 4, 4))
    eps = rng.standard_normal((2, 2, 4, 4))
    got = local_scores(train, x0, eps, ab, patch, equivariant, block)  # pixels or rows per block
    expected = np.zeros(5)
    for e in eps:
        x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * e
        full = brute_f(train, x_t, e, ab, patch, equivariant)
        expected += [brute_f(train, x_t, e, ab, patch, equivariant, i) - full for i in range(5)]
    np.testing.assert_allclose(got, expected / len(eps), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("equivariant", [False, True])
def test_the_local_estimate_is_the_posterior_mean_per_pixel(equivariant):
    rng = np.random.default_rng(3)
    train = rng.uniform(-1, 1, (6, 2, 5, 4))
    x_t = rng.normal(size=(2, 5, 4))
    expected = np.zeros_like(x_t)
    brute_f(train, x_t, np.zeros_like(x_t), 0.4, 3, equivariant, estimate=expected)
    got = local_estimate(train, x_t, 0.4, 3, equivariant, block=6)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    whole = local_estimate(train, x_t, 0.4, 9)  # the empirical optimal denoiser's Σ w_i x_i
    logits = -((x_t[None] - np.sqrt(0.4) * train) ** 2).sum((1, 2, 3)) / (2 * 0.6)
    w = np.exp(logits - logits.max())
    np.testing.assert_allclose(whole, np.tensordot(w / w.sum(), train, 1), rtol=1e-10)


def test_peaked_posteriors_take_the_explicit_path():
    """Small noise: one image holds all of a pixel's weight (1 − W underflows to 0)."""
    rng = np.random.default_rng(0)
    train = rng.uniform(-1, 1, (4, 1, 3, 3))
    x0, eps = train[2, :], rng.standard_normal((1, 1, 3, 3))
    got = local_scores(train, x0, eps, 0.99999, 3)
    x_t = np.sqrt(0.99999) * x0 + np.sqrt(1e-5) * eps[0]
    full = brute_f(train, x_t, eps[0], 0.99999, 3, False)
    expected = [brute_f(train, x_t, eps[0], 0.99999, 3, False, i) - full for i in range(4)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.isfinite(got).all() and got.argmax() == 2


def test_box_sums_and_patches():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 5, 6))
    for p in (1, 3, 5, 11):
        h = p // 2
        naive = np.zeros_like(a)
        for y in range(5):
            for x in range(6):
                naive[:, y, x] = a[:, max(0, y - h) : y + h + 1, max(0, x - h) : x + h + 1].sum(
                    (1, 2)
                )
        np.testing.assert_allclose(box_sum(a, p), naive)
    img = rng.normal(size=(2, 4, 4))
    patches = patches_of(img, 3)  # (16, 18): pixel (1, 2)'s patch is the 3×3 around it
    np.testing.assert_array_equal(patches[1 * 4 + 2].reshape(2, 3, 3), img[:, 0:3, 1:4])
    assert covers_image(7, (4, 4)) and not covers_image(5, (4, 4))


def test_a_patch_covering_the_image_is_the_optimal_denoiser():
    rng = np.random.default_rng(2)
    train = rng.uniform(-1, 1, (6, 1, 4, 4)).astype(np.float32)
    x0_hat = rng.uniform(-1, 1, (2, 3, 1, 4, 4)).astype(np.float32)
    alphas = np.linspace(0.999, 0.01, 1000)
    steps, ids = [700, 200], np.array([3, 8, 9])
    whole = optimal_denoiser_block(train, x0_hat, steps, ids, alphas, 4, 0)
    local = local_denoiser_block(train, x0_hat, steps, ids, alphas, 4, 0, PatchSchedule((7, 7)))
    for s in range(2):  # the block calls the optimal denoiser itself: bit for bit
        assert np.array_equal(
            local(s, slice(0, 3), slice(0, 6)), whole(s, slice(0, 3), slice(0, 6))
        )
    # and the general path agrees with it (same draws)
    eps = np.stack(
        [
            __import__("diffattr.seeding", fromlist=["numpy_rng"])
            .numpy_rng(0, "optimal-denoiser", 8, 200, r)
            .standard_normal(16)
            for r in range(4)
        ]
    ).reshape(4, 1, 4, 4)
    general = local_scores(train, x0_hat[1, 1], eps, alphas[200], 7)
    np.testing.assert_allclose(general, whole(1, slice(1, 2), slice(0, 6))[0], rtol=1e-4, atol=1e-7)
    smaller = local_denoiser_block(train, x0_hat, steps, ids, alphas, 4, 0, PatchSchedule((3, 3)))
    assert not np.allclose(smaller(1, slice(1, 2), slice(0, 6)), whole(1, slice(1, 2), slice(0, 6)))


def test_the_plugin_scores_its_patch_grid_and_rescores_at_the_tuned_sizes():
    """The score job's candidates hold the scores at every grid size (one size at every step);
    the settings an LDS tuned per step give each step its own size's scores."""
    from diffattr.config import LocalDenoiserConfig
    from diffattr.methods import get_method
    from diffattr.methods.base import ScoringContext

    rng = np.random.default_rng(4)
    train = rng.uniform(-1, 1, (5, 1, 4, 4)).astype(np.float32)
    x0_hat = rng.uniform(-1, 1, (2, 2, 1, 4, 4)).astype(np.float32)
    alphas = np.linspace(0.999, 0.01, 1000)
    steps, ids = [600, 100], np.array([1, 7])
    method = get_method("local_denoiser")
    settings = LocalDenoiserConfig(patch=(3,), grid=(5, 3, 7))
    ctx = ScoringContext(train, steps, ids, x0_hat, 0, alphas_cumprod=alphas, draws=3)
    ctx = dataclasses.replace(ctx, settings=settings)
    grid = method.candidates(ctx)
    assert grid.setting == "patch" and grid.values == [3.0, 5.0, 7.0]
    for v, size in enumerate((3, 5, 7)):
        direct = local_denoiser_block(
            train, x0_hat, steps, ids, alphas, 3, 0, PatchSchedule((size, size))
        )
        for s in range(2):
            np.testing.assert_array_equal(grid.scores[v, s], direct(s, slice(0, 2), slice(0, 5)))
    tuned = method.with_tuned(settings, [7.0, 3.0])
    blocks = method.blocks(dataclasses.replace(ctx, settings=tuned))
    np.testing.assert_array_equal(blocks(0, slice(0, 2), slice(0, 5)), grid.at(7.0)[0])
    np.testing.assert_array_equal(blocks(1, slice(0, 2), slice(0, 5)), grid.at(3.0)[1])
    assert method.candidates(dataclasses.replace(ctx, settings=LocalDenoiserConfig())) is None
