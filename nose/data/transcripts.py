"""Self-distilled transcripts: on-task inputs the project ships, answered by the intact model itself.

Two sources, each a task's corpus put into exactly the chat prompt ``nose evaluate`` uses for
that task and answered greedily by the intact model, with the evaluation's stop rule (a closed
fenced block holding a ``def``):

- ``translate``: the shipped Java methods (:mod:`nose.tasks.java_python.corpus`) in the
  java-python prompt (the method as ``{java}``, its name as ``{name}``, its snake_case form as
  ``{entry_point}``);
- ``complete``: the shipped docstring-to-function problems (:mod:`nose.tasks.humaneval.corpus`)
  in the humaneval prompt.

The transcripts carry the model's own distribution on the task, without labels (self-data
distillation, Thangarasa et al., 2024), so calibration statistics, fits and healing targets stay
on-task. No benchmark is ever used. ``a+b`` mixes sources: the conversations of each, one file.

Cache: ``$NOSE_CACHE/transcripts/<weights sha256[:16]>-<settings hash>/`` (``$NOSE_CACHE``
defaults to ``~/.cache/nose``): ``generated.jsonl`` (one record per method, keyed by the sha256
of its Java, appended and fsynced per batch, so a killed run resumes and a new corpus reuses
every answer already made), ``transcripts.json`` (model, prompt, settings, counts, generation
time and tokens/s) and ``views/`` (the chat JSONL files that data sources read).

Split: a method belongs to the held-out split when the sha256 of its name falls in the first
:data:`HELDOUT_PERCENT` % (stable when the corpus grows). Calibration and healing read the
``train`` split; settings are chosen on ``heldout``. Answers whose Python does not parse are
kept in the cache but left out of both splits (``transcripts.json`` counts them).

Data sources (``--calibration`` / ``--data``): ``translate`` (the shipped corpus, train split),
``translate:heldout``, ``translate:PATH`` and ``translate:PATH:heldout`` (a JSONL of methods, e.g.
from ``nose data harvest``); ``complete`` and ``complete:heldout`` (``complete:PATH``: problems
in HumanEval's format); ``translate+complete`` (both train splits; ``heldout`` validation: both
held-out splits).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from typing import Callable

from nose.tasks.java_python.corpus import JavaMethod, load_methods, methods_sha256
from nose.tasks.java_python.extraction import snake_case
from nose.tasks.java_python.prompt import PROMPT
from nose.errors import NoseError
from nose.files import atomic_file, write_json_atomic

HELDOUT_PERCENT = 20
SPLITS = ("train", "heldout")
PREFIX = "translate"
MIX = "+"
# What ``auto`` fits and heals on: the transcripts of both shipped corpora. Chosen on held-out
# transcripts (reports/tasks.md, k = 6 linear, 220 docstring problems): the mixed fit follows the
# intact model as closely on held-out Java translations as a fit on translations alone (0.0180
# against 0.0171 nats per answer token) and 2.7 times as closely on held-out docstring problems
# (0.025 against 0.068).
FIT_DATA = PREFIX + MIX + "complete"


@dataclass(frozen=True)
class TranscriptSettings:
    max_new_tokens: int = 384  # the intact model's answers on G-TransEval stay under 300 tokens
    batch_size: int = 16  # prompts per generation batch


def fields(method: JavaMethod) -> dict[str, str]:
    """The prompt's fields for a shipped method, as the benchmark's samples fill them."""
    return {"java": method.java, "name": method.name, "entry_point": snake_case(method.name)}


@dataclass(frozen=True)
class Source:
    """One kind of transcript: a task's shipped inputs (each with ``sha256`` and ``name``) and
    the prompt they are answered in."""
    prefix: str
    load: Callable  # (path or None: the shipped corpus) -> inputs
    prompt: Callable  # () -> the task's PromptConfig
    fields: Callable  # input -> the prompt's fields
    key: str  # the record field holding an input's sha256


def _humaneval():
    from nose.tasks import HUMANEVAL

    return HUMANEVAL


SOURCES = {
    PREFIX: Source(PREFIX, load_methods, lambda: PROMPT, fields, "java_sha256"),
    "complete": Source("complete", lambda path=None: _humaneval().corpus(path), lambda: _humaneval().prompt,
                       lambda p: _humaneval().fields(p), "prompt_sha256"),
}


def split_of(name: str) -> str:
    bucket = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 100
    return "heldout" if bucket < HELDOUT_PERCENT else "train"


def answer_parses(answer: str) -> bool:
    from nose.tasks.code import extract_code

    try:
        ast.parse(extract_code(answer))
        return True
    except SyntaxError:
        return False


def cache_folder(weights_sha256: str, settings: TranscriptSettings, prompt) -> Path:
    from nose.model.presets import cache_root

    key = hashlib.sha256(json.dumps({"format": 1, "settings": asdict(settings), "prompt": prompt.record()},
                                    sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "transcripts" / f"{weights_sha256[:16]}-{key}"


def read_appended(path: Path, key: str) -> dict[str, dict]:
    """The records of a JSONL that a resumable run appends to, by their ``key`` field; a line
    torn by a killed run is skipped (its record is made again)."""
    done: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from a killed run
                continue
            done[rec[key]] = rec
    return done


@dataclass
class Transcripts:
    folder: Path
    records: list[dict]  # one per requested method, in corpus order

    def usable(self, split: str) -> list[dict]:
        return [r for r in self.records if r["split"] == split and r["parses"]]

    def write_split(self, split: str, corpus_sha256: str) -> Path:
        """The chat JSONL of one split (records that parse), under ``views/``; returns its path."""
        if split not in SPLITS:
            raise NoseError(f"unknown transcript split {split!r}; choose train or heldout")
        path = self.folder / "views" / f"{corpus_sha256[:12]}-{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            for r in self.usable(split):
                f.write(json.dumps({"messages": r["messages"], "name": r["name"]}) + "\n")
        return path

    def summary(self) -> dict:
        return {"methods": len(self.records), "parses": sum(r["parses"] for r in self.records),
                "dropped": sum(not r["parses"] for r in self.records),
                "train": len(self.usable("train")), "heldout": len(self.usable("heldout")),
                "answer_tokens": sum(r["answer_tokens"] for r in self.records)}


def answer_methods(lm, methods: list, path: Path, settings: TranscriptSettings = TranscriptSettings(),
                   prompt=None, progress=None, label: str = "answers",
                   source: Source = SOURCES[PREFIX]) -> tuple[dict[str, dict], float]:
    """Answer every input of ``source`` (a Java method by default) whose record is not yet in the
    JSONL ``path`` with ``lm`` as it is (an exported or changed model too), greedily, appending
    one record per input (keyed by its sha256; fsynced per batch, so a killed run resumes).
    Returns every record in ``path`` by that key, and the seconds this call spent generating."""
    from nose.model.generation import GenerationConfig, generate_transformers

    prompt = prompt or source.prompt()
    fields = source.fields
    done = read_appended(path, source.key)
    todo = [m for m in dict((m.sha256, m) for m in methods).values() if m.sha256 not in done]
    seconds = 0.0
    if not todo:
        return done, seconds
    rendered = {m.sha256: prompt.render(lm.tokenizer, **fields(m)) for m in todo}
    todo.sort(key=lambda m: len(rendered[m.sha256]))  # similar lengths share a batch
    gen = GenerationConfig(max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size)
    task = progress.add_task(label, total=len(todo)) if progress else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for k in range(0, len(todo), settings.batch_size):
            batch = todo[k:k + settings.batch_size]
            t0 = time.perf_counter()
            outputs = generate_transformers(lm.model, lm.tokenizer, [rendered[m.sha256] for m in batch], gen,
                                            answer_start=prompt.answer_start)
            seconds += time.perf_counter() - t0
            for m, (generated,) in zip(batch, outputs):
                answer = prompt.answer(generated)  # what parses is the whole answer, the opened fence too
                rec = {source.key: m.sha256, "name": m.name, "split": split_of(m.name),
                       "messages": prompt.messages(**fields(m)) + [{"role": "assistant", "content": answer}],
                       "parses": answer_parses(answer),
                       "answer_tokens": len(lm.tokenizer(generated, add_special_tokens=False)["input_ids"])}
                done[m.sha256] = rec
                f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
            if progress:
                progress.advance(task, len(batch))
    return done, seconds


def generate_transcripts(lm, methods: list, settings: TranscriptSettings = TranscriptSettings(),
                         prompt=None, progress=None, log=lambda msg: None,
                         source: Source = SOURCES[PREFIX]) -> Transcripts:
    """Answer every input not yet in the cache with the intact model; return all their records."""
    prompt = prompt or source.prompt()
    if lm.absent_attention():
        raise NoseError("transcripts come from the intact model; this one has attention removed or switched off")
    folder = cache_folder(lm.weights_sha256, settings, prompt)
    folder.mkdir(parents=True, exist_ok=True)
    generated = folder / "generated.jsonl"
    meta_path = folder / "transcripts.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"generation_seconds": 0.0}
    missing = len({m.sha256 for m in methods} - set(read_appended(generated, source.key)))
    if missing:
        log(f"generating {missing} {source.prefix} transcripts with the intact model (cache: {folder})")
    done, seconds = answer_methods(lm, methods, generated, settings, prompt, progress, label="transcripts",
                                   source=source)
    meta["generation_seconds"] += seconds
    records = [done[m.sha256] for m in methods]
    answer_tokens = sum(r["answer_tokens"] for r in done.values())
    meta.update({"format": "nose.transcripts/1", "model": lm.provenance(), "prompt": prompt.record(),
                 "settings": asdict(settings), "generated": len(done),
                 "dropped_unparsable": sum(not r["parses"] for r in done.values()), "answer_tokens": answer_tokens,
                 "answer_tokens_per_second": round(answer_tokens / meta["generation_seconds"], 2)
                 if meta["generation_seconds"] else None})
    write_json_atomic(meta_path, meta)
    return Transcripts(folder, records)


def source_of(spec: str) -> Source | None:
    """The transcript source a spec names (``translate``, ``complete``, with ``:PATH``/``:split``), or None."""
    return next((src for prefix, src in SOURCES.items() if spec == prefix or spec.startswith(prefix + ":")), None)


def is_transcript_source(spec: str) -> bool:
    """A transcript source, or a mix of them (``translate+complete``)."""
    return all(source_of(part) for part in spec.split(MIX))


def parse_source(spec: str) -> tuple[str | None, str]:
    """``translate[:PATH][:heldout|:train]`` (or ``complete…``) -> (inputs file or None for the
    shipped corpus, split)."""
    rest = spec[len(source_of(spec).prefix):].lstrip(":")
    split = "train"
    for name in SPLITS:
        if rest == name or rest.endswith(":" + name):
            split, rest = name, rest[:-len(name)].rstrip(":")
    return (rest or None), split


def heldout_of(spec: str) -> str:
    """The held-out counterpart of a transcript source or mix (for validation during healing)."""
    if MIX in spec:
        return MIX.join(heldout_of(part) for part in spec.split(MIX))
    path, split = parse_source(spec)
    prefix = source_of(spec).prefix
    if split == "heldout":
        raise NoseError(f"{spec} is the held-out split; train on the train split ({prefix}"
                        f"{':' + path if path else ''}) so that validation stays held out")
    return prefix + (f":{path}" if path else "") + ":heldout"


def data_source(spec: str, tokenizer, transcripts: str = PREFIX) -> str:
    """``auto``: self-distilled transcripts (``transcripts``: ``translate`` for a search's
    calibration, :data:`FIT_DATA` for fits and healing) when the model has a chat template to
    answer them with, the standard library otherwise; decided by what the model is, never by its
    name. Any other spec is returned as it is."""
    if spec != "auto":
        return spec
    return transcripts if getattr(tokenizer, "chat_template", None) else "stdlib"


def resolve_source(spec: str, lm, settings: TranscriptSettings = TranscriptSettings(), progress=None,
                   log=lambda msg: None, needed: int | None = None) -> str:
    """A chat JSONL path for a ``translate`` data source (generating what is missing); any other
    source is returned as it is.

    ``needed``: only that many usable transcripts of the split are wanted (a search's calibration
    rows): the split's methods are answered in corpus order, a generation batch at a time, until
    that many parse, so the rows are the first ones the whole corpus would give, at a fraction of
    its generation time (every answer is cached and reused by a later full run)."""
    if not is_transcript_source(spec):
        return spec
    if MIX in spec:
        return _mixed([resolve_source(part, lm, settings, progress, log) for part in spec.split(MIX)])
    path, split = parse_source(spec)
    source = source_of(spec)
    methods = source.load(path)
    if needed is None:
        transcripts = generate_transcripts(lm, methods, settings, progress=progress, log=log, source=source)
    else:
        in_split = [m for m in methods if split_of(m.name) == split]
        for end in range(settings.batch_size, len(in_split) + settings.batch_size, settings.batch_size):
            methods = in_split[:end]
            transcripts = generate_transcripts(lm, methods, settings, progress=progress, log=log, source=source)
            if len(transcripts.usable(split)) >= needed:
                break
    summary = transcripts.summary()
    log(f"{source.prefix} transcripts: {summary['methods']} inputs, {summary['dropped']} answers dropped (Python "
        f"does not parse), {summary['train']} train / {summary['heldout']} held out")
    if not transcripts.usable(split):
        raise NoseError(f"the {split} split of {spec} holds no usable transcript")
    return str(transcripts.write_split(split, methods_sha256(methods)))


def _mixed(paths: list[str]) -> str:
    """One chat JSONL holding the conversations of every file, in order (cached by content)."""
    from nose.model.presets import cache_root

    text = "".join(Path(p).read_text(encoding="utf-8") for p in paths)
    path = cache_root() / "transcripts" / "mixes" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            f.write(text)
    return str(path)
