"""The application layer on tiny in-memory artefacts: the counterfactual plan and protocols, score
assembly per method, the LDS report's variants, and retraining that shares the full model's
randomness."""

from __future__ import annotations

import dataclasses
import re
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_UNET
from diffattr import diffusion, layout
from diffattr.artifacts import (
    Candidates,
    Scores,
    Subsets,
    TargetFeatures,
    Targets,
    read_data,
    read_resampled,
    read_scores,
    read_targets,
    write_data,
    write_feature_shard,
    write_plan,
    write_scores,
    write_subsets,
    write_target_features,
    write_targets,
)
from diffattr.config import RunConfig, load
from diffattr.counterfactual import Case, plan, protocol_predictors, top_influencers
from diffattr.data import PreparedData
from diffattr.errors import ArtifactError, ConfigError
from diffattr.lds.report import LdsInputs, lds_table
from diffattr.lds.stats import lds, predictions
from diffattr.methods import get_method
from diffattr.models import load_model
from diffattr.ridge import ridge_predictions
from diffattr.stages import load as load_stage
from diffattr.stages import slice_of
from diffattr.storage import write_json

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)


def config(**sections) -> RunConfig:
    cfg = load([REPO / "config" / "config.yaml", REPO / "config" / "test.yaml"])
    return dataclasses.replace(cfg, **sections)


# ---------------------------------------------------------------------------------------------
# Counterfactual design


def test_plan_removes_each_methods_top_k_at_the_decision_step():
    cf = dataclasses.replace(config().counterfactual, steps="emergence", specificity=())
    n, steps = 50, [660, 340, 0]
    rows = {m: RNG.standard_normal((3, 2, n)) for m in ("journey_trak", "pixel_similarity")}
    seen = []

    def score_row(method, step, target):
        seen.append((method, step, target))
        return rows[method][steps.index(step), target]

    cases, keep = plan(cf, n, steps, [340, 0], score_row, 0, 999)
    assert len(cases) == cf.n_cases == 6 and keep.shape == (6, n)
    assert [c.step for c in cases] == [340] * 3 + [0] * 3  # each target at its decision step
    assert [c.index for c in cases] == list(range(6))
    for case, mask in zip(cases, keep, strict=True):
        removed = np.flatnonzero(~mask)
        assert case.k == 5 == len(removed)
        if case.method == "random":
            again = plan(cf, n, steps, [340, 0], score_row, 0, 999)[1][case.index]
            other_seed = plan(cf, n, steps, [340, 0], score_row, 1, 999)[1][case.index]
            assert np.array_equal(again, mask) and not np.array_equal(other_seed, mask)
        else:
            row = rows[case.method][steps.index(case.step), case.target]
            assert set(removed) == set(np.argsort(row)[-5:])  # the 5 largest scores
            assert row[removed].min() > row[mask].max()
    assert sorted(set(seen)) == [
        ("journey_trak", 0, 1),
        ("journey_trak", 340, 0),
        ("pixel_similarity", 0, 1),
        ("pixel_similarity", 340, 0),
    ]


def test_plan_with_listed_steps_and_a_step_outside_the_attribution_steps():
    cf = dataclasses.replace(config().counterfactual, steps=(660, 0), k=(0.1, 3), specificity=())
    cases, keep = plan(cf, 40, [660, 340, 0], [0, 0], lambda m, s, t: np.arange(40.0), 0, 999)
    assert len(cases) == cf.n_cases == 2 * 2 * 3 * 2
    assert {c.k for c in cases} == {4, 3} and {c.step for c in cases} == {660, 0}
    top = [c for c in cases if c.method == "journey_trak" and c.k == 3]
    assert all(np.flatnonzero(~keep[c.index]).tolist() == [37, 38, 39] for c in top)
    bad = dataclasses.replace(cf, steps=(500,))
    with pytest.raises(ConfigError, match="500 is not an attribution step"):
        plan(bad, 40, [660, 340, 0], [0, 0], lambda m, s, t: np.arange(40.0), 0, 999)


def test_plan_final_protocol_and_step_specificity_twins():
    """final: the last step's row, resampled from x_T; a twin removes the top-k of the row at
    the farthest other step and is resampled from the same x_t as its case."""
    cf = dataclasses.replace(
        config().counterfactual,
        steps=("emergence", 660, "final"),
        methods=("journey_trak", "random"),
        specificity=("journey_trak",),
        k=(3,),
    )
    n, steps = 40, [660, 340, 0]
    rows = RNG.standard_normal((3, 2, n))
    cases, keep = plan(cf, n, steps, [340, 0], lambda m, s, t: rows[steps.index(s), t], 0, 999)
    assert len(cases) == cf.n_cases == 2 * (3 * 2 + 2)
    by = {(c.target, c.label, c.method, c.twin): c for c in cases}
    final = by[0, "final", "journey_trak", False]
    assert (final.step, final.scored_at) == (999, 0)
    assert set(np.flatnonzero(~keep[final.index])) == set(np.argsort(rows[2, 0])[-3:])
    assert by[0, "final", "random", False].step == 999
    twin = by[0, "emergence", "journey_trak", True]  # decision step 340: farthest is 0 (≥ 660)
    assert (twin.step, twin.scored_at, twin.label) == (340, 0, "emergence")
    assert set(np.flatnonzero(~keep[twin.index])) == set(np.argsort(rows[2, 0])[-3:])
    assert by[1, "660", "journey_trak", True].scored_at == 0
    assert by[1, "emergence", "journey_trak", True].scored_at == 660  # decision step 0
    assert not any(c.twin for c in cases if c.method == "random" or c.label == "final")


def test_top_influencers_break_ties_by_index():
    assert top_influencers(np.array([1.0, 3.0, 3.0, 0.0, 3.0]), 2).tolist() == [1, 2]


def test_protocol_windows_use_the_counterfactual_model_only_where_they_say():
    timesteps = [900, 700, 500, 450, 400, 300, 0]
    calls = []

    def tagged(tag):
        def predict(x, t):
            calls.append((tag, t))
            return x

        return predict

    runs = protocol_predictors(tagged("orig"), tagged("cf"), 500, 100, timesteps)
    for name, predictor in runs.items():
        calls.clear()
        for t in timesteps[2:]:  # resampling starts at the examined step t = 500
            predictor(None, t)
        used = {t for tag, t in calls if tag == "cf"}
        expected = {"original": set(), "a": {500, 450, 400}, "b": {500, 450, 400, 300, 0}}
        assert used == expected[name], name
    first = protocol_predictors(tagged("orig"), tagged("cf"), 900, 100, timesteps)
    assert sorted(first) == ["b", "original"]  # from x_T: D-TRAK's whole-trajectory run


# ---------------------------------------------------------------------------------------------
# Score assembly per method, through the score stage on tiny files


def write_inputs(tmp: Path, n=30, dim=6, members=2):
    data = PreparedData(
        images=RNG.uniform(-1, 1, (n, 1, 4, 4)).astype(np.float32),
        labels=np.arange(n) % 3,
        ids=np.arange(100, 100 + n),
        class_names=["a", "b", "c"],
        name="toy",
    )
    p = layout.Paths(str(tmp))
    write_data(p.data, data, {"name": "toy"})
    steps = [500, 0]
    targets = Targets(
        final=RNG.standard_normal((3, 1, 4, 4)).astype(np.float32),
        x_t=RNG.standard_normal((2, 3, 1, 4, 4)).astype(np.float32),
        x0_hat=RNG.standard_normal((2, 3, 1, 4, 4)).astype(np.float32),
        steps=steps,
        target_ids=np.arange(3),
    )
    write_targets(p.targets, targets)
    phis, psis, paths = [], [], {"kernels": [], "target_features": [], "train_features": []}
    for m in range(members):
        member = layout.Member(m, "final")
        phi = RNG.standard_normal((n, dim)).astype(np.float32)
        psi = RNG.standard_normal((2, 3, dim)).astype(np.float32)
        for s, (lo, hi) in enumerate([(0, 16), (16, n)]):
            path = p.train_features("loss", member, s)
            attrs = {"data_digest": read_data(p.data).digest}
            write_feature_shard(path, phi[lo:hi], np.arange(lo, hi), data.ids[lo:hi], attrs)
            paths["train_features"].append(Path(path))
        write_target_features(
            p.target_features("journey_trak", member), TargetFeatures(psi, steps, np.arange(3))
        )
        paths["target_features"].append(Path(p.target_features("journey_trak", member)))
        paths["kernels"].append(Path(p.kernel("loss", member)))
        phis.append(phi)
        psis.append(psi)
    for kernel_path, member in zip(paths["kernels"], range(members), strict=True):
        shards = [s for s in paths["train_features"] if f"/m{member}_final/" in str(s)]
        run_stage("kernel", config(), features=shards, out=kernel_path)
    return p, data, targets, phis, psis, paths


def run_stage(command: str, cfg: RunConfig, **kwargs) -> None:
    stage, slice_ = load_stage(command), slice_of(command, kwargs.get("method"))
    stage(RunConfig.from_slice(cfg.slice(slice_), slice_), **kwargs)


def run_member_stage(cfg: RunConfig, **kwargs) -> None:
    """``member-scores`` for ``kwargs["method"]`` with that method's slice."""
    run_stage("member-scores", cfg, **kwargs)


def test_score_stage_assembles_each_method(tmp_path):
    cfg = config()
    p, data, targets, phis, psis, paths = write_inputs(tmp_path)
    lam = cfg.attribution.lambda_
    expected = 0
    for phi, psi in zip(phis, psis, strict=True):  # τ = (1/M) Σ_m Φ_m (Φ_mᵀΦ_m + λ_abs I)⁻¹ ψ_m
        phi = phi.astype(np.float64)
        xtx = phi.T @ phi
        inverse = np.linalg.inv(xtx + lam * np.trace(xtx) / phi.shape[1] * np.eye(len(xtx)))
        expected = expected + np.einsum("nk,kl,stl->stn", phi, inverse, psi.astype(np.float64))
    expected /= 2
    for method in ["journey_trak", "pixel_similarity", "random"]:
        out = tmp_path / f"{method}.h5"
        gradient = method == "journey_trak"
        run_stage(
            "score",
            cfg,
            method=method,
            data=Path(p.data),
            targets=Path(p.targets),
            out=out,
            kernels=paths["kernels"] if gradient else [],
            target_features=paths["target_features"] if gradient else [],
            train_features=paths["train_features"][::-1] if gradient else [],  # any order
        )
        scores = read_scores(out)
        assert scores.scores.shape == (2, 3, 30) and scores.method == method
        assert np.array_equal(scores.train_ids, data.ids) and scores.steps == [500, 0]
        assert scores.attrs["config"]["attribution"]["lambda"] == lam
        if gradient:
            np.testing.assert_allclose(scores.scores, expected, rtol=1e-4, atol=1e-5)
            assert scores.attrs["members"] == ["m0_final", "m1_final"]
            assert len(scores.attrs["lambda_abs"]) == 2 and scores.attrs["train_output"] == "loss"
        elif method == "pixel_similarity":
            t = targets.x0_hat.reshape(2, 3, -1)
            x = data.images.reshape(30, -1)
            cos = t @ x.T / np.linalg.norm(t, axis=2)[..., None] / np.linalg.norm(x, axis=1)
            np.testing.assert_allclose(scores.scores, cos, rtol=1e-5, atol=1e-6)
        else:
            assert scores.attrs["target_image"] == "x0_hat"
            assert not np.array_equal(scores.scores[0], scores.scores[1])  # per (step, target)


def ridge_scores(phis, psis, lam):
    """τ = (1/M) Σ_m Φ_m (Φ_mᵀΦ_m + λ_abs I)⁻¹ ψ_m in numpy: (steps, targets, n)."""
    total = 0
    for phi, psi in zip(phis, psis, strict=True):
        phi = phi.astype(np.float64)
        xtx = phi.T @ phi
        inverse = np.linalg.inv(xtx + lam * np.trace(xtx) / phi.shape[1] * np.eye(len(xtx)))
        total = total + np.einsum("nk,kl,stl->stn", phi, inverse, psi.astype(np.float64))
    return total / len(phis)


def test_tuned_scores_use_each_steps_lds_lambda(tmp_path):
    """With an LDS report, step s is scored with the λ the report tuned for it; a report that
    tuned nothing for the method leaves the config λ, recorded as such."""
    cfg = config()
    p, _, _, phis, psis, paths = write_inputs(tmp_path)
    report = tmp_path / "lds.json"
    write_json(
        report,
        {
            "methods": {
                "journey_trak": {"selected_lambda": {"500": 10.0, "0": 0.001, "final_loss": 1.0}}
            }
        },
    )
    inputs = dict(
        method="journey_trak",
        data=Path(p.data),
        targets=Path(p.targets),
        kernels=paths["kernels"],
        target_features=paths["target_features"],
        train_features=paths["train_features"],
    )
    run_stage("score", cfg, out=tmp_path / "tuned.h5", lds=report, **inputs)
    tuned = read_scores(tmp_path / "tuned.h5")
    np.testing.assert_allclose(
        tuned.scores[0], ridge_scores(phis, psis, 10.0)[0], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        tuned.scores[1], ridge_scores(phis, psis, 0.001)[1], rtol=1e-4, atol=1e-6
    )
    assert tuned.attrs["lambda_source"] == "tuned" and tuned.attrs["lambda_per_step"] == [
        10.0,
        0.001,
    ]
    write_json(report, {"methods": {}})
    run_stage("score", cfg, out=tmp_path / "config.h5", lds=report, **inputs)
    kept = read_scores(tmp_path / "config.h5")
    assert kept.attrs["lambda_source"] == "config"
    np.testing.assert_allclose(
        kept.scores, ridge_scores(phis, psis, cfg.attribution.lambda_), rtol=1e-4, atol=1e-5
    )


def score_journey_trak(cfg, p, paths, out, target_features):
    run_stage(
        "score",
        cfg,
        method="journey_trak",
        data=Path(p.data),
        targets=Path(p.targets),
        out=out,
        kernels=paths["kernels"],
        target_features=target_features,
        train_features=paths["train_features"],
    )


def test_score_stage_refuses_features_of_other_training_data(tmp_path):
    cfg = config()
    p, data, _, _, _, paths = write_inputs(tmp_path)
    edited = dataclasses.replace(data, images=data.images[::-1].copy())  # same shape, reordered
    write_data(p.data, edited, {"name": "toy"})
    with pytest.raises(ArtifactError, match=r"made from other training data.*featurize_train"):
        score_journey_trak(cfg, p, paths, tmp_path / "s.h5", paths["target_features"])
    assert not (tmp_path / "s.h5").exists()


def test_score_stage_refuses_a_kernel_without_its_target_features(tmp_path):
    cfg = config()
    p, _, _, _, _, paths = write_inputs(tmp_path)
    with pytest.raises(ConfigError, match="no matching target features"):
        score_journey_trak(cfg, p, paths, tmp_path / "s.h5", paths["target_features"][:1])


# ---------------------------------------------------------------------------------------------
# The LDS report's variants


def lds_case(members=2, n=40, k=5, steps=2, targets=6, subsets=12, seeds=2):
    """Truth made linear in hidden scores, plus noise; gradient members whose ridge scores
    correlate with the hidden scores."""
    masks = np.zeros((subsets, n), bool)
    for j in range(subsets):
        masks[j, RNG.choice(n, n // 2, replace=False)] = True
    role = np.array(["tuning"] * 4 + ["reporting"] * (subsets - 4))
    phis = [RNG.standard_normal((n, k)) for _ in range(members)]
    psis = [RNG.standard_normal((steps, targets, k)) for _ in range(members)]
    hidden = np.mean([np.einsum("nk,stk->stn", f, p) for f, p in zip(phis, psis, strict=True)], 0)
    clean = predictions(hidden, masks)  # (steps, targets, subsets): f_t falls with support
    f_t = clean[None] + 0.3 * RNG.standard_normal((seeds, steps, targets, subsets))
    final = clean[-1][None] + 0.3 * RNG.standard_normal((seeds, targets, subsets))

    class Store:
        def __init__(self, phi):
            self.phi, self.n, self.dim = phi, *phi.shape

        def blocks(self, rows):
            for lo in range(0, self.n, rows):
                yield lo, self.phi[lo : lo + rows]

    step_values = [*range((steps - 1) * 100, 0, -100), 0]
    scores = {
        "journey_trak": Scores(
            hidden.astype(np.float32),
            step_values,
            np.arange(targets),
            np.arange(n),
            {
                "method": "journey_trak",
                "lambda": 0.01,
                "members": [f"m{m}_final" for m in range(members)],
            },
        ),
        "random": Scores(
            RNG.standard_normal((steps, targets, n)).astype(np.float32),
            step_values,
            np.arange(targets),
            np.arange(n),
            {"method": "random"},
        ),
    }
    inputs = LdsInputs(
        masks=masks,
        role=role,
        f_t=np.moveaxis(f_t, -1, 0),  # (subsets, seeds, steps, targets)
        final_loss=np.moveaxis(final, -1, 0),
        steps=step_values,
        scores=scores,
        members={
            "journey_trak": [([Store(f)] * steps, p, None) for f, p in zip(phis, psis, strict=True)]
        },
    )
    return inputs, truth_mean(f_t, final)


def truth_mean(f_t, final):
    return np.concatenate([f_t.mean(0), final.mean(0)[None]])  # (columns, targets, subsets)


def test_without_tuning_subsets_the_rows_to_read_are_the_config_lambda_labelled_as_such(tmp_path):
    """lds.tuning: 0 tunes nothing: a gradient method's rows to read are then its config-λ rows
    (not dropped, as they were when 2 tuning subsets left every gradient method out), named in
    lds.json, the HTML table, the figure's legend and the end-of-run line; with tuning subsets
    the same method's rows to read are the tuned ones only."""
    from diffattr.figures import lds_figure
    from diffattr.lds.stats import rows_to_read, untuned_methods
    from diffattr.stages.figures import lds_html

    inputs, _ = lds_case()
    untuned = dataclasses.replace(inputs, role=np.array(["reporting"] * len(inputs.role)))
    cfg = dataclasses.replace(config().lds, lambdas=(0.01, 1.0), bootstrap=20, null_draws=20)
    table, details = lds_table(untuned, cfg, seed=0)
    rows = rows_to_read(table)
    jt = rows[rows.method == "journey_trak"]
    assert len(jt) == 3 and set(jt.lambda_source) == {"config"} and details["methods"] == {}
    assert set(rows.method) == {"journey_trak", "random"}
    assert untuned_methods(table) == ["journey_trak"]
    assert not np.isnan(rows.margin).all()  # config rows are compared when nothing is tuned
    assert "λ not tuned for journey_trak" in lds_html(table, details)
    legend = [t.get_text() for t in lds_figure(table).axes[0].get_legend().get_texts()]
    assert "journey_trak (config λ, untuned)" in legend
    tuned, _ = lds_table(inputs, cfg, seed=0)
    assert set(rows_to_read(tuned).query("method == 'journey_trak'").lambda_source) == {"tuned"}
    assert untuned_methods(tuned) == []


def test_lds_table_tuned_config_final_and_ensemble_rows():
    inputs, truth = lds_case()
    cfg = dataclasses.replace(
        config().lds, lambdas=(0.001, 1.0, 1000.0), bootstrap=40, null_draws=30
    )
    table, details = lds_table(inputs, cfg, seed=0)
    jt = table[table.method == "journey_trak"]
    assert set(jt.lambda_source) == {"tuned", "config"} and set(jt.ground_truth) == {
        "f_t",
        "final_loss",
    }
    assert (table[table.method == "random"].lambda_source == "none").all()
    assert (jt[jt.lambda_source == "config"]["lambda"] == 0.01).all()
    final = jt[jt.ground_truth == "final_loss"]
    assert (final.step == inputs.steps[-1]).all()  # the last step's scores, against the final loss
    info = details["methods"]["journey_trak"]
    assert set(info["ensemble_size"]) == {"1", "2"}
    assert info["ensemble_size"]["2"]["lambda"] == info["selected_lambda"]
    report = inputs.role == "reporting"
    tune = ~report
    columns = [str(s) for s in inputs.steps] + ["final_loss"]
    for i, column in enumerate(columns):  # recompute one tuned row by hand
        lam = info["selected_lambda"][column]
        s = min(i, len(inputs.steps) - 1)
        members = [
            ridge_predictions(store.blocks(7), psi[s], [lam], inputs.masks)[0]
            for (store, *_), psi, _ in inputs.members["journey_trak"]
        ]
        pred = np.mean(members, 0)
        row = jt[(jt.lambda_source == "tuned")].iloc[i]
        assert row["lds"] == pytest.approx(lds(pred[:, report], truth[i][:, report]))
        tuning = [
            lds(
                np.mean(
                    [
                        ridge_predictions(st.blocks(7), ps[s], [g], inputs.masks)[0]
                        for (st, *_), ps, _ in inputs.members["journey_trak"]
                    ],
                    0,
                )[:, tune],
                truth[i][:, tune],
            )
            for g in cfg.lambdas
        ]
        assert lam == cfg.lambdas[int(np.argmax(tuning))]  # chosen on the tuning subsets only
        assert row["lds"] > 0.5  # the truth is linear in these scores
    shared = lds_table(inputs, dataclasses.replace(cfg, lambda_per_step=False), seed=0)[1]
    assert len(set(shared["methods"]["journey_trak"]["selected_lambda"].values())) == 1
    assert table.columns.tolist()[:4] == ["method", "step", "ground_truth", "lds"]
    assert isinstance(table, pd.DataFrame) and not table.lds.isna().any()


def test_ekfac_damping_is_tuned_on_the_tuning_subsets_only():
    """ekfac's λ is its damping scale: the report predicts from each candidate's scores and
    chooses on the tuning subsets. Here the tuning subsets' truth follows candidate 0.1 and the
    reporting subsets' truth candidate 1.0: the choice must be 0.1 at every column."""
    n, targets, steps, subsets = 40, 6, 2, 16
    masks = np.zeros((subsets, n), bool)
    for j in range(subsets):
        masks[j, RNG.choice(n, n // 2, replace=False)] = True
    role = np.array(["tuning"] * 6 + ["reporting"] * (subsets - 6))
    tune_scores, report_scores, noise = (RNG.standard_normal((steps, targets, n)) for _ in "abc")
    truth = np.where(
        role == "tuning", predictions(tune_scores, masks), predictions(report_scores, masks)
    )
    f_t = truth[None] + 0.05 * RNG.standard_normal((2, steps, targets, subsets))
    final = truth[-1][None] + 0.05 * RNG.standard_normal((2, targets, subsets))
    step_values = [500, 0]
    grid = Candidates(
        "ekfac_damping", [0.01, 0.1, 1.0], np.stack([noise, tune_scores, report_scores])
    )
    spread = 0.5 * RNG.standard_normal(grid.scores.shape)  # members differ; their mean is grid
    ekfac = Scores(
        noise.astype(np.float32),
        step_values,
        np.arange(targets),
        np.arange(n),
        {"method": "ekfac", "lambda": 0.01, "lambda_means": "ekfac_damping"},
        candidates=grid,
    )
    inputs = LdsInputs(
        masks=masks,
        role=role,
        f_t=np.moveaxis(f_t, -1, 0),
        final_loss=np.moveaxis(final, -1, 0),
        steps=step_values,
        scores={"ekfac": ekfac},
        member_candidates={"ekfac": [grid.scores + spread, grid.scores - spread]},
    )
    cfg = dataclasses.replace(config().lds, bootstrap=40, null_draws=30)
    table, details = lds_table(inputs, cfg, seed=0)
    info = details["methods"]["ekfac"]
    assert set(info["ensemble_size"]) == {"1", "2"}  # members' own candidates, first 1 and 2
    assert info["ensemble_size"]["2"]["lambda"] == info["selected_lambda"]
    assert info["lambdas"] == [0.01, 0.1, 1.0] and info["lambda_means"] == "ekfac_damping"
    assert set(info["selected_lambda"].values()) == {0.1}
    tuned = table[table.lambda_source == "tuned"]
    config_rows = table[table.lambda_source == "config"]
    assert (tuned["lambda"] == 0.1).all() and (config_rows["lambda"] == 0.01).all()
    report = role == "reporting"
    mean_truth = truth_mean(f_t, final)
    for i in range(steps + 1):
        pred = predictions(tune_scores, masks)[min(i, steps - 1)]
        want = lds(pred[:, report], mean_truth[i][:, report])
        assert tuned.iloc[i]["lds"] == pytest.approx(want)
        assert want < 0.5  # what the reporting subsets alone would have preferred is not taken


def test_tuned_ekfac_scores_take_each_steps_damping_from_the_members_candidates(tmp_path):
    """The score stage: without an LDS the members' config-damping scores and the mean of their
    candidates; with lds.json, step s from every member's candidate at the damping tuned there."""
    p, data, targets, _, _, _ = write_inputs(tmp_path)
    values, shape = [0.1, 1.0], (2, 3, len(data.ids))
    paths, grids = [], []
    for m in range(2):
        grid = RNG.standard_normal((2, *shape)).astype(np.float32)
        path = Path(p.member_scores("ekfac", layout.Member(m, "final")))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_scores(
            path,
            targets.steps,
            targets.target_ids,
            data.ids,
            lambda s, t, r, g=grid: g[0][s, t, r],
            {"method": "ekfac", "K": 2, "seconds": 1.0},
            candidates=Candidates("ekfac_damping", values, grid),
        )
        paths.append(path)
        grids.append(grid)
    common = dict(method="ekfac", data=Path(p.data), targets=Path(p.targets), member_scores=paths)
    run_stage("score", config(), out=tmp_path / "ekfac.h5", **common)
    plain = read_scores(tmp_path / "ekfac.h5")
    np.testing.assert_allclose(plain.scores, np.mean([g[0] for g in grids], 0), rtol=1e-6)
    np.testing.assert_allclose(plain.candidates.scores, np.mean(grids, 0), rtol=1e-6)
    assert plain.attrs["lambda_source"] == "config" and plain.attrs["lambda"] == 0.1
    lds_json = tmp_path / "lds.json"
    write_json(lds_json, {"methods": {"ekfac": {"selected_lambda": {"500": 1.0, "0": 0.1}}}})
    run_stage("score", config(), out=tmp_path / "tuned.h5", lds=lds_json, **common)
    tuned = read_scores(tmp_path / "tuned.h5")
    want = np.stack([np.mean([g[1][0] for g in grids], 0), np.mean([g[0][1] for g in grids], 0)])
    np.testing.assert_allclose(tuned.scores, want, rtol=1e-6)
    assert tuned.attrs["lambda_source"] == "tuned" and tuned.attrs["lambda_per_step"] == [1.0, 0.1]
    write_json(lds_json, {"methods": {"ekfac": {"selected_lambda": {"500": 10.0, "0": 0.1}}}})
    with pytest.raises(ArtifactError, match="no scores for ekfac_damping = 10"):
        run_stage("score", config(), out=tmp_path / "bad.h5", lds=lds_json, **common)


# ---------------------------------------------------------------------------------------------
# Retraining shares the full model's randomness


def tiny_config(tmp_path: Path) -> RunConfig:
    cfg = config()
    model = dataclasses.replace(
        cfg.model,
        block_out_channels=tuple(TINY_UNET["block_out_channels"]),
        down_block_types=tuple(TINY_UNET["down_block_types"]),
        up_block_types=tuple(TINY_UNET["up_block_types"]),
        norm_num_groups=TINY_UNET["norm_num_groups"],
    )
    train = dataclasses.replace(cfg.train, steps=4, batch_size=8, warmup_steps=1, log_every=2)
    return dataclasses.replace(cfg, model=model, train=train)


def write_toy_data(path: Path, n: int = 12) -> None:
    """n random 8×8 grey images of two classes (a tiny model trains on them in a second)."""
    data = PreparedData(
        images=RNG.uniform(-1, 1, (n, 1, 8, 8)).astype(np.float32),
        labels=np.arange(n) % 2,
        ids=np.arange(n),
        class_names=["a", "b"],
        name="toy",
    )
    write_data(path, data, {})


def test_counterfactual_model_on_unchanged_data_is_full_model_0_bit_for_bit(tmp_path):
    cfg = tiny_config(tmp_path)
    write_toy_data(tmp_path / "d.h5")
    keep = np.ones((2, 12), bool)
    keep[1, [0, 5]] = False
    cases = [Case(0, "random", 0, 0, 0, "0", 0), Case(1, "random", 0, 0, 2, "0", 0)]
    write_plan(tmp_path / "plan.h5", layout_plan(cases, keep))
    common = {"data": tmp_path / "d.h5", "progress": False}
    run_stage("train", cfg, model_index=0, out=tmp_path / "m0", **common)
    run_stage(
        "train-counterfactual",
        cfg,
        plan=tmp_path / "plan.h5",
        case=0,
        out=tmp_path / "c0",
        **common,
    )
    run_stage(
        "train-counterfactual",
        cfg,
        plan=tmp_path / "plan.h5",
        case=1,
        out=tmp_path / "c1",
        **common,
    )
    run_stage("train-floor", cfg, out=tmp_path / "floor", **common)

    def weights(name):
        return load_model(layout.checkpoint(tmp_path / name), "cpu")[0].state_dict()

    full, same, removed, floor = (weights(n) for n in ["m0", "c0", "c1", "floor"])
    assert all(torch.equal(full[k], same[k]) for k in full)
    assert not all(torch.equal(full[k], removed[k]) for k in full)
    assert not all(torch.equal(full[k], floor[k]) for k in full)


def test_final_protocol_regenerates_each_target_from_its_own_noise(tmp_path):
    """D-TRAK's protocol starts from the target's own x_T: drawn again from its stream it is the
    sampled one (the original model then retraces the target), and a counterfactual model equal
    to the original resamples the original's samples bit for bit."""
    cfg = tiny_config(tmp_path)
    write_toy_data(tmp_path / "d.h5")
    run_stage(
        "train", cfg, data=tmp_path / "d.h5", model_index=0, out=tmp_path / "m0", progress=False
    )
    run_stage(
        "sample",
        cfg,
        model=tmp_path / "m0",
        data=tmp_path / "d.h5",
        out=tmp_path / "t.h5",
        progress=False,
    )
    stored = read_targets(tmp_path / "t.h5")
    unet, scheduler = load_model(layout.checkpoint(tmp_path / "m0"), "cpu", cfg.model)
    shape = stored.final.shape[1:]
    T = cfg.first_timestep()
    assert diffusion.inference_timesteps(scheduler, cfg.targets.sampling_steps)[0] == T
    gens = diffusion.target_generators(cfg.seed, range(stored.n))
    x_T = diffusion.initial_noise(shape, gens)
    for j in range(stored.n):
        assert torch.equal(x_T[j], diffusion.target_noise(cfg.seed, j, shape))
    steps = cfg.targets.sampling_steps
    again = diffusion.denoise(x_T, scheduler, steps, diffusion.model_predictor(unet), gens)
    assert torch.equal(again.final, torch.from_numpy(stored.final))
    case = Case(0, "random", 1, T, 2, "final", stored.steps[-1])
    write_plan(tmp_path / "plan.h5", layout_plan([case], np.ones((1, 12), bool)))
    run_stage(
        "cf-resample",
        cfg,
        plan=tmp_path / "plan.h5",
        case="c0",
        original=tmp_path / "m0",
        model=tmp_path / "m0",
        targets=tmp_path / "t.h5",
        out=tmp_path / "r.h5",
    )
    runs = read_resampled(tmp_path / "r.h5")[1, T]
    assert sorted(runs) == ["b", "original"]  # from x_T only the whole-trajectory protocol
    assert np.array_equal(runs["original"], runs["b"])
    assert not np.allclose(runs["original"][0], runs["original"][1])  # S streams


def test_unlearning_in_pieces_equals_one_job(tmp_path):
    """Four jobs, each unlearning a block of the targets and evaluating a shard of the training
    losses, give the one job's scores bit for bit once the score stage joins them (a job's Fisher
    covers every example, and the loss batches do not depend on the split)."""
    cfg = tiny_config(tmp_path)
    cfg = dataclasses.replace(
        cfg,
        attribution=dataclasses.replace(
            cfg.attribution,
            unlearning=dataclasses.replace(cfg.attribution.unlearning, draws=8),
            batch_size=2,
        ),
    )  # loss batches of 8: the 12 examples are 2 of them
    write_toy_data(tmp_path / "d.h5")
    common = {"data": tmp_path / "d.h5", "progress": False}
    run_stage("train", cfg, model_index=0, out=tmp_path / "m0", **common)
    run_stage("sample", cfg, model=tmp_path / "m0", out=tmp_path / "t.h5", **common)
    paths = layout.Paths(str(tmp_path / "run"))

    def unlearning_job(pieces, out, target_shard, shard):
        split = dataclasses.replace(
            cfg.attribution,
            unlearning=dataclasses.replace(
                cfg.attribution.unlearning, shards=pieces[0], train_shards=pieces[1]
            ),
        )
        run_member_stage(
            dataclasses.replace(cfg, attribution=split),
            data=tmp_path / "d.h5",
            model=tmp_path / "m0",
            member="m0_final",
            targets=tmp_path / "t.h5",
            out=out,
            method="unlearning",
        )
        assert layout.parse_member_piece(out) == (target_shard, shard)

    files = {}
    for pieces in [(1, 1), (2, 2)]:
        method = get_method("unlearning")
        needs = method.needs([])
        parts = paths.score_inputs(needs, paths, ["m0_final"], 2, pieces)["member_scores"]
        assert len(parts) == pieces[0] * pieces[1]
        for path in parts:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            block, shard = re.fullmatch(r"m0_final\.t(\d)\.s(\d)\.h5", Path(path).name).groups()
            unlearning_job(pieces, Path(path), int(block), int(shard))
        if pieces == (2, 2):
            assert [len(read_scores(p).train_ids) for p in parts] == [8, 4, 8, 4]
        files[pieces] = tmp_path / f"scores{pieces[0]}{pieces[1]}.h5"
        score = partial(run_stage, "score", cfg, method="unlearning", data=tmp_path / "d.h5")
        score(targets=tmp_path / "t.h5", member_scores=[Path(p) for p in parts], out=files[pieces])
        if pieces == (2, 2):  # a piece left out is named, not zero-filled
            with pytest.raises(ArtifactError, match=r"leave 4 .* pairs out and hold 0"):
                pieces_but_one = [Path(p) for p in parts[:-1]]
                score(
                    targets=tmp_path / "t.h5", member_scores=pieces_but_one, out=tmp_path / "x.h5"
                )
        for path in parts:
            Path(path).unlink()
    one, four = read_scores(files[1, 1]), read_scores(files[2, 2])
    assert one.scores.shape[1:] == (3, 12) and np.abs(one.scores).max() > 0
    assert np.array_equal(one.scores, four.scores)
    with pytest.raises(ConfigError, match=r"unlearning\.shards \(4\) exceeds the 3 targets"):
        unlearning_job((4, 1), tmp_path / "x.h5", 0, 0)
    with pytest.raises(ConfigError, match=r"unlearning\.train_shards \(3\) exceeds the 2 loss"):
        unlearning_job((1, 3), tmp_path / "x.h5", 0, 2)


def layout_plan(cases, keep):
    from diffattr.artifacts import Plan

    return Plan(cases, keep)


def test_a_subset_model_sees_the_same_timesteps_and_noise_as_the_full_model(monkeypatch, tmp_path):
    """Training on a subset with the same seed draws the same (t, ε) at every step: only the
    images differ (the property LDS and counterfactual retraining rest on)."""
    cfg = tiny_config(tmp_path)
    images = torch.rand(20, 1, 8, 8) * 2 - 1
    seen = []
    original = diffusion.add_noise

    def recording(alphas_cumprod, x0, t, eps):
        seen[-1].append((x0.clone(), t.clone(), eps.clone()))
        return original(alphas_cumprod, x0, t, eps)

    monkeypatch.setattr(diffusion, "add_noise", recording)
    from diffattr.models import build_scheduler, build_unet

    for positions in (None, torch.arange(0, 20, 2)):
        seen.append([])
        model = build_unet(cfg.model, (1, 8, 8))
        diffusion.train(
            model,
            build_scheduler(cfg.diffusion),
            images,
            cfg.train,
            seed=3,
            positions=positions,
            progress=False,
        )
    full, subset = seen
    assert len(full) == len(subset) == cfg.train.steps
    for (x_a, t_a, e_a), (x_b, t_b, e_b) in zip(full, subset, strict=True):
        assert torch.equal(t_a, t_b) and torch.equal(e_a, e_b)
        assert not torch.equal(x_a, x_b)
    subset_images = {tuple(x.flatten().tolist()) for step in subset for x in step[0]}
    allowed = {tuple(images[i].flatten().tolist()) for i in range(0, 20, 2)}
    assert subset_images <= allowed


def test_subset_stage_trains_on_the_masked_examples(tmp_path):
    cfg = tiny_config(tmp_path)
    data = PreparedData(
        images=RNG.uniform(-1, 1, (10, 1, 8, 8)).astype(np.float32),
        labels=np.zeros(10, int),
        ids=np.arange(10),
        class_names=["a"],
        name="toy",
    )
    write_data(tmp_path / "d.h5", data, {})
    masks = np.zeros((2, 10), bool)
    masks[1, [1, 3, 4]] = True
    write_subsets(tmp_path / "s.h5", Subsets(masks, np.array(["tuning", "reporting"]), data.ids))
    run_stage(
        "train-subset",
        cfg,
        data=tmp_path / "d.h5",
        subsets=tmp_path / "s.h5",
        subset=1,
        seed_index=0,
        out=tmp_path / "s1",
        progress=False,
    )
    log = (tmp_path / "s1" / "train_log.json").read_text()
    assert '"n_train": 3' in log and '"seed_tag": "lds-seed-0"' in log


def test_each_gradient_methods_target_features(scheduler):
    """trak, dtrak, das: the final image at K uniform timesteps, the same ψ at every step (of the
    loss, D-TRAK's square norm, DAS's unit gradients of mean ε_θ); journey_trak, dtrak_step and
    das_step: x̂₀ᵗ at t with R draws."""
    from conftest import make_unet
    from diffattr.attribution import Attributor
    from diffattr.config import uniform_timesteps
    from diffattr.draws import FeatureDraws, TargetDraws
    from diffattr.features import featurize_targets
    from diffattr.layout import Member
    from diffattr.methods import METHODS

    model = make_unet(torch.float32)
    settings = dataclasses.replace(config().attribution, K=3, R=2, batch_size=2)
    attributor = Attributor(model, scheduler, Member(1, "final"), settings, seed=0)
    targets = Targets(
        final=RNG.uniform(-1, 1, (2, 1, 8, 8)).astype(np.float32),
        x_t=np.zeros((2, 2, 1, 8, 8), np.float32),
        x0_hat=RNG.uniform(-1, 1, (2, 2, 1, 8, 8)).astype(np.float32),
        steps=[600, 200],
        target_ids=np.array([4, 9]),
    )
    abar, proj = scheduler.alphas_cumprod, attributor.projector

    def direct(images, output, timesteps, normalize=False):
        spec = FeatureDraws(output, len(timesteps), normalize=normalize)
        return featurize_targets(
            model, proj, abar, spec, TargetDraws(torch.from_numpy(images), [4, 9], timesteps), 0, 2
        )

    grid = uniform_timesteps(3, 1000)
    assert grid == [0, 333, 666]
    for name, output, unit in [
        ("trak", "loss", 0),
        ("dtrak", "square_norm", 0),
        ("das", "mean", 1),
    ]:
        psi = attributor.featurize_targets(METHODS[name], targets)
        expected = direct(targets.final, output, grid, bool(unit))
        assert np.array_equal(psi[0], expected) and np.array_equal(psi[1], expected), name
    per_step = [
        ("journey_trak", "loss", 0),
        ("dtrak_step", "square_norm", 0),
        ("das_step", "mean", 1),
    ]
    for name, output, unit in per_step:
        psi = attributor.featurize_targets(METHODS[name], targets)
        for s, t in enumerate(targets.steps):
            want = direct(targets.x0_hat[s], output, [t, t], bool(unit))
            assert np.array_equal(psi[s], want), (name, t)
    assert not np.array_equal(
        attributor.featurize_targets(METHODS["journey_trak"], targets),
        attributor.featurize_targets(METHODS["dtrak_step"], targets),
    )


def test_lds_table_without_enough_tuning_subsets_reports_the_stored_scores_only():
    inputs, _ = lds_case()
    inputs = dataclasses.replace(inputs, role=np.array(["tuning"] * 2 + ["reporting"] * 10))
    cfg = dataclasses.replace(config().lds, bootstrap=20, null_draws=20)
    table, details = lds_table(inputs, cfg, seed=0)
    assert set(table.lambda_source) == {"config", "none"} and details["methods"] == {}
    assert (table.n_subsets == 10).all() and details["n_tuning"] == 2


def test_a_shard_overwritten_after_its_kernel_is_refused(tmp_path):
    """Same size, other values: scores and the LDS report would change silently."""
    from diffattr.errors import ArtifactError

    cfg = config()
    p, data, _, phis, _, paths = write_inputs(tmp_path)
    shard = paths["train_features"][1]  # member 0, shard 1
    write_feature_shard(shard, phis[0][16:] * 2, np.arange(16, 30), data.ids[16:], {})
    with pytest.raises(ArtifactError, match=r"shard1\.h5 changed after .*m0_final\.h5 was made"):
        score_journey_trak(cfg, p, paths, tmp_path / "s.h5", paths["target_features"])
    assert not (tmp_path / "s.h5").exists()
