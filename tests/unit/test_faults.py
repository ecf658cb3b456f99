"""Faults a user meets end in one clear line, and nothing wrong or half-made is kept.

Each case asserts the error type and the one line that names the problem and the fix, and that
the output it would have written does not exist (nor a partial file beside it)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_UNET
from diffattr import layout
from diffattr.artifacts import (
    FeatureStore,
    GroundTruth,
    Scores,
    Subsets,
    Targets,
    check_made_from,
    content_digest,
    read_data,
    read_scores,
    read_targets,
    write_data,
    write_feature_shard,
    write_scores,
    write_targets,
)
from diffattr.config import ModelConfig, RunConfig, load
from diffattr.counterfactual import plan
from diffattr.data import PreparedData
from diffattr.diffusion import train
from diffattr.errors import ArtifactError, ConfigError, ModelError
from diffattr.features import shard_positions
from diffattr.models import build_scheduler, build_unet, load_model, made_from, save_model
from diffattr.outputs import row_outputs
from diffattr.stages.lds import check_consistent
from diffattr.storage import atomic_path

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)


def nothing_left(path: Path) -> bool:
    return not path.exists() and not list(path.parent.glob(f".{path.name}.partial-*"))


def tiny_data(n=12) -> PreparedData:
    return PreparedData(
        images=RNG.uniform(-1, 1, (n, 1, 8, 8)).astype(np.float32),
        labels=np.arange(n) % 2,
        ids=np.arange(n),
        class_names=["a", "b"],
        name="toy",
    )


def targets(**change) -> Targets:
    values = {
        "final": RNG.standard_normal((2, 1, 8, 8)).astype(np.float32),
        "x_t": RNG.standard_normal((1, 2, 1, 8, 8)).astype(np.float32),
        "x0_hat": RNG.standard_normal((1, 2, 1, 8, 8)).astype(np.float32),
        "steps": [0],
        "target_ids": np.arange(2),
    }
    return Targets(**{**values, **change})


# ---------------------------------------------------------------------------------------------
# Divergence and non-finite results


def test_training_stops_at_the_first_non_finite_loss(scheduler):
    cfg = load([REPO / "config" / "config.yaml", REPO / "config" / "test.yaml"])
    recipe = dataclasses.replace(cfg.train, steps=30, lr=1e6, warmup_steps=0, batch_size=8)
    torch.manual_seed(0)
    model = build_unet(ModelConfig.from_dict(TINY_UNET), (1, 8, 8))
    saved = []
    with pytest.raises(ModelError, match=r"training diverged at step \d+: loss (nan|inf).*lr"):
        train(
            model,
            scheduler,
            torch.rand(16, 1, 8, 8) * 2 - 1,
            recipe,
            0,
            progress=False,
            on_checkpoint=lambda step, m: saved.append(step),
        )
    assert saved == []  # nothing was handed out to be saved


@pytest.mark.parametrize("field", ["final", "x_t", "x0_hat"])
def test_non_finite_targets_are_refused(tmp_path, field):
    bad = getattr(targets(), field).copy()
    bad.flat[3] = np.nan
    out = tmp_path / "targets.h5"
    with pytest.raises(ArtifactError, match=rf"1 of \d+ values of {field} are not finite"):
        write_targets(out, targets(**{field: bad}))
    assert nothing_left(out)


def test_non_finite_features_and_scores_are_refused(tmp_path):
    phi = RNG.standard_normal((4, 3)).astype(np.float32)
    phi[1, 2] = np.inf
    out = tmp_path / "shard0.h5"
    with pytest.raises(ArtifactError, match="values of features are not finite"):
        write_feature_shard(out, phi, np.arange(4), np.arange(4), {})
    assert nothing_left(out)

    def block(s, t, i):
        values = np.ones((t.stop - t.start, i.stop - i.start), np.float32)
        values[0, 0] = np.nan if i.start >= 4 else 1.0  # the second block goes bad
        return values

    out = tmp_path / "scores.h5"
    with pytest.raises(ArtifactError, match="values of scores are not finite"):
        write_scores(out, [0], np.arange(2), np.arange(8), block, {}, train_block=4)
    assert nothing_left(out)


# ---------------------------------------------------------------------------------------------
# Corrupt, truncated, foreign and missing artefacts


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_data_names_the_file_and_the_rule(tmp_path):
    path = tmp_path / "run" / "data.h5"
    write_data(path, tiny_data(), {})
    truncate(path)
    with pytest.raises(ArtifactError, match=r"data\.h5 is not a readable HDF5 file.*prepare_data"):
        read_data(path)


def test_truncated_feature_shard_names_the_rule(tmp_path):
    path = Path(layout.Paths(str(tmp_path)).train_features("loss", "m0_final", 0))
    write_feature_shard(path, np.ones((6, 3), np.float32), np.arange(6), np.arange(6), {})
    truncate(path, 0.3)
    with pytest.raises(ArtifactError, match=r"truncated or corrupt.*rule featurize_train"):
        FeatureStore([path])


def test_data_edited_in_place_is_named(tmp_path):
    path = tmp_path / "run" / "data.h5"
    data = tiny_data()
    write_data(path, data, {})
    assert read_data(path).digest == content_digest(data.images, data.labels, data.ids)
    with h5py.File(path, "r+") as f:  # same size, same mtime class: one pixel changed
        f["images"][0, 0, 0, 0] += 0.5
    with pytest.raises(ArtifactError, match=r"data\.h5 does not hold the examples.*prepare_data"):
        read_data(path)


def tamper(path: Path, dataset: str) -> None:
    """Overwrite three rows of a written file in place (the file stays a valid HDF5 file)."""
    with h5py.File(path, "r+") as f:
        f[dataset][:3] = 1e3


def test_a_feature_shard_overwritten_in_place_is_refused_when_the_kernel_is_remade(tmp_path):
    from diffattr.stages.scoring import kernel

    run = layout.Paths(str(tmp_path / "run"))
    shard = Path(run.train_features("loss", "m0_final", 0))
    write_feature_shard(shard, RNG.standard_normal((6, 3), np.float32), *[np.arange(6)] * 2, {})
    tamper(shard, "features")
    out = Path(run.kernel("loss", "m0_final"))
    cfg = load([REPO / "config" / "config.yaml", REPO / "config" / "test.yaml"])
    with pytest.raises(
        ArtifactError, match=r"shard0\.h5 does not hold what it was written with.*featurize_train"
    ) as err:
        kernel(cfg, features=[shard], out=out)
    assert "\n" not in str(err.value)
    assert nothing_left(out)


def _artefacts(run: layout.Paths) -> list[tuple[str, str, object, object]]:
    """(path, dataset to tamper, write, read) of each artefact one job writes and another reads."""
    from diffattr import artifacts as a
    from diffattr.scoring import Kernel

    steps, ids = [0], np.arange(2)
    k = Kernel("primal", np.eye(3), 0.1, {})
    gt = a.GroundTruth(RNG.standard_normal((2, 1, 2)), RNG.standard_normal((2, 2)), steps, ids)
    pgt = a.PatchGroundTruth(RNG.standard_normal((2, 1, 2, 4)), steps, ids, np.zeros((2, 4, 4)))
    psi = a.TargetFeatures(RNG.standard_normal((1, 2, 3)).astype(np.float32), steps, ids)

    def scores(path):
        a.write_scores(path, steps, ids, np.arange(5), lambda s, t, i: np.ones((2, 5)), {})

    return [
        (run.targets, "x0_hat", lambda p: write_targets(p, targets()), read_targets),
        (run.kernel("loss", "m0_final"), "matrix", lambda p: a.write_kernel(p, k), a.read_kernel),
        (
            run.target_features("journey_trak", "m0_final"),
            "features",
            lambda p: a.write_target_features(p, psi),
            a.read_target_features,
        ),
        (run.ground_truth(0), "f_t", lambda p: a.write_ground_truth(p, gt), a.read_ground_truth),
        (
            run.patch_ground_truth(0),
            "f_t",
            lambda p: a.write_patch_ground_truth(p, pgt),
            a.read_patch_ground_truth,
        ),
        (run.scores("journey_trak"), "scores", scores, read_scores),
        (run.tuned_scores("journey_trak"), "scores", scores, read_scores),
    ]


@pytest.mark.parametrize("index", range(7))
def test_every_artefact_edited_in_place_is_named_with_its_rule(tmp_path, index):
    run = layout.Paths(str(tmp_path / "run"))
    path, dataset, write, read = _artefacts(run)[index]
    path = Path(path)
    write(path)
    tamper(path, dataset)
    rule = layout.remake_hint(path).split("(rule ")[1].rstrip(")")
    with pytest.raises(ArtifactError, match=rf"does not hold what it was written with.*{rule}\)"):
        read(path)


def test_artefacts_of_older_versions_without_a_digest_are_read(tmp_path):
    path = tmp_path / "run" / "targets.h5"
    write_targets(path, targets())
    with h5py.File(path, "r+") as f:
        del f.attrs["datasets_digest"]
        f["x0_hat"][:1] = 1e3
    assert read_targets(path).x0_hat.max() == 1e3  # not checked: no digest was recorded


def test_a_kernel_of_an_older_version_records_file_digests_that_are_accepted(tmp_path):
    from diffattr.storage import file_digest

    shard = Path(layout.Paths(str(tmp_path)).train_features("loss", "m0_final", 0))
    write_feature_shard(shard, np.ones((4, 2), np.float32), *[np.arange(4)] * 2, {})
    store = FeatureStore([shard])
    store.check_unchanged_since({"shard0.h5": file_digest(shard)}, "k.h5")  # older kernels
    store.check_unchanged_since(store.digests(), "k.h5")
    with pytest.raises(ArtifactError, match=r"shard0\.h5 changed after k\.h5 was made"):
        store.check_unchanged_since({"shard0.h5": "0" * 64}, "k.h5")


def test_checkpoint_weights_edited_in_place_are_named(tmp_path):
    folder = tmp_path / "run" / "models" / "m0" / "final"
    saved_model(folder, TINY_UNET)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-12:-4] = bytes(8)  # the last weights' bytes: still a loadable file
    weights.write_bytes(bytes(data))
    with pytest.raises(
        ModelError, match=r"safetensors does not hold the weights it was saved with.*train_model"
    ):
        load_model(folder, "cpu")


def test_shards_of_different_data_are_refused(tmp_path):
    paths = [
        Path(layout.Paths(str(tmp_path)).train_features("loss", "m0_final", s)) for s in (0, 1)
    ]
    for s, path in enumerate(paths):
        attrs = {"data_digest": f"{s}" * 64}
        write_feature_shard(
            path,
            np.ones((3, 2), np.float32),
            np.arange(3 * s, 3 * s + 3),
            np.arange(3 * s, 3 * s + 3),
            attrs,
        )
    with pytest.raises(
        ArtifactError,
        match=r"shard1\.h5 was made from other training data than .*shard0\.h5.*featurize_train",
    ):
        FeatureStore(paths)


def test_a_model_trained_on_other_data_is_named(tmp_path):
    data_path = tmp_path / "run" / "data.h5"
    write_data(data_path, tiny_data(), {})
    folder = tmp_path / "run" / "models" / "m0"
    saved_model(folder / "final", TINY_UNET, made_from={"data_digest": "0" * 64})
    assert made_from(folder / "final")["data_digest"] == "0" * 64
    with pytest.raises(
        ArtifactError,
        match=r"models/m0 was made from other training data.*"
        r"rule train_model",
    ):
        check_made_from(read_data(data_path), folder, made_from(folder / "final")["data_digest"])
    check_made_from(read_data(data_path), folder, None)  # foreign models record nothing


def test_a_foreign_hdf5_file_is_named_not_a_keyerror(tmp_path):
    path = tmp_path / "run" / "targets.h5"
    write_data(path, tiny_data(), {})  # a valid HDF5 file of another kind
    with pytest.raises(ArtifactError, match=r"targets\.h5 is incomplete.*rule sample_targets"):
        read_targets(path)


def test_a_missing_input_says_so(tmp_path):
    with pytest.raises(ArtifactError, match=r"scores\.h5 does not exist; run the workflow"):
        read_scores(tmp_path / "scores.h5")


def saved_model(folder: Path, cfg: dict, made_from=None) -> None:
    torch.manual_seed(0)
    save_model(
        build_unet(ModelConfig.from_dict(cfg), (1, 8, 8)),
        build_scheduler(
            RunConfig.from_dict(
                yaml.safe_load((REPO / "config" / "config.yaml").read_text())
            ).diffusion
        ),
        folder,
        made_from,
    )


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    saved_model(tmp_path / "m1" / "final", {**TINY_UNET, "block_out_channels": [8, 16]})
    configured = ModelConfig.from_dict({**TINY_UNET, "block_out_channels": [16, 24]})
    with pytest.raises(
        ModelError,
        match=r"not the configured model \(block_out_channels "
        r"\[8, 16\] ≠ \[16, 24\]\).*delete .*m1",
    ):
        load_model(tmp_path / "m1" / "final", "cpu", configured)
    model, _ = load_model(
        tmp_path / "m1" / "final",
        "cpu",
        ModelConfig.from_dict({**TINY_UNET, "block_out_channels": [8, 16]}),
    )
    assert model is not None


def test_weights_that_disagree_with_config_json_are_one_line(tmp_path):
    folder = tmp_path / "m0" / "final"
    saved_model(folder, TINY_UNET)
    config = json.loads((folder / "unet" / "config.json").read_text())
    config["block_out_channels"] = [16, 32]
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"weights do not match its config\.json") as err:
        load_model(folder, "cpu")
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_truncated_safetensors_are_one_line(tmp_path):
    folder = tmp_path / "m0" / "final"
    saved_model(folder, TINY_UNET)
    truncate(folder / "unet" / "diffusion_pytorch_model.safetensors", 0.5)
    with pytest.raises(ModelError, match="does not hold the weights it was saved with"):
        load_model(folder, "cpu")


def test_stale_partials_of_a_killed_job_are_removed_on_rerun(tmp_path):
    out = tmp_path / "scores.h5"
    stale = tmp_path / ".scores.h5.partial-99999"
    stale.write_text("half")
    (tmp_path / ".other.h5.partial-99999").write_text("not ours")
    with atomic_path(out) as tmp:
        tmp.write_text("done")
    assert out.read_text() == "done" and not stale.exists()
    assert (tmp_path / ".other.h5.partial-99999").exists()


# ---------------------------------------------------------------------------------------------
# Bad configuration, named before anything runs


def default() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c.update(atribution=c.pop("attribution")),
            "unknown config key atribution; did you mean attribution?",
        ),
        (
            lambda c: c["lds"]["train"].update(stpes=1),
            "unknown config key lds.train.stpes; did you mean lds.train.steps?",
        ),
        (lambda c: c["lds"]["train"].update(lr=-1), "lds.train.lr: -1 is less than or equal"),
        (
            lambda c: c.update(dataset={"name": "cifar10", "root": "nowhere/cifar.tar.gz"}),
            "dataset.root nowhere/cifar.tar.gz does not exist",
        ),
        (
            lambda c: c["attribution"].update(checkpoints=["step-500"]),
            "attribution.checkpoints names step-500, which training does not save",
        ),
    ],
)
def test_bad_config_is_one_line(change, message):
    values = default()
    change(values)
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(values)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_removing_more_examples_than_exist_is_named():
    cf = dataclasses.replace(load([REPO / "config" / "config.yaml"]).counterfactual, k=(50,))
    with pytest.raises(ConfigError, match=r"counterfactual\.k 50 removes 50 of 40"):
        plan(cf, 40, [0], [0, 0, 0], lambda m, s, t: np.zeros(40), 0, 999)


def test_a_shard_out_of_range_and_an_unknown_output_are_config_errors(scheduler):
    with pytest.raises(ConfigError, match=r"shard 3 out of range for 2 shards"):
        shard_positions(10, 4, 2, 3)
    batch = {
        "x0": torch.zeros(1, 1, 8, 8),
        "t": torch.zeros(1, dtype=torch.long),
        "eps": torch.zeros(1, 1, 8, 8),
    }
    with pytest.raises(ConfigError, match="unknown model output 'lose'"):
        row_outputs(None, scheduler.alphas_cumprod, batch, "lose")


# ---------------------------------------------------------------------------------------------
# The CLI: exit status 2 and one line, no traceback


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffattr", *args], capture_output=True, text=True)


def assert_one_line(proc: subprocess.CompletedProcess, command: str, text: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"diffattr {command}: error:") and text in last, last


def test_cli_missing_input_and_unwritable_output(tmp_path):
    slice_ = load([REPO / "config" / "config.yaml"]).slice("kernel")
    proc = cli(
        "kernel",
        "--cfg",
        slice_,
        "--features",
        str(tmp_path / "nope.h5"),
        "--out",
        str(tmp_path / "k.h5"),
    )
    assert_one_line(proc, "kernel", "nope.h5 does not exist")
    shard = tmp_path / "shard0.h5"
    write_feature_shard(shard, np.eye(3, dtype=np.float32), np.arange(3), np.arange(3), {})
    proc = cli(
        "kernel", "--cfg", slice_, "--features", str(shard), "--out", str(shard / "k.h5")
    )  # a folder that cannot be made: a file is in the way
    assert_one_line(proc, "kernel", "shard0.h5")


def test_a_truncated_cifar_archive_says_corrupt(tmp_path):
    from diffattr.data import read_cifar10
    from diffattr.errors import DatasetError
    from synthetic import write_cifar_archive

    archive = write_cifar_archive(tmp_path / "cifar-10-binary.tar.gz", "binary")
    truncate(archive, 0.6)
    with pytest.raises(DatasetError, match=r"corrupt or truncated archive.*download it again"):
        read_cifar10(archive)


@pytest.mark.parametrize("fmt", ["binary", "python"])
def test_a_cifar_archive_with_bytes_flipped_in_the_middle_says_corrupt(tmp_path, fmt):
    from diffattr.data import read_cifar10
    from diffattr.errors import DatasetError
    from synthetic import write_cifar_archive

    archive = write_cifar_archive(tmp_path / f"cifar-10-{fmt}.tar.gz", fmt, n_train=200)
    data = bytearray(archive.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(b ^ 0xFF for b in data[middle : middle + 200])
    archive.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"corrupt or truncated archive.*download it again"):
        read_cifar10(archive)


HUB = "someone/some-diffusion"
ENCODERS = {
    "vae": HUB,
    "vae_subfolder": "vae",
    "text_encoder": HUB,
    "tokenizer_subfolder": "tokenizer",
    "text_encoder_subfolder": "text_encoder",
}


def test_a_hub_model_offline_says_offline(tmp_path):
    pytest.importorskip("transformers")
    script = f"from diffattr.data import load_encoders\nload_encoders({ENCODERS!r}, 'cpu')\n"
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and last.startswith("diffattr.errors.DatasetError:"), last
    assert f"dataset.vae '{HUB}' is a hub model and this machine is offline" in last, last
    assert f"hf download {HUB} --local-dir <folder>" in last and "config.json" not in last


def test_an_unreachable_hub_says_so_not_missing_config_json(monkeypatch):
    pytest.importorskip("transformers")
    import diffusers
    from diffattr.data import load_encoders
    from diffattr.errors import DatasetError

    class LocalEntryNotFoundError(OSError):  # huggingface_hub's, when no connection is made
        pass

    def from_pretrained(*args, **kwargs):
        try:
            raise LocalEntryNotFoundError("cannot find the requested files in the local cache")
        except OSError as err:
            raise OSError(f"{HUB} does not appear to have a file named config.json.") from err

    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(diffusers.AutoencoderKL, "from_pretrained", from_pretrained)
    with pytest.raises(DatasetError) as err:
        load_encoders(ENCODERS, "cpu")
    assert "hub cannot be reached from this machine (offline?)" in str(err.value)
    assert "config.json" not in str(err.value)


def test_a_hub_name_given_as_a_model_folder_says_so():
    with pytest.raises(ModelError, match=r"no model folder google/ddpm-cifar10-32 \(a hub name"):
        load_model("google/ddpm-cifar10-32", "cpu")


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_a_cifar_batch_that_carries_code_is_named_and_not_run(tmp_path, monkeypatch):
    import pickle

    from diffattr.data import read_cifar10
    from diffattr.errors import DatasetError

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    plain = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for i in range(1, 6):
        batch = {b"data": _Payload(), b"labels": [0]} if i == 3 else plain
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_3 in .* is not a plain CIFAR-10 batch"):
        read_cifar10(tmp_path)
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------------
# The LDS report's inputs are cross-checked


def lds_inputs_case(**change):
    """In-memory subsets, two ground-truth files and one score file that agree, then ``change``
    applied to the score file (steps, target_ids, train_ids or attrs)."""
    ids = np.arange(10, 20)
    split = Subsets(
        np.ones((2, 10), bool), np.array(["tuning", "reporting"]), ids, {"data_digest": "a" * 64}
    )
    truth = GroundTruth(np.zeros((2, 2, 3)), np.zeros((2, 3)), [500, 0], np.arange(3))
    score = {
        "scores": np.zeros((2, 3, 10)),
        "steps": [500, 0],
        "target_ids": np.arange(3),
        "train_ids": ids,
        "attrs": {"method": "m", "data_digest": "a" * 64},
    }
    score.update(change)
    paths = [Path("lds/ground_truth/s0.h5"), Path("lds/ground_truth/s1.h5")]
    return (
        Path("lds/subsets.h5"),
        split,
        paths,
        [truth, truth],
        [Path("scores/m.h5")],
        [Scores(**score)],
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({}, None),
        ({"steps": [500, 100]}, r"scores/m\.h5 scores steps \[500, 100\] .* ground truth"),
        ({"target_ids": np.arange(1, 4)}, r"scores/m\.h5 scores steps .* of targets \[1, 2, 3\]"),
        ({"train_ids": np.arange(10)}, r"scores/m\.h5 and lds/subsets\.h5 index different"),
        (
            {"attrs": {"method": "m", "data_digest": "b" * 64}},
            r"scores/m\.h5 and lds/subsets\.h5 were made from different data\.h5.*rule score",
        ),
    ],
)
def test_lds_inputs_that_disagree_stop_the_report(change, message):
    case = lds_inputs_case(**change)
    if message is None:
        check_consistent(*case)
        return
    with pytest.raises(ArtifactError, match=message) as err:
        check_consistent(*case)
    assert "\n" not in str(err.value)


def test_a_coco_image_id_that_is_not_an_integer_is_named(tmp_path):
    from diffattr.data import coco_captions
    from diffattr.errors import DatasetError

    annotations = tmp_path / "captions_train2017.json"
    payload = {"images": [{"id": "cat-1", "file_name": "1.jpg"}], "annotations": []}
    annotations.write_text(json.dumps(payload))
    with pytest.raises(DatasetError, match=r"not a COCO captions file \(ValueError: .*'cat-1'"):
        coco_captions(annotations)


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import contextlib
    import errno

    from diffattr import artifacts, cli

    shard = tmp_path / "shard0.h5"
    write_feature_shard(shard, np.eye(3, dtype=np.float32), np.arange(3), np.arange(3), {})
    create_h5 = artifacts.features.create_h5

    @contextlib.contextmanager
    def filling_up(path, attrs=None):  # the disk fills while the file is being written
        with create_h5(path, attrs) as f:
            yield f
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(artifacts.features, "create_h5", filling_up)  # the kernel codec
    out = tmp_path / "kernels" / "k.h5"
    slice_ = load([REPO / "config" / "config.yaml"]).slice("kernel")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["kernel", "--cfg", slice_, "--features", str(shard), "--out", str(out)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"diffattr kernel: error: No space left on device: {out}", err[-1]
    assert "Traceback" not in "\n".join(err) and nothing_left(out)


# ---------------------------------------------------------------------------------------------
# A pretrained ensemble (train.pretrained) is checked before anything runs


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The default config's UNet saved by diffusers' DDPMPipeline, and one of another width."""
    from synthetic import write_pretrained_pipeline

    root = tmp_path_factory.mktemp("pretrained")
    unet = dict(default()["model"])
    ours = write_pretrained_pipeline(root / "ours", unet, (1, 8, 8))
    wider = write_pretrained_pipeline(
        root / "wider", {**unet, "block_out_channels": [16, 32]}, (1, 8, 8)
    )
    return ours, wider


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c, ours, _: c["train"].update(pretrained=[ours]), None),
        (
            lambda c, ours, _: c["train"].update(pretrained=[ours, ours], ensemble=3),
            "train.pretrained lists 2 models for train.ensemble = 3: set train.ensemble: 2",
        ),
        (
            lambda c, ours, _: c["train"].update(pretrained=[ours + "-typo"]),
            "-typo is not a diffusers model folder",
        ),
        (
            lambda c, _, __: c["train"].update(pretrained=["google/ddpm-cifar10-32"]),
            "google/ddpm-cifar10-32 is not a local folder; a hub name? train.pretrained takes "
            "local folders: download it where the hub is reachable (hf download "
            "google/ddpm-cifar10-32 --local-dir <folder>)",
        ),
        (
            lambda c, _, wider: c["train"].update(pretrained=[wider]),
            "is not the configured model (block_out_channels [16, 32] ≠ [16, 24])",
        ),
        (
            lambda c, ours, _: (
                c["train"].update(pretrained=[ours]),
                c["diffusion"].update(beta_end=0.012),
            ),
            "beta_end 0.02 ≠ 0.012",
        ),
        (
            lambda c, ours, _: (
                c["train"].update(pretrained=[ours], checkpoints=[50]),
                c["attribution"].update(checkpoints=["final", "step-50"]),
            ),
            "attribution.checkpoints must be [final] with train.pretrained",
        ),
    ],
)
def test_a_pretrained_ensemble_is_checked_before_anything_runs(pretrained, change, message):
    values = default()
    values["train"]["ensemble"] = 1
    change(values, *map(str, pretrained))
    if message is None:
        RunConfig.from_dict(values).check()
        return
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(values).check()
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"samples": {"more": 2}}, None),
        (
            {"images": {"mine": "nowhere/"}},
            "extra_targets.images.mine: nowhere/ is not a folder of images",
        ),
        ({"samples": {"my set": 2}}, "extra_targets name 'my set' is not a plain name"),
        (
            {"images": {"a": "."}, "samples": {"a": 2}},
            "extra_targets ['a'] are named under both images and samples",
        ),
    ],
)
def test_extra_target_sets_are_checked_before_anything_runs(extra, message):
    values = {**default(), "extra_targets": extra}
    if message is None:
        assert RunConfig.from_dict(values).extra_targets.names == ["more"]
        return
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(values)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
