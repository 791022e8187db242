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
- a seccomp filter (`_seccomp_filter`, classic BPF assembled here for x86_64 and aarch64,
  given to `bwrap --seccomp`; run by root too): no new namespace of any kind (unshare,
  setns, clone with a CLONE_NEW* flag; clone3 answers ENOSYS so that libc falls back to
  clone) -- so no nested user namespace where the program would be root again (mounting a
  tmpfs, CAP_NET_ADMIN on a network stack of its own) -- no mounts, no memfd_create /
  memfd_secret / userfaultfd, no keyrings, bpf, perf events or io_uring; another ABI (i386
  through int 0x80, x32) is refused entirely;
- the limits below.

`guard-only` -- where bwrap cannot run (not installed, no user namespaces), with a loud
warning: the program runs in a child process in its own session, with a temporary working
directory, the limits below, a network namespace where the kernel allows one, and
Python-level guards (no fork / exec / kill / socket, no writing outside its directory).
It runs as the harness's user -- uid 0 where the harness is root (no seccomp filter, no
process limit but the cgroup's). The guards stop accidents, not a hostile program:
`posix.system`, `posix.open`, `io.FileIO`, `_io.open`, `sqlite3` or ctypes go around them,
/proc shows the harness's environment, and without a cgroup a `posix.fork` + `setsid`
child outlives the time limit.

Limits in both: a wall-clock limit (`timeout`, measured by the harness, which then kills
the sandbox), RLIMIT_CPU just above it as a backstop, RLIMIT_AS (`memory` bytes of address
space per process: allocation beyond it raises MemoryError), RLIMIT_FSIZE (`max_file_bytes`
per file), no core dumps. Output is not a reason to fail: stdout goes to /dev/null, stderr
is drained and only its end kept.

What bounds memory in total: a cgroup of its own per sandbox (`_Cgroup`; cgroup v1 memory
and pids hierarchies, or cgroup2 with both controllers), which the sandbox's first process
joins (a `sh` that writes its pid to cgroup.procs and execs bwrap, or the guard-only
runner) before anything else starts, so every process of the sandbox is in it:
`memory + max_file_bytes` bytes for all of them together -- anonymous memory, tmpfs (its
scratch directory), memfd, page cache and kernel memory charged to it, beyond which the
kernel OOM-kills inside the sandbox -- and MAX_PROCESSES tasks (+2 for bwrap's own). The
harness kills what is left in it and removes it afterwards. That needs a cgroup hierarchy
that the harness may write (root, or a delegated cgroup2 subtree whose own cgroup has no
processes); where there is none (`_cgroup_problem()`, warned about once) memory is bounded
per process only: RLIMIT_AS for each of up to MAX_PROCESSES processes (so up to
MAX_PROCESSES x `memory`), and under bwrap the `--size` of its scratch tmpfs, RLIMIT_FSIZE
and the seccomp filter against memory outside the address space (memfd, a tmpfs in a
nested namespace). Not bounded then: kernel memory a process can pin within its address
space limit (pipe and socket buffers, page tables).

The verdict. A pass means the program ran to its end. The harness decides it from things
the program cannot forge: its own clock (`timeout`: its own wall-clock limit only; a
program that dies of SIGXCPU, or writes anything, is a failure), the exit status of the
process it started (bwrap returns its child's), and the kernel's OOM-kill count in the
sandbox's cgroup (`out_of_memory`). Never from anything the program wrote or could read
(the former nonce in a file was readable from /proc/self/cmdline; stderr now only tells
failures apart for the reader). The runner's exit status 3 after a MemoryError is the one
forgeable category: a program can raise MemoryError itself and turn its failure into an
out_of_memory one, never into a pass.

The runner in the sandbox exits with status 0 only when `exec` of the program returned;
every early end the Python API offers (`sys.exit`, `exit()`, `SystemExit`, `os._exit`,
`posix._exit`) becomes status 1. After `exec` it runs nothing of the program's: its code
after `exec` (`_RUNNER_VERDICT`, `_RUNNER_REPORT`) is compiled with placeholder constants
that it replaces, before the program starts, by what it needs -- a fresh instance of the
posix module's `_exit` and `write`, `_signal.pthread_sigmask`, the real builtins and the C
descriptors of an exception's type name, arguments and traceback -- so it looks up no
global, builtin, module attribute or sys.modules entry the program could have replaced,
imports nothing, holds no exit function among any frame's globals or locals, and calls no
method of the program's objects (its report is built from C-level fields and written with
`write` to a copy of fd 2 made before `exec`, not through sys.stderr, the traceback module
or sys.excepthook). On a failure it first removes trace and profile functions and blocks
every signal; anything raised before that (a handler or trace function of the program's
raising SystemExit(0) in the runner's frames) escapes to a `finally` that exits with
status 1. A pipe the program has no handle to tells the harness that the runner started,
so a sandbox that failed to start raises `SandboxError` instead of counting as the
program's failure. A program that a UTF-8 encoder rejects (a lone surrogate) is encoded
with surrogatepass before any process starts and fails to compile in the sandbox; and
whatever raises in the harness while a sandbox runs, it is killed and waited for first.

What no in-process scheme can stop: the benchmarks' tests run in the program's own
process, and any act by which the runner could say "the tests ended" (an exit status, a
write to a pipe, a token) the program can perform earlier, with the same memory and
privileges. So a program that deliberately subverts its own interpreter -- ends with
status 0 through ctypes, a fresh posix module of its own or by exec'ing `/bin/true`;
digs the runner's `_exit` out of its code objects' constants or the heap; rewrites the
runner's locals through a trace function before the runner removes it; or returns an
object equal to everything -- can fake a pass of its own tests, as in human-eval and
evalplus. It cannot reach the harness, another program or its verdict. Closing that would
take running the tests in another process, with plain-data results.
"""

from __future__ import annotations

import functools
import json
import math
import os
import secrets
import shutil
import signal
import struct
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
_JOIN_CGROUP = 'echo $$ > "$1" && echo $$ > "$2" && shift 2 && exec "$@"'  # sh: join the sandbox's cgroup(s), become the command


class SandboxError(RuntimeError):
    """The sandbox itself did not start (not the program's fault)."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one program.

    status: `passed` (ran to its end without an exception), `failed` (an exception,
    including a failed assert, a syntax error or an early exit; or killed by a signal,
    SIGXCPU included),
    `timeout` (killed at the harness's wall-clock limit) or `out_of_memory` (the kernel
    OOM-killed a process of its cgroup, or the runner saw a MemoryError: the address-space
    limit). `isolation`: `bwrap` or `guard-only` (module
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
_source = sys.stdin.buffer.read().decode("utf-8", "surrogatepass")
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
if _uid >= 0:  # root in the sandbox: a uid of its own (RLIMIT_NPROC spares root)
    os.chown(".", _uid, _uid)
    os.setgroups([])
    os.setgid(_uid)
    os.setuid(_uid)
_path = os.path.join(os.getcwd(), "program.py")
with open(_path, "w", encoding="utf-8", errors="surrogatepass") as f:
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

# The verdict, after the program ran (module docstring, "The verdict"): these two functions
# are compiled by the runner with placeholders ("<<name>>") that it then replaces in their
# code objects' constants by what it captured before the program started -- the fresh
# posix module's `_exit` and `write`, _signal's `pthread_sigmask`, the real builtins and
# descriptors. So after `exec` they look up no name the program can rebind (no global, no
# builtin, no module attribute, no sys.modules entry), hold no exit function in any frame's
# globals or locals, and call no method of the program's objects.
_RUNNER_REPORT = r'''
def _report(failure, lines):
    """The failure as UTF-8 text: a traceback from the program's frame on, built from the
    exception's C-level fields alone (no __str__, __repr__, __name__ property, traceback
    module or sys.stderr of the program's)."""
    join, cls = "<<join>>", "<<type>>"(failure)
    name = "<<type_name>>"(cls)
    texts = []
    for arg in "<<args_of>>"(failure):
        kind = "<<type>>"(arg)
        if kind is "<<str>>":
            texts.append(arg)
        elif kind is "<<int>>" or kind is "<<float>>" or kind is "<<bool>>" or arg is None:
            texts.append("<<repr>>"(arg))
        else:
            texts.append(join("", ["<", "<<type_name>>"(kind), " object>"]))
    message = texts[0] if len(texts) == 1 else join("", ["(", join(", ", texts), ")"]) if texts else ""
    if "<<issubclass>>"(cls, "<<SystemExit>>"):
        text = join("", ["sandbox: the program exited early (", name, "(", join(", ", texts),
                         ")); its tests did not all run\n"])
    else:
        frames, tb = [], "<<tb_of>>"(failure)
        tb = tb.tb_next if tb is not None else None  # from the program's frame on
        while tb is not None and len(frames) < 10000:
            code, line = tb.tb_frame.f_code, tb.tb_lineno
            frames.append(join("", ['  File "', code.co_filename, '", line ', "<<repr>>"(line), ", in ", code.co_name, "\n"]))
            if code.co_filename == "<<path>>" and 0 < line <= len(lines):
                frames.append(join("", ["    ", lines[line - 1].strip(), "\n"]))
            tb = tb.tb_next
        text = join("", ["Traceback (most recent call last):\n", join("", frames[-60:]), name,
                         ": " if message else "", message, "\n"])
    return "<<encode>>"(text, "utf-8", "backslashreplace")
'''

_RUNNER_VERDICT = r'''
def _tests(code, namespace, lines):
    """Exit status 0 only when `exec` returned (the program ran to its end), else 1 (3 after a
    MemoryError); nothing the program left behind runs in between (see the runner)."""
    try:
        exec(code, namespace)
    except BaseException as failure:
        "<<settrace>>"(None)  # first: no trace or profile function of the program's sees this frame again
        "<<setprofile>>"(None)
        status = 1
        try:
            "<<sigmask>>"("<<SIG_BLOCK>>", "<<signals>>")  # no handler of the program's runs from here
            if "<<issubclass>>"("<<type>>"(failure), "<<MemoryError>>"):
                status = 3
            "<<flush_stdout>>"()
            "<<flush_stderr>>"()
        except BaseException:
            pass
        try:
            "<<write>>"("<<stderr>>", "<<report>>"(failure, lines))
        except BaseException:
            try:
                "<<write>>"("<<stderr>>", b"sandbox: the program failed (its traceback could not be written)\n")
            except BaseException:
                pass
        "<<exit>>"(status)
    try:
        "<<settrace>>"(None)
        "<<setprofile>>"(None)
        "<<sigmask>>"("<<SIG_BLOCK>>", "<<signals>>")
        "<<flush_stdout>>"()
        "<<flush_stderr>>"()
    except BaseException:
        pass
    "<<exit>>"(0)

try:
    _tests(_code, _namespace, _lines)
finally:  # whatever escaped the above (an exception raised by something of the program's): a failure
    "<<exit>>"(1)
'''

_RUNNER_RUN = r'''
import _signal, importlib.machinery, importlib.util, posix, traceback, warnings
_main = types.ModuleType("__main__")  # a fresh __main__ module for the program (pickle, dataclasses)
_main.__file__ = _path
sys.modules["__main__"] = _main
sys.argv = [_path]
os.write(_started, b"1")
os.close(_started)
try:
    _code = compile(_source, _path, "exec")
except BaseException as e:  # a syntax error: nothing of the program's has run yet
    sys.stderr.write("".join(traceback.format_exception_only(type(e), e)))
    sys.stderr.flush()
    os._exit(1)

def _bind(code, values):
    """`code` with each placeholder constant replaced by its value, nested code included."""
    return code.replace(co_consts=tuple(
        _bind(c, values) if isinstance(c, types.CodeType) else values[c] if type(c) is str and c in values else c
        for c in code.co_consts))

def _compile(source, values):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # "'str' object is not callable": the placeholders
        return _bind(compile(source, "<sandbox runner>", "exec"), values)

def _verdict_code():
    """The verdict's code, bound to what the program cannot rebind (captured now, before it runs)."""
    fresh = importlib.util.module_from_spec(importlib.machinery.BuiltinImporter.find_spec("posix"))
    values = {
        "<<exit>>": fresh._exit, "<<write>>": fresh.write, "<<stderr>>": fresh.dup(2),
        "<<sigmask>>": _signal.pthread_sigmask, "<<SIG_BLOCK>>": _signal.SIG_BLOCK,
        "<<signals>>": tuple(_signal.valid_signals()),
        "<<settrace>>": sys.settrace, "<<setprofile>>": sys.setprofile,
        "<<flush_stdout>>": sys.stdout.flush, "<<flush_stderr>>": sys.stderr.flush,
        "<<type>>": type, "<<issubclass>>": issubclass, "<<repr>>": repr, "<<str>>": str, "<<int>>": int,
        "<<float>>": float, "<<bool>>": bool, "<<MemoryError>>": MemoryError, "<<SystemExit>>": SystemExit,
        "<<join>>": str.join, "<<encode>>": str.encode, "<<path>>": _path,
        "<<type_name>>": type.__dict__["__name__"].__get__,
        "<<args_of>>": BaseException.__dict__["args"].__get__,
        "<<tb_of>>": BaseException.__dict__["__traceback__"].__get__,
    }
    report = {}
    exec(_compile(_RUNNER_REPORT, values), report)
    values["<<report>>"] = report["_report"]
    return _compile(_RUNNER_VERDICT, values)

_verdict = _verdict_code()

def _early_exit(status=0):
    raise SystemExit(status)

os._exit = posix._exit = _early_exit  # an early os._exit is a failure, like sys.exit
_setrlimit(resource.RLIMIT_AS, (_mem, _mem))  # last: the runner's own imports are done
exec(_verdict, {"__builtins__": __builtins__, "_code": _code, "_namespace": _main.__dict__,
                "_lines": _source.splitlines()})
'''


def _runner(guard: bool) -> str:
    return (_RUNNER_SETUP + (_RUNNER_GUARD if guard else "")
            + f"_RUNNER_REPORT = {_RUNNER_REPORT!r}\n_RUNNER_VERDICT = {_RUNNER_VERDICT!r}\n" + _RUNNER_RUN)


# --- seccomp (bwrap --seccomp): a classic BPF program, assembled here (no libseccomp) ---------
# struct sock_filter {u16 code; u8 jt, jf; u32 k} against struct seccomp_data {int nr; u32 arch;
# u64 ip; u64 args[6]} (linux/filter.h, linux/seccomp.h, linux/audit.h).
_BPF_LD_ABS, _BPF_JEQ, _BPF_JGE, _BPF_JSET, _BPF_RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_CLONE_NEW_NAMESPACES = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
# Refused with EPERM: new namespaces of any kind (unshare, setns, clone with a CLONE_NEW* flag;
# clone3, whose flags a filter cannot read, answers ENOSYS so that libc falls back to clone),
# mounts (old and new API), memory outside the address-space limit (memfd_create,
# memfd_secret, userfaultfd), and kernel surfaces a test program never needs (keyrings, bpf,
# perf events, io_uring). Syscall numbers: arch/x86/entry/syscalls/syscall_64.tbl and
# include/uapi/asm-generic/unistd.h (aarch64).
_SYSCALLS = {
    "x86_64": (0xC000003E, 56, 435, {
        "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "memfd_create": 319, "memfd_secret": 447, "userfaultfd": 323, "keyctl": 250, "add_key": 248,
        "request_key": 249, "bpf": 321, "perf_event_open": 298, "io_uring_setup": 425}),
    "aarch64": (0xC00000B7, 220, 435, {
        "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "memfd_create": 279, "memfd_secret": 447, "userfaultfd": 282, "keyctl": 219, "add_key": 217,
        "request_key": 218, "bpf": 280, "perf_event_open": 241, "io_uring_setup": 425}),
}


@functools.cache
def _seccomp_filter() -> bytes:
    """The filter bwrap installs before it executes the runner (b"" where the machine is not
    one of _SYSCALLS' architectures: then bwrap runs without one, as the README says)."""
    machine = os.uname().machine
    if machine not in _SYSCALLS:
        return b""
    arch, clone, clone3, denied = _SYSCALLS[machine]
    body: list[tuple[int, int | str, int | str, int]] = [  # (code, jt, jf, k); a str jump: a label below
        (_BPF_LD_ABS, 0, 0, 4),  # arch
        (_BPF_JEQ, 0, "deny", arch),  # another ABI (i386 through int 0x80): refused entirely
        (_BPF_LD_ABS, 0, 0, 0),  # nr
    ]
    if machine == "x86_64":
        body.append((_BPF_JGE, "deny", 0, 0x40000000))  # the x32 ABI
    body += [(_BPF_JEQ, "deny", 0, nr) for nr in sorted(denied.values())]
    body += [(_BPF_JEQ, "nosys", 0, clone3), (_BPF_JEQ, 0, "allow", clone),
             (_BPF_LD_ABS, 0, 0, 16),  # clone's flags (args[0], low half)
             (_BPF_JSET, "deny", 0, _CLONE_NEW_NAMESPACES)]
    labels = {"allow": len(body), "deny": len(body) + 1, "nosys": len(body) + 2}
    body += [(_BPF_RET, 0, 0, _RET_ALLOW), (_BPF_RET, 0, 0, _RET_ERRNO | _EPERM), (_BPF_RET, 0, 0, _RET_ERRNO | _ENOSYS)]
    jump = lambda at, to: labels[to] - at - 1 if isinstance(to, str) else to  # noqa: E731
    return b"".join(struct.pack("=HBBI", code, jump(i, jt), jump(i, jf), k) for i, (code, jt, jf, k) in enumerate(body))


# --- cgroups: one per sandbox, bounding the memory and the tasks of all its processes --------

def _cgroup_mounts() -> dict[str, tuple[str, str]]:
    """controller ("memory", "pids"; "" for cgroup2) -> (mount point, the mounted root)."""
    mounts: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, (fstype, _, options) = left.split(), right.split()[:3]
            if fstype == "cgroup2":
                mounts.setdefault("", (fields[4], fields[3]))
            elif fstype == "cgroup":
                for controller in set(options.split(",")) & {"memory", "pids"}:
                    mounts.setdefault(controller, (fields[4], fields[3]))
    return mounts


def _own_cgroup(mounts: dict[str, tuple[str, str]], controller: str) -> str:
    """This process's cgroup directory for `controller` ("" : cgroup2)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if (controller in controllers.split(",")) if controller else controllers == "":
                mount, root = mounts[controller]
                if not (path + "/").startswith(root.rstrip("/") + "/"):
                    raise OSError(f"cgroup {path} is outside the mounted {root}")
                return os.path.join(mount, path[len(root.rstrip("/")):].lstrip("/"))
    raise OSError(f"this process is in no {controller or 'cgroup2'} cgroup")


@functools.cache
def _cgroup_parents() -> tuple[str, tuple[str, ...]] | str:
    """("v1", (memory dir, pids dir)) or ("v2", (dir,)): where this process can make a child
    cgroup with memory and pids limits; else why not (a str)."""
    try:
        mounts = _cgroup_mounts()
        if "memory" in mounts and "pids" in mounts:
            kind, parents = "v1", (_own_cgroup(mounts, "memory"), _own_cgroup(mounts, "pids"))
        elif "" in mounts:
            kind, parents = "v2", (_own_cgroup(mounts, ""),)
            with open(os.path.join(parents[0], "cgroup.controllers")) as f:
                if not {"memory", "pids"} <= set(f.read().split()):
                    return "the cgroup2 hierarchy has no memory and pids controllers here"
            with open(os.path.join(parents[0], "cgroup.subtree_control"), "r+") as f:
                if not {"memory", "pids"} <= set(f.read().split()):
                    f.write("+memory +pids")  # EBUSY where this cgroup has processes and is not the root
        else:
            return "no cgroup hierarchy with memory and pids controllers is mounted"
        probe = [os.path.join(p, f"aggc-sandbox-probe-{os.getpid()}") for p in parents]
        for d in probe:
            os.mkdir(d)
        for d in probe:
            os.rmdir(d)
        return kind, parents
    except OSError as e:
        return f"cannot make a child cgroup: {e}"


class _Cgroup:
    """A fresh cgroup (v1: one in the memory and one in the pids hierarchy) that the sandbox's
    first process joins before it starts anything: every process of the sandbox, bwrap's own
    included, is in it; its memory (anonymous, tmpfs, memfd, page cache, kernel) counts
    against `memory_bytes` together (the kernel OOM-kills inside it beyond that), its tasks
    against `tasks`."""

    def __init__(self, memory_bytes: int, tasks: int):
        self.kind, parents = _cgroup_parents()  # type: ignore[misc]
        name = f"aggc-sandbox-{os.getpid()}-{secrets.token_hex(6)}"
        self.dirs: list[str] = []
        try:
            for parent in parents:
                os.mkdir(os.path.join(parent, name))
                self.dirs.append(os.path.join(parent, name))
            if self.kind == "v1":
                self._write(self.dirs[0], "memory.limit_in_bytes", memory_bytes)
                self._write(self.dirs[0], "memory.memsw.limit_in_bytes", memory_bytes, missing_ok=True)  # no swap either
                self._write(self.dirs[1], "pids.max", tasks)
            else:
                self._write(self.dirs[0], "memory.max", memory_bytes)
                self._write(self.dirs[0], "memory.swap.max", 0, missing_ok=True)
                self._write(self.dirs[0], "pids.max", tasks)
        except OSError as e:
            self.remove()
            raise SandboxError(f"cannot set up the sandbox's cgroup: {e}") from e

    @staticmethod
    def _write(directory: str, name: str, value: int, missing_ok: bool = False) -> None:
        try:
            with open(os.path.join(directory, name), "w") as f:
                f.write(str(value))
        except OSError:
            if not missing_ok:
                raise

    def procs_files(self) -> list[str]:
        """The cgroup.procs file(s) the sandbox's first process writes its pid to (always two)."""
        files = [os.path.join(d, "cgroup.procs") for d in self.dirs]
        return files * (2 // len(files))

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the sandbox at its memory limit: counted by
        the kernel, read by the harness, never written by the program."""
        name, key = ("memory.oom_control", "oom_kill") if self.kind == "v1" else ("memory.events", "oom_kill")
        try:
            with open(os.path.join(self.dirs[0], name)) as f:
                return any(line.split()[:1] == [key] and int(line.split()[1]) > 0 for line in f)
        except (OSError, IndexError, ValueError):
            return False

    def remove(self) -> None:
        """SIGKILL whatever is still in it (guard-only: what the program left behind), then
        remove it (retried while the kernel is still tearing its processes down)."""
        for _ in range(200):
            for d in list(self.dirs):
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        for pid in f.read().split():
                            try:
                                os.kill(int(pid), signal.SIGKILL)
                            except OSError:
                                pass
                    os.rmdir(d)
                    self.dirs.remove(d)
                except FileNotFoundError:
                    self.dirs.remove(d)
                except OSError:
                    pass  # EBUSY: not empty yet
            if not self.dirs:
                return
            time.sleep(0.01)
        warnings.warn(f"aggc.evaluate.sandbox: could not remove the cgroup(s) {self.dirs}", RuntimeWarning, stacklevel=2)


def _cgroup_problem() -> str:
    """Why no cgroup bounds the sandboxes here ("" when one does); warned about once."""
    parents = _cgroup_parents()
    return parents if isinstance(parents, str) else ""


@functools.cache
def _warn_no_cgroup() -> None:
    warnings.warn(f"aggc.evaluate.sandbox: {_cgroup_problem()}; a sandbox's memory is bounded per process only "
                  "(RLIMIT_AS), not in total (README, Security)", RuntimeWarning, stacklevel=3)


def _child_env(home: str) -> dict[str, str]:
    """A minimal environment: nothing of ours (tokens, proxies, CUDA settings) leaks in;
    one thread / one malloc arena per BLAS library so that the address-space limit is
    spent on data, not on per-thread reservations."""
    return {
        "PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
    }


def _bwrap_argv(bwrap: str, info_fd: int, scratch_bytes: int, seccomp_fd: int) -> list[str]:
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
    if _seccomp_filter():
        argv += ["--seccomp", str(seccomp_fd)]
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
    program = source.encode("utf-8", "surrogatepass")  # before any process starts (a lone surrogate is valid Python)
    started = time.monotonic()
    fds: list[int] = []  # ours to close
    proc: subprocess.Popen | None = None
    cgroup = scratch = None
    info_r = -1
    try:
        started_r, started_w = os.pipe()
        info_r, info_w = os.pipe()
        fds += [started_r, started_w, info_r, info_w]
        limits = [str(memory), str(math.ceil(timeout) + 1), str(max_file_bytes)]
        if isolation == BUBBLEWRAP:
            seccomp_r, seccomp_w = os.pipe()
            fds += [seccomp_r, seccomp_w]
            os.write(seccomp_w, _seccomp_filter())  # a few hundred bytes: the pipe holds them
            uid = 3_000_000_000 + secrets.randbelow(1_000_000_000) if os.geteuid() == 0 else -1
            argv = [*_bwrap_argv(shutil.which(BWRAP) or BWRAP, info_w, max_file_bytes, seccomp_r), sys.executable, "-I",
                    "-B", "-c", _runner(guard=False), str(started_w), *limits, str(MAX_PROCESSES), str(uid)]
            cwd, env, pass_fds = "/", {}, (started_w, info_w, seccomp_r)
            tasks = MAX_PROCESSES + 2  # bwrap and the PID namespace's init, besides the runner and the program's
        else:
            scratch = tempfile.mkdtemp(prefix="aggc-sandbox-")
            argv = [sys.executable, "-I", "-B", "-c", _runner(guard=True), str(started_w), *limits, "0", "-1"]
            cwd, env, pass_fds = scratch, _child_env(scratch), (started_w,)  # no bwrap info: the program could forge it
            tasks = MAX_PROCESSES
        command = argv[0]
        if not _cgroup_problem():
            cgroup = _Cgroup(memory + max_file_bytes, tasks)  # its scratch tmpfs counts too
            argv = ["/bin/sh", "-c", _JOIN_CGROUP, "sh", *cgroup.procs_files(), *argv]
        else:
            _warn_no_cgroup()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, pass_fds=pass_fds, start_new_session=True)
        for fd in fds:
            if fd not in (started_r, info_r):
                os.close(fd)
        fds = [started_r, info_r]
        tail = _Tail(proc.stderr)
        try:
            proc.stdin.write(program)
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
        if timed_out:  # the harness's clock, nothing else (an exit status of 128 + SIGXCPU is a failure)
            status = TIMEOUT
        elif not ran:
            raise SandboxError(f"the {isolation} sandbox ({command}) did not start (exit status {rc}): {stderr.strip()}")
        elif rc == 0:
            status = PASSED
        elif (cgroup is not None and cgroup.oom_killed()) or rc == _OUT_OF_MEMORY_EXIT:
            status = OUT_OF_MEMORY  # the kernel's OOM kill in its cgroup, or the runner after a MemoryError
        else:
            status = FAILED
        return Outcome(status=status, duration=round(duration, 3), isolation=isolation, stderr=stderr, returncode=rc)
    finally:  # on any exception too: no sandbox is left running, no fd open, nothing on disk
        if proc is not None:
            if proc.returncode is None:
                _kill(proc, info_r)
                proc.wait()
            for pipe in (proc.stdin, proc.stderr):
                try:
                    pipe.close()
                except OSError:
                    pass
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if cgroup is not None:
            cgroup.remove()
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
