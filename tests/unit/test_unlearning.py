"""Attribution by unlearning: zero steps score zero, the before/after losses share their draws,
the step-specific objective, reproducibility, and a planted memorized target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_unet
from diffattr.config import TrainConfig
from diffattr.draws import ModelDraws, TargetSet
from diffattr.features import train_draws
from diffattr.outputs import add_noise, predict_noise, row_outputs
from diffattr.unlearning import (
    UnlearningSettings,
    target_rows,
    training_losses,
    unlearn,
    unlearning_scores,
)

RNG = np.random.default_rng(11)
IMAGES = RNG.uniform(-1, 1, (6, 1, 8, 8)).astype(np.float32)
X0_HAT = RNG.uniform(-1, 1, (2, 2, 1, 8, 8)).astype(np.float32)


def scores(model, scheduler, steps=1, lr=1e-4, window=200):
    return unlearning_scores(
        ModelDraws(model, scheduler.alphas_cumprod, IMAGES, np.arange(6) * 7, 0, 1, 4),
        TargetSet(X0_HAT, [600, 100], np.array([4, 9])),
        UnlearningSettings(lr, steps, window, 8, 4, 2),
    )


def test_zero_unlearning_steps_give_exactly_zero_scores(scheduler):
    assert np.array_equal(scores(make_unet(torch.float32), scheduler, steps=0), np.zeros((2, 2, 6)))


def test_scores_are_reproducible_bit_for_bit(scheduler):
    model = make_unet(torch.float32)
    first, second = scores(model, scheduler), scores(model, scheduler)
    assert np.array_equal(first, second) and np.abs(first).max() > 0


def test_before_and_after_losses_use_the_same_draws(scheduler):
    """L_i by hand from its keyed draws equals ``training_losses`` for the model and for its
    unlearned copy, so τ_i is the change under common random numbers."""
    model = make_unet(torch.float32)
    abar = scheduler.alphas_cumprod
    ids = np.arange(6) * 7
    rows = target_rows(torch.from_numpy(X0_HAT[0, 1]), 600, 200, 8, 1000, 0, 9)
    fisher = {n: torch.ones_like(p, dtype=torch.float64) for n, p in model.named_parameters()}
    copy_ = unlearn(model, abar, fisher, 6, rows, 1e-3, 1)

    def by_hand(net, i):
        ts, eps, _, _ = train_draws([int(ids[i])], 4, 1000, (1, 8, 8), 0, "unlearning-eval-1")
        x0 = torch.from_numpy(IMAGES[i : i + 1]).expand(4, 1, 8, 8)
        with torch.no_grad():
            pred = predict_noise(net, add_noise(abar, x0, ts[0], eps[0]), ts[0])
        return ((pred - eps[0]) ** 2).flatten(1).mean(1).double().mean().item()

    before = training_losses(model, abar, IMAGES, ids, 4, 0, 1, batch_size=4)
    after = training_losses(copy_, abar, IMAGES, ids, 4, 0, 1, batch_size=4)
    for i in (0, 5):
        assert before[i] == pytest.approx(by_hand(model, i), rel=1e-6)
        assert after[i] == pytest.approx(by_hand(copy_, i), rel=1e-6)
    assert not np.allclose(before, after)


def test_a_single_timestep_window_is_the_step_specific_loss(scheduler):
    """window 1: every draw of the objective is at t itself, and the objective is f_t's loss."""
    model = make_unet(torch.float32)
    x0 = torch.from_numpy(X0_HAT[1, 0])
    rows = target_rows(x0, 100, 1, 8, 1000, 0, 4)
    assert rows["t"].tolist() == [100] * 8
    t, eps = rows["t"], rows["eps"]
    direct = (
        (
            (
                predict_noise(
                    model, add_noise(scheduler.alphas_cumprod, x0.expand(8, 1, 8, 8), t, eps), t
                )
                - eps
            )
            ** 2
        )
        .flatten(1)
        .mean(1)
    )
    torch.testing.assert_close(row_outputs(model, scheduler.alphas_cumprod, rows, "loss"), direct)
    wide = target_rows(x0, 100, 200, 64, 1000, 0, 4)["t"]
    assert wide.min() >= 0 and wide.max() <= 200 and len(set(wide.tolist())) > 20


@pytest.mark.slow
def test_a_memorized_training_image_ranks_first_when_it_is_the_target(scheduler):
    """Train a tiny UNet on 8 images until it memorizes them; unlearning one of them (objective
    over all timesteps, as AbU) raises that image's own loss most."""
    from diffattr.diffusion import train

    model = make_unet(torch.float32, seed=0).train()
    images = np.random.default_rng(0).uniform(-1, 1, (8, 1, 8, 8)).astype(np.float32)
    recipe = TrainConfig(steps=400, batch_size=8, lr=3e-3, warmup_steps=20, ema_decay=0.0)
    train(model, scheduler, torch.from_numpy(images), recipe, 0, progress=False)
    tau = unlearning_scores(
        ModelDraws(model, scheduler.alphas_cumprod, images, np.arange(8), 0, 0),
        TargetSet(images[[3, 6]][None], [300], np.array([0, 1])),
        UnlearningSettings(3e-5, 1, 2000, 64, 32, 4),
    )
    assert int(np.argmax(tau[0, 0])) == 3 and int(np.argmax(tau[0, 1])) == 6


def test_the_trajectory_free_variant_unlearns_the_final_image_on_the_uniform_grid(scheduler):
    from diffattr.unlearning import final_rows

    model = make_unet(torch.float32)
    final = RNG.uniform(-1, 1, (2, 1, 8, 8)).astype(np.float32)
    rows = final_rows(torch.from_numpy(final[0]), 4, 1000, 0, 4)
    assert rows["t"].tolist() == [0, 250, 500, 750]
    assert torch.equal(rows["x0"], torch.from_numpy(final[0]).expand(4, 1, 8, 8))
    tau = unlearning_scores(
        ModelDraws(model, scheduler.alphas_cumprod, IMAGES, np.arange(6) * 7, 0, 1, 4),
        TargetSet(X0_HAT, [600, 100], np.array([4, 9])),
        UnlearningSettings(1e-4, 1, 200, 4, 4, 2),
        final=final,
    )
    assert np.array_equal(tau[0], tau[1]) and np.abs(tau).max() > 0  # one per target, every step
    assert not np.array_equal(tau, scores(model, scheduler))
