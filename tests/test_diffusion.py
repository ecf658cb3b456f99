import torch
from conftest import make_unet
from diffattr.diffusion import (
    TrainConfig,
    denoise,
    initial_noise,
    model_predictor,
    swapped_predictor,
    train,
)
from diffattr.seeding import generator


def test_x0_hat_matches_formula_and_diffusers(scheduler):
    """x̂_0^t = (x_t − √(1−ᾱ_t) ε_θ(x_t,t)) / √ᾱ_t, clipped like pred_original_sample."""
    model = make_unet(torch.float32)
    gens = [generator(0, "s", j) for j in range(3)]
    x = initial_noise((1, 8, 8), gens)
    traj = denoise(x, scheduler, 20, model_predictor(model), gens, record=[950, 500, 0])
    assert traj.steps == [950, 500, 0]
    abar = scheduler.alphas_cumprod
    for s, t in enumerate(traj.steps):
        eps = model_predictor(model)(traj.x_t[s], t)
        formula = (traj.x_t[s] - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
        torch.testing.assert_close(traj.x0_hat[s], formula.clamp(-1, 1), rtol=1e-5, atol=1e-5)


def test_trajectory_independent_of_batch(scheduler):
    model = make_unet(torch.float32)
    gens = lambda ids: [generator(0, "s", j) for j in ids]  # noqa: E731
    both = denoise(
        initial_noise((1, 8, 8), gens([0, 1])), scheduler, 10, model_predictor(model), gens([0, 1])
    )
    alone = denoise(
        initial_noise((1, 8, 8), gens([1])), scheduler, 10, model_predictor(model), gens([1])
    )
    torch.testing.assert_close(both.final[1], alone.final[0], rtol=1e-5, atol=1e-6)


def test_resuming_from_x_t_with_same_model_reproduces(scheduler):
    """Resampling from a recorded x_t with a swapped-in identical model changes nothing."""
    model = make_unet(torch.float32)
    gens = lambda: [generator(0, "r", j) for j in range(2)]  # noqa: E731
    traj = denoise(
        initial_noise((1, 8, 8), gens()),
        scheduler,
        10,
        model_predictor(model),
        gens(),
        record=[500],
    )
    same = swapped_predictor(model_predictor(model), model_predictor(model), [500, 400])
    a = denoise(traj.x_t[0], scheduler, 10, same, gens(), start_at=500)
    b = denoise(traj.x_t[0], scheduler, 10, model_predictor(model), gens(), start_at=500)
    assert torch.equal(a.final, b.final)


def test_training_is_seeded_and_subset_shares_noise(scheduler):
    images = torch.rand(40, 1, 8, 8) * 2 - 1
    recipe = TrainConfig(steps=5, batch_size=8, warmup_steps=1, ema_decay=0.9, log_every=5)

    def run(positions=None):
        model = make_unet(torch.float32)
        losses = train(
            model, scheduler, images, recipe, seed=7, positions=positions, progress=False
        )
        return model, losses

    m1, l1 = run()
    m2, l2 = run()
    assert l1 == l2
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)
    _, l3 = run(torch.arange(20))
    assert l3 != l1
    assert len(l3) == 1 and l3[0] > 0
