"""The two search figures, drawn from a ``search.json`` record only.

- Score per candidate per step (thesis Fig. 4.3 for NOSE's transfer entropy, any criterion's
  score otherwise): one line per step over the layer index; the selected layer is marked;
  shaded bands are the bootstrap 95 % intervals.
- Selection map (thesis Fig. 4.4): steps × layers; which layers are present, already removed,
  selected at that step, or protected.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402


def _title(record: dict) -> str:
    s = record["settings"]
    return f"{record['model']['id']} · criterion {s['criterion']} · mode {s['mode']} · target {s['target']}"


def plot_scores(record: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4.8))
    cmap = plt.get_cmap("viridis")
    steps = record["steps"]
    for k, step in enumerate(steps):
        color = cmap(k / max(1, len(steps) - 1))
        layers = [c["layer"] for c in step["candidates"]]
        scores = [c["score"] for c in step["candidates"]]
        ax.plot(layers, scores, marker=".", color=color, label=f"step {step['step']}")
        if all(c["ci95"] for c in step["candidates"]):
            lo = [c["ci95"][0] for c in step["candidates"]]
            hi = [c["ci95"][1] for c in step["candidates"]]
            ax.fill_between(layers, lo, hi, color=color, alpha=0.15, linewidth=0)
        ax.scatter([step["selected"]], [step["score"]], s=80, facecolors="none", edgecolors="red", zorder=3)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("layer (attention sublayer)")
    score = record["score"]
    ax.set_ylabel(f"{score['name']} [{score['unit']}]")
    ax.set_title(f"Score per candidate, lowest removed (red circle: selected)\n{_title(record)}", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_selection_map(record: dict, path: Path) -> Path:
    n_layers = record["model"]["num_layers"]
    steps = record["steps"]
    protect = set(record["settings"]["protect"])
    grid = np.zeros((len(steps), n_layers))  # 0 present, 1 removed before, 2 selected, 3 protected
    for k, step in enumerate(steps):
        for i in protect:
            grid[k, i] = 3
        for i in step["removed_before"]:
            grid[k, i] = 1
        grid[k, step["selected"]] = 2
    colors = ["#e8eef7", "#9aa5b1", "#d62728", "#f2d388"]
    fig, ax = plt.subplots(figsize=(max(6, n_layers * 0.3) + 2, max(2.5, len(steps) * 0.35 + 1.5)))
    ax.imshow(grid, cmap=ListedColormap(colors), vmin=0, vmax=3, aspect="auto")
    ax.set_xticks(range(n_layers))
    ax.set_xticklabels(range(n_layers), fontsize=7)
    ax.set_yticks(range(len(steps)))
    ax.set_yticklabels([s["step"] for s in steps], fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("step")
    ax.set_title(f"Attention sublayers removed per step\n{_title(record)}", fontsize=10)
    labels = ["present", "removed earlier", "selected", "protected"]
    ax.legend(handles=[Patch(color=c, label=l) for c, l in zip(colors, labels)], fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_search(record: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    return [plot_scores(record, out_dir / "scores.png"),
            plot_selection_map(record, out_dir / "selection_map.png")]
