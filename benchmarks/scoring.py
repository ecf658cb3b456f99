"""Bounded-memory kernel and scoring: n_train = 200,000 synthetic features, blockwise vs one-shot.

    python benchmarks/scoring.py [--n-train 200000] [--dim 1024] [--targets 64]

Both variants run in a fresh subprocess each and report wall time and peak resident memory
(ru_maxrss). The blockwise path is diffattr's (FeatureStore → kernel → write_scores with
TrakScorer); the one-shot baseline loads Φ whole and computes Φ (ΦᵀΦ+λI)⁻¹ Ψᵀ in one product.
The last line compares them and checks that they agree.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_features(root: Path, n: int, dim: int, targets: int, shards: int) -> None:
    from diffattr.artifacts import TargetFeatures, write_feature_shard, write_target_features

    rng = np.random.default_rng(0)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        lo, hi = bounds[s], bounds[s + 1]
        phi = rng.standard_normal((hi - lo, dim), np.float32)
        write_feature_shard(root / f"shard{s}.h5", phi, np.arange(lo, hi), np.arange(lo, hi), {})
    psi = rng.standard_normal((1, targets, dim), np.float32)
    write_target_features(root / "targets.h5", TargetFeatures(psi, [0], np.arange(targets)))


def run_blockwise(root: Path, block: int) -> dict:
    from diffattr.artifacts import FeatureStore, read_target_features, write_scores
    from diffattr.scoring import TrakScorer, kernel

    t0 = time.perf_counter()
    store = FeatureStore(sorted(root.glob("shard*.h5")))
    k = kernel(store, 0.01, block)
    psi = read_target_features(root / "targets.h5").features
    n_targets = psi.shape[1]
    write_scores(
        root / "scores.h5",
        [0],
        np.arange(n_targets),
        np.arange(store.n),
        TrakScorer([(store, k, psi)]),
        {},
        train_block=block,
        target_block=32,
    )
    return {"seconds": time.perf_counter() - t0}


def run_oneshot(root: Path) -> dict:
    import diffattr.scoring  # noqa: F401  (same imports as the blockwise child: same baseline)
    import torch  # noqa: F401
    from diffattr.artifacts import FeatureStore, read_target_features

    t0 = time.perf_counter()
    store = FeatureStore(sorted(root.glob("shard*.h5")))
    phi = store.read(0, store.n).astype(np.float64)  # Φ whole
    xtx = phi.T @ phi
    lam = 0.01 * np.trace(xtx) / phi.shape[1]
    psi = read_target_features(root / "targets.h5").features[0].astype(np.float64)
    scores = phi @ np.linalg.solve(xtx + lam * np.eye(len(xtx)), psi.T)
    np.save(root / "oneshot.npy", scores.T.astype(np.float32))
    return {"seconds": time.perf_counter() - t0}


def child(mode: str, root: str, block: int) -> None:
    import torch  # noqa: F401  (both children carry torch's baseline memory)

    result = run_blockwise(Path(root), block) if mode == "blockwise" else run_oneshot(Path(root))
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--targets", type=int, default=64)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--block", type=int, default=8192)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.block)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_features(root, args.n_train, args.dim, args.targets, args.shards)
        phi_mb = args.n_train * args.dim * 4 / 2**20
        results = {}
        for mode in ("oneshot", "blockwise"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, tmp, "--block", str(args.block)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        from diffattr.artifacts import read_scores

        blockwise = read_scores(root / "scores.h5").scores[0]
        oneshot = np.load(root / "oneshot.npy")
        err = float(np.abs(blockwise - oneshot).max() / np.abs(oneshot).max())
    print(
        f"# n_train={args.n_train:,} dim={args.dim} targets={args.targets} "
        f"block={args.block}; Φ is {phi_mb:.0f} MB in float32"
    )
    for mode, r in results.items():
        print(f"{mode:<10} {r['seconds']:8.1f} s   peak RSS {r['peak_mb']:8.0f} MB")
    print(
        "scoring: peak_memory_ratio="
        f"{results['blockwise']['peak_mb'] / results['oneshot']['peak_mb']:.2f} "
        f"time_ratio={results['blockwise']['seconds'] / results['oneshot']['seconds']:.2f} "
        f"max_rel_diff={err:.1e}"
    )


if __name__ == "__main__":
    main()
