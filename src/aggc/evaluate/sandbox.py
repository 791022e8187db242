"""Run untrusted, model-generated Python in a child process and report what happened.

HumanEval / MBPP are scored by executing the model's code against the benchmark's tests,
and lm-eval's own code scorer cannot be used offline (it fetches a metric from the hub),
so the evaluation stage runs every test program through `run_program` here. Pure stdlib.

What limits one program, and why:

- a separate process (`python -I -B`: isolated mode, so no PYTHON* variables, user site
  or current directory on `sys.path`; no .pyc files) with a minimal environment, in its
  own session / process group, so a timeout kills it and everything it started;
- a fresh temporary directory as working directory, HOME and TMPDIR, deleted afterwards
  (stdout / stderr are written to files there: no pipe to fill, no output kept in memory);
- a wall-clock limit (`timeout`, the whole process group is SIGKILLed on expiry), and
  RLIMIT_CPU slightly above it as a backstop should this process die first;
- RLIMIT_AS (`memory` bytes of address space): allocation beyond it raises MemoryError
  instead of exhausting the machine; RLIMIT_CORE 0 (no core dumps); RLIMIT_FSIZE (no
  file bigger than `max_file_bytes`);
- no network: a fresh network namespace where the kernel allows one (root, or
  unprivileged user namespaces), and in any case `socket` objects cannot be created;
- guards against accidents: no fork / exec / kill, no raising the limits again, and no
  writing, renaming or deleting files outside the temporary directory.

The limits are applied by a small runner *in the child* before the program is compiled,
not through `Popen(preexec_fn=...)`: preexec_fn is documented as unsafe when the parent
has threads (`run_many` uses a thread pool), and the effect on the program is the same.

This is a guard against buggy or runaway code, not a jail against hostile code: a
program that uses ctypes can undo the Python-level guards (the kernel limits, the process
group and the network namespace stay). As with any HumanEval harness, evaluate where
that residual risk is acceptable.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

PASSED, FAILED, TIMEOUT, OUT_OF_MEMORY = "passed", "failed", "timeout", "out_of_memory"
STATUSES = (PASSED, FAILED, TIMEOUT, OUT_OF_MEMORY)

DEFAULT_TIMEOUT = 10.0  # seconds of wall-clock time
DEFAULT_MEMORY = 1 << 30  # bytes of address space (RLIMIT_AS)
DEFAULT_MAX_FILE = 32 << 20  # bytes, largest file the program may write (incl. its stdout)
STDERR_TAIL = 2000  # characters of stderr kept in the outcome
_OOM_MARKERS = ("MemoryError", "Cannot allocate memory", "out of memory")


@dataclass(frozen=True)
class Outcome:
    """What happened to one program.

    status: `passed` (ran to its end without an exception), `failed` (an exception,
    including a failed assert, a syntax error or an early `sys.exit`; or killed by a
    signal), `timeout` (killed at the wall-clock or CPU limit) or `out_of_memory`
    (MemoryError, or died at the address-space limit). `stderr` is the end of what it
    wrote to stderr (the traceback), `duration` its wall-clock seconds, `returncode` the
    child's exit status (negative: killed by that signal).
    """

    status: str
    duration: float
    stderr: str = ""
    returncode: int | None = None

    @property
    def passed(self) -> bool:
        return self.status == PASSED


# Runs in the child with argv: outcome-file nonce program-file memory cpu-seconds max-file
# tmp-dir. Sets the limits and guards, executes the program, and writes "<status> <nonce>"
# to the outcome file when the program has ended (normally or by an exception). A crash or
# an `os._exit` leaves no verdict and counts as a failure, even with exit status 0; the
# nonce keeps a stray file of the program's from counting.
_RUNNER = r'''
import builtins, io, os, resource, socket, sys, traceback
_outcome, _nonce, _path, _mem, _cpu, _fsize, _tmp = sys.argv[1:8]
_mem, _cpu, _fsize = int(_mem), int(_cpu), int(_fsize)
_tmp = os.path.realpath(_tmp)
try:  # a network namespace of our own: no interface but a down loopback
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.unshare(0x40000000) != 0:  # CLONE_NEWNET (root)
        _libc.unshare(0x10000000 | 0x40000000)  # CLONE_NEWUSER | CLONE_NEWNET (no root)
except Exception:
    pass
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_CPU, (_cpu, _cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (_fsize, _fsize))

def _refuse(what):
    def refuse(*args, **kwargs):
        raise PermissionError(f"sandbox: {what} is not allowed")
    return refuse

class _NoSocket:
    def __init__(self, *args, **kwargs):
        raise PermissionError("sandbox: network access is not allowed")

import _socket
for _name in ("socket", "SocketType"):
    setattr(socket, _name, _NoSocket)
    setattr(_socket, _name, _NoSocket)
for _name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo", "gethostbyname", "gethostbyname_ex"):
    setattr(socket, _name, _refuse("network access"))
for _name in ("fork", "forkpty", "system", "popen", "kill", "killpg", "posix_spawn", "posix_spawnp",
              "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
              "spawnv", "spawnve", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnvp", "spawnvpe",
              "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown", "chroot", "setuid", "setgid"):
    if hasattr(os, _name):
        setattr(os, _name, _refuse(f"os.{_name}"))
import subprocess, signal
subprocess.Popen = _refuse("subprocess")
signal.pthread_kill = _refuse("signal.pthread_kill")
_setrlimit = resource.setrlimit
resource.setrlimit = resource.prlimit = _refuse("changing resource limits")

def _inside(path):
    if isinstance(path, int):
        return False
    real = os.path.realpath(os.fsdecode(path))
    return real == _tmp or real.startswith(_tmp + os.sep)

def _guard_paths(fn, what, n_paths=1):
    def guarded(*args, **kwargs):
        if kwargs.get("dir_fd") is not None or kwargs.get("src_dir_fd") is not None or kwargs.get("dst_dir_fd") is not None \
                or not all(_inside(p) for p in args[:n_paths]):
            raise PermissionError(f"sandbox: {what} outside the working directory is not allowed")
        return fn(*args, **kwargs)
    return guarded

_open = io.open
def _guarded_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+") and not _inside(file):
        raise PermissionError("sandbox: writing outside the working directory is not allowed")
    return _open(file, mode, *args, **kwargs)
builtins.open = io.open = _guarded_open
_os_open = os.open
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
def _guarded_os_open(path, flags, *args, **kwargs):
    if flags & _WRITE_FLAGS and (kwargs.get("dir_fd") is not None or not _inside(path)):
        raise PermissionError("sandbox: writing outside the working directory is not allowed")
    return _os_open(path, flags, *args, **kwargs)
os.open = _guarded_os_open
for _name in ("remove", "unlink", "rmdir", "removedirs", "truncate", "mkdir", "makedirs", "symlink", "link"):
    setattr(os, _name, _guard_paths(getattr(os, _name), f"os.{_name}", 2 if _name in ("symlink", "link") else 1))
for _name in ("rename", "replace", "renames"):
    setattr(os, _name, _guard_paths(getattr(os, _name), f"os.{_name}", 2))

def _finish(status, code):
    try:
        sys.stdout.flush(); sys.stderr.flush()
    except BaseException:
        pass
    fd = _os_open(_outcome, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, f"{status} {_nonce}".encode())
    os.close(fd)
    os._exit(code)  # no interpreter shutdown: it would wait for threads the program left running

sys.argv = [_path]
with _open(_path, encoding="utf-8") as f:
    _source = f.read()
import types
_main = types.ModuleType("__main__")  # a fresh __main__ module for the program (pickle, dataclasses)
_main.__file__ = _path
sys.modules["__main__"] = _main
try:
    _code = compile(_source, _path, "exec")
    del _source
    _setrlimit(resource.RLIMIT_AS, (_mem, _mem))  # last: the runner's own imports are done
    exec(_code, _main.__dict__)
except MemoryError as e:
    _main = _code = None
    try:
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
    except BaseException:
        sys.stderr.write("MemoryError\n")
    _finish("out_of_memory", 1)
except SystemExit as e:
    sys.stderr.write(f"sandbox: the program exited early (SystemExit({e.code!r})); its tests did not all run\n")
    _finish("failed", 1)
except BaseException as e:
    traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # from the program's frame on
    _finish("failed", 1)
_finish("passed", 0)
'''


def _child_env(tmp: str) -> dict[str, str]:
    """A minimal environment: nothing of ours (tokens, proxies, CUDA settings) leaks in;
    one thread / one malloc arena per BLAS library so that the address-space limit is
    spent on data, not on per-thread reservations."""
    return {
        "PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
    }


def _tail(path: str, chars: int = STDERR_TAIL) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4 * chars))
            return f.read().decode("utf-8", "replace")[-chars:]
    except OSError:
        return ""


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left in the group


def run_program(
    source: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    memory: int = DEFAULT_MEMORY,
    max_file_bytes: int = DEFAULT_MAX_FILE,
) -> Outcome:
    """Execute `source` as `__main__` in a fresh sandboxed child (see the module docstring).

    Passes when it runs to its end without an exception; everything it writes (files,
    stdout, stderr) lives in a temporary directory that is removed before this returns.
    """
    tmp = tempfile.mkdtemp(prefix="aggc-sandbox-")
    started = time.monotonic()
    try:
        program = os.path.join(tmp, "program.py")
        outcome_file = os.path.join(tmp, ".outcome")
        stderr_file = os.path.join(tmp, ".stderr")
        with open(program, "w", encoding="utf-8") as f:
            f.write(source)
        nonce = secrets.token_hex(16)
        cpu = math.ceil(timeout) + 1
        argv = [sys.executable, "-I", "-B", "-c", _RUNNER, outcome_file, nonce, program, str(memory), str(cpu), str(max_file_bytes), tmp]
        with open(os.path.join(tmp, ".stdout"), "wb") as out, open(stderr_file, "wb") as err:
            proc = subprocess.Popen(
                argv, cwd=tmp, env=_child_env(tmp), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True, close_fds=True,
            )
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.wait()
                timed_out = True
            _kill_group(proc.pid)  # anything the program left behind in its group
        duration = time.monotonic() - started
        stderr = _tail(stderr_file)
        try:
            with open(outcome_file, encoding="utf-8") as f:
                verdict, _, token = f.read().partition(" ")
        except OSError:
            verdict, token = "", ""
        rc = proc.returncode
        if timed_out or rc in (-signal.SIGXCPU, -signal.SIGKILL):
            status = TIMEOUT
        elif token == nonce and verdict in (PASSED, FAILED, OUT_OF_MEMORY):
            status = verdict
        elif any(m in stderr for m in _OOM_MARKERS):
            status = OUT_OF_MEMORY  # died in C code at the address-space limit
        else:
            status = FAILED  # crashed, killed, or left without the runner's verdict (os._exit)
        return Outcome(status=status, duration=round(duration, 3), stderr=stderr, returncode=rc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_many(
    sources: list[str],
    *,
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    memory: int = DEFAULT_MEMORY,
) -> list[Outcome]:
    """`run_program` on each source, `workers` at a time (default: the CPU count, at most 8;
    each child may take `memory` bytes); outcomes in the order of `sources`."""
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda s: run_program(s, timeout=timeout, memory=memory), sources))
