"""Population training: P models of one architecture trained at once — the LDS subset models
and the counterfactual models are many small identical networks on different data.

The P parameter sets are stacked (``torch.func.stack_module_state``) and one vmapped
``grad`` of the DDPM loss gives every model's gradient in one pass (a GPU runs the P small
convolutions as one batched kernel). Each model keeps its own initialisation, training subset
and seeded batches and noise, drawn exactly as :func:`diffusion.train` draws them alone
(``train-batches`` / ``train-noise`` of its seed). AdamW, the warm-up cosine schedule and the
EMA are elementwise, so one optimizer over the stacked tensors is P independent optimizers: the
population equals one-by-one training up to floating-point reassociation in the batched
kernels (tested on a tiny model). Not supported here: text conditioning, flips, mixed
precision (``diffusion.train`` handles them one model at a time).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from diffusers import DDPMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from tqdm.auto import tqdm

from .config import TrainConfig
from .diffusion import WeightAverage
from .errors import ModelError
from .outputs import add_noise
from .seeding import generator


def train_population(
    models: Sequence[nn.Module],
    scheduler: DDPMScheduler,
    images: Tensor,
    recipe: TrainConfig,
    seeds: Sequence[int],
    positions: Sequence[Tensor],
    progress: bool = True,
) -> list[list[float]]:
    """Train ``models[p]`` in place on ``images[positions[p]]`` with seed ``seeds[p]``, all at
    once; return each model's loss log (every ``log_every`` steps, as ``diffusion.train``)."""
    if recipe.precision != "fp32":
        raise ModelError("population training runs in fp32; train.precision must be fp32")
    device = next(models[0].parameters()).device
    images = images.to(device)
    params, buffers = stack_module_state(list(models))
    stacked = [params[name] for name in params]
    base = copy.deepcopy(models[0]).to("meta").train()  # as diffusion.train runs the model

    def loss(p: dict, b: dict, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        pred = functional_call(base, (p, b), (x_t, t)).sample
        return torch.nn.functional.mse_loss(pred.float(), eps)

    step_grads = vmap(grad_and_value(loss))
    batch_gens = [generator(s, "train-batches") for s in seeds]
    noise_gens = [generator(s, "train-noise") for s in seeds]
    b = recipe.batch_size
    alphas = scheduler.alphas_cumprod
    opt = torch.optim.AdamW(stacked, lr=recipe.lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, recipe.warmup_steps, recipe.steps)
    ema = WeightAverage(stacked, recipe.ema_decay) if recipe.ema_decay > 0 else None
    logs: list[list[float]] = [[] for _ in models]
    running = torch.zeros(len(models), dtype=torch.float64)
    for step in tqdm(range(1, recipe.steps + 1), desc="train population", disable=not progress):
        drawn = [
            _batch(images, rows, alphas, b, gens)
            for rows, gens in zip(positions, zip(batch_gens, noise_gens, strict=True), strict=True)
        ]
        x_t, ts, eps = (torch.stack(parts) for parts in zip(*drawn, strict=True))
        grads, values = step_grads(params, buffers, x_t, ts, eps)
        for name, tensor in params.items():
            tensor.grad = grads[name]
        opt.step()
        sched.step()
        if ema is not None:
            ema.step(stacked)
        if not torch.isfinite(values).all():
            raise ModelError(
                f"population training diverged at step {step}: losses {values.tolist()}"
            )
        running += values.detach().double().cpu()
        if step % recipe.log_every == 0 or step == recipe.steps:
            n = (step - 1) % recipe.log_every + 1
            for log, value in zip(logs, (running / n).tolist(), strict=True):
                log.append(value)
            running.zero_()
    _write_back(models, ema.shadow if ema is not None else stacked)
    return logs


def _batch(images: Tensor, rows: Tensor, alphas: Tensor, size: int, gens) -> tuple[Tensor, ...]:
    """One model's (x_t, t, ε), drawn as ``diffusion.train`` draws them."""
    batch_gen, noise_gen = gens
    pick = rows[torch.randint(len(rows), (size,), generator=batch_gen)]
    x0 = images[pick.to(images.device)]
    t = torch.randint(len(alphas), (size,), generator=noise_gen)
    e = torch.randn(x0.shape, generator=noise_gen).to(images.device)
    t = t.to(images.device)
    return add_noise(alphas, x0, t, e), t, e


@torch.no_grad()
def _write_back(models: Sequence[nn.Module], stacked: Sequence[Tensor]) -> None:
    """Model p's parameters ← slice p of the stacked tensors (in its parameter order)."""
    for p, model in enumerate(models):
        for param, value in zip(model.parameters(), stacked, strict=True):
            param.copy_(value[p])
        model.eval()
