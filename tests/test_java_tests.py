"""Tests made by running the Java (nose.tasks.java_python.java_tests): signatures, drawn inputs, the Java's
outcomes, and pass or fail of real translations in the real sandbox."""

import shutil

import pytest

from nose.tasks.java_python.corpus import JavaMethod
from nose.tasks.java_python.java_tests import (JType, Unsupported, build_cases, draw_inputs, equal, python_literal,
                                      read_cases, score_answers, signature, write_cases)

needs_jdk = pytest.mark.skipif(shutil.which("javac") is None, reason="needs javac (a JDK) to run the Java")


def fenced(code: str) -> str:
    return f"Here it is:\n```python\n{code}\n```"


def test_signature_parses_nested_generics_and_arrays():
    sig = signature("public static Map<String, List<Integer>> groupBy(List<String> words, int[][] grid, "
                    "final char sep) {\n  return null;\n}")
    assert sig.name == "groupBy"
    assert sig.returns == JType("Map", (JType("String"), JType("List", (JType("Integer"),))))
    assert [(t.java(), n) for t, n in sig.params] == [("List<String>", "words"), ("int[][]", "grid"), ("char", "sep")]


@pytest.mark.parametrize("java, why", [
    ("public static void sortIt(int[] a) { Arrays.sort(a); }", "void"),
    ("public static int size(Object o) { return 0; }", "Object"),
    ("public static OptionalInt first(int[] a) { return OptionalInt.empty(); }", "OptionalInt"),
])
def test_unsupported_signatures_say_why(java, why):
    with pytest.raises(Unsupported, match=why):
        signature(java)


def test_inputs_are_typed_distinct_and_seeded_by_the_name():
    sig = signature("public static int f(int[][] grid, Set<String> seen, Map<Character, Long> m, double x) { return 0; }")
    inputs = draw_inputs(sig, 10)
    assert inputs == draw_inputs(sig, 10) and inputs != draw_inputs(sig, 10, seed=1)
    assert len({repr(a) for a in inputs}) == 10
    assert eval(python_literal(inputs)) == inputs
    assert python_literal([{"b", "a"}, set(), {"k": {"z", "y"}}]) == "[{'a', 'b'}, set(), {'k': {'y', 'z'}}]"
    for grid, seen, m, x in inputs:
        assert len({len(row) for row in grid}) == 1  # matrices are rectangular
        assert isinstance(seen, set) and all(isinstance(s, str) for s in seen)
        assert all(isinstance(k, str) and len(k) == 1 and isinstance(v, int) for k, v in m.items())
        assert isinstance(x, float)


def test_equal_compares_like_the_java_types():
    assert equal(JType.parse("double"), 0.1 + 0.2, 0.3)
    assert not equal(JType.parse("double"), 1.0, 1.1)
    assert equal(JType.parse("Set<Integer>"), [3, 1, 2], [1, 2, 3])
    assert not equal(JType.parse("List<Integer>"), [3, 1, 2], [1, 2, 3])
    assert equal(JType.parse("Map<Integer, List<String>>"), {"1": ["a"], "2": []}, {"2": [], "1": ["a"]})
    assert not equal(JType.parse("int[]"), [1, 2], [1, 2, 3])


METHODS = [
    JavaMethod("sumOfSquares", "public static long sumOfSquares(List<Integer> xs) {\n  long s = 0;\n"
                               "  for (int x : xs) s += (long) x * x;\n  return s;\n}"),
    JavaMethod("checkedHalf", "public static int checkedHalf(int n) {\n  if (n < 0) throw new "
                              "IllegalArgumentException(\"negative\");\n  return n / 2;\n}"),
    JavaMethod("firstLetter", "public static char firstLetter(String s) {\n  return s.charAt(0);\n}"),
    JavaMethod("letterCounts", "public static Map<Character, Integer> letterCounts(String s) {\n"
                               "  Map<Character, Integer> m = new HashMap<>();\n"
                               "  for (char c : s.toCharArray()) m.merge(c, 1, Integer::sum);\n  return m;\n}"),
    JavaMethod("spinsForever", "public static int spinsForever(int n) {\n  while (n != 1) { n = n + 0; }\n  return n;\n}"),
    JavaMethod("fill", "public static void fill(int[] a) {\n  Arrays.fill(a, 1);\n}"),
]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    found, left_out = build_cases(METHODS, per_method=10, timeout_s=5)
    path = tmp_path_factory.mktemp("cases") / "cases.json"
    write_cases(path, found, left_out, {"seed": 0})
    again, left_again, meta = read_cases(path)
    assert (again, left_again, meta) == (found, left_out, {"seed": 0})  # the file round-trips
    return {c.name: c for c in found}, left_out


@needs_jdk
def test_the_java_decides_the_outcomes_and_what_is_left_out(cases):
    by_name, left_out = cases
    assert set(by_name) == {"sumOfSquares", "checkedHalf", "firstLetter", "letterCounts"}
    assert "void" in left_out["fill"] and "ran over 5 s" in left_out["spinsForever"]
    half = by_name["checkedHalf"]
    inputs = eval(half.inputs)
    for (n,), outcome in zip(inputs, half.outcomes):  # thrown on purpose: the translation must raise
        assert outcome == ({"raises": True} if n < 0 else {"value": n // 2})
    assert any(o.get("raises") for o in half.outcomes) and not all(o.get("raises") for o in half.outcomes)
    first = by_name["firstLetter"]  # empty strings break charAt's precondition: those inputs are dropped
    assert all(s for (s,) in eval(first.inputs)) and len(first.outcomes) == len(eval(first.inputs))


@needs_jdk
def test_right_translations_pass_and_wrong_ones_fail(cases):
    by_name, _ = cases
    right = {
        "sumOfSquares": "def sum_of_squares(xs):\n    return sum(x * x for x in xs)",
        "checkedHalf": "def checked_half(n):\n    if n < 0:\n        raise ValueError('negative')\n    return n // 2",
        "firstLetter": "def first_letter(s):\n    return s[0]",
        "letterCounts": "from collections import Counter\n\ndef letter_counts(s):\n    return dict(Counter(s))",
    }
    wrong = {
        "sumOfSquares": "def sum_of_squares(xs):\n    return sum(xs) ** 2",
        "checkedHalf": "def checked_half(n):\n    return n // 2",  # never raises
        "firstLetter": "def first_letter(s):\n    return s[-1]",
        "letterCounts": "def letter_counts(s):\n    return {c: 1 for c in s}",
    }
    found = list(by_name.values())
    sha = {c.name: c.java_sha256 for c in found}
    assert score_answers(found, {sha[n]: fenced(code) for n, code in right.items()}) == dict.fromkeys(right, True)
    got = score_answers(found, {sha[n]: fenced(code) for n, code in wrong.items()})
    assert got == dict.fromkeys(wrong, False)
    assert score_answers(found, {sha["firstLetter"]: "no code at all"}) == dict.fromkeys(right, False)
