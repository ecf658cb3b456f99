"""The key tables of ``config/README.md``, generated from the schema's descriptions and defaults.

python -m diffattr.config_doc            # rewrite the tables in config/README.md
python -m diffattr.config_doc --check    # exit 1 if they are out of date (a test runs this)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .config import schema

README = Path(__file__).resolve().parents[2] / "config" / "README.md"
BEGIN = "<!-- BEGIN GENERATED: python -m diffattr.config_doc -->"
END = "<!-- END GENERATED -->"


def _default(prop: dict[str, Any], required: bool) -> str:
    if "default" not in prop:
        return "required" if required else "—"
    value = prop["default"]
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"`{text}`"


def _rows(props: dict[str, Any], required: list[str], prefix: str = "") -> list[str]:
    rows = []
    for key, prop in props.items():
        name = f"{prefix}{key}"
        rows.append(f"| `{name}` | {_default(prop, key in required)} | {prop['description']} |")
        if prop.get("type") == "object" and "properties" in prop:
            rows += _rows(prop["properties"], prop.get("required", []), f"{name}.")
    return rows


def tables() -> str:
    """Markdown: the top-level keys, then one table per section."""
    root = schema()
    header = ["| key | default | meaning |", "|---|---|---|"]
    scalars = {k: p for k, p in root["properties"].items() if p.get("type") != "object"}
    parts = ["## Top level", "", *header, *_rows(scalars, root.get("required", []))]
    for name, section in root["properties"].items():
        if name in scalars:
            continue
        required = " (required)" if name in root.get("required", []) else ""
        parts += ["", f"## `{name}`{required}", "", section["description"], ""]
        parts += [*header, *_rows(section["properties"], section.get("required", []))]
    return "\n".join(parts) + "\n"


def rendered(text: str) -> str:
    """``text`` (the README) with its generated part replaced by :func:`tables`."""
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n\n{tables()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    text = README.read_text()
    fresh = rendered(text)
    if "--check" in argv:
        if fresh != text:
            print(f"{README} is out of date: run python -m diffattr.config_doc", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
