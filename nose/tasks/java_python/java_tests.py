"""Unit tests for Java methods of our own, made by running the Java: a held-out score of correctness.

The held-out KL and the re-generation score (:mod:`nose.evaluate.fidelity`) measure how closely a
changed model follows the intact one; neither says whether its translation is right, and a
different program is usually not a wrong one. These tests do, on data of our own (the held-out
split and other hand-written methods, never G-TransEval), the same way G-TransEval scores:
computational accuracy, the share of translations that behave like the Java.

For each method: its signature is parsed (:func:`signature`), typed arguments are drawn, seeded
by the method's name (:func:`draw_inputs`), and the Java runs on each set (``javac`` once, one
JVM per method, every argument built fresh, so a method that mutates its input sees a fresh
copy). Its result is recorded as JSON. An input on which the Java throws on purpose
(``IllegalArgumentException`` and its subclasses, ``IllegalStateException``,
``ArithmeticException``) stays, and the translation must raise too; one on which it throws for
a broken precondition (an index out of bounds, a null, a stack overflow) is dropped. A method
with fewer than :data:`MIN_INPUTS` kept inputs, a ``void`` one or one with types outside
:data:`SUPPORTED` is left out, with the reason.

A translation passes when, on every kept input, it returns an equal value (Python ``==``;
floats to 1e-6 relative; lists and arrays in order, sets in any order, maps by key) or raises
where the Java threw on purpose (:func:`score_answers`, in the sandbox of
:mod:`nose.sandbox`).
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from nose.tasks.java_python.corpus import JavaMethod
from nose.tasks.java_python.extraction import snake_case
from nose.errors import NoseError

MIN_INPUTS = 3
SCALARS = {"int", "long", "double", "boolean", "char", "String",
           "Integer", "Long", "Double", "Boolean", "Character"}
SUPPORTED = f"{', '.join(sorted(SCALARS))}, arrays of them, and List, Set, Map of them"
_BOXED = {"int": "Integer", "long": "Long", "double": "Double", "boolean": "Boolean", "char": "Character"}
_WORDS = ["hello", "World", "abc", "racecar", "Java", "a", "level", "noon", "x1", "42", "Sun", "b"]
_JAVA_HEADER = "import java.util.*;\nimport java.util.stream.*;\nimport java.util.function.*;\nimport java.time.*;\n"
# Java's results as JSON: boxed scalars, arrays (any element type), collections and maps (keys as strings)
_JSON_JAVA = r"""
final class J {
  static String s(Object o) {
    if (o == null) return "null";
    if (o instanceof String || o instanceof Character) return str(o.toString());
    if (o instanceof Double || o instanceof Float) {
      double d = ((Number) o).doubleValue();
      if (Double.isNaN(d)) return "NaN";
      if (Double.isInfinite(d)) return d > 0 ? "Infinity" : "-Infinity";
      return Double.toString(d);
    }
    if (o instanceof Number || o instanceof Boolean) return o.toString();
    StringBuilder b = new StringBuilder();
    if (o.getClass().isArray()) {
      b.append('[');
      for (int i = 0; i < java.lang.reflect.Array.getLength(o); i++) {
        if (i > 0) b.append(',');
        b.append(s(java.lang.reflect.Array.get(o, i)));
      }
      return b.append(']').toString();
    }
    if (o instanceof Collection) {
      b.append('[');
      for (Object x : (Collection<?>) o) { if (b.length() > 1) b.append(','); b.append(s(x)); }
      return b.append(']').toString();
    }
    if (o instanceof Map) {
      b.append('{');
      for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) {
        if (b.length() > 1) b.append(',');
        Object k = e.getKey();
        b.append(str(k instanceof String || k instanceof Character ? k.toString() : s(k))).append(':').append(s(e.getValue()));
      }
      return b.append('}').toString();
    }
    return str(o.toString());
  }
  static String str(String x) {
    StringBuilder b = new StringBuilder("\"");
    for (char c : x.toCharArray()) {
      if (c == '"' || c == '\\') b.append('\\').append(c);
      else if (c < 0x20 || c > 0x7e) b.append(String.format("\\u%04x", (int) c));
      else b.append(c);
    }
    return b.append('"').toString();
  }
}
"""


class Unsupported(ValueError):
    """A type these tests cannot draw or compare."""


@dataclass(frozen=True)
class JType:
    """A Java type: a name with type arguments (``Map<String, Integer>``) or an array of one."""

    name: str
    args: tuple["JType", ...] = ()
    element: "JType | None" = None  # set for arrays

    @classmethod
    def parse(cls, text: str) -> "JType":
        t, rest = cls._parse(text.replace(" ", ""))
        if rest:
            raise Unsupported(f"cannot parse the type {text!r}")
        return t

    @classmethod
    def _parse(cls, s: str) -> tuple["JType", str]:
        m = re.match(r"[\w.]+", s)
        if not m:
            raise Unsupported(f"cannot parse the type at {s!r}")
        name, s = m.group(), s[m.end():]
        args = []
        if s.startswith("<"):
            s = s[1:]
            while True:
                arg, s = cls._parse(s)
                args.append(arg)
                if s.startswith(","):
                    s = s[1:]
                elif s.startswith(">"):
                    s = s[1:]
                    break
                else:
                    raise Unsupported(f"cannot parse the type arguments at {s!r}")
        t = cls(name, tuple(args))
        while s.startswith("[]"):
            t, s = cls("[]", element=t), s[2:]
        return t, s

    def java(self) -> str:
        if self.element is not None:
            return self.element.java() + "[]"
        return self.name + (f"<{', '.join(a.java() for a in self.args)}>" if self.args else "")

    def boxed(self) -> str:
        return _BOXED.get(self.name, self.java()) if self.element is None else self.java()

    def check(self) -> None:
        if self.element is not None:
            return self.element.check()
        if self.name in SCALARS and not self.args:
            return
        wanted = {"List": 1, "ArrayList": 1, "Set": 1, "HashSet": 1, "Map": 2, "HashMap": 2}.get(self.name)
        if wanted is None or len(self.args) != wanted:
            raise Unsupported(f"type {self.java()} is not supported ({SUPPORTED})")
        for a in self.args:
            a.check()


@dataclass(frozen=True)
class Signature:
    returns: JType
    name: str
    params: tuple[tuple[JType, str], ...]


def _split_params(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in parts + [cur] if p.strip()]


def signature(java: str) -> Signature:
    """The return type, name and parameters of a ``static`` method's source; :class:`Unsupported`
    for a ``void`` method, a generic one or a type outside :data:`SUPPORTED`."""
    m = re.match(r"\s*(?:(?:public|private|protected|static|final)\s+)+(?!<)(.+?)\s+(\w+)\s*\(([^)]*)\)", java)
    if not m:
        raise Unsupported("no static method signature found")
    if m.group(1) == "void":
        raise Unsupported("a void method (its effect is on its arguments)")
    returns = JType.parse(m.group(1))
    params = []
    for p in _split_params(m.group(3)):
        kind, _, name = re.sub(r"^final\s+", "", p).rpartition(" ")
        params.append((JType.parse(kind), name))
    for t in [returns] + [t for t, _ in params]:
        t.check()
    return Signature(returns, m.group(2), tuple(params))


def _draw(t: JType, rng: random.Random, depth: int = 0):
    """A random Python value of Java type ``t`` (small ints, short strings from a few alphabets)."""
    if t.element is not None or t.name in ("List", "ArrayList"):
        inner = t.element if t.element is not None else t.args[0]
        if inner.element is not None and depth == 0:  # a matrix: rectangular rows
            cols = rng.randint(1, 4)
            return [[_draw(inner.element, rng, 2) for _ in range(cols)] for _ in range(rng.randint(1, 4))]
        return [_draw(inner, rng, depth + 1) for _ in range(rng.randint(0, 6 if depth == 0 else 3))]
    if t.name in ("Set", "HashSet"):
        return set(_draw(JType("List", t.args), rng, depth))
    if t.name in ("Map", "HashMap"):
        return {_draw(t.args[0], rng, depth + 1): _draw(t.args[1], rng, depth + 1) for _ in range(rng.randint(0, 4))}
    name = t.name
    if name in ("int", "long", "Integer", "Long"):
        r = rng.random()
        return rng.randint(0, 12) if r < 0.7 else rng.randint(-6, -1) if r < 0.9 else rng.randint(13, 60)
    if name in ("double", "Double"):
        return float(rng.randint(-10, 10)) if rng.random() < 0.3 else round(rng.uniform(-10, 10), 2)
    if name in ("boolean", "Boolean"):
        return rng.random() < 0.5
    if name in ("char", "Character"):
        return rng.choice("abcxyzABZ019 ,.")
    family = rng.randrange(4)
    if family == 0:
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 4)))
    if family == 1:
        return "".join(rng.choice("abcdeABC") for _ in range(rng.randint(0, 8)))
    if family == 2:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 6)))
    return "".join(rng.choice("aB3 ,.-_!") for _ in range(rng.randint(0, 10)))


def python_literal(value) -> str:
    """``repr`` with set elements sorted, so the same inputs are the same text in every process
    (a set's order follows the string hash seed)."""
    if isinstance(value, set):
        return "{" + ", ".join(sorted(map(python_literal, value))) + "}" if value else "set()"
    if isinstance(value, list):
        return "[" + ", ".join(map(python_literal, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def draw_inputs(sig: Signature, n: int, seed: int = 0) -> list[list]:
    """``n`` distinct argument lists for ``sig``, seeded by ``seed`` and the method's name."""
    rng = random.Random(f"{seed}:{sig.name}")
    seen, inputs = set(), []
    for _ in range(20 * n):
        args = [_draw(t, rng) for t, _ in sig.params]
        key = python_literal(args)
        if key not in seen:
            seen.add(key)
            inputs.append(args)
        if len(inputs) == n:
            break
    return inputs


_SCALAR_LITERALS = {
    "long": lambda v: f"({v}L)", "int": lambda v: f"({v})", "double": lambda v: f"({float(v)!r})",
    "boolean": lambda v: "true" if v else "false", "char": lambda v: f"'{v}'",
    "String": json.dumps,  # printable ASCII: JSON's escapes are Java's
}


def _collection(cls: str, factory: str, types: tuple[JType, ...], items: list[str]) -> str:
    boxed = ", ".join(t.boxed() for t in types)
    return f"new {cls}<{boxed}>({factory}.<{boxed}>of({', '.join(items)}))"


def java_literal(t: JType, value) -> str:
    """A Java expression of type ``t`` for a value drawn by :func:`_draw` (mutable collections)."""
    if t.element is not None:
        return f"new {t.java()}{{{', '.join(java_literal(t.element, v) for v in value)}}}"
    if t.name in ("List", "ArrayList"):
        return _collection("ArrayList", "List", t.args, [java_literal(t.args[0], v) for v in value])
    if t.name in ("Set", "HashSet"):
        return _collection("HashSet", "Set", t.args, [java_literal(t.args[0], v) for v in sorted(value, key=repr)])
    if t.name in ("Map", "HashMap"):
        return _collection("HashMap", "Map", t.args, [f"{java_literal(t.args[0], a)}, {java_literal(t.args[1], b)}"
                                                      for a, b in value.items()])
    unboxed = {b: p for p, b in _BOXED.items()}.get(t.name, t.name)
    return _SCALAR_LITERALS[unboxed](value)


@dataclass
class Case:
    """One method's tests: its argument lists (a Python literal) and the Java's outcome of each,
    ``{"value": json}`` or ``{"raises": true}``."""

    name: str
    java_sha256: str
    returns: str  # the Java return type
    inputs: str  # the list of argument lists, a Python literal (:func:`python_literal`)
    outcomes: list[dict]


def _java_class(cls: str, method: JavaMethod, sig: Signature, inputs: list[list]) -> str:
    calls = []
    for args in inputs:
        actual = ", ".join(java_literal(t, v) for (t, _), v in zip(sig.params, args))
        calls.append(f"    try {{ Object r = {sig.name}({actual}); System.out.println(\"=\" + J.s(r)); }}\n"
                     f"    catch (IllegalArgumentException | IllegalStateException | ArithmeticException e) "
                     f"{{ System.out.println(\"!raises\"); }}\n"
                     f"    catch (Throwable e) {{ System.out.println(\"!drop\"); }}")
    return (f"{_JAVA_HEADER}\npublic class {cls} {{\n{method.java}\n\n  public static void main(String[] a) {{\n"
            + "\n".join(calls) + "\n  }\n}\n")


def build_cases(methods: list[JavaMethod], per_method: int = 10, seed: int = 0, timeout_s: float = 20.0,
                progress=None) -> tuple[list[Case], dict[str, str]]:
    """The tests of every method it can make them for, and the others' names with the reason."""
    if not shutil.which("javac") or not shutil.which("java"):
        raise NoseError("Java tests need a JDK (javac and java on PATH); install one, e.g. apt install default-jdk")
    left_out: dict[str, str] = {}
    planned: list[tuple[JavaMethod, Signature, list[list]]] = []
    for m in methods:
        try:
            sig = signature(m.java)
        except Unsupported as e:
            left_out[m.name] = str(e)
            continue
        planned.append((m, sig, draw_inputs(sig, per_method, seed)))
    cases = []
    with tempfile.TemporaryDirectory(prefix="nose-java-") as tmp:
        root = Path(tmp)
        (root / "J.java").write_text(_JAVA_HEADER + _JSON_JAVA)
        files = []
        for i, (m, sig, inputs) in enumerate(planned):
            files.append(root / f"C{i}.java")
            files[-1].write_text(_java_class(f"C{i}", m, sig, inputs))
        compiled = _javac(root, [root / "J.java"] + files)
        task = progress.add_task("java tests", total=len(planned)) if progress else None
        for i, (m, sig, inputs) in enumerate(planned):
            if progress:
                progress.advance(task)
            if not compiled and not _javac(root, [root / "J.java", files[i]]):
                left_out[m.name] = "its test class does not compile"
                continue
            try:
                done = subprocess.run(["java", "-Xss8m", "-cp", str(root), f"C{i}"], capture_output=True, text=True,
                                      timeout=timeout_s)
            except subprocess.TimeoutExpired:
                left_out[m.name] = f"the Java ran over {timeout_s:g} s"
                continue
            lines = done.stdout.splitlines()
            if len(lines) != len(inputs):
                left_out[m.name] = f"the Java printed {len(lines)} results for {len(inputs)} inputs"
                continue
            kept = [(args, line) for args, line in zip(inputs, lines) if line != "!drop"]
            if len(kept) < MIN_INPUTS:
                left_out[m.name] = f"only {len(kept)} inputs run without a broken precondition"
                continue
            cases.append(Case(m.name, m.sha256, sig.returns.java(), python_literal([a for a, _ in kept]),
                              [{"raises": True} if line == "!raises" else {"value": json.loads(line[1:])}
                               for _, line in kept]))
    return cases, left_out


def _javac(root: Path, files: list[Path]) -> bool:
    return subprocess.run(["javac", "-nowarn", "-d", str(root), *map(str, files)], capture_output=True,
                          timeout=600).returncode == 0


_HARNESS = '''

import copy as _copy, json as _json


def _key(k):
    return ("true" if k else "false") if isinstance(k, bool) else k if isinstance(k, str) else str(k)


def _norm(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, dict):
        return {{_key(k): _norm(x) for k, x in v.items()}}
    if isinstance(v, (list, tuple, set, frozenset)) or hasattr(v, "__iter__"):
        return [_norm(x) for x in v]
    return repr(v)


for _args in {inputs}:
    try:
        _line = "=" + _json.dumps(_norm({entry}(*_copy.deepcopy(_args))))
    except BaseException:
        _line = "!raises"
    print(_line, flush=True)
'''


def harness_program(case: Case, answer: str) -> str | None:
    """The sandbox program that runs a translation on the case's inputs; None without a function."""
    from nose.tasks.code import extract_code, keep_definitions
    from nose.tasks.java_python.extraction import entry_function

    code = keep_definitions(extract_code(answer))
    entry = entry_function(code, snake_case(case.name), case.name)
    return None if entry is None else code + _HARNESS.format(inputs=case.inputs, entry=entry)


def equal(t: JType, want, got) -> bool:
    """Java's result ``want`` (decoded JSON) equals the translation's ``got``, for return type ``t``."""
    if t.element is not None or t.name in ("List", "ArrayList"):
        inner = t.element if t.element is not None else t.args[0]
        return isinstance(got, list) and len(got) == len(want) and all(equal(inner, w, g) for w, g in zip(want, got))
    if t.name in ("Set", "HashSet"):
        if not isinstance(got, list) or len(got) != len(want):
            return False
        rest = list(got)
        for w in want:
            match = next((i for i, g in enumerate(rest) if equal(t.args[0], w, g)), None)
            if match is None:
                return False
            rest.pop(match)
        return True
    if t.name in ("Map", "HashMap"):
        return isinstance(got, dict) and set(got) == set(want) and all(equal(t.args[1], want[k], got[k]) for k in want)
    if isinstance(want, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and \
            (math.isclose(want, got, rel_tol=1e-6, abs_tol=1e-9) or (math.isnan(want) and math.isnan(got)))
    return want == got


def passes(case: Case, stdout: str | None) -> bool:
    """Whether the translation's output (one line per input) matches every Java outcome."""
    if stdout is None:
        return False
    lines = stdout.splitlines()
    if len(lines) != len(case.outcomes):
        return False
    t = JType.parse(case.returns)
    for line, outcome in zip(lines, case.outcomes):
        if outcome.get("raises"):
            if line != "!raises":
                return False
        elif line == "!raises" or not equal(t, outcome["value"], json.loads(line[1:])):
            return False
    return True


def score_answers(cases: list[Case], answers: dict[str, str], workers: int = 2, isolation=None,
                  progress=None, label: str = "tests") -> dict[str, bool]:
    """Per case name: whether the answer (by the Java's sha256) passes. A case without an answer fails."""
    from nose.sandbox import Limits, run_many

    programs = [harness_program(c, answers[c.java_sha256]) if c.java_sha256 in answers else None for c in cases]
    runnable = [k for k, p in enumerate(programs) if p is not None]
    task = progress.add_task(label, total=len(runnable)) if progress else None
    outcomes = run_many([programs[k] for k in runnable], Limits(), workers, isolation=isolation,
                        on_done=(lambda k, o: progress.advance(task)) if progress else None)
    stdout = {k: (o.stdout if o.returncode == 0 and not o.timed_out else None) for k, o in zip(runnable, outcomes)}
    return {c.name: passes(c, stdout.get(k)) for k, c in enumerate(cases)}


def write_cases(path: Path, cases: list[Case], left_out: dict[str, str], meta: dict) -> None:
    from nose.files import write_json_atomic

    write_json_atomic(path, {"format": "nose.java-tests/1", **meta, "cases": [asdict(c) for c in cases],
                             "left_out": left_out})


def read_cases(path: Path) -> tuple[list[Case], dict[str, str], dict]:
    from nose.files import read_json_file

    data = read_json_file(path, Path(path).name, "nose.java-tests/1", "benchmarks/heldout_tests.py",
                          {"cases": [dict], "left_out": dict})
    meta = {k: v for k, v in data.items() if k not in ("format", "cases", "left_out")}
    return [Case(**c) for c in data["cases"]], data["left_out"], meta
