"""The package's structure: layers imported only downwards, file formats only in the codec,
paths parsed only in the layout module, no snakemake import."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "workflow" / "diffattr"

LAYERS = {  # bottom (0) to top; the same table as diffattr/__init__.py
    0: {
        "__init__",
        "seeding",
        "storage",
        "errors",
        "config",
        "layout",
        "ridge",
        "patches",
        "lazy_packages",
        "hub",
        "draws",
        "config_section",
        "config_schema",
        "config_slices",
        "config_checks",
        "schedule",
    },
    1: {"data", "procedural", "models", "projection", "outputs"},
    2: {
        "diffusion",
        "scoring",
        "features",
        "ekfac",
        "unlearning",
        "classifier",
        "figures",
        "counterfactual",
        "counterfactual_summary",
        "group_removal",
        "lds",
        "sizes",
        "local_denoiser",
        "mucs",
        "population",
        "topk",
    },
    3: {
        "methods",
        "artifacts",
        "attribution",
        "results",
        "stages",
        "fanout",
        "costs",
        "estimate",
        "evaluate_run",
        "kit",
        "verdicts",
    },
    4: {"cli", "config_doc", "__main__", "warm", "preflight"},
}
LEVEL = {name: level for level, names in LAYERS.items() for name in names}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield parts, path, ast.parse(path.read_text())


def runtime_imports(tree: ast.AST):
    """Import nodes executed at run time (not those under ``if TYPE_CHECKING:``)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from runtime_imports(node)


def imported(tree: ast.AST, parts: tuple[str, ...]) -> set[str]:
    """Top-level diffattr modules a module imports (relative or absolute)."""
    package = list(parts[:-1])  # e.g. ["lds"] for lds/report.py
    out = set()
    for node in runtime_imports(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("diffattr.")}
            continue
        if node.level == 0:
            if not (node.module or "").startswith("diffattr"):
                continue
            target = node.module.split(".")[1:]
        else:
            target = package[: len(package) - (node.level - 1)] + (node.module or "").split(".")
        target = [t for t in target if t]
        out |= {target[0]} if target else {a.name for a in node.names}
    return out


def test_every_module_has_a_layer_and_imports_only_downwards():
    for parts, path, tree in modules():
        top = parts[0]
        assert top in LEVEL, f"{path.name}: add it to a layer (here and in diffattr/__init__.py)"
        for other in imported(tree, parts):
            if other in LEVEL:
                assert LEVEL[other] <= LEVEL[top], f"{path} imports {other} from a higher layer"


def test_only_the_codec_and_storage_touch_h5py_and_nothing_imports_snakemake():
    for (top, *_), path, tree in modules():
        names = {
            a.name.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.Import)
            for a in n.names
        }
        names |= {
            (n.module or "").split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.level == 0
        }
        assert "snakemake" not in names, path
        if top not in ("artifacts", "storage"):
            assert "h5py" not in names, f"{path} uses h5py: go through diffattr.artifacts"


def test_only_layout_reads_structure_out_of_paths():
    for (top, *_), path, _ in modules():
        if top == "layout":
            continue
        text = path.read_text()
        for pattern in (".stem", ".parent.name", ".parent.parent", 'rsplit(":"'):
            assert pattern not in text, f"{path} parses a path ({pattern}): use diffattr.layout"
