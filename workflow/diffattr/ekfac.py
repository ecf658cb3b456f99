"""EK-FAC influence functions for diffusion models through kronfluence (Grosse et al. 2023;
Mlodozeniec et al., ICLR 2025 for diffusion).

    τ_qi = ∇θ f_qᵀ (F̂ + λI)⁻¹ ∇θ L_i          (positive: x_i supports target query q)

with L_i = Σ_k ℓ(x_i, t_k, ε_k) the DDPM loss over the K keyed draws of training example i (the
same draws as the gradient methods' training features), f_q = Σ_r ℓ(x̂₀ᵗ, t, ε_r) the measurement
at each attribution step (the target draws of ``journey_trak``), and F̂ the eigenvalue-corrected
Kronecker-factored (EK-FAC) approximation of the Fisher of L over every Linear and Conv2d layer.
The damping is per layer, λ_l = c · mean eigenvalue of layer l (kronfluence's heuristic has
c = 0.1); one factor fit scores every scale c of ``dampings`` (one pass over the training set
each, every query's preconditioned gradient held at once). By default F̂ is the Monte-Carlo
(GGN) Fisher: ℓ = ‖ε_θ − ε‖²/d is the negative log-likelihood of N(ε; ε_θ, d/2·I) up to a
constant, so targets are sampled as ε_θ + √(d/2)·ξ with ξ from a seeded generator;
``fisher="empirical"`` uses the true ε instead. Each example's K draws are K calls of the model
in one forward pass (kronfluence's ``has_shared_parameters``), so its per-example gradient is
that of the sum over its draws, exactly as for the gradient methods (the same keyed draws and
mirror flips). Unconditional models only (the config check refuses ekfac for conditional ones).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import tempfile
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .draws import ModelDraws, TargetSet
from .errors import ConfigError
from .features import target_draws, train_draws
from .outputs import add_noise, predict_noise

log = logging.getLogger("diffattr")

QUERY_GRADIENT_BYTES = 2**30  # preconditioned query gradients held at once (one training pass)


class TrainDraws(Dataset):
    """Item i: training example i's K keyed draws ``{"x0", "t", "eps"}`` (K, …), made when read
    (mirrored per draw with ``flip``, as when featurizing)."""

    def __init__(self, images, ids, K: int, T: int, seed: int, model_index: int, flip: bool):
        self.images, self.ids, self.flip = images, ids, flip
        self.K, self.T, self.seed, self.model_index = K, T, seed, model_index

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        shape = tuple(self.images.shape[1:])
        ts, eps, _, flips = train_draws(
            [int(self.ids[i])], self.K, self.T, shape, self.seed, self.model_index, 0, self.flip
        )
        x0 = torch.from_numpy(self.images[i]).float().expand(self.K, *shape)
        x0 = torch.where(flips[0][:, None, None, None], x0.flip(-1), x0)
        return {"x0": x0, "t": ts[0], "eps": eps[0]}


class QueryDraws(Dataset):
    """Item (s, j): target j's R draws at attribution step s (the ``target-draw`` noise)."""

    def __init__(self, x0_hat, steps: Sequence[int], target_ids, R: int, seed: int):
        self.x0_hat, self.steps, self.target_ids, self.R, self.seed = (
            x0_hat,
            steps,
            target_ids,
            R,
            seed,
        )

    def __len__(self) -> int:
        return self.x0_hat.shape[0] * self.x0_hat.shape[1]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        s, j = divmod(index, self.x0_hat.shape[1])
        t, shape = int(self.steps[s]), tuple(self.x0_hat.shape[2:])
        eps = target_draws([int(self.target_ids[j])], [t] * self.R, shape, self.seed, "target-draw")
        x0 = torch.from_numpy(self.x0_hat[s, j]).float().expand(self.R, *shape)
        return {"x0": x0, "t": torch.full((self.R,), t, dtype=torch.long), "eps": eps[0]}


def _task(alphas_cumprod: Tensor, seed: int):
    from kronfluence.task import Task

    class DiffusionTask(Task):
        """L = Σ_d ℓ over an item's draws (one model call per draw); measurement likewise."""

        def __init__(self) -> None:
            self.sampler = torch.Generator().manual_seed(seed)

        def _loss(self, batch, model: nn.Module, sample: bool) -> Tensor:
            total = 0.0
            for d in range(batch["t"].shape[1]):
                x0, t, eps = batch["x0"][:, d], batch["t"][:, d], batch["eps"][:, d]
                pred = predict_noise(model, add_noise(alphas_cumprod, x0, t, eps), t)
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


@contextlib.contextmanager
def damping_scale(scale: float) -> Iterator[None]:
    """kronfluence's per-layer damping λ_l = scale · mean eigenvalue of layer l (its heuristic,
    used when ``damping_factor`` is None, with the scale a module constant and no argument)."""
    from kronfluence.factor import config

    default = config.HEURISTIC_DAMPING_SCALE
    config.HEURISTIC_DAMPING_SCALE = scale
    try:
        yield
    finally:
        config.HEURISTIC_DAMPING_SCALE = default


def ekfac_scores(
    draws: ModelDraws,
    targets: TargetSet,
    K: int,
    R: int,
    dampings: Sequence[float] = (0.1,),
    fisher: str = "mc",
    flip: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """EK-FAC influence scores (dampings, steps, targets, n_train) of one model, one row per
    damping scale (see the module doc)."""
    try:
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.arguments import FactorArguments, ScoreArguments
    except ImportError as err:
        raise ConfigError(
            f"ekfac needs kronfluence ({err}): run `make install`, or pip install "
            "--no-deps kronfluence==1.0.1 accelerate einconv einops opt_einsum"
        ) from err

    model = copy.deepcopy(draws.model).float().eval()  # kronfluence wraps its modules in place
    alphas_cumprod, seed, batch_size = draws.alphas_cumprod, draws.seed, draws.batch_size
    train_images, x0_hat = draws.images, targets.x0_hat
    T = len(alphas_cumprod)
    train = TrainDraws(train_images, draws.ids, K, T, seed, draws.model_index, flip)
    query = QueryDraws(x0_hat, targets.steps, targets.target_ids, R, seed)
    n_steps, n_targets = x0_hat.shape[:2]
    task = _task(alphas_cumprod, seed)
    prepared = prepare_model(model, task)
    if fisher not in ("mc", "empirical"):
        raise ConfigError(f"attribution.ekfac.fisher must be mc or empirical, not {fisher!r}")
    factor_args = FactorArguments(
        strategy="ekfac", has_shared_parameters=True, use_empirical_fisher=fisher == "empirical"
    )
    # Every query's preconditioned gradient (4 bytes per parameter) accumulated before the
    # training pass, within QUERY_GRADIENT_BYTES: one pass over the training set per damping.
    n_params = sum(p.numel() for p in model.parameters())
    held = max(1, QUERY_GRADIENT_BYTES // (4 * n_params * batch_size))
    accumulate = max(1, min(math.ceil(len(query) / batch_size), held))
    score_args = ScoreArguments(damping_factor=None, query_gradient_accumulation_steps=accumulate)
    out = np.empty((len(dampings), n_steps, n_targets, len(train_images)))
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        # kronfluence 1.0.1 builds torch.cuda.amp.GradScaler, deprecated: a warning per pass
        warnings.filterwarnings("ignore", "`torch.cuda.amp.GradScaler", FutureWarning)
        analyzer = Analyzer(
            "diffattr",
            prepared,
            task,
            cpu=next(model.parameters()).device.type == "cpu",
            disable_tqdm=not progress,
            output_dir=folder,
            log_level=logging.WARNING,
        )
        analyzer.fit_all_factors(
            "factors", train, per_device_batch_size=batch_size, factor_args=factor_args
        )
        for g, scale in enumerate(dampings):
            log.info("EK-FAC scores with damping scale %g (%d of %d)", scale, g + 1, len(dampings))
            with damping_scale(scale):
                analyzer.compute_pairwise_scores(
                    f"scores{g}",
                    "factors",
                    query,
                    train,
                    per_device_query_batch_size=batch_size,
                    per_device_train_batch_size=batch_size,
                    score_args=score_args,
                )
            scores = analyzer.load_pairwise_scores(f"scores{g}")["all_modules"]
            out[g] = scores.double().numpy().reshape(n_steps, n_targets, -1)
    return out
