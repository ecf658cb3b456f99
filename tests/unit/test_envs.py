"""The conda environment file (``--sdm conda``) installs this package wherever Snakemake puts it.

conda itself cannot be installed from this machine's registries, so the test replays what the
two tools do with the file: Snakemake copies it to ``.snakemake/conda/<hash>.yaml``; ``conda env
create`` writes its ``pip:`` lines to a requirements file beside that copy and runs pip there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ENV = REPO / "envs" / "diffattr.yaml"


def pip_lines() -> list[str]:
    deps = yaml.safe_load(ENV.read_text())["dependencies"]
    return next(d["pip"] for d in deps if isinstance(d, dict))


def test_the_workflow_exports_the_folder_the_env_file_installs_from(monkeypatch, tmp_path):
    from diffattr.layout import ROOT_VARIABLE, export_workflow_root

    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert "export_workflow_root(workflow.basedir)" in common
    monkeypatch.delenv(ROOT_VARIABLE, raising=False)
    export_workflow_root(tmp_path)
    assert os.environ[ROOT_VARIABLE] == str(tmp_path.resolve())
    assert any(line.startswith(f"-e ${{{ROOT_VARIABLE}}}") for line in pip_lines())


def test_pip_installs_the_package_from_the_copy_snakemake_makes(tmp_path):
    copy = tmp_path / ".snakemake" / "conda" / "0123abcd.yaml"
    copy.parent.mkdir(parents=True)
    shutil.copy(ENV, copy)
    local = [line for line in pip_lines() if line.startswith(("-e", "-c"))]
    requirements = copy.parent / "condaenv.x.requirements.txt"
    requirements.write_text("\n".join(local) + "\n")
    offline = ["--dry-run", "--no-index", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", *offline, "-r", requirements.name],
        cwd=copy.parent,
        env=os.environ | {"DIFFATTR_ROOT": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Would install diffattr-" in proc.stdout


def test_every_requirement_is_in_the_env_and_pinned_as_tested():
    """The package's own requirements come in through ``-e``; what the env adds besides is pinned
    exactly as constraints.txt pins it."""
    pins = dict(
        line.split("==")
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    extras = re.search(r"\[(.*)\]", next(x for x in pip_lines() if x.startswith("-e"))).group(1)
    assert {"coco", "slurm"} <= set(extras.split(","))
    for line in pip_lines():
        if not line.startswith("-"):
            name, version = line.split("#")[0].strip().split("==")
            assert pins[name] == version, line
