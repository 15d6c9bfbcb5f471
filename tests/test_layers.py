"""The package's layers point down only: every import (module level or inside a function) goes
to the importing module's own layer or a lower one, in the order the README's Layout gives."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nose

PACKAGE = Path(nose.__file__).parent
LAYERS = [  # lowest first
    ("nose", "nose.errors", "nose.files"),
    ("nose.model",),
    ("nose.engines",),
    ("nose.sandbox",),
    ("nose.tasks",),
    ("nose.data",),
    ("nose.replace",),
    ("nose.search",),
    ("nose.evaluate",),
    ("nose.shrink",),
    ("nose.report",),
    ("nose.testing",),
    ("nose.cli", "nose.__main__"),
]


def layer_of(module: str) -> int:
    """The layer of the longest prefix of ``module`` that a layer names."""
    best, rank = "", None
    for k, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, rank = name, k
    assert rank is not None, f"{module} is in no layer; add it to LAYERS and the README's Layout"
    return rank


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "nose":
            found += [f"{node.module}.{a.name}" if _is_module(f"{node.module}.{a.name}") else node.module
                      for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "nose"]
    return found


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def test_every_import_points_down_or_sideways():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        for target in imports(path):
            if layer_of(target) > layer_of(source):
                upward.append(f"{source} imports {target}")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from nose.shrink.export import check_target\n")
    assert imports(bad) == ["nose.shrink.export"] and layer_of("nose.shrink.export") > layer_of("nose.model.loading")


def test_modules_import_first_in_a_fresh_interpreter():
    """Each once failed or could fail when imported before its package's neighbours (a cycle)."""
    for module in ("nose.replace.ridge", "nose.data.calibration", "nose.data.transcripts", "nose.evaluate.fidelity",
                   "nose.shrink.pipeline", "nose.sandbox"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
        assert done.returncode == 0, f"import {module}: {done.stderr.strip().splitlines()[-1:]}"
