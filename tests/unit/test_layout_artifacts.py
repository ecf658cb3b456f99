"""Paths and names format and parse back; seed tags keep their contract; every artefact round
trips through its codec."""

from __future__ import annotations

import numpy as np
import pytest
from diffattr import layout
from diffattr.artifacts import (
    Emergence,
    FeatureStore,
    GroundTruth,
    Memorization,
    Plan,
    ScoreFile,
    Subsets,
    TargetFeatures,
    Targets,
    read_data,
    read_emergence,
    read_ground_truth,
    read_kernel,
    read_memorization,
    read_plan,
    read_resampled,
    read_scores,
    read_subsets,
    read_target_features,
    read_targets,
    write_data,
    write_emergence,
    write_feature_shard,
    write_ground_truth,
    write_kernel,
    write_memorization,
    write_plan,
    write_resampled,
    write_scores,
    write_subsets,
    write_target_features,
    write_targets,
)
from diffattr.counterfactual import Case
from diffattr.data import PreparedData
from diffattr.errors import ConfigError, DatasetError
from diffattr.layout import Member, Paths
from diffattr.scoring import Kernel

RNG = np.random.default_rng(0)


def test_member_names_round_trip_and_reject_garbage():
    for member in [Member(0, "final"), Member(12, "step-500")]:
        assert Member.parse(str(member)) == member
    assert [str(m) for m in layout.members(2, ("final", "step-5"))] == [
        "m0_final",
        "m0_step-5",
        "m1_final",
        "m1_step-5",
    ]
    for bad in ["m_final", "x0_final", "m0", "m0_last", "m0_final_x"]:
        with pytest.raises(ConfigError, match="bad ensemble member"):
            Member.parse(bad)


def test_paths_parse_back_to_what_made_them():
    p = Paths("results/x")
    assert layout.parse_train_features(p.train_features("loss", Member(1, "final"), 3)) == (
        "loss",
        Member(1, "final"),
        3,
    )
    assert layout.parse_kernel(p.kernel("square_norm", "m2_step-10")) == (
        "square_norm",
        Member(2, "step-10"),
    )
    assert layout.parse_target_features(p.target_features("dtrak", "m0_final")) == (
        "dtrak",
        Member(0, "final"),
    )
    assert layout.parse_ground_truth(p.ground_truth(11)) == 11
    assert layout.parse_cf_samples(p.cf_samples(layout.case_name(7))) == "c7"
    assert layout.parse_cf_samples(p.cf_samples(layout.FLOOR)) == "floor"
    assert layout.parse_case(layout.case_name(42)) == 42
    assert layout.parse_sample_group(layout.sample_group(3, 660)) == (3, 660)
    assert p.model_of_member("m4_final") == p.model(4) == "results/x/models/m4"
    assert (
        layout.checkpoint_name(100, 100) == "final" and layout.checkpoint_name(5, 100) == "step-5"
    )
    with pytest.raises(ConfigError):
        layout.parse_ground_truth("results/x/lds/ground_truth/t1.h5")


def test_seed_tags_keep_the_retraining_contract():
    # Counterfactual models share full model 0's stream (data is the only difference) ...
    assert layout.counterfactual_seed() == layout.full_model_seed(0) == "model-0"
    # ... the floor, the other full models and the subset models do not.
    others = [layout.floor_seed(), layout.full_model_seed(1), layout.subset_model_seed(0)]
    assert len({*others, layout.counterfactual_seed()}) == 4
    assert layout.subset_model_seed(1) == "lds-seed-1"  # the same for every subset (CRN)


def test_prepared_data_round_trip(tmp_path):
    data = PreparedData(
        images=RNG.uniform(-1, 1, (5, 1, 4, 4)).astype(np.float32),
        labels=np.arange(5),
        ids=np.arange(10, 15),
        class_names=["a", "b"],
        name="toy",
        extra={"captions": np.array([b"x"] * 5)},
    )
    write_data(tmp_path / "d.h5", data, {"name": "toy"})
    back = read_data(tmp_path / "d.h5")
    assert np.array_equal(back.images, data.images) and np.array_equal(back.ids, data.ids)
    assert back.class_names == ["a", "b"] and back.config == {"name": "toy"}
    assert np.array_equal(back.extra["captions"], data.extra["captions"])
    with pytest.raises(DatasetError, match="run the prepare_data rule"):
        read_data(tmp_path / "missing.h5")


def test_targets_round_trip_with_and_without_conditions(tmp_path):
    shape = (2, 3, 1, 4, 4)
    plain = Targets(
        final=RNG.standard_normal((3, 1, 4, 4)).astype(np.float32),
        x_t=RNG.standard_normal(shape).astype(np.float32),
        x0_hat=RNG.standard_normal(shape).astype(np.float32),
        steps=[500, 0],
        target_ids=np.arange(3),
        attrs={"seed": 0},
    )
    write_targets(tmp_path / "t.h5", plain)
    back = read_targets(tmp_path / "t.h5")
    assert back.steps == [500, 0] and back.cond is None and back.attrs["seed"] == 0
    assert np.array_equal(back.x0_hat, plain.x0_hat) and np.array_equal(back.final, plain.final)
    cond = RNG.standard_normal((3, 2, 5)).astype(np.float16)
    text = Targets(**{**plain.__dict__, "cond": cond, "prompts": ["a cat", "café", "x"]})
    write_targets(tmp_path / "c.h5", text)
    back = read_targets(tmp_path / "c.h5")
    assert back.prompts == ["a cat", "café", "x"] and np.array_equal(back.cond, cond)


def test_feature_store_reads_shards_in_any_order(tmp_path):
    phi = RNG.standard_normal((10, 3)).astype(np.float32)
    paths = []
    for s, (lo, hi) in enumerate([(0, 4), (4, 8), (8, 10)]):
        path = tmp_path / f"shard{s}.h5"
        write_feature_shard(path, phi[lo:hi], np.arange(lo, hi), np.arange(lo, hi) + 100, {"K": 2})
        paths.append(path)
    store = FeatureStore(paths[::-1])
    assert (store.n, store.dim) == (10, 3) and store.attrs["K"] == 2
    assert np.array_equal(np.concatenate([b for _, b in store.blocks(3)]), phi)
    assert np.array_equal(store.read(3, 9), phi[3:9])
    with pytest.raises(ValueError, match="do not tile"):
        FeatureStore(paths[:1] + paths[2:])


def test_kernel_target_features_and_scores_round_trip(tmp_path):
    kernel = Kernel("primal", RNG.standard_normal((3, 3)), 0.5, {"lambda": 0.01})
    write_kernel(tmp_path / "k.h5", kernel)
    back = read_kernel(tmp_path / "k.h5")
    assert back.form == "primal" and back.lambda_abs == 0.5 and back.attrs["lambda"] == 0.01
    assert np.array_equal(back.matrix, kernel.matrix)

    psi = TargetFeatures(RNG.standard_normal((2, 3, 4)).astype(np.float32), [9, 0], np.arange(3))
    write_target_features(tmp_path / "p.h5", psi)
    again = read_target_features(tmp_path / "p.h5")
    assert again.steps == [9, 0] and np.array_equal(again.features, psi.features)

    full = RNG.standard_normal((2, 3, 7)).astype(np.float32)
    write_scores(
        tmp_path / "s.h5",
        [9, 0],
        np.arange(3),
        np.arange(7) + 50,
        lambda s, t, i: full[s, t, i],
        {"method": "toy"},
        train_block=3,
        target_block=2,
    )
    scores = read_scores(tmp_path / "s.h5")
    assert np.array_equal(scores.scores, full) and scores.method == "toy"
    assert "positive influencer" in scores.attrs["sign"]
    import h5py

    with h5py.File(tmp_path / "s.h5") as f:  # named axes for plain h5py, h5netcdf, xarray
        dims = f["scores"].dims
        assert [d.label for d in dims] == ["step", "target", "train"]
        assert [d[0].name for d in dims] == ["/steps", "/target_ids", "/train_ids"]
    with ScoreFile(tmp_path / "s.h5") as f:
        assert np.array_equal(f.row(0, 2), full[1, 2])
        assert np.array_equal(f.train_ids, np.arange(7) + 50)


def test_lds_and_counterfactual_artefacts_round_trip(tmp_path):
    masks = RNG.random((4, 6)) < 0.5
    role = np.array(["tuning", "reporting", "reporting", "reporting"])
    write_subsets(tmp_path / "s.h5", Subsets(masks, role, np.arange(6), {"alpha": 0.5}))
    subsets = read_subsets(tmp_path / "s.h5")
    assert np.array_equal(subsets.masks, masks) and subsets.role.tolist() == role.tolist()
    assert np.array_equal(subsets.kept_positions(2), np.flatnonzero(masks[2]))

    gt = GroundTruth(RNG.random((2, 3, 4)), RNG.random((2, 4)), [20, 10, 0], np.arange(4))
    write_ground_truth(tmp_path / "g.h5", gt)
    back = read_ground_truth(tmp_path / "g.h5")
    assert back.steps == [20, 10, 0] and np.array_equal(back.f_t, gt.f_t)

    memo = Memorization(RNG.random((3, 4, 5)), [20, 10, 0], np.arange(4))
    write_memorization(tmp_path / "m.h5", memo)
    assert np.array_equal(read_memorization(tmp_path / "m.h5").loss, memo.loss)

    em = Emergence(
        RNG.random((3, 2)),
        RNG.random((3, 2, 4, 1, 2, 2)),
        [20, 10, 0],
        np.array([3, 7]),
        np.array([20, 10]),
    )
    write_emergence(tmp_path / "e.h5", em)
    again = read_emergence(tmp_path / "e.h5")
    assert again.decision_step.tolist() == [20, 10] and np.array_equal(again.samples, em.samples)

    cases = [Case(0, "random", 0, 20, 2, "20", 20), Case(1, "journey_trak", 1, 10, 2, "final", 0)]
    keep = np.ones((2, 6), bool)
    keep[0, [1, 4]] = keep[1, [0, 5]] = False
    write_plan(tmp_path / "plan.h5", Plan(cases, keep, {"config": {"k": [0.3]}}))
    plan = read_plan(tmp_path / "plan.h5")
    assert plan.cases == cases and plan.kept_positions(1).tolist() == [1, 2, 3, 4]

    runs = {(0, 20): {"original": RNG.random((2, 1, 2, 2)), "a": RNG.random((2, 1, 2, 2))}}
    write_resampled(tmp_path / "r.h5", runs, {"case": "c0"})
    got = read_resampled(tmp_path / "r.h5")
    assert list(got) == [(0, 20)] and np.array_equal(got[0, 20]["a"], runs[0, 20]["a"])
