"""The LDS kits committed under benchmarks/kits/: intact (every file's sha256 as its manifest
says) and still reproducing their run's report bit for bit with the package as it is now."""

from __future__ import annotations

from pathlib import Path

import pytest
from diffattr.kit import REFERENCE_CSV, evaluate, verify

KITS = sorted(
    p.parent for p in (Path(__file__).parents[2] / "benchmarks" / "kits").glob("*/manifest.json")
)


def test_there_is_a_committed_kit():
    assert KITS, "benchmarks/kits/ holds no kit"


@pytest.mark.parametrize("kit", KITS, ids=[k.name for k in KITS])
def test_a_committed_kit_verifies_and_reproduces_its_lds_csv(kit, tmp_path):
    manifest = verify(kit)
    assert manifest["config"]["run"] == kit.name
    evaluate([], kit, tmp_path)
    assert (tmp_path / "lds.csv").read_bytes() == (kit / REFERENCE_CSV).read_bytes()
