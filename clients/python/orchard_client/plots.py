"""PNG plots with matplotlib's Agg backend (no display needed).

Each PNG also carries what it shows in its text chunks (`orchard:curves`, `orchard:cells`), so a
script can check a plot without looking at it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Fixed colours, one per curve (train solid, validation dashed).
CURVES = (
    ("loss", "train_loss", "train loss", "#1f77b4", "-"),
    ("loss", "val_loss", "val loss", "#ff7f0e", "--"),
    ("accuracy", "train_accuracy", "train accuracy", "#2ca02c", "-"),
    ("accuracy", "val_accuracy", "val accuracy", "#d62728", "--"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def run_curves_png(metrics: dict[str, Any], path: str | Path, *, title: str = "") -> list[str]:
    """Loss and accuracy per epoch (train and val, where recorded) from a run's `metrics`
    answer; returns the names of the curves drawn."""
    epochs = [e for e in metrics.get("epochs") or [] if isinstance(e, dict) and "epoch" in e]
    if not epochs:
        raise ValueError("The run has no recorded epochs yet.")
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    axes = {"loss": ax_loss, "accuracy": ax_acc}
    drawn = []
    for panel, key, label, colour, style in CURVES:
        points = [(e["epoch"], e[key]) for e in epochs if isinstance(e.get(key), int | float)]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        axes[panel].plot(xs, ys, style, color=colour, label=label, linewidth=2, marker="o")
        drawn.append(key)
    for panel, ax in axes.items():
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.suptitle(title or f"run {metrics.get('run_id', '')}")
    fig.tight_layout()
    _save(fig, path, {"orchard:curves": ",".join(drawn), "orchard:kind": "run-curves"})
    plt.close(fig)
    return drawn


def confusion_png(evaluation: dict[str, Any], path: str | Path) -> int:
    """The evaluation's confusion matrix (rows: true classes) with its counts; returns the
    number of cells drawn."""
    results = evaluation.get("results") or {}
    matrix = results.get("confusion_matrix")
    if not matrix or not isinstance(matrix, list):
        raise ValueError("The evaluation has no confusion matrix (has it completed?).")
    n = len(matrix)
    names = [row["name"] for row in per_class_rows(results)]
    if len(names) != n:
        names = [str(i) for i in range(n)]
    plt = _pyplot()
    size = max(4.0, min(0.5 * n + 2, 20.0))
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    top = max((max(row) for row in matrix if row), default=0) or 1
    if n <= 30:
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                colour = "white" if value > top / 2 else "black"
                ax.text(j, i, str(value), ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(n), names, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = results.get("accuracy")
    ax.set_title(
        f"evaluation {evaluation.get('id', '')}"
        + (f" (accuracy {accuracy:.4g})" if isinstance(accuracy, int | float) else "")
    )
    fig.tight_layout()
    cells = sum(len(row) for row in matrix)
    _save(
        fig,
        path,
        {
            "orchard:cells": str(cells),
            "orchard:shape": json.dumps([n, n]),
            "orchard:kind": "confusion",
        },
    )
    plt.close(fig)
    return cells


def per_class_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-class metrics as rows `{name, precision, recall, f1, support}` in class order, from
    either shape the server has used: a list of rows, or a mapping keyed by class name (with
    `classes` giving the order)."""
    per_class = results.get("per_class") or []
    if isinstance(per_class, dict):
        order = results.get("classes") or list(per_class)
        return [
            {"name": str(name), **(per_class.get(name) or {})}
            for name in order
            if isinstance(per_class.get(name), dict)
        ]
    return [
        {**row, "name": str(row.get("name", row.get("class", i)))}
        for i, row in enumerate(per_class)
        if isinstance(row, dict)
    ]


def _save(fig, path: str | Path, text: dict[str, str]) -> None:
    fig.savefig(str(path), format="png", metadata={"Software": "orchard-client", **text})
