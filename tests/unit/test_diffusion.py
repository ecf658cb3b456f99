import copy

import torch
from conftest import make_unet
from diffattr.config import TrainConfig
from diffattr.diffusion import (
    WeightAverage,
    denoise,
    forward_trajectory,
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


def test_an_image_target_is_forward_diffused_with_keyed_noise(scheduler):
    """x_t = add_noise(x₀, ε, t) with ε the image's own keyed draws (one per step, in order);
    x̂₀ᵗ is DDPMScheduler.step's pred_original_sample from that x_t; a rerun is identical."""
    model = make_unet(torch.float32)
    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    gens = lambda: [generator(0, "extra-target", "set", j) for j in range(2)]  # noqa: E731
    traj = forward_trajectory(x0, scheduler, 20, [500, 950, 0], model_predictor(model), gens())
    assert traj.steps == [950, 500, 0] and torch.equal(traj.final, x0)
    draws = gens()
    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(20)
    for s, t in enumerate(traj.steps):
        eps = torch.stack([torch.randn((1, 8, 8), generator=g) for g in draws])
        x_t = scheduler.add_noise(x0, eps, torch.full((2,), t, dtype=torch.long))
        assert torch.equal(traj.x_t[s], x_t)
        out = sched.step(model_predictor(model)(x_t, t), t, x_t)
        torch.testing.assert_close(traj.x0_hat[s], out.pred_original_sample, rtol=0, atol=1e-6)
    again = forward_trajectory(x0, scheduler, 20, [500, 950, 0], model_predictor(model), gens())
    assert torch.equal(again.x_t, traj.x_t) and torch.equal(again.x0_hat, traj.x0_hat)


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


def test_resuming_from_the_recorded_x_t_reproduces_the_trajectory(scheduler):
    """x_t is recorded before the step at t: resuming there with the generators in the state they
    had at t gives the trajectory's own final image, bit for bit."""
    model = make_unet(torch.float32)
    gens = [generator(0, "r", j) for j in range(2)]
    states = {}
    base = model_predictor(model)

    def capturing(x, t):
        if t == 500:
            states["at_500"] = [g.get_state() for g in gens]
        return base(x, t)

    traj = denoise(initial_noise((1, 8, 8), gens), scheduler, 10, capturing, gens, record=[500])
    resumed_gens = [torch.Generator() for _ in gens]
    for g, state in zip(resumed_gens, states["at_500"], strict=True):
        g.set_state(state)
    resumed = denoise(traj.x_t[0], scheduler, 10, base, resumed_gens, start_at=500)
    assert torch.equal(resumed.final, traj.final)
    fresh = denoise(
        traj.x_t[0], scheduler, 10, base, [generator(1, "r", j) for j in range(2)], start_at=500
    )
    assert not torch.equal(fresh.final, traj.final)  # the noise after t matters


def test_swapped_predictor_runs_the_other_model_exactly_in_its_window(scheduler):
    """Against a hand-written DDPM loop that picks the model per timestep."""
    import copy

    first, second = make_unet(torch.float32, 0), make_unet(torch.float32, 1)
    x = initial_noise((1, 8, 8), [generator(0, "x", j) for j in range(2)])
    window = [500, 400]
    swapped = swapped_predictor(model_predictor(first), model_predictor(second), window)
    got = denoise(x, scheduler, 10, swapped, [generator(0, "n", j) for j in range(2)], start_at=600)
    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(10)
    gens = [generator(0, "n", j) for j in range(2)]
    ref = x
    for t in [int(t) for t in sched.timesteps if t <= 600]:
        eps = model_predictor(second if t in window else first)(ref, t)
        ref = sched.step(eps, t, ref, generator=gens).prev_sample
    assert torch.equal(got.final, ref)
    alone = denoise(
        x,
        scheduler,
        10,
        model_predictor(first),
        [generator(0, "n", j) for j in range(2)],
        start_at=600,
    )
    assert not torch.equal(got.final, alone.final)


def test_training_is_seeded(scheduler):
    """The same seed gives the same losses and weights (the subset case, same (t, ε) with other
    images, is tested in test_stages)."""
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
    assert l3 != l1  # other images, other losses


def test_the_weight_average_is_diffusers_ema_bit_for_bit():
    """WeightAverage against diffusers' EMAModel on the same parameter updates, with a frozen
    parameter (copied, not averaged) and steps on both sides of where the ramp k / (k + 9)
    reaches the decay (k = 9 for 0.5)."""
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    model = make_unet(torch.float32)
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    ours = WeightAverage(model.parameters(), decay=0.5)
    theirs = EMAModel(model.parameters(), decay=0.5)
    for _ in range(20):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        ours.step(model.parameters())
        theirs.step(model.parameters())
    ours_model, theirs_model = copy.deepcopy(model), copy.deepcopy(model)
    ours.copy_to(ours_model.parameters())
    theirs.copy_to(theirs_model.parameters())
    pairs = zip(ours_model.parameters(), theirs_model.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    averaged = list(ours_model.parameters())
    assert torch.equal(averaged[0], frozen)  # the frozen parameter is the model's own
    assert not torch.equal(averaged[1], list(model.parameters())[1])  # the others are averages
