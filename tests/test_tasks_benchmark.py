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


def test_earlier_record_stands_in_only_where_intact_reproduces(tmp_path, benchmark_script, monkeypatch):
    """``--earlier``: a configuration with no answers under --work takes its row from an earlier
    record (G-TransEval answers are not kept in the repository), paired with this run's intact;
    an intact that passes other problems than the record's refuses the pairing."""
    import json
    import sys

    import pytest

    tasks = benchmark_script("tasks")
    work = tmp_path / "work"
    (work / "java-python-intact").mkdir(parents=True)
    sample = lambda i, ok: json.dumps({"id": i, "passed": [ok]})  # noqa: E731
    (work / "java-python-intact" / "samples.jsonl").write_text(
        "\n".join([sample("a", True), sample("b", True), sample("c", False)]) + "\n")
    earlier = tmp_path / "earlier.json"
    row = lambda config, passed: {"task": "java-python", "config": config, "complete": True,  # noqa: E731
                                  "evaluation": f"runs/tasks/java-python-{config}", "passed": passed}
    earlier.write_text(json.dumps({"rows": [row("intact", {"a": True, "b": True, "c": False}),
                                            row("k3-mixed", {"a": True, "b": False, "c": False})]}))
    out = tmp_path / "out.json"
    argv = ["tasks.py", "--configs", "intact,k3-mixed,k3-skip", "--tasks", "", "--benchmark", str(tmp_path),
            "--work", str(work), "--collect-only", "--earlier", str(earlier), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    tasks.main()
    rows = {r["config"]: r for r in json.loads(out.read_text())["rows"]}
    assert sorted(rows) == ["intact", "k3-mixed"]  # k3-skip: neither answered here nor in the record
    assert rows["k3-mixed"]["from_record"] == str(earlier)
    assert rows["k3-mixed"]["kept"] == 0.5 and rows["k3-mixed"]["evaluation"] == "runs/tasks/java-python-k3-mixed"

    (work / "java-python-intact" / "samples.jsonl").write_text(
        "\n".join([sample("a", True), sample("b", False), sample("c", False)]) + "\n")
    with pytest.raises(SystemExit, match=r"intact differs from .* on 1 problems \(b\)"):
        tasks.main()
