"""What the content digests cost at CIFAR-10 scale (config/cifar10.yaml: n = 50,000 in 10 shards,
k = 7192 factored projection dimensions, K = 20, 10 steps × 100 targets).

    python benchmarks/digest_cost.py [--n-train 50000] [--shards 10] [--dim 7192] [--steps 10]
                                     [--targets 100] [--rate 2052]

A featurize job writes one shard: the digest it adds is compared with the job's time at the
measured featurization rate (``--rate`` example·draws/s, the H200's of config/cifar10.yaml: its
fastest job, so the largest share). A scoring job of one member is run here for real (synthetic
Φ, kernel and ψ of the CIFAR sizes; TrakScorer, write_scores): what verification adds is the
digest check of its inputs and the digest of its output, less the sha256 of the shard files it
computed before (``FeatureStore.digests`` now returns the verified digests). The ratios are
printed last.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def digest_seconds(path: Path) -> float:
    from diffattr.storage import datasets_digest

    with h5py.File(path, "r") as f:
        return timed(datasets_digest, f)[0]


def verify_seconds(paths: list[Path]) -> float:
    from diffattr import storage

    storage._VERIFIED.clear()
    total = 0.0
    for path in paths:
        with h5py.File(path, "r") as f:
            total += timed(storage.check_digest, f, path)[0]
    storage._VERIFIED.clear()
    return total


def main() -> None:
    from diffattr import storage
    from diffattr.artifacts import (
        FeatureStore,
        TargetFeatures,
        read_kernel,
        read_target_features,
        write_feature_shard,
        write_kernel,
        write_scores,
        write_target_features,
    )
    from diffattr.scoring import Kernel, TrakScorer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=50000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--dim", type=int, default=7192)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--K", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2052.0, help="example·draws/s")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = args.n_train // args.shards
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        phi = rng.standard_normal((rows, args.dim), np.float32)
        shards = [root / f"shard{s}.h5" for s in range(args.shards)]
        for s, path in enumerate(shards):
            ids = np.arange(s * rows, (s + 1) * rows)
            write_seconds = timed(write_feature_shard, path, phi, ids, ids, {})[0]
        write_digest = digest_seconds(shards[-1])
        featurize = rows * args.K / args.rate
        print(
            f"featurize job: one shard {phi.nbytes / 1e6:.0f} MB, written in {write_seconds:.2f} s"
            f" of which its digest {write_digest:.2f} s; the job at {args.rate:g} "
            f"example·draws/s takes {featurize:.0f} s"
        )
        kernel = root / "kernel.h5"
        write_kernel(kernel, Kernel("primal", np.eye(args.dim) * 0.01, 0.01, {}))
        psi = rng.standard_normal((args.steps, args.targets, args.dim), np.float32)
        target = root / "psi.h5"
        write_target_features(
            target, TargetFeatures(psi, list(range(args.steps)), np.arange(args.targets))
        )
        inputs = [*shards, kernel, target]
        old = sum(timed(storage.file_digest, p)[0] for p in shards)  # the former shard digests
        verify = verify_seconds(inputs)

        def score_job():
            store = FeatureStore(shards)
            store.digests()
            member = (store, read_kernel(kernel), read_target_features(target).features)
            write_scores(
                root / "scores.h5",
                list(range(args.steps)),
                np.arange(args.targets),
                np.arange(store.n),
                TrakScorer([member]),
                {},
                train_block=16384,
            )

        storage._VERIFIED.clear()
        job = timed(score_job)[0]
        out_digest = digest_seconds(root / "scores.h5")
        added = verify + out_digest - old
        print(
            f"scoring job (one member): {job:.1f} s; verifying its inputs "
            f"({sum(p.stat().st_size for p in inputs) / 1e9:.2f} GB) {verify:.2f} s, its output's "
            f"digest {out_digest:.2f} s, less the shard files' sha256 it computed before "
            f"{old:.2f} s: {added:+.2f} s"
        )
        print(f"featurize: digest / job time = {write_digest / featurize:.2%}")
        print(f"scoring: added / job time without it = {added / (job - added):.2%}")


if __name__ == "__main__":
    main()
