"""The parts map as a contract (docs/architecture.md): every import of apps/ and ml/, top-level and
function-local, keeps to the layers; the known debt list only shrinks; the graph in the docs is
the one the code gives (`make parts-map` redraws it)."""

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
