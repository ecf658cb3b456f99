"""Top-k scoring at scale (attribution.top_k): a score-shard job's time and peak memory on
synthetic features, flat in n, and the 1 M-example run projected from it.

    python benchmarks/topk_scale.py                        # the sweep and the projection
    python benchmarks/topk_scale.py --n 100000 200000 400000 --targets 256 --steps 1

Each job runs in a fresh subprocess through diffattr's own path: ``TrakScorer`` (primal kernel,
projected dim 2440 = the default config's factored projection of the default UNet) scoring
``attribution.block_size`` = 8192 rows at a time, ``stages.scoring.ranked_rows`` keeping the
top K = 2048 of each sign per (step, target), ``artifacts.write_top_k`` writing the shard file.
It reports wall time, ru_maxrss (peak resident memory of the process) and tracemalloc's peak
(Python and numpy heap). Training features are a pool of two seeded row blocks cycled over the
n rows (``PooledRows``), so no 4 GB feature files are written per 400k rows; reading real HDF5
shards adds their I/O (the default run's page-cached reads are not the bottleneck).
The kernel (its own job) is a synthetic SPD matrix: its cost is not part of scoring.

The merge job is measured on ``--merge-shards`` synthetic shard files and projected linearly in
shards × steps × targets (it reads every shard's 2 × steps × targets × K entries once).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

DIM = 2440  # the default config's projected dimension (diffattr.sizes: factored 8 × 8 per layer)
BLOCK = 8192  # attribution.block_size (config/config.yaml)


class PooledRows:
    """Φ (n × dim) read in aligned blocks of ``BLOCK`` rows, cycling two seeded blocks."""

    def __init__(self, n: int, dim: int):
        rng = np.random.default_rng(0)
        self.n, self.dim = n, dim
        self.pool = [rng.standard_normal((BLOCK, dim), np.float32) for _ in range(2)]

    def read(self, lo: int, hi: int) -> np.ndarray:
        return self.pool[(lo // BLOCK) % 2][: hi - lo]


def score_job(n: int, targets: int, steps: int, k: int, out: Path) -> dict:
    """One score-shard job over training rows [0, n)."""
    from diffattr.artifacts import write_top_k
    from diffattr.scoring import Kernel, TrakScorer
    from diffattr.stages.scoring import ranked_rows

    tracemalloc.start()
    rng = np.random.default_rng(1)
    a = rng.standard_normal((DIM, DIM)) / DIM
    kernel = Kernel("primal", a @ a.T + np.eye(DIM), 1.0)
    psi = rng.standard_normal((steps, targets, DIM)).astype(np.float32)
    scorer = TrakScorer([(PooledRows(n, DIM), kernel, psi)])
    t0 = time.perf_counter()
    parts = ranked_rows(scorer, steps, targets, 0, n, k, BLOCK)
    write_top_k(out, list(range(steps)), np.arange(targets), n, k, parts, {"method": "synthetic"})
    seconds = time.perf_counter() - t0
    _, traced = tracemalloc.get_traced_memory()
    return {
        "job": "score_shard",
        "n": n,
        "targets": targets,
        "steps": steps,
        "k": k,
        "seconds": seconds,
        "s_per_row_target_step": seconds / (n * targets * steps),
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "traced_peak_mb": traced / 2**20,
    }


def merge_job(shards: int, targets: int, steps: int, k: int, folder: Path) -> dict:
    """Merge ``shards`` synthetic top-k shard files (what merge-top-k reads)."""
    from diffattr.artifacts import write_top_k
    from diffattr.config import RunConfig
    from diffattr.stages.scoring import merge_top_k
    from diffattr.topk import Ranked, rank_dense

    rng = np.random.default_rng(2)
    rows = 4 * k
    files = []
    for s in range(shards):
        ranked = rank_dense(rng.standard_normal((steps, targets, rows), np.float32), k)
        shifted = Ranked(ranked.index + s * rows, ranked.score)
        parts = [
            (t, slice(0, targets), Ranked(shifted.index[:, t], shifted.score[:, t]))
            for t in range(steps)
        ]
        path = folder / f"shard{s}.h5"
        attrs = {"method": "synthetic", "top_k": k, "shard": s, "rows": [s * rows, (s + 1) * rows]}
        write_top_k(path, list(range(steps)), np.arange(targets), shards * rows, k, parts, attrs)
        files.append(path)
    cfg = RunConfig.from_slice(json.dumps({"attribution": {"top_k": k}}), "merge_top_k")
    tracemalloc.start()
    t0 = time.perf_counter()
    merge_top_k(cfg, shard_files=files, out=folder / "merged.h5")
    seconds = time.perf_counter() - t0
    _, traced = tracemalloc.get_traced_memory()
    return {
        "job": "merge_top_k",
        "shards": shards,
        "targets": targets,
        "steps": steps,
        "k": k,
        "seconds": seconds,
        "s_per_shard_target_step": seconds / (shards * targets * steps),
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "traced_peak_mb": traced / 2**20,
    }


def child(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 200_000, 400_000])
    parser.add_argument("--targets", type=int, default=256, help="targets of the n sweep")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--k", type=int, default=2048)
    parser.add_argument("--unit-n", type=int, default=100_000, help="rows of the 1000-target job")
    parser.add_argument("--merge-shards", type=int, default=4)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *values = args.child
        numbers = [int(v) for v in values[:-1]]
        job = score_job if kind == "score" else merge_job
        print(json.dumps(job(*numbers, Path(values[-1]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for n in args.n:
            rows.append(
                child(
                    [
                        "score",
                        str(n),
                        str(args.targets),
                        str(args.steps),
                        str(args.k),
                        f"{tmp}/s{n}.h5",
                    ]
                )
            )
            print(json.dumps(rows[-1]), flush=True)
        unit = child(["score", str(args.unit_n), "1000", "1", str(args.k), f"{tmp}/unit.h5"])
        print(json.dumps(unit), flush=True)
        merged = child(["merge", str(args.merge_shards), "1000", "1", str(args.k), tmp])
        print(json.dumps(merged), flush=True)
    # projection: 1 M examples × 1000 targets × 10 steps, k = 2048
    n, targets, steps = 1_000_000, 1000, 10
    cpu_s = unit["s_per_row_target_step"] * n * targets * steps
    print(
        f"1M × 1000 targets × 10 steps, k = {args.k}, dim {DIM}: "
        f"{cpu_s / 3600:.1f} h of scoring on this machine's 2 cores (linear in rows from the "
        f"{args.unit_n}-row, 1000-target job: {unit['seconds']:.1f} s)"
    )
    for shards in (50, 100, 200):
        per_job = cpu_s / shards
        merge_s = merged["s_per_shard_target_step"] * shards * targets * steps
        print(
            f"  {shards} shards of {n // shards} rows: one score_shard job {per_job / 60:.1f} min "
            f"(peak ≈ {unit['maxrss_mb']:.0f} MB, flat in rows), all in parallel; merge "
            f"{merge_s / 60:.1f} min; total {shards} × {per_job / 60:.1f} = {cpu_s / 3600:.1f} "
            "job-hours"
        )
    peaks = ", ".join(f"n = {r['n']}: {r['maxrss_mb']:.0f} MB" for r in rows)
    print(f"peak resident memory of one job vs n ({args.targets} targets): {peaks}")


if __name__ == "__main__":
    main()
