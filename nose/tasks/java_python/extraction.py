"""Java→Python names: the entry function of a translated program and the snake_case name the
prompt asks for. (The code in an answer: :mod:`nose.tasks.code`.)"""

from __future__ import annotations

import ast
import re


def _norm(name: str) -> str:
    return name.replace("_", "").lower()


def entry_function(code: str, python_entry: str, java_entry: str) -> str | None:
    """The top-level def matching either entry name (``_`` removed, lower case), else the first."""
    try:
        names = [n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    except SyntaxError:
        names = re.findall(r"^def\s+(\w+)", code, re.M)
    wanted = {_norm(python_entry), _norm(java_entry)}
    for name in names:
        if _norm(name) in wanted:
            return name
    return names[0] if names else None


def snake_case(name: str) -> str:
    """A Java method name as the Python entry point the prompt asks for (``sumTo`` -> ``sum_to``)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
