"""Turn raw model output into the candidate Python program (every task whose answers are Python),
and the checked program that tests a named function with test code (HumanEval, a user's JSONL task).

Real output mixes prose, several fenced blocks (tagged or not), truncated fences, example
calls, ``if __name__ == "__main__":`` blocks and ``input()`` calls. Rules:

1. Fenced blocks: keep those tagged python/py/python3 or untagged; if some contain a ``def``,
   keep only those. An unclosed fence (output cut at the token limit) runs to the end.
2. No fence: start at the first line that looks like code (``def``/``class``/``import``/
   ``from``/``@``) and drop trailing lines until the text parses.
3. Keep only the top level that defines things: imports, functions, classes and assignments;
   drop ``if __name__ == "__main__":`` blocks, top-level calls (``print(f(3))``, ``input()``)
   and loops. Unparsable code is kept as it is (it fails the tests honestly).
"""

from __future__ import annotations

import ast
import re

PASS_MARKER = "__nose_checked_passed__"
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PY_TAGS = {"", "python", "py", "python3"}
_CODE_START = re.compile(r"^(def |class |import |from |@|async def )")


def extract_code(output: str) -> str:
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(output)]
    if blocks:
        python = [b for t, b in blocks if t in _PY_TAGS] or [b for _, b in blocks]
        with_def = [b for b in python if re.search(r"^\s*(async\s+)?def\s", b, re.M)]
        code = "\n\n".join(with_def or python)
    else:
        code = _unfenced(output)
    return keep_definitions(code.strip("\n")) + "\n"


def _unfenced(text: str) -> str:
    lines = text.splitlines()
    start = next((k for k, line in enumerate(lines) if _CODE_START.match(line)), 0)
    lines = lines[start:]
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        try:
            ast.parse(candidate)
            return candidate
        except SyntaxError:
            continue
    return "\n".join(lines)


def keep_definitions(code: str) -> str:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
            ast.AnnAssign)
    lines = code.splitlines()
    out = []
    for node in tree.body:
        if isinstance(node, keep) and not _calls_input(node):
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            out.append("\n".join(lines[start - 1:node.end_lineno]))
    return "\n\n".join(out)


def _calls_input(node: ast.AST) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return False  # a function that reads input fails its tests on its own (stdin is empty)
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "input"
               for n in ast.walk(node))


def defined_function(code: str, name: str) -> str | None:
    """``name`` if the code defines it at the top level (or parses not at all: then the test
    says so), else None (``no_function``)."""
    try:
        names = {n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    except SyntaxError:
        return name
    return name if name in names else None


def checked_program(before: str, code: str, test: str, entry: str) -> str:
    """``before`` (imports, helpers), the answer's code, the test code, ``check(entry)`` when the
    test defines ``check``, then a marker: the program passes when it exits cleanly with the marker."""
    try:
        calls_check = any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in ast.parse(test).body)
    except SyntaxError:
        calls_check = False  # the test's own syntax error fails every answer, visibly
    return f"{before}\n\n{code}\n\n{test}\n\n" + (f"check({entry})\n" if calls_check else "") + \
        f"print({PASS_MARKER!r})\n"


def checked_verdict(outcome) -> str:
    """passed (clean exit with the marker), wrong (an assertion failed), error, timeout; no_function."""
    if outcome is None:
        return "no_function"
    if outcome.timed_out:
        return "timeout"
    if outcome.returncode == 0 and PASS_MARKER in outcome.stdout:
        return "passed"
    return "wrong" if "AssertionError" in outcome.stderr else "error"
