"""A finished run as a library: labelled scores, top influencers, the rows to read; `top`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from diffattr.artifacts import Targets, write_data, write_patch_scores, write_scores, write_targets
from diffattr.data import PreparedData
from diffattr.errors import ArtifactError, ConfigError
from diffattr.layout import Paths
from diffattr.results import Run

RNG = np.random.default_rng(0)


@pytest.fixture
def run(tmp_path):
    p = Paths(str(tmp_path / "results" / "toy"))
    ids = np.array([3, 5, 8, 13, 21, 34])
    write_data(
        p.data,
        PreparedData(
            images=RNG.uniform(-1, 1, (6, 1, 4, 4)).astype(np.float32),
            labels=np.array([0, 1, 1, 0, 2, 2]),
            ids=ids,
            class_names=["a", "b", "c"],
            name="toy",
        ),
        {},
    )
    write_targets(
        p.targets,
        Targets(
            final=np.zeros((2, 1, 4, 4), np.float32),
            x_t=np.zeros((2, 2, 1, 4, 4), np.float32),
            x0_hat=RNG.uniform(-1, 1, (2, 2, 1, 4, 4)).astype(np.float32),
            steps=[500, 0],
            target_ids=np.array([0, 1]),
        ),
    )
    tau = RNG.standard_normal((2, 2, 6)).astype(np.float32)
    write_scores(
        p.scores("journey_trak"),
        [500, 0],
        np.array([0, 1]),
        ids,
        lambda s, t, i: tau[s, t, i],
        {"method": "journey_trak"},
    )
    table = pd.DataFrame(
        [
            {"method": "journey_trak", "step": 500, "lambda_source": "tuned", "lds": 0.5},
            {"method": "journey_trak", "step": 500, "lambda_source": "config", "lds": 0.1},
            {"method": "random", "step": 500, "lambda_source": "none", "lds": 0.0},
        ]
    )
    (tmp_path / "results" / "toy" / "reports").mkdir()
    table.to_csv(p.report("lds.csv"), index=False)
    return Run(p.run), tau, ids


def test_scores_are_labelled_by_step_target_and_training_example(run):
    results, tau, ids = run
    scores = results.scores("journey_trak")
    assert scores.dims == ("step", "target", "train")
    assert scores.step.values.tolist() == [500, 0] and scores.train.values.tolist() == ids.tolist()
    assert scores.label.values.tolist() == [0, 1, 1, 0, 2, 2]
    np.testing.assert_array_equal(scores.sel(step=0, target=1).values, tau[1, 1])
    assert float(scores.sel(step=500, target=0, train=13)) == tau[0, 0, 3]
    assert results.methods() == ["journey_trak"]


def test_top_lists_the_strongest_positive_and_negative_influencers(run):
    results, tau, ids = run
    table = results.top("journey_trak", target=1, step=500, k=2)
    row = tau[0, 1]
    assert table.columns.tolist() == ["rank", "sign", "train_id", "position", "label", "score"]
    plus, minus = table[table.sign == "+"], table[table.sign == "−"]
    assert plus.position.tolist() == np.argsort(-row)[:2].tolist()
    assert minus.position.tolist() == np.argsort(row)[:2].tolist()
    assert plus.train_id.tolist() == ids[plus.position].tolist()
    assert np.allclose(plus.score, row[plus.position]) and plus.score.is_monotonic_decreasing
    assert plus["rank"].tolist() == [1, 2] == minus["rank"].tolist()
    with pytest.raises(
        ConfigError, match=r"step 300 is not an attribution step; choose \[500, 0\]"
    ):
        results.top("journey_trak", target=1, step=300)
    with pytest.raises(ConfigError, match="no target 7"):
        results.top("journey_trak", target=7, step=500)
    with pytest.raises(ArtifactError, match=r"no scores of 'dtrak'.*\['journey_trak'\]"):
        results.top("dtrak", target=1, step=500)


def test_the_lds_rows_to_read_drop_the_untuned_lambda(run):
    results, _, _ = run
    table = results.lds()
    assert table.lambda_source.tolist() == ["tuned", "none"]


def test_diffattr_top_prints_the_table_and_draws_it(run, tmp_path):
    results, tau, ids = run
    figure = tmp_path / "top.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffattr",
            "top",
            "--run",
            str(results.folder),
            "--method",
            "journey_trak",
            "--target",
            "0",
            "--step",
            "0",
            "-k",
            "2",
            "--figure",
            str(figure),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == (
        "journey_trak: target 0, t = 0; the 2 strongest positive (+, supports the target) and "
        "negative (−) of 6 training examples"
    )
    assert lines[1].split() == ["rank", "sign", "train_id", "position", "label", "score"]
    best = int(np.argmax(tau[1, 0]))
    assert lines[2].split()[:3] == ["1", "+", str(ids[best])]
    assert len(lines) == 7 and figure.stat().st_size > 1000
    assert lines[-1] == f"figure: {figure}"


def diffattr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffattr", *args], capture_output=True, text=True)


def test_top_checks_k_names_targets_and_suggests_the_run_folder(run, tmp_path):
    """k ≥ 1 (k = 0 printed an empty table, k = −2 alternating ranks); a target id given as text
    is the integer it spells, other text is named; a misspelt run folder gets its closest
    neighbour; each problem is one line from the CLI."""
    results, _, _ = run
    for k in (0, -2):
        with pytest.raises(ConfigError, match=rf"k = {k}: ask for k ≥ 1"):
            results.top("journey_trak", target=1, step=500, k=k)
    by_text = results.top("journey_trak", target="1", step=500, k=2)
    pd.testing.assert_frame_equal(by_text, results.top("journey_trak", 1, 500, k=2))
    with pytest.raises(ConfigError, match=r"target 'three': target ids are integers"):
        results.top("journey_trak", target="three", step=500)
    with pytest.raises(ConfigError, match=r"no target 7; targets are \[0, 1\]"):
        results.top("journey_trak", target=7, step=500)
    with pytest.raises(ArtifactError, match=r"no run at .*tyo; did you mean .*toy\?"):
        Run(results.folder.parent / "tyo")
    base = ["top", "--run", str(results.folder), "--method", "journey_trak", "--step", "500"]
    for args, message in [
        (["--target", "1", "-k", "0"], "k = 0: ask for k ≥ 1"),
        (["--target", "1", "-k", "-2"], "k = -2: ask for k ≥ 1"),
        (["--target", "9"], "no target 9"),
    ]:
        proc = diffattr(*base, *args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not proc.stdout
    proc = diffattr(
        "top",
        "--run",
        str(results.folder.parent / "tyo"),
        "--method",
        "x",
        "--target",
        "0",
        "--step",
        "0",
    )
    assert proc.returncode == 2 and "did you mean" in proc.stderr


def test_top_reads_an_extra_target_set_and_help_lists_methods_and_the_runs_steps(run):
    """--target-set reads an extra set's scores; `diffattr top --run R --help` lists the
    registry's methods and that run's methods, steps and targets."""
    results, tau, ids = run
    extra = results.paths.extra("mine")
    Path(extra.scores("journey_trak")).parent.mkdir(parents=True)
    write_scores(
        extra.scores("journey_trak"),
        [500, 0],
        np.array([0]),
        ids,
        lambda s, t, i: -tau[s, :1][t, i],
        {"method": "journey_trak"},
    )
    table = results.top("journey_trak", 0, 500, k=1, target_set="mine")
    assert table.position.tolist() == [np.argmin(tau[0, 0]), np.argmax(tau[0, 0])]
    args = ["--run", str(results.folder), "--method", "journey_trak", "--target", "0"]
    proc = diffattr("top", *args, "--step", "500", "-k", "1", "--target-set", "mine")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[2].split()[3] == str(np.argmin(tau[0, 0]))
    help_text = diffattr("top", "--run", str(results.folder), "--help").stdout
    assert "methods of the registry: journey_trak," in help_text
    assert "methods journey_trak; steps (--step, timesteps t, noisy → clean) 500, 0" in help_text
    assert "targets [0, 1]" in help_text


def test_top_and_help_import_no_model_library(run):
    """`diffattr top` reads one HDF5 row: it imports neither torch nor diffusers (it took 10–15 s
    on busy cores when the CLI loaded every stage), nor does `diffattr --help`."""
    results, _, _ = run
    argv = ["top", "--run", str(results.folder), "--method", "journey_trak"]
    argv += ["--target", "0", "--step", "0"]
    code = (
        f"import sys; from diffattr.cli import main; main({argv!r}); "
        "from diffattr.cli import _parser; _parser('').format_help(); "
        "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_scores_prefer_the_lds_tuned_file_when_the_run_has_one(run):
    results, tau, ids = run
    p = results.paths
    Path(p.tuned_scores("journey_trak")).parent.mkdir(parents=True)
    write_scores(
        p.tuned_scores("journey_trak"),
        [500, 0],
        np.array([0, 1]),
        ids,
        lambda s, t, i: 2 * tau[s, t, i],
        {"method": "journey_trak", "lambda_source": "tuned"},
    )
    np.testing.assert_array_equal(results.scores("journey_trak").values, 2 * tau)
    np.testing.assert_array_equal(results.scores("journey_trak", tuned=False).values, tau)
    assert results.methods() == ["journey_trak"]


def test_the_end_of_run_summary_names_the_best_reliable_lds(run, tmp_path):
    results, _, _ = run
    rows = [
        ("journey_trak", 500, "tuned", 0.61, False),
        ("pixel_similarity", 500, "none", 0.70, True),
        ("journey_trak", 300, "config", 0.9, False),  # untuned rows are not read
        ("random", 300, "none", 0.95, False),  # nor the floor
    ]
    table = pd.DataFrame(
        [
            {
                "method": m,
                "step": t,
                "lambda_source": src,
                "lds": v,
                "ci_low": v - 0.1,
                "ci_high": v + 0.1,
                "ceiling": 0.9,
                "null_high": 0.2,
                "flagged": flag,
                "reliability": 0.3 if flag else 0.8,
                "ground_truth": "f_t",
            }
            for m, t, src, v, flag in rows
        ]
    )
    table.to_csv(results.paths.report("lds.csv"), index=False)
    line = results.summary()
    assert "best LDS 0.70 [0.60, 0.80] (pixel_similarity, t = 500" in line
    assert "UNRELIABLE" in line and "make report" in line and str(results.folder) in line
    for noise in [{"reliability": 0.2, "flagged": True}, {"null_high": 0.9}]:  # unreliable; null
        table.assign(**noise).to_csv(results.paths.report("lds.csv"))
        line = results.summary()
        assert "pipeline check only" in line and "best LDS" not in line


def test_the_end_of_run_summary_names_untuned_lambda_and_a_counterfactual_pipeline_check(run):
    """A method read with its config λ is named; a counterfactual summarized over 2 targets is
    called a pipeline check, one over 8 whose removal counts is not."""
    results, _, _ = run
    lds_rows = [
        {"method": "journey_trak", "step": 500, "lambda_source": "config", "lds": 0.4},
        {"method": "random", "step": 500, "lambda_source": "none", "lds": 0.0},
    ]
    common = {"ci_low": 0, "ci_high": 1, "ceiling": 1, "null_high": 1, "flagged": True}
    common |= {"reliability": 0.1, "ground_truth": "f_t"}
    pd.DataFrame([r | common for r in lds_rows]).to_csv(results.paths.report("lds.csv"))
    assert "λ not tuned (config λ) for journey_trak" in results.summary()
    for n, counts, expected in [(2, True, True), (8, True, False), (8, False, True)]:
        cf = pd.DataFrame(
            [
                {"method": "journey_trak", "n_targets": n, "counts": counts},
                {"method": "random", "n_targets": n, "counts": False},
            ]
        )
        cf.to_csv(results.paths.report("counterfactual.csv"), index=False)
        line = results.summary()
        assert ("counterfactual: pipeline check only" in line) == expected, (n, counts)
        assert (f"({n} targets;" in line) == expected
    group = pd.DataFrame(
        [
            {"method": "journey_trak", "metric": m, "n_targets": 2, "auc": 0.75}
            | {"auc_low": 0.5, "auc_high": 1.0}
            for m in ("l2", "prob_drop")
        ]
    )
    group.to_csv(results.paths.report("group_removal.csv"), index=False)
    assert "group removal: pipeline check only (2 targets;" in results.summary()
    group.assign(n_targets=20).to_csv(results.paths.report("group_removal.csv"), index=False)
    assert "against random (0.5: none): journey_trak 0.75 [0.50, 1.00]" in results.summary()


def test_patch_scores_are_labelled_with_their_boxes(run):
    run, _, _ = run
    p = Paths(str(run.folder))
    with pytest.raises(ArtifactError, match=r"set attribution\.patches"):
        run.patch_scores("journey_trak")
    boxes = np.array([[[0, 0, 2, 4], [2, 0, 4, 4]], [[0, 0, 4, 2], [0, 2, 4, 4]]])
    tau = RNG.standard_normal((2, 2, 2, 6)).astype(np.float32)
    write_patch_scores(
        p.patch_scores("journey_trak"),
        [500, 0],
        np.array([0, 1]),
        np.array([3, 5, 8, 13, 21, 34]),
        boxes,
        lambda s, q, i: tau[s].reshape(4, 6)[q, i],
        {"method": "journey_trak"},
    )
    scores = run.patch_scores("journey_trak")
    assert scores.dims == ("step", "target", "patch", "train")
    assert np.array_equal(scores.values, tau)
    assert scores.sel(target=1, patch=0).y1.item() == 4 and scores.sel(target=1, patch=0).x1 == 2
    assert scores.sel(step=0, target=0, patch=1, train=13).item() == tau[1, 0, 1, 3]
    top = run.top("journey_trak", target=1, step=500, k=2, patch=1)
    order = np.argsort(-tau[0, 1, 1], kind="stable")
    assert top.train_id.tolist()[:2] == [[3, 5, 8, 13, 21, 34][i] for i in order[:2]]
    with pytest.raises(ConfigError, match="no patch 2"):
        run.top("journey_trak", target=1, step=500, patch=2)


def test_a_score_file_of_an_older_version_is_this_configs():
    """Run.check_config accepts a score file whose recorded config holds this config's scoring
    keys under their old flat names, and refuses one with another value."""
    import yaml
    from conftest import REPO
    from diffattr.config import load
    from diffattr.results import scored_with

    cfg = load([REPO / "config" / "config.yaml", REPO / "config" / "test.yaml"])
    read = yaml.safe_load(cfg.slice("score"))
    old = {
        "seed": cfg.seed,
        "diffusion": read["diffusion"],
        "attribution": {
            **{k: v for k, v in read["attribution"].items() if k != "ekfac"},
            "ekfac_damping": read["attribution"]["ekfac"]["damping"],
            "methods": ["journey_trak"],  # recorded, not read by scoring
        },
    }
    assert scored_with(old, read)
    other = {**old, "attribution": {**old["attribution"], "ekfac_damping": 0.5}}
    assert not scored_with(other, read)
    assert not scored_with({**old, "seed": cfg.seed + 1}, read)
    assert not scored_with(None, read)
