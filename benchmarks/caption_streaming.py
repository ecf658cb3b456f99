"""Peak memory of conditional training with caption embeddings in memory vs. streamed from data.h5,
on a synthetic data.h5 with ≥ 100k captions, in one run (each variant in its own process).

    python benchmarks/caption_streaming.py [--images 20000] [--captions 5] [--length 77] [--dim 64]

(a) in memory - the embeddings loaded whole (what training did before: torch.from_numpy of the
                dataset), then training steps
(b) streamed  - ``read_data`` leaves them on disk (``StoredRows``); each batch reads its rows

The last line reads  caption_streaming: captions=<N> file_gb=<g> peak_rss_gb in_memory=<a>
streamed=<b> ratio=<a/b> seconds_per_step in_memory=<s> streamed=<t>.
At full COCO (118k images × 5 captions × 77 × 768 float32) the embeddings are ≈ 93 GB.
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


def make_data(path: Path, images: int, captions: int, length: int, dim: int) -> None:
    """A synthetic latent, text-conditioned data.h5 written in chunks (bounded memory)."""
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs["dataset"] = "synthetic"
        f.create_dataset("images", data=rng.uniform(-1, 1, (images, 4, 8, 8)).astype(np.float32))
        f.create_dataset("labels", data=np.full(images, -1))
        f.create_dataset("ids", data=np.arange(images))
        f.create_dataset("null_embedding", data=np.zeros((length, dim), np.float32))
        # contiguous, as write_data stores it (filled in slices: memory stays bounded)
        emb = f.create_dataset("caption_embeddings", (images, captions, length, dim), np.float32)
        for lo in range(0, images, 1000):
            hi = min(lo + 1000, images)
            emb[lo:hi] = rng.standard_normal((hi - lo, captions, length, dim), dtype=np.float32)


def run_variant(path: Path, variant: str, steps: int, dim: int) -> dict:
    """Train a tiny conditional UNet ``steps`` steps; peak RSS of this process."""
    import torch
    from diffattr.artifacts import read_data
    from diffattr.config import DiffusionConfig, ModelConfig, TrainConfig
    from diffattr.diffusion import train
    from diffattr.models import build_scheduler, build_unet

    torch.set_num_threads(1)
    data = read_data(path)
    conditions = data.extra["caption_embeddings"]
    if variant == "in_memory":
        conditions = torch.from_numpy(np.asarray(conditions))
    model = build_unet(
        ModelConfig.from_dict(
            {
                "conditional": True,
                "cross_attention_dim": dim,
                "block_out_channels": [8, 16],
                "layers_per_block": 1,
                "norm_num_groups": 4,
                "attention_head_dim": 2,
                "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            }
        ),
        (4, 8, 8),
    )
    recipe = TrainConfig.from_dict({"steps": steps, "batch_size": 64, "warmup_steps": 1})
    null = torch.from_numpy(data.extra["null_embedding"])
    start = time.time()
    train(
        model,
        build_scheduler(DiffusionConfig()),
        torch.from_numpy(data.images),
        recipe,
        0,
        progress=False,
        conditions=conditions,
        null_condition=null,
    )
    return {
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "seconds_per_step": (time.time() - start) / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--captions", type=int, default=5)
    parser.add_argument("--length", type=int, default=77)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # a child process: one variant
        print(json.dumps(run_variant(Path(args.path), args.variant, args.steps, args.dim)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.h5"
        make_data(path, args.images, args.captions, args.length, args.dim)
        size = path.stat().st_size / 2**30
        result = {}
        for variant in ("in_memory", "streamed"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--variant",
                    variant,
                    "--path",
                    str(path),
                    "--steps",
                    str(args.steps),
                    "--dim",
                    str(args.dim),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            result[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            print(variant, result[variant], flush=True)
    a, b = result["in_memory"], result["streamed"]
    print(
        f"caption_streaming: captions={args.images * args.captions} file_gb={size:.2f} "
        f"peak_rss_gb in_memory={a['peak_rss_gb']:.2f} streamed={b['peak_rss_gb']:.2f} "
        f"ratio={a['peak_rss_gb'] / b['peak_rss_gb']:.1f} seconds_per_step "
        f"in_memory={a['seconds_per_step']:.3f} streamed={b['seconds_per_step']:.3f}"
    )


if __name__ == "__main__":
    main()
