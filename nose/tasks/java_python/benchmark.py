"""G-TransEval Java→Python, read from the layout of a PolyEval/G-TransEval clone.

Layout: ``G-TransEval/Type{1..4}/{Java,Python}.test`` (one TransCoder-tokenized program per
line; line i of Java.test pairs with line i of Python.test) and
``TestRunner/config/l{1..4}.json`` (``questions[i]`` holds the 5 unit tests of line i).

The harness reproduces the upstream TestRunner's Python test file (the benchmark README in the
shared data states it): ``prefix + candidate + "\\n\\ntestfunc = E\\n" + harness``, where E is
the candidate's entry function, and a pass prints ``All Passed!``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nose.errors import NoseError

LEVELS = {1: "token", 2: "syntax", 3: "library", 4: "algorithm"}

PREFIX = ("from collections import *\nfrom typing import *\nimport itertools\nimport functools\n"
          "import math\nimport sys\n\n")

_SERIALIZERS = '''

def serialize_list(obj) -> str:
    list_str = ["["]
    for item in obj:
        list_str.append(serialize_obj(item))
        list_str.append(",")
    list_str[-1] = "]"
    return "".join(list_str)


def serialize_dict(obj) -> str:
    m = OrderedDict(sorted(obj.items()))
    dict_str = ["{"]
    for key, value in m.items():
        dict_str.append(serialize_obj(key))
        dict_str.append(":")
        dict_str.append(serialize_obj(value))
        dict_str.append(",")
    dict_str[-1] = "}"
    return "".join(dict_str)


def serialize_obj(obj) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, int) or isinstance(obj, float):
        return "{0:.6f}".format(obj)
    if isinstance(obj, str):
        return \'"\' + obj + \'"\'
    if isinstance(obj, bool):
        return str(obj)
    if isinstance(obj, list):
        return serialize_list(obj)
    if isinstance(obj, dict):
        return serialize_dict(obj)
    raise Exception("Unrecognized Type!")


def are_equivalent(o1, o2) -> bool:
    print(serialize_obj(o1)+" "+serialize_obj(o2))
    return serialize_obj(o1) == serialize_obj(o2)


def start():
    ret = False
    count = 0
    total = 0
'''

_TAIL = '''    if count == total:
        print("All Passed!")
    else:
        print("Compilation Passed!")


if __name__ == "__main__":
    start()
'''

PASS_MARKER = "All Passed!"


@dataclass
class Sample:
    id: str  # l<type>-<index, 3 digits>
    type: int
    level: str
    index: int
    name: str
    java: str  # the upstream tokenized Java line (valid Java on one line)
    python_tokenized: str  # the upstream reference line
    tests: list = field(default_factory=list)  # [{"call": "testfunc(...)", "expected": "..."}]

    @property
    def java_entry_point(self) -> str:
        return self.java.split("(")[0].split()[-1]

    @property
    def python_reference(self) -> str:
        return detokenize_python(self.python_tokenized)

    @property
    def python_entry_point(self) -> str:
        m = re.search(r"\bdef\s+(\w+)", self.python_reference)
        return m.group(1) if m else ""

    @property
    def java_source(self) -> str:
        return format_java(self.java)

    def harness(self) -> str:
        """The test code that follows the candidate and ``testfunc = E``."""
        body = "".join(f"    total += 1\n    ret = are_equivalent({t['call']},{t['expected']})\n"
                       "    count += 1 if ret else 0\n" for t in self.tests)
        return _SERIALIZERS + body + _TAIL


def detokenize_python(line: str) -> str:
    """TransCoder-tokenized Python → runnable code, as the upstream TestRunner does it."""
    out, indent = [], 0
    for raw in line.split("NEW_LINE"):
        tokens = raw.split()
        while tokens and tokens[0] in ("INDENT", "DEDENT"):
            indent += 1 if tokens.pop(0) == "INDENT" else -1
        if tokens:
            out.append("    " * indent + " ".join(tokens))
    return "\n".join(out) + "\n"


def format_java(line: str) -> str:
    """Readable Java from a one-line tokenized method: a line per statement, 2-space indent.

    Only whitespace changes, so the program is the same; ``;`` inside ``for ( ... )`` stays.
    """
    tokens = line.split()
    out, cur, depth, parens = [], [], 0, 0
    glue_before = {")", "]", ",", ";", ".", "++", "--"}
    glue_after = {"(", "[", ".", "!"}

    def flush():
        if cur:
            out.append("  " * depth + "".join(cur).strip())
            cur.clear()

    prev = ""
    for tok in tokens:
        if tok == "}":
            flush()
            depth = max(0, depth - 1)
            out.append("  " * depth + "}")
            prev = tok
            continue
        sep = "" if (not cur or tok in glue_before or prev in glue_after or
                     (tok in ("(", "[") and prev not in _KEYWORDS and re.match(r"\w", prev or ""))) else " "
        cur.append(sep + tok)
        parens += tok == "("
        parens -= tok == ")"
        if tok == "{":
            flush()
            depth += 1
        elif tok == ";" and parens == 0:
            flush()
        prev = tok
    flush()
    return "\n".join(out)


_KEYWORDS = {"if", "for", "while", "switch", "catch", "return", "synchronized"}


def python_literal(value, typ) -> str:
    """A config value (strings, nested lists/dicts of strings) as the Python literal the
    upstream harness writes, given its declared type (``int``, ``[T]``, ``{K: V}``...)."""
    if isinstance(value, list) and typ == "any":
        typ = ["any"]
    if isinstance(typ, list):
        return "[" + ",".join(python_literal(v, typ[0]) for v in value) + "]"
    if isinstance(typ, dict):
        (kt, vt), = typ.items()
        return "{" + ",".join(f"{python_literal(k, kt)}:{python_literal(v, vt)}" for k, v in value.items()) + "}"
    if typ == "bool":
        return "True" if value == "true" else "False"
    if typ == "double":
        return repr(float(value))
    if typ == "any":  # "value|ANY_TYPE_SEP|type"
        inner, _, inner_type = value.partition("|ANY_TYPE_SEP|")
        return python_literal(inner, inner_type or "int")
    if typ == "string":
        return '"' + value.replace("\\", "\\\\") + '"'
    if typ == "char":
        return "'" + value.replace("\\", "\\\\") + "'"
    if typ == "int":
        return str(value).strip()
    raise NoseError(f"unknown type {typ!r} in the G-TransEval test config")


def _parse_type(typ):
    """Config types come as strings (``"[int]"``, ``"{char: int}"``) or nested JSON."""
    if not isinstance(typ, str):
        return typ
    t = typ.replace(" ", "")
    if t.startswith("[") and t.endswith("]"):
        return [_parse_type(t[1:-1])]
    if t.startswith("{") and t.endswith("}"):
        depth = 0
        for k, ch in enumerate(t):
            depth += ch in "[{"
            depth -= ch in "]}"
            if ch == ":" and depth == 1:
                return {t[1:k]: _parse_type(t[k + 1:-1])}
    return t


def tests_from_config(question: dict) -> list[dict]:
    params = [_parse_type(t) for t in question["paramsType"]]
    ret = _parse_type(question["returnType"])
    return [{"call": "testfunc(" + ",".join(python_literal(v, t) for v, t in zip(case["params"], params)) + ")",
             "expected": python_literal(case["return"], ret)} for case in question["tests"]]


def find_root(path: Path | None) -> Path:
    """The clone's root (holding ``G-TransEval/`` and ``TestRunner/``), or a clear error;
    ``path`` None: ``$NOSE_BENCHMARK``."""
    if path is None:
        if not os.environ.get("NOSE_BENCHMARK"):
            raise NoseError("pass --benchmark PATH (a clone of PolyEval/G-TransEval) or set NOSE_BENCHMARK")
        path = os.environ["NOSE_BENCHMARK"]
    path = Path(path).expanduser()
    if not path.exists():
        raise NoseError(f"benchmark path {path} does not exist; pass a clone of PolyEval/G-TransEval")
    for root in (path, path.parent):
        if (root / "G-TransEval" / "Type1" / "Java.test").exists() and (root / "TestRunner" / "config" / "l1.json").exists():
            return root
    raise NoseError(f"{path} is not in the G-TransEval layout: expected G-TransEval/Type1..4/Java.test and "
                    "TestRunner/config/l1..4.json inside it")


QUESTIONS_SHAPE = {"questions": [{"name": str, "paramsType": list, "returnType": (str, list, dict),
                                    "tests": [{"params": list, "return": object}]}]}


def load_benchmark(path: Path) -> list[Sample]:
    from nose.files import check_shape, read_json, read_text

    def lines(file: Path) -> list[str]:
        return read_text(file, "a UTF-8 text file of a complete PolyEval/G-TransEval clone").splitlines()

    root = find_root(path)
    samples = []
    for k in (1, 2, 3, 4):
        folder = root / "G-TransEval" / f"Type{k}"
        java = lines(folder / "Java.test")
        python = lines(folder / "Python.test")
        config = root / "TestRunner" / "config" / f"l{k}.json"
        data = read_json(config, "a G-TransEval test config (an object with 'questions')")
        check_shape(data, QUESTIONS_SHAPE, str(config))
        questions = data["questions"]
        if not (len(java) == len(python) == len(questions)):
            raise NoseError(f"{folder}: Java.test, Python.test and l{k}.json differ in length "
                            f"({len(java)}, {len(python)}, {len(questions)})")
        for i, (j, p, q) in enumerate(zip(java, python, questions)):
            samples.append(Sample(f"l{k}-{i:03d}", k, LEVELS[k], i, q["name"], j.strip(), p.strip(),
                                  tests_from_config(q)))
    return samples


def select(samples: list[Sample], ids: list[str] | None = None, limit: int | None = None,
           stratified: bool = False) -> list[Sample]:
    """A subset by ids, or the first ``limit``, or ``limit`` spread over types in proportion."""
    if ids:
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise NoseError(f"--ids names {', '.join(twice[:5])} more than once; each sample counts once")
        known = {s.id: s for s in samples}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise NoseError(f"unknown sample ids: {', '.join(unknown[:5])}; ids look like l1-000 .. l4-024")
        return [known[i] for i in ids]
    if limit is None or limit >= len(samples):
        return list(samples)
    if limit < 1:
        raise NoseError(f"--limit must be at least 1, got {limit}")
    if not stratified:
        return samples[:limit]
    by_type: dict[int, list[Sample]] = {}
    for s in samples:
        by_type.setdefault(s.type, []).append(s)
    # largest-remainder allocation of `limit` over types, then evenly spaced picks within a type
    quotas = {t: limit * len(v) / len(samples) for t, v in by_type.items()}
    alloc = {t: int(q) for t, q in quotas.items()}
    for t in sorted(quotas, key=lambda t: quotas[t] - alloc[t], reverse=True)[: limit - sum(alloc.values())]:
        alloc[t] += 1
    chosen = []
    for t, group in sorted(by_type.items()):
        n = alloc[t]
        chosen += [group[int(j * len(group) / n)] for j in range(n)]
    return chosen


def build_program(code: str, entry: str, sample: Sample) -> str:
    """The sandbox program that tests ``entry`` of ``code`` as the benchmark's TestRunner does."""
    return PREFIX + code + "\n\ntestfunc = " + entry + "\n" + sample.harness()


def verdict(outcome) -> str:
    """passed / wrong / error / timeout from the harness's output; no_function without a program."""
    if outcome is None:
        return "no_function"
    if outcome.timed_out:
        return "timeout"
    if PASS_MARKER in outcome.stdout:
        return "passed"
    if "Compilation Passed!" in outcome.stdout:
        return "wrong"
    return "error"
