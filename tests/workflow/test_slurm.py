"""The test config through a real (local, one-node) Slurm with snakemake's Slurm executor.

``scripts/local-slurm.sh start`` installs Slurm from the distribution when absent and starts
munged, slurmctld and slurmd; when that is impossible here (no root, no apt, no daemons) the test
is skipped with the reason. A job is cancelled with scancel mid-run: Snakemake must report it with
its log path and exit non-zero; the rerun completes without redoing finished jobs, and the scores
equal the local --cores run's bit for bit. It starts from the local run's trained models: the
jobs that follow (featurization, kernels, scores) are the ones a cluster fans out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import (
    REPO,
    RUN,
    rerun_workdir,
    reuse_trained,
    scores,
    snakemake,
    workflow_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
SCRIPT = REPO / "scripts" / "local-slurm.sh"
# One gradient method runs every rule of the attribution through Slurm (features in shards,
# target features, kernels, scores, figures); the killed-run test covers the other kinds of
# method, and each Slurm job costs a job-step Snakemake start and a status-check wait.
SLURM_METHODS = ["journey_trak"]


@pytest.fixture(scope="module")
def slurm_conf():
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    state = f"/tmp/diffattr-slurm-{os.getpid()}"  # reachable by the slurm user
    env = workflow_env(SLURM_CI_DIR=state)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900, env=env
    )
    if proc.returncode == 3:
        pytest.skip(f"Slurm cannot be started here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    conf = proc.stdout.strip().splitlines()[-1].split("=", 1)[1]
    yield conf
    subprocess.run(["bash", str(SCRIPT), "stop"], timeout=60, env=env)
    shutil.rmtree(state, ignore_errors=True)


def squeue(env) -> list[tuple[str, str]]:
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i|%k"], capture_output=True, text=True, env=env, timeout=30
    ).stdout
    return [tuple(line.split("|", 1)) for line in out.splitlines() if "|" in line]


def test_slurm_run_equals_local_and_resumes_after_a_cancelled_job(slurm_conf, local_run, tmp_path):
    cwd = rerun_workdir(tmp_path, SLURM_METHODS)
    reuse_trained(local_run, cwd)
    env = workflow_env(SLURM_CONF=slurm_conf)
    cmd = [
        "timeout",
        "-k",
        "10",
        "900",
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "profiles/slurm-ci",
        "--configfile=config/test.yaml",
        "attribution",
    ]
    start = time.time()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    cancelled = None
    deadline = time.time() + 600
    while cancelled is None and time.time() < deadline and proc.poll() is None:
        for job, comment in squeue(env):
            if "rule_featurize_train" in comment:
                subprocess.run(["scancel", job], env=env, timeout=30, check=True)
                cancelled = job
                break
        time.sleep(0.5)
    output, _ = proc.communicate(timeout=900)
    assert cancelled is not None, output[-3000:]
    assert proc.returncode != 0, output[-3000:]
    assert f"SLURM-job '{cancelled}' failed" in output or "CANCELLED" in output, output[-3000:]
    assert ".snakemake/slurm_logs" in output, output[-3000:]
    done = [*sorted((cwd / RUN / "features").rglob("*.h5")), cwd / RUN / "data.h5"]
    stamps = [path.stat().st_mtime_ns for path in done]

    snakemake(
        cwd,
        "--profile",
        "profiles/slurm-ci",
        "attribution",
        env=env,
        cores=False,
        timeout=1200,
    )
    assert [path.stat().st_mtime_ns for path in done] == stamps  # finished work is not redone
    first, second = scores(local_run), scores(cwd)
    assert sorted(second) == SLURM_METHODS
    for method in second:
        assert (first[method] == second[method]).all(), method
    print(f"slurm run with a cancelled job and resume: {time.time() - start:.0f} s")
