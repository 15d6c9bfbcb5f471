"""The interface every task declares (see :mod:`nose.tasks`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nose.errors import NoseError
from nose.model.generation import PromptConfig


@dataclass(frozen=True)
class Task:
    name: str
    summary: str
    root: Callable  # (path or None: the task's default) -> the benchmark's root, or a one-line error
    load: Callable  # (root) -> [sample]: the benchmark's samples
    select: Callable  # (samples, ids, limit, stratified) -> [sample]: a subset
    prompt: PromptConfig  # what the model is asked: the template its fields fill, the system message
    fields: Callable  # (sample) -> {placeholder: value} for the prompt template
    extract: Callable  # (answer text) -> the code in it
    entry_point: Callable  # (code, sample) -> the function to test, or None (no_function)
    program: Callable  # (code, entry point, sample) -> the sandbox program that tests it
    verdict: Callable  # (sandbox Outcome or None) -> passed | wrong | error | timeout | no_function
    reference: Callable  # (sample) -> the reference answer's code (BLEU, CodeBLEU), or None: no text metrics
    corpus: Callable  # (path or None) -> on-task inputs the project ships (or the user's file)
    overlap: Callable  # (corpus, samples) -> the corpus items too close to benchmark samples


def by_ids(items: list, ids: list[str], unknown: str) -> list:
    """The items named by ``ids`` (their ``id``), in that order; a one-line error, ``unknown``
    with the ids no item has in its ``{}``, otherwise."""
    known = {item.id: item for item in items}
    missing = [i for i in ids if i not in known]
    if missing:
        raise NoseError(unknown.format(", ".join(missing)))
    return [known[i] for i in ids]
