"""Regime diagnostics against direct computations: near copies (d₁/d₂), agreement (Pearson),
the loss gap with its keyed draws, the regeneration from a shared x_t, and the verdict rule."""

import numpy as np
import torch
from diffattr.config import DiffusionConfig
from diffattr.lds import regime
from diffattr.models import build_scheduler


def test_near_copy_is_the_ratio_of_the_two_nearest_distances():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 1, 4, 4))
    samples = np.concatenate(
        [train[:5] + 0.01 * rng.normal(size=(5, 1, 4, 4)), rng.normal(size=(30, 1, 4, 4))]
    )
    got = regime.near_copy(samples, train)
    d = np.linalg.norm(samples.reshape(35, 1, -1) - train.reshape(1, 40, -1), axis=2)
    d.sort(1)
    assert np.array_equal(got, d[:, 0] < d[:, 1] / 3)
    assert got[:5].all() and got[5:].mean() < 0.5
    midway = (train[:1] + train[1:2]) / 2
    assert not regime.near_copy(midway, train[:2])[0]


def test_agreement_is_pearson_per_image():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 1, 3, 3)), rng.normal(size=(6, 1, 3, 3))
    expected = [np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(regime.agreement(a, b), expected)
    np.testing.assert_allclose(regime.agreement(a, 2 * a + 1), 1.0)
    np.testing.assert_allclose(regime.agreement(a, -a), -1.0)


class Zero(torch.nn.Module):
    """ε_θ ≡ c: the loss is mean((c − ε)²) over the keyed draws."""

    def __init__(self, c=0.0):
        super().__init__()
        self.c = c

    def forward(self, x, t):
        return type("Out", (), {"sample": torch.full_like(x, self.c)})()


def test_denoising_loss_uses_the_keyed_draws():
    from diffattr.seeding import generator

    alphas = build_scheduler(DiffusionConfig.from_dict({})).alphas_cumprod
    images = torch.zeros(5, 1, 4, 4)
    loss = regime.denoising_loss(Zero(0.5), alphas, images, 300, 3, (0, "k"))
    eps = torch.randn((15, 1, 4, 4), generator=generator(0, "k"))
    assert abs(loss - float(((0.5 - eps) ** 2).mean())) < 1e-6
    assert loss == regime.denoising_loss(Zero(0.5), alphas, images, 300, 3, (0, "k"))
    assert loss != regime.denoising_loss(Zero(0.5), alphas, images, 300, 3, (1, "k"))
    assert (
        regime.relative_gap(0.9, 1.0) == 0.09999999999999998
        or abs(regime.relative_gap(0.9, 1.0) - 0.1) < 1e-12
    )


def test_models_alike_regenerate_alike_and_the_noise_is_shared():
    scheduler = build_scheduler(DiffusionConfig.from_dict({}))
    x_t = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    a, b = regime.regenerate([Zero(), Zero()], scheduler, x_t, 500, 10, lambda j: (7, j))
    assert np.array_equal(a, b)
    (c,) = regime.regenerate([Zero(0.3)], scheduler, x_t, 500, 10, lambda j: (7, j))
    assert not np.array_equal(a, c) and regime.agreement(a, c).min() > 0.5


def test_verdict_rule():
    rule = regime.RULE
    assert regime.verdict(0.6, 0.0) == "memorizing"
    assert regime.verdict(0.0, 0.3) == "memorizing"
    assert regime.verdict(0.0, 0.0, reference_share=0.95) == "memorizing"
    assert regime.verdict(0.05, 0.01) == "generalizing"
    assert regime.verdict(0.05, 0.01, reference_share=0.3) == "generalizing"
    assert regime.verdict(0.2, 0.01) == "transitional"
    assert regime.verdict(0.05, 0.01, reference_share=np.nan) == "generalizing"
    assert "d₁" not in rule.text() and "near copies" in rule.text()


def test_report_section_takes_the_reference_share_only_where_the_truth_is_reliable():
    diag = {
        "steps": {
            "500": {
                "agreement": 0.9,
                "agreement_per_target": [0.9],
                "near_copies": 0.0,
                "near_copies_per_model": [0.0, 0.0],
                "loss_train": 0.1,
                "loss_held": 0.1,
                "loss_gap": 0.0,
            },
            "100": {
                "agreement": 0.99,
                "near_copies": 0.0,
                "loss_train": 0.2,
                "loss_held": 0.21,
                "loss_gap": 0.02,
            },
        },
        "models": ["a", "b"],
    }
    context = {
        "500": {"ceiling": 0.84, "reliability": 0.7},
        "100": {"ceiling": 0.6, "reliability": 0.36},
    }
    memo = {"500": {"spearman": 0.80}, "100": {"spearman": 0.55}}
    section = regime.report_section(diag, context, memo)
    assert section["steps"]["500"]["reference_share"] == 0.80 / 0.84
    assert section["steps"]["500"]["verdict"] == "memorizing"  # digits-lds at t = 500
    assert section["steps"]["100"]["reference_share"] is None  # reliability < 0.5
    assert section["steps"]["100"]["verdict"] == "generalizing"
    assert "agreement_per_target" not in section["steps"]["500"]
    assert section["rule"] == regime.RULE.text() and section["pair"] == ["a", "b"]
    without = regime.report_section(diag, context, None)
    assert without["steps"]["500"]["verdict"] == "generalizing"


def test_r_squared_of_a_denoisers_estimate():
    rng = np.random.default_rng(4)
    model = rng.normal(size=(3, 1, 4, 4))
    assert regime.r_squared(model, model) == 1.0
    assert abs(regime.r_squared(model, np.full_like(model, model.mean()))) < 1e-12
    noisy = model + 0.1 * rng.normal(size=model.shape)
    expected = 1 - ((model - noisy) ** 2).sum() / ((model - model.mean()) ** 2).sum()
    assert regime.r_squared(model, noisy) == expected
