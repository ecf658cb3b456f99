"""The method registry against the tables that name methods: the config's defaults and patch
methods, the Slurm row of the per-member jobs; the methods package's own rules (no layout, no
isinstance in the protocol)."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml
from diffattr import config
from diffattr.methods import DEFAULT_METHODS, METHODS, PATCH_METHODS, PerMemberMethod

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "workflow" / "diffattr" / "methods"


def test_config_defaults_and_patch_methods_are_the_registry_s_class_attributes():
    assert config.ALL_METHODS == DEFAULT_METHODS
    assert config.PATCH_METHODS == PATCH_METHODS


def test_the_slurm_row_of_member_jobs_is_the_largest_per_member_method_s():
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    row = profile["set-resources"]["member_scores"]
    per_member = [m for m in METHODS.values() if isinstance(m, PerMemberMethod)]
    assert per_member
    for key in {k for m in per_member for k in m.cluster_resources}:
        assert row[key] == max(m.cluster_resources.get(key, 0) for m in per_member), key
    for method in per_member:
        assert method.slice in config.SLICES, method.name
        assert {"mem_mb", "runtime"} <= set(method.resources), method.name


def test_methods_name_no_paths_and_the_protocol_checks_no_types():
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert "layout" not in (node.module or "").split("."), path
                assert all(a.name != "layout" for a in node.names), path
    base = ast.parse((PACKAGE / "base.py").read_text())
    calls = [n for n in ast.walk(base) if isinstance(n, ast.Call)]
    assert not [c for c in calls if getattr(c.func, "id", "") == "isinstance"]


def test_an_ekfac_member_scores_the_config_damping_and_the_lds_grid():
    from diffattr.config import load
    from diffattr.methods.ekfac import ekfac_dampings

    cfg = load([REPO / "config" / "config.yaml", REPO / "config" / "test.yaml"])
    assert ekfac_dampings(cfg) == [0.1, 1.0]
    assert METHODS["ekfac"].candidate_value(cfg) == 0.1
