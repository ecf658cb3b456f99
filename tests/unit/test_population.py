"""Population training equals one-by-one training (diffusion.train) model by model: the same
initialisations, subsets, seeded batches and noise, AdamW, schedule and EMA.

Attention key biases are compared through the outputs only: softmax is invariant to them, so
their gradient is rounding noise (≈ 1e-9) that Adam's normalisation turns into lr-sized steps,
different in batched and single kernels but without effect on any output."""

import copy

import pytest
import torch
from conftest import make_unet
from diffattr.config import TrainConfig
from diffattr.diffusion import train
from diffattr.errors import ModelError
from diffattr.population import train_population


def test_population_equals_one_by_one(scheduler):
    torch.manual_seed(0)
    images = torch.rand(20, 1, 8, 8) * 2 - 1
    recipe = TrainConfig.from_dict(
        {
            "steps": 5,
            "batch_size": 6,
            "lr": 0.01,
            "warmup_steps": 2,
            "ema_decay": 0.9,
            "log_every": 2,
        }
    )
    models = [make_unet(torch.float32, seed=s) for s in range(3)]
    positions = [torch.arange(0, 10), torch.arange(10, 20), torch.arange(0, 20, 2)]
    seeds = [11, 12, 13]
    alone = [copy.deepcopy(m) for m in models]
    logs_alone = [
        train(m, scheduler, images, recipe, s, p, progress=False)
        for m, s, p in zip(alone, seeds, positions, strict=True)
    ]
    logs = train_population(models, scheduler, images, recipe, seeds, positions, progress=False)
    for a, b, la, lb in zip(models, alone, logs, logs_alone, strict=True):
        torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
        for (name, x), y in zip(a.named_parameters(), b.parameters(), strict=True):
            if not name.endswith("to_k.bias"):
                torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=name)
        x_t, t = torch.randn(4, 1, 8, 8), torch.tensor([10, 300, 600, 990])
        with torch.no_grad():
            torch.testing.assert_close(a(x_t, t).sample, b(x_t, t).sample, rtol=1e-4, atol=1e-5)
    moved = [
        (x - y).abs().max()
        for x, y in zip(
            models[0].parameters(), make_unet(torch.float32, 0).parameters(), strict=True
        )
    ]
    assert max(moved) > 1e-3  # they did train
    assert not torch.allclose(
        next(models[0].parameters()), next(models[1].parameters())
    )  # each its own


def test_population_refuses_mixed_precision(scheduler):
    recipe = TrainConfig.from_dict({"steps": 1, "precision": "bf16"})
    with pytest.raises(ModelError, match="fp32"):
        train_population(
            [make_unet(torch.float32)],
            scheduler,
            torch.zeros(2, 1, 8, 8),
            recipe,
            [0],
            [torch.arange(2)],
        )
