"""Java methods to translate: the corpus shipped with nose, or any JSONL of methods.

The shipped corpus (``java_methods.jsonl`` beside this file) holds methods written for this
project, one per record: ``name`` (the method name), ``category`` and ``java`` (the source, a
``public static`` method, 3 to 40 lines, compiling inside a class with ``java.util.*``,
``java.util.stream.*`` and ``java.time.*`` imported). Licence: Apache-2.0, like the toolkit (see
``DATA_LICENSE.md``). It is checked disjoint from G-TransEval by name and token overlap
(``tests/test_data.py``). Any other JSONL with ``name`` and ``java`` per record (for example the
output of ``nose data harvest``) can stand in for it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from nose.errors import NoseError
from nose.files import atomic_file, jsonl_records

SHIPPED = Path(__file__).parent / "java_methods.jsonl"
# Methods written only to be tested on (never translated into fit or healing data): with the shipped
# corpus's held-out split, the project's held-out Java tests (nose.evaluate.heldout_tests).
TEST_METHODS = Path(__file__).parent / "test_java_methods.jsonl"


@dataclass(frozen=True)
class JavaMethod:
    name: str  # the method's name, as declared
    java: str  # its source
    category: str = ""
    origin: str = ""  # where a harvested method came from (file inside the tree)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.java.encode()).hexdigest()

    def to_record(self) -> dict:
        return {k: v for k, v in (("name", self.name), ("category", self.category), ("java", self.java),
                                  ("origin", self.origin)) if v}


def load_methods(path: str | Path | None = None) -> list[JavaMethod]:
    """Methods from a JSONL file (``name`` and ``java`` per record); the shipped corpus by default."""
    path = Path(path).expanduser() if path else SHIPPED
    if not path.exists():
        raise NoseError(f"Java methods file {path} does not exist; pass a JSONL with name and java per record")
    methods = []
    for lineno, rec in jsonl_records(path, "a Java method record (name, java)"):
        if not isinstance(rec.get("name"), str) or not isinstance(rec.get("java"), str):
            raise NoseError(f"{path}:{lineno} needs string fields 'name' and 'java'")
        methods.append(JavaMethod(rec["name"], rec["java"], str(rec.get("category", "")), str(rec.get("origin", ""))))
    if not methods:
        raise NoseError(f"{path} holds no Java methods")
    return methods


def methods_sha256(methods: list[JavaMethod]) -> str:
    h = hashlib.sha256()
    for m in methods:
        h.update(m.sha256.encode())
    return h.hexdigest()


def write_methods(methods: list[JavaMethod], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        for m in methods:
            f.write(json.dumps(m.to_record()) + "\n")
