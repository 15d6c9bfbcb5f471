import json
import math
import os
import subprocess
import sys
from collections import Counter

import pytest

from nose.evaluate.metrics import bleu, codebleu, pass_at_k, python_tokens, sentence_bleu



def test_python_tokens_reproduce_the_benchmark_tokenization(gtranseval_records):
    records = list(gtranseval_records.values())
    assert all(" ".join(python_tokens(r["python_reference"])) == r["python_tokenized"] for r in records)
    assert python_tokens("def f(a,b):\n    return a  # c\n") == \
        ["def", "f", "(", "a", ",", "b", ")", ":", "NEW_LINE", "INDENT", "return", "a", "NEW_LINE", "DEDENT"]
    assert python_tokens("def f(:\n  'unterminated") == ["def", "f(:", "'unterminated"]


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 3, 2) == 1.0


def manual_bleu(hyp: list[str], ref: list[str]) -> float:
    logs = []
    for n in range(1, 5):
        h = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
        r = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        logs.append(math.log(sum((h & r).values()) / sum(h.values())))
    bp = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return 100 * bp * math.exp(sum(logs) / 4)


def test_bleu_against_a_hand_computation():
    ref = "def add(first, second):\n    total = first + second\n    return total\n"
    hyp = "def add(first, second):\n    result = first + second\n    return result\n"
    expected = manual_bleu(python_tokens(hyp), python_tokens(ref))
    assert sentence_bleu(hyp, ref) == pytest.approx(expected, rel=1e-6)
    assert bleu([hyp], [ref]) == pytest.approx(expected, rel=1e-6)
    assert sentence_bleu(ref, ref) == pytest.approx(100.0)
    # spacing does not matter after Python tokenization
    assert sentence_bleu("def add ( first , second ) :\n    total = first + second\n    return total\n", ref) \
        == pytest.approx(100.0)


def test_codebleu_identical_and_different():
    ref = "def f(a, b):\n    if a > b:\n        return a\n    return b\n"
    assert codebleu([ref], [ref])["codebleu"] == pytest.approx(100.0)
    other = codebleu(["def g(x):\n    print(x)\n"], [ref])
    assert 0 <= other["codebleu"] < 50
    assert set(other) >= {"ngram_match_score", "syntax_match_score", "dataflow_match_score"}


# A loop whose data flow merges several names: upstream codebleu scores this pair's data-flow
# match 0.58, 0.53 or 0.42 under PYTHONHASHSEED 0, 1 and 2 (it numbers names by set order).
LOOP_REFERENCE = ("def count_steps(limit):\n    steps = 0\n    for k in range(3, limit + 1, 4):\n"
                  "        if k * k > limit:\n            break\n"
                  "        if limit % k == 0 or limit % (k + 1) == 0:\n            steps += k\n    return steps\n")
LOOP_CANDIDATE = ("def count_steps(limit):\n    steps = 0\n    for k in range(3, int(limit ** 0.5) + 1, 4):\n"
                  "        if limit % k == 0 or limit % (k + 1) == 0:\n            steps += k\n    return steps\n")


def test_codebleu_does_not_depend_on_the_hash_seed():
    script = ("import json, sys; from nose.evaluate.metrics import codebleu; "
              "print(json.dumps(codebleu([sys.argv[1]], [sys.argv[2]])))")
    scores = []
    for seed in ("0", "1", "2"):
        done = subprocess.run([sys.executable, "-c", script, LOOP_CANDIDATE, LOOP_REFERENCE], capture_output=True,
                              text=True, env={**os.environ, "PYTHONHASHSEED": seed}, check=True, timeout=120)
        scores.append(json.loads(done.stdout.splitlines()[-1]))
    assert scores[0] == scores[1] == scores[2]
    assert 0 < scores[0]["dataflow_match_score"] < 100
