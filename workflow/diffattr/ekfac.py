"""EK-FAC influence functions for diffusion models through kronfluence (Grosse et al. 2023;
Mlodozeniec et al., ICLR 2025 for diffusion).

    τ_qi = ∇θ f_qᵀ (F̂ + λI)⁻¹ ∇θ L_i          (positive: x_i supports target query q)

with L_i = Σ_k ℓ(x_i, t_k, ε_k) the DDPM loss over the K keyed draws of training example i (the
same draws as the gradient methods' training features), f_q = Σ_r ℓ(x̂₀ᵗ, t, ε_r) the measurement
at each attribution step (the target draws of ``journey_trak``), and F̂ the eigenvalue-corrected
Kronecker-factored (EK-FAC) approximation of the Fisher of L over every Linear and Conv2d layer.
By default F̂ is the Monte-Carlo (GGN) Fisher: ℓ = ‖ε_θ − ε‖²/d is the negative
log-likelihood of N(ε; ε_θ, d/2·I) up to a constant, so targets are sampled as ε_θ + √(d/2)·ξ
with ξ from a seeded generator; ``fisher="empirical"`` uses the true ε instead. λ is
kronfluence's per-layer heuristic (0.1 × mean eigenvalue) unless ``attribution.ekfac_damping``
sets it. Each example's K draws are K calls of the model in one
forward pass (kronfluence's ``has_shared_parameters``), so its per-example gradient is that of
the sum over its draws, exactly as for the gradient methods.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .errors import ConfigError
from .features import target_draws, train_draws
from .outputs import add_noise, predict_noise

log = logging.getLogger("diffattr")


class Draws(Dataset):
    """Items ``{"x0": (C, H, W), "t": (D,), "eps": (D, C, H, W)}``: one owner and its D draws."""

    def __init__(self, x0: Tensor, t: Tensor, eps: Tensor):
        self.x0, self.t, self.eps = x0, t, eps

    def __len__(self) -> int:
        return len(self.x0)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"x0": self.x0[i], "t": self.t[i], "eps": self.eps[i]}


def _task(alphas_cumprod: Tensor, seed: int):
    from kronfluence.task import Task

    class DiffusionTask(Task):
        """L = Σ_d ℓ over an item's draws (one model call per draw); measurement likewise."""

        def __init__(self) -> None:
            self.sampler = torch.Generator().manual_seed(seed)

        def _loss(self, batch, model: nn.Module, sample: bool) -> Tensor:
            total = 0.0
            for d in range(batch["t"].shape[1]):
                t, eps = batch["t"][:, d], batch["eps"][:, d]
                pred = predict_noise(model, add_noise(alphas_cumprod, batch["x0"], t, eps), t)
                if sample:  # ε ~ N(ε_θ, d/2·I): the model's own predictive distribution
                    scale = math.sqrt(pred[0].numel() / 2)
                    noise = torch.randn(pred.shape, generator=self.sampler).to(pred)
                    eps = pred.detach() + scale * noise
                total = total + ((pred - eps) ** 2).flatten(1).mean(1).sum()
            return total

        def compute_train_loss(self, batch, model, sample=False):
            return self._loss(batch, model, sample)

        def compute_measurement(self, batch, model):
            return self._loss(batch, model, False)

    return DiffusionTask()


def ekfac_scores(
    model: nn.Module,
    alphas_cumprod: Tensor,
    train_images: np.ndarray,
    train_ids: np.ndarray,
    x0_hat: np.ndarray,
    steps: Sequence[int],
    target_ids: np.ndarray,
    K: int,
    R: int,
    seed: int,
    model_index: int,
    batch_size: int = 64,
    damping: float | None = None,
    fisher: str = "mc",
    progress: bool = False,
) -> np.ndarray:
    """EK-FAC influence scores (steps, targets, n_train) of one model (see the module doc)."""
    try:
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.arguments import FactorArguments, ScoreArguments
    except ImportError as err:
        raise ConfigError(
            f"ekfac needs kronfluence ({err}): run `make install`, or pip install "
            "--no-deps kronfluence==1.0.1 accelerate einconv einops opt_einsum"
        ) from err

    model = copy.deepcopy(model).float().eval()  # kronfluence wraps its modules in place
    T = len(alphas_cumprod)
    shape = tuple(train_images.shape[1:])
    ts, eps, _, _ = train_draws(train_ids.tolist(), K, T, shape, seed, model_index)
    train = Draws(torch.from_numpy(train_images).float(), ts, eps)
    n_steps, n_targets = x0_hat.shape[:2]
    q_x0, q_t, q_eps = [], [], []
    for s, t in enumerate(steps):
        q_x0.append(torch.from_numpy(x0_hat[s]).float())
        q_t.append(torch.full((n_targets, R), int(t), dtype=torch.long))
        q_eps.append(target_draws(target_ids.tolist(), [int(t)] * R, shape, seed, "target-draw"))
    query = Draws(torch.cat(q_x0), torch.cat(q_t), torch.cat(q_eps))
    task = _task(alphas_cumprod, seed)
    prepared = prepare_model(model, task)
    if fisher not in ("mc", "empirical"):
        raise ConfigError(f"attribution.ekfac_fisher must be mc or empirical, not {fisher!r}")
    factor_args = FactorArguments(
        strategy="ekfac", has_shared_parameters=True, use_empirical_fisher=fisher == "empirical"
    )
    score_args = ScoreArguments(damping_factor=damping)
    with tempfile.TemporaryDirectory() as out:
        analyzer = Analyzer(
            "diffattr",
            prepared,
            task,
            cpu=next(model.parameters()).device.type == "cpu",
            disable_tqdm=not progress,
            output_dir=out,
            log_level=logging.WARNING,
        )
        analyzer.fit_all_factors(
            "factors", train, per_device_batch_size=batch_size, factor_args=factor_args
        )
        analyzer.compute_pairwise_scores(
            "scores",
            "factors",
            query,
            train,
            per_device_query_batch_size=batch_size,
            per_device_train_batch_size=batch_size,
            score_args=score_args,
        )
        scores = analyzer.load_pairwise_scores("scores")["all_modules"]
    return scores.double().numpy().reshape(n_steps, n_targets, -1)
