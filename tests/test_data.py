"""Task-shaped data: the shipped Java corpus, its distance from G-TransEval, the harvester and
the self-distilled transcripts."""

import json
import re
import shutil
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import pytest

import nose.data.transcripts as transcripts
from nose.tasks.java_python.corpus import SHIPPED, TEST_METHODS, JavaMethod, load_methods
from nose.tasks.java_python.harvest import harvest, methods_in
from nose.tasks.java_python.overlap import BLEU_THRESHOLD, bleu4, find_overlaps, java_tokens, max_bleu
from nose.errors import NoseError
from nose.tasks.java_python.benchmark import load_benchmark
from nose.data.calibration import build_calibration
from nose.testing import tiny_loaded


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# the shipped corpus, the methods written only for testing, and the hand-written methods the fit-data
# rounds of reports/repair.md read: all get the same checks
CORPORA = [SHIPPED, TEST_METHODS, BENCHMARKS / "extra_java_methods.jsonl", BENCHMARKS / "more_java_methods.jsonl"]


@pytest.fixture(scope="module", params=CORPORA, ids=lambda p: p.stem)
def corpus(request):
    return load_methods(request.param)


def test_corpora_share_no_method_name():
    names = [m.name for path in CORPORA for m in load_methods(path)]
    assert len(set(names)) == len(names)


def test_shipped_corpus_shape(corpus):
    assert len(corpus) >= 30
    names = [m.name for m in corpus]
    assert len(set(names)) == len(names)
    categories = Counter(m.category for m in corpus)
    assert {"strings", "arrays", "collections", "maps", "math", "recursion", "streams", "exceptions"} <= set(categories)
    for m in corpus:
        assert 3 <= len(m.java.splitlines()) <= 40, m.name
        assert re.match(rf"public static [^(]*\b{m.name}\(", m.java), m.name
    assert (SHIPPED.parent / "DATA_LICENSE.md").read_text().count("Apache") >= 1


@pytest.mark.skipif(shutil.which("javac") is None, reason="needs javac (a JDK) to compile the corpus")
def test_shipped_corpus_compiles(corpus, tmp_path):
    body = "\n\n".join(m.java for m in corpus)
    (tmp_path / "Corpus.java").write_text("import java.util.*;\nimport java.util.stream.*;\nimport java.util.function.*;\n"
                                          "import java.time.*;\n\npublic class Corpus {\n" + body + "\n}\n")
    done = subprocess.run(["javac", "-d", str(tmp_path / "out"), str(tmp_path / "Corpus.java")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_shipped_corpus_is_disjoint_from_gtranseval(corpus, gtranseval):
    samples = load_benchmark(gtranseval)
    assert find_overlaps(corpus, samples) == []  # no shared name, no BLEU-4 above 0.5
    score, method, sample = max_bleu(corpus, samples)
    assert 0.3 < score <= BLEU_THRESHOLD, (method, sample)  # the check does look: typical Java shares n-grams


def test_overlap_check_catches_a_copied_benchmark_method(tiny_bench, corpus):
    samples = load_benchmark(tiny_bench)
    copied = JavaMethod("tripleSum", samples[0].java_source)  # same program, camelCase name
    renamed = JavaMethod("addThree", samples[0].java_source.replace("triple_sum", "add_three"))
    found = {(o.method, o.kind) for o in find_overlaps([copied, renamed, corpus[0]], samples)}
    assert found == {("tripleSum", "name"), ("tripleSum", "bleu"), ("addThree", "bleu")}
    tokens = java_tokens("int f(int a) { return a + 1; } // comment")
    assert tokens == ["int", "f", "(", "int", "a", ")", "{", "return", "a", "+", "1", ";", "}"]
    assert bleu4(tokens, tokens) == pytest.approx(1.0) and bleu4(tokens, ["x"]) == 0.0


JAVA_FILE = '''
package demo;
import java.util.*;

public class Tools {
    private int count;
    static final int LIMIT = 10;

    /** Sum with a brace in a comment: { */
    public static int sumAll(int[] values) {
        int total = 0;
        for (int v : values) {
            total += v;
        }
        return total;
    }

    public static String braces(String s) {
        String open = "{{{";
        return s.replace("}", open);
    }

    static <T extends Comparable<T>> T maxOf(List<T> items) {
        T best = items.get(0);
        for (T item : items) if (item.compareTo(best) > 0) best = item;
        return best;
    }

    public static int usesField(int x) {
        return x + LIMIT;
    }

    public static int callsSibling(int x) {
        int y = sumAll(new int[] {x});
        return y * 2;
    }

    public int instance(int x) {
        return x + count;
    }

    public static Widget makeWidget(int size) {
        return new Widget(size);
    }

    public static long fact(int n) {
        return n <= 1 ? 1 : n * fact(n - 1);
    }

    public static int lambdas(List<Integer> xs) {
        return xs.stream().mapToInt(x -> x * 2).filter(v -> v > 3).sum();
    }
}
'''


def test_harvester_keeps_standalone_static_methods(tmp_path):
    found = {}
    for method, why in methods_in(JAVA_FILE, "Tools.java"):
        found[method.name if method else why] = method
    kept = {name for name, m in found.items() if m is not None}
    assert kept == {"sumAll", "braces", "maxOf", "fact", "lambdas"}
    assert {"names LIMIT", "calls sumAll()", "names Widget"} <= set(found)  # a field, a sibling, a project type
    assert found["braces"].java.startswith("public static String braces(String s) {")
    assert '"{{{"' in found["braces"].java and "comment" not in found["sumAll"].java
    (tmp_path / "src" / "demo").mkdir(parents=True)
    (tmp_path / "src" / "demo" / "Tools.java").write_text(JAVA_FILE)
    methods, stats = harvest(tmp_path / "src", min_lines=4, max_lines=8)  # fact and lambdas have 3 lines
    assert {m.name for m in methods} == {"sumAll", "braces", "maxOf"} and stats.skipped["size"] == 2
    with zipfile.ZipFile(tmp_path / "src.zip", "w") as zf:
        zf.writestr("demo/Tools.java", JAVA_FILE)
        zf.writestr("demo/README.txt", "not java")
    zipped, zstats = harvest(tmp_path / "src.zip")
    assert zstats.files == 1 and {m.name for m in zipped} == kept
    assert all(m.origin == "demo/Tools.java" for m in zipped)
    with pytest.raises(NoseError, match="does not exist"):
        harvest(tmp_path / "missing")
    with pytest.raises(NoseError, match="min-lines"):
        harvest(tmp_path / "src", min_lines=9, max_lines=3)


def test_harvest_cli_writes_methods_and_excludes_the_benchmark(tmp_path, tiny_bench):
    from typer.testing import CliRunner

    from nose.cli.app import app

    src = tmp_path / "src"
    src.mkdir()
    (src / "Tools.java").write_text(JAVA_FILE)
    # a benchmark sample's method, pasted into the tree, must be dropped with --exclude-benchmark
    sample = load_benchmark(tiny_bench)[2]
    (src / "Copied.java").write_text("class Copied {\n" + sample.java_source + "\n}\n")
    out = tmp_path / "methods.jsonl"
    res = CliRunner().invoke(app, ["data", "harvest", str(src), "--out", str(out), "--exclude-benchmark",
                                   str(tiny_bench), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    names = [json.loads(line)["name"] for line in out.read_text().splitlines()]
    assert summary["excluded_for_overlap"] == 1 and sample.java_entry_point not in names and "sumAll" in names
    assert load_methods(out)[0].origin


def test_transcript_sources_and_splits():
    assert transcripts.parse_source("translate") == (None, "train")
    assert transcripts.parse_source("translate:heldout") == (None, "heldout")
    assert transcripts.parse_source("translate:runs/m.jsonl") == ("runs/m.jsonl", "train")
    assert transcripts.parse_source("translate:runs/m.jsonl:heldout") == ("runs/m.jsonl", "heldout")
    assert not transcripts.is_transcript_source("translated.jsonl") and transcripts.is_transcript_source("translate")
    assert transcripts.snake_case("sumOfOddCubes") == "sum_of_odd_cubes"  # the task's naming, as transcripts use it
    splits = Counter(transcripts.split_of(m.name) for m in load_methods())
    assert 0.12 < splits["heldout"] / sum(splits.values()) < 0.28  # about HELDOUT_PERCENT %
    assert transcripts.answer_parses("```python\ndef f(x):\n    return x\n```")
    assert not transcripts.answer_parses("```python\ndef f(x)\n    return x\n```")


def test_transcripts_are_cached_resumed_and_counted(tok, tmp_path, monkeypatch):
    """A tiny random model answers with noise: every answer is dropped, and that is said clearly."""
    import nose.model.generation as generation

    monkeypatch.setenv("NOSE_CACHE", str(tmp_path / "cache"))
    lm = tiny_loaded("llama", tok)
    methods = load_methods()[:5]
    calls = []
    real = generation.generate_transformers
    monkeypatch.setattr(generation, "generate_transformers",
                        lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    settings = transcripts.TranscriptSettings(max_new_tokens=4, batch_size=2)
    first = transcripts.generate_transcripts(lm, methods[:3], settings)
    assert sum(calls) == 3 and [r["name"] for r in first.records] == [m.name for m in methods[:3]]
    again = transcripts.generate_transcripts(lm, methods, settings)  # two new methods only
    assert sum(calls) == 5 and len(again.records) == 5
    meta = json.loads((again.folder / "transcripts.json").read_text())
    assert meta["generated"] == 5 and meta["dropped_unparsable"] == again.summary()["dropped"]
    assert meta["model"]["weights_sha256"] == lm.weights_sha256 and meta["answer_tokens_per_second"] > 0
    rec = again.records[0]
    assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant"]
    assert methods[0].java in rec["messages"][1]["content"]
    from nose.tasks.java_python.corpus import write_methods

    write_methods(methods, tmp_path / "five.jsonl")
    with pytest.raises(NoseError, match="holds no usable transcript"):
        transcripts.resolve_source(f"translate:{tmp_path / 'five.jsonl'}", lm, settings)
    assert sum(calls) == 5  # all five came from the cache
    assert transcripts.resolve_source("stdlib", lm) == "stdlib"


def test_a_search_answers_only_the_methods_its_rows_need(tok, tmp_path, monkeypatch):
    """needed=3 with batches of 2: the train split's first four methods, in corpus order, are
    answered and make the view; a later full run answers only the rest."""
    import nose.model.generation as generation
    from nose.tasks.java_python.corpus import write_methods

    monkeypatch.setenv("NOSE_CACHE", str(tmp_path / "cache"))
    lm = tiny_loaded("llama", tok)
    methods = load_methods()[:14]
    train = [m for m in methods if transcripts.split_of(m.name) == "train"]
    write_methods(methods, tmp_path / "m.jsonl")
    answered = []  # a tiny random model's answers never parse: answer with a function that does

    def generate(model, tokenizer, prompts, gen, **kwargs):
        answered.extend(prompts)
        return [("```python\ndef f(x):\n    return x\n```",) for _ in prompts]

    monkeypatch.setattr(generation, "generate_transformers", generate)
    settings = transcripts.TranscriptSettings(max_new_tokens=4, batch_size=2)
    view = transcripts.resolve_source(f"translate:{tmp_path / 'm.jsonl'}", lm, settings, needed=3)
    names = [json.loads(line)["name"] for line in Path(view).read_text().splitlines()]
    assert names == [m.name for m in train[:4]] and len(answered) == 4
    transcripts.resolve_source(f"translate:{tmp_path / 'm.jsonl'}", lm, settings)
    assert len(answered) == len(methods)  # the four are reused


@pytest.mark.slow
def test_real_model_transcripts_calibrate_on_answers():
    """SmolLM2 translates a few shipped methods; their train split is a chat calibration source."""
    from nose.model.loading import load_model

    lm = load_model("smollm2-135m")
    methods = [m for m in load_methods() if transcripts.split_of(m.name) == "train"][:6]
    result = transcripts.generate_transcripts(lm, methods, transcripts.TranscriptSettings(max_new_tokens=96,
                                                                                          batch_size=6))
    assert result.summary()["parses"] >= 1
    path = result.write_split("train", "test")
    cal = build_calibration(lm.tokenizer, str(path), samples=6, seq_len=256, count="answer")
    assert 0 < cal.counted_tokens < cal.tokens and cal.describe()["count"] == "answer"


def test_complete_transcripts_answer_the_function_corpus_in_the_humaneval_prompt_and_mix(tok, tmp_path, monkeypatch):
    """``complete``: the shipped docstring problems in HumanEval's prompt (the answer opened with
    its response prefix), split by name; ``translate+complete``: one file with both train splits;
    its held-out counterpart mixes both held-out splits."""
    import nose.model.generation as generation
    from nose.tasks import HUMANEVAL
    from nose.tasks.java_python.corpus import write_methods

    monkeypatch.setenv("NOSE_CACHE", str(tmp_path / "cache"))
    lm = tiny_loaded("llama", tok)
    write_methods(load_methods()[:10], tmp_path / "m.jsonl")

    def generate(model, tokenizer, prompts, gen, answer_start=""):
        return [("def f(x):\n    return x\n```",) for _ in prompts]

    monkeypatch.setattr(generation, "generate_transformers", generate)
    settings = transcripts.TranscriptSettings(max_new_tokens=4, batch_size=8)
    view = transcripts.resolve_source("complete", lm, settings)
    records = [json.loads(line) for line in Path(view).read_text().splitlines()]
    train = [p for p in HUMANEVAL.corpus() if transcripts.split_of(p.name) == "train"]
    assert [r["name"] for r in records] == [p.entry for p in train] and 0 < len(train) < len(HUMANEVAL.corpus())
    user, answer = records[0]["messages"][-2]["content"], records[0]["messages"][-1]["content"]
    assert train[0].prompt.strip() in user and "markdown code block" in user
    assert answer == HUMANEVAL.prompt.answer_start + "def f(x):\n    return x\n```"

    mix = f"translate:{tmp_path / 'm.jsonl'}+complete"
    assert transcripts.is_transcript_source(mix) and not transcripts.is_transcript_source("translate+stdlib")
    assert transcripts.heldout_of(mix) == f"translate:{tmp_path / 'm.jsonl'}:heldout+complete:heldout"
    both = Path(transcripts.resolve_source(mix, lm, settings)).read_text().splitlines()
    java = Path(transcripts.resolve_source(f"translate:{tmp_path / 'm.jsonl'}", lm, settings)).read_text().splitlines()
    assert both == java + Path(view).read_text().splitlines() and java
    with pytest.raises(NoseError, match="held-out split"):
        transcripts.heldout_of("complete:heldout")


def test_the_heldout_test_methods_are_never_fit_data():
    """The budget's and benchmarks/heldout_tests.py's default methods: the shipped held-out split and
    the test-only methods, none of which a training split (what --data translate fits on) holds."""
    from nose.data.transcripts import split_of
    from nose.evaluate.heldout_tests import heldout_methods

    methods = heldout_methods()
    shipped_heldout = [m for m in load_methods() if split_of(m.name) == "heldout"]
    assert methods == shipped_heldout + load_methods(TEST_METHODS) and len(methods) == 170
    train = {m.name for m in load_methods() if split_of(m.name) == "train"}
    assert not train & {m.name for m in methods}
