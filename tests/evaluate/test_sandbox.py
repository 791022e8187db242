"""The code-execution sandbox (`aggc.evaluate.sandbox`): each test states the property it checks.

Properties of both isolations run under each; the hostile programs (escapes that the
guard-only fallback cannot stop) run under bwrap only. Tests that need bwrap skip where it
cannot run here, and fail instead under CI=true (CI installs it).
"""

import os
import resource
import socket
import subprocess
import tempfile
import time
import uuid
import warnings

import pytest

from aggc.evaluate import sandbox
from aggc.evaluate.sandbox import FAILED, OUT_OF_MEMORY, PASSED, TIMEOUT, run_many, run_program
from aggc.paths import ROOT

SMALL_MEMORY = 256 << 20  # enough for the interpreter, quick to exhaust


def require_bwrap() -> None:
    problem = sandbox._bwrap_problem(sandbox.BWRAP)
    if problem:
        message = f"bwrap cannot run here: {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI installs bubblewrap: .ci/run, make setup)")
        pytest.skip(message)


@pytest.fixture
def bwrap():
    require_bwrap()


def without_bwrap(monkeypatch):
    """The fallback, as where bwrap is absent (its warning is tested on its own)."""
    monkeypatch.setattr(sandbox, "BWRAP", "/nonexistent/bwrap")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield sandbox.GUARD_ONLY


@pytest.fixture
def guard_only(monkeypatch):
    yield from without_bwrap(monkeypatch)


@pytest.fixture(params=[sandbox.BUBBLEWRAP, sandbox.GUARD_ONLY])
def isolation(request, monkeypatch):
    """Each isolation in turn: the properties every sandbox must have."""
    if request.param == sandbox.BUBBLEWRAP:
        require_bwrap()
        yield sandbox.BUBBLEWRAP
    else:
        yield from without_bwrap(monkeypatch)


def processes_with(marker: str) -> list[int]:
    """Pids of this machine whose command line holds `marker`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


# --- every isolation --------------------------------------------------------------------------

def test_a_clean_run_passes_and_a_failed_assert_fails_with_its_traceback(isolation):
    """Passed = ran to its end; an exception is a failure whose traceback is reported; the
    outcome names the isolation it ran under."""
    ok = run_program("x = sum(range(10))\nassert x == 45\nprint('fine')\n")
    assert ok.status == PASSED and ok.passed and ok.returncode == 0 and ok.duration > 0
    assert ok.isolation == isolation
    bad = run_program("def f():\n    return 1\n\nassert f() == 2, 'wrong answer'\n")
    assert bad.status == FAILED and not bad.passed
    assert "AssertionError: wrong answer" in bad.stderr and "program.py" in bad.stderr


@pytest.mark.parametrize("ending", ["import sys\nsys.exit(0)\n", "exit()\n", "quit(0)\n", "raise SystemExit\n",
                                    "import os\nos._exit(0)\n", "import posix\nposix._exit(0)\n"])
def test_syntax_errors_and_early_exits_fail(isolation, ending):
    """A program that does not compile fails; so does one that leaves before its end (its
    tests would not all run), by any of Python's ways to exit."""
    assert run_program("def f(:\n    pass\n").status == FAILED
    early = run_program(ending + "assert False\n")
    assert early.status == FAILED and "exited early" in early.stderr


@pytest.mark.parametrize("loop", ["while True:\n    pass\n", "import time\nwhile True:\n    time.sleep(0.1)\n"])
def test_an_endless_program_is_killed_at_the_wall_clock_limit(isolation, loop):
    """Busy or sleeping, an endless program is killed at the time limit and reported as a timeout."""
    started = time.monotonic()
    outcome = run_program(loop, timeout=1.0)
    assert outcome.status == TIMEOUT and not outcome.passed
    assert time.monotonic() - started < 6  # 1 s limit + start-up and clean-up, on a loaded machine


def test_unbounded_allocation_stops_at_the_memory_limit_and_spares_the_caller(isolation):
    """A program that allocates without end gets MemoryError at the address-space limit and
    is reported as out_of_memory; the limit is the child's only (this process is unchanged
    and can still allocate), and a single over-large request is caught the same way."""
    limits_before = resource.getrlimit(resource.RLIMIT_AS)
    outcome = run_program("chunks = []\nwhile True:\n    chunks.append(bytearray(1 << 20))\n", memory=SMALL_MEMORY, timeout=30)
    assert outcome.status == OUT_OF_MEMORY and "MemoryError" in outcome.stderr
    assert run_program("x = [0] * 10**10\n", memory=SMALL_MEMORY).status == OUT_OF_MEMORY
    assert resource.getrlimit(resource.RLIMIT_AS) == limits_before
    assert len(bytearray(2 * SMALL_MEMORY)) == 2 * SMALL_MEMORY
    caught = "try:\n    x = [0] * 10**10\nexcept MemoryError:\n    pass\n"
    assert run_program(caught, memory=SMALL_MEMORY).status == PASSED  # handled by the program: not a failure


def test_output_is_discarded_not_a_reason_to_fail(isolation):
    """A correct program that prints 40 MB (stdout and stderr) passes; only stderr's end is kept."""
    outcome = run_program("import sys\nprint('x' * 40_000_000)\nsys.stderr.write('y' * 40_000_000 + 'end')\n")
    assert outcome.status == PASSED
    assert outcome.stderr.endswith("yend") and len(outcome.stderr) <= sandbox.STDERR_TAIL


def test_no_connection_reaches_this_machine(isolation):
    """No network: connecting to a server this process has listening on localhost fails,
    through Python's socket modules and, where the sandbox has a network namespace of its
    own (bwrap always; guard-only as root), through ctypes below them."""
    own = os.readlink("/proc/self/ns/net")
    namespaced = run_program(f"import os\nassert os.readlink('/proc/self/ns/net') != {own!r}\n").passed
    assert namespaced or isolation == sandbox.GUARD_ONLY
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.1)
        port = server.getsockname()[1]
        programs = [
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
            f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n",
        ]
        if namespaced:
            programs.append(
                "import ctypes, struct\nlibc = ctypes.CDLL(None)\nfd = libc.socket(2, 1, 0)\n"  # AF_INET, SOCK_STREAM
                f"address = struct.pack('!HH4s8x', 2, {port}, bytes([127, 0, 0, 1]))\n"
                "assert libc.connect(fd, address, 16) == 0, 'not connected'\n"
            )
        for program in programs:
            assert run_program(program).status == FAILED, program
        with pytest.raises(TimeoutError):
            server.accept()


def test_files_go_to_a_scratch_directory_that_vanishes(isolation, tmp_path, monkeypatch):
    """The program runs in a fresh directory (its working directory, HOME and TMPDIR), can
    write files there, and nothing of it is left when the call returns, after a kill too;
    the next program starts with an empty directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where guard-only makes its directory
    program = (
        "import os, tempfile\n"
        "assert os.environ['HOME'] == os.getcwd() and tempfile.gettempdir() == os.getcwd()\n"
        "assert os.listdir('.') == ['program.py'], os.listdir('.')\n"
        "with open('result.txt', 'w') as f:\n    f.write('x' * 1000)\n"
        "os.makedirs('sub/dir')\n"
        "with tempfile.NamedTemporaryFile(dir='sub') as f:\n    f.write(b'y')\n"
        "assert open('result.txt').read() == 'x' * 1000\n"
    )
    assert run_program(program).status == PASSED
    assert run_program(program).status == PASSED  # the first one's files are gone
    assert run_program("open('left_behind.txt', 'w').write('z')\nwhile True:\n    pass\n", timeout=1).status == TIMEOUT
    assert list(tmp_path.iterdir()) == []
    assert not os.path.exists(sandbox.SCRATCH)  # bwrap's directory exists only inside the sandbox


def test_a_verdict_cannot_be_forged_through_the_harness(isolation):
    """What the program can read (its command line, environment, open files) and what the
    runner's frames hold give it no way to a pass: writing a verdict anywhere and calling
    any exit or finish function it finds, then failing, is a failure."""
    forger = (
        "import os, sys\n"
        "loot = open('/proc/self/cmdline', 'rb').read() + repr(dict(os.environ)).encode()\n"
        "for fd in range(64):\n"
        "    for claim in (b'passed', b'passed ' + loot, b'0'):\n"
        "        try:\n            os.write(fd, claim)\n        except OSError:\n            pass\n"
        "frame = sys._getframe(1)\n"
        "while frame:\n"
        "    for name, value in {**frame.f_globals, **frame.f_locals}.items():\n"
        "        if callable(value) and any(w in name.lower() for w in ('exit', 'finish', 'verdict', 'pass')):\n"
        "            try:\n                value(0)\n            except BaseException:\n                pass\n"
        "    frame = frame.f_back\n"
        "assert False, 'the tests fail'\n"
    )
    outcome = run_program(forger)
    assert outcome.status in (FAILED, OUT_OF_MEMORY)  # stderr, which it wrote, only tells failures apart
    assert "the tests fail" in outcome.stderr


def test_run_many_keeps_the_order_of_its_programs(isolation):
    """Outcomes come back in the order of the programs, whatever order they finish in."""
    programs = ["import time\ntime.sleep(0.5)\n", "assert False\n", "pass\n", "while True:\n    pass\n"]
    outcomes = run_many(programs, workers=2, timeout=2)
    assert [o.status for o in outcomes] == [PASSED, FAILED, PASSED, TIMEOUT]
    assert sandbox.STATUSES == (PASSED, FAILED, TIMEOUT, OUT_OF_MEMORY)


def test_run_many_runs_a_timeout_again_alone_and_that_run_counts(monkeypatch):
    """A program that timed out among others (on a busy machine) is run again after them,
    with nothing else running, under its own time limit; the second verdict is the one kept."""
    calls, running = [], []

    def fake_run(source, *, timeout, memory):
        running.append(source)
        calls.append((source, timeout, len(running)))
        time.sleep(0.05)
        running.remove(source)
        slow_first_time = source == "slow" and [c[0] for c in calls].count("slow") == 1
        return sandbox.Outcome(TIMEOUT if slow_first_time else PASSED, 0.0, sandbox.GUARD_ONLY)

    monkeypatch.setattr(sandbox, "run_program", fake_run)
    outcomes = run_many(["a", "slow", "b", "c"], workers=4, timeout=[1.0, 7.0, 1.0, 1.0])
    assert [o.status for o in outcomes] == [PASSED] * 4
    assert calls[-1] == ("slow", 7.0, 1) and [c[0] for c in calls].count("slow") == 2


# --- the fallback -----------------------------------------------------------------------------

@pytest.mark.parametrize("bwrap_path", ["/nonexistent/bwrap", "/bin/false"])
def test_without_a_working_bwrap_programs_run_guard_only_with_a_warning(monkeypatch, bwrap_path):
    """Where bwrap is absent, or cannot start a sandbox (here: a bwrap that always fails),
    programs still run, under the guard, with a warning that says why; every outcome says so."""
    monkeypatch.setattr(sandbox, "BWRAP", bwrap_path)
    with pytest.warns(RuntimeWarning, match="GUARD-ONLY") as warned:
        assert sandbox.isolation() == sandbox.GUARD_ONLY
        outcome = run_program("pass\n")
    assert outcome.status == PASSED and outcome.isolation == sandbox.GUARD_ONLY
    reason = "not found" if bwrap_path.startswith("/nonexistent") else "did not start"
    assert all(bwrap_path in str(w.message) and reason in str(w.message) for w in warned)


def test_the_guard_refuses_writes_outside_and_new_processes(guard_only, tmp_path, monkeypatch):
    """Guard-only: writes, deletions and renames outside its directory fail through the
    usual APIs, reading is allowed; processes cannot be started or signalled; none of our
    environment variables are visible."""
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    for program in (
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')\n",
        f"open({str(keep)!r}, 'a').write('x')\n",
        f"import pathlib\npathlib.Path({str(tmp_path / 'new.txt')!r}).write_text('x')\n",
        f"import os\nos.remove({str(keep)!r})\n",
        f"import os\nos.rename({str(keep)!r}, 'stolen.txt')\n",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
        "import os\nos.fork()\n", "import subprocess\nsubprocess.run(['true'])\n",
        "import os\nos.system('true')\n", "import os\nos.kill(os.getppid(), 0)\n",
    ):
        outcome = run_program(program)
        assert outcome.status == FAILED and "PermissionError" in outcome.stderr, program
    assert keep.read_text() == "precious" and not (tmp_path / "new.txt").exists()
    assert run_program(f"assert open({str(keep)!r}).read() == 'precious'\n").status == PASSED
    monkeypatch.setenv("AGGC_SANDBOX_SECRET", "do-not-leak")
    assert run_program("import os\nassert 'AGGC_SANDBOX_SECRET' not in os.environ\n").status == PASSED


# --- hostile programs, under bwrap ------------------------------------------------------------

def test_bwrap_runs_the_program_unprivileged_and_alone(bwrap):
    """Under bwrap the program is no root, has no capabilities, cannot gain privileges
    (no_new_privs), and sees only its own processes: bwrap's init and itself."""
    program = (
        "import os\n"
        "status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)\n"
        "assert os.getuid() != 0 and os.geteuid() != 0, os.getuid()\n"
        "assert status['NoNewPrivs'].strip() == '1' and int(status['CapEff'], 16) == 0, status\n"
        "assert sorted(int(p) for p in os.listdir('/proc') if p.isdigit()) == [1, os.getpid()]\n"
    )
    outcome = run_program(program)
    assert outcome.status == PASSED, outcome.stderr
    assert outcome.isolation == sandbox.BUBBLEWRAP


def test_no_secret_of_the_parents_environment_is_readable(bwrap, monkeypatch):
    """Tokens in the harness's environment are in no environment or command line the program
    can read: not its own, not its parent's (/proc/<ppid>/environ), not any process's."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-aggc-test-secret")
    monkeypatch.setenv("HF_TOKEN", "hf_aggc_test_secret")
    program = (
        "import os\n"
        "seen = repr(dict(os.environ)).encode()\n"
        "for pid in ['self', str(os.getppid())] + [p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    for part in ('environ', 'cmdline'):\n"
        "        try:\n            seen += open(f'/proc/{pid}/{part}', 'rb').read()\n        except OSError:\n            pass\n"
        "assert b'aggc-test-secret' not in seen and b'aggc_test_secret' not in seen, 'a secret is readable'\n"
        "assert b'pytest' not in seen, 'the harness is visible'\n"
    )
    outcome = run_program(program)
    assert outcome.status == PASSED, outcome.stderr


def test_the_harness_and_other_processes_cannot_be_signalled(bwrap):
    """SIGKILL to its parent, to the harness's pid, to a bystander's pid and to every pid it
    can see harms nothing outside the sandbox: the harness and the bystander live on."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        program = (
            "import os, posix, signal\n"
            f"targets = {{{os.getpid()}, {bystander.pid}, os.getppid(), 1}} | {{int(p) for p in os.listdir('/proc') if p.isdigit()}}\n"
            "targets.discard(os.getpid())\n"
            "for pid in targets:\n"
            "    try:\n        posix.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
        )
        assert run_program(program).status == PASSED
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_nothing_appears_or_disappears_outside_the_scratch_directory(bwrap, tmp_path):
    """posix.system, posix.open, io.FileIO, _io.open, sqlite3 and mkdir cannot create files
    anywhere on this machine outside the program's directory (this test's directory, /tmp,
    the project, /root, /dev/shm, /var/tmp, the Python installation), and posix.unlink,
    posix.rename, `rm` and shutil.rmtree cannot delete or move a file outside it."""
    import sys

    marker = f"aggc-escape-{uuid.uuid4().hex}"
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    places = [str(tmp_path), "/tmp", str(ROOT), "/root", "/dev/shm", "/var/tmp", sys.prefix, sys.base_prefix]
    program = (
        "import _io, io, os, posix, shutil, sqlite3\n"
        f"places, marker, keep = {places!r}, {marker!r}, {str(keep)!r}\n"
        "ways = {\n"
        "    'system': lambda p: posix.system(f'echo x > {p}'),\n"
        "    'posix.open': lambda p: posix.open(p, os.O_WRONLY | os.O_CREAT),\n"
        "    'FileIO': lambda p: io.FileIO(p, 'w'),\n"
        "    '_io.open': lambda p: _io.open(p, 'w'),\n"
        "    'sqlite3': lambda p: sqlite3.connect(p).execute('create table t (x)'),\n"
        "    'mkdir': lambda p: posix.mkdir(p),\n"
        "}\n"
        "for place in places:\n"
        "    for way, make in ways.items():\n"
        "        try:\n            make(f'{place}/{marker}-{way}')\n        except Exception:\n            pass\n"
        "for remove in (posix.unlink, lambda p: posix.rename(p, p + '.moved'), lambda p: posix.system(f'rm -f {p}'),\n"
        "               lambda p: shutil.rmtree(os.path.dirname(p))):\n"
        "    try:\n        remove(keep)\n    except Exception:\n        pass\n"
        "with open('mine.txt', 'w') as f:\n    f.write('its own directory is writable')\n"
    )
    assert run_program(program).status == PASSED
    assert keep.read_text() == "precious" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    leaked = [f"{place}/{name}" for place in places for name in os.listdir(place) if marker in name]
    assert leaked == []


@pytest.mark.parametrize("parent", ["while True:\n    pass\n", "pass\n"], ids=["killed at the time limit", "ending on its own"])
def test_no_process_outlives_its_program(bwrap, parent):
    """A child that forks, leaves the session (setsid) and lives on is gone when run_program
    returns, whether the program was killed at the time limit or ended on its own."""
    marker = f"aggc-daemon-{uuid.uuid4().hex}"
    program = (
        "import os, sys, posix\n"
        "if posix.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', 'import time\\nwhile True: time.sleep(1)', {marker!r}])\n"
        "import time\n"
        "time.sleep(0.5)\n" + parent
    )
    outcome = run_program(program, timeout=2)
    assert outcome.status == (TIMEOUT if "while" in parent else PASSED)
    assert processes_with(marker) == []


def test_a_fork_bomb_is_contained(bwrap):
    """A process can have at most MAX_PROCESSES tasks (fork fails beyond), and a fork bomb
    stays within that until the time limit kills all of it; the harness can still fork."""
    counting = (
        "import os, time\n"
        "children = 0\n"
        "try:\n"
        "    while children < 100:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "        children += 1\n"
        "except BlockingIOError:\n"
        "    pass\n"
        f"assert 0 < children < {sandbox.MAX_PROCESSES}, children\n"
    )
    assert run_program(counting).status == PASSED
    marker = f"aggc-bomb-{uuid.uuid4().hex}"
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    program = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {bomb!r}, {marker!r}])\n"
    assert run_program(program, timeout=2).status == TIMEOUT
    assert processes_with(marker) == []
    assert subprocess.run(["true"]).returncode == 0


# --- the adversarial review's findings (each failed before its fix) ---------------------------

def require_cgroup() -> None:
    problem = sandbox._cgroup_problem()
    if problem:
        pytest.skip(f"no cgroup bounds a sandbox's memory here: {problem}")


def test_memory_outside_the_address_space_limit_is_bounded(isolation):
    """Memory that RLIMIT_AS does not count (a memfd's pages; under bwrap memfd_create is
    refused outright) cannot be filled without bound: 512 MiB into a memfd does not pass
    under a 256 MiB limit."""
    program = 'import os\nfd = os.memfd_create("x")\nchunk = b"\\1" * (16 << 20)\nfor _ in range(32):\n    os.write(fd, chunk)\n'
    outcome = run_program(program, memory=SMALL_MEMORY, timeout=30)
    assert outcome.status in (FAILED, OUT_OF_MEMORY), outcome
    if isolation == sandbox.BUBBLEWRAP:
        assert outcome.status == FAILED and "PermissionError" in outcome.stderr, outcome


def test_the_memory_limit_holds_for_all_the_processes_of_a_sandbox_together(isolation):
    """RLIMIT_AS is per process; the sandbox's cgroup bounds them all together: four
    children that each hold 200 MiB (within their own limit) cannot all do so under a
    256 MiB sandbox -- the kernel kills one, and the outcome is out_of_memory, counted by the
    kernel and read by the harness."""
    require_cgroup()
    program = (
        "import posix, time\n"
        "children = []\n"
        "for _ in range(4):\n"
        "    pid = posix.fork()\n"
        "    if pid == 0:\n"
        "        block = b'\\1' * (200 << 20)\n"
        "        time.sleep(2)\n"
        "        raise SystemExit\n"
        "    children.append(pid)\n"
        "statuses = [posix.waitpid(pid, 0)[1] for pid in children]\n"
        "assert not any(posix.WIFSIGNALED(s) for s in statuses), statuses\n"
    )
    outcome = run_program(program, memory=SMALL_MEMORY, timeout=30)
    assert outcome.status == OUT_OF_MEMORY, outcome


_NAMESPACE_ESCAPES = {
    "unshare": "assert libc.unshare(0x10000000 | 0x20000) != 0, 'a nested user namespace'\n",  # NEWUSER | NEWNS
    "unshare-net": "assert libc.unshare(0x40000000) != 0, 'a network namespace'\n",
    "clone": (  # raw clone(CLONE_NEWUSER | SIGCHLD): a child in a new user namespace
        "pid = libc.syscall({clone}, 0x10000000 | 17, 0, 0, 0, 0)\n"
        "if pid == 0:\n    libc._exit(0)\n"
        "assert pid < 0, 'a child in a new user namespace'\n"
    ),
    "clone3": (  # clone3 with CLONE_NEWUSER in struct clone_args
        "import struct\n"
        "args = ctypes.create_string_buffer(struct.pack('=11Q', 0x10000000, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0))\n"
        "pid = libc.syscall(435, args, 88)\n"
        "if pid == 0:\n    libc._exit(0)\n"
        "assert pid < 0, 'a child in a new user namespace'\n"
    ),
    "unshare-binary": (
        "import subprocess\n"
        "assert subprocess.run(['unshare', '--user', '--map-root-user', '--mount', 'true']).returncode != 0\n"
    ),
}


@pytest.mark.parametrize("way", sorted(_NAMESPACE_ESCAPES))
def test_no_nested_namespaces_under_bwrap(bwrap, way):
    """Under bwrap (run by root too) the program cannot make a user, mount or network
    namespace of its own -- by unshare, clone, clone3 or the unshare program -- where it
    would be root again: mounting tmpfs (unbounded memory), CAP_NET_ADMIN on a network stack."""
    import platform

    clone = {"x86_64": 56, "aarch64": 220}.get(platform.machine(), 56)
    program = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n" + _NAMESPACE_ESCAPES[way].format(clone=clone)
    outcome = run_program(program)
    assert outcome.status == PASSED, outcome.stderr


_FAILURE_HOOKS = {
    "sys.stderr": "class Log:\n    def write(self, s):\n        raise SystemExit(0)\n    def flush(self):\n        pass\nsys.stderr = Log()\n",
    "sys.excepthook": "def hook(*args):\n    raise SystemExit(0)\nsys.excepthook = hook\n",
    "traceback": "import traceback\ndef hook(*args, **kwargs):\n    raise SystemExit(0)\ntraceback.print_exception = hook\n",
    "importlib.util": (
        "import importlib, types\n"
        "def fake(*args):\n    raise SystemExit(0)\n"
        "importlib.util = types.SimpleNamespace(module_from_spec=fake)\n"
        "sys.modules['importlib.util'] = importlib.util\n"
    ),
    "SIGALRM": (  # a handler that ends the process with status 0 whenever it interrupts the runner
        "import signal\n"
        "def handler(signum, frame):\n"
        "    if frame is not None and frame.f_code.co_filename != __file__:\n"
        "        raise SystemExit(0)\n"
        "signal.signal(signal.SIGALRM, handler)\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)\n"
    ),
    "settrace": (  # a trace function that raises SystemExit(0) in the runner's frames
        "def tracer(frame, event, arg):\n"
        "    if frame.f_code.co_filename != __file__:\n"
        "        raise SystemExit(0)\n"
        "    return tracer\n"
        "frame = sys._getframe()\n"
        "while frame:\n    frame.f_trace = tracer\n    frame = frame.f_back\n"
        "sys.settrace(tracer)\n"
    ),
}


@pytest.mark.parametrize("hook", sorted(_FAILURE_HOOKS))
def test_a_failing_program_cannot_pass_through_what_the_runner_does_after_it(isolation, hook):
    """Whatever the program plants for the runner to run after it (its own sys.stderr, an
    excepthook, a patched traceback or importlib module, a signal handler or a trace
    function that raises SystemExit(0) in the runner's frames), its failure stays a failure,
    and the runner's report still names it."""
    program = "import sys\n" + _FAILURE_HOOKS[hook] + "def f():\n    return 1\n\nassert f() == 2, 'the tests fail'\n"
    outcome = run_program(program)
    assert outcome.status == FAILED and outcome.returncode == 1, outcome
    if hook not in ("SIGALRM", "settrace"):  # there the handler may strike before the runner's report
        assert "AssertionError: the tests fail" in outcome.stderr, outcome


def test_a_program_that_cannot_be_encoded_fails_and_leaves_no_process(isolation, monkeypatch):
    """A lone surrogate (no tokenizer emits one, but a str can hold it) is a failed program,
    not an exception of the harness; and when anything raises while a sandbox runs, the
    sandbox is killed and waited for before the exception leaves run_program."""
    outcome = run_program("x = '\ud800'\n")
    assert outcome.status == FAILED and not outcome.passed
    assert run_program("x = '\\ud800'\nassert len(x) == 1\n").status == PASSED

    class Broken(Exception):
        pass

    def broken_tail(pipe):
        raise Broken

    monkeypatch.setattr(sandbox, "_Tail", broken_tail)
    before = children_of_this_process()  # earlier tests' long-lived children (multiprocessing's resource tracker)
    with pytest.raises(Broken):
        run_program("import time\ntime.sleep(30)\n")
    assert children_of_this_process() - before == set()


def children_of_this_process() -> set[int]:
    children = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rpartition(")")[2].split()[1]) == os.getpid():
                    children.add(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    return children


@pytest.mark.parametrize("forgery", [
    "import os, signal\nos.kill(os.getpid(), signal.SIGXCPU)\n",
    "import sys\nsys.stderr.write('MemoryError: Cannot allocate memory (out of memory)\\n')\nassert False\n",
])
def test_timeout_and_out_of_memory_cannot_be_claimed_by_the_program(isolation, forgery):
    """Timeout comes from the harness's clock alone (dying of SIGXCPU is a failure), and a
    program that writes an out-of-memory message and fails is a failure."""
    outcome = run_program(forgery)
    assert outcome.status == FAILED, outcome
