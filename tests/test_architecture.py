"""The parts map as a contract (docs/architecture.md): every import of apps/ and ml/, top-level and
function-local, keeps to the layers; the known debt list only shrinks; the graph in the docs is
the one the code gives (`make parts-map` redraws it)."""

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("partsmap", ROOT / "scripts" / "partsmap.py")
partsmap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(partsmap)


def test_no_import_breaks_the_layers():
    new, gone = partsmap.check()
    assert not new, "imports that break docs/architecture.md's layers:\n" + "\n".join(new)
    assert not gone, "fixed debt still listed in scripts/partsmap.py KNOWN:\n" + "\n".join(gone)


def test_the_check_sees_function_local_imports_and_cycles():
    edges = {
        ("core", "training"): ["x.py:1"],
        ("datasets", "clusters"): ["y.py:2"],
        ("clusters", "datasets"): ["z.py:3"],
        ("hanami", "mlbackend.labelprop"): ["w.py:4"],
        ("tasks", "training"): ["v.py:5"],
    }
    bad = partsmap.violations(edges)
    assert set(bad) == set(edges)
    local = partsmap.imports()
    # apps/clusters/services.py imports apps.tasks inside functions only: still counted.
    assert any("apps/clusters/services.py" in where for where in local[("clusters", "tasks")])


def test_the_docs_graph_is_the_codes():
    assert partsmap.doc_graph() == partsmap.mermaid().strip(), "run `make parts-map`"


# Checkpoint rows and cluster configs are written by apps/clusters alone (its services and its
# training service). A file listed here still does it, with the reason; the list only shrinks.
CLUSTER_WRITES_KNOWN: set[str] = set()
_ROW_WRITES = {
    "create",
    "update",
    "update_or_create",
    "get_or_create",
    "bulk_create",
    "bulk_update",
}


def _rooted_at_checkpoint_objects(node: ast.AST) -> bool:
    """Whether an expression is a chain on `Checkpoint.objects` (`.filter(...).update(...)`)."""
    while True:
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Attribute):
            if node.attr == "objects" and isinstance(node.value, ast.Name):
                return node.value.id == "Checkpoint"
            node = node.value
        else:
            return False


def cluster_writes(source: str) -> list[str]:
    """`Checkpoint.objects` writes, `<x>.config = ...` and `.update(config=...)` in a module."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in _ROW_WRITES and _rooted_at_checkpoint_objects(node.func.value):
                found.append((node.lineno, f"Checkpoint.objects ... .{node.func.attr}(...)"))
            elif node.func.attr == "update" and any(k.arg == "config" for k in node.keywords):
                found.append((node.lineno, ".update(config=...)"))
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr == "config":
                found.append((node.lineno, ".config = ..."))
    return [f"{line}: {what}" for line, what in sorted(found)]


def test_only_apps_clusters_writes_checkpoints_and_cluster_configs():
    offenders = []
    clean_known = [name for name in CLUSTER_WRITES_KNOWN if not (ROOT / name).exists()]
    for path in sorted((ROOT / "apps").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name.startswith("apps/clusters/") or "/migrations/" in name:
            continue
        found = cluster_writes(path.read_text())
        if found and name not in CLUSTER_WRITES_KNOWN:
            offenders += [f"{name}:{line}" for line in found]
        if not found and name in CLUSTER_WRITES_KNOWN:
            clean_known.append(name)
    assert not offenders, "go through apps.clusters.services / .training:\n" + "\n".join(offenders)
    assert not clean_known, "fixed, remove from CLUSTER_WRITES_KNOWN: " + ", ".join(clean_known)


def test_the_write_check_sees_chains_and_assignments():
    source = """
Checkpoint.objects.create(id=1)
Checkpoint.objects.filter(pk=1).update(size_bytes=2)
Cluster.objects.filter(pk=1).update(config={})
cluster.config = {}
Checkpoint.objects.filter(pk=1).exists()
run.config["x"] = 1
"""
    assert [line.split(":")[0] for line in cluster_writes(source)] == ["2", "3", "4", "5"]


# A module past this many lines is split into cohesive modules before it grows further (issue #15).
MAX_MODULE_LINES = 600
# The modules over the limit today, each with why it is not split yet. The list only shrinks.
LONG_MODULES_KNOWN: dict[str, str] = {}


def long_modules() -> dict[str, int]:
    """Line counts of the modules of apps/ and ml/ over MAX_MODULE_LINES (migrations excepted)."""
    found = {}
    for base in ("apps", "ml"):
        for path in sorted((ROOT / base).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            lines = len(path.read_text().splitlines())
            if lines > MAX_MODULE_LINES and "/migrations/" not in name:
                found[name] = lines
    return found


def test_no_module_grows_past_the_line_limit():
    found = long_modules()
    new = [
        f"{name}: {lines} lines" for name, lines in found.items() if name not in LONG_MODULES_KNOWN
    ]
    gone = [name for name in LONG_MODULES_KNOWN if name not in found]
    assert not new, f"over {MAX_MODULE_LINES} lines, split them:\n" + "\n".join(new)
    assert not gone, "now under the limit, remove from LONG_MODULES_KNOWN: " + ", ".join(gone)
