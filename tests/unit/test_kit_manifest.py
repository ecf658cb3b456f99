"""The LDS kit's manifest (diffattr.kit): every file's digest and size, checked on opening, one
line per problem; the tuning grids' codec."""

from __future__ import annotations

import json

import numpy as np
import pytest
from diffattr.artifacts import read_grids, write_grids
from diffattr.errors import ArtifactError
from diffattr.kit import MANIFEST, verify, write_manifest
from diffattr.lds.report import Grid


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "random.h5").write_bytes(b"scores")
    (tmp_path / "data.h5").write_bytes(b"data")
    write_manifest(tmp_path, {"run": "x"}, ["random"], "snakemake --cores all kit")
    return tmp_path


def test_the_manifest_lists_every_file_and_verifies(folder):
    manifest = verify(folder)
    assert set(manifest["files"]) == {"data.h5", "scores/random.h5"}
    assert manifest["files"]["data.h5"]["bytes"] == 4
    assert manifest["format"] == "diffattr-lds-kit" and manifest["version"] == 1
    first = (folder / MANIFEST).read_bytes()
    write_manifest(folder, {"run": "x"}, ["random"], "snakemake --cores all kit")
    assert (folder / MANIFEST).read_bytes() == first  # deterministic


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: (f / "scores" / "random.h5").write_bytes(b"scorez"), "does not match"),
        (lambda f: (f / "data.h5").write_bytes(b"data!"), "does not match"),
        (lambda f: (f / "data.h5").unlink(), "is missing"),
    ],
)
def test_a_changed_or_missing_file_is_one_line_naming_it(folder, change, message):
    change(folder)
    with pytest.raises(ArtifactError, match=message) as err:
        verify(folder)
    assert "\n" not in str(err.value) and "snakemake --cores all kit" in str(err.value)


def test_a_folder_without_manifest_or_of_another_version_is_refused(folder, tmp_path_factory):
    with pytest.raises(ArtifactError, match="is not an LDS kit"):
        verify(tmp_path_factory.mktemp("empty"))
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ArtifactError, match="version 99"):
        verify(folder)


def test_grids_round_trip_exactly(tmp_path):
    grids = {
        "journey_trak": Grid([0.01, 1.0], 2, np.random.default_rng(0).normal(size=(2, 3, 4, 5))),
        "ekfac": Grid([0.1], 3, np.ones((1, 3, 4, 5), np.float32)),
    }
    write_grids(tmp_path / "grids.h5", grids, {"lambdas": [0.01, 1.0]})
    back = read_grids(tmp_path / "grids.h5")
    assert set(back) == set(grids)
    for name, grid in grids.items():
        assert back[name].values == grid.values and back[name].size == grid.size
        assert back[name].predictions.dtype == grid.predictions.dtype
        assert np.array_equal(back[name].predictions, grid.predictions)
