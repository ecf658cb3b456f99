"""Warm job starts (diffattr.warm): a served job is the job — same files, same status, same
error line — and it dies with its caller; calls the server must not take run by themselves."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from diffattr import warm

pytestmark = pytest.mark.slow  # each test starts a server (≈ 4 s of imports)
REPO = Path(__file__).resolve().parents[2]
DIFFATTR = str(Path(sys.executable).parent / "diffattr")  # the installed command
CONFIG = ["--configfile", str(REPO / "config" / "config.yaml"), str(REPO / "config" / "test.yaml")]


@pytest.fixture
def server(tmp_path):
    """A warm server of this test process (DIFFATTR_WARM set for its subprocesses); its log."""
    log = tmp_path / "warm.log"
    assert warm.start(log)
    yield log
    warm.stop()
    assert warm.ENV not in os.environ


def jobs(log: Path, state: str) -> list[tuple[int, str]]:
    """(pid, what) of the server's log lines ``job <pid> <state>: <what>``: the command for
    ``started``, the status for ``ended``."""
    pattern = {"started": r"started: (diffattr \S+)", "ended": r"ended with status (-?\d+)"}
    found = re.finditer(rf"^warm: job (\d+) {pattern[state]}", log.read_text(), re.M)
    return [(int(m[1]), m[2]) for m in found]


def diffattr(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DIFFATTR, *args], capture_output=True, text=True, env={**os.environ, **env}
    )


def test_a_served_job_writes_what_a_job_run_alone_writes(server, tmp_path):
    data = tmp_path / "data.h5"
    assert diffattr("prepare-data", *CONFIG, "--out", str(data)).returncode == 0
    for name, env in [("served", {}), ("alone", {warm.ENV: "0"})]:
        proc = diffattr(
            "train",
            *CONFIG,
            "--data",
            str(data),
            "--out",
            str(tmp_path / name),
            "--model-index=0",
            **env,
        )
        assert proc.returncode == 0, proc.stderr
        assert "diffattr INFO" in proc.stderr  # the job's log reaches the caller's stream
    started = [what for _, what in jobs(server, "started")]
    assert started == ["diffattr prepare-data", "diffattr train"]  # the run alone is not served
    cpu = re.findall(r"ended with status 0: CPU ([\d.]+) s", server.read_text())
    assert float(cpu[1]) > 1  # the training's own CPU time (its caller only waits)
    served = sorted(p.relative_to(tmp_path / "served") for p in (tmp_path / "served").rglob("*"))
    alone = sorted(p.relative_to(tmp_path / "alone") for p in (tmp_path / "alone").rglob("*"))
    assert served == alone and served
    for rel in (rel for rel in served if (tmp_path / "served" / rel).is_file()):
        a, b = ((tmp_path / side / rel).read_bytes() for side in ("served", "alone"))
        if rel.suffix == ".json":  # the training log: equal but for its wall seconds
            a, b = ({**json.loads(x), "seconds": None} for x in (a, b))
        assert a == b, rel


def test_a_served_jobs_error_and_status_reach_the_caller(server, tmp_path):
    proc = diffattr(
        "train", *CONFIG, "--data", str(tmp_path / "nothing.h5"), "--out", "m", "--model-index", "0"
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("diffattr train: error: prepared data")
    assert "Traceback" not in proc.stderr
    assert len(jobs(server, "started")) == 1  # it was served
    usage = diffattr("train", "--data", "x")  # argparse's own status 2 and usage line
    assert usage.returncode == 2 and "required" in usage.stderr


def long_training(server: Path, tmp_path: Path, prefix: tuple[str, ...] = ()):
    """A served training of a million steps: (its caller, the served job's pid), once started;
    ``prefix`` runs the caller under a command (e.g. ``nice -n 7``)."""
    long = tmp_path / "long.yaml"
    long.write_text("train:\n  steps: 1000000\n")
    data = tmp_path / "data.h5"
    assert diffattr("prepare-data", *CONFIG, "--out", str(data)).returncode == 0
    before = len(jobs(server, "started"))  # the server may have served other tests' jobs
    caller = subprocess.Popen(
        [
            *prefix,
            DIFFATTR,
            "train",
            *CONFIG,
            str(long),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "model"),
            "--model-index",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while len(jobs(server, "started")) == before:  # no wall-clock limit: a loaded machine is slow
        assert caller.poll() is None, f"the caller ended ({caller.returncode}) before its job"
        time.sleep(0.2)
    return caller, jobs(server, "started")[-1][0]


@pytest.mark.parametrize(
    ("signum", "job_status", "caller_status"),
    [(signal.SIGKILL, -9, -9), (signal.SIGTERM, -15, 128 + 15)],
    ids=["killed caller: the server kills the job", "SIGTERM: passed on to the job"],
)
def test_a_signalled_caller_ends_its_job(server, tmp_path, signum, job_status, caller_status):
    caller, child = long_training(server, tmp_path)
    deadline = time.time() + 120
    caller.send_signal(signum)
    assert caller.wait() == caller_status
    while child not in dict(jobs(server, "ended")) and time.time() < deadline:
        time.sleep(0.2)
    assert dict(jobs(server, "ended"))[child] == str(job_status)
    assert not (tmp_path / "model").exists()


def test_calls_the_server_must_not_take_run_by_themselves(server, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(warm, "identity", lambda: {"python": "/other", "package": "/x"})
        assert warm.call(["--version"]) is None  # refused: the caller runs it itself
    assert "refused ['--version']" in server.read_text()
    for name, value in [(warm.ENV, "0"), ("SLURM_JOB_ID", "1")]:  # off; inside a Slurm job
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            assert warm.call(["--version"]) is None
    assert not jobs(server, "started")


def test_the_server_ends_with_the_process_that_started_it(tmp_path):
    code = (
        "import os, pathlib; from diffattr import warm; "
        f"warm.start(pathlib.Path({str(tmp_path / 'warm.log')!r})); print(os.environ[warm.ENV])"
    )
    path = Path(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    deadline = time.time() + 120  # its imports first, then a second to notice
    while path.parent.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not path.parent.exists()  # the socket and its folder are removed


def _stat(pid: int) -> tuple[int, int]:
    """(session id, niceness) of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[3]), int(fields[16])


def test_a_served_job_runs_in_its_callers_session_at_its_callers_niceness(server, tmp_path):
    """`nice snakemake …` must keep served jobs niced and in Snakemake's session (one autogroup
    CPU share for the run): a job in a session of its own ran at full priority beside the user."""
    caller, child = long_training(server, tmp_path, ("nice", "-n", "7"))
    try:
        assert _stat(child) == (os.getsid(caller.pid), _stat(caller.pid)[1])
        assert _stat(caller.pid)[1] == os.getpriority(os.PRIO_PROCESS, 0) + 7
        assert os.getpgid(child) == child  # its own group: killing it kills what it started
    finally:
        caller.send_signal(signal.SIGTERM)
        caller.wait()
