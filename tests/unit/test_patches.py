"""Patch-level attribution: boxes, the patch-restricted output, patch features and scores, the
patch ground truth and the patch LDS, each against a direct computation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_unet, random_rows
from diffattr import layout
from diffattr.artifacts import (
    Scores,
    TargetFeatures,
    Targets,
    read_scores,
    write_patches,
    write_target_features,
)
from diffattr.attribution import Attributor
from diffattr.config import PatchesConfig
from diffattr.errors import ConfigError
from diffattr.layout import Member
from diffattr.lds.ground_truth import ground_truth, patch_ground_truth
from diffattr.lds.patches import patch_lds_table
from diffattr.lds.stats import lds, predictions
from diffattr.methods import get_method
from diffattr.outputs import OUTPUTS, add_noise, predict_noise, row_outputs
from diffattr.patches import Patches, grid_boxes, resolve, to_grid
from diffattr.scoring import patch_pixel_similarity_block
from test_stages import config, ridge_scores, run_stage, write_inputs

RNG = np.random.default_rng(3)
WHOLE = (0, 0, 8, 8)


# ---------------------------------------------------------------------------------------------
# Boxes


def test_grid_boxes_tile_the_image_row_major():
    assert grid_boxes([2, 2], (8, 8)) == [(0, 0, 4, 4), (0, 4, 4, 8), (4, 0, 8, 4), (4, 4, 8, 8)]
    with pytest.raises(ConfigError, match="does not divide the 8×8 image"):
        grid_boxes([3, 2], (8, 8))


def test_resolve_adds_boxes_and_per_target_boxes_padded_with_the_whole_image(tmp_path):
    csv = tmp_path / "boxes.csv"
    csv.write_text("target,y0,x0,y1,x1\n1,2,2,6,6\n1,0,0,2,2\n2,1,1,3,3\n")
    cfg = PatchesConfig(grid=(1, 2), boxes=((0, 0, 8, 1),), file=str(csv))
    patches = resolve(cfg, 3, (8, 8), (8, 8))
    shared = [[0, 0, 8, 4], [0, 4, 8, 8], [0, 0, 8, 1]]
    assert patches.boxes.tolist() == [
        [*shared, [0, 0, 8, 8], [0, 0, 8, 8]],
        [*shared, [2, 2, 6, 6], [0, 0, 2, 2]],
        [*shared, [1, 1, 3, 3], [0, 0, 8, 8]],
    ]
    assert np.array_equal(patches.grid_boxes, patches.boxes)  # pixel models: the same grid
    assert patches.areas()[1].tolist() == [32, 32, 8, 16, 4]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (PatchesConfig(boxes=((0, 0, 9, 4),)), "leave the 8×8 image"),
        (PatchesConfig(), "gives no boxes"),
    ],
)
def test_resolve_refuses_boxes_outside_the_image(cfg, message):
    with pytest.raises(ConfigError, match=message):
        resolve(cfg, 2, (8, 8), (8, 8))


def test_box_file_errors_name_the_file_and_the_fix(tmp_path):
    bad_header = tmp_path / "a.csv"
    bad_header.write_text("t,y0,x0,y1,x1\n0,0,0,1,1\n")
    with pytest.raises(ConfigError, match="expected target,y0,x0,y1,x1"):
        resolve(PatchesConfig(file=str(bad_header)), 2, (8, 8), (8, 8))
    unknown = tmp_path / "b.csv"
    unknown.write_text("target,y0,x0,y1,x1\n5,0,0,1,1\n")
    with pytest.raises(ConfigError, match=r"names targets \[5\]"):
        resolve(PatchesConfig(file=str(unknown)), 2, (8, 8), (8, 8))


def test_latent_boxes_cover_the_latent_positions_under_them():
    boxes = np.array([[[0, 0, 8, 8], [4, 9, 12, 17], [0, 0, 64, 64]]])
    assert to_grid(boxes, (64, 64), (8, 8)).tolist() == [[[0, 0, 1, 1], [0, 1, 2, 3], [0, 0, 8, 8]]]


def test_config_checks_patch_boxes_and_methods():
    cfg = config()
    with pytest.raises(ConfigError, match="is empty"):
        dataclasses.replace(
            cfg, attribution=_with_patches(cfg, PatchesConfig(boxes=((2, 0, 2, 4),)))
        ).check()
    with pytest.raises(ConfigError, match=r"\['das_step'\] are not in attribution.methods"):
        patches = PatchesConfig(grid=(2, 2), methods=("das_step",))
        dataclasses.replace(cfg, attribution=_with_patches(cfg, patches)).check()
    with pytest.raises(ConfigError, match="does not exist"):
        patches = PatchesConfig(file="no/such/boxes.csv")
        dataclasses.replace(cfg, attribution=_with_patches(cfg, patches)).check()
    on = PatchesConfig(grid=(2, 2))
    assert on.methods_of(cfg.attribution.methods) == ["journey_trak", "pixel_similarity"]


def _with_patches(cfg, patches):
    return dataclasses.replace(cfg.attribution, patches=patches)


# ---------------------------------------------------------------------------------------------
# The patch-restricted output


@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_whole_image_box_gives_the_whole_image_output_bit_for_bit(scheduler, output):
    model, batch = make_unet(), random_rows(3, 2)
    whole = row_outputs(model, scheduler.alphas_cumprod, batch, output)
    boxed = row_outputs(model, scheduler.alphas_cumprod, batch, output, WHOLE)
    assert torch.equal(whole, boxed)


def test_patch_output_is_the_output_of_the_patch_pixels(scheduler):
    model, batch = make_unet(), random_rows(2, 3)
    box = (1, 2, 5, 7)
    with torch.no_grad():
        x_t = add_noise(scheduler.alphas_cumprod, batch["x0"], batch["t"], batch["eps"])
        pred = predict_noise(model, x_t, batch["t"]).numpy()
        got = {o: row_outputs(model, scheduler.alphas_cumprod, batch, o, box) for o in OUTPUTS}
    e = pred[:, :, 1:5, 2:7].reshape(6, -1)
    eps = batch["eps"].numpy()[:, :, 1:5, 2:7].reshape(6, -1)
    direct = {
        "loss": ((e - eps) ** 2).mean(1),
        "square_norm": (e**2).mean(1),
        "mean": e.mean(1),
        "l1_norm": np.abs(e).sum(1),
        "l2_norm": np.sqrt((e**2).sum(1)),
    }
    for output, value in direct.items():
        np.testing.assert_allclose(got[output].numpy(), value, rtol=1e-12, err_msg=output)


def test_tiling_patches_area_weighted_give_the_whole_image_loss(scheduler):
    model, batch = make_unet(), random_rows(3, 2)
    whole = row_outputs(model, scheduler.alphas_cumprod, batch, "loss")
    tiles = grid_boxes([2, 4], (8, 8))
    parts = [row_outputs(model, scheduler.alphas_cumprod, batch, "loss", b) for b in tiles]
    weighted = sum(
        (b[2] - b[0]) * (b[3] - b[1]) / 64 * f for b, f in zip(tiles, parts, strict=True)
    )
    torch.testing.assert_close(weighted, whole, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Patch target features and scores


def tiny_targets(n=3, steps=(500, 0)) -> Targets:
    x0 = RNG.uniform(-1, 1, (len(steps), n, 1, 8, 8)).astype(np.float32)
    return Targets(
        final=x0[-1], x_t=x0, x0_hat=x0, steps=list(steps), target_ids=np.arange(10, 10 + n)
    )


def tiny_attributor(scheduler) -> Attributor:
    cfg = config().attribution
    settings = dataclasses.replace(cfg, R=3, batch_size=2)
    return Attributor(make_unet(torch.float32), scheduler, Member(0, "final"), settings, seed=0)


def test_whole_image_patch_features_equal_the_target_features_bit_for_bit(scheduler):
    attributor, targets = tiny_attributor(scheduler), tiny_targets()
    boxes = np.array([[WHOLE, (0, 0, 4, 8)]] * targets.n)
    patches = Patches(boxes, boxes, (8, 8), (8, 8))
    for name in ["journey_trak", "das_step"]:
        method = get_method(name)
        psi = attributor.featurize_targets(method, targets)
        local = attributor.featurize_patch_targets(method, targets, patches)
        assert local.shape == (2, 3, 2, psi.shape[-1])
        assert np.array_equal(local[:, :, 0], psi), name
        assert not np.allclose(local[:, :, 1], psi), name  # the top half is another output


def test_patch_features_group_targets_by_box_and_equal_one_target_at_a_time(scheduler):
    attributor, targets = tiny_attributor(scheduler), tiny_targets()
    boxes = np.array([[(0, 0, 4, 4)], [(2, 2, 6, 6)], [(0, 0, 4, 4)]])
    local = attributor.featurize_patch_targets(
        get_method("journey_trak"), targets, Patches(boxes, boxes, (8, 8), (8, 8))
    )
    for j in range(3):
        alone = dataclasses.replace(
            targets, x0_hat=targets.x0_hat[:, j : j + 1], target_ids=targets.target_ids[j : j + 1]
        )
        single = Patches(boxes[j : j + 1], boxes[j : j + 1], (8, 8), (8, 8))
        one = attributor.featurize_patch_targets(get_method("journey_trak"), alone, single)
        np.testing.assert_allclose(local[:, j], one[:, 0], rtol=1e-4, atol=1e-5)


def test_final_image_methods_refuse_patches(scheduler):
    attributor, targets = tiny_attributor(scheduler), tiny_targets()
    boxes = np.array([[WHOLE]] * 3)
    with pytest.raises(ConfigError, match="no per-step target output"):
        attributor.featurize_patch_targets(
            get_method("trak"), targets, Patches(boxes, boxes, (8, 8), (8, 8))
        )


def test_patch_scores_with_the_whole_image_as_patch_equal_the_scores_bit_for_bit(tmp_path):
    """The score-patches stage on ψ whose patch 0 is the whole image's ψ: patch 0's scores are
    the score stage's bit for bit; patch 1's equal the ridge formula on its own ψ."""
    cfg = config()
    p, _, _, phis, psis, paths = write_inputs(tmp_path)
    boxes = np.array([[(0, 0, 4, 4), (0, 0, 2, 4)]] * 3)
    write_patches(p.patches, Patches(boxes, boxes, (4, 4), (4, 4)), {})
    local_paths, locals_ = [], []
    for m, psi in enumerate(psis):
        other = RNG.standard_normal(psi.shape).astype(np.float32)
        local = np.stack([psi, other], axis=2)  # (steps, targets, patches, k)
        path = Path(p.patch_target_features("journey_trak", Member(m, "final")))
        write_target_features(path, TargetFeatures(local, [500, 0], np.arange(3)))
        local_paths.append(path)
        locals_.append(local)
    common = {
        "method": "journey_trak",
        "data": Path(p.data),
        "targets": Path(p.targets),
        "kernels": paths["kernels"],
        "train_features": paths["train_features"],
    }
    run_stage(
        "score", cfg, out=tmp_path / "whole.h5", target_features=paths["target_features"], **common
    )
    run_stage(
        "score-patches",
        cfg,
        out=tmp_path / "local.h5",
        patches=Path(p.patches),
        target_features=local_paths,
        **common,
    )
    whole, local = read_scores(tmp_path / "whole.h5"), read_scores(tmp_path / "local.h5")
    assert local.scores.shape == (2, 3, 2, 30) and np.array_equal(local.boxes, boxes)
    assert np.array_equal(local.scores[:, :, 0], whole.scores)
    expected = ridge_scores(phis, [x[:, :, 1] for x in locals_], cfg.attribution.lambda_)
    np.testing.assert_allclose(local.scores[:, :, 1], expected, rtol=1e-4, atol=1e-5)
    assert local.attrs["lambda_source"] == "config" and local.attrs["members"] == [
        "m0_final",
        "m1_final",
    ]


def test_patch_pixel_similarity_is_the_cosine_inside_the_patch():
    train = RNG.standard_normal((7, 1, 8, 8))
    x0_hat = RNG.standard_normal((2, 3, 1, 8, 8))
    boxes = np.array([[(0, 0, 4, 4), (2, 3, 8, 8)], [(0, 0, 4, 4), WHOLE], [(1, 1, 2, 2), WHOLE]])
    block = patch_pixel_similarity_block(train, x0_hat, boxes)
    out = block(1, slice(0, 6), slice(0, 7))
    for q in range(6):
        j, p = divmod(q, 2)
        y0, x0, y1, x1 = boxes[j, p]
        a = x0_hat[1, j, :, y0:y1, x0:x1].ravel()
        b = train[:, :, y0:y1, x0:x1].reshape(7, -1)
        cos = b @ a / np.linalg.norm(b, axis=1) / np.linalg.norm(a)
        np.testing.assert_allclose(out[q], cos, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Patch ground truth and the patch LDS


def test_patch_ground_truth_uses_the_whole_images_draws(scheduler):
    """A whole-image patch reproduces the ground truth (the same ε: common random numbers), and
    tiling patches, area-weighted, sum to it."""
    model = make_unet(torch.float32)
    targets = tiny_targets()
    boxes = np.array([[WHOLE, *grid_boxes([2, 2], (8, 8))]] * 3)
    args = (model, scheduler.alphas_cumprod, targets.x0_hat)
    f_t, _ = ground_truth(
        *args, targets.final, targets.steps, targets.target_ids.tolist(), 5, [0, 500], 1, seed=0
    )
    local = patch_ground_truth(*args, targets.steps, targets.target_ids.tolist(), 5, boxes, seed=0)
    assert local.shape == (2, 3, 5)
    np.testing.assert_allclose(local[..., 0], f_t, rtol=1e-5)
    np.testing.assert_allclose(local[..., 1:].mean(-1), f_t, rtol=1e-5)
    other_seed = patch_ground_truth(*args, targets.steps, [10, 11, 12], 5, boxes, seed=1)
    assert not np.allclose(other_seed[..., 0], f_t, rtol=1e-3)


def test_patch_lds_table_against_a_hand_computation():
    n, subsets, seeds, targets, patches = 20, 9, 2, 4, 2
    masks = RNG.random((subsets, n)) < 0.5
    role = np.array(["tuning"] * 3 + ["reporting"] * 6)
    f_t = RNG.standard_normal((subsets, seeds, 1, targets, patches))
    truth_scores = RNG.standard_normal((1, targets, patches, n))
    local = Scores(truth_scores, [0], np.arange(targets), np.arange(n), {"method": "jt"})
    whole = Scores(RNG.standard_normal((1, targets, n)), [0], np.arange(targets), np.arange(n), {})
    lds_cfg = dataclasses.replace(config().lds, bootstrap=40, null_draws=30)
    table, localized = patch_lds_table(
        masks, role, f_t, [0], {"jt": local}, {"jt": whole}, lds_cfg, seed=0
    )
    report = role == "reporting"
    for p in range(patches):
        truth = f_t[report, :, 0, :, p].mean(1).T  # (targets, reporting subsets)
        want_local = lds(predictions(truth_scores[0, :, p], masks[report]), truth)
        want_whole = lds(predictions(whole.scores[0], masks[report]), truth)
        rows = table[table.patch == p].set_index("method")
        assert rows.loc["jt", "lds"] == pytest.approx(want_local)
        assert rows.loc["jt (whole image)", "lds"] == pytest.approx(want_whole)
        margin = localized[(localized.patch == p)].iloc[0]
        assert margin.margin == pytest.approx(want_local - want_whole)
        assert margin.margin_ci_low <= margin.margin_ci_high
    pooled = localized[localized.patch == "all"].iloc[0]
    per_patch = localized[localized.patch != "all"].margin.mean()
    assert pooled.margin == pytest.approx(per_patch)
    assert set(table.ground_truth) == {"f_t"} and len(table) == 2 * patches
    assert layout.Paths("r").patch_scores("jt") == "r/scores/patches/jt.h5"
