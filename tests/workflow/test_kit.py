"""The LDS kit of the shared finished test run (`snakemake kit`, diffattr.kit): a rebuild gives
the same digests, its reference scores give the run's lds.csv bit for bit, a tampered file or a
mismatched score file is one line, and a new method goes from code to its LDS rows."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import RUN, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(local_run, tmp_path_factory):
    """A copy of the shared finished run (its Snakemake metadata too, so nothing but the kit
    runs) with its kit built: (workflow copy, manifest.json's bytes)."""
    cwd = tmp_path_factory.mktemp("kit") / "run"
    shutil.copytree(local_run, cwd, symlinks=True)
    proc = snakemake(cwd, "kit")
    assert "build_kit" in proc.stdout + proc.stderr
    assert "train_model" not in proc.stdout + proc.stderr  # only the kit was made
    return cwd, (cwd / RUN / "kit" / "manifest.json").read_bytes()


@pytest.fixture
def kit(built):
    return built[0] / RUN / "kit"


def test_a_rebuild_reproduces_the_kit_digest_for_digest(built, kit):
    """The kit is a function of the run: rebuilt, every file's sha256 (and the manifest's bytes)
    is the same; the manifest lists every file, the config and the rebuilding command; its size
    is the config's estimate within 25 %."""
    from diffattr.config import load
    from diffattr.kit import estimated_bytes, verify

    cwd, first = built
    manifest = verify(kit)
    assert manifest["command"] == "snakemake kit --cores all --configfile config/test.yaml"
    assert manifest["config"]["run"] == "test" and "device" not in manifest["config"]
    names = set(manifest["files"])
    assert {"data.h5", "targets.h5", "lds/subsets.h5", "lds/regime.json"} <= names
    assert {"models/m0/final/unet/diffusion_pytorch_model.safetensors"} <= names
    assert {f"lds/ground_truth/s{j}.h5" for j in range(7)} <= names
    assert not any(n.startswith(("features/", "kernels/", "scores/members/")) for n in names)
    config = load([cwd / "config" / "config.yaml", cwd / "config" / "test.yaml"])
    estimate = sum(estimated_bytes(config).values())
    assert 0.75 < estimate / sum(f["bytes"] for f in manifest["files"].values()) < 1.25
    snakemake(cwd, "kit", "--forcerun", "build_kit")  # (--forcerun takes several rules)
    assert (kit / "manifest.json").read_bytes() == first


def test_evaluating_the_kit_reproduces_the_runs_lds_csv_bit_for_bit(built, kit, tmp_path):
    """diffattr.evaluate with the kit's own reference scores: the run's reports/lds.csv byte for
    byte; lds.json too but for the ensemble-size curves of the tuned methods, which keep only
    the whole ensemble (the smaller ensembles need the features the kit leaves out)."""
    import diffattr

    run = built[0] / RUN
    table = diffattr.evaluate([], kit, out=tmp_path)
    assert (tmp_path / "lds.csv").read_bytes() == (run / "reports" / "lds.csv").read_bytes()
    assert (tmp_path / "lds.html").exists()
    details, original = table.attrs["details"], json.loads((run / "reports/lds.json").read_text())
    for method, tuned in original["methods"].items():
        whole = max(tuned["ensemble_size"], key=int)
        tuned["ensemble_size"] = {whole: tuned["ensemble_size"][whole]}
        assert details["methods"][method] == tuned, method
    assert {k: v for k, v in details.items() if k != "methods"} == {
        k: v for k, v in original.items() if k != "methods"
    }


def test_a_tampered_or_missing_kit_file_is_one_line_naming_it(kit, tmp_path, capsys):
    from diffattr.cli import main

    copy = tmp_path / "kit"
    shutil.copytree(kit, copy)
    with (copy / "scores" / "random.h5").open("r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00\x01\x02\x03\x04\x05\x06\x07")
    with pytest.raises(SystemExit):
        main(["evaluate", "--kit", str(copy)])
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "scores/random.h5 does not match its manifest digest" in err, err
    assert "snakemake kit --cores all --configfile config/test.yaml" in err
    (copy / "lds" / "ground_truth" / "s3.h5").unlink()
    with pytest.raises(SystemExit):
        main(["evaluate", "--kit", str(copy)])
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "s3.h5 is missing" in err, err


def test_a_new_method_is_scored_and_evaluated_and_mismatches_are_one_line(kit, tmp_path, capsys):
    """The docs' worked example (pixel cosine through the Kit facade) evaluates beside the
    reference rows; a grid of candidates is tuned on the tuning subsets; a file for other
    targets, of another shape or named like a reference method is one line."""
    import diffattr
    import h5py
    from diffattr.artifacts import Candidates, write_scores
    from diffattr.cli import main
    from diffattr.errors import ArtifactError

    opened = diffattr.Kit(kit)
    train = opened.train_images.reshape(len(opened.train_ids), -1)
    x0 = opened.targets.x0_hat.reshape(*opened.targets.x0_hat.shape[:2], -1)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    tau = unit(x0) @ unit(train).T
    opened.write_scores(tmp_path / "cosine.h5", "pixel_cosine", tau)
    noise = np.random.default_rng(0).normal(size=tau.shape)
    grid = Candidates("mix", [0.0, 1.0], np.stack([noise, tau]).astype(np.float32))
    opened.write_scores(tmp_path / "mix.h5", "mix", noise, grid, 0.0)
    table = diffattr.evaluate([tmp_path / "cosine.h5", tmp_path / "mix.h5"], opened)
    mine = table[table.method == "pixel_cosine"]
    assert len(mine) == 4 and mine.lds.notna().all()
    same = table[table.method == "pixel_similarity"]  # the same scores, other float rounding
    assert np.allclose(mine.lds.to_numpy(), same.lds.to_numpy())
    mix = table[table.method == "mix"]
    assert set(mix.lambda_source) == {"tuned", "config"}
    assert set(mix[mix.lambda_source == "tuned"]["lambda"]) <= {0.0, 1.0}

    with pytest.raises(ArtifactError, match="shape"):
        opened.write_scores(tmp_path / "bad.h5", "bad", tau[:, :, :-1])
    opened.write_scores(tmp_path / "random.h5", "random", tau)
    shutil.copy(tmp_path / "cosine.h5", tmp_path / "other.h5")
    with h5py.File(tmp_path / "other.h5", "r+") as f:
        f.attrs.pop("datasets_digest")
        f["target_ids"][0] = 999
    steps, ids = opened.steps, opened.targets.target_ids
    fewer = lambda s, rows, columns: tau[s, rows, :-1][:, columns]  # noqa: E731
    write_scores(tmp_path / "fewer.h5", steps, ids, opened.train_ids[:-1], fewer, {"method": "f"})
    for name, expected in [
        ("random.h5", "a method the kit already has"),
        ("other.h5", "score the kit's targets"),
        ("fewer.h5", "scores 199 training examples, not the kit's 200"),
    ]:
        with pytest.raises(SystemExit):
            main(["evaluate", "--kit", str(kit), "--scores", str(tmp_path / name)])
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and expected in err and name in err, err
