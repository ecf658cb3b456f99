"""Attribution by unlearning (AbU; Wang et al., NeurIPS 2024, code PeterWang512/
AttributeByUnlearning), step by step.

For target j at attribution step t, a copy of the model *unlearns* the target's step-specific
output: Newton steps of gradient ascent preconditioned by the diagonal Fisher of the training
loss (AbU's ``compute_influence.py``):

    θ ← θ + η · ∇θ f_t / (F · N),   f_t = mean_r ℓ(x̂₀ᵗ, t_r, ε_r),  t_r uniform on t ± window/2

with F the empirical Fisher diagonal mean_(i,k) (∂ℓ(x_i, t_k, ε_k)/∂θ)² over keyed training draws
(AbU's ``compute_fisher.py``) and N the training-set size. The score of training example i is
how much worse the unlearned copy fits it,

    τ_i = L_i(θ') − L_i(θ),   L_i = mean_d ℓ(x_i, t_d, ε_d)

with the same keyed (t_d, ε_d) for both (common random numbers): positive = x_i supports the
target, as for every method. AbU's choices kept: one step by default, the Fisher floor-free
update, all timesteps for the loss. The trajectory-free variant unlearns the final image on
D-TRAK's uniform grid instead (one unlearning per target, the same scores at every step). Left
out: AbU's restriction to cross-attention K/V weights
(the digits/CIFAR UNets have none; all weights are updated), its flip-max over mirrored copies,
and a Fisher floor other than a relative 1e-12 (parameters with zero Fisher would divide by 0).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .draws import ModelDraws, TargetSet
from .errors import ConfigError
from .features import rows_batch, shard_positions, train_draws
from .outputs import evaluate, row_outputs
from .projection import per_owner_gradients
from .schedule import uniform_timesteps
from .seeding import generator

LOSS_BATCHES = 4  # training examples per loss batch, in units of attribution.batch_size


def loss_examples(n: int, batch_size: int, shards: int, shard: int) -> slice:
    """The training examples whose losses job ``shard`` of ``shards`` evaluates: a contiguous
    run of whole loss batches (LOSS_BATCHES · batch_size), so no score depends on the split."""
    batches = -(-n // (LOSS_BATCHES * batch_size))
    if shards > batches:  # some job would evaluate no example
        raise ConfigError(
            f"attribution.unlearning.train_shards ({shards}) exceeds the {batches} loss batches "
            f"of the {n} training examples ({LOSS_BATCHES} × attribution.batch_size each); "
            "lower it"
        )
    positions = shard_positions(n, LOSS_BATCHES * batch_size, shards, shard)
    return slice(int(positions[0]), int(positions[-1]) + 1)


def _rows_fn(alphas_cumprod: Tensor):
    return lambda model, batch: row_outputs(model, alphas_cumprod, batch, "loss")


def _train_batch(images, ids, draws, T, seed, tag, rows: slice) -> dict[str, Tensor]:
    """Keyed draws of examples ``rows`` as rows; ``tag`` (``<family>-<model index>``) separates
    draw families and models."""
    lo, hi = rows.start, rows.stop
    shape = tuple(images.shape[1:])
    ts, eps, _, _ = train_draws([int(i) for i in ids[lo:hi]], draws, T, shape, seed, tag)
    return rows_batch(torch.from_numpy(images[lo:hi]).float(), ts, eps)


def diagonal_fisher(
    model: nn.Module,
    alphas_cumprod: Tensor,
    images: np.ndarray,
    ids: np.ndarray,
    draws: int,
    seed: int,
    model_index: int,
    batch_size: int = 64,
) -> dict[str, Tensor]:
    """F_p = mean over examples i and keyed draws k of (∂ℓ(x_i, t_k, ε_k)/∂θ_p)² (float64)."""
    T = len(alphas_cumprod)
    total: dict[str, Tensor] = {}
    rows = 0
    for lo in range(0, len(images), batch_size):
        hi = min(lo + batch_size, len(images))
        batch = _train_batch(images, ids, draws, T, seed, f"fisher-{model_index}", slice(lo, hi))
        grads = per_owner_gradients(model, _rows_fn(alphas_cumprod), batch, 1)
        for name, g in grads.items():
            total[name] = total.get(name, 0) + g.double().square().sum(0)
        rows += len(batch["t"])
    return {name: value / rows for name, value in total.items()}


def training_losses(
    model: nn.Module,
    alphas_cumprod: Tensor,
    images: np.ndarray,
    ids: np.ndarray,
    draws: int,
    seed: int,
    model_index: int,
    batch_size: int = 256,
) -> np.ndarray:
    """L_i = mean_d ℓ(x_i, t_d, ε_d) over keyed draws (the same draws on every call)."""
    T = len(alphas_cumprod)
    out = np.empty(len(images))
    for lo in range(0, len(images), batch_size):
        hi = min(lo + batch_size, len(images))
        tag = f"unlearning-eval-{model_index}"
        batch = _train_batch(images, ids, draws, T, seed, tag, slice(lo, hi))
        losses = evaluate(model, alphas_cumprod, batch, "loss")
        out[lo:hi] = losses.double().view(hi - lo, draws).mean(1).cpu().numpy()
    return out


def unlearn(
    model: nn.Module,
    alphas_cumprod: Tensor,
    fisher: dict[str, Tensor],
    n_train: int,
    target: dict[str, Tensor],
    lr: float,
    steps: int,
) -> nn.Module:
    """A copy of ``model`` after ``steps`` Fisher-preconditioned ascent steps on the target's
    mean loss over the rows of ``target`` (``x0``, ``t``, ``eps``)."""
    unlearned = copy.deepcopy(model)
    params = dict(unlearned.named_parameters())
    floor = 1e-12 * torch.stack([f.mean() for f in fisher.values()]).mean()
    for _ in range(steps):
        unlearned.zero_grad(set_to_none=True)
        row_outputs(unlearned, alphas_cumprod, target, "loss").mean().backward()
        with torch.no_grad():
            for name, p in params.items():
                step = lr * p.grad.double() / ((fisher[name] + floor) * n_train)
                p.add_(step.to(p.dtype))
    unlearned.zero_grad(set_to_none=True)
    return unlearned


def target_rows(
    x0: Tensor, step: int, window: int, draws: int, T: int, seed: int, target_id: int
) -> dict[str, Tensor]:
    """The step-specific objective's rows: ``draws`` keyed (t_r, ε_r), t_r uniform on
    t ± window/2 within 0…T−1 (window 1: t itself)."""
    lo, hi = max(0, step - window // 2), min(T - 1, step + window // 2)
    g = generator(seed, "unlearning-target", int(target_id), int(step))
    t = torch.randint(lo, hi + 1, (draws,), generator=g)
    eps = torch.randn((draws, *x0.shape), generator=g)
    return rows_batch(x0[None].float(), t[None], eps[None])


def final_rows(x0: Tensor, draws: int, T: int, seed: int, target_id: int) -> dict[str, Tensor]:
    """The trajectory-free objective's rows: the final image at the ``draws`` uniformly spaced
    timesteps ⌊kT/draws⌋ (D-TRAK's grid), keyed noise."""
    g = generator(seed, "unlearning-final", int(target_id))
    t = torch.tensor(uniform_timesteps(draws, T), dtype=torch.long)
    eps = torch.randn((draws, *x0.shape), generator=g)
    return rows_batch(x0[None].float(), t[None], eps[None])


@dataclass(frozen=True)
class UnlearningSettings:
    """AbU's settings (``attribution.unlearning_*``): step size ``lr``, ``ascent_steps``, the
    timestep ``window`` of the step-specific objective, the target's draws, the training losses'
    draws (``eval_draws``) and the Fisher's draws."""

    lr: float
    ascent_steps: int
    window: int
    target_draws: int
    eval_draws: int
    fisher_draws: int


def unlearning_scores(
    draws: ModelDraws,
    targets: TargetSet,
    settings: UnlearningSettings,
    progress: bool = False,
    final: np.ndarray | None = None,
    examples: slice = slice(None),
) -> np.ndarray:
    """τ (steps, targets, n) of one model (see the module doc) for the n training examples in
    ``examples`` (all by default; the Fisher and N always cover all of them). With
    ``final`` (targets, …) the objective is trajectory-free: each target's final image on the
    uniform grid, one unlearning per target, its scores repeated at every step."""
    model = draws.model.float().eval()
    alphas_cumprod, train_images, train_ids = draws.alphas_cumprod, draws.images, draws.ids
    seed, model_index, batch_size = draws.seed, draws.model_index, draws.batch_size
    x0_hat, steps, target_ids = targets.x0_hat, targets.steps, targets.target_ids
    lr, ascent_steps, window = settings.lr, settings.ascent_steps, settings.window
    target_draws, eval_draws = settings.target_draws, settings.eval_draws
    fisher_draws = settings.fisher_draws
    T = len(alphas_cumprod)
    fisher = diagonal_fisher(
        model,
        alphas_cumprod,
        train_images,
        train_ids,
        fisher_draws,
        seed,
        model_index,
        batch_size,
    )
    eval_images, eval_ids = train_images[examples], train_ids[examples]
    losses = lambda m: training_losses(  # noqa: E731
        m,
        alphas_cumprod,
        eval_images,
        eval_ids,
        eval_draws,
        seed,
        model_index,
        LOSS_BATCHES * batch_size,
    )
    before = losses(model)
    out = np.empty((len(steps), len(target_ids), len(eval_images)))
    if final is not None:
        for j in tqdm(range(len(target_ids)), desc="unlearning", disable=not progress):
            rows = final_rows(torch.from_numpy(final[j]), target_draws, T, seed, target_ids[j])
            copy_ = unlearn(
                model, alphas_cumprod, fisher, len(train_images), rows, lr, ascent_steps
            )
            out[:, j] = losses(copy_) - before
        return out
    cases = [(s, j) for s in range(len(steps)) for j in range(len(target_ids))]
    for s, j in tqdm(cases, desc="unlearning", disable=not progress, mininterval=2):
        rows = target_rows(
            torch.from_numpy(x0_hat[s, j]),
            int(steps[s]),
            window,
            target_draws,
            T,
            seed,
            int(target_ids[j]),
        )
        copy_ = unlearn(model, alphas_cumprod, fisher, len(train_images), rows, lr, ascent_steps)
        out[s, j] = losses(copy_) - before
    return out
