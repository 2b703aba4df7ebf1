"""The parts map of Orchard, read from the code: which part imports which (every import, top-level
and function-local, found by walking the AST), checked against the layers of docs/architecture.md.

    python scripts/partsmap.py           # print the violations (exit 1 if any is new)
    python scripts/partsmap.py --write   # regenerate the graph in docs/architecture.md

`tests/test_architecture.py` runs the same check in CI, and fails when docs/architecture.md's
graph is not the one the code gives.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- partsmap:begin -->", "<!-- partsmap:end -->"

# Lower layers never import higher ones; inside a layer imports must not form a cycle; the
# protocol surfaces never import each other.
LAYERS: list[tuple[str, list[str]]] = [
    ("ml", ["ml"]),
    ("core", ["core"]),
    ("domain", ["accounts", "datasets", "clusters", "tasks"]),
    ("feature", ["training", "exports", "marketplace", "mlbackend", "system"]),
    ("surface", ["hanami", "mlbackend.labelstudio", "mlbackend.labelprop"]),
    ("operator", ["console"]),  # the admin console reads every part's selectors
]
SURFACES = {"hanami", "mlbackend.labelstudio", "mlbackend.labelprop"}
# The job engine knows tasks, queues, claims, heartbeats and events, and nothing of what runs.
ONLY = {"tasks": {"ml", "core", "accounts"}}
LAYER_OF = {part: i for i, (_, parts) in enumerate(LAYERS) for part in parts}

# Imports that break the map today, each with the issue that removes it. The check fails on any
# new violation, and on a listed one that is gone (so this list only shrinks).
KNOWN: dict[tuple[str, str], str] = {}


# The Django wiring of the mlbackend package, which holds two surfaces in one Django app (one
# app label, one migration history): its AppConfig registers both halves' task kinds, its URL
# root lists both gateways and its models package gathers both halves' model modules. Like
# config/urls.py, wiring belongs to no part; each half's own modules are checked as that half.
WIRING = {
    "apps.mlbackend.apps",
    "apps.mlbackend.urls",
    "apps.mlbackend.api.urls",
    "apps.mlbackend.models",
}


def part_of(module: str) -> str | None:
    bits = module.split(".")
    if bits[0] == "ml":
        return "ml"
    if bits[0] != "apps" or len(bits) < 2 or module in WIRING:
        return None
    if bits[1] == "mlbackend" and len(bits) > 2 and bits[2] in ("labelstudio", "labelprop"):
        return f"mlbackend.{bits[2]}"
    if module.startswith("apps.mlbackend.models.") and bits[3] in ("labelstudio", "labelprop"):
        return f"mlbackend.{bits[3]}"
    if bits[1] == "marketplace" and len(bits) > 2 and bits[2] in ("views", "protocol", "http"):
        return "marketplace"  # the orchestrator routes live in the feature app today
    return bits[1]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports() -> dict[tuple[str, str], list[str]]:
    """(importing part, imported part) -> where ("path:line"), every import counted."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    files = [*(ROOT / "apps").rglob("*.py"), *(ROOT / "ml").rglob("*.py")]
    for path in sorted(files):
        if "migrations" in path.parts:
            continue
        source = part_of(_module(path))
        if source is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            targets = {part_of(name) for name in names} - {None, source}
            for target in targets:
                edges[(source, target)].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return dict(edges)


def _cycles(edges) -> set[tuple[str, str]]:
    """Edges that lie on a cycle between two parts of the same layer."""
    found = set()
    for a, b in edges:
        if (b, a) in edges and LAYER_OF.get(a) == LAYER_OF.get(b):
            found.add((a, b))
    return found


def violations(edges) -> dict[tuple[str, str], str]:
    bad = {}
    cycles = _cycles(edges)
    for a, b in edges:
        la, lb = LAYER_OF.get(a), LAYER_OF.get(b)
        if la is None or lb is None:
            bad[(a, b)] = f"{a} or {b} is not on the map"
        elif lb > la:
            bad[(a, b)] = f"{a} ({LAYERS[la][0]}) imports the higher layer {b} ({LAYERS[lb][0]})"
        elif a in ONLY and b not in ONLY[a]:
            bad[(a, b)] = f"{a} may import only {', '.join(sorted(ONLY[a]))}"
        elif a in SURFACES and b in SURFACES:
            bad[(a, b)] = f"the surface {a} imports the surface {b}"
        elif (a, b) in cycles:
            bad[(a, b)] = f"{a} and {b} import each other"
    return bad


def check() -> tuple[list[str], list[str]]:
    """(new violations, listed violations that are gone)."""
    edges = imports()
    bad = violations(edges)
    new = [
        f"{a} -> {b}: {why} ({', '.join(edges[(a, b)][:3])})"
        for (a, b), why in bad.items()
        if (a, b) not in KNOWN
    ]
    gone = [f"{a} -> {b}" for (a, b) in KNOWN if (a, b) not in bad]
    return sorted(new), sorted(gone)


def mermaid(edges=None) -> str:
    edges = imports() if edges is None else edges
    bad = violations(edges)
    lines = ["```mermaid", "flowchart BT"]
    for name, parts in LAYERS:
        lines.append(f"  subgraph layer_{name} [{name}]")
        for part in parts:
            lines.append(f"    {part.replace('.', '_')}[{part}]")
        lines.append("  end")
    for a, b in sorted(edges):
        arrow = "-.->|known debt|" if (a, b) in bad else "-->"
        lines.append(f"  {a.replace('.', '_')} {arrow} {b.replace('.', '_')}")
    lines.append("```")
    return "\n".join(lines)


def doc_graph() -> str | None:
    text = DOC.read_text() if DOC.exists() else ""
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def write() -> None:
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{mermaid()}\n{END}{tail}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
        print(f"wrote {DOC.relative_to(ROOT)}")
    new, gone = check()
    for line in new:
        print("NEW:", line)
    for line in gone:
        print("GONE (remove it from KNOWN):", line)
    sys.exit(1 if new or gone else 0)
