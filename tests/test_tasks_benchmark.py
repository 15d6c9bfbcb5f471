"""benchmarks/tasks.py's paired comparisons between repaired configurations."""


def test_paired_compares_later_with_earlier_configs_on_shared_problems(benchmark_script):
    tasks = benchmark_script("tasks")
    row = lambda task, config, passed: {"task": task, "config": config, "passed": passed}  # noqa: E731
    rows = [row("humaneval", "intact", {"a": True, "b": True, "c": True}),
            row("humaneval", "k6-skip", {"a": False, "b": True, "c": False}),
            row("humaneval", "k6-mixed", {"a": True, "b": False}),  # a stopped run: two problems answered
            row("java-python", "intact", {"x": True}),
            row("java-python", "k6-linear", {"x": True})]
    pairs = tasks.paired(rows)
    assert [(p["task"], p["a"], p["b"]) for p in pairs] == [("humaneval", "k6-mixed", "k6-skip")]
    (p,) = pairs
    assert (p["samples"], p["gained"], p["lost"]) == (2, 1, 1)
    assert p["a_minus_b"][0] == 0.0
    assert "| humaneval (2) | k6-mixed − k6-skip | +0.0" in tasks.pairs_markdown(pairs)
