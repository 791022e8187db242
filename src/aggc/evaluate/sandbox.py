"""Run untrusted, model-generated Python and report what happened, isolated by the kernel.

HumanEval / MBPP are scored by executing the model's code against the benchmark's tests,
and lm-eval's own code scorer cannot be used offline (it fetches a metric from the hub),
so the evaluation stage runs every test program through `run_program` here. Pure stdlib,
plus the `bwrap` (bubblewrap) program where it can run.

Isolation (`isolation()` says which one this process uses; every `Outcome` records it):

`bwrap` -- the program runs in a bubblewrap sandbox:
- its own PID namespace with its own /proc: the harness and every other process of the
  machine are invisible to it (no /proc/<pid>/environ to read, no pid to kill), and when the
  program's process ends or is killed at the time limit, the kernel kills every process
  it started (forked, daemonised, setsid) with the namespace;
- its own network namespace (no interface but its own loopback), IPC and UTS namespaces;
- a minimal, read-only view of the file system: /usr (and the /bin, /lib links) and this
  Python (its installation and virtual environment); no home, /etc, project or data. The
  only writable place is its working directory (HOME, TMPDIR), a fresh tmpfs of
  `max_file_bytes` that vanishes with the sandbox: nothing is written to this machine's disk;
- a cleared environment (a minimal PATH, HOME, locale and thread settings; no tokens);
- no new privileges (PR_SET_NO_NEW_PRIVS), killed with its parent (--die-with-parent);
- a process limit (MAX_PROCESSES, threads included: a fork bomb stops there). RLIMIT_NPROC
  counts processes per user and spares root, so the program must not run as root: run by
  root, bwrap runs without a user namespace and the runner, before the program starts,
  gives up root for a uid of its own (random, unused: no other process's count is shared);
  run by another user, bwrap maps that user into a user namespace of the sandbox's own,
  where the count is the sandbox's alone, and forbids nested user namespaces;
- the limits below.

`guard-only` -- where bwrap cannot run (not installed, no user namespaces), with a loud
warning: the program runs in a child process in its own session, with a temporary working
directory, the limits below, a network namespace where the kernel allows one, and
Python-level guards (no fork / exec / kill / socket, no writing outside its directory).
The guards stop accidents, not a hostile program: `posix.system`, `posix.open`,
`io.FileIO`, `_io.open`, `sqlite3` or ctypes go around them, a `posix.fork` + `setsid`
child outlives the time limit, and /proc shows the harness's environment.

Limits in both: a wall-clock limit (`timeout`, measured by the harness, which then kills
the sandbox), RLIMIT_CPU just above it as a backstop, RLIMIT_AS (`memory` bytes of address
space: allocation beyond it raises MemoryError), no core dumps. Output is not a reason to
fail: stdout goes to /dev/null, stderr is drained and only its end kept.

The verdict. A pass means the program ran to its end. The harness decides it from two
things the program cannot forge: its own clock (timeout) and the exit status of the
process it started (bwrap returns its child's), never from anything the program wrote or
could read (the former nonce in a file was readable from /proc/self/cmdline). The runner
in the sandbox exits with status 0 only after the program's last statement; every early
end the Python API offers (`sys.exit`, `exit()`, `SystemExit`, `os._exit`, `posix._exit`)
becomes status 1; the runner holds no token, and no exit function among its globals or
frames for the program to call (its final exit goes through a fresh instance of the posix
module). A pipe the program has no handle to tells the harness that the runner started, so
a sandbox that failed to start raises `SandboxError` instead of counting as the program's
failure.

What no in-process scheme can stop: the benchmarks' tests run in the program's own
process, and any act by which the runner could say "the tests ended" (an exit status, a
write to a pipe, a token) the program can perform earlier, with the same memory and
privileges. So a program that deliberately subverts its own interpreter -- ends with
status 0 through ctypes or by exec'ing `/bin/true`, or returns an object equal to
everything -- can fake a pass of its own tests, as in human-eval and evalplus. It cannot
reach the harness, another program or its verdict. Closing that would take running the
tests in another process, with plain-data results.
"""

from __future__ import annotations

import functools
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

PASSED, FAILED, TIMEOUT, OUT_OF_MEMORY = "passed", "failed", "timeout", "out_of_memory"
STATUSES = (PASSED, FAILED, TIMEOUT, OUT_OF_MEMORY)
BUBBLEWRAP, GUARD_ONLY = "bwrap", "guard-only"  # isolations

BWRAP = "bwrap"  # the bubblewrap program: a name on PATH or a path
DEFAULT_TIMEOUT = 10.0  # seconds of wall-clock time
DEFAULT_MEMORY = 1 << 30  # bytes of address space (RLIMIT_AS)
DEFAULT_MAX_FILE = 32 << 20  # bytes the program may write: bwrap, its directory's size; guard-only, its largest file
MAX_PROCESSES = 8  # tasks (processes and threads) of one program under bwrap
STDERR_TAIL = 2000  # characters of stderr kept in the outcome
SCRATCH = "/sandbox"  # the program's working directory inside bwrap
_OUT_OF_MEMORY_EXIT = 3  # the runner's exit status after a MemoryError
_OOM_MARKERS = ("MemoryError", "Cannot allocate memory", "out of memory")


class SandboxError(RuntimeError):
    """The sandbox itself did not start (not the program's fault)."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one program.

    status: `passed` (ran to its end without an exception), `failed` (an exception,
    including a failed assert, a syntax error or an early exit; or killed by a signal),
    `timeout` (killed at the wall-clock or CPU limit) or `out_of_memory` (MemoryError, or
    died at the address-space limit). `isolation`: `bwrap` or `guard-only` (module
    docstring). `stderr` is the end of what it wrote to stderr (the traceback), `duration`
    its wall-clock seconds, `returncode` the exit status of the process the harness started.
    """

    status: str
    duration: float
    isolation: str
    stderr: str = ""
    returncode: int | None = None

    @property
    def passed(self) -> bool:
        return self.status == PASSED


# The runner, in the sandbox, with argv: started-fd memory cpu-seconds max-file max-processes
# uid. Reads the program from stdin, writes it to program.py in its working directory, sets
# the limits, says on started-fd that it runs, and executes the program as __main__; exit
# status 0 only when the program ran to its end (module docstring, "The verdict").
_RUNNER_SETUP = r'''
import os, resource, sys, traceback, types
_started, _mem, _cpu, _fsize, _nproc, _uid = map(int, sys.argv[1:7])
_source = sys.stdin.buffer.read().decode()
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
if _uid >= 0:  # root in the sandbox: a uid of its own (RLIMIT_NPROC spares root)
    os.chown(".", _uid, _uid)
    os.setgroups([])
    os.setgid(_uid)
    os.setuid(_uid)
_path = os.path.join(os.getcwd(), "program.py")
with open(_path, "w", encoding="utf-8") as f:
    f.write(_source)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_CPU, (_cpu, _cpu + 1))
if _fsize:
    resource.setrlimit(resource.RLIMIT_FSIZE, (_fsize, _fsize))
if _nproc:
    resource.setrlimit(resource.RLIMIT_NPROC, (_nproc, _nproc))
_setrlimit = resource.setrlimit  # the guard takes resource.setrlimit away
'''

# Guard-only: the Python-level guards (they stop accidents; see the module docstring).
_RUNNER_GUARD = r'''
import builtins, io, socket
_tmp = os.path.realpath(os.getcwd())
try:  # a network namespace of our own: no interface but a down loopback
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.unshare(0x40000000) != 0:  # CLONE_NEWNET (root)
        _libc.unshare(0x10000000 | 0x40000000)  # CLONE_NEWUSER | CLONE_NEWNET (no root)
except Exception:
    pass

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
'''

_RUNNER_RUN = r'''
def _early_exit(status=0):
    raise SystemExit(status)

import posix
os._exit = posix._exit = _early_exit  # an early os._exit is a failure, like sys.exit
os.write(_started, b"1")
os.close(_started)

def _run(path, source, memory):
    """The runner's exit status for the program (0: it ran to its end)."""
    main = types.ModuleType("__main__")  # a fresh __main__ module for the program (pickle, dataclasses)
    main.__file__ = path
    sys.modules["__main__"] = main
    sys.argv = [path]
    try:
        code = compile(source, path, "exec")
        del source
        _setrlimit(resource.RLIMIT_AS, (memory, memory))  # last: the runner's own imports are done
        exec(code, main.__dict__)
        return 0
    except MemoryError as e:
        main = code = None
        try:
            traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        except BaseException:
            sys.stderr.write("MemoryError\n")
        return 3  # _OUT_OF_MEMORY_EXIT
    except SystemExit as e:
        sys.stderr.write(f"sandbox: the program exited early (SystemExit({e.code!r})); its tests did not all run\n")
        return 1
    except BaseException as e:
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # from the program's frame on
        return 1

# The end: at once (no waiting for threads the program left running), with no exit function
# among the runner's globals for the program to call early: through a fresh posix module.
_status = _run(_path, _source, _mem)
try:
    sys.stdout.flush()
    sys.stderr.flush()
except BaseException:
    pass
import importlib.machinery, importlib.util
importlib.util.module_from_spec(importlib.machinery.BuiltinImporter.find_spec("posix"))._exit(_status)
'''


def _runner(guard: bool) -> str:
    return _RUNNER_SETUP + (_RUNNER_GUARD if guard else "") + _RUNNER_RUN


def _child_env(home: str) -> dict[str, str]:
    """A minimal environment: nothing of ours (tokens, proxies, CUDA settings) leaks in;
    one thread / one malloc arena per BLAS library so that the address-space limit is
    spent on data, not on per-thread reservations."""
    return {
        "PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
    }


def _bwrap_argv(bwrap: str, info_fd: int, scratch_bytes: int) -> list[str]:
    """bwrap's command line up to `--` (module docstring, `bwrap`)."""
    argv = [bwrap, "--die-with-parent", "--new-session",
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if os.geteuid() != 0:
        argv += ["--unshare-user", "--disable-userns"]
    bound: list[str] = []
    for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", sys.base_prefix, sys.prefix):
        if not os.path.lexists(path) or any(path == b or path.startswith(b + "/") for b in bound):
            continue
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            argv += ["--symlink", os.readlink(path), path]
            continue
        for parent in reversed(Path(path).parents[:-1]):  # readable parents (bwrap would copy /root's 0700)
            argv += ["--dir", str(parent)]
        argv += ["--ro-bind", path, path]
        bound.append(path)
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(scratch_bytes), "--tmpfs", SCRATCH, "--chdir", SCRATCH,
             "--clearenv"]
    for name, value in _child_env(SCRATCH).items():
        argv += ["--setenv", name, value]
    return argv + ["--info-fd", str(info_fd), "--"]


class _Tail(threading.Thread):
    """Reads a pipe to its end in the background and keeps only its last bytes: a program
    may write any amount without blocking on a full pipe or filling the harness's memory."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe, self.data = pipe, b""
        self.start()

    def run(self) -> None:
        for chunk in iter(lambda: self.pipe.read1(1 << 16), b""):
            self.data = (self.data + chunk)[-4 * STDERR_TAIL:]

    def text(self) -> str:
        self.join(timeout=1)  # guard-only: a process the program left behind may keep the pipe open
        if not self.is_alive():
            self.pipe.close()
        return self.data.decode("utf-8", "replace")[-STDERR_TAIL:]


def _read_now(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""


def _kill(proc: subprocess.Popen, info_fd: int) -> None:
    """SIGKILL the sandbox. Under bwrap: bwrap's child, the PID namespace's init (its pid
    from bwrap's info); the kernel kills every process in the namespace before that init is
    gone, and bwrap exits after it, so no process outlives the wait for bwrap. Guard-only
    (or before bwrap has a child): the process group the harness started."""
    try:
        pid = json.loads(_read_now(info_fd))["child-pid"]
        with open(f"/proc/{pid}/stat") as f:
            parent = int(f.read().rpartition(")")[2].split()[1])
        if parent == proc.pid:  # bwrap's child still: never another process that got its pid
            os.kill(pid, signal.SIGKILL)
            return
    except (ValueError, KeyError, OSError):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left in the group


def _run(source: str, isolation: str, timeout: float, memory: int, max_file_bytes: int) -> Outcome:
    started = time.monotonic()
    started_r, started_w = os.pipe()
    info_r, info_w = os.pipe()
    scratch = None
    try:
        limits = [str(memory), str(math.ceil(timeout) + 1)]
        if isolation == BUBBLEWRAP:
            uid = 3_000_000_000 + secrets.randbelow(1_000_000_000) if os.geteuid() == 0 else -1
            argv = [*_bwrap_argv(shutil.which(BWRAP) or BWRAP, info_w, max_file_bytes), sys.executable, "-I", "-B", "-c",
                    _runner(guard=False), str(started_w), *limits, "0", str(MAX_PROCESSES), str(uid)]
            cwd, env, fds = "/", {}, (started_w, info_w)
        else:
            scratch = tempfile.mkdtemp(prefix="aggc-sandbox-")
            argv = [sys.executable, "-I", "-B", "-c", _runner(guard=True), str(started_w), *limits, str(max_file_bytes), "0", "-1"]
            cwd, env, fds = scratch, _child_env(scratch), (started_w,)  # no bwrap info: the program could forge it
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, pass_fds=fds, start_new_session=True)
        os.close(started_w)
        os.close(info_w)
        started_w = info_w = -1
        tail = _Tail(proc.stderr)
        try:
            proc.stdin.write(source.encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it ended before reading the program: told by `ran` below
        try:
            proc.wait(timeout=max(0.0, started + timeout - time.monotonic()))
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill(proc, info_r)
            proc.wait()
            timed_out = True
        if isolation == GUARD_ONLY:
            _kill(proc, info_r)  # anything the program left behind in its group
        duration = time.monotonic() - started
        stderr = tail.text()
        ran = _read_now(started_r) == b"1"
        rc = proc.returncode
        if timed_out or rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            status = TIMEOUT
        elif not ran:
            raise SandboxError(f"the {isolation} sandbox ({argv[0]}) did not start (exit status {rc}): {stderr.strip()}")
        elif rc == 0:
            status = PASSED
        elif rc == _OUT_OF_MEMORY_EXIT or any(m in stderr for m in _OOM_MARKERS):
            status = OUT_OF_MEMORY  # MemoryError, or died in C code at the address-space limit
        else:
            status = FAILED
        return Outcome(status=status, duration=round(duration, 3), isolation=isolation, stderr=stderr, returncode=rc)
    finally:
        for fd in (started_r, started_w, info_r, info_w):
            if fd >= 0:
                os.close(fd)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


@functools.cache
def _bwrap_problem(bwrap: str) -> str:
    """Why `bwrap` cannot isolate a program here ("" when it can); tried once per process."""
    if shutil.which(bwrap) is None:
        return f"{bwrap}: not found (install bubblewrap: apt-get install bubblewrap)"
    try:
        outcome = _run("pass\n", BUBBLEWRAP, 60.0, DEFAULT_MEMORY, DEFAULT_MAX_FILE)
    except SandboxError as e:
        return str(e)
    return "" if outcome.passed else f"a program that does nothing ended {outcome.status}: {outcome.stderr.strip()}"


def isolation() -> str:
    """`bwrap` where bubblewrap can run here, else `guard-only`, with a warning."""
    problem = _bwrap_problem(BWRAP)
    if not problem:
        return BUBBLEWRAP
    warnings.warn(f"aggc.evaluate.sandbox: bwrap cannot run here ({problem}); generated code runs GUARD-ONLY, "
                  "which does not contain hostile code (README, Security)", RuntimeWarning, stacklevel=2)
    return GUARD_ONLY


def run_program(
    source: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    memory: int = DEFAULT_MEMORY,
    max_file_bytes: int = DEFAULT_MAX_FILE,
) -> Outcome:
    """Execute `source` as `__main__` in a fresh sandbox (see the module docstring).

    Passes when it runs to its end without an exception; nothing it writes outlives the
    call. Raises SandboxError when the sandbox itself did not start.
    """
    return _run(source, isolation(), timeout, memory, max_file_bytes)


def run_many(
    sources: list[str],
    *,
    workers: int | None = None,
    timeout: float | list[float] = DEFAULT_TIMEOUT,
    memory: int = DEFAULT_MEMORY,
) -> list[Outcome]:
    """`run_program` on each source (`timeout`: one for all, or one per source), `workers`
    at a time (default: the CPU count, at most 8; each may take `memory` bytes); outcomes in
    the order of `sources`. A program that times out among others is run again alone, and
    only that run counts: a verdict must not depend on how busy the machine was."""
    timeouts = timeout if isinstance(timeout, list) else [timeout] * len(sources)
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(lambda s, t: run_program(s, timeout=t, memory=memory), sources, timeouts))
    if workers > 1 and len(sources) > 1:
        for i, outcome in enumerate(outcomes):
            if outcome.status == TIMEOUT:
                outcomes[i] = run_program(sources[i], timeout=timeouts[i], memory=memory)
    return outcomes
