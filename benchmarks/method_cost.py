"""Training-side featurization cost of every gradient method of the registry, in one run:
example·draws per second of one ensemble member, and the ratio to journey_trak's measured in the
same run (absolute rates depend on the machine and its load; the ratios much less).

    python benchmarks/method_cost.py [--config config/digits-lds.yaml] [--examples 64] [--repeats 3]

Each method featurizes its training feature kinds at the config's attribution steps (one kind
for most; journey_trak_local one per step) with the config's K, projector and batch size, on a
model of the config's architecture (the cost does not depend on the weights); das and das_step
add their residual weights (attribution.residual_timesteps forward passes per example). A kind
shared by two methods (das, das_step) is featurized once in a run and charged to both. ekfac and
the unlearning methods have no feature sets: their member jobs record their cost (score files'
``featurize_cost``; ``lds.json``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from diffattr.attribution import Attributor
from diffattr.config import attribution_steps, load, sampler_timesteps
from diffattr.data import PreparedData
from diffattr.layout import Member
from diffattr.methods import METHODS, GradientMethod
from diffattr.models import build_scheduler, build_unet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", nargs="+", default=["config/digits-lds.yaml"])
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load(["config/config.yaml", *args.config])
    a = cfg.attribution
    shape = (1, 8, 8) if cfg.dataset.name == "digits" else (3, 32, 32)
    steps = (
        list(a.steps)
        if isinstance(a.steps, tuple)
        else attribution_steps(
            a.steps,
            sampler_timesteps(cfg.diffusion.num_train_timesteps, cfg.targets.sampling_steps),
        )
    )
    rng = np.random.default_rng(0)
    n = args.examples
    data = PreparedData(
        images=rng.uniform(-1, 1, (n, *shape)).astype(np.float32),
        labels=np.arange(n) % 10,
        ids=np.arange(n),
        class_names=[str(c) for c in range(10)],
        name="cost",
    )
    model = build_unet(cfg.model, shape).eval()
    attributor = Attributor(model, build_scheduler(cfg.diffusion), Member(0, "final"), a, cfg.seed)
    positions = np.arange(n)
    seconds: dict[str, float] = {}
    attributor.featurize_train(METHODS["journey_trak"].kinds(steps)[0], data, positions[:1])  # warm

    def timed(key: str, work) -> float:
        """The fastest of ``--repeats`` runs (other load only ever adds time)."""
        if key not in seconds:
            runs = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                work()
                runs.append(time.perf_counter() - start)
            seconds[key] = min(runs)
        return seconds[key]

    print(f"{n} examples × K = {a.K} draws, steps {steps}, projection {a.projection.kind}")
    print(
        f"{'method':<20} {'kinds':>5} {'seconds':>9} {'example·draws/s':>16} {'× journey_trak':>15}"
    )
    rows = []
    for method in METHODS.values():
        if not isinstance(method, GradientMethod):
            continue
        kinds = method.kinds(steps)
        total = sum(
            timed(k.key, lambda k=k: attributor.featurize_train(k, data, positions)) for k in kinds
        )
        if method.residual_weighted:
            total += timed("residual", lambda: attributor.residual_weights(data, positions))
        rate = n * a.K / total  # example·draws per second of all the method's feature work
        rows.append((method.name, len(kinds), total, rate))
    base = dict((r[0], r[2]) for r in rows)["journey_trak"]
    for name, kinds, total, rate in rows:
        print(f"{name:<20} {kinds:>5} {total:>9.1f} {rate:>16.0f} {total / base:>15.2f}")


if __name__ == "__main__":
    main()
