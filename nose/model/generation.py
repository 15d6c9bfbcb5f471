"""Prompts and generation backends.

A prompt is a task's (:class:`PromptConfig`: a user-message template filled with the task's
fields, an optional system message, and the cue that ends a plain-text prompt; each task
declares its own, see :mod:`nose.tasks`). Models with a chat template get it as one user message
(plus the system message, if set); others get the plain text followed by the cue.

Backends: ``transformers`` (default: batched, left padding, greedy unless a temperature is
given, ``n`` samples per prompt for pass@k; a completion ends once it has closed a fenced
block that holds a ``def``, see :class:`CodeBlockClosed`) and ``vllm`` (optional extra, GPU;
it runs to the token limit or end of sequence).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from nose.errors import NoseError
from nose.files import read_text

@dataclass(frozen=True)
class PromptConfig:
    template: str  # the user message, with {field} placeholders for the task's fields
    system: str | None = None  # None: no system message
    cue: str = ""  # ends a plain-text prompt (models without a chat template)
    required: str = ""  # the placeholder a template file must hold
    answer_start: str = ""  # the assistant turn begins with it (EvalPlus's response prefix); part of the answer

    def with_file(self, path: Path | None, system: str | None) -> "PromptConfig":
        """This prompt with the template read from ``path`` (when given) and ``system`` as the
        system message (None: no system message)."""
        if path is None:
            return replace(self, system=system)
        text = read_text(path, "a prompt template")
        if self.required and "{" + self.required + "}" not in text:
            raise NoseError(f"prompt template {path} has no {{{self.required}}} placeholder")
        return replace(self, template=text, system=system)

    def record(self) -> dict:
        """What results, digests and cache keys record of the prompt: the template and the system
        message, as they always have (the cue and placeholder are the task's constants)."""
        return {"template": self.template, "system": self.system} | \
            ({"answer_start": self.answer_start} if self.answer_start else {})

    def messages(self, **fields: str) -> list[dict]:
        """The chat turns before the answer: the system message (if any) and the user message."""
        user = self.template.format(**fields)
        return ([{"role": "system", "content": self.system}] if self.system else []) + \
            [{"role": "user", "content": user}]

    def render(self, tokenizer, **fields: str) -> str:
        """The text the model continues: the chat turns and the opened assistant turn, which starts
        with ``answer_start``."""
        messages = self.messages(**fields)
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + \
                self.answer_start
        return (f"{self.system}\n\n" if self.system else "") + messages[-1]["content"] + self.cue + self.answer_start

    def answer(self, generated: str) -> str:
        """The whole answer: what the assistant turn started with, then what the model generated."""
        return self.answer_start + generated


@dataclass
class GenerationConfig:
    max_new_tokens: int = 512
    n: int = 1  # completions per prompt (pass@k needs n > 1)
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 0.95  # only when sampling
    batch_size: int = 8
    seed: int = 0
    backend: str = "transformers"  # or vllm
    stop_at_code: bool = True  # end a completion once it has closed a fenced block holding a def

    def validate(self) -> None:
        if self.n < 1:
            raise NoseError(f"--n must be at least 1, got {self.n}")
        if self.n > 1 and self.temperature <= 0:
            raise NoseError("--n > 1 needs sampling: set --temperature above 0 (e.g. 0.8)")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise NoseError("--max-new-tokens and --batch-size must be at least 1")
        if self.backend not in ("transformers", "vllm"):
            raise NoseError(f"unknown backend {self.backend!r}; choose transformers or vllm")


_CLOSED_DEF_BLOCK = re.compile(r"```[^\n]*\n(?:(?!```).)*\bdef\s(?:(?!```).)*```", re.S)


class CodeBlockClosed(StoppingCriteria):
    """Per-sequence stop once the new text matches ``pattern`` (default: a closed fenced block
    holding a ``def``).

    Chat models like to explain their code at length after the block; the tests and the
    metrics only read the code, so the rest is generation time spent for nothing.

    Cost: a block can only close on a token holding a backtick, so a row's text is decoded (and
    the pattern searched) only at those tokens, and a row once closed stays closed: linear in
    the generated length, not quadratic.
    """

    def __init__(self, tokenizer, prompt_len: int, pattern: re.Pattern = _CLOSED_DEF_BLOCK, answer_start: str = ""):
        self.tokenizer = tokenizer
        self.pattern = pattern
        self.prompt_len = prompt_len
        self.answer_start = answer_start  # the answer's opening, already in the prompt (e.g. an opened fence)
        self.closed: torch.Tensor | None = None  # (B,) bool
        self._backtick: dict[int, bool] = {}

    def _has_backtick(self, token_id: int) -> bool:
        if token_id not in self._backtick:
            self._backtick[token_id] = "`" in self.tokenizer.decode([token_id])
        return self._backtick[token_id]

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if self.closed is None or self.closed.shape[0] != input_ids.shape[0]:
            self.closed = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        for row, token in enumerate(input_ids[:, -1].tolist()):
            if not self.closed[row] and self._has_backtick(token):
                text = self.answer_start + self.tokenizer.decode(input_ids[row, self.prompt_len:],
                                                                 skip_special_tokens=True)
                self.closed[row] = bool(self.pattern.search(text))
        return self.closed.to(input_ids.device)


@torch.no_grad()
def generate_transformers(model, tokenizer, prompts: list[str], config: GenerationConfig,
                          stop_pattern: re.Pattern = _CLOSED_DEF_BLOCK, answer_start: str = "") -> list[list[str]]:
    """n completions per prompt (prompt text excluded), batched with left padding. With
    ``config.stop_at_code`` a completion ends once the answer (``answer_start``, which the
    prompts end with, then the new text) matches ``stop_pattern`` (by default: a closed fenced
    block holding a ``def``).

    The tokenizer is left as it was: its padding side is restored afterwards, and one without a
    pad token pads with its EOS token (or id 0) for this call only.
    """
    side, pad_token = tokenizer.padding_side, tokenizer.pad_token
    try:
        tokenizer.padding_side = "left"
        if pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else \
                tokenizer.convert_ids_to_tokens(0)
        enc = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
        pad = tokenizer.pad_token_id
    finally:
        tokenizer.padding_side = side
        if pad_token is None:
            tokenizer.pad_token = None
    device = next(model.parameters()).device
    sampling = config.temperature > 0
    if sampling:
        torch.manual_seed(config.seed)
    stop = CodeBlockClosed(tokenizer, enc["input_ids"].shape[1], stop_pattern, answer_start)
    out = model.generate(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                         max_new_tokens=config.max_new_tokens, do_sample=sampling,
                         temperature=config.temperature if sampling else None,
                         top_p=config.top_p if sampling else None, top_k=None,
                         num_return_sequences=config.n, pad_token_id=pad,
                         stopping_criteria=StoppingCriteriaList([stop] if config.stop_at_code else []))
    new = out[:, enc["input_ids"].shape[1]:]
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    return [texts[i * config.n:(i + 1) * config.n] for i in range(len(prompts))]


def generate_vllm(model_path: str, prompts: list[str], config: GenerationConfig, dtype: str = "auto") -> list[list[str]]:
    """vLLM backend (GPU): the same rendered prompts, ``n`` completions each."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise NoseError("--backend vllm needs vLLM: pip install vllm (GPU machines)") from None
    llm = LLM(model=model_path, dtype=dtype, trust_remote_code=True, seed=config.seed)
    params = SamplingParams(n=config.n, temperature=config.temperature,
                            top_p=config.top_p if config.temperature > 0 else 1.0,
                            max_tokens=config.max_new_tokens)
    results = llm.generate(prompts, params)
    return [[c.text for c in r.outputs] for r in results]
