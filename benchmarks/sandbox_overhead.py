"""Per-sample cost of the OS isolation: the same test programs with bubblewrap and without.

Each program is a benchmark sample's full test file (the reference translation, ``testfunc``,
the harness), run one at a time (``--workers 1``) so the figure is latency, not throughput;
the kinds alternate, program by program, so all see the same machine load. ``--baseline REV``
adds the sandbox module of an earlier git revision (read with ``git show``) as a third kind, so
a change to the sandbox is measured side by side with what it replaces. Writes
``reports/sandbox.md``.

    python benchmarks/sandbox_overhead.py --benchmark <G-TransEval clone or the tiny one> --repeats 5 --baseline REV
"""

from __future__ import annotations

import argparse
import os
import platform
import importlib.util
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nose.tasks.java_python.benchmark import load_benchmark  # noqa: E402
from nose.tasks.java_python.benchmark import build_program, verdict  # noqa: E402
from nose.sandbox import Isolation, Limits, probe_isolation, run_python  # noqa: E402
from nose.testing import write_tiny_benchmark  # noqa: E402


def baseline_module(rev: str):
    """``nose/sandbox/__init__.py`` as it was at ``rev``, imported under another name."""
    source = subprocess.run(["git", "show", f"{rev}:nose/sandbox/__init__.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "baseline_sandbox.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_sandbox", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", type=Path, help="a G-TransEval clone (default: the tests' tiny benchmark)")
    ap.add_argument("--limit", type=int, default=40, help="programs (the first of each type, in turn)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline", help="also time the sandbox of this git revision (e.g. HEAD~3)")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "sandbox.md")
    args = ap.parse_args()
    bench = args.benchmark or write_tiny_benchmark(Path(tempfile.mkdtemp()))
    samples = load_benchmark(bench)[: args.limit]
    programs = [build_program(s.python_reference, s.python_entry_point, s) for s in samples]
    iso, why = probe_isolation()
    if iso is None:
        sys.exit(f"no working bwrap: {why}")
    kinds = {"bwrap": lambda p: run_python(p, Limits(), isolation=iso),
             "none": lambda p: run_python(p, Limits(), isolation=Isolation.none())}
    if args.baseline:
        old = baseline_module(args.baseline)
        old_iso = old.Isolation("bwrap", iso.path, iso.version)
        kinds[f"bwrap at {args.baseline}"] = lambda p: old.run_python(p, old.Limits(), isolation=old_iso)
    seconds = {k: [] for k in kinds}
    verdicts = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for program in programs:
            for name, run in kinds.items():
                out = run(program)
                seconds[name].append(out.seconds)
                verdicts[name].append(verdict(out))
    med = {k: statistics.median(v) for k, v in seconds.items()}
    p90 = {k: statistics.quantiles(v, n=10)[-1] for k, v in seconds.items()}
    same = all(v == verdicts["none"] for v in verdicts.values())
    lines = [
        "# Sandbox overhead: bubblewrap isolation per test program",
        "",
        f"Command: `python benchmarks/sandbox_overhead.py --benchmark {args.benchmark or '(tiny)'} "
        f"--limit {args.limit} --repeats {args.repeats}" + (f" --baseline {args.baseline}`" if args.baseline else "`"),
        "",
        f"Machine: {os.cpu_count()} CPU cores, Python {platform.python_version()}, run as "
        f"{'root (each program drops to a uid of its own)' if os.geteuid() == 0 else 'an ordinary user'}.",
        "",
        f"{len(programs)} benchmark test programs (reference translation + harness), each run "
        f"{args.repeats} times per kind, the kinds alternating, one at a time. bwrap: "
        f"{iso.path} ({iso.version}); per-sample limits: {iso.describe()['sample_limits']}. "
        f"Verdicts identical across kinds: {same} "
        f"({verdicts['bwrap'].count('passed')} of {len(verdicts['bwrap'])} passed).",
        "",
        "| isolation | median seconds per program | 90th percentile |",
        "|---|---:|---:|",
        *(f"| {k} | {med[k]:.3f} | {p90[k]:.3f} |" for k in kinds),
        "",
        f"Overhead of the isolation: {1000 * (med['bwrap'] - med['none']):+.0f} ms per program (median), "
        f"{100 * (med['bwrap'] - med['none']) / 10:.2f} % of the 10 s test budget.",
        *([f"Against the sandbox at {args.baseline}: {med['bwrap'] / med[f'bwrap at {args.baseline}']:.2f}x "
           f"its median time per program."] if args.baseline else []),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
