import os
import time

import pytest

from nose.errors import NoseError
from nose.evaluate.sandbox import Limits, run_many, run_python

QUICK = Limits(wall_s=3, cpu_s=3, memory_mb=512)


def test_normal_program_runs_as_main():
    out = run_python("import math\nif __name__ == '__main__':\n    print(math.factorial(5))\n")
    assert out.returncode == 0 and out.stdout == "120\n" and not out.timed_out


def test_infinite_loop_is_killed_at_the_limit():
    t0 = time.perf_counter()
    out = run_python("while True:\n    pass\n", QUICK)
    assert out.timed_out and out.returncode is None
    assert time.perf_counter() - t0 < 6


def test_sleeping_process_group_is_killed():
    out = run_python("import time\ntime.sleep(60)\n", Limits(wall_s=1))
    assert out.timed_out


def test_memory_bomb_is_contained():
    out = run_python("x = bytearray(8 * 1024 ** 3)\nprint('allocated')\n", QUICK)
    assert "allocated" not in out.stdout and "MemoryError" in out.stderr


def test_fork_bomb_and_subprocesses_are_refused():
    out = run_python("import os\nwhile True:\n    os.fork()\n", QUICK)
    assert out.returncode != 0 and "os.fork is not allowed" in out.stderr
    out = run_python("import subprocess\nsubprocess.run(['true'])\n", QUICK)
    assert "subprocess.Popen is not allowed" in out.stderr
    out = run_python("import os\nos.system('true')\n", QUICK)
    assert "os.system is not allowed" in out.stderr


def test_writes_outside_the_sandbox_are_refused(tmp_path):
    target = tmp_path / "escape.txt"
    out = run_python(f"open({str(target)!r}, 'w').write('x')\n", QUICK)
    assert "outside the sandbox folder" in out.stderr and not target.exists()
    victim = tmp_path / "keep.txt"
    victim.write_text("safe")
    out = run_python(f"import os\nos.remove({str(victim)!r})\n", QUICK)
    assert victim.read_text() == "safe"
    out = run_python("open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())\n", QUICK)
    assert out.stdout == "ok\n"


def test_secret_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("NOSE_TEST_SECRET", "hunter2")
    out = run_python("import os\nprint(os.environ.get('NOSE_TEST_SECRET'))\nprint(sorted(os.environ))\n", QUICK)
    assert "hunter2" not in out.stdout and out.stdout.startswith("None")


def test_network_ctypes_and_output_floods_are_contained():
    assert "not allowed" in run_python("import socket\nsocket.socket()\n", QUICK).stderr
    assert "ctypes is not allowed" in run_python("import ctypes\n", QUICK).stderr
    out = run_python("while True:\n    print('x' * 100000)\n", Limits(wall_s=5, file_mb=1))
    assert len(out.stdout) <= 1 << 16 and not out.timed_out


def test_input_does_not_hang():
    out = run_python("input()\n", QUICK)
    assert not out.timed_out and "EOFError" in out.stderr


def test_one_failure_is_that_samples_result():
    outs = run_many(["print(1)", "raise SystemExit(3)", "while True: pass", "print(2)"], QUICK, workers=2)
    assert [o.stdout for o in outs] == ["1\n", "", "", "2\n"]
    assert outs[1].returncode == 3 and outs[2].timed_out
    with pytest.raises(NoseError, match="--workers must be at least 1"):
        run_many(["print(1)"], QUICK, workers=0)
    assert os.getpid()  # the toolkit's process is still here
