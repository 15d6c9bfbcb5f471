"""Fit data several times the shipped corpus: Java methods written by the intact model itself.

Two steps, both by the intact model (self-instruct; data generation, counted apart from the
repair's budget):

1. *Names.* For each category of the shipped corpus, the model is shown four names of the
   category's *training* methods (never a held-out one) and asked for 25 more names of small
   exercises (sampled: temperature 0.8, top-p 0.95, ``--rounds`` lists per category). Names
   already in the shipped corpus or among G-TransEval's entry points are dropped.
2. *Methods.* For each new name (at most ``--limit``, shuffled) the model writes the method
   greedily; an answer counts when its code block holds a ``public static`` method of that name,
   3 to 40 lines, with balanced braces.

Methods that ``nose.data.overlap`` flags against G-TransEval or the shipped held-out methods (a
shared name or BLEU-4 > 0.5) are dropped; the rest are translated like every transcript
(``generate_transcripts``) and those whose answers parse are written, after the 198 shipped
training transcripts, to a chat JSONL for ``nose shrink --data`` (reports/repair.md, "k = 8,
seventh round"). The held-out split stays the shipped 40, so held-out scores stay comparable.
``--min-lines`` and ``--categories`` keep a subset of the methods (after ``methods.jsonl``, which
lists them all).

    python benchmarks/synthetic_fit_data.py --benchmark <G-TransEval clone> --work runs/synth
        # names.jsonl, methods-raw.jsonl, methods.jsonl, fit-data.jsonl, fit-data.counts.json
    python benchmarks/synthetic_fit_data.py --benchmark <G-TransEval clone> --work runs/synth --min-lines 6 \
        --categories strings,arrays,math,collections,maps,recursion,streams --out runs/synth/fit-data-algo.jsonl

Resumable: answers are appended per batch to ``names.jsonl`` and ``methods-raw.jsonl``; the
translations are cached like every transcript.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.extra_fit_data import clear_of, write_fit_data  # noqa: E402
from nose.data.corpus import JavaMethod, load_methods, write_methods  # noqa: E402
from nose.data.overlap import normalized_name  # noqa: E402
from nose.data.transcripts import generate_transcripts, read_appended, split_of  # noqa: E402
from nose.evaluate.benchmark import load_benchmark  # noqa: E402
from nose.evaluate.generation import GenerationConfig, generate_transformers  # noqa: E402
from nose.model.loading import load_model  # noqa: E402

SYSTEM = "You are an expert Java programmer."
NAMES = ("Small programming exercises about {category} have method names like {examples}. List 25 more such "
         "method names, each for a different small task. Numbered camelCase names only, one per line, no other "
         "text.")
WRITE = ("Write a short standalone Java method named `{name}` ({category}). It must be `public static`, 5 to 25 "
         "lines, and compile on its own inside a class that imports java.util.*, java.util.stream.* and "
         "java.time.*. Reply with the method only, in one ```java block.")
_NAME = re.compile(r"^\W*\d+\.\s*\W*\d*([A-Za-z][a-z0-9]*[A-Z][A-Za-z]*)")  # "3. 03FindMax" -> FindMax
_CLOSED_BLOCK = re.compile(r"```[^\n]*\n(?:(?!```).)*```", re.S)
_BLOCK = re.compile(r"```(?:java)?\n(.*?)```", re.S)
_HEADER = re.compile(r"^([ \t]*)public\s+static\s+[\w<>\[\],.? ]+?\s+(\w+)\s*\([^)]*\)[^{;]*\{", re.M)


def extract_methods(text: str) -> list[JavaMethod]:
    """Every ``public static`` method of an answer's first code block (inside a class or not),
    dedented; ``main``, unbalanced braces and methods outside 3..40 lines are left out."""
    block = _BLOCK.search(text)
    if not block:
        return []
    code, methods = block.group(1), []
    for header in _HEADER.finditer(code):
        depth, end = 0, None
        for i in range(header.end() - 1, len(code)):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            if depth == 0:
                end = i + 1
                break
        if end is None:
            continue
        indent = len(header.group(1))
        lines = [line[indent:] if not line[:indent].strip() else line.lstrip()
                 for line in code[header.start():end].splitlines()]
        if header.group(2) != "main" and 3 <= len(lines) <= 40:
            methods.append(JavaMethod(header.group(2), "\n".join(lines)))
    return methods


def _answer(lm, prompts: list[tuple[str, str]], raw: Path, gen: GenerationConfig, label: str,
            prefill: str = "") -> dict[str, str]:
    """Answers to (key, user text) prompts, each begun with ``prefill``; appended per batch to
    ``raw`` and read back from it."""
    done = {k: rec["answer"] for k, rec in read_appended(raw, "key").items()}
    todo = [(k, t) for k, t in prompts if k not in done]
    with open(raw, "a", encoding="utf-8") as f:
        for start in range(0, len(todo), gen.batch_size):
            batch = todo[start:start + gen.batch_size]
            t0 = time.perf_counter()
            rendered = [lm.tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM},
                                                          {"role": "user", "content": text}],
                                                         tokenize=False, add_generation_prompt=True) + prefill
                        for _, text in batch]
            gen.seed += 1  # a new sampling seed per batch (ignored when greedy)
            for (key, _), (answer,) in zip(batch, generate_transformers(lm.model, lm.tokenizer, rendered, gen,
                                                                        stop_pattern=_CLOSED_BLOCK)):
                done[key] = answer = prefill + answer
                f.write(json.dumps({"key": key, "answer": answer}) + "\n")
            f.flush()
            print(f"{label}: {len(done)}/{len(prompts)} ({time.perf_counter() - t0:.0f} s for the last batch)",
                  flush=True)
    return {k: done[k] for k, _ in prompts}


def propose_names(lm, train: list[JavaMethod], rounds: int, work: Path, taken: set[str]) -> list[tuple[str, str]]:
    """(name, category) pairs the model proposes (sampled; four training methods' names of the
    category as examples), new to ``taken`` (normalized names)."""
    categories = sorted({m.category for m in train})
    prompts = []
    for r in range(rounds):
        for c in categories:
            pool = [m.name for m in train if m.category == c]
            examples = random.Random(f"{c}:{r}").sample(pool, min(4, len(pool)))
            prompts.append((f"{c}:{r}", NAMES.format(category=c, examples=", ".join(examples))))
    answers = _answer(lm, prompts, work / "names.jsonl", GenerationConfig(
        max_new_tokens=200, temperature=0.8, top_p=0.95, batch_size=32, stop_at_code=False), "names",
        prefill="1. ")
    out = []
    for key, answer in answers.items():
        for line in answer.splitlines():
            found = _NAME.match(line)
            name = found.group(1)[0].lower() + found.group(1)[1:] if found else ""
            if name and normalized_name(name) not in taken:
                taken.add(normalized_name(name))
                out.append((name, key.split(":")[0]))
    return out


def write_methods_for(lm, names: list[tuple[str, str]], work: Path, batch_size: int) -> list[JavaMethod]:
    """The model's method for each proposed name (greedy); answers without exactly that method are dropped."""
    answers = _answer(lm, [(f"{n}:{c}", WRITE.format(name=n, category=c)) for n, c in names],
                      work / "methods-raw.jsonl", GenerationConfig(max_new_tokens=320, batch_size=batch_size),
                      "methods")
    methods = []
    for (name, category), answer in zip(names, answers.values()):
        match = [m for m in extract_methods(answer) if m.name == name]
        if match:
            methods.append(JavaMethod(name, match[0].java, category, "synthetic"))
    return methods


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--benchmark", type=Path, required=True, help="G-TransEval clone (overlap check)")
    ap.add_argument("--rounds", type=int, default=3, help="name lists asked per category")
    ap.add_argument("--limit", type=int, default=320, help="at most this many new names get a method")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--min-lines", type=int, default=3, help="keep only methods of at least this many lines")
    ap.add_argument("--categories", default="", help="keep only these categories (comma-separated; default all)")
    ap.add_argument("--out", type=Path, help="the fit data (default: <work>/fit-data.jsonl)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    lm = load_model(args.model)
    shipped = load_methods()
    samples = load_benchmark(args.benchmark)
    taken = {normalized_name(m.name) for m in shipped}
    taken |= {normalized_name(e) for s in samples for e in (s.java_entry_point, s.python_entry_point)}
    names = propose_names(lm, [m for m in shipped if split_of(m.name) == "train"], args.rounds, args.work, taken)
    random.Random(0).shuffle(names)
    written = write_methods_for(lm, names[:args.limit], args.work, args.batch_size)
    kept = clear_of(written, shipped, samples)
    counts = {"names_proposed": len(names), "methods_asked": min(len(names), args.limit),
              "methods_written": len(written), "kept_after_overlap": len(kept)}
    write_methods(kept, args.work / "methods.jsonl")
    categories = set(filter(None, args.categories.split(",")))
    kept = [m for m in kept
            if m.java.count("\n") + 1 >= args.min_lines and (not categories or m.category in categories)]
    counts["kept_after_filter"] = len(kept)
    transcripts = [r for r in generate_transcripts(lm, kept, log=print).records if r["parses"]]
    counts["translations_parse"] = len(transcripts)
    out = args.out or args.work / "fit-data.jsonl"
    counts["fit_rows"] = write_fit_data(lm, transcripts, out)
    out.with_suffix(".counts.json").write_text(json.dumps(counts, indent=1) + "\n")
    print(json.dumps(counts), "->", out)


if __name__ == "__main__":
    main()
