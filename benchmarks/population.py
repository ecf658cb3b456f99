"""Population training against one-by-one training: models per second (models × steps / s)
for P models trained at once (``diffusion.population``) and for one model alone, same recipe.

    python benchmarks/population.py [--config config/digits-lds.yaml] [--sizes 8 32 128]
        [--steps 50] [--device cuda]

A prepared device check (≤ 10 minutes on one GPU for the defaults): prints, per P, the
population's model-steps/s, one model's, and their ratio. On a CPU the compute is already
saturated by one model (a probe measured 0.81×); the point is a GPU, where one small model
leaves the device mostly idle.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch


def main() -> None:
    from diffattr.config import load
    from diffattr.diffusion import init_seeded, train
    from diffattr.models import build_scheduler, build_unet, resolve_device
    from diffattr.population import train_population
    from diffattr.procedural import render_fontdigits

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", nargs="+", default=["config/config.yaml", "config/digits-lds.yaml"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    cfg = load(args.config)
    device = resolve_device(args.device)
    recipe = dataclasses.replace(cfg.train, steps=args.steps, checkpoints=(), log_every=args.steps)
    scheduler = build_scheduler(cfg.diffusion)
    images = torch.from_numpy(render_fontdigits(100, 0)[0])
    shape = tuple(images.shape[1:])

    def build(i: int) -> torch.nn.Module:
        return init_seeded(lambda: build_unet(cfg.model, shape), 0, "population", i).to(device)

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    rows = torch.arange(len(images))
    train(
        build(0), scheduler, images, dataclasses.replace(recipe, steps=3), 0, rows, progress=False
    )
    alone = timed(lambda: train(build(0), scheduler, images, recipe, 0, rows, progress=False))
    single = args.steps / alone
    print(
        f"{device}: one model alone {single:.1f} model-steps/s ({alone:.1f} s, {args.steps} steps)"
    )
    for size in args.sizes:
        models = [build(i) for i in range(size)]
        seconds = timed(
            lambda models=models, size=size: train_population(
                models, scheduler, images, recipe, list(range(size)), [rows] * size, progress=False
            )
        )
        rate = size * args.steps / seconds
        print(f"P = {size:4d}: {rate:8.1f} model-steps/s, {rate / single:6.2f}× one by one")


if __name__ == "__main__":
    main()
