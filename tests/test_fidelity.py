"""Held-out fidelity: teacher-forced KL and top-1 agreement against the intact model."""

import contextlib

import pytest
import torch

from nose.evaluate.fidelity import fidelity
from nose.model.switches import attention_switched
from nose.search.kl import kl_per_position
from nose.testing import tiny_loaded


def test_fidelity_against_itself_another_model_and_a_direct_computation(tok, calib):
    lm = tiny_loaded("llama", tok)
    result = fidelity(lm, calib, {"same": contextlib.nullcontext,
                                  "skip 2,3": lambda: attention_switched(lm.model, [2, 3])}, batch_size=4)
    assert result["same"]["kl"] == pytest.approx(0.0, abs=1e-7) and result["same"]["agreement"] == 1.0
    with torch.no_grad():
        ref = torch.log_softmax(lm.model(calib.input_ids).logits[:, :-1].reshape(-1, len(tok)), -1)
        with attention_switched(lm.model, [2, 3]):
            logits = lm.model(calib.input_ids).logits[:, :-1].reshape(-1, len(tok))
    assert result["skip 2,3"]["kl"] == pytest.approx(float(kl_per_position(logits, ref).mean()), rel=1e-4)
    agree = float((logits.argmax(-1) == ref.argmax(-1)).double().mean())
    assert result["skip 2,3"]["agreement"] == pytest.approx(agree) and result["skip 2,3"]["positions"] == ref.shape[0]
    other = tiny_loaded("llama", tok, seed=3)
    against = fidelity(other, calib, {"other": contextlib.nullcontext}, reference=lm)["other"]
    assert against["kl"] > 0 and against["agreement"] < 1


def test_same_programs_counts_answers_regenerated_as_the_same_program(tok):
    from nose.data.chat import render_chat
    from nose.data.transcripts import TranscriptSettings
    from nose.evaluate.fidelity import program_of, same_programs
    from nose.model.generation import GenerationConfig, generate_transformers

    lm = tiny_loaded("llama", tok)
    prompts = [[{"role": "user", "content": f"translate number {i}"}] for i in range(5)]
    answers = generate_transformers(lm.model, lm.tokenizer, [render_chat(m, lm.tokenizer, True) for m in prompts],
                                    GenerationConfig(max_new_tokens=12, batch_size=5))
    records = [{"name": f"m{i}", "messages": m + [{"role": "assistant", "content": a}]}
               for i, (m, (a,)) in enumerate(zip(prompts, answers))]
    records[0]["messages"][-1]["content"] = "```python\ndef f(x):\n    return x  # not what it says\n```"
    result = same_programs(lm, records, {"same": contextlib.nullcontext,
                                         "skip all": lambda: attention_switched(lm.model, [0, 1, 2, 3])},
                           TranscriptSettings(max_new_tokens=12, batch_size=2))
    assert result["same"] == {"same_program": 0.8, "programs": 5, "differs": ["m0"]}
    assert result["skip all"]["same_program"] < 0.8 and "m0" in result["skip all"]["differs"]
    assert program_of("```python\ndef f(x):\n\n    return x   # c\n```") == program_of("def f(x):\n  return x")
