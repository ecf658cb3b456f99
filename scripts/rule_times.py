"""Where a run's time goes: Snakemake's per-job benchmark files summed per rule.

    python scripts/rule_times.py results/default [--before other/results/default]

Every rule writes ``<run>/benchmarks/<rule>[/<job>].tsv`` (wall seconds ``s``, ``cpu_time``,
``max_rss`` in MB). Prints a Markdown table per rule, largest total first: jobs, total and mean
wall seconds, their share of the summed job time, CPU seconds and the largest RSS; with
``--before``, the same rule's total in another run and the ratio.

Snakemake samples a job's CPU time every 0.5 s for its first 15 s, then every 30 s, and keeps the
last sample, so its ``cpu_time`` under-reads every job that ends more than 15 s in (a 29 s
training job on a free core reads ≈ 15 CPU-s); and a job served by the run's warm server
(``diffattr.warm``) computes outside the process tree Snakemake measures. For served jobs the
CPU and RSS columns therefore come from the server's log (``logs/warm_server.log``: each job's
own CPU seconds and peak RSS from ``wait4``), matched to the benchmark file by the job's log. A
served job's RSS counts the pages it shares with the server (≈ 370 MB of imported libraries,
resident once on the machine), so it reads higher than the job's own memory.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd


def served(run: Path) -> dict[Path, tuple[float, float]]:
    """Jobs the warm server ran: their CPU s and max RSS MB by ``<rule>[/<name>]`` (the path of
    their log under ``logs/``, which is that of their benchmark file under ``benchmarks/``)."""
    path, usage, started = run / "logs" / "warm_server.log", {}, {}
    logs = (run / "logs").resolve()
    for line in path.read_text().splitlines() if path.is_file() else []:
        if m := re.match(r"warm: job (\d+) started: \S+ \S+ > (.+)$", line):
            started[m[1]] = Path(m[2])
        elif m := re.match(r"warm: job (\d+) ended .*CPU ([\d.]+) s, max RSS ([\d.]+) MB", line):
            log = started.pop(m[1], None)
            if log is not None and log.is_relative_to(logs):
                usage[log.relative_to(logs).with_suffix("")] = (float(m[2]), float(m[3]))
    return usage


def rule_times(run: Path) -> pd.DataFrame:
    """One row per rule: jobs, wall s (sum, mean), CPU s, max RSS MB, from the run's TSVs (and
    the warm server's log for the jobs it ran)."""
    root = run / "benchmarks"
    own = served(run)
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        rule = path.relative_to(root).parts[0].removesuffix(".tsv")
        bench = pd.read_csv(path, sep="\t").iloc[-1]  # the job's last (only) repeat
        rss = pd.to_numeric(bench.get("max_rss"), errors="coerce")
        cpu = pd.to_numeric(bench.get("cpu_time"), errors="coerce")
        cpu, rss = own.get(path.relative_to(root).with_suffix(""), (cpu, rss))
        rows.append({"rule": rule, "s": float(bench["s"]), "cpu_s": cpu, "max_rss_mb": rss})
    if not rows:
        raise SystemExit(f"no benchmark files under {root}: run the workflow first")
    jobs = pd.DataFrame(rows)
    table = jobs.groupby("rule").agg(
        jobs=("s", "size"),
        total_s=("s", "sum"),
        mean_s=("s", "mean"),
        cpu_s=("cpu_s", "sum"),
        max_rss_mb=("max_rss_mb", "max"),
    )
    table["share"] = table.total_s / table.total_s.sum()
    return table.sort_values("total_s", ascending=False)


def markdown(table: pd.DataFrame, before: pd.DataFrame | None) -> str:
    columns = ["rule", "jobs", "total s", "mean s", "share", "CPU s", "max RSS MB"]
    if before is not None:
        columns += ["before s", "after/before"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for rule, r in table.iterrows():
        cells = [
            f"`{rule}`",
            f"{int(r.jobs)}",
            f"{r.total_s:.0f}",
            f"{r.mean_s:.1f}",
            f"{r.share:.0%}",
            f"{r.cpu_s:.0f}",
            f"{r.max_rss_mb:.0f}",
        ]
        if before is not None:
            old = before.total_s.get(rule, float("nan"))
            cells += [f"{old:.0f}", f"{r.total_s / old:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    summed = table.total_s.sum()
    total = f"| all | {table.jobs.sum()} | {summed:.0f} | | | {table.cpu_s.sum():.0f} | |"
    if before is not None:
        old = before.total_s.sum()
        total += f" {old:.0f} | {summed / old:.2f} |"
    return "\n".join([*lines, total])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder, e.g. results/default")
    parser.add_argument("--before", type=Path, help="another run of the same config to compare")
    args = parser.parse_args()
    before = rule_times(args.before) if args.before else None
    print(markdown(rule_times(args.run), before))


if __name__ == "__main__":
    main()
