"""Featurization throughput: diffattr's factored and dense projectors vs. the TRAK library vs. the
floor (one batched training forward+backward), in example·timesteps per second, in one run.

    python benchmarks/featurize.py [--device cpu|cuda] [--models tiny small16 cifar10]

(a) diffattr factored  - Kronecker-factored per-layer projection through hooks (k = Σ k_in·k_out)
(b) diffattr dense     - exact per-example gradients (torch.func) × a Gaussian p×k matrix made once
(c) TRAK library       - traker 0.3.2 TRAKer.featurize: vmap per-example gradients + BasicProjector
                         (use_half_precision=False), proj_dim = the factored k. Where a full call
                         would take many minutes (the 35.7M model) its projector cost is measured
                         on one 100-column block and scaled to k (marked *).
(d) floor              - one training forward+backward of the loss over the batch (weight grads)
(e) factored, unit     - (a) with DAS's per-row normalisation: each row's exact gradient norm from
                         the same hooks (Gram or per-row form per layer)

The last lines read  featurize <model>: speedup_vs_trak=<a/c> floor_ratio=<d/a>
normalize_cost=<a/e> coverage=<z>.
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
import warnings
from functools import partial

import torch
from diffattr.config import DiffusionConfig, ModelConfig
from diffattr.models import build_scheduler, build_unet, n_parameters
from diffattr.outputs import add_noise, predict_noise, row_outputs
from diffattr.projection import DenseProjector, FactoredProjector

warnings.filterwarnings("ignore")

MODELS = {
    "tiny": (
        {
            "block_out_channels": [16, 24],
            "layers_per_block": 1,
            "down_block_types": ["DownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "UpBlock2D"],
            "norm_num_groups": 8,
        },
        (1, 8, 8),
        64,
    ),
    "small16": (
        {
            "block_out_channels": [32, 64, 64],
            "layers_per_block": 1,
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
            "norm_num_groups": 16,
        },
        (3, 16, 16),
        32,
    ),
    "cifar10": (
        {
            "block_out_channels": [128, 256, 256, 256],
            "layers_per_block": 2,
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
            "norm_num_groups": 32,
        },
        (3, 32, 32),
        8,
    ),
}


def rate(fn, rows: int, min_seconds: float, device: torch.device, max_reps: int = 20) -> float:
    """Best rows/s over repetitions (after one warm-up call)."""
    fn()
    best, spent, reps = float("inf"), 0.0, 0
    while (spent < min_seconds or reps < 2) and reps < max_reps:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return rows / best


class DiffusionLoss:
    """TRAK model output for the DDPM loss of one (x0, t, ε) row."""

    def __init__(self, alphas):
        self.alphas = alphas

    def get_output(self, model, weights, buffers, x0, t, eps):
        x0, t, eps = x0[None], t[None], eps[None]
        x_t = add_noise(self.alphas, x0, t, eps)
        pred = torch.func.functional_call(model, (weights, buffers), (x_t, t)).sample
        return ((pred - eps) ** 2).mean()

    def get_out_to_loss_grad(self, model, weights, buffers, batch):
        return torch.ones(batch[0].shape[0], 1, device=batch[0].device)


def trak_rate(model, alphas, batch, k, device, min_seconds, extrapolate) -> tuple[float, str]:
    from trak import TRAKer
    from trak.modelout_functions import AbstractModelOutput
    from trak.projectors import BasicProjector, ProjectionType

    AbstractModelOutput.register(DiffusionLoss)
    rows = batch["x0"].shape[0]
    args = [batch["x0"], batch["t"], batch["eps"]]
    if not extrapolate:
        with tempfile.TemporaryDirectory() as tmp:
            traker = TRAKer(
                model=model,
                task=DiffusionLoss(alphas),
                train_set_size=10**6,
                save_dir=tmp,
                device=str(device),
                proj_dim=k,
                use_half_precision=False,
                logging_level=40,
            )
            traker.load_checkpoint(model.state_dict(), model_id=0)
            counter = iter(range(10**6))

            def run():
                start = next(counter) * rows
                traker.featurize(batch=args, inds=torch.arange(start, start + rows).numpy())

            return rate(run, rows, min_seconds, device, max_reps=5), ""
    # components of the same pipeline, projector cost scaled from one block of 100 columns
    from trak.gradient_computers import FunctionalGradientComputer

    computer = FunctionalGradientComputer(
        model, DiffusionLoss(alphas), grad_dim=1, dtype=torch.float32, device=device
    )
    computer.load_model_params(model)
    t0 = time.perf_counter()
    grads = computer.compute_per_sample_grad(args)
    flat = torch.cat([g.flatten(1) for g in grads.values()], 1)
    t_grad = time.perf_counter() - t0
    proj = BasicProjector(flat.shape[1], 100, 0, ProjectionType.normal, device, block_size=100)
    t0 = time.perf_counter()
    proj.project(flat, model_id=0)
    t_proj = (time.perf_counter() - t0) * k / 100
    return rows / (t_grad + t_proj), "*"


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else 8 GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def bench(name: str, device: torch.device, min_seconds: float, k_in: int, k_out: int) -> dict:
    cfg, shape, rows = MODELS[name]
    torch.manual_seed(0)
    model = build_unet(ModelConfig.from_dict(cfg), shape).to(device).eval()
    alphas = build_scheduler(DiffusionConfig()).alphas_cumprod.to(device)
    g = torch.Generator().manual_seed(0)
    batch = {
        "x0": torch.randn(rows, *shape, generator=g).to(device),
        "t": torch.randint(1000, (rows,), generator=g).to(device),
        "eps": torch.randn(rows, *shape, generator=g).to(device),
    }
    row_fn = partial(lambda m, b: row_outputs(m, alphas, b, "loss"))
    p = n_parameters(model)
    out = {"model": name, "params": p, "rows": rows}

    factored = FactoredProjector(model, k_in, k_out, 0, "bench")
    out["k"], out["coverage"] = factored.dim, factored.coverage
    out["factored"] = rate(
        lambda: factored.project(model, row_fn, batch, 1), rows, min_seconds, device
    )
    out["unit"] = rate(
        lambda: factored.project(model, row_fn, batch, 1, normalize=True), rows, min_seconds, device
    )

    # the p×k matrix is generated in float64 blocks and kept in float32: 12 bytes per entry at
    # peak; give it a quarter of the memory available now
    out["dense_k"] = min(factored.dim, available_bytes() // 4 // (12 * p))
    if out["dense_k"] >= 256:
        dense = DenseProjector(model, out["dense_k"], 0, "bench", chunk=8)
        out["dense"] = rate(
            lambda: dense.project(model, row_fn, batch, 1), rows, min_seconds, device, max_reps=5
        )
        del dense
    else:
        out["dense"] = float("nan")

    def floor():
        model.zero_grad(set_to_none=True)
        pred = predict_noise(
            model, add_noise(alphas, batch["x0"], batch["t"], batch["eps"]), batch["t"]
        )
        torch.nn.functional.mse_loss(pred, batch["eps"]).backward()

    for q in model.parameters():
        q.requires_grad_(True)
    out["floor"] = rate(floor, rows, min_seconds, device)
    model.zero_grad(set_to_none=True)
    out["trak"], out["trak_mark"] = trak_rate(
        model, alphas, batch, factored.dim, device, min_seconds, extrapolate=p > 5_000_000
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--k-in", type=int, default=8)
    parser.add_argument("--k-out", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"# device {device} ({where or platform.machine()}), torch {torch.__version__}, "
        f"{args.threads} CPU threads; rates in example·timesteps per second"
    )
    results = [bench(m, device, args.min_seconds, args.k_in, args.k_out) for m in args.models]
    header = (
        f"{'model':<8} {'params':>11} {'k':>6} {'batch':>5} {'(a) factored':>13} "
        f"{'(b) dense [k]':>16} {'(c) TRAK':>10} {'(d) floor':>10}"
    )
    print(header)
    for r in results:
        print(
            f"{r['model']:<8} {r['params']:>11,} {r['k']:>6} {r['rows']:>5} "
            f"{r['factored']:>13.1f} {r['dense']:>9.1f} [{r['dense_k']:>4}] "
            f"{r['trak']:>9.3f}{r['trak_mark'] or ' '}"
            f" {r['floor']:>10.1f}"
        )
    if any(r["trak_mark"] for r in results):
        print("* TRAK projector time scaled from one 100-column block (a full call takes minutes)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB
    print(f"# peak resident memory {peak:.2f} GiB of {available_bytes() / 2**30:.1f} GiB available")
    for r in results:
        print(
            f"featurize {r['model']}: speedup_vs_trak={r['factored'] / r['trak']:.1f} "
            f"floor_ratio={r['floor'] / r['factored']:.2f} "
            f"normalize_cost={r['factored'] / r['unit']:.2f} coverage={r['coverage']:.4f}"
        )


if __name__ == "__main__":
    main()
