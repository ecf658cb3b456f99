"""Training loop and a sampler that records trajectories, with seeded noise throughout.

Training randomness comes in two keyed streams: ``batches`` (which examples) and ``noise`` (t, ε).
A model trained on a subset of the data with the same seed therefore sees the same t and ε at
every step, so that the data is the only difference (used by LDS and counterfactual retraining).

Sampling is DDPM ancestral sampling with diffusers' ``DDPMScheduler.step``; every image has its own
generator, so its trajectory does not depend on the batch it was sampled in. At every recorded
timestep t we keep x_t and the one-step estimate x̂_0^t = (x_t − √(1−ᾱ_t) ε_θ(x_t,t)) / √ᾱ_t
(diffusers' ``pred_original_sample``, clipped to [-1, 1] when the scheduler clips).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from diffusers import DDPMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from torch import Tensor, nn
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import take_rows
from .errors import ModelError
from .outputs import add_noise, predict_noise
from .seeding import derive_seed, generator

if TYPE_CHECKING:
    from .artifacts import StoredRows

log = logging.getLogger(__name__)


def autocast(device: torch.device, precision: str):
    """Mixed precision for forward passes (bf16/fp16 autocast); fp32 disables it."""
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    return torch.autocast(
        device.type, dtype=dtypes.get(precision, torch.bfloat16), enabled=precision in dtypes
    )


def init_seeded(build: Callable[[], nn.Module], *keys: int | str) -> nn.Module:
    """Build a module with its random initialisation drawn from a keyed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(*keys))
        return build()


def train(  # noqa: PLR0913  (issue 32: not yet split)
    model: nn.Module,
    scheduler: DDPMScheduler,
    images: Tensor,
    recipe: TrainConfig,
    seed: int,
    positions: Tensor | None = None,
    on_checkpoint: Callable[[int, nn.Module], None] | None = None,
    progress: bool = True,
    conditions: Tensor | StoredRows | None = None,
    null_condition: Tensor | None = None,
    flip: bool = False,
) -> list[float]:
    """Train ``model`` in place on ``images[positions]`` with the DDPM loss; return the loss log.

    Checkpoints (EMA weights when ``ema_decay`` > 0) are handed to ``on_checkpoint(step, model)``
    at every step in ``recipe.checkpoints`` and at the end (as step ``recipe.steps``).
    Text conditioning: ``conditions`` (n, captions, L, D) holds caption embeddings (in memory or
    read per batch from ``data.h5``, the same values either way); each row uses
    a random caption, replaced by ``null_condition`` with probability ``recipe.p_uncond``
    (classifier-free guidance). ``flip`` mirrors each row horizontally with probability 1/2.
    """
    device = next(model.parameters()).device
    images = images.to(device)
    positions = torch.arange(len(images)) if positions is None else positions.cpu()
    if len(positions) == 0:
        raise ValueError("cannot train on an empty subset")
    batch_gen = generator(seed, "train-batches")
    noise_gen = generator(seed, "train-noise")
    T = scheduler.config.num_train_timesteps
    alphas = scheduler.alphas_cumprod
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, recipe.warmup_steps, recipe.steps)
    ema = WeightAverage(model.parameters(), recipe.ema_decay) if recipe.ema_decay > 0 else None
    model.train()
    losses: list[float] = []
    running = 0.0
    bar = tqdm(range(1, recipe.steps + 1), desc="train", disable=not progress, mininterval=2)
    for step in bar:
        pick = positions[torch.randint(len(positions), (recipe.batch_size,), generator=batch_gen)]
        x0 = images[pick.to(device)]
        t = torch.randint(T, (recipe.batch_size,), generator=noise_gen)
        eps = torch.randn(x0.shape, generator=noise_gen).to(device)
        t = t.to(device)
        cond = None
        if conditions is not None:
            cap = torch.randint(conditions.shape[1], (len(pick),), generator=noise_gen)
            drop = torch.rand(len(pick), generator=noise_gen) < recipe.p_uncond
            cond = torch.as_tensor(take_rows(conditions, pick, cap))
            cond = cond.to(device=device, dtype=x0.dtype)
            cond[drop.to(device)] = null_condition.to(device=device, dtype=x0.dtype)
        if flip:
            mirror = (torch.rand(len(pick), generator=noise_gen) < 0.5).to(device)
            x0 = torch.where(mirror[:, None, None, None], x0.flip(-1), x0)
        with autocast(device, recipe.precision):
            pred = predict_noise(model, add_noise(alphas, x0, t, eps), t, cond)
        loss = torch.nn.functional.mse_loss(pred.float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.step(model.parameters())
        value = loss.item()
        if not math.isfinite(value):
            lr = sched.get_last_lr()[0]
            raise ModelError(
                f"training diverged at step {step}: loss {value} (lr {lr:.3g}); lower train.lr "
                "(or check the data); no checkpoint was kept"
            )
        running += value
        if step % recipe.log_every == 0 or step == recipe.steps:
            n = (step - 1) % recipe.log_every + 1
            losses.append(running / n)
            log.info(
                "step %d/%d loss %.5f lr %.2e",
                step,
                recipe.steps,
                losses[-1],
                sched.get_last_lr()[0],
            )
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            running = 0.0
        if on_checkpoint is not None and (step in recipe.checkpoints or step == recipe.steps):
            on_checkpoint(step, _weights_for_saving(model, ema))
    model.eval()
    if ema is not None:
        ema.copy_to(model.parameters())
    return losses


def _weights_for_saving(model: nn.Module, ema: WeightAverage | None) -> nn.Module:
    if ema is None:
        return model
    shadow = copy.deepcopy(model)
    ema.copy_to(shadow.parameters())
    return shadow.eval()


class WeightAverage:
    """Exponential moving average of the weights, diffusers' ``EMAModel`` arithmetic (its defaults:
    no warm-up power, no delay): after optimizer step k, θ̄ ← θ̄ − (1 − d_k)(θ̄ − θ) with
    d_k = min(decay, k / (k + 9)) for k ≥ 2 and d_1 = 0 (θ̄ starts as a copy of θ).

    Not ``diffusers.training_utils.EMAModel`` itself: that module imports every pipeline, ≈ 1.3
    CPU-s at the start of each training job; a test checks the two agree bit for bit."""

    def __init__(self, parameters: Iterable[nn.Parameter], decay: float):
        self.decay = decay
        self.steps = 0
        self.shadow = [p.detach().clone() for p in parameters]

    @torch.no_grad()
    def step(self, parameters: Iterable[nn.Parameter]) -> None:
        self.steps += 1
        k = self.steps
        decay = 0.0 if k == 1 else min(k / (k + 9), self.decay)
        for average, param in zip(self.shadow, parameters, strict=True):
            if param.requires_grad:
                average.sub_((1 - decay) * (average - param))
            else:
                average.copy_(param)

    @torch.no_grad()
    def copy_to(self, parameters: Iterable[nn.Parameter]) -> None:
        for average, param in zip(self.shadow, parameters, strict=True):
            param.copy_(average)


Predictor = Callable[[Tensor, int], Tensor]


def model_predictor(model: nn.Module, cond: Tensor | None = None) -> Predictor:
    """ε-predictor (x_t, t) ↦ ε_θ(x_t, t) of one model."""

    def predict(x: Tensor, t: int) -> Tensor:
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        return predict_noise(model, x, tt, cond)

    return predict


def guided_predictor(model: nn.Module, cond: Tensor, null: Tensor, scale: float) -> Predictor:
    """Classifier-free guidance: ε_u + s·(ε_c − ε_u) with ε_u from the empty caption."""
    if scale == 1.0:
        return model_predictor(model, cond)

    def predict(x: Tensor, t: int) -> Tensor:
        tt = torch.full((2 * x.shape[0],), t, device=x.device, dtype=torch.long)
        both = torch.cat([null.expand_as(cond), cond]).to(x)
        eps_u, eps_c = predict_noise(model, torch.cat([x, x]), tt, both).chunk(2)
        return eps_u + scale * (eps_c - eps_u)

    return predict


def swapped_predictor(original: Predictor, other: Predictor, steps: Iterable[int]) -> Predictor:
    """Use ``other`` at the timesteps in ``steps`` and ``original`` elsewhere."""
    window = set(steps)

    def predict(x: Tensor, t: int) -> Tensor:
        return (other if t in window else original)(x, t)

    return predict


@dataclass
class Trajectory:
    """Final images plus x_t and x̂_0^t at each recorded timestep (in the order recorded)."""

    final: Tensor
    steps: list[int]
    x_t: Tensor  # (n_steps, n, C, H, W)
    x0_hat: Tensor  # (n_steps, n, C, H, W)


def inference_timesteps(scheduler: DDPMScheduler, sampling_steps: int) -> list[int]:
    """The timesteps a sampler with ``sampling_steps`` steps visits, from noisy to clean."""
    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(sampling_steps)
    return [int(t) for t in sched.timesteps]


@torch.no_grad()
def denoise(
    x: Tensor,
    scheduler: DDPMScheduler,
    sampling_steps: int,
    predictor: Predictor,
    generators: Sequence[torch.Generator],
    start_at: int | None = None,
    record: Iterable[int] = (),
    progress: bool = False,
) -> Trajectory:
    """Run DDPM ancestral sampling from ``x`` (= x_{start_at}, or x_T at the first step).

    ``generators`` holds one generator per image for the sampler's noise, so an image's path does
    not depend on the other images of the batch.
    """
    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(sampling_steps)
    timesteps = [int(t) for t in sched.timesteps]
    if start_at is not None:
        if start_at not in timesteps:
            raise ValueError(
                f"timestep {start_at} is not visited by a {sampling_steps}-step sampler"
            )
        timesteps = timesteps[timesteps.index(start_at) :]
    if len(generators) != x.shape[0]:
        raise ValueError("denoise needs one generator per image")
    wanted = set(record)
    steps, xs, x0s = [], [], []
    for t in tqdm(timesteps, desc="sample", disable=not progress, mininterval=2):
        out = sched.step(predictor(x, t), t, x, generator=list(generators))
        if t in wanted:
            steps.append(t)
            xs.append(x.clone())
            x0s.append(out.pred_original_sample.clone())
        x = out.prev_sample
    empty = x.new_zeros((0, *x.shape))
    return Trajectory(
        final=x,
        steps=steps,
        x_t=torch.stack(xs) if xs else empty,
        x0_hat=torch.stack(x0s) if x0s else empty,
    )


@torch.no_grad()
def forward_trajectory(
    x0: Tensor,
    scheduler: DDPMScheduler,
    sampling_steps: int,
    record: Iterable[int],
    predictor: Predictor,
    generators: Sequence[torch.Generator],
) -> Trajectory:
    """A real image's stand-in for a trajectory, at the sampler timesteps in ``record`` (noisy →
    clean): x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε with ε drawn from each image's own generator (one draw per
    step, in order), and x̂₀ᵗ = (x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t, clipped as the sampler clips
    (DDPMScheduler's ``pred_original_sample``). Each x_t is diffused from the image on its own:
    unlike a sampled target's, they do not lie on one sampling path. ``final`` is x₀."""
    if len(generators) != x0.shape[0]:
        raise ValueError("forward_trajectory needs one generator per image")
    wanted = set(record)
    steps = [t for t in inference_timesteps(scheduler, sampling_steps) if t in wanted]
    xs, x0s = [], []
    for t in steps:
        eps = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in generators]).to(x0)
        x_t = scheduler.add_noise(x0, eps, torch.full((len(x0),), t, dtype=torch.long))
        a = scheduler.alphas_cumprod[t]  # float32, as DDPMScheduler.step computes it
        x0_hat = (x_t - (1 - a) ** 0.5 * predictor(x_t, t)) / a**0.5
        if scheduler.config.clip_sample:
            limit = scheduler.config.clip_sample_range
            x0_hat = x0_hat.clamp(-limit, limit)
        xs.append(x_t)
        x0s.append(x0_hat)
    empty = x0.new_zeros((0, *x0.shape))
    return Trajectory(
        final=x0.clone(),
        steps=steps,
        x_t=torch.stack(xs) if xs else empty,
        x0_hat=torch.stack(x0s) if x0s else empty,
    )


def initial_noise(shape: tuple[int, ...], generators: Sequence[torch.Generator]) -> Tensor:
    """x_T, one image per generator (drawn first from each image's own stream)."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


def target_generators(seed: int, target_ids: Iterable[int]) -> list[torch.Generator]:
    """The sampling streams of the run's targets: x_T first, then the sampler's noise."""
    return [generator(seed, "sample", int(j)) for j in target_ids]


def target_noise(seed: int, target_id: int, shape: tuple[int, ...]) -> Tensor:
    """Target ``target_id``'s x_T, drawn again from its own stream (D-TRAK's regeneration)."""
    return initial_noise(shape, target_generators(seed, [target_id]))[0]
