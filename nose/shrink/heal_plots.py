"""The healing curve: training loss per step, validation loss per epoch, and the blend M.

The validation before training (epoch 0, the final structure untrained) is drawn as a dashed
level: healing helps where the epoch points fall below it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_healing(history: dict, path: Path, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    steps = [s["step"] for s in history["steps"]]
    ax.plot(steps, [s["loss"] for s in history["steps"]], label="training loss", color="tab:blue", linewidth=1)
    before = [v for v in history["validation"] if v["epoch"] == 0]
    after = [v for v in history["validation"] if v["epoch"] > 0]
    if before:
        ax.axhline(before[0]["loss"], color="tab:orange", linestyle=":", label="validation before healing (M = 0)")
    if after:
        ax.plot([v["step"] for v in after], [v["loss"] for v in after], "o-", color="tab:orange",
                label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"{history.get('loss_name', 'loss')}")
    twin = ax.twinx()
    twin.plot(steps, [s["blend"] for s in history["steps"]], color="grey", linestyle="--", label="blend M")
    twin.set_ylabel("blend M (1 = attention on)")
    twin.set_ylim(-0.05, 1.05)
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8)
    ax.set_title(f"Healing {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
