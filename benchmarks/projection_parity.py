"""LDS parity of the factored and dense projectors on an existing run (issue: accuracy parity).

    python benchmarks/projection_parity.py [--run results/default] [--config config/config.yaml]

Reuses the run's models, targets, subsets and LDS ground truth, recomputes Journey-TRAK features,
kernels and scores with the dense seeded JL projector of the same dimension as the factored one
(through the same `diffattr` CLI steps the workflow runs), and prints both LDS tables side by side
with their bootstrap intervals: the factored one should not be worse than the dense one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import yaml


def diffattr(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "diffattr", *args, "--no-progress"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="results/default")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--threads", default="2")
    args = parser.parse_args()
    run = Path(args.run)
    cfg = yaml.safe_load(Path(args.config).read_text())
    members = sorted(p.stem for p in (run / "kernels" / "loss").glob("*.h5"))
    with h5py.File(run / "features" / "train" / "loss" / members[0] / "shard0.h5") as f:
        dim = json.loads(f.attrs["projection"])["dim"]
    att = {**cfg["attribution"], "projection": {"kind": "dense", "dim": dim}, "shards": 1}
    att.setdefault("lambda", 0.01)
    att.setdefault("block_size", 8192)
    att.setdefault("batch_size", 64)
    base = {
        "seed": cfg.get("seed", 0),
        "device": "cpu",
        "dataset": cfg["dataset"],
        "attribution": att,
    }
    out = run / "parity-dense"
    c = json.dumps(base)
    shards, kernels, targets = [], [], []
    for m in members:
        model = run / "models" / m.split("_")[0]
        shard = out / "features" / "train" / "loss" / m / "shard0.h5"
        if not shard.exists():
            diffattr(
                "featurize-train",
                "--cfg",
                c,
                "--data",
                str(run / "data.h5"),
                "--model",
                str(model),
                "--member",
                m,
                "--output",
                "loss",
                "--out",
                str(shard),
                "--threads",
                args.threads,
            )
        kernel = out / "kernels" / "loss" / f"{m}.h5"
        diffattr("kernel", "--cfg", c, "--features", str(shard), "--out", str(kernel))
        target = out / "features" / "targets" / "journey_trak" / f"{m}.h5"
        if not target.exists():
            diffattr(
                "featurize-targets",
                "--cfg",
                c,
                "--model",
                str(model),
                "--member",
                m,
                "--method",
                "journey_trak",
                "--targets",
                str(run / "targets.h5"),
                "--out",
                str(target),
                "--threads",
                args.threads,
            )
        shards.append(str(shard))
        kernels.append(str(kernel))
        targets.append(str(target))
    scores = out / "scores" / "journey_trak.h5"
    diffattr(
        "score",
        "--cfg",
        c,
        "--method",
        "journey_trak",
        "--data",
        str(run / "data.h5"),
        "--targets",
        str(run / "targets.h5"),
        "--out",
        str(scores),
        "--kernels",
        *kernels,
        "--target-features",
        *targets,
        "--train-features",
        *shards,
    )
    lds_cfg = json.dumps({"seed": cfg.get("seed", 0), "lds": cfg["lds"]})
    gts = sorted(str(p) for p in (run / "lds" / "ground_truth").glob("s*.h5"))
    diffattr(
        "lds-report",
        "--cfg",
        lds_cfg,
        "--subsets",
        str(run / "lds" / "subsets.h5"),
        "--ground-truth",
        *gts,
        "--scores",
        str(scores),
        "--train-features",
        *shards,
        "--target-features",
        *targets,
        "--out-csv",
        str(out / "lds.csv"),
        "--out-json",
        str(out / "lds.json"),
        "--out-figure",
        str(out / "lds.png"),
    )
    dense = pd.read_csv(out / "lds.csv").assign(projection="dense")
    factored = pd.read_csv(run / "reports" / "lds.csv").assign(projection="factored")
    both = pd.concat([factored[factored.method == "journey_trak"], dense])
    both = both[both.lambda_source == "tuned"]
    table = both.pivot_table(
        index=["ground_truth", "step"], columns="projection", values=["lds", "ci_low", "ci_high"]
    )
    pd.set_option("display.width", 160)
    print(f"# journey_trak LDS, factored vs dense (k = {dim}), λ tuned on the tuning subsets")
    print(table.round(3).to_string())
    diff = table["lds"]["factored"] - table["lds"]["dense"]
    print(
        f"parity: mean LDS factored - dense = {diff.mean():+.3f}; factored below the dense "
        f"interval at {(table['lds']['factored'] < table['ci_low']['dense']).sum()} of "
        f"{len(table)} rows"
    )


if __name__ == "__main__":
    main()
