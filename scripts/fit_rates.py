"""Fit ``diffattr estimate``'s per-unit rates and check them against measured runs.

    python scripts/fit_rates.py BENCH_RUN [--write]

BENCH_RUN: a finished ``config/test.yaml`` run folder (its ``benchmarks/`` and ``logs/``; each
job's CPU s from the warm server's log where it served the job). The default run's per-rule
table is the README's ("Where the time goes", 2026-12-07), copied below. Fitting, per rule:
s_per_job = the test run's median job-start cost (CPU s of its kernel and score jobs) for
rules with a size-driven work term, else the rule's mean measured job; s_per_unit =
(mean s − s_per_job) / (work per job), from the default run where the README lists the rule,
else from the test run (``fitted_on`` says which; ekfac and unlearning: the README's
digits-lds numbers). Prints estimated / measured mean seconds per job for both runs and the
README's digits-lds / digits-cf numbers. ``--write`` stores workflow/diffattr/rates.json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import pandas as pd
from diffattr.config import load
from diffattr.costs import rule_costs
from diffattr.estimate import RATES, estimate, rates
from diffattr.fanout import rule_jobs
from diffattr.sizes import sizes

REPO = Path(__file__).resolve().parents[1]
# README "Where the time goes": make run on 2 cores, 2026-12-07 (jobs, mean s, max RSS MB)
DEFAULT_RUN = {
    "train_cf_model": (6, 62.6, 443),
    "train_subset_model": (12, 19.3, 443),
    "featurize_train": (24, 9.6, 847),
    "train_model": (3, 62.2, 443),
    "emergence": (1, 186.2, 421),
    "train_cf_floor": (1, 62.0, 442),
    "cf_resample": (7, 8.0, 387),
    "figure_attributions": (7, 4.7, 481),
    "ground_truth": (6, 4.8, 616),
    "featurize_targets": (12, 0.8, 504),
    "tuned_scores": (4, 41 / 4, 563),  # the README's later run (λ tuned per step): 41 s
}
OTHER_RULES_S = 46 - 2  # the table's "10 other rules" less lds_report's 2 s (32 s since)
# README, config/digits-lds.yaml and config/digits-cf.yaml (mean s per job)
HELD_OUT = {
    "digits-lds": {"featurize_train": 431 / 20, "ekfac_member": 453.0},
    "digits-cf": {"train_cf_model": 68.0, "cf_resample": 20.0},
}
END = r"warm: job (\d+) ended .*CPU ([\d.]+) s, max RSS ([\d.]+) MB"
TRAINING = ("train_model", "train_subset_model", "train_cf_model", "train_cf_floor")
FORWARD_ONLY = ("sample_targets", "regime_diagnostics", "sample_extra_targets")
FORWARD_ONLY += ("ground_truth_patches",)
NUMPY_S_PER_UNIT = 1e-9  # score, kernel, memorization reference: no job large enough to fit
BLAS_S_PER_UNIT = 2 / 20e9  # kernel: per n·k²
GPU_TRAIN = 10.4 * 128 * 12.44e9  # H200: CIFAR UNet steps/s × batch × forward FLOP
GPU_FEATURIZE = 2052 * 12.44e9  # H200: example·timesteps/s × forward FLOP
GPU_DERIVED = ("sample_targets", "featurize_targets", "ground_truth", "emergence", "cf_resample")
GPU_DERIVED += ("regime_diagnostics", "ekfac_member", "unlearning_member", "train_regime_model")
GPU_DERIVED += ("featurize_patch_targets", "ground_truth_patches", "sample_extra_targets")
GPU_DERIVED += ("featurize_extra_targets",)


def measured(run: Path) -> pd.DataFrame:
    """Per rule of a run folder: jobs, mean CPU s (warm log, else the benchmark's s), max RSS."""
    cpu, started = {}, {}
    for line in (run / "logs" / "warm_server.log").read_text().splitlines():
        if m := re.match(r"warm: job (\d+) started: \S+ \S+ > .*?/logs/(.+)\.log$", line):
            started[m[1]] = m[2]
        elif (m := re.match(END, line)) and m[1] in started:
            cpu[started.pop(m[1])] = (float(m[2]), float(m[3]))
    rows = []
    for path in sorted((run / "benchmarks").rglob("*.tsv")):
        key = str(path.relative_to(run / "benchmarks").with_suffix(""))
        bench = pd.read_csv(path, sep="\t").iloc[-1]
        s, rss = cpu.get(key, (float(bench["s"]), float(bench["max_rss"])))
        rows.append({"rule": key.split("/")[0], "s": s, "rss": rss})
    return (
        pd.DataFrame(rows)
        .groupby("rule")
        .agg(jobs=("s", "size"), mean_s=("s", "mean"), rss=("rss", "max"))
    )


def work_per_job(config: list[str]) -> dict[str, float]:
    cfg = load([str(REPO / "config/config.yaml"), *config])
    jobs = rule_jobs(cfg)
    return {r: c.work / jobs[r] for r, c in rule_costs(cfg, sizes(cfg), jobs).items()}


def fit(test: pd.DataFrame) -> dict:
    w_test, w_default = work_per_job(["config/test.yaml"]), work_per_job([])
    w_lds = work_per_job(["config/digits-lds.yaml"])
    start = statistics.median(test.mean_s[[r for r in ("kernel", "score") if r in test.index]])
    cpu = {}
    for rule in sorted(set(test.index) | set(DEFAULT_RUN)):
        per_job = w_test.get(rule, w_default.get(rule))
        sized = per_job is not None and (rule not in test.index or per_job != 1)
        if rule in DEFAULT_RUN:
            _, mean, rss = DEFAULT_RUN[rule]
            where, work = "default run (README table)", w_default[rule]
        else:
            mean, rss = test.mean_s[rule], test.rss[rule]
            where, work = "config/test.yaml run", w_test.get(rule, 1)
        s_job = start if sized else mean
        rate = max(mean - s_job, 0) / work if sized else 0.0
        if sized and rule not in DEFAULT_RUN:  # test-run jobs are their start: borrow a rate
            s_job, rate = mean, NUMPY_S_PER_UNIT
            where = "config/test.yaml run (per job); rate assumed: 1 ns per element-op"
        cpu[rule] = {
            "s_per_job": round(s_job, 3),
            "s_per_unit": rate,
            "mem_mb": rss,
            "fitted_on": where,
        }
    for rule in FORWARD_ONLY:  # batched forwards: the ground truth's rate
        if rule in cpu:
            cpu[rule] |= {
                "s_per_unit": cpu["ground_truth"]["s_per_unit"],
                "fitted_on": "per job: config/test.yaml run; rate: ground_truth's (default run)",
            }
    train = cpu["train_model"]
    for rule in (*TRAINING, "train_regime_model"):  # one training rate: the full models'
        cpu[rule] = {**train, "mem_mb": cpu.get(rule, train)["mem_mb"]}
    ekfac = HELD_OUT["digits-lds"]["ekfac_member"]
    # ekfac: s = a + b × work through the test run's jobs and digits-lds's (in-sample)
    b = (ekfac - test.mean_s["ekfac_member"]) / (w_lds["ekfac_member"] - w_test["ekfac_member"])
    cpu["ekfac_member"] |= {
        "s_per_job": round(ekfac - b * w_lds["ekfac_member"], 3),
        "s_per_unit": b,
        "fitted_on": "test run and README: digits-lds, 453 s per member",
    }
    # README: 1.9 s per (target, step) and model at n = 500 (≈ 10 s per job: the 5 × pieces)
    cpu["kernel"] |= {
        "s_per_unit": BLAS_S_PER_UNIT,
        "fitted_on": "per job: config/test.yaml "
        "run; rate assumed: 2·n·k² flop at 20 GFLOP/s (BLAS)",
    }
    cpu["unlearning_member"] |= {
        "s_per_job": start,
        "s_per_unit": 1.9 / (500 * sizes(load([str(REPO / "config/config.yaml")])).flops),
        "fitted_on": "README: digits-lds, 1.9 s per (target, step) and model",
    }
    # lds_report: both runs (in-sample): s = a + b × work
    wt, wd, mt, md = w_test["lds_report"], w_default["lds_report"], test.mean_s["lds_report"], 32
    b = (md - mt) / (wd - wt)
    cpu["lds_report"] |= {
        "s_per_job": round(mt - b * wt, 3),
        "s_per_unit": b,
        "fitted_on": "test run and the default run's 32 s (README)",
    }
    cpu["other"] = {"s_per_job": 1.0, "s_per_unit": 0.0, "mem_mb": 500, "fitted_on": "a guess"}
    speed_train = GPU_TRAIN * train["s_per_unit"]
    speed_feat = GPU_FEATURIZE * cpu["featurize_train"]["s_per_unit"]
    speedup = dict.fromkeys(TRAINING, speed_train) | {"featurize_train": speed_feat}
    speedup |= dict.fromkeys(GPU_DERIVED, speed_feat)
    return {
        "about": "diffattr estimate's rates (scripts/fit_rates.py): CPU seconds per job and per "
        "unit of diffattr.costs' work, one core of the project's 2-core VM (2026-12-07); GPU: "
        "speed-up over that CPU rate, from the README's H200 rates (training 10.4 steps/s at "
        "batch 128, featurizing 2052 example·timesteps/s, CIFAR UNet 12.44 GFLOP per forward); "
        "rules in 'derived' use featurizing's speed-up, rules absent have no GPU rate.",
        "cpu": cpu,
        "gpu": {
            "speedup": speedup,
            "start_s": 10.0,
            "measured": [
                "train_model",
                "train_subset_model",
                "train_cf_model",
                "train_cf_floor",
                "featurize_train",
            ],
            "derived": sorted(GPU_DERIVED),
        },
    }


def check(test: pd.DataFrame) -> pd.DataFrame:
    """Estimated vs measured mean s per job, per rule, for every measured run."""
    rows = []
    measured_runs = {
        "config/test.yaml": ({r: test.mean_s[r] for r in test.index}, ["config/test.yaml"]),
        "default": ({r: v[1] for r, v in DEFAULT_RUN.items()} | {"lds_report": 32.0}, []),
        "digits-lds": (HELD_OUT["digits-lds"], ["config/digits-lds.yaml"]),
        "digits-cf": (HELD_OUT["digits-cf"], ["config/digits-lds.yaml", "config/digits-cf.yaml"]),
    }
    for run, (means, files) in measured_runs.items():
        est = estimate(load([str(REPO / "config/config.yaml"), *files]), "cpu")
        for rule, mean in means.items():
            fitted = rates()["cpu"][rule]["fitted_on"]
            rows.append(
                {
                    "run": run,
                    "rule": rule,
                    "measured_s": mean,
                    "estimated_s": est.mean_s[rule],
                    "ratio": est.mean_s[rule] / mean,
                    "rate fitted on": fitted,
                }
            )
    est = estimate(load([str(REPO / "config/config.yaml")]), "cpu")
    rest = est[~est.index.isin([*DEFAULT_RUN, "lds_report"])]
    rows.append(
        {
            "run": "default",
            "rule": f"{len(rest)} other rules (sum)",
            "measured_s": OTHER_RULES_S,
            "estimated_s": rest.hours.sum() * 3600,
            "ratio": rest.hours.sum() * 3600 / OTHER_RULES_S,
            "rate fitted on": "config/test.yaml run",
        }
    )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a config/test.yaml run folder")
    parser.add_argument("--write", action="store_true", help="store rates.json")
    args = parser.parse_args()
    test = measured(args.run)
    if args.write:
        RATES.write_text(json.dumps(fit(test), indent=1) + "\n")
        rates.cache_clear()
    table = check(test)
    print(table.to_markdown(index=False, floatfmt=".3g"))
    inside = table.ratio.between(0.5, 2)
    print(f"within 2×: {inside.sum()} of {len(table)}")


if __name__ == "__main__":
    main()
