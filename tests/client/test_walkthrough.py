"""The README's "Client and CLI" walkthrough, run literally in bash against the live embedded
Orchard: login, upload the demo digits, create an experiment, train, watch, plot, export and
download. Only the install line is skipped (the package is already importable here) and the
walkthrough's server address is replaced by the test server's.

The block is read from the repository README's "Client and CLI" section when it has one (else from
clients/python/README.md); where both have it they must be the same."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.client.helpers import png_text

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(
    r"<!-- walkthrough:start -->\s*```bash\n(.*?)```\s*<!-- walkthrough:end -->", re.S
)


def walkthrough() -> str:
    blocks = [
        match.group(1)
        for path in (ROOT / "README.md", ROOT / "clients" / "python" / "README.md")
        if path.exists() and (match := BLOCK.search(path.read_text(encoding="utf-8")))
    ]
    assert blocks, "no walkthrough block in README.md or clients/python/README.md"
    assert all(block == blocks[0] for block in blocks), "the two walkthroughs differ"
    return blocks[0]


def test_readme_walkthrough_runs_literally(server, cli_env, tmp_path):
    script = walkthrough()
    assert "orchard login" in script and "orchard exports download" in script
    lines = [line for line in script.splitlines() if not line.startswith("pip install")]
    body = "\n".join(lines).replace("http://127.0.0.1:8000", server.base)
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", body],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-5000:])
    text = png_text(tmp_path / "curves.png")
    assert text["orchard:curves"].split(",") == [
        "train_loss",
        "val_loss",
        "train_accuracy",
        "val_accuracy",
    ]
    model = tmp_path / "digits.onnx"
    assert model.stat().st_size > 1000
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(model)).graph
    assert graph.input and graph.output
