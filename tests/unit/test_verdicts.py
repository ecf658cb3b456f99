"""Two-seed verdicts: a win is called only where every master seed agrees, intervals above 0."""

import json

import pandas as pd
import pytest
from diffattr.errors import ArtifactError
from diffattr.verdicts import NOT_CALLED, seed_verdicts, verdicts_command

# per seed, per step: (method, lds, margin_ci_low) of the rows; the contrast's interval
SEEDS = [
    {
        100: ([("journey_trak", 0.50, 0.10), ("pixel_similarity", 0.30, -0.4)], (0.05, 0.30)),
        300: ([("journey_trak", 0.60, 0.02), ("local_denoiser", 0.55, -0.1)], (0.01, 0.10)),
        500: ([("journey_trak", 0.40, -0.3), ("pixel_similarity", 0.70, 0.05)], (-0.4, -0.1)),
    },
    {
        100: ([("journey_trak", 0.45, 0.02), ("pixel_similarity", 0.20, -0.5)], (0.01, 0.20)),
        300: ([("journey_trak", 0.52, -0.01), ("local_denoiser", 0.50, -0.1)], (-0.02, 0.09)),
        500: ([("journey_trak", 0.35, -0.3), ("local_denoiser", 0.66, 0.04)], (-0.3, -0.05)),
    },
]


def write_seed(folder, steps):
    folder.mkdir()
    rows, contrast = [], []
    for step, (methods, (lo, hi)) in steps.items():
        for method, value, margin_low in methods:
            rows.append(
                {
                    "method": method,
                    "step": step,
                    "ground_truth": "f_t",
                    "lds": value,
                    "ceiling": 0.8,
                    "lambda_source": "none",
                    "margin": margin_low + 0.05,
                    "margin_ci_low": margin_low,
                    "margin_ci_high": margin_low + 0.1,
                }
            )
        (model, a, _), (free, b, _) = methods
        contrast.append(
            {
                "ground_truth": "f_t",
                "step": step,
                "model": model,
                "gradient_free": free,
                "margin": a - b,
                "margin_ci_low": lo,
                "margin_ci_high": hi,
            }
        )
    pd.DataFrame(rows).to_csv(folder / "lds.csv", index=False)
    (folder / "lds.json").write_text(json.dumps({"model_vs_gradient_free": contrast}))
    return folder / "lds.csv"


def test_a_win_is_called_only_where_every_seed_agrees(tmp_path, capsys):
    reports = [write_seed(tmp_path / f"seed{i}", s) for i, s in enumerate(SEEDS)]
    table = seed_verdicts(reports).set_index("step")
    assert list(table.index) == [500, 300, 100]  # noisy → clean
    assert table.loc[100, "best_called"] == "journey_trak"
    assert table.loc[100, "contrast_called"] == "model"
    assert table.loc[300, "best_called"] == NOT_CALLED  # seed 1's margin includes 0
    assert table.loc[300, "contrast_called"] == NOT_CALLED
    assert table.loc[500, "best_called"] == NOT_CALLED  # different leaders
    assert table.loc[500, "contrast_called"] == "gradient_free"
    assert table.loc[300, "spread"] == pytest.approx(0.08)
    assert table.loc[300, "spread_method"] == "journey_trak"
    verdicts_command(reports=reports, out=tmp_path / "v.csv")
    assert "journey_trak" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "v.csv").shape[0] == 3


def test_one_seed_or_a_missing_report_is_one_clear_error(tmp_path):
    report = write_seed(tmp_path / "seed0", SEEDS[0])
    with pytest.raises(ArtifactError, match="≥ 2 master seeds"):
        seed_verdicts([report])
    with pytest.raises(ArtifactError, match="no LDS report there"):
        seed_verdicts([report, tmp_path / "nowhere" / "lds.csv"])
