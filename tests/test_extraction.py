import pytest

from nose.tasks.code import extract_code
from nose.tasks.java_python.extraction import entry_function

CASES = [
    ("Here is the translation:\n```python\ndef gcd(a, b):\n    return a if b == 0 else gcd(b, a % b)\n\n"
     "print(gcd(3, 6))\n```\nThis works by recursion.",
     "def gcd(a, b):\n    return a if b == 0 else gcd(b, a % b)\n"),
    ("```\nimport math\ndef f(x):\n    return math.sqrt(x)\nif __name__ == '__main__':\n    n = int(input())\n"
     "    print(f(n))\n```", "import math\n\ndef f(x):\n    return math.sqrt(x)\n"),
    ("Sure! def is a keyword.\n\ndef add(a, b):\n    return a + b\n\nThis function adds two numbers.",
     "def add(a, b):\n    return a + b\n"),
    ("```java\nint f() { return 1; }\n```\n```python\ndef f():\n    return 1\n```\nUsage:\n```python\nprint(f())\n```",
     "def f():\n    return 1\n"),
    ("```python\ndef g(x):\n    return x +", "def g(x):\n    return x +\n"),
    ("x = int(input())\ndef h(): return 2", "def h(): return 2\n"),
    ("```py\nfrom typing import List\n\n@functools.lru_cache\ndef fib(n: int) -> int:\n    return n if n < 2 else "
     "fib(n - 1) + fib(n - 2)\n\nfor i in range(3):\n    print(fib(i))\n```",
     "from typing import List\n\n@functools.lru_cache\ndef fib(n: int) -> int:\n    return n if n < 2 else "
     "fib(n - 1) + fib(n - 2)\n"),
]


@pytest.mark.parametrize("output,code", CASES)
def test_extract_code_from_messy_output(output, code):
    assert extract_code(output) == code


def test_entry_function_matching():
    code = "def helper(x):\n    return x\n\ndef greatest_common_divisor(a, b):\n    return helper(a)\n"
    assert entry_function(code, "greatest_common_divisor", "greatestCommonDivisor") == "greatest_common_divisor"
    camel = code.replace("greatest_common_divisor", "greatestCommonDivisor")
    assert entry_function(camel, "greatest_common_divisor", "greatestCommonDivisor") == "greatestCommonDivisor"
    assert entry_function(code, "other", "other") == "helper"
    assert entry_function("print('no functions')\n", "f", "f") is None
    assert entry_function("def broken(:\n    pass\ndef f(x): return x\n", "f", "f") == "f"


def test_generation_stops_once_a_code_block_is_closed():
    import torch

    from nose.model.generation import CodeBlockClosed
    from nose.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    prompt = tok("Translate:", return_tensors="pt").input_ids
    texts = ["```python\ndef f(a, b):\n    return a\n```", "```python\ndef f(a, b):\n", "```\nx = 1\n```"]
    rows = [torch.cat([prompt[0], tok(t, return_tensors="pt").input_ids[0]]) for t in texts]
    width = max(len(r) for r in rows)
    batch = torch.stack([torch.nn.functional.pad(r, (0, width - len(r)), value=tok.pad_token_id) for r in rows])
    stop = CodeBlockClosed(tok, prompt.shape[1])(batch, None)
    assert stop.tolist() == [True, False, False]


def test_generation_stop_pattern_can_be_chosen():
    import re

    import torch

    from nose.model.generation import CodeBlockClosed
    from nose.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    prompt = tok("Write:", return_tensors="pt").input_ids
    java = tok("```java\nint f() { return 1; }\n```", return_tensors="pt").input_ids
    batch = torch.cat([prompt, java], dim=1)
    any_block = re.compile(r"```[^\n]*\n(?:(?!```).)*```", re.S)
    assert CodeBlockClosed(tok, prompt.shape[1])(batch, None).tolist() == [False]  # no def: the default goes on
    assert CodeBlockClosed(tok, prompt.shape[1], any_block)(batch, None).tolist() == [True]


def test_generation_stop_reads_the_answer_opened_in_the_prompt():
    """HumanEval's prompt opens the answer with a python fence: the new text only closes it."""
    import torch

    from nose.model.generation import CodeBlockClosed
    from nose.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    opened = "Here it is:\n```python\n"
    prompt = tok("Write:" + opened, return_tensors="pt").input_ids
    body = tok("def f(a):\n    return a\n```", return_tensors="pt").input_ids
    batch = torch.cat([prompt, body], dim=1)
    assert CodeBlockClosed(tok, prompt.shape[1])(batch, None).tolist() == [False]  # the fence's opening is unseen
    assert CodeBlockClosed(tok, prompt.shape[1], answer_start=opened)(batch, None).tolist() == [True]
