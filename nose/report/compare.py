"""Compare evaluation runs (``results.json``) in the style of the thesis' Table 4.1.

Each row is a metric with its unit; the first run is the base and every other run gets its
change in percent against it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nose.evaluate.run import RESULTS_SHAPE  # noqa: E402
from nose.files import NUMBER, check_shape, read_json_file  # noqa: E402


def load_run(path: Path) -> dict:
    """A ``results.json`` (or the one inside a folder)."""
    run = read_json_file(path, "results.json", "nose.evaluate/1", "nose evaluate", RESULTS_SHAPE)
    for level, v in run["metrics"]["ca_by_type"].items():
        check_shape(v, {"ca": NUMBER}, f"{path}: metrics.ca_by_type.{level}")
    return run


def _get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def rows(run: dict) -> list[tuple[str, float | None]]:
    m, e = run["metrics"], run.get("efficiency") or {}
    out = [("samples", m["samples"]), ("CA [%]", m["ca_percent"])]
    out += [(f"CA {level} [%]", v["ca"]) for level, v in m["ca_by_type"].items()]
    out += [(f"pass@{k} [%]", v) for k, v in (m.get("pass_at_k") or {}).items()]
    out += [("BLEU [0-100]", m["bleu"]), ("CodeBLEU [x100]", m["codebleu"])]
    if e:
        seq = _get(e, "compute", "seq_len")
        out += [("parameters [M]", e["parameters"] / 1e6),
                ("attention parameters [M]", e["attention_parameters"] / 1e6),
                ("weights [MB]", e["weight_bytes"] / 1e6),
                (f"FLOPs / forward of {seq} tokens [G]", _get(e, "compute", "flops") / 1e9),
                ("KV cache [bytes/token]", e["kv_cache_bytes_per_token"]),
                (f"prefill {_get(e, 'speed', 'prompt_len')} tokens [ms]", _get(e, "speed", "prefill_ms"))]
        for b, v in (_get(e, "speed", "decode_tokens_per_s") or {}).items():
            out.append((f"decode batch {b} [tokens/s]", v))
        peak = _get(e, "speed", "peak_cuda_allocated_bytes")
        if peak is None:
            peak = max((_get(e, "speed", "peak_rss_bytes") or {0: None}).values(), default=None)
            out.append(("peak memory, process RSS [MB]", peak / 1e6 if peak else None))
        else:
            out.append(("peak CUDA memory [MB]", peak / 1e6))
    return out


def comparison(runs: list[dict], names: list[str]) -> dict:
    """{"columns": names, "rows": [{"metric", "values": [...], "delta_percent": [...]}]}"""
    tables = [dict(rows(r)) for r in runs]
    metrics = list(dict.fromkeys(k for t in tables for k in t))
    out = []
    for metric in metrics:
        values = [t.get(metric) for t in tables]
        base = values[0]
        deltas = [None if (v is None or not base) else 100.0 * (v - base) / base for v in values]
        out.append({"metric": metric, "values": values, "delta_percent": deltas})
    devices = [_get(r, "efficiency", "speed", "device") for r in runs]
    return {"columns": names, "rows": out, "devices": devices}


def fmt(v) -> str:
    """A table cell: integers and values from 1000 up with thousands separators, else 2 decimals."""
    if v is None:
        return "-"
    if isinstance(v, int) or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.2f}"


def to_markdown(table: dict) -> str:
    cols = table["columns"]
    head = "| metric | " + " | ".join(cols[:1] + [f"{c} (Δ%)" for c in cols[1:]]) + " |"
    lines = [head, "|---|" + "---:|" * len(cols)]
    for row in table["rows"]:
        cells = [fmt(row["values"][0])]
        for v, d in zip(row["values"][1:], row["delta_percent"][1:]):
            cells.append(fmt(v) + ("" if d is None else f" ({d:+.1f}%)"))
        lines.append(f"| {row['metric']} | " + " | ".join(cells) + " |")
    devices = sorted({d for d in table["devices"] if d})
    if devices:
        lines += ["", f"Speed and memory measured on: {', '.join(devices)}."]
    return "\n".join(lines) + "\n"


def plot_ca_by_type(runs: list[dict], names: list[str], path: Path) -> Path:
    levels = list(runs[0]["metrics"]["ca_by_type"])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(runs)
    for k, (run, name) in enumerate(zip(runs, names)):
        values = [_get(run, "metrics", "ca_by_type", lv, "ca") or 0.0 for lv in levels]
        ax.bar([x + k * width for x in range(len(levels))], values, width, label=name)
    ax.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(levels))])
    ax.set_xticklabels(levels)
    ax.set_ylabel("computational accuracy [%]")
    ax.set_title("G-TransEval Java→Python: CA per type")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
