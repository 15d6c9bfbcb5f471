"""How closely a model with attention removed (or replaced) follows the intact model, teacher-forced.

On held-out transcripts (the intact model's own answers, :mod:`nose.data.transcripts`), at every
counted next-token position (answer tokens by default): the mean ``KL(p_intact ‖ p_model)`` in
nats per token and the *agreement*, the share of positions where both models' top-1 tokens
agree (for answers the intact model generated greedily, the share of answer tokens the changed
model would also have produced, given the same prefix). It needs no benchmark and no
generation, so it is the yardstick for choosing settings (token counting, variants, ridge
strength, healing) on data of our own; G-TransEval only measures the final choices.

The intact model's log-probs are computed once per batch and compared against every variant,
so k variants cost one intact forward and k changed forwards per batch. The logits head (for a
150k-token vocabulary about a quarter of a 0.5B model's work) runs only at the counted positions.

:func:`same_programs` is the generated counterpart: the changed model answers the held-out
prompts again (greedy, with the transcripts' settings) and the score is the share of answers
that are the same program as the intact model's (equal ASTs). It was meant to be closer to
pass/fail than a mean KL, which weighs every answer token alike; measured on six k = 8 exports
it ranked them no better than the KL, at 3.5 times the cost (reports/repair.md, fifth round).
A score of correctness rather than closeness is :mod:`nose.tasks.java_python.java_tests`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from nose.data.transcripts import TranscriptSettings
from nose.model.loading import LoadedModel
from nose.data.calibration import CalibrationSet
from nose.search.kl import kl_per_position


@torch.no_grad()
def fidelity(lm: LoadedModel, calib: CalibrationSet, variants: dict[str, Callable[[], AbstractContextManager]],
             batch_size: int = 4, progress=None, reference: LoadedModel | None = None) -> dict[str, dict]:
    """Per variant (a name and a function returning the context that changes ``lm``): ``kl``
    [nats/token], ``agreement`` [share of positions] and ``positions``, against ``reference``
    (another model with the same tokenizer, e.g. the intact one beside an exported checkpoint;
    default: ``lm`` itself, unchanged)."""
    sums = {name: {"kl": 0.0, "agree": 0, "n": 0} for name in variants}
    device = lm.device
    intact = reference or lm
    task = progress.add_task("fidelity", total=calib.samples) if progress else None
    for batch in calib.batches(batch_size, "next"):
        ids, att, pos = batch.input_ids.to(device), batch.attention_mask.to(device), batch.positions.to(device)
        ref = torch.log_softmax(intact.adapter.logits_at(intact.model, ids, att, pos).float(), -1)
        top = ref.argmax(-1)
        for name, changed in variants.items():
            with changed():
                logits = lm.adapter.logits_at(lm.model, ids, att, pos)
            sums[name]["kl"] += float(kl_per_position(logits, ref).double().sum())
            sums[name]["agree"] += int((logits.argmax(-1) == top).sum())
            sums[name]["n"] += int(pos.sum())
        if progress:
            progress.advance(task, batch.size)
    return {name: {"kl": s["kl"] / s["n"], "agreement": s["agree"] / s["n"], "positions": s["n"]}
            for name, s in sums.items()}


def program_of(answer: str) -> str:
    """The code of an answer, normalized (``ast.unparse``) so that layout and comments do not count."""
    from nose.tasks.code import extract_code

    code = extract_code(answer)
    try:
        return ast.unparse(ast.parse(code))
    except SyntaxError:
        return code.strip()


@torch.no_grad()
def same_programs(lm: LoadedModel, records: list[dict], variants: dict[str, Callable[[], AbstractContextManager]],
                  settings: TranscriptSettings | None = None, progress=None) -> dict[str, dict]:
    """Per variant: ``same_program``, the share of chat ``records`` (prompt turns, then the intact
    model's answer) whose answer ``lm``, changed by the variant, re-generates greedily as the same
    program; ``programs``; and ``differs``, the names of the others. ``settings``: generation
    length and batch (default: the transcripts' own)."""
    from nose.data.chat import render_chat
    from nose.model.generation import GenerationConfig, generate_transformers

    settings = settings or TranscriptSettings()
    batch_size = settings.batch_size

    prompts = [render_chat(r["messages"][:-1], lm.tokenizer, add_generation_prompt=True) for r in records]
    wanted = [program_of(r["messages"][-1]["content"]) for r in records]
    order = sorted(range(len(records)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    config = GenerationConfig(max_new_tokens=settings.max_new_tokens, batch_size=batch_size)
    results = {}
    for name, changed in variants.items():
        task = progress.add_task(f"regenerate ({name})", total=len(records)) if progress else None
        answers: dict[int, str] = {}
        with changed():
            for k in range(0, len(order), batch_size):
                batch = order[k:k + batch_size]
                for i, (answer,) in zip(batch, generate_transformers(lm.model, lm.tokenizer,
                                                                     [prompts[i] for i in batch], config)):
                    answers[i] = answer
                if progress:
                    progress.advance(task, len(batch))
        differs = [records[i].get("name", str(i)) for i in range(len(records)) if program_of(answers[i]) != wanted[i]]
        results[name] = {"same_program": 1 - len(differs) / len(records), "programs": len(records),
                         "differs": differs}
    return results
