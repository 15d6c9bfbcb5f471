import pytest

from nose.errors import NoseError
from nose.tasks.java_python.benchmark import format_java, load_benchmark, select
from nose.tasks.java_python.benchmark import build_program, verdict
from nose.sandbox import Limits, run_many



@pytest.fixture(scope="module")
def samples(gtranseval):
    return load_benchmark(gtranseval)


@pytest.fixture(scope="module")
def records(gtranseval_records):
    return gtranseval_records


def test_upstream_layout_gives_400_samples_with_types(samples):
    assert len(samples) == 400
    counts = {lv: sum(s.level == lv for s in samples) for lv in ("token", "syntax", "library", "algorithm")}
    assert counts == {"token": 125, "syntax": 125, "library": 125, "algorithm": 25}
    assert samples[0].id == "l1-000" and samples[-1].id == "l4-024"


def test_harness_reproduces_the_upstream_test_files(samples, records):
    for s in samples:
        r = records[s.id]
        assert s.harness() == r["python_test"], s.id
        assert s.python_reference == r["python_reference"], s.id
        assert s.python_entry_point == r["python_entry_point"], s.id
        assert s.java_entry_point == r["java_entry_point"], s.id


def test_readable_java_keeps_the_tokens(samples):
    for s in samples[::37]:
        assert format_java(s.java).split() != [] and "".join(format_java(s.java).split()) == "".join(s.java.split())


def run_all(samples, code_for):
    programs = [build_program(code_for(s), s.python_entry_point, s) for s in samples]
    return [verdict(o) for o in run_many(programs, Limits(wall_s=10, cpu_s=10), workers=2)]


def test_all_400_references_pass(samples):
    verdicts = run_all(samples, lambda s: s.python_reference)
    failed = [s.id for s, v in zip(samples, verdicts) if v != "passed"]
    assert failed == []


@pytest.mark.parametrize("body", ["return None", "return 0", "return args[0] if args else None"])
def test_trivial_wrong_answers_fail(samples, body):
    verdicts = run_all(samples, lambda s: f"def {s.python_entry_point}(*args):\n    {body}\n")
    assert verdicts.count("passed") == 0
    assert set(verdicts) <= {"wrong", "error"}


def test_subsets(samples):
    strat = select(samples, limit=100, stratified=True)
    assert len(strat) == 100 and len({s.id for s in strat}) == 100
    assert [sum(s.type == t for s in strat) for t in (1, 2, 3, 4)] == [32, 31, 31, 6]  # largest remainder, ties to the lower type
    assert [s.id for s in select(samples, limit=3)] == ["l1-000", "l1-001", "l1-002"]
    assert [s.id for s in select(samples, ids=["l4-003", "l2-010"])] == ["l4-003", "l2-010"]
    with pytest.raises(NoseError, match="unknown sample ids: l9-001"):
        select(samples, ids=["l1-000", "l9-001"])


def test_bad_benchmark_paths(tmp_path):
    with pytest.raises(NoseError, match="does not exist"):
        load_benchmark(tmp_path / "missing")
    (tmp_path / "Type1").mkdir()
    with pytest.raises(NoseError, match="not in the G-TransEval layout"):
        load_benchmark(tmp_path)


def test_tiny_benchmark_references_pass_and_trivial_answers_fail(tiny_bench):
    tiny = load_benchmark(tiny_bench)
    assert [s.id for s in tiny] == ["l1-000", "l1-001", "l2-000", "l2-001", "l3-000", "l3-001", "l4-000", "l4-001"]
    assert run_all(tiny, lambda s: s.python_reference) == ["passed"] * 8
    assert "passed" not in run_all(tiny, lambda s: f"def {s.python_entry_point}(*args):\n    return 0\n")
