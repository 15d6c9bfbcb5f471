"""``nose evaluate``: generate translations, test them in the sandbox, score, measure, save.

Files in the output folder:

- ``samples.jsonl``: one line per benchmark sample, appended as soon as its batch is tested
  (prompt, raw outputs, extracted code, verdicts, error tails, BLEU, CodeBLEU, seconds, and
  the hash of the settings). A killed run resumes from it: samples already there are not
  generated again. Lines from other settings are refused.
- ``results.json`` (atomic, at the end): metrics, efficiency, model provenance, prompt,
  generation settings, benchmark subset, versions, wall time.

Verdicts: ``passed`` (``All Passed!``), ``wrong`` (ran, some case differs), ``error`` (an
exception or syntax error), ``timeout``, ``no_function`` (no ``def`` to test).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nose.errors import NoseError
from nose.evaluate import efficiency, metrics
from nose.model.generation import GenerationConfig, PromptConfig, generate_transformers, generate_vllm
from nose.sandbox import Isolation, Limits, require_isolation, run_many
from nose.files import NUMBER, atomic_file, check_shape, write_json_atomic
from nose.model.loading import LoadedModel
from nose.model.replacements import describe_all
from nose.model.switches import attention_switched
from nose.provenance import tool, versions
from nose.tasks import JAVA_PYTHON, Task

SAMPLES = "samples.jsonl"
RESULTS = "results.json"
RESULTS_SHAPE = {"metrics": {"samples": int, "ca_percent": NUMBER, "ca_by_type": {}, "bleu": NUMBER,
                             "codebleu": (int, float, type(None))},
                 "settings_hash?": str, "efficiency?": (dict, type(None))}  # what readers of results.json use


@dataclass
class EvalConfig:
    workers: int = 2  # parallel sandboxed test processes
    timeout_s: float = 10.0  # wall-clock limit per test program
    drop_attention: list[int] = field(default_factory=list)  # switched off in memory (no healing)
    mode: str = "skip"  # replacement for dropped attention
    replacements: dict | None = None  # {layer: Replacement} for drop_attention instead of `mode` (a linear fit)
    efficiency: bool = True
    flops_seq_len: int = 512  # tokens for the FLOP count
    prompt_len: int = 256  # prefill latency / decode speed prompt length
    speed_new_tokens: int = 32
    speed_batches: tuple[int, ...] = (1, 8)
    unsafe_no_isolation: bool = False  # run candidates without OS isolation when none works (opt-in)

    def validate(self, num_layers: int) -> None:
        from nose.model.switches import check_layer_indices

        if self.workers < 1:
            raise NoseError(f"--workers must be at least 1, got {self.workers}")
        if self.timeout_s <= 0:
            raise NoseError(f"--timeout must be positive, got {self.timeout_s}")
        check_layer_indices(self.drop_attention, num_layers, what="--drop-attention layer")
        if self.replacements is not None and sorted(self.replacements) != sorted(self.drop_attention):
            raise NoseError("the replacements must be for exactly the --drop-attention layers")

    def switched(self) -> dict | list[int]:
        """What the switch takes: the replacements, or the dropped layers (with ``mode``)."""
        return self.replacements if self.replacements is not None else self.drop_attention


def test_outputs(samples: list, outputs: list[list[str]], limits: Limits, workers: int,
                 isolation: Isolation | None = None, task: Task = JAVA_PYTHON) -> list[dict]:
    """Extract, run and judge every completion; one partial record per sample."""
    jobs, where = [], []
    per_sample = []
    for k, (sample, outs) in enumerate(zip(samples, outputs)):
        codes, entries = [], []
        for j, raw in enumerate(outs):
            code = task.extract(raw)
            entry = task.entry_point(code, sample)
            codes.append(code)
            entries.append(entry)
            if entry is not None:
                jobs.append(task.program(code, entry, sample))
                where.append((k, j))
        per_sample.append({"codes": codes, "entries": entries, "outcomes": [None] * len(outs)})
    for (k, j), outcome in zip(where, run_many(jobs, limits, workers, isolation=isolation)):
        per_sample[k]["outcomes"][j] = outcome
    records = []
    for sample, outs, got in zip(samples, outputs, per_sample):
        verdicts = [task.verdict(o) for o in got["outcomes"]]
        first, reference = got["codes"][0], task.reference(sample)
        try:
            cb = None if reference is None else metrics.codebleu([first], [reference])["codebleu"]
        except Exception:  # codebleu fails on some degenerate inputs; the sample still counts
            cb = None
        records.append({
            "id": sample.id, "type": sample.type, "level": sample.level, "outputs": outs, "codes": got["codes"],
            "entry_points": got["entries"], "verdicts": verdicts, "passed": [v == "passed" for v in verdicts],
            "errors": [(o.stderr.strip().splitlines() or [""])[-1][:300] if o else "no def found"
                       for o in got["outcomes"]],
            "test_seconds": [round(o.seconds, 3) if o else 0.0 for o in got["outcomes"]],
            "bleu": None if reference is None else metrics.sentence_bleu(first, reference), "codebleu": cb})
    return records


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


WHERE_KEYS = ("id", "path", "device")  # where the weights lie and run: not what decides the samples


def run_digests(lm: LoadedModel, samples: list, prompt: PromptConfig, gen: GenerationConfig,
                config: EvalConfig) -> tuple[str, str]:
    """Hashes of everything that decides a run's samples: model weights (by their hash), prompt,
    generation settings, switched-off layers and mode, test timeout and the sample ids.

    The first is written. It leaves out where the weights lie and which device runs them, so a
    moved checkpoint, another cache or another machine reuses a finished run (fp32 greedy outputs
    on CPU and CUDA were identical on 2,144 samples, ``reports/criteria.md``). The second also
    hashes the model's spec and folder, as nose did before; it is accepted so that such runs
    still resume.
    """
    settings = {"prompt": prompt.record(), "generation": asdict(gen), "drop_attention": sorted(config.drop_attention),
                "mode": config.mode, "timeout_s": config.timeout_s, "ids": [s.id for s in samples]}
    if config.replacements is not None:  # only then: digests of earlier runs stay valid
        settings["replacements"] = describe_all(config.replacements)
    model = lm.provenance()
    current = {k: v for k, v in model.items() if k not in WHERE_KEYS}
    return settings_hash(settings | {"model": current}), settings_hash(settings | {"model": model | {"device": None}})


def check_backend(lm: LoadedModel, gen: GenerationConfig, config: EvalConfig) -> None:
    """vLLM loads the model from disk, and its DeciLM (nemotron_nas) builds no linear block."""
    if gen.backend != "vllm":
        return
    if config.drop_attention:
        raise NoseError("--backend vllm loads the model from its files, so in-memory changes (--drop-attention, "
                        "--replace) would be ignored; export them with nose shrink and evaluate the checkpoint")
    blocks = getattr(lm.model.config, "block_configs", None) or []
    linear = [i for i, b in enumerate(blocks) if b["attention"].get("replace_with_linear")]
    if linear:
        raise NoseError(f"vLLM cannot serve this checkpoint: layers {linear} are linear replacements "
                        "(replace_with_linear), which vLLM's nemotron_nas model does not implement; use "
                        "--backend transformers, or llama.cpp")


def read_done(path: Path, digests: tuple[str, ...]) -> dict[str, dict]:
    """Records already in samples.jsonl whose settings hash is one of ``digests`` (any other is an
    error), relabelled with the first; a torn last line (killed mid-write) is dropped."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise NoseError(f"cannot read {path} ({e}); remove it or use --overwrite") from None
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                break
            raise NoseError(f"{path}:{n} is not valid JSON; remove the file or use --overwrite") from None
        check_shape(rec, {"id": str, "settings_hash": str, "passed": [bool]}, f"{path}:{n}")
        if rec["settings_hash"] not in digests:
            raise NoseError(f"{path} was written with other settings (model, prompt, generation or subset); "
                            "use another --out or --overwrite")
        done[rec["id"]] = rec | {"settings_hash": digests[0]}
    with atomic_file(path, sync=True) as f:  # rewrite without a torn tail; a kill meanwhile loses nothing
        f.writelines(json.dumps(r) + "\n" for r in done.values())
    return done


def aggregate(records: list[dict], samples: list, n: int, task: Task = JAVA_PYTHON) -> dict:
    by_id = {r["id"]: r for r in records}
    ordered = [by_id[s.id] for s in samples]
    passed = [sum(r["passed"]) for r in ordered]
    ca = 100.0 * sum(r["passed"][0] for r in ordered) / len(ordered)
    levels = sorted({(s.type, s.level) for s in samples})
    by_type = {}
    for t, level in levels:
        group = [r for r in ordered if r["type"] == t]
        by_type[level] = {"samples": len(group), "ca": 100.0 * sum(r["passed"][0] for r in group) / len(group)}
    scored = [(r["codes"][0], ref) for r, s in zip(ordered, samples) if (ref := task.reference(s)) is not None]
    firsts, refs = [f for f, _ in scored], [r for _, r in scored]
    cb = metrics.codebleu(firsts, refs) if scored else {"codebleu": None}
    out = {"samples": len(ordered), "ca_percent": ca, "ca_by_type": by_type,
           "bleu": metrics.bleu(firsts, refs) if scored else None, "codebleu": cb["codebleu"],
           "codebleu_parts": {k: v for k, v in cb.items() if k != "codebleu"}, "text_metric_samples": len(scored),
           "verdicts": dict(Counter(r["verdicts"][0] for r in ordered)),
           "units": {"ca_percent": "% of samples whose first completion passes its tests",
                     "bleu": "sacreBLEU 0-100 on Python tokens", "codebleu": "CodeBLEU x 100"}}
    if n > 1:
        out["pass_at_k"] = {str(k): 100.0 * sum(metrics.pass_at_k(n, c, k) for c in passed) / len(passed)
                            for k in (1, 5, 10) if k <= n}
    return out


def evaluate(lm: LoadedModel, samples: list, prompt: PromptConfig, gen: GenerationConfig,
             config: EvalConfig, out_dir: Path, benchmark_root: str, progress=None, log=None,
             task: Task = JAVA_PYTHON) -> dict:
    """Generate, test and score ``samples`` of ``task`` into ``out_dir`` (resumable); the results."""
    gen.validate()
    config.validate(lm.num_layers)
    check_backend(lm, gen, config)
    isolation = require_isolation(config.unsafe_no_isolation, log)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digests = run_digests(lm, samples, prompt, gen, config)
    digest = digests[0]
    done = read_done(out_dir / SAMPLES, digests)
    todo = [s for s in samples if s.id not in done]
    resumed = len(samples) - len(todo)
    t0 = time.perf_counter()
    rendered = {s.id: prompt.render(lm.tokenizer, **task.fields(s)) for s in todo}
    todo.sort(key=lambda s: len(rendered[s.id]))  # similar lengths batch with little padding
    limits = Limits(wall_s=config.timeout_s, cpu_s=int(config.timeout_s) + 1)
    bar = progress.add_task("evaluate", total=len(samples), completed=len(done)) if progress else None
    with attention_switched(lm.model, config.switched(), config.mode, adapter=lm.adapter):
        if gen.backend == "vllm" and todo:
            outputs = generate_vllm(lm.source.get("path", lm.spec), [rendered[s.id] for s in todo], gen)
            chunks = [(todo, outputs)]
        else:
            chunks = ((todo[i:i + gen.batch_size], None) for i in range(0, len(todo), gen.batch_size))
        with open(out_dir / SAMPLES, "a", encoding="utf-8") as log:
            for batch, outputs in chunks:
                t_batch = time.perf_counter()
                if outputs is None:
                    outputs = generate_transformers(lm.model, lm.tokenizer, [rendered[s.id] for s in batch], gen,
                                                    answer_start=prompt.answer_start)
                gen_s = (time.perf_counter() - t_batch) / len(batch)
                outputs = [[prompt.answer(o) for o in outs] for outs in outputs]
                for s, rec in zip(batch, test_outputs(batch, outputs, limits, config.workers, isolation, task)):
                    rec.update(prompt=rendered[s.id], generation_seconds=round(gen_s, 3), settings_hash=digest)
                    done[s.id] = rec
                    log.write(json.dumps(rec) + "\n")
                log.flush()
                os.fsync(log.fileno())
                if progress:
                    progress.advance(bar, len(batch))
        eff = efficiency.measure(lm.model, lm.adapter, config.flops_seq_len, config.prompt_len,
                                 config.speed_new_tokens, config.speed_batches) if config.efficiency else None
    results = {"format": "nose.evaluate/1", "model": lm.provenance(),
               "removed_attention": sorted(config.drop_attention), "mode": config.mode,
               "replacements": describe_all(config.replacements) if config.replacements is not None else None,
               "task": task.name,
               "benchmark": {"path": benchmark_root, "samples": len(samples), "ids": [s.id for s in samples]},
               "prompt": prompt.record(), "generation": asdict(gen), "timeout_s": config.timeout_s,
               "sandbox": isolation.describe(), "metrics": aggregate(list(done.values()), samples, gen.n, task), "efficiency": eff,
               "seconds": round(time.perf_counter() - t0, 1), "resumed_samples": resumed, "tool": tool(), "versions": versions(),
               "settings_hash": digest}
    write_json_atomic(out_dir / RESULTS, results)
    return results
