"""A warm interpreter for the tests' command lines: ``python -m bottleneck ...`` and ``python -c
CODE`` without paying TensorFlow's import (about 5 s of CPU) in each new process.

A server, started once per test process with the suite's environment, imports Keras and the
package, then forks one child per request. The child is a real process, with its own pid, that
real signals kill and whose own children are real processes; it takes the request's
environment, folder, argv and standard streams, and runs the module (as ``-m`` does, with
``runpy``) or the code, then Python's exit steps (threads joined, ``atexit``). A request whose
environment differs from the server's in a variable the server's imports read (it records
them) or one native code reads (``NATIVE``) runs in a fresh interpreter instead; any other
variable is the request's, read when the code reads it. ``BOTTLENECK_TEST_COLD=1`` sends every
request to a fresh interpreter (to check that the tests pass the slow way too).

Requests with ``bare=True`` (an exported model run without this package) go to a second
server, forked from the first once Keras alone is imported: its children have never imported
``bottleneck``, as a fresh interpreter that imports Keras has not. A request may also name a
script file (``[python, path, ...]``), run as ``python path`` runs it.

The server holds no thread of its own; TensorFlow's import starts one that waits idle, and
glibc and Python make the fork safe around their own locks. The tests that need a clean
interpreter (what is imported lazily, another Keras backend, multiprocessing's
view of a script) start one themselves with ``subprocess``."""
from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BARE = ["keras"]  # what the bare server imports (then forks), before the rest of PRELOAD
PRELOAD = [*BARE, "bottleneck.cli", "bottleneck.extraction.run", "bottleneck.experiments.grid"]
# Read by native code (TensorFlow's C++, OpenMP, the loader), where the server cannot see it read: must match too.
NATIVE = ("TF_", "KMP_", "OMP_", "MKL_", "OPENBLAS_", "LD_", "CUDA", "XLA_", "PYTHON")
LATER = {"PYTHONBREAKPOINT"}  # read by each breakpoint() call (Ray's driver sets it in its own environment)
COLD = "BOTTLENECK_TEST_COLD"
BASE_ENV = dict(os.environ)  # imported by tests/conftest.py after it sets the suite's environment


# --- the client: used by the tests -------------------------------------------------------------

class WarmProcess:
    """The few ``subprocess.Popen`` methods the tests use, for a child of the server."""

    def __init__(self, args: list[str], conn: socket.socket, out: str, err: str):
        self.args, self._conn, self._out, self._err = args, conn, out, err
        self._buf = b""
        self.pid = json.loads(self._line(None))["pid"]
        self.returncode: int | None = None
        self.stdout = self.stderr = None

    def _line(self, timeout: float | None) -> bytes | None:
        """The server's next message, or None if none came within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._conn], [], [], left)[0]:
                return None
            more = self._conn.recv(4096)
            if not more:
                raise RuntimeError(f"the warm interpreter's server died while pid {getattr(self, 'pid', '?')} ran")
            self._buf += more
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def poll(self) -> int | None:
        self._done(0)
        return self.returncode

    def _done(self, timeout: float | None) -> bool:
        if self.returncode is None:
            line = self._line(timeout)
            if line is None:
                return False
            self.returncode = json.loads(line)["returncode"]
            self._conn.close()
            self.stdout, self.stderr = (Path(p).read_text(errors="replace") for p in (self._out, self._err))
            for p in (self._out, self._err):
                os.unlink(p)
        return True

    def wait(self, timeout: float | None = None) -> int:
        if not self._done(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.stdout, self.stderr

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


class _Server:
    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.path = ""
        self.env: dict | None = None
        self.read: set[str] = set()
        self.bare: tuple[dict, set[str]] = ({}, set())  # the bare server's environment, and what its imports read
        self.lock = threading.Lock()

    def ready(self) -> None:
        """Start the server unless one runs, and wait until it listens: it then writes its
        environment after its imports, and what they read of it (the bare server has written
        its own by then)."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                folder = tempfile.mkdtemp(prefix="warm-")
                self.path, self.log, self.env = os.path.join(folder, "s"), os.path.join(folder, "log"), None
                with open(self.log, "w") as log:
                    self.proc = subprocess.Popen([sys.executable, "-m", "tests.warm", self.path], env=BASE_ENV,
                                                 cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
                atexit.register(self._stop, self.proc, folder)
            deadline = time.monotonic() + 120
            while self.env is None:
                try:
                    about = json.loads(Path(self.path + ".env").read_text())
                    bare = json.loads(Path(self.path + ".bare.env").read_text())
                    self.env, self.read, self.bare = about["env"], set(about["read"]), (bare["env"], set(bare["read"]))
                except FileNotFoundError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        tail = Path(self.log).read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"the warm interpreter's server did not start (exit {self.proc.poll()}): {tail}")
                    time.sleep(0.05)

    def connect(self, bare: bool) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.path + (".bare" if bare else ""))
        return conn

    @staticmethod
    def _stop(proc: subprocess.Popen, folder: str) -> None:
        proc.kill()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)  # its socket, environment and log


_SERVER = _Server()


def child_env(env: dict, server: dict, read: set[str]) -> dict | None:
    """The environment a child of a server whose environment is ``server`` gets for a request with
    ``env``, or None where the request needs a fresh interpreter: where ``env`` differs in a
    variable the server's imports read (``read``, or named like ``NATIVE``). Variables the
    server's imports set (TensorFlow sets a few) are added where ``env`` lacks them, as the same
    imports in a fresh interpreter would."""
    imported = {k: v for k, v in server.items() if k not in BASE_ENV}
    env = {**{k: v for k, v in imported.items() if k not in env}, **env}
    keys = set(env) | set(server)
    must = (keys & read) | {k for k in keys if k.startswith(NATIVE) and k not in LATER}
    return env if all(env.get(k) == server.get(k) for k in must) else None


def popen(argv: list[str], env: dict | None = None, cwd: str | Path = REPO, bare: bool = False):
    """``subprocess.Popen(argv, stdout=PIPE, stderr=PIPE, text=True, env=env, cwd=cwd)`` for
    ``argv`` = [python, "-m", module, ...], [python, "-c", code, ...] or [python, script.py, ...]:
    a child of the warm server where ``env`` allows, else a fresh interpreter. ``bare``: a child
    of the server that has imported Keras alone, never this package."""
    env = dict(os.environ if env is None else env)
    mode = argv[1] if argv[1] in ("-m", "-c") else "script" if argv[1].endswith(".py") else None
    child = None
    if argv[0] == sys.executable and mode and os.environ.get(COLD) != "1":
        _SERVER.ready()
        child = child_env(env, *(_SERVER.bare if bare else (_SERVER.env, _SERVER.read)))
    if child is None:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    out = tempfile.NamedTemporaryFile(prefix="warm-out-", delete=False).name
    err = tempfile.NamedTemporaryFile(prefix="warm-err-", delete=False).name
    target, args = (argv[2], argv[3:]) if mode != "script" else (str(Path(cwd, argv[1])), argv[2:])
    request = {"mode": mode, "target": target, "args": args, "env": child, "cwd": str(cwd),
               "stdout": out, "stderr": err}
    conn = _SERVER.connect(bare)
    conn.sendall(json.dumps(request).encode() + b"\n")
    return WarmProcess(argv, conn, out, err)


def run(argv: list[str], env: dict | None = None, cwd: str | Path = REPO, timeout: float = 300, bare: bool = False):
    """``subprocess.run(argv, capture_output=True, text=True, ...)`` through ``popen``."""
    proc = popen(argv, env, cwd, bare)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


# --- the server: python -m tests.warm SOCKET ---------------------------------------------------

def _child(request: dict) -> None:
    """In the forked child: become ``python -m target args`` (or ``-c``), then exit as Python would."""
    import runpy
    import traceback

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd, path in ((0, os.devnull), (1, request["stdout"]), (2, request["stderr"])):
        f = os.open(path, os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_TRUNC)
        os.dup2(f, fd)
        os.close(f)
    sys.stdin, sys.stdout, sys.stderr = (open(fd, mode, closefd=False) for fd, mode in ((0, "r"), (1, "w"), (2, "w")))
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    code = 0
    try:
        if request["mode"] == "-m":
            sys.argv = [request["target"], *request["args"]]  # runpy puts the module's path first
            sys.path[0] = os.getcwd()
            runpy.run_module(request["target"], run_name="__main__", alter_sys=True)
        elif request["mode"] == "script":  # as `python path`: its folder first on the path
            sys.argv = [request["target"], *request["args"]]
            sys.path[0] = os.path.dirname(request["target"])
            runpy.run_path(request["target"], run_name="__main__")
        else:
            sys.argv = ["-c", *request["args"]]
            sys.path[0] = ""
            exec(compile(request["target"], "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as e:  # as Python exits: None is 0, an int itself, anything else printed, then 1
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()  # Python's own exit steps: non-daemon threads, then atexit
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if code < 0:  # as Python does on an unhandled Ctrl-C: die of the signal
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code & 0xFF)


def serve(path: str) -> None:
    """Import Keras, fork the bare server (``path.bare``), import the rest, then serve at ``path``."""
    import importlib

    read, getitem = set(), os._Environ.__getitem__

    def recording(self, key):  # every read of os.environ (get, in, getenv) goes through here
        read.add(key.decode() if isinstance(key, bytes) else key)
        return getitem(self, key)

    parent = os.getppid()
    os._Environ.__getitem__ = recording
    try:
        for name in PRELOAD:
            importlib.import_module(name)
            if name == BARE[-1] and os.fork() == 0:
                os._Environ.__getitem__ = getitem
                _listen(path + ".bare", read, os.getppid())  # its parent: this server, gone with the test process
    finally:
        os._Environ.__getitem__ = getitem
    _listen(path, read, parent)


def _listen(path: str, read: set[str], parent: int) -> None:
    """Serve requests at ``path`` while ``parent`` lives: a forked child each (``_child``)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    Path(path + ".env.tmp").write_text(json.dumps({"env": dict(os.environ), "read": sorted(read)}))
    os.replace(path + ".env.tmp", path + ".env")  # the sign that the server listens (see _Server.ready)
    running: dict[int, socket.socket] = {}
    while os.getppid() == parent:  # the test process (or the bare server's parent) is gone: so is this server
        if select.select([server], [], [], 0.05)[0]:
            conn, _ = server.accept()
            line = conn.makefile("r").readline()
            if not line:  # a client gone before it asked
                conn.close()
                continue
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                server.close()
                conn.close()
                _child(request)
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            running[pid] = conn
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = running.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                except OSError:
                    pass  # the test stopped waiting
                conn.close()
    os._exit(0)


if __name__ == "__main__":
    serve(sys.argv[1])
