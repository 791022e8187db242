"""The code-execution sandbox (`aggc.evaluate.sandbox`): each test states the property it checks."""

import os
import resource
import socket
import tempfile
import time

import pytest

from aggc.evaluate import sandbox
from aggc.evaluate.sandbox import FAILED, OUT_OF_MEMORY, PASSED, TIMEOUT, run_many, run_program

SMALL_MEMORY = 256 << 20  # enough for the interpreter, quick to exhaust


def test_a_clean_run_passes_and_a_failed_assert_fails_with_its_traceback():
    """Passed = ran to its end; an exception is a failure whose traceback is reported."""
    ok = run_program("x = sum(range(10))\nassert x == 45\nprint('fine')\n")
    assert ok.status == PASSED and ok.passed and ok.returncode == 0 and ok.duration > 0
    bad = run_program("def f():\n    return 1\n\nassert f() == 2, 'wrong answer'\n")
    assert bad.status == FAILED and not bad.passed
    assert "AssertionError: wrong answer" in bad.stderr and "program.py" in bad.stderr


def test_syntax_errors_and_early_exits_fail():
    """A program that does not compile fails; so does one that leaves before its end (its
    tests would not all run), by sys.exit(0) or by os._exit(0)."""
    assert run_program("def f(:\n    pass\n").status == FAILED
    early = run_program("import sys\nsys.exit(0)\nassert False\n")
    assert early.status == FAILED and "exited early" in early.stderr
    assert run_program("import os\nos._exit(0)\n").status == FAILED


@pytest.mark.parametrize("loop", ["while True:\n    pass\n", "import time\nwhile True:\n    time.sleep(0.1)\n"])
def test_an_endless_program_is_killed_at_the_wall_clock_limit(loop):
    """Busy or sleeping, an endless program is killed at the time limit and reported as a timeout."""
    started = time.monotonic()
    outcome = run_program(loop, timeout=1.0)
    assert outcome.status == TIMEOUT and not outcome.passed
    assert time.monotonic() - started < 6  # 1 s limit + start-up and clean-up, on a loaded machine


def test_unbounded_allocation_stops_at_the_memory_limit_and_spares_the_caller():
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


def test_a_connection_to_a_listening_server_fails():
    """No network: connecting to a server that this process has listening on localhost fails."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        for program in (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
            f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\n",
            f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n",
        ):
            outcome = run_program(program)
            assert outcome.status == FAILED and "network access is not allowed" in outcome.stderr


def test_the_network_namespace_stops_even_a_connection_made_through_ctypes():
    """Where the kernel allows a network namespace (root here), even a socket made below
    Python's `socket` module cannot reach this machine's loopback."""
    own = os.readlink("/proc/self/ns/net")
    if run_program(f"import os\nassert os.readlink('/proc/self/ns/net') != {own!r}\n").status != PASSED:
        pytest.skip("no network namespace for the sandbox here (not root, no user namespaces)")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        program = (
            "import ctypes, struct\n"
            "libc = ctypes.CDLL(None)\n"
            "fd = libc.socket(2, 1, 0)\n"  # AF_INET, SOCK_STREAM
            f"address = struct.pack('!HH4s8x', 2, {port}, bytes([127, 0, 0, 1]))\n"
            "assert libc.connect(fd, address, 16) == 0, 'not connected'\n"
        )
        outcome = run_program(program)
    assert outcome.status == FAILED and "not connected" in outcome.stderr


def test_files_go_to_a_temporary_directory_that_is_removed(tmp_path, monkeypatch):
    """The program runs in a fresh temporary directory (its working directory, HOME and
    TMPDIR), can write files there, and the directory is gone when the call returns."""
    parent = tmp_path / "sandboxes"
    parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(parent))
    program = (
        "import os, tempfile\n"
        f"assert os.getcwd().startswith({str(parent)!r}), os.getcwd()\n"
        "assert os.environ['HOME'] == os.getcwd() and tempfile.gettempdir() == os.getcwd()\n"
        "with open('result.txt', 'w') as f:\n    f.write('x' * 1000)\n"
        "os.makedirs('sub/dir')\n"
        "with tempfile.NamedTemporaryFile(dir='sub') as f:\n    f.write(b'y')\n"
        "assert open('result.txt').read() == 'x' * 1000\n"
        "os.remove('result.txt')\n"
    )
    assert run_program(program).status == PASSED
    assert list(parent.iterdir()) == []
    assert run_program("open('left_behind.txt', 'w').write('z')\nwhile True:\n    pass\n", timeout=1).status == TIMEOUT
    assert list(parent.iterdir()) == []  # removed after a kill too


def test_writing_or_deleting_outside_the_temporary_directory_is_refused(tmp_path):
    """Writes, deletions and renames outside its directory fail and leave the files alone."""
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    for program in (
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')\n",
        f"open({str(keep)!r}, 'a').write('x')\n",
        f"import pathlib\npathlib.Path({str(tmp_path / 'new.txt')!r}).write_text('x')\n",
        f"import os\nos.remove({str(keep)!r})\n",
        f"import os\nos.rename({str(keep)!r}, 'stolen.txt')\n",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
    ):
        outcome = run_program(program)
        assert outcome.status == FAILED and "PermissionError" in outcome.stderr, program
    assert keep.read_text() == "precious" and not (tmp_path / "new.txt").exists()
    assert run_program(f"assert open({str(keep)!r}).read() == 'precious'\n").status == PASSED  # reading is fine


def test_no_new_processes_and_a_minimal_environment(monkeypatch):
    """The program cannot start processes or signal others, and sees none of our
    environment variables (no tokens or settings leak in)."""
    for program in ("import os\nos.fork()\n", "import subprocess\nsubprocess.run(['true'])\n",
                    "import os\nos.system('true')\n", "import os\nos.kill(os.getppid(), 0)\n"):
        outcome = run_program(program)
        assert outcome.status == FAILED and "PermissionError" in outcome.stderr, program
    monkeypatch.setenv("AGGC_SANDBOX_SECRET", "do-not-leak")
    assert run_program("import os\nassert 'AGGC_SANDBOX_SECRET' not in os.environ\n").status == PASSED


def test_run_many_keeps_the_order_of_its_programs():
    """Outcomes come back in the order of the programs, whatever order they finish in."""
    programs = ["import time\ntime.sleep(0.5)\n", "assert False\n", "pass\n", "while True:\n    pass\n"]
    outcomes = run_many(programs, workers=2, timeout=2)
    assert [o.status for o in outcomes] == [PASSED, FAILED, PASSED, TIMEOUT]
    assert sandbox.STATUSES == (PASSED, FAILED, TIMEOUT, OUT_OF_MEMORY)
