"""A missing or broken config file is one line naming the file (and the line) before Snakemake
reads it: ``make run``/``make report`` check their ``--configfile`` arguments, the Snakefile its
default config."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from diffattr.preflight import configfiles, main, problem

REPO = Path(__file__).resolve().parents[2]
BROKEN = "train:\n  steps: 3\n  ensemble: [1, 2\nseed: 0\n"  # the list is never closed


def test_configfiles_are_read_as_snakemake_reads_them():
    args = ["-n", "--configfile", "a.yaml", "b.yaml", "--cores", "2", "lds"]
    assert configfiles(args) == ["a.yaml", "b.yaml"]
    assert configfiles(["--configfile=a.yaml", "lds", "--configfiles", "c.yaml"]) == [
        "a.yaml",
        "c.yaml",
    ]
    assert configfiles(["--cores", "2", "all"]) == []


def test_a_yaml_error_names_the_file_and_the_line(tmp_path):
    bad = tmp_path / "overlay.yaml"
    bad.write_text(BROKEN)
    assert problem(bad) == (
        f"{bad}:4:5: not valid YAML (expected ',' or ']', but got ':'; while parsing a flow "
        "sequence from line 3); fix the file"
    )
    (tmp_path / "list.yaml").write_text("- 1\n")
    assert "holds keys at its top level" in problem(tmp_path / "list.yaml")
    assert problem(REPO / "config" / "test.yaml") is None


def test_main_prints_one_line_per_bad_file(tmp_path, capsys):
    assert main(["--configfile", str(tmp_path / "missing.yaml"), str(REPO / "config/test.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"diffattr: config error: {tmp_path / 'missing.yaml'} does not exist (a --configfile "
        "path: check its spelling)"
    ]
    assert main(["--configfile", str(REPO / "config/test.yaml"), "-n"]) == 0


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env_path = f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}"
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env={"PATH": env_path, "HOME": str(cwd)}
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize("kind", ["missing", "broken"])
def test_make_run_stops_at_a_bad_configfile_in_one_line(tmp_path, kind):
    overlay = tmp_path / "overlay.yaml"
    if kind == "broken":
        overlay.write_text(BROKEN)
    # -o: never reinstall the environment from here
    proc = run(
        ["make", "-s", "-o", ".venv/.installed", "run", f"ARGS=-n --configfile {overlay}"], REPO
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
    expected = "does not exist" if kind == "missing" else f"{overlay}:4:5: not valid YAML"
    assert len(lines) == 1 and lines[0].startswith("diffattr: config error: "), proc.stderr
    assert expected in lines[0] and "Traceback" not in proc.stderr + proc.stdout


def test_the_snakefile_names_a_broken_default_config(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(BROKEN)
    snakemake = str(Path(sys.executable).parent / "snakemake")
    proc = run([snakemake, "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n"], REPO)
    output = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1, output
    assert output[-1] == (
        "diffattr: config error: config/config.yaml:4:5: not valid YAML (expected ',' or ']', "
        "but got ':'; while parsing a flow sequence from line 3); fix the file"
    )
