"""The tests' warm interpreter (tests/warm.py) behaves as a fresh ``python`` where the tests look."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from . import warm


@pytest.fixture(autouse=True)
def _warm_path(monkeypatch):
    """These tests are of the warm path, also in a run that sends the others' requests to fresh interpreters."""
    monkeypatch.delenv(warm.COLD, raising=False)

# What a process sees of itself: compared between a child of the warm server and a fresh interpreter.
_SELF = """
import atexit, os, sys
atexit.register(lambda: print("atexit ran", flush=True))
print(__name__, sys.argv, os.getcwd(), os.environ.get("BOTTLENECK_TEST_MARK"), sys.path[0] == "", flush=True)
print("to stderr", file=sys.stderr)
raise SystemExit(int(sys.argv[1]))
"""


def test_a_child_sees_what_a_fresh_interpreter_sees(tmp_path, monkeypatch):
    env = {**os.environ, "BOTTLENECK_TEST_MARK": "m1"}  # a call-time variable: still warm
    child = warm.run([sys.executable, "-c", _SELF, "3"], env=env, cwd=tmp_path)
    monkeypatch.setenv(warm.COLD, "1")
    fresh = warm.run([sys.executable, "-c", _SELF, "3"], env=env, cwd=tmp_path)
    assert (child.returncode, child.stdout) == (fresh.returncode, fresh.stdout) == (
        3, f"__main__ ['-c', '3'] {tmp_path} m1 True\natexit ran\n")
    assert "to stderr" in child.stderr and "to stderr" in fresh.stderr


def test_children_come_from_the_server_unless_the_environment_differs(tmp_path):
    parent = "import os; print(os.getppid())"
    warm_pid = int(warm.run([sys.executable, "-c", parent]).stdout)
    assert warm_pid != os.getpid() and warm_pid == warm._SERVER.proc.pid
    later = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "BOTTLENECK_FAULT": "start"}  # read when code runs
    assert int(warm.run([sys.executable, "-c", parent], env=later).stdout) == warm_pid
    for name, value in (("KERAS_BACKEND", "jax"),  # read as Keras is imported: the server's imports predate it
                        ("TF_NUM_INTRAOP_THREADS", "2")):  # read by TensorFlow's C++: the server cannot see it
        other = {**os.environ, name: value}
        assert int(warm.run([sys.executable, "-c", parent], env=other).stdout) == os.getpid(), name


def test_signals_and_exit_codes_are_a_real_processes(tmp_path):
    killed = warm.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert killed.returncode == -9
    interrupted = warm.run([sys.executable, "-c", "raise KeyboardInterrupt"])
    assert interrupted.returncode == -2 and "KeyboardInterrupt" in interrupted.stderr  # as Python dies of it
    crashed = warm.run([sys.executable, "-c", "1 / 0"])
    assert crashed.returncode == 1 and "ZeroDivisionError" in crashed.stderr
    module = warm.run([sys.executable, "-m", "bottleneck", "--help"])
    assert module.returncode == 0 and "extract" in module.stdout


def test_a_grandchild_carries_the_requests_environment(tmp_path):
    """What tests find leftover processes by: the environment a process started with (/proc/PID/environ)."""
    code = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
            "print(p.pid, flush=True); open(sys.argv[1], 'wb').write(open(f'/proc/{p.pid}/environ', 'rb').read()); "
            "p.kill()")
    done = warm.run([sys.executable, "-c", code, str(tmp_path / "env")], env={**os.environ, "BOTTLENECK_TEST_MARK": "m2"})
    assert done.returncode == 0, done.stderr
    assert b"BOTTLENECK_TEST_MARK=m2" in (tmp_path / "env").read_bytes().split(b"\0")


def test_popen_polls_and_times_out_like_subprocess():
    proc = warm.popen([sys.executable, "-c", "import sys; sys.stdin.read(); import time; time.sleep(2)"])
    assert proc.poll() is None
    try:
        proc.wait(timeout=0.1)
        raise AssertionError("wait returned before the child ended")
    except subprocess.TimeoutExpired:
        pass
    proc.kill()
    assert proc.wait(timeout=30) == -9


def test_a_bare_child_has_keras_and_never_imported_the_package(tmp_path):
    """What the tests of exported models (run without this package) rely on."""
    code = ("import os, sys; print(os.getppid(), 'keras' in sys.modules, "
            "sorted(m for m in sys.modules if m.split('.')[0] == 'bottleneck'))")
    bare = warm.run([sys.executable, "-c", code], cwd=tmp_path, bare=True)
    assert bare.returncode == 0, bare.stderr
    parent, has_keras, ours = bare.stdout.split(" ", 2)
    assert int(parent) not in (os.getpid(), warm._SERVER.proc.pid)  # the bare server, not the full one
    assert has_keras == "True" and ours.strip() == "[]"
    full = warm.run([sys.executable, "-c", code], cwd=tmp_path)
    assert "'bottleneck.cli'" in full.stdout  # the full server's children have it imported


def test_a_script_runs_as_python_runs_it(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import os, sys\nprint(__name__, sys.argv[1:], sys.path[0] == os.path.dirname(__file__))\n"
                      "print(os.getppid(), file=sys.stderr)\nraise SystemExit(4)\n")
    child = warm.run([sys.executable, str(script), "a", "b"], cwd=tmp_path, bare=True)
    fresh = subprocess.run([sys.executable, str(script), "a", "b"], cwd=tmp_path, capture_output=True, text=True)
    assert (child.returncode, child.stdout) == (fresh.returncode, fresh.stdout) == (4, "__main__ ['a', 'b'] True\n")
    assert int(child.stderr) != os.getpid() and int(fresh.stderr) == os.getpid()  # a child of the server, and not
