"""End-to-end runs of the test config through Snakemake's CLI in a temporary directory."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import (
    REPO,
    RERUN_METHODS,
    RUN,
    rerun_workdir,
    scores,
    snakemake,
    workdir,
    workflow_env,
)
from diffattr.artifacts import read_scores

TEST_METHODS = yaml.safe_load((REPO / "config" / "test.yaml").read_text())["attribution"]["methods"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(local_run):
    return local_run


def test_all_outputs_present_with_shapes_and_attributes(finished):
    run = finished / RUN
    with h5py.File(run / "targets.h5") as f:
        assert f["x0_hat"].shape == (3, 3, 1, 8, 8)
        assert f["steps"][()].tolist()[-1] == 0
    for method in ["journey_trak", "trak", "dtrak", "pixel_similarity", "random"]:
        with h5py.File(run / "scores" / f"{method}.h5") as f:
            assert f["scores"].shape == (3, 3, 200)
            assert f.attrs["method"] == method
            assert "positive influencer" in f.attrs["sign"]
            assert np.isfinite(f["scores"][()]).all()
        figs = sorted((run / "figures" / "attributions" / method).glob("*.png"))
        assert len(figs) == 2
    with h5py.File(run / "scores" / "journey_trak.h5") as f:
        assert "m1_final" in f.attrs["members"]
        assert '"kind": "factored"' in f.attrs["projection"]
    for member in ["m0", "m1"]:
        final = run / "models" / member / "final"
        assert (final / "unet" / "diffusion_pytorch_model.safetensors").exists()
        assert json.loads((final / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"


def test_patch_outputs_present(finished):
    """The shared run has a 2 × 2 grid of patches: patch scores and figures for its patch
    methods, every patch's ground truth, the patch LDS tables and figure."""
    run = finished / RUN
    for method in ["journey_trak", "pixel_similarity"]:
        with h5py.File(run / "scores" / "patches" / f"{method}.h5") as f:
            assert f["scores"].shape == (3, 3, 4, 200)
            assert f["boxes"][0].tolist() == [
                [0, 0, 4, 4],
                [0, 4, 4, 8],
                [4, 0, 8, 4],
                [4, 4, 8, 8],
            ]
            assert np.isfinite(f["scores"][()]).all()
            assert [d.label for d in f["scores"].dims] == ["step", "target", "patch", "train"]
        figures = {p.name for p in (run / "figures" / "patches" / method).glob("*.png")}
        assert figures == {f"target-{j}-patch-{p}.png" for j in range(2) for p in range(4)} | {
            f"target-{j}-patches.png" for j in range(2)
        }
    with h5py.File(run / "scores" / "patches" / "journey_trak.h5") as f:
        assert f.attrs["lambda_source"] == "tuned"  # the whole-image LDS's per-step λ
    table = pd.read_csv(run / "reports" / "lds_patches.csv")
    assert set(table.patch) == {0, 1, 2, 3}
    assert set(table.method) == {
        "journey_trak",
        "pixel_similarity",
        "journey_trak (whole image)",
        "pixel_similarity (whole image)",
    }
    localization = pd.read_csv(run / "reports" / "lds_patches_localization.csv")
    assert set(localization.patch.astype(str)) == {"0", "1", "2", "3", "all"}
    assert (run / "figures" / "lds_patches.png").stat().st_size > 0


@pytest.fixture(scope="module")
def report_html(finished):
    """Snakemake's HTML report of the shared run (what `make report` builds)."""
    snakemake(finished, "--report", "report.html")
    return finished / "report.html"


def test_html_report_of_the_test_run_builds(report_html):
    """The report holds the LDS, the patch LDS and the attribution figures' sections."""
    html = report_html.read_text(errors="replace")
    for section in ["Evaluation", "Patch LDS", "Attributions", "Patches", "lds_patches.csv"]:
        assert section in html, section
    assert "System Message" not in html  # no reST error box in a caption


def chromium():
    """The system Chromium (Debian package ``chromium``) driven by playwright, or a skip."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium: apt-get install chromium (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    return sync_api, path


def test_the_report_shows_its_tables_and_figures_in_a_browser(report_html):
    """Headless Chromium clicks through the report: the LDS and counterfactual tables render
    as tables (not download links), with their rows; a figure of each section loads; no reST
    system message anywhere."""
    sync_api, path = chromium()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(report_html.as_uri())
        evaluation = page.get_by_text("Evaluation", exact=True).first
        evaluation.click()
        shown = {}

        def open_result(result: str, kind: str, button: int = 0) -> None:  # 0: view, 1: info
            cells = [page.get_by_text(result, exact=True), page.get_by_text(kind, exact=True)]
            row = page.locator("tr").filter(has=cells[0]).filter(has=cells[1])
            row.locator("a").nth(button).click()

        for subcategory, result in [
            ("LDS", ("LDS per step, the rows to read", "LDS per step")),
            ("Counterfactual", ("counterfactual effects", "counterfactual effects")),
        ]:
            page.get_by_text(subcategory, exact=True).first.click()
            open_result(result[0], "table")
            frame = page.frame_locator("iframe").first
            rows = frame.locator("tbody tr")
            rows.first.wait_for()
            # the first table: the LDS page's regime table follows it
            shown[subcategory] = frame.locator("table").first.inner_text()
            assert rows.count() > 3, subcategory
            open_result(result[1], "figure")
            image = page.locator("img[src^='data:image/png']").first
            image.wait_for()
            assert image.evaluate("i => i.complete && i.naturalWidth > 300"), subcategory
            open_result(result[1], "figure", button=1)  # the job's parameters, readable
            params = page.get_by_text(re.compile(r"cfg=\{")).first
            shown[f"{subcategory} params"] = params.inner_text()
            evaluation.click()
        assert "journey_trak" in shown["LDS"] and "ci_low" in shown["LDS"]
        assert "diff_vs_random" in shown["Counterfactual"]
        for params in (shown["LDS params"], shown["Counterfactual params"]):
            assert params.startswith("cfg={") and not set('"\\') & set(params), params
        assert "System Message" not in page.content()
        browser.close()


def test_every_job_was_served_warm_and_the_rule_table_has_its_own_resources(finished):
    """The run's jobs were forked from its warm server (diffattr.warm), none started cold, and
    scripts/rule_times.py reads each served job's own CPU and RSS from the server's log (the
    benchmark files measure only the waiting caller)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rule_times", REPO / "scripts/rule_times.py")
    rule_times = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rule_times)
    run = finished / RUN
    jobs = {
        p.relative_to(run / "benchmarks").with_suffix("") for p in run.glob("benchmarks/**/*.tsv")
    }
    own = rule_times.served(run)
    assert jobs and jobs == set(own)
    table = rule_times.rule_times(run)
    assert set(table.index) == {job.parts[0] for job in jobs}
    bench = pd.read_csv(run / "benchmarks" / "train_model" / "m0.tsv", sep="\t").iloc[-1]
    assert table.loc["train_model", "cpu_s"] > 2 * float(bench.cpu_time)  # not the caller's


def test_rerun_does_nothing(finished):
    proc = snakemake(finished, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


DRAWING_RULES = {
    "data_figure",
    "figure_attributions",
    "figure_extra",
    "figure_patches",
    "lds_figures",
    "lds_patches_figure",
    "emergence_figure",
    "cf_figures",
}


def test_the_readmes_figures_only_rerun_redraws_every_figure_and_computes_nothing(finished):
    """The README's figures-only command, taken from the README itself: its dry run on a finished
    run lists only the rules that draw from stored results (no training, sampling, featurizing,
    λ tuning or counterfactual plan), and among them every figure of the run."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Rerunning only the figures", 1)[1].split("\n## ", 1)[0]
    command = re.search(r"`(snakemake [^`]*--forcerun[^`]*)`", section).group(1).split()
    assert command[:3] == ["snakemake", "--cores", "1"]
    proc = snakemake(finished, "-n", *command[1:], cores=False)
    stats = (proc.stdout + proc.stderr).split("Job stats:", 1)[1]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M))
    jobs.pop("total")
    assert set(jobs) == DRAWING_RULES - {"figure_extra"} | {"figures"}, jobs
    assert int(jobs["figure_attributions"]) == len(TEST_METHODS)
    # A forced rule without wildcards would be a target of its own (Snakemake): with the
    # counterfactual off, forcing its drawing rules must add nothing (no counterfactual to draw).
    (finished / "config" / "no-cf.yaml").write_text("counterfactual: {enabled: false}\n")
    args = ["-n", "--configfile", "config/test.yaml", "config/no-cf.yaml", *command[1:]]
    proc = snakemake(finished, *args, cores=False)
    stats = (proc.stdout + proc.stderr).split("Job stats:", 1)[1]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M))
    assert not {"cf_figures", "emergence_figure"} & set(jobs), jobs


def test_the_readmes_from_python_example_reproduces_the_runs_scores_with_every_member(
    finished, monkeypatch
):
    """The README's in-process facade example, taken from the README and run on the shared run
    (its config files; a timestep of this run): it loads every member of the ensemble and its
    τ at the named timestep equals the run's scores/journey_trak.h5 there (with one member, as
    the example once had, it correlated 0.57 with them)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## From Python", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[1]
    assert 'load(["config/config.yaml"])' in code and "index(300)" in code
    code = code.replace('load(["config/config.yaml"])', 'load(["config/config.yaml", TEST])')
    code = code.replace("index(300)", "index(340)")
    monkeypatch.chdir(finished)
    names = {"TEST": "config/test.yaml"}
    exec(compile(code, "README.md", "exec"), names)
    assert len(names["parts"]) == 2  # both members of the test ensemble
    with h5py.File(finished / RUN / "scores" / "journey_trak.h5") as f:
        step = f["steps"][()].tolist().index(340)
        stored = f["scores"][step]
    np.testing.assert_allclose(names["tau"], stored, rtol=1e-4, atol=1e-6)


def test_top_influencers_look_like_the_target(finished):
    """Sanity of meaning: at the last step, the top-5 positive influencers are closer in pixels to
    the generated image than random training images are (mean over targets)."""
    with h5py.File(finished / RUN / "data.h5") as f:
        images = f["images"][()].reshape(200, -1)
    with h5py.File(finished / RUN / "targets.h5") as f:
        final = f["final"][()].reshape(3, -1)
    with h5py.File(finished / RUN / "scores" / "journey_trak.h5") as f:
        tau = f["scores"][-1]
    dist = np.linalg.norm(images[None] - final[:, None], axis=2)  # (targets, train)
    top = np.argsort(-tau, axis=1)[:, :5]
    top_dist = np.take_along_axis(dist, top, axis=1).mean()
    assert top_dist < dist.mean(), (top_dist, dist.mean())


def test_killed_run_resumes_to_identical_scores(finished, tmp_path):
    """Kill a fresh run mid-way, resume with --rerun-incomplete: the scores equal the first run's
    bit for bit (this is also the from-scratch reproducibility check)."""
    cwd = rerun_workdir(tmp_path)
    env = workflow_env()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "2",
            "--configfile=config/test.yaml",
            "attribution",
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list((cwd / RUN / "features").glob("train/*/*/*.h5")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cwd / RUN / "scores").exists()
    snakemake(cwd, "--unlock", "attribution")  # a SIGKILLed Snakemake leaves its lock behind
    snakemake(cwd, "--rerun-incomplete", "attribution")
    first, second = scores(finished), scores(cwd)
    assert sorted(first) == sorted(TEST_METHODS) and sorted(second) == sorted(RERUN_METHODS)
    for method in second:
        assert np.array_equal(first[method], second[method]), method


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("K: 4", "K: -4", "-4 is less than the minimum of 1"),  # the schema
        ("  targets: 2\n", "  targets: 7\n", "counterfactual.targets (7) exceeds targets.n (3)"),
    ],
)
def test_dry_run_rejects_broken_config(tmp_path, old, new, message):
    """Schema and cross-field checks stop a dry run, before any job, with one named key."""
    cwd = workdir(tmp_path)
    text = (cwd / "config" / "test.yaml").read_text()
    assert old in text
    (cwd / "config" / "test.yaml").write_text(text.replace(old, new))
    proc = snakemake(cwd, "-n", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    output = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in output if "config error" in line]
    assert len(errors) == 1 and message in errors[0]
    assert 'File "' not in proc.stdout + proc.stderr  # no frames of the package's internals


def test_a_null_in_an_overlay_means_the_default_in_a_dry_run(tmp_path):
    """`attribution.patches: null` (documented: null means the key's default) passes the dry run;
    Snakemake's own schema check rejected it with a 60-line dump."""
    cwd = workdir(tmp_path)
    (cwd / "config" / "null.yaml").write_text("attribution:\n  patches: null\n")
    proc = snakemake(cwd, "-n", "--configfile", "config/test.yaml", "config/null.yaml", check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_lds_and_counterfactual_reports(finished):
    import pandas as pd

    run = finished / RUN
    lds = pd.read_csv(run / "reports" / "lds.csv")
    expected = [
        "method",
        "step",
        "lds",
        "ci_low",
        "ci_high",
        "null_high",
        "ceiling",
        "n_targets",
        "n_subsets",
        "n_seeds",
        "lambda",
        "margin_over",
        "margin_ci_low",
        "margin_ci_high",
    ]
    assert set(expected) <= set(lds.columns)
    assert set(lds.method) == set(TEST_METHODS)
    assert (lds.n_subsets == 4).all() and (lds.n_seeds == 2).all()
    assert lds.lds.between(-1, 1).all() and (lds.ci_low <= lds.ci_high).all()
    assert set(lds.ground_truth) == {"f_t", "final_loss"}
    assert (run / "figures" / "lds.png").stat().st_size > 10_000
    assert (run / "figures" / "data.png").stat().st_size > 10_000  # the training data
    details = json.loads((run / "reports" / "lds.json").read_text())
    tuned = lds[lds.lambda_source == "tuned"]
    for method, info in details["methods"].items():  # λ chosen per step, as the CSV says
        rows = tuned[tuned.method == method]
        chosen = rows.set_index(["ground_truth", "step"])["lambda"]
        final_step = rows[rows.ground_truth == "final_loss"].step.iloc[0]
        for column, lam in info["selected_lambda"].items():
            final = column == "final_loss"
            key = ("final_loss", final_step) if final else ("f_t", int(column))
            assert chosen[key] == pytest.approx(lam)
    ld = tuned[tuned.method == "local_denoiser"]  # its patch size, chosen per step from the grid
    assert len(ld) and set(ld["lambda"]) <= {3.0, 5.0}
    grid = read_scores(run / "scores" / "local_denoiser.h5").candidates
    refit = read_scores(run / "scores" / "tuned" / "local_denoiser.h5")
    assert grid.values == [3.0, 5.0] and refit.candidates is None
    for s, size in enumerate(refit.attrs["lambda_per_step"]):  # rescored at the chosen sizes
        np.testing.assert_array_equal(refit.scores[s], grid.at(size)[s])
    memo = details["memorization_reference"]
    assert set(memo) == {str(s) for s in lds.step.unique()}
    assert all(-1 <= v["spearman"] <= 1 and v["ci_low"] <= v["ci_high"] for v in memo.values())
    regime = details["regime"]  # a verdict per step from the complementary pair
    assert set(regime["steps"]) == {str(s) for s in lds[lds.ground_truth == "f_t"].step}
    for d in regime["steps"].values():
        assert d["verdict"] in {"memorizing", "transitional", "generalizing"}
        assert 0 <= d["near_copies"] <= 1 and -1 <= d["agreement"] <= 1
    assert regime["pair"][1].endswith("lds/regime/complement")
    page = (run / "reports" / "lds.html").read_text()
    assert "Regime per step" in page and html.escape(regime["rule"]) in page
    cf = pd.read_csv(run / "reports" / "counterfactual.csv")
    assert set(cf.method) == {"journey_trak", "pixel_similarity", "random"}
    assert set(cf.metric) == {"l2", "prob_drop", "frechet"} and set(cf.protocol) == {"a", "b"}
    assert cf.classifier_accuracy.iloc[0] > 0.8
    assert not cf.loc[cf.method == "random", "counts"].any()
    assert set(cf.step.astype(str)) == {"emergence", "final"}
    specific = cf[(cf.method == "journey_trak") & (cf.step.astype(str) == "emergence")]
    assert specific.diff_vs_other_step.notna().all()  # the step-specificity test
    assert cf.loc[cf.step.astype(str) == "final", "diff_vs_other_step"].isna().all()
    assert set(cf.loc[cf.step.astype(str) == "final", "protocol"]) == {"b"}
    cases = pd.read_csv(run / "reports" / "counterfactual_cases.csv").drop_duplicates("index")
    assert len(cases) == 2 * (2 * 3 + 1)  # targets × (steps × methods + a twin)
    twins = cases[(cases.label != "final") & (cases.scored_at != cases.step)]
    assert len(twins) == 2 and set(twins.method) == {"journey_trak"}
    final = cases[cases.label == "final"]
    assert (final.step == 980).all() and (final.scored_at == 0).all()  # x_T; the last step's row
    emergence = pd.read_csv(run / "reports" / "emergence.csv")
    assert emergence.probability.between(0, 1).all()
    page = (run / "reports" / "counterfactual.html").read_text()
    assert "ranked by journey_trak (λ tuned per step on the LDS tuning subsets)" in page
    assert "PIPELINE CHECK ONLY: no removal counts over ≥ 8 targets." in page  # 2 targets
    assert cf.ci_low.isna().all() and (cf.n_targets == 2).all()  # no interval over 2 targets
    for name in ["counterfactual_metrics.png", "counterfactual_samples.png", "emergence.png"]:
        assert (run / "figures" / name).exists()


def test_group_removal_report(finished):
    """The group protocol of config/test.yaml (2 targets, top 3 each, journey_trak and 1 random
    draw): one model per removal, the plan's union and null of equal size, every model and the
    original regenerating both targets from x_T, the three tables and the figure."""
    run = finished / RUN
    with h5py.File(run / "counterfactual" / "group" / "plan.h5") as f:
        keep, targets = f["keep"][()], f["targets"][()].tolist()
    assert keep.shape == (2, 200) and targets == [0, 1]
    assert 3 <= (~keep[0]).sum() <= 6 and (~keep[0]).sum() == (~keep[1]).sum()
    models = {p.name for p in (run / "counterfactual" / "group" / "models").iterdir()}
    assert models == {"journey_trak", "random0-journey_trak"}
    with h5py.File(run / "counterfactual" / "group" / "samples" / "original.h5") as f:
        assert f["samples"].shape == (2, 6, 1, 8, 8) and f.attrs["start"] == 980  # x_T
    table = pd.read_csv(run / "reports" / "group_removal.csv")
    assert set(table.method) == {"journey_trak"}
    assert set(table.metric) == {"l2", "ssim_drop", "prob_drop"}
    assert (table.n_targets == 2).all() and (table.n_random == 1).all()
    assert table.auc.between(0, 1).all() and table.ratio_low.isna().all()  # 2 targets
    per_target = pd.read_csv(run / "reports" / "group_removal_targets.csv")
    assert len(per_target) == 2 * 2 * 3  # models × targets × metrics
    assert len(pd.read_csv(run / "reports" / "group_removal_pairs.csv")) == 0  # one method
    assert (run / "figures" / "group_removal.png").exists()


def test_the_readmes_result_examples_run_as_written(finished, tmp_path):
    """The README's "Using the results" code block and its `diffattr top` line, on the test run:
    only the run folder, a target id and a step are replaced by the test run's."""
    from diffattr.results import Run

    run = finished / RUN
    step = Run(run).scores("journey_trak").step.values[1]
    values = {
        "results/default": str(run),
        "step=300": f"step={step}",
        "target=3": "target=1",
        '"journey_trak", 3, 300)': f'"journey_trak", 1, {step})',
        "--target 3 --step 300": f"--target 1 --step {step}",
        "[--figure top.png]": f"--figure {tmp_path / 'top.png'}",
    }
    section = (REPO / "README.md").read_text().split("## Using the results", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    shell = section.split("From the shell: `", 1)[1].split("` prints", 1)[0].replace("\n", " ")
    for old, new in values.items():
        code, shell = code.replace(old, new), shell.replace(old, new)
    exec(compile(code, "README.md", "exec"), {})
    proc = subprocess.run(shell.split(), capture_output=True, text=True, env=workflow_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train_id" in proc.stdout and (tmp_path / "top.png").exists()


def test_evaluate_reproduces_the_runs_lds_and_scores_a_new_method(finished, tmp_path):
    """diffattr evaluate on the finished run: its own score files give its lds.csv bit for bit;
    a new method's file joins the table (a candidate grid tuned on the tuning subsets); a file
    for other targets, or named like a run method, is one line."""
    from diffattr.artifacts import Candidates
    from diffattr.errors import ArtifactError
    from diffattr.evaluate_run import evaluate_scores, write_method_scores
    from diffattr.results import Run

    run, configs = (
        finished / RUN,
        [finished / "config" / "config.yaml", finished / "config" / "test.yaml"],
    )
    evaluate_scores(run, configs, out=tmp_path / "same")
    assert (tmp_path / "same" / "lds.csv").read_bytes() == (
        run / "reports" / "lds.csv"
    ).read_bytes()
    pixels = Run(run).scores("pixel_similarity").values
    noise = np.random.default_rng(0).normal(size=pixels.shape)
    grid = Candidates("mix", [0.0, 1.0], np.stack([noise, pixels]).astype(np.float32))
    write_method_scores(tmp_path / "mine.h5", run, "mine", noise, grid, 0.0)
    table, details = evaluate_scores(run, configs, [tmp_path / "mine.h5"])
    mine = table[table.method == "mine"]
    assert set(mine.lambda_source) == {"tuned", "config"} and "mine" in details["methods"]
    assert set(mine[mine.lambda_source == "tuned"]["lambda"]) <= {0.0, 1.0}
    write_method_scores(tmp_path / "pixel_similarity.h5", run, "pixel_similarity", noise)
    with pytest.raises(ArtifactError, match="a method the run already has"):
        evaluate_scores(run, configs, [tmp_path / "pixel_similarity.h5"])
    with h5py.File(tmp_path / "mine.h5", "r+") as f:
        f.attrs.pop("datasets_digest", None)
        f["target_ids"][0] = 999
    with pytest.raises(ArtifactError, match="score the run's targets"):
        evaluate_scores(run, configs, [tmp_path / "mine.h5"])
