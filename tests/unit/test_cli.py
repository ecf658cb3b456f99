"""The command line: one subcommand per stage, every option explained, errors in one line."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from diffattr.cli import COMMANDS, HELP, _parser
from diffattr.stages import STAGES
from diffattr.stages import load as load_stage


def test_every_subcommand_and_option_has_a_help_line():
    parser = _parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(STAGES) | set(COMMANDS)
    for name in STAGES:
        stage = load_stage(name)
        assert (stage.__doc__ or "").strip(), f"{name}: its stage needs a docstring"
        for param in list(inspect.signature(stage).parameters)[1:]:
            assert param == "progress" or param in HELP, f"{name} --{param} has no help"
        for action in sub.choices[name]._actions:
            assert action.help, f"{name} {action.option_strings} has no help"


def test_required_lists_are_required_and_optional_lists_may_be_empty(capsys):
    parser = _parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["kernel", "--out", "k.h5"])  # --features is required
    assert "--features" in capsys.readouterr().err
    args = parser.parse_args(
        ["score", "--method", "random", "--data", "d", "--targets", "t", "--out", "s"]
    )
    assert args.kernels == []


def test_config_errors_end_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffattr",
            "kernel",
            "--cfg",
            "{not: [a slice",
            "--features",
            "x.h5",
            "--out",
            str(tmp_path / "k.h5"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("diffattr kernel: error: --cfg is not a config slice")
    assert "Traceback" not in proc.stderr


def test_a_light_job_imports_neither_torch_nor_diffusers(tmp_path):
    """A kernel, score or report job runs without the model libraries (seconds per job)."""
    import numpy as np
    from diffattr.artifacts import write_feature_shard
    from diffattr.config import load

    shard = tmp_path / "shard0.h5"
    write_feature_shard(shard, np.eye(4, dtype=np.float32), np.arange(4), np.arange(4), {})
    slice_ = load([Path(__file__).resolve().parents[2] / "config" / "config.yaml"]).slice("kernel")
    args = ["kernel", "--cfg", slice_, "--features", str(shard), "--out", str(tmp_path / "k.h5")]
    code = (
        f"import sys; from diffattr.cli import main; main({args!r}); "
        "from diffattr.stages import load; [load(c) for c in ('score', "
        "'figure-attributions', 'lds-subsets', 'lds-report')]; "
        "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]" and (tmp_path / "k.h5").exists()


def test_a_model_job_imports_only_the_diffusers_models_it_uses():
    """A training or featurization job gets UNet2DModel without diffusers' other UNets and
    transformers, its pipelines or EMAModel's module (lazy_packages: ≈ 2 of the ≈ 6 CPU-s a
    model job spent on imports); the deferred packages still give every class when asked for one."""
    code = (
        "import sys; from diffattr.stages import load; load('train'); load('featurize-train'); "
        "from diffattr.models import build_unet; from diffattr.config import ModelConfig; "
        "blocks = ('DownBlock2D',) * 2, ('UpBlock2D',) * 2; "
        "build_unet(ModelConfig((8, 8), *blocks, norm_num_groups=4), (1, 8, 8)); "
        "heavy = ['diffusers.models.unets.unet_2d_condition', 'diffusers.pipelines', "
        "'diffusers.training_utils', 'diffusers.models.transformers.transformer_sd3']; "
        "print(sorted(m for m in heavy if m in sys.modules)); "
        "import diffusers.models.unets as unets, diffusers.models.transformers as tf; "
        "print(unets.UNet2DConditionModel.__name__, tf.SD3Transformer2DModel.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-2:] == [
        "[]",
        "UNet2DConditionModel SD3Transformer2DModel",
    ]


def test_every_subcommand_summary_is_its_docstrings_whole_first_sentence():
    """`diffattr --help` lists each stage with the first sentence of its docstring, whole (the
    first docstring line cut `score` at "…the method's score file. With"), read without
    importing the stage."""
    from diffattr.stages import summary

    for name in STAGES:
        doc = " ".join((load_stage(name).__doc__ or "").split())
        line = summary(name)
        assert line.endswith(".") and doc.startswith(line), (name, line)
    assert summary("score") == (
        "Score every training example for every (step, target): the method's score file."
    )
