"""``diffattr estimate``: a run's jobs, time, memory and disk per rule before anything runs.

Per rule: jobs (``diffattr.fanout``), work in the units of ``diffattr.costs``, and

    hours = (jobs × s_per_job + work × s_per_unit) / 3600
    peak memory = max RSS measured for the rule + the largest array one job holds
    disk = the outputs' sizes (from their shapes)

with the per-unit rates of ``rates.json`` (measured on a 2-core CPU VM; on a GPU the README's
H200 rates for training and featurization, their speed-up applied to the other model-bound
rules; numpy rules keep their CPU rate and say so).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import pandas as pd
import yaml

from .config import RunConfig, merge
from .costs import rule_costs
from .errors import ConfigError
from .fanout import rule_jobs
from .sizes import sizes

RATES = Path(__file__).with_name("rates.json")
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.yaml"
# rules measured through their whole-image or run-target twin (same code, other inputs)
TWIN = {
    "ground_truth_patches": "ground_truth",
    "featurize_patch_targets": "featurize_targets",
    "featurize_extra_targets": "featurize_targets",
    "score_patches": "score",
    "score_extra": "score",
    "score_shard": "score",
    "figure_patches": "figure_attributions",
    "figure_extra": "figure_attributions",
    "sample_extra_targets": "sample_targets",
    "train_group_model": "train_cf_model",
    "group_regenerate": "cf_resample",
}
COLUMNS = ["jobs", "hours", "mean_s", "peak_mem_gb", "disk_gb", "on"]


@cache
def rates() -> dict:
    return json.loads(RATES.read_text())


def load(files: Sequence[str | Path], base: Path | None = DEFAULT_CONFIG) -> RunConfig:
    """The run's config: ``base`` (the workflow's config/config.yaml) with ``files`` merged left
    to right, validated and cross-checked like the Snakefile's. A dataset the config points to
    but that is not here yet is estimated from the dataset's known size."""
    merged: dict = {}
    for path in ([base] if base and base.is_file() else []) + [Path(f) for f in files]:
        if not path.is_file():
            raise ConfigError(f"{path} does not exist")
        try:
            merged = merge(merged, yaml.safe_load(path.read_text()) or {})
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    dataset = merged.get("dataset") or {}
    root = dataset.get("root")
    if dataset.get("name") in ("cifar10", "mscoco") and root and not Path(root).exists():
        merged = merge(merged, {"dataset": {"root": "."}})  # never read: its size is known
    return RunConfig.from_dict(merged)


def estimate(cfg: RunConfig, device: str | None = None) -> pd.DataFrame:
    """One row per rule (largest time first): jobs, hours (CPU- or GPU-hours), mean seconds per
    job, peak memory of one job (GB), disk written (GB), and ``on`` (cpu, gpu, or cpu where the
    rule has no GPU rate). ``device``: "cpu" or "gpu"; None follows ``cfg.device`` (cuda: gpu)."""
    gpu = (device or ("gpu" if str(cfg.device).startswith("cuda") else "cpu")) == "gpu"
    z = sizes(cfg)
    jobs = rule_jobs(cfg)
    costs = rule_costs(cfg, z, jobs)
    table = rates()
    rows = []
    for rule, count in jobs.items():
        rate = table["cpu"].get(TWIN.get(rule, rule), table["cpu"]["other"])
        seconds = count * rate["s_per_job"] + costs[rule].work * rate["s_per_unit"]
        on = "cpu"
        speedup = table["gpu"]["speedup"].get(TWIN.get(rule, rule))
        if gpu and speedup:
            seconds = count * (rate["s_per_job"] + table["gpu"]["start_s"])
            seconds += costs[rule].work * rate["s_per_unit"] / speedup
            on = "gpu"
        elif gpu:
            on = "cpu (no GPU rate)"
        rows.append(
            {
                "rule": rule,
                "jobs": count,
                "hours": seconds / 3600,
                "mean_s": seconds / count,
                "peak_mem_gb": (rate["mem_mb"] * 1e6 + costs[rule].array_bytes) / 1e9,
                "disk_gb": costs[rule].disk_bytes / 1e9,
                "on": on,
            }
        )
    frame = pd.DataFrame(rows).set_index("rule").sort_values("hours", ascending=False)
    frame.attrs.update(sizes=z, gpu=gpu, run=cfg.run)
    return frame


def render(frame: pd.DataFrame) -> str:
    """The table as text, with totals and the rule that dominates."""
    z, unit = frame.attrs["sizes"], "GPU-h" if frame.attrs["gpu"] else "CPU-h"
    head = (
        f"run {frame.attrs['run']}: n = {z.n} examples of {'×'.join(map(str, z.shape))}, UNet "
        f"{z.params:,} parameters, {z.flops / 1e6:,.1f} MFLOP per forward, k = {z.k}"
    )
    shown = frame.rename(columns={"hours": unit, "peak_mem_gb": "peak GB", "disk_gb": "disk GB"})
    body = shown.to_string(
        formatters={
            unit: "{:.3g}".format,
            "mean_s": "{:.3g}".format,
            "peak GB": "{:.2f}".format,
            "disk GB": "{:.3g}".format,
        }
    )
    top = frame.hours.idxmax()
    gpu_h = frame.hours[frame.on == "gpu"].sum()
    cpu_h = frame.hours.sum() - gpu_h
    split = f" ({gpu_h:.3g} GPU-h + {cpu_h:.3g} CPU-h)" if frame.attrs["gpu"] else ""
    total = (
        f"total: {frame.jobs.sum()} jobs, {frame.hours.sum():.3g} {unit}{split}, peak "
        f"{frame.peak_mem_gb.max():.2f} GB in one job, {frame.disk_gb.sum():.3g} GB on disk; "
        f"{top} dominates ({frame.hours[top] / frame.hours.sum():.0%} of the time)"
    )
    return "\n".join([head, body, total])


def estimate_command(*, configfile: list[Path], device: str | None = None) -> None:
    """Estimate a run before it starts: jobs, CPU- or GPU-hours (--device gpu), peak memory and
    disk per rule, from config/config.yaml with the --configfile files merged over it."""
    if device not in (None, "cpu", "gpu"):
        raise ConfigError(f"--device {device}: choose cpu or gpu")
    print(render(estimate(load(configfile), device)))
