"""LDS parity of the factored and dense projectors on an existing run (issue: accuracy parity).

    python benchmarks/projection_parity.py [--run results/default] [--config config/config.yaml]

Reuses the run's models, targets, subsets and LDS ground truth, recomputes Journey-TRAK features,
kernels and scores with the dense seeded JL projector of the same dimension as the factored one
(through the same stages the workflow runs, in process), and prints both LDS tables side by side
with their bootstrap intervals: the factored one should not be worse than the dense one.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd
from diffattr import layout
from diffattr.artifacts import FeatureStore
from diffattr.config import RunConfig, load
from diffattr.stages import load as load_stage
from diffattr.stages import slice_of


def stage(command: str, cfg: RunConfig, **paths: object) -> None:
    function, slice_ = load_stage(command), slice_of(command)
    function(RunConfig.from_slice(cfg.slice(slice_), slice_), **paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="results/default")
    parser.add_argument("--config", nargs="+", default=["config/config.yaml"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    cfg = load(args.config)
    run = layout.Paths(args.run)
    members = layout.members(cfg.train.ensemble, cfg.attribution.checkpoints)
    factored = [
        run.train_features("loss", m, s) for m in members for s in range(cfg.attribution.shards)
    ]
    dim = FeatureStore(factored[: cfg.attribution.shards]).attrs["projection"]["dim"]
    projection = dataclasses.replace(cfg.attribution.projection, kind="dense", dim=dim)
    attribution = dataclasses.replace(cfg.attribution, projection=projection, shards=1)
    dense = dataclasses.replace(cfg, device="cpu", attribution=attribution)
    out = layout.Paths(f"{args.run}/parity-dense")
    shards, kernels, targets = [], [], []
    for m in members:
        model = Path(run.model(m.index))
        shard = Path(out.train_features("loss", m, 0))
        if not shard.exists():
            stage(
                "featurize-train",
                dense,
                data=Path(run.data),
                model=model,
                member=str(m),
                model_output="loss",
                shard=0,
                shards=1,
                out=shard,
                progress=False,
            )
        kernel = Path(out.kernel("loss", m))
        stage("kernel", dense, features=[shard], out=kernel)
        target = Path(out.target_features("journey_trak", m))
        if not target.exists():
            stage(
                "featurize-targets",
                dense,
                model=model,
                member=str(m),
                method="journey_trak",
                targets=Path(run.targets),
                out=target,
            )
        shards.append(shard)
        kernels.append(kernel)
        targets.append(target)
    scores = Path(out.scores("journey_trak"))
    stage(
        "score",
        dense,
        method="journey_trak",
        data=Path(run.data),
        targets=Path(run.targets),
        out=scores,
        kernels=kernels,
        target_features=targets,
        train_features=shards,
    )
    ground_truth = [Path(run.ground_truth(j)) for j in range(cfg.lds.n_subsets)]
    stage(
        "lds-report",
        dense,
        subsets=Path(run.subsets),
        ground_truth=ground_truth,
        scores=[scores],
        train_features=shards,
        target_features=targets,
        out_csv=Path(out.report("lds.csv")),
        out_json=Path(out.report("lds.json")),
        out_figure=Path(out.figure("lds.png")),
    )
    dense_table = pd.read_csv(out.report("lds.csv")).assign(projection="dense")
    factored_table = pd.read_csv(run.report("lds.csv")).assign(projection="factored")
    both = pd.concat([factored_table[factored_table.method == "journey_trak"], dense_table])
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
