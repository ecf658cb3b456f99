"""GPU smoke test and throughput of the paper-scale models (skipped without CUDA).

    python benchmarks/gpu_smoke.py [--train-steps 300] [--examples 512]

1. Writes a synthetic CIFAR-10 binary archive and reads it with diffattr's loader.
2. Trains the config/cifar10.yaml UNet (35.7M) for a few hundred steps (bf16 autocast and fp32).
3. Featurizes a few hundred examples × K draws with the factored projector (fp32 and bf16), next
   to the floor (one training forward+backward per example·timestep).
4. The same for the config/mscoco.yaml latent UNet (random latents and text embeddings).
5. Prints GPU-hour estimates for each paper config from these rates.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]  # the synthetic CIFAR-10 archive writer of the tests
warnings.filterwarnings("ignore")

from diffattr.config import DiffusionConfig, RunConfig, TrainConfig, merge  # noqa: E402
from diffattr.data import prepare  # noqa: E402
from diffattr.diffusion import train  # noqa: E402
from diffattr.draws import FeatureDraws  # noqa: E402
from diffattr.features import project_rows  # noqa: E402
from diffattr.models import build_scheduler, build_unet, n_parameters  # noqa: E402
from diffattr.outputs import add_noise, predict_noise  # noqa: E402
from diffattr.projection import FactoredProjector  # noqa: E402


def timed(fn, device) -> float:
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def bench_model(name, cfg, images, cond, device, steps, examples, K):
    shape = tuple(images.shape[1:])
    torch.manual_seed(0)
    model = build_unet(cfg.model, shape).to(device)
    sched = build_scheduler(DiffusionConfig())
    alphas = sched.alphas_cumprod
    out = {"model": name, "params": n_parameters(model)}
    x = torch.from_numpy(images)
    conditions = None if cond is None else torch.from_numpy(cond)
    null = None if cond is None else torch.zeros(cond.shape[2:])
    for precision, n in (("bf16", steps), ("fp32", max(20, steps // 5))):
        recipe = TrainConfig(
            steps=n,
            batch_size=128,
            lr=1e-4,
            warmup_steps=10,
            ema_decay=0.9999,
            log_every=10**9,
            precision=precision,
        )
        train(
            model,
            sched,
            x[:8],
            TrainConfig(steps=3, batch_size=128),
            0,
            progress=False,
            conditions=conditions if conditions is None else conditions[:8],
            null_condition=null,
        )
        dt = timed(
            lambda r=recipe: train(
                model, sched, x, r, 1, progress=False, conditions=conditions, null_condition=null
            ),
            device,
        )
        out[f"train_{precision}_steps_per_s"] = n / dt
        print(f"{name}: train {precision} {n / dt:.2f} steps/s (batch 128)", flush=True)
    model.eval()
    proj = FactoredProjector(model, 8, 8, 0, "smoke")
    out["k"], out["coverage"] = proj.dim, proj.coverage
    B = max(1, 256 // K)  # examples per batch → about 256 rows
    g = torch.Generator().manual_seed(0)
    for precision in ("fp32", "bf16"):

        def featurize(precision=precision):
            for lo in range(0, examples, B):
                rows = B * K
                batch = {
                    "x0": x[lo % len(x) :][:B].repeat_interleave(K, 0)[:rows],
                    "t": torch.randint(1000, (rows,), generator=g),
                    "eps": torch.randn(rows, *shape, generator=g),
                }
                if cond is not None:
                    batch["cond"] = conditions[:B, 0].float().repeat_interleave(K, 0)[:rows]
                project_rows(model, proj, alphas, FeatureDraws("loss", K, precision), batch)

        featurize()
        out[f"featurize_{precision}_rows_per_s"] = examples * K / timed(featurize, device)
        print(
            f"{name}: featurize {precision} {out[f'featurize_{precision}_rows_per_s']:.0f} "
            f"example·timesteps/s (k={proj.dim})",
            flush=True,
        )
    for q in model.parameters():
        q.requires_grad_(True)

    def floor():
        for _ in range(0, examples, B):
            rows = B * K
            x0 = x[:B].repeat_interleave(K, 0).to(device)
            t = torch.randint(1000, (rows,), device=device)
            eps = torch.randn_like(x0)
            c = (
                None
                if cond is None
                else conditions[:B, 0].float().repeat_interleave(K, 0).to(device)
            )
            model.zero_grad(set_to_none=True)
            pred = predict_noise(model, add_noise(alphas, x0, t, eps), t, c)
            torch.nn.functional.mse_loss(pred, eps).backward()

    floor()
    out["floor_fp32_rows_per_s"] = examples * K / timed(floor, device)
    return out


def estimate(cfg: RunConfig, r: dict, n_train: int) -> dict:
    """GPU-hours: training (models × steps), featurization (members × n × K × outputs), LDS
    subset models, counterfactual models (the plan's case count), at the measured bf16 rates."""
    train_rate = r["train_bf16_steps_per_s"]
    feat_rate = r["featurize_bf16_rows_per_s"]
    t, a, lds, cf = cfg.train, cfg.attribution, cfg.lds, cfg.counterfactual
    outputs = 2 if "dtrak" in a.methods else 1
    members = t.ensemble * len(a.checkpoints)
    hours = {
        "train": t.ensemble * t.steps / train_rate / 3600,
        "featurize": members * n_train * a.K * outputs / feat_rate / 3600,
    }
    if lds.enabled:
        steps = cfg.for_subset_models().train.steps
        hours["lds_models"] = lds.n_subsets * lds.seeds * steps / train_rate / 3600
    if cf.enabled:
        hours["counterfactual_models"] = (cf.n_cases + 1) * t.steps / train_rate / 3600
    hours["total"] = sum(hours.values())
    return hours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--K", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu-smoke: skipped, no CUDA device")
        return
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    from synthetic import write_cifar_archive

    print(f"# {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    # As Snakemake reads them: merged over the default config, validated (no data is read).
    cfgs = {}
    for n in ("cifar10", "cifar2", "mscoco"):
        values = merge(
            *(
                yaml.safe_load((ROOT / "config" / f).read_text())
                for f in ("config.yaml", f"{n}.yaml")
            )
        )
        values["dataset"]["root"] = str(ROOT)  # (the data is not read here)
        cfgs[n] = RunConfig.from_dict(values)
    with tempfile.TemporaryDirectory() as tmp:
        archive = write_cifar_archive(Path(tmp) / "cifar-10-binary.tar.gz", "binary", 1024, 16)
        data = prepare({"name": "cifar10", "root": str(archive)})
    print(f"synthetic CIFAR-10 archive read: {data.images.shape}")
    results = [
        bench_model(
            "cifar10",
            cfgs["cifar10"],
            data.images,
            None,
            device,
            args.train_steps,
            args.examples,
            args.K,
        )
    ]
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1024, 4, 16, 16)).astype(np.float32)
    text = rng.standard_normal((1024, 1, 77, 1024)).astype(np.float16)
    results.append(
        bench_model(
            "mscoco", cfgs["mscoco"], latents, text, device, args.train_steps, args.examples, args.K
        )
    )
    for r in results:
        print(
            " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())
        )
    sizes = {"cifar10": 50000, "cifar2": 5000, "mscoco": 118287}
    for name, cfg in cfgs.items():
        r = results[1] if name == "mscoco" else results[0]
        h = estimate(cfg, r, sizes[name])
        print(f"estimate {name}: " + " ".join(f"{k}={v:.1f}h" for k, v in h.items()))


if __name__ == "__main__":
    main()
