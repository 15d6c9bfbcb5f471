"""``nose sweep``: benchmark quality against the number k of attention sublayers removed.

For each order (a ``search.json`` of any criterion, read forward or reverse) and each k, the
first k layers of the order are switched off in memory (no healing) and the model is evaluated
with :func:`nose.evaluate.run.evaluate`. The intact model (k = 0) is the shared baseline.

Files in the output folder:

- ``evals/<mode>-<layers>/``: one ``nose evaluate`` folder per distinct set of switched-off
  layers (``skip-none`` for the intact model, ``skip-16-21`` ...; ``linear-16-21`` when each
  removed attention is replaced by a linear map fitted for that set, ``--replace linear``).
  Orders that share a set at some k share its evaluation. A folder whose ``results.json`` has the current settings hash is
  reused as it is; an interrupted one resumes from its ``samples.jsonl``.
- ``sweep.json`` (``format: nose.sweep/1``, rewritten after every evaluation): the orders, the
  settings, ``evals`` (per layer set: metrics, cost, and ``passed``, each sample's pass/fail,
  for paired comparisons) and one row per (order, k): the layers, CA, BLEU, CodeBLEU, CA per
  type, parameters and FLOPs of one forward at ``flops_seq_len`` tokens (analytic count, see
  :func:`nose.evaluate.efficiency.macs_analytic`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from nose.errors import NoseError
from nose.evaluate import efficiency
from nose.tasks import JAVA_PYTHON, Task
from nose.model.generation import GenerationConfig, PromptConfig
from nose.evaluate.run import RESULTS, RESULTS_SHAPE, SAMPLES, EvalConfig, evaluate, run_digests
from nose.files import read_json_file, write_json_atomic
from nose.model.loading import LoadedModel
from nose.model.switches import attention_switched
from nose.provenance import tool, versions
from nose.search.record import read_record

FORMAT = "nose.sweep/1"
FILENAME = "sweep.json"


@dataclass(frozen=True)
class Order:
    """A removal order read from a ``search.json``."""

    label: str
    path: str
    reverse: bool
    criterion: str
    layers: tuple[int, ...]
    weights_sha256: str

    @classmethod
    def parse(cls, spec: str) -> "Order":
        """``[label=]path[:reverse]``; the path is a ``search.json`` or a folder holding one."""
        label, _, rest = spec.rpartition("=")  # no "=": label ""
        reverse = rest.endswith(":reverse")
        path = rest.removesuffix(":reverse")
        if not path:
            raise NoseError(f"order {spec!r} names no search.json; use [label=]path[:reverse]")
        record = read_record(Path(path))
        s = record["settings"]
        layers = tuple(record["order"][::-1] if reverse else record["order"])
        if not layers:
            raise NoseError(f"{path} holds no selected layers yet; finish the search first")
        default = s["criterion"] + (f" seed {s['seed']}" if s["criterion"] == "random" else "")
        return cls(label or default + (" reverse" if reverse else ""), path, reverse, s["criterion"], layers,
                   record["model"]["weights_sha256"])


def eval_name(layers, mode: str) -> str:
    return f"{mode}-" + ("-".join(str(i) for i in sorted(layers)) if layers else "none")


def check_sweep(orders: list[Order], ks: list[int], weights_sha256: str | None = None) -> list[int]:
    """Sorted distinct k with 0 first; a clear error for a k an order cannot give, or an order
    searched on other weights than ``weights_sha256`` (when given)."""
    if not orders:
        raise NoseError("pass at least one order: --criteria path/to/search.json[,...]")
    labels = [o.label for o in orders]
    if len(set(labels)) != len(labels):
        raise NoseError(f"two orders share a label ({labels}); name them with label=path")
    if not ks or any(k < 1 for k in ks):
        raise NoseError(f"--k must list positive layer counts, e.g. 1,2,3,6; got {ks}")
    for o in orders:
        if weights_sha256 and o.weights_sha256 != weights_sha256:
            raise NoseError(f"{o.path} was searched on other weights ({o.weights_sha256[:12]}) than "
                            f"--model ({weights_sha256[:12]}); sweep the model the order was made for")
        if max(ks) > len(o.layers):
            raise NoseError(f"k={max(ks)} is larger than the {len(o.layers)} layers in the order of "
                            f"{o.label} ({o.path}); extend it with nose search --steps {max(ks)} --resume")
    return [0] + sorted(set(ks))


def cost(lm: LoadedModel, switched, mode: str, seq_len: int) -> dict:
    """Parameters, analytic FLOPs and KV bytes with ``switched`` (layers with ``mode``, or replacements)."""
    with attention_switched(lm.model, switched, mode, adapter=lm.adapter):
        params = efficiency.parameter_counts(lm.model, lm.adapter)
        macs = efficiency.macs_analytic(lm.model, lm.adapter, seq_len)
        kv = efficiency.kv_cache_bytes_per_token(lm.model, lm.adapter)
    return {"parameters": params["parameters"], "attention_parameters": params["attention_parameters"],
            "replacement_parameters": params["replacement_parameters"],
            "flops": 2 * macs, "flops_seq_len": seq_len, "kv_cache_bytes_per_token": kv}


def finished(lm: LoadedModel, samples: list, prompt: PromptConfig, gen: GenerationConfig,
             config: EvalConfig, out_dir: Path) -> dict | None:
    """The results in ``out_dir`` if they are complete and made with exactly these settings."""
    done = out_dir / RESULTS
    if done.exists():
        results = read_json_file(done, RESULTS, "nose.evaluate/1", "nose evaluate", RESULTS_SHAPE)
        if results.get("settings_hash") in run_digests(lm, samples, prompt, gen, config):
            return results
    return None


def sweep(lm: LoadedModel, orders: list[Order], ks: list[int], samples: list, prompt: PromptConfig,
          gen: GenerationConfig, config: EvalConfig, out_dir: Path, benchmark_root: str, progress=None,
          log=lambda msg: None, collect_only: bool = False, fitter=None, task: Task = JAVA_PYTHON) -> dict:
    """Evaluate every (order, k); returns the ``sweep.json`` record.

    ``collect_only``: run nothing; tabulate the finished evaluations and list the others in
    ``missing`` (to look at a sweep that another process is still running).
    ``fitter``: ``layers -> {layer: Replacement}`` (a linear fit per layer set) instead of ``mode``;
    with it even ``collect_only`` fits, since the fitted weights are part of each evaluation's key.
    """
    kind = "linear" if fitter is not None else config.mode
    ks = check_sweep(orders, ks, lm.weights_sha256)
    out_dir = Path(out_dir)
    sets: dict[tuple[int, ...], None] = {}  # distinct layer sets in first-needed order
    for k in ks:
        for o in orders:
            sets.setdefault(tuple(sorted(o.layers[:k])), None)
    record = {"format": FORMAT, "tool": tool(), "task": task.name,
              "model": lm.provenance(), "benchmark": {"path": benchmark_root, "samples": len(samples),
                                                      "ids": [s.id for s in samples]},
              "mode": kind, "k": ks,
              "orders": [{"label": o.label, "path": o.path, "reverse": o.reverse, "criterion": o.criterion,
                          "layers": list(o.layers)} for o in orders],
              "prompt": prompt.record(), "generation": asdict(gen), "timeout_s": config.timeout_s,
              "evals": {}, "rows": [], "missing": [], "complete": False, "versions": versions()}
    bar = progress.add_task("sweep", total=len(sets)) if progress else None
    for layers in sets:
        name = eval_name(layers, kind if layers else config.mode)  # the intact model is shared
        t0 = time.perf_counter()
        set_config = replace(config, drop_attention=sorted(layers), efficiency=False,
                             replacements=fitter(sorted(layers)) if fitter is not None and layers else None)
        results = finished(lm, samples, prompt, gen, set_config, out_dir / "evals" / name)
        reused = results is not None
        if results is None and collect_only:
            record["missing"].append(name)
            continue
        if results is None:
            results = evaluate(lm, samples, prompt, gen, set_config, out_dir / "evals" / name, benchmark_root,
                               progress, log, task)
        m = results["metrics"]
        record["evals"][name] = {"layers": list(layers), "ca_percent": m["ca_percent"], "bleu": m["bleu"],
                                 "codebleu": m["codebleu"],
                                 "ca_by_type": {t: v["ca"] for t, v in m["ca_by_type"].items()},
                                 "verdicts": m["verdicts"], "passed": passed_by_id(out_dir / "evals" / name),
                                 **cost(lm, set_config.switched(), config.mode, config.flops_seq_len)}
        text = "" if m["bleu"] is None else f", BLEU {m['bleu']:.1f}, CodeBLEU {m['codebleu']:.1f}"
        log(f"{name}: CA {m['ca_percent']:.1f} %{text}"
            + (" (reused)" if reused else f" ({time.perf_counter() - t0:.0f} s)"))
        record["rows"] = _rows(orders, ks, record["evals"], kind, config.mode)
        write_json_atomic(out_dir / FILENAME, record)
        if progress:
            progress.advance(bar)
    record["complete"] = not record["missing"]
    write_json_atomic(out_dir / FILENAME, record)
    return record


def passed_by_id(eval_dir: Path) -> dict[str, bool]:
    """Whether each sample's first completion passed, from an evaluation's ``samples.jsonl``."""
    lines = (eval_dir / SAMPLES).read_text(encoding="utf-8").splitlines()
    return {rec["id"]: bool(rec["passed"][0]) for rec in map(json.loads, lines)}


def _rows(orders: list[Order], ks: list[int], evals: dict, kind: str, mode: str) -> list[dict]:
    rows = []
    for o in orders:
        for k in ks:
            name = eval_name(o.layers[:k], kind if k else mode)
            if name in evals:
                rows.append({"order": o.label, "k": k, "layers": list(o.layers[:k]), "eval": name,
                             **{key: v for key, v in evals[name].items() if key not in ("layers", "passed")}})
    return rows


def read_sweep(path: Path) -> dict:
    return read_json_file(path, FILENAME, FORMAT, "nose sweep", {"orders": [{"label": str, "criterion": str}],
                                                                  "rows": [dict]})
