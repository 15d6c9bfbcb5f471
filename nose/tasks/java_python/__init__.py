"""Java→Python translation, measured on G-TransEval (read from a path; never shipped).

- :mod:`.prompt`: what the model is asked;
- :mod:`.benchmark`: the G-TransEval reader, subsets, the upstream harness and the verdicts;
- :mod:`.extraction`: the code in an answer, the tested function, Java→Python names;
- :mod:`.corpus`, :mod:`.harvest`, :mod:`.overlap`: the Java methods the project ships (and
  harvests from JDK-style trees) as on-task inputs for transcripts, checked disjoint from the
  benchmark;
- :mod:`.java_tests`: held-out unit tests made by running the Java (a selection score the
  project owns).
"""

from __future__ import annotations

from nose.tasks.java_python.benchmark import build_program, find_root, load_benchmark, select, verdict
from nose.tasks.java_python.corpus import load_methods
from nose.tasks.code import extract_code
from nose.tasks.java_python.extraction import entry_function
from nose.tasks.java_python.overlap import find_overlaps
from nose.tasks.java_python.prompt import PROMPT
from nose.tasks.task import Task

TASK = Task(
    name="java-python",
    summary="G-TransEval Java→Python translation, tested by the benchmark's own harness",
    root=find_root,
    load=load_benchmark,
    select=select,
    prompt=PROMPT,
    fields=lambda s: {"java": s.java_source, "name": s.name, "entry_point": s.python_entry_point},
    extract=extract_code,
    entry_point=lambda code, s: entry_function(code, s.python_entry_point, s.java_entry_point),
    program=build_program,
    verdict=verdict,
    reference=lambda s: s.python_reference,
    corpus=load_methods,
    overlap=find_overlaps,
)
