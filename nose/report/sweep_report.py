"""Quality against removed attention sublayers (thesis Fig. 4.8) as a plot and tables, from ``sweep.json`` only.

Three panels (CA, CodeBLEU, BLEU) over k, one line per order, except that orders of the
``random`` criterion (several seeds) are drawn together as a band (their range, and their mean
as a dotted line); each panel's right axis shows the parameters and FLOPs left, in % of the
intact model (dashed grey; they depend only on k when every attention sublayer has the same
shape, and are drawn for the first order).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (("ca_percent", "computational accuracy [%]"), ("codebleu", "CodeBLEU [0-100]"), ("bleu", "BLEU [0-100]"))


def _value(row: dict, key: str) -> float:
    """A metric for plotting: NaN (no point) where a task has no reference answers to score text against."""
    return np.nan if row[key] is None else row[key]


def plot_sweep(record: dict, path: Path) -> Path:
    labels = [o["label"] for o in record["orders"]]
    randoms = [o["label"] for o in record["orders"] if o["criterion"] == "random"]
    by_order = {label: sorted((r for r in record["rows"] if r["order"] == label), key=lambda r: r["k"])
                for label in labels}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    markers = "osD^v<>ph*"
    drawn = [label for label in labels if label not in randoms or len(randoms) == 1]
    colours = plt.get_cmap("tab10" if len(drawn) <= 10 else "tab20").colors  # no colour drawn twice
    for ax, (key, title) in zip(axes, PANELS):
        for n, label in enumerate(drawn):
            rows = by_order[label]
            ax.plot([r["k"] for r in rows], [_value(r, key) for r in rows], marker=markers[n % len(markers)],
                    color=colours[n % len(colours)], label=label, linestyle="-" if "reverse" not in label else "--")
        if len(randoms) > 1:
            ks = sorted(set.intersection(*({r["k"] for r in by_order[label]} for label in randoms)))
            values = np.array([[next(_value(r, key) for r in by_order[label] if r["k"] == k) for k in ks]
                               for label in randoms])
            ax.fill_between(ks, values.min(0), values.max(0), color="grey", alpha=0.25,
                            label=f"random ({len(randoms)} seeds: range)")
            ax.plot(ks, values.mean(0), color="grey", linestyle=":", label="random (mean)")
        ax.set_xlabel("attention sublayers removed (k)")
        ax.set_ylabel(title)
        ax.set_xticks(record["k"])
        ax.grid(alpha=0.3)
        first = by_order[labels[0]]
        base = next((r for r in first if r["k"] == 0), None)
        if base:
            twin = ax.twinx()
            ks = [r["k"] for r in first]
            twin.plot(ks, [100 * r["parameters"] / base["parameters"] for r in first], color="grey",
                      linestyle=":", linewidth=1, label="parameters")
            twin.plot(ks, [100 * r["flops"] / base["flops"] for r in first], color="grey",
                      linestyle="--", linewidth=1, label=f"FLOPs ({base['flops_seq_len']} tokens)")
            twin.set_ylabel("left of the intact model [%]", color="grey")
            twin.tick_params(axis="y", colors="grey")
            if ax is axes[-1]:
                twin.legend(fontsize=7, loc="lower left")
    axes[0].legend(fontsize=7, loc="lower left")
    n = record["benchmark"]["samples"]
    fig.suptitle(f"{record['model']['id']}: G-TransEval Java→Python ({n} samples), attention removed without "
                 f"healing (mode {record['mode']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def sweep_markdown(record: dict, metric: str = "ca_percent") -> str:
    """One row per k, one column per order, ``metric`` of each; plus parameters and FLOPs left."""
    labels = [o["label"] for o in record["orders"]]
    cell = {(r["order"], r["k"]): r for r in record["rows"]}
    base = next((r for r in record["rows"] if r["k"] == 0), None)
    head = "| k | " + " | ".join(labels) + " | parameters | FLOPs |"
    lines = [head, "|---:|" + "---:|" * (len(labels) + 2)]
    for k in record["k"]:
        values = [f"{cell[(label, k)][metric]:.1f}" if (label, k) in cell else "-" for label in labels]
        any_row = next((cell[(label, k)] for label in labels if (label, k) in cell), None)
        share = (f"{100 * any_row['parameters'] / base['parameters']:.1f} % | "
                 f"{100 * any_row['flops'] / base['flops']:.1f} %") if any_row and base else "- | -"
        lines.append(f"| {k} | " + " | ".join(values) + f" | {share} |")
    return "\n".join(lines)


def paired_ca_difference(a: dict[str, bool], b: dict[str, bool], replicates: int = 2000,
                         seed: int = 0) -> tuple[float, float, float]:
    """CA(a) − CA(b) in percentage points over the same samples, with a 95 % paired bootstrap
    interval (samples resampled with replacement, both runs together)."""
    ids = sorted(a)
    diff = np.array([a[i] for i in ids], dtype=float) - np.array([b[i] for i in ids], dtype=float)
    boots = diff[np.random.default_rng(seed).integers(0, len(diff), (replicates, len(diff)))].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return 100 * diff.mean(), 100 * lo, 100 * hi


def difference_markdown(record: dict, reference: str | None = None) -> str:
    """Per k, each order's CA minus the ``reference`` order's (default: the first), in
    percentage points with the paired 95 % bootstrap interval."""
    labels = [o["label"] for o in record["orders"]]
    reference = reference or labels[0]
    others = [label for label in labels if label != reference]
    cell = {(r["order"], r["k"]): r for r in record["rows"]}
    lines = ["| k | " + " | ".join(f"{label} − {reference}" for label in others) + " |",
             "|---:|" + "---:|" * len(others)]
    for k in record["k"]:
        if k == 0 or (reference, k) not in cell:
            continue
        ref = record["evals"][cell[(reference, k)]["eval"]]["passed"]
        values = []
        for label in others:
            if (label, k) not in cell:
                values.append("-")
                continue
            d, lo, hi = paired_ca_difference(record["evals"][cell[(label, k)]["eval"]]["passed"], ref)
            values.append(f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]")
        lines.append(f"| {k} | " + " | ".join(values) + " |")
    return "\n".join(lines)
