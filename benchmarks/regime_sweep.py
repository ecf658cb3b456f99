"""The regime sweep: at which training-set size and training length does each attribution step
stop memorizing? Models of complementary halves (disjoint data) of a procedural dataset, per
(master seed, n per half, training steps), measured with the regime diagnostics of
``diffattr.lds.regime`` at every attribution step.

    python benchmarks/regime_sweep.py [--dataset fontdigits] [--n 250 1000 4000 16000]
        [--train-steps 800 400] [--seeds 0 1] [--targets 64] [--out results/regime-sweep.csv]

The model, recipe and attribution steps are ``config/digits-lds.yaml``'s (one core, as one job
runs); the data: ``fontdigits`` 8×8, 2n images, split in two halves at random (or the
bundled ``digits``, 50 per class and 2n of them drawn at random: the calibration point, since
``config/digits-lds.yaml`` trains on 250 of those 500). Per model pair:
each half's model trained alone; 64 targets sampled by model A (100-step DDPM sampler) from
x_T; from each step's x_t (and from x_T) both models regenerate with the same noise
(agreement); each regeneration against its own half (near copies, d₁/d₂ < 1/3); each model's
loss at t on its half vs the other (gap, 2 000 images × 2 draws a side). Rows are appended to
``--out`` as they are measured (a killed sweep keeps what it finished; a rerun skips the
settings present).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

COLUMNS = [
    "dataset",
    "seed",
    "n",
    "train_steps",
    "step",
    "agreement",
    "near_copies_a",
    "near_copies_b",
    "loss_train",
    "loss_held",
    "loss_gap",
    "verdict",
    "train_seconds",
    "measure_seconds",
]


@dataclasses.dataclass
class Pair:
    """Two models of complementary halves of ``x`` (the rows of each half)."""

    seed: int
    n: int
    x: torch.Tensor
    halves: list[torch.Tensor]
    models: list[torch.nn.Module]


def train_pair(cfg, scheduler, x, halves, seed: int, length: int) -> list[torch.nn.Module]:
    """Each half's model, trained alone with the config's recipe for ``length`` steps."""
    from diffattr.diffusion import init_seeded, train
    from diffattr.models import build_unet
    from diffattr.seeding import derive_seed

    recipe = dataclasses.replace(cfg.train, steps=length, checkpoints=())
    models = []
    n = len(halves[0])
    for h, rows in enumerate(halves):
        model = init_seeded(lambda: build_unet(cfg.model, tuple(x.shape[1:])), seed, "regime", n, h)
        train(model, scheduler, x, recipe, derive_seed(seed, "regime", n, h), rows)
        models.append(model.eval())
    return models


def measure_pair(pair: Pair, scheduler, steps: list[int], args) -> list[dict]:
    """The diagnostics at x_T and at every step (one dict per row)."""
    from diffattr.diffusion import denoise, initial_noise, model_predictor
    from diffattr.lds import regime
    from diffattr.seeding import generator, numpy_rng

    seed, n, x, halves, models = pair.seed, pair.n, pair.x, pair.halves, pair.models
    gens = [generator(seed, "regime-target", j) for j in range(args.targets)]
    x_T = initial_noise(tuple(x.shape[1:]), gens)
    ref = denoise(
        x_T, scheduler, args.sampling_steps, model_predictor(models[0]), gens, None, steps
    )
    pick = numpy_rng(seed, "regime-loss", n).permutation(n)[: args.loss_images]
    loss_rows = [h[pick] for h in halves]
    rows = []
    for t in [None, *steps]:
        x_t = x_T if t is None else ref.x_t[ref.steps.index(t)]
        tag = "x_T" if t is None else t
        a, b = regime.regenerate(
            models,
            scheduler,
            x_t,
            t,
            args.sampling_steps,
            lambda j, tag=tag: (seed, "regime-regen", tag, j),
        )
        copies = [
            regime.near_copy(s, x[h].numpy()).mean() for s, h in zip((a, b), halves, strict=True)
        ]
        tt = scheduler.config.num_train_timesteps - 1 if t is None else t
        train_loss, held_loss = regime.pair_losses(
            models, scheduler.alphas_cumprod, [x[r] for r in loss_rows], tt, seed
        )
        gap = regime.relative_gap(train_loss, held_loss)
        rows.append(
            {
                "step": tag,
                "agreement": f"{regime.agreement(a, b).mean():.4f}",
                "near_copies_a": f"{copies[0]:.4f}",
                "near_copies_b": f"{copies[1]:.4f}",
                "loss_train": f"{train_loss:.5f}",
                "loss_held": f"{held_loss:.5f}",
                "loss_gap": f"{gap:.4f}",
                "verdict": regime.verdict(float(np.mean(copies)), gap),
            }
        )
    return rows


def dataset(name: str, n: int, seed: int) -> np.ndarray:
    """2n images of ``name``: fontdigits keyed by the seed; digits: 2n of the first 50 per
    class (digits-lds's 500), drawn by the seed."""
    from diffattr.data import prepare
    from diffattr.procedural import render_fontdigits
    from diffattr.seeding import numpy_rng

    if name == "fontdigits":
        return render_fontdigits(2 * n // 10, seed, 8)[0]
    images = prepare({"name": "digits", "per_class": 50}).images
    return images[np.sort(numpy_rng(seed, "regime-digits", n).permutation(len(images))[: 2 * n])]


def table(path: Path) -> str:
    """The sweep as Markdown: per (dataset, n, training steps) and step the verdicts (M, T, G:
    seed 0, seed 1) and loss gaps in % (seed 0/seed 1); then the lowest agreement over the steps
    and the largest share of near copies of either model."""
    import pandas as pd

    rows = pd.read_csv(path)
    rows["step"] = rows["step"].astype(str)
    letter = {"memorizing": "M", "transitional": "T", "generalizing": "G"}
    head = ["data", "n per half", "train steps", *_steps(rows), "agreement ≥", "near copies ≤"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (data, n, length), group in rows.groupby(["dataset", "n", "train_steps"], sort=False):
        cells = []
        for step in _steps(rows):
            at = group[group.step == step].sort_values("seed")
            gap = "/".join(f"{100 * v:+.0f}" for v in at.loss_gap)
            cells.append("".join(letter[v] for v in at.verdict) + f" {gap}")
        copies = max(group.near_copies_a.max(), group.near_copies_b.max())
        cells += [f"{group.agreement.min():.2f}", f"{100 * copies:.0f} %"]
        out.append(f"| {data} | {n} | {length} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _steps(rows) -> list[str]:
    return list(dict.fromkeys(rows.step))


def main() -> None:
    from diffattr.config import load
    from diffattr.models import build_scheduler
    from diffattr.seeding import numpy_rng

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=["fontdigits", "digits"], default="fontdigits")
    ap.add_argument("--n", type=int, nargs="+", default=[250, 1000, 4000, 16000])
    ap.add_argument("--train-steps", type=int, nargs="+", default=[800, 400])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--targets", type=int, default=64)
    ap.add_argument("--sampling-steps", type=int, default=100)
    ap.add_argument("--loss-images", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", nargs="+", default=["config/config.yaml", "config/digits-lds.yaml"])
    ap.add_argument("--out", default="results/regime-sweep.csv")
    ap.add_argument("--table", action="store_true", help="print --out as Markdown and stop")
    args = ap.parse_args()
    if args.table:
        print(table(Path(args.out)))
        return
    torch.set_num_threads(args.threads)
    cfg = load(args.config)
    steps = list(cfg.attribution_steps())
    scheduler = build_scheduler(cfg.diffusion)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        with out.open() as f:
            done = {
                (r["dataset"], int(r["seed"]), int(r["n"]), int(r["train_steps"]))
                for r in csv.DictReader(f)
            }
    else:
        with out.open("w", newline="") as f:
            csv.writer(f).writerow(COLUMNS)
    for n in args.n:
        for seed in args.seeds:
            images = dataset(args.dataset, n, seed)
            order = numpy_rng(seed, "regime-halves", n).permutation(len(images))
            halves = [torch.from_numpy(np.sort(order[:n])), torch.from_numpy(np.sort(order[n:]))]
            x = torch.from_numpy(images)
            for length in args.train_steps:
                if (args.dataset, seed, n, length) in done:
                    continue
                start = time.time()
                models = train_pair(cfg, scheduler, x, halves, seed, length)
                train_seconds = (time.time() - start) / 2
                start = time.time()
                rows = measure_pair(Pair(seed, n, x, halves, models), scheduler, steps, args)
                measure = time.time() - start
                fixed = {"dataset": args.dataset, "seed": seed, "n": n, "train_steps": length}
                timing = {
                    "train_seconds": f"{train_seconds:.1f}",
                    "measure_seconds": f"{measure:.1f}",
                }
                with out.open("a", newline="") as f:
                    writer = csv.DictWriter(f, COLUMNS)
                    writer.writerows({**fixed, **row, **timing} for row in rows)
                print(
                    f"seed {seed} n {n} steps {length}: train {train_seconds:.0f} s/model, "
                    f"measure {measure:.0f} s",
                    flush=True,
                )
                for row in rows:
                    print("  ", *row.values(), flush=True)


if __name__ == "__main__":
    main()
