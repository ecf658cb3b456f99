"""The CIFAR-10 and MS COCO paths through Snakemake on tiny synthetic data in the official formats,
and dry runs of the paper-scale configs (config/cifar10.yaml, cifar2.yaml, mscoco.yaml)."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import COND_UNET, REPO, snakemake, workdir
from synthetic import (
    write_cifar_archive,
    write_coco,
    write_image_folder,
    write_pretrained_pipeline,
    write_tiny_encoders,
)

pytestmark = pytest.mark.slow

TINY = {
    "train": {
        "ensemble": 1,
        "steps": 30,
        "batch_size": 16,
        "warmup_steps": 2,
        "ema_decay": 0.9,
        "log_every": 10,
    },
    "targets": {"n": 2, "sampling_steps": 20},
    "attribution": {"steps": 2, "K": 2, "R": 2, "shards": 1, "batch_size": 8, "block_size": 32},
    "counterfactual": {"enabled": False},
    "figures": {"n_targets": 1, "top_k": 2},
}


def run_config(tmp_path, cfg: dict, target: str = "all"):
    cwd = workdir(tmp_path / "wf")
    (cwd / "config" / "synthetic.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(cwd, target, configfile="config/synthetic.yaml")
    return cwd / "results" / cfg["run"]


def test_cifar10_binary_archive_end_to_end(tmp_path):
    archive = write_cifar_archive(tmp_path / "cifar-10-binary.tar.gz", "binary", n_train=40)
    cfg = {
        "run": "cifar",
        "device": "cpu",
        "dataset": {"name": "cifar10", "root": str(archive), "flip": True},
        "model": {
            "block_out_channels": [8, 16],
            "layers_per_block": 1,
            "norm_num_groups": 4,
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
        },
        "attribution": {**TINY["attribution"], "methods": ["journey_trak", "pixel_similarity"]},
        "lds": {"enabled": False},
        **{k: v for k, v in TINY.items() if k not in ("attribution",)},
    }
    run = run_config(tmp_path, cfg)
    with h5py.File(run / "scores" / "journey_trak.h5") as f:
        assert f["scores"].shape == (2, 2, 40)
        assert np.isfinite(f["scores"][()]).all()
    assert (run / "figures" / "attributions" / "journey_trak" / "target-0.png").exists()


def test_image_folder_dataset_with_a_pretrained_model_end_to_end(tmp_path):
    """Your own images (dataset.name: folder, labels from the subfolders) and your own model
    (train.pretrained: a DDPMPipeline folder written by diffusers itself) through import,
    sampling, attribution and the figures; the imported member opens in DDPMPipeline."""
    from diffusers import DDPMPipeline

    write_image_folder(tmp_path / "imgs", classes=("a", "b", "c"), per_class=6)
    unet = {
        "block_out_channels": [8, 16],
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "down_block_types": ["DownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "UpBlock2D"],
    }
    pretrained = write_pretrained_pipeline(tmp_path / "my-ddpm", unet, (3, 8, 8))
    cfg = {
        "run": "folder",
        "device": "cpu",
        "dataset": {"name": "folder", "root": str(tmp_path / "imgs"), "image_size": 8},
        "model": unet,
        "attribution": {**TINY["attribution"], "methods": ["journey_trak", "pixel_similarity"]},
        "lds": {"enabled": False},
        **{k: v for k, v in TINY.items() if k not in ("attribution",)},
    }
    cfg["train"] = {**cfg["train"], "pretrained": [str(pretrained)]}
    run = run_config(tmp_path, cfg)
    with h5py.File(run / "data.h5") as f:
        assert f["images"].shape == (18, 3, 8, 8) and f["labels"][()].tolist()[-1] == 2
    with h5py.File(run / "scores" / "journey_trak.h5") as f:
        assert f["scores"].shape == (2, 2, 18) and np.isfinite(f["scores"][()]).all()
    assert (run / "figures" / "attributions" / "journey_trak" / "target-0.png").exists()
    assert not (run / "logs" / "train_model").exists()  # imported, not trained
    imported = DDPMPipeline.from_pretrained(run / "models" / "m0" / "final")
    original = DDPMPipeline.from_pretrained(pretrained)
    for (name, a), b in zip(
        imported.unet.state_dict().items(), original.unet.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name

    # More targets later, without re-featurizing: images from a folder and new samples; only
    # the extra sets' own jobs run, and no training-side file changes.
    training_side = {
        p: p.read_bytes() for d in ("features/train", "kernels") for p in (run / d).rglob("*.h5")
    }
    cfg["extra_targets"] = {
        "images": {"mine": str(tmp_path / "imgs" / "b")},
        "samples": {"more": 2},
    }
    (run.parent.parent / "config" / "synthetic.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(run.parent.parent, configfile="config/synthetic.yaml")
    ran = set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, re.M))
    assert ran == {
        "sample_extra_targets",
        "featurize_extra_targets",
        "score_extra",
        "figure_extra",
        "all",
    }, ran
    assert all(p.read_bytes() == data for p, data in training_side.items())
    for name, q in [("mine", 6), ("more", 2)]:
        extra = run / "extra" / name
        with h5py.File(extra / "scores" / "journey_trak.h5") as f:
            assert f["scores"].shape == (2, q, 18) and np.isfinite(f["scores"][()]).all()
        assert (extra / "figures" / "attributions" / "pixel_similarity" / "target-0.png").exists()
    with h5py.File(run / "extra" / "mine" / "targets.h5") as f:
        assert "forward-diffused" in f.attrs["source"]
    # From Python: the same set scored in this process equals the workflow's, bit for bit.
    from diffattr.errors import ConfigError
    from diffattr.results import Run

    (run.parent.parent / "config" / "seed1.yaml").write_text("seed: 1\n")

    workflow_scores = Run(run).scores("journey_trak", target_set="mine")
    configs = [run.parent.parent / "config" / n for n in ("config.yaml", "synthetic.yaml")]
    scored = Run(run).add_targets("mine", configs, images=tmp_path / "imgs" / "b")
    assert scored == ["journey_trak", "pixel_similarity"]
    again = Run(run).scores("journey_trak", target_set="mine")
    assert again.dims == ("step", "target", "train") and again.shape == (2, 6, 18)
    np.testing.assert_array_equal(again.values, workflow_scores.values)
    assert Run(run).extra_sets() == ["mine", "more"]
    # The README's one call: the same set (its name keys the noise), one method, its scores.
    tau = Run(run).score_targets("journey_trak", "mine", configs, images=tmp_path / "imgs" / "b")
    np.testing.assert_array_equal(tau.values, workflow_scores.values)
    with pytest.raises(ConfigError, match="does not match the one"):
        Run(run).add_targets("other", [*configs, run.parent.parent / "config" / "seed1.yaml"])


def test_mscoco_latent_text_conditioned_end_to_end(tmp_path):
    root = write_coco(tmp_path / "coco", n_images=8)
    enc = write_tiny_encoders(tmp_path / "enc")
    cfg = {
        "run": "coco",
        "device": "cpu",
        "dataset": {
            "name": "mscoco",
            "root": str(root),
            "image_size": 16,
            "max_length": 8,
            "vae": str(enc),
            "text_encoder": str(enc),
            "prompts": ["a red cat", "a blue car"],
        },
        "model": COND_UNET,
        "targets": {"n": 2, "sampling_steps": 20, "guidance_scale": 2.0},
        "attribution": {**TINY["attribution"], "methods": ["journey_trak", "dtrak", "random"]},
        "lds": {
            "tuning": 0,
            "reporting": 3,
            "seeds": 1,
            "train": {"steps": 10},
            "draws": 2,
            "final_timesteps": 2,
            "final_noise": 1,
            "null_draws": 20,
            "bootstrap": 20,
        },
        **{k: v for k, v in TINY.items() if k not in ("attribution", "targets")},
    }
    run = run_config(tmp_path, cfg)
    with h5py.File(run / "targets.h5") as f:
        assert f["cond"].shape == (2, 8, 16)
        assert f["final"].shape == (2, 4, 8, 8)
    with h5py.File(run / "scores" / "journey_trak.h5") as f:
        assert f["scores"].shape == (2, 2, 8)
    lds = (run / "reports" / "lds.csv").read_text()
    assert "journey_trak" in lds
    assert (run / "figures" / "attributions" / "journey_trak" / "target-0.png").exists()


@pytest.mark.parametrize(("name", "jobs"), [("cifar10", 578), ("cifar2", 464), ("mscoco", 909)])
def test_paper_configs_dry_run(tmp_path, name, jobs):
    """The paper configs build their whole DAG: the job counts config/README.md documents."""
    cfg = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    if name == "mscoco":
        cfg["dataset"]["root"] = str(write_coco(tmp_path / "coco", n_images=2))
        enc = str(write_tiny_encoders(tmp_path / "enc"))
        cfg["dataset"].update(vae=enc, text_encoder=enc)
    else:
        cfg["dataset"]["root"] = str(write_cifar_archive(tmp_path / "c.tar.gz", "binary"))
    cwd = workdir(tmp_path / "wf")
    (cwd / "config" / "paper.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(cwd, "-n", "--quiet", "rules", configfile="config/paper.yaml")
    total = re.search(r"^total\s+(\d+)", proc.stdout, re.M)
    assert total, proc.stdout[-2000:]
    assert int(total.group(1)) == jobs, proc.stdout[-3000:]
