"""diffattr estimate: job counts equal Snakemake's dry run, costs scale with the config's sizes,
one-line errors, the CLI's table."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from diffattr.cli import main
from diffattr.config import TrainConfig
from diffattr.costs import rule_costs
from diffattr.estimate import estimate, load, render
from diffattr.fanout import rule_jobs
from diffattr.sizes import sizes

DRY_RUN_CONFIGS = ["config/test.yaml", None, "config/digits-lds.yaml", "config/fontdigits-lds.yaml"]


def dry_run_jobs(tmp_path: Path, configfile: str | None) -> dict[str, int]:
    """Jobs per rule of ``snakemake -n --quiet rules`` (the target rule ``all`` left out)."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    bin_dir = Path(sys.executable).parent
    args = [str(bin_dir / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path)]
    args += ["-n", "--quiet", "rules"]
    args += ["--configfile", str(REPO / configfile)] if configfile else []
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, re.M))
    return {rule: int(n) for rule, n in counts.items() if rule not in ("all", "total")}


@pytest.mark.parametrize("configfile", DRY_RUN_CONFIGS)
def test_jobs_per_rule_equal_snakemakes_dry_run(tmp_path, configfile):
    if configfile and not (REPO / configfile).is_file():
        pytest.skip(f"{configfile} is not in this checkout")
    cfg = load([REPO / configfile] if configfile else [])
    assert rule_jobs(cfg) == dry_run_jobs(tmp_path, configfile)


def with_train(cfg, **changes):
    return dataclasses.replace(cfg, train=TrainConfig.from_dict(cfg.train.to_dict() | changes))


def test_costs_scale_with_the_sizes():
    cfg = load([REPO / "config/test.yaml"])
    z, jobs = sizes(cfg), rule_jobs(cfg)
    base = rule_costs(cfg, z, jobs)
    doubled = rule_costs(with_train(cfg, steps=2 * cfg.train.steps), z, jobs)
    assert doubled["train_model"].work == pytest.approx(2 * base["train_model"].work)
    assert doubled["train_cf_model"].work == pytest.approx(2 * base["train_cf_model"].work)
    wide = rule_costs(with_train(cfg, batch_size=3 * cfg.train.batch_size), z, jobs)
    assert wide["train_model"].work == pytest.approx(3 * base["train_model"].work)
    more_k = dataclasses.replace(z, k=2 * z.k)
    kernels = rule_costs(cfg, more_k, jobs)["kernel"]
    assert kernels.work == pytest.approx(4 * base["kernel"].work)  # n·k²
    assert kernels.disk_bytes == pytest.approx(4 * base["kernel"].disk_bytes)  # k² float64
    more_n = rule_costs(cfg, dataclasses.replace(z, n=2 * z.n), jobs)
    assert more_n["featurize_train"].work == pytest.approx(2 * base["featurize_train"].work)
    assert more_n["score"].disk_bytes == pytest.approx(2 * base["score"].disk_bytes)
    # hours: overhead per job + rate × work, so doubling steps nearly doubles the hours
    slow = estimate(with_train(cfg, steps=100 * cfg.train.steps))
    fast = estimate(with_train(cfg, steps=50 * cfg.train.steps))
    assert slow.hours["train_model"] / fast.hours["train_model"] == pytest.approx(2, rel=0.02)


def test_sizes_and_gpu_hours_of_the_paper_model():
    cfg = load([REPO / "config/cifar10.yaml"])  # its archive is not here: sizes are known
    z = sizes(cfg)
    assert (z.n, z.shape, z.params, z.k) == (50_000, (3, 32, 32), 35_746_307, 7192)
    gpu = estimate(cfg, "gpu")
    # README (config/README.md): 5 full models 10.7 GPU-h, 160 subset models 171 GPU-h
    assert gpu.hours["train_model"] == pytest.approx(10.7, rel=0.05)
    assert gpu.hours["train_subset_model"] == pytest.approx(171, rel=0.05)
    assert gpu.on["kernel"] == "cpu (no GPU rate)" and gpu.on["train_model"] == "gpu"


def test_a_bad_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"stepz": 3}}))
    with pytest.raises(SystemExit) as exit_:
        main(["estimate", "--configfile", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert err[0].startswith("diffattr estimate: error: unknown config key train.stepz")


def test_the_cli_prints_the_table(capsys):
    main(["estimate", "--configfile", str(REPO / "config/test.yaml")])
    out = capsys.readouterr().out
    assert "CPU-h" in out and re.search(r"^train_model\s+2\s", out, re.M)
    frame = estimate(load([REPO / "config/test.yaml"]))
    assert re.search(rf"^total: {frame.jobs.sum()} jobs, .* dominates", out, re.M)
    assert render(frame).splitlines()[-1] == out.strip().splitlines()[-1]
