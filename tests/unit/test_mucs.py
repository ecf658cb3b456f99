"""MUCS against a direct computation on a tiny model: one bounded ascent step by hand, the
frozen parameters, the truncated schedule and the skew score."""

import copy

import numpy as np
import torch
from conftest import make_unet
from diffattr import mucs
from diffattr.outputs import add_noise, predict_noise


def test_one_unlearning_step_and_the_scores_by_hand(scheduler):
    alphas = scheduler.alphas_cumprod
    model = make_unet()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(12, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    target = images[3] * 0.5
    settings = mucs.MucsSettings(lr=1e-2, max_steps=1, noises=6, tolerance=0.0)
    with torch.no_grad():  # the bound binds for half of the forget rows
        first = torch.Generator().manual_seed(5)  # the retain draws, then the forget draws
        torch.randint(12, (6,), generator=first), torch.randint(1000, (6,), generator=first)
        torch.randn((6, 1, 8, 8), generator=first, dtype=torch.float64)
        t_f = torch.randint(1000, (6,), generator=first)
        eps_f = torch.randn((6, 1, 8, 8), generator=first, dtype=torch.float64)
        x_t = add_noise(alphas, target.expand(6, 1, 8, 8), t_f, eps_f)
        limit = float(((predict_noise(model, x_t, t_f) - eps_f) ** 2).mean((1, 2, 3)).median())
    unlearned, taken = mucs.unlearn(
        model, alphas, images, target, None, limit, settings, torch.Generator().manual_seed(5)
    )
    assert taken == 1
    # by hand: the same draws, L = L_retain − λ·mean(min(ℓ_forget, L_null)), one AdamW step
    gen = torch.Generator().manual_seed(5)
    rows = torch.randint(12, (6,), generator=gen)
    t_r = torch.randint(1000, (6,), generator=gen)
    eps_r = torch.randn((6, 1, 8, 8), generator=gen, dtype=torch.float64)
    t_f = torch.randint(1000, (6,), generator=gen)
    eps_f = torch.randn((6, 1, 8, 8), generator=gen, dtype=torch.float64)
    hand = copy.deepcopy(model)

    def loss(m, x0, t, eps):
        return ((predict_noise(m, add_noise(alphas, x0, t, eps), t) - eps) ** 2).mean((1, 2, 3))

    moving = [p for name, p in hand.named_parameters() if mucs.unlearnable(name)]
    for p in hand.parameters():
        p.requires_grad_(False)
    for p in moving:
        p.requires_grad_(True)
    retain = loss(hand, images[rows], t_r, eps_r).mean()
    forgotten = loss(hand, target.expand(6, 1, 8, 8), t_f, eps_f).clamp(max=limit).mean()
    opt = torch.optim.AdamW(moving, lr=1e-2, weight_decay=0.0)
    (retain - 0.2 * forgotten).backward()
    opt.step()
    for (name, a), b in zip(unlearned.named_parameters(), hand.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)
        original = dict(model.named_parameters())[name]
        assert torch.equal(a, original) != mucs.unlearnable(name), name  # frozen ones stay

    # the skew score with common draws on a truncated schedule
    t = mucs.inference_timesteps(1000, 7, 0.7, None)
    assert t[0] == 999 and t.min() >= 299 and len(t) == 7  # the noisiest 70 %
    eps = torch.randn((7, 1, 8, 8), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    lo = mucs.inference_losses(model, alphas, images, t, eps, batch=10)
    lu = mucs.inference_losses(unlearned, alphas, images, t, eps, batch=10)
    for i in (0, 7):
        direct = [
            float(loss(unlearned, images[i : i + 1], t[r : r + 1], eps[r : r + 1]))
            for r in range(7)
        ]
        np.testing.assert_allclose(lu[i].numpy(), direct, rtol=1e-10)
    scores = mucs.skew_scores(lu, lo, 1e-3)
    expected = ((lu - lo) / (lu + lo + 1e-3)).mean(1).numpy()
    np.testing.assert_allclose(scores, expected)
    assert torch.equal(mucs.inference_timesteps(1000, 4, 0.7, 300), torch.full((4,), 300))


def test_unlearning_stops_at_the_bound_and_frozen_names():
    names = [
        "conv_in.weight",
        "time_embedding.linear_1.weight",
        "down_blocks.0.resnets.0.conv1.weight",
        "down_blocks.0.resnets.0.conv1.bias",
        "down_blocks.0.resnets.0.norm1.weight",
        "down_blocks.0.resnets.0.time_emb_proj.weight",
        "down_blocks.1.attentions.0.to_q.weight",
        "down_blocks.0.downsamplers.0.conv.weight",
        "conv_out.weight",
    ]
    moving = [n for n in names if mucs.unlearnable(n)]
    assert moving == [
        "down_blocks.0.resnets.0.conv1.weight",
        "down_blocks.0.downsamplers.0.conv.weight",
    ]


def test_a_reached_bound_takes_no_step(scheduler):
    model = make_unet()
    images = torch.zeros(4, 1, 8, 8, dtype=torch.float64)
    settings = mucs.MucsSettings(noises=4)
    same, taken = mucs.unlearn(
        model,
        scheduler.alphas_cumprod,
        images,
        images[0],
        200,
        1e-9,
        settings,
        torch.Generator().manual_seed(0),
    )
    assert taken == 0
    assert all(
        torch.equal(a, b) for a, b in zip(same.parameters(), model.parameters(), strict=True)
    )


def test_member_scores_compose_unlearning_inference_and_skew(scheduler):
    """mucs_scores = for each target: unlearn with its keyed draws, inference losses with the
    step's keyed noise, skew against the original; mucs repeats the final image's at every step."""
    from diffattr.draws import ModelDraws, TargetSet
    from diffattr.seeding import generator

    alphas = scheduler.alphas_cumprod
    g = torch.Generator().manual_seed(1)
    images = torch.rand(10, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    x0_hat = (torch.rand(2, 3, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1).numpy()
    d = ModelDraws(make_unet(), alphas, images.numpy(), np.arange(10), 7, 1)
    targets = TargetSet(x0_hat, [600, 200], np.array([4, 9, 11]))
    settings = mucs.MucsSettings(max_steps=2, noises=5, null_batches=2)
    untrained = make_unet(seed=3)
    got = mucs.mucs_scores(d, targets, settings, untrained)
    limit = mucs.null_loss(untrained, alphas, images, settings, generator(7, "mucs", 1, "null"))
    t = mucs.inference_timesteps(1000, 5, 0.7, 200)
    eps = torch.randn((5, 1, 8, 8), generator=generator(7, "mucs", 1, "eps", 200))
    original = mucs.inference_losses(d.model, alphas, images, t, eps)
    gen = generator(7, "mucs", 1, "unlearn", 9, 200)
    forgot, _ = mucs.unlearn(
        d.model, alphas, images, torch.as_tensor(x0_hat[1, 1]), 200, limit, settings, gen
    )
    expected = mucs.skew_scores(
        mucs.inference_losses(forgot, alphas, images, t, eps), original, 1e-3
    )
    np.testing.assert_array_equal(got[1, 1], expected)
    finals = x0_hat[0]
    final = mucs.mucs_scores(d, targets, settings, untrained, finals)
    assert final.shape == (2, 3, 10) and np.array_equal(final[0], final[1])
    assert not np.array_equal(final[0], got[0])
