"""Draw the package's layers from its real imports into docs/architecture.md.

    python tools/architecture.py           # rewrite the diagram between the markers
    python tools/architecture.py --check   # exit 1 if the committed diagram is stale

The layers come from the import-linter contract in pyproject.toml; the arrows are every
import between two top-level parts of the package that grimp (import-linter's graph) finds,
function-level imports included. A test runs ``--check``, so the picture cannot drift.
"""
from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- layers:begin (tools/architecture.py) -->", "<!-- layers:end -->"


def layers() -> list[list[str]]:
    """The layers contract's layers, top first, each a list of sibling parts."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in conf["contracts"] if c["type"] == "layers")
    return [[p.strip() for p in layer.replace(":", "|").split("|")]
            for layer in contract["layers"]]


def edges() -> set[tuple[str, str]]:
    """(importer part, imported part) for every import across two top-level parts."""
    graph = grimp.build_graph("hardymer", include_external_packages=False)
    part = lambda m: m.split(".")[1] if m.count(".") >= 1 else None  # noqa: E731
    out = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            a, b = part(importer), part(imported)
            if a and b and a != b:
                out.add((a, b))
    return out


def diagram() -> str:
    rows = layers()
    lines = ["```mermaid", "flowchart TD"]
    for i, row in enumerate(rows):
        lines.append(f'    subgraph L{i}[" "]')
        lines.append("        direction LR")
        lines += [f"        {p}[{p}]" for p in row]
        lines.append("    end")
    lines += [f"    {a} --> {b}" for a, b in sorted(edges())]
    lines.append("```")
    return "\n".join(lines)


def render(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{diagram()}\n{END}{tail}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the doc is out of date")
    args = ap.parse_args()
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        print(f"{DOC}: markers {BEGIN!r} … {END!r} missing", file=sys.stderr)
        return 1
    new = render(text)
    if args.check:
        if new != text:
            print(f"{DOC} is out of date: run python tools/architecture.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
