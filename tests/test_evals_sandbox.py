"""The execution sandbox: hostile or broken programs fail and harm nothing else."""

import os
import socket
import tempfile
import time
from pathlib import Path

import pytest

from unmask.errors import UnmaskError
from unmask.evals.sandbox import SandboxConfig, pids_of_uid, probe_isolation, run_program, run_programs

FAST = SandboxConfig(timeout_s=2.0, max_processes=8)


def _shared_folder() -> Path:
    """A folder the sandboxed program may write into (to report pids), outside its own folder."""
    d = Path(tempfile.mkdtemp(prefix="unmask-test-"))
    d.chmod(0o777)
    return d


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_passing_failing_and_erroring_programs_are_told_apart():
    results = run_programs(["assert sum([1, 2]) == 3\n", "assert sum([1, 2]) == 4\n", "undefined_name()\n",
                            "def f(:\n"], FAST)
    assert [r.status for r in results] == ["passed", "failed", "error", "error"]
    assert [r.error_type for r in results] == [None, "AssertionError", "NameError", "SyntaxError"]


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "raise SystemExit"])
def test_exit_inside_the_test_is_a_failure(exit_call):
    program = f"import os, sys\ndef check(candidate):\n    {exit_call}\n    assert False\ncheck(None)\n"
    result = run_program(program, FAST)
    assert not result.passed
    assert result.status == "error"


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = run_program("while True:\n    pass\n", SandboxConfig(timeout_s=1.0))
    assert result.status == "timed out"
    assert time.monotonic() - start < 10  # killed, not waited for


def test_huge_allocation_fails_without_touching_the_machine():
    result = run_program("x = bytearray(100 * 10**9)\nassert len(x)\n", FAST)
    assert result.status == "error" and result.error_type == "MemoryError"


def test_fork_bomb_is_capped_and_every_process_is_killed():
    shared = _shared_folder()
    # Each process records its pid, then forks forever, sleeping whenever the process limit says no.
    program = f"""
import os, time
def note():
    open(os.path.join({str(shared)!r}, str(os.getpid())), "w").close()
    open(os.path.join({str(shared)!r}, "uid"), "w").write(str(os.getuid()))
note()
while True:
    try:
        if os.fork() == 0:
            note()
    except OSError:
        time.sleep(0.01)
"""
    try:
        result = run_program(program, SandboxConfig(timeout_s=1.5, max_processes=8))
        assert result.status == "timed out"
        pids = [int(p.name) for p in shared.iterdir() if p.name.isdigit()]
        assert 1 <= len(pids) <= 8 + 1  # the budget held (the first process plus at most 8 more)
        time.sleep(0.1)
        assert not [pid for pid in pids if _alive(pid)]
        uid = int((shared / "uid").read_text())
        if uid != os.getuid():  # a private user id: nothing at all may run under it any more
            assert pids_of_uid(uid) == []
    finally:
        for p in shared.iterdir():
            p.unlink()
        shared.rmdir()


def test_a_daemon_that_leaves_the_process_group_is_killed():
    if not probe_isolation(FAST).private_user:
        pytest.skip("not root: a process that calls setsid escapes the process-group kill (documented)")
    shared = _shared_folder()
    program = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    open(os.path.join({str(shared)!r}, str(os.getpid())), "w").close()
    time.sleep(60)
time.sleep(0.3)
"""
    try:
        result = run_program(program, FAST)
        assert result.passed
        pids = [int(p.name) for p in shared.iterdir()]
        assert len(pids) == 1
        time.sleep(0.1)
        assert not _alive(pids[0])
    finally:
        for p in shared.iterdir():
            p.unlink()
        shared.rmdir()


def test_files_outside_the_sandbox_folder_survive(tmp_path):
    if not probe_isolation(FAST).private_user:
        pytest.skip("not root: programs run as the harness's user and CAN delete its files (documented)")
    # A folder and file the program can see (world-readable, like most of the system) but does not own.
    outside = Path(tempfile.mkdtemp(prefix="unmask-sentinel-"))
    try:
        outside.chmod(0o755)
        sentinel = outside / "sentinel.txt"
        sentinel.write_text("keep me")
        sentinel.chmod(0o644)
        program = f"""
import os, shutil
for attempt in (lambda: os.remove({str(sentinel)!r}), lambda: shutil.rmtree({str(outside)!r}),
                lambda: open({str(sentinel)!r}, "w").write("overwritten"),
                lambda: os.rename({str(sentinel)!r}, "stolen.txt")):
    try:
        attempt()
    except OSError:
        pass
open("inside.txt", "w").write("the program's own folder is writable")
assert os.path.exists("inside.txt")
"""
        result = run_program(program, FAST)
        assert result.passed, result
        assert sentinel.read_text() == "keep me"
    finally:
        sentinel.unlink(missing_ok=True)
        outside.rmdir()


def test_the_program_runs_in_a_fresh_folder_that_is_removed():
    program = "import os\nassert os.listdir('.') == ['program.py'], os.listdir('.')\n" \
              "assert os.environ['HOME'] == os.getcwd()\nopen('left.txt', 'w').write('x')\n"
    before = set(os.listdir(tempfile.gettempdir()))
    assert run_program(program, FAST).passed
    after = set(os.listdir(tempfile.gettempdir()))
    assert not [name for name in after - before if name.startswith("unmask-sandbox-")]


def test_secrets_in_the_environment_are_not_passed(monkeypatch):
    monkeypatch.setenv("UNMASK_TEST_SECRET_TOKEN", "hunter2")
    program = "import os\nassert 'UNMASK_TEST_SECRET_TOKEN' not in os.environ\n" \
              "assert not any('hunter2' in v for v in os.environ.values())\n"
    assert run_program(program, FAST).passed


def test_network_is_refused_when_isolation_is_on():
    iso = probe_isolation(FAST)
    if not iso.network_isolated:
        pytest.skip("network isolation is off on this machine: " + "; ".join(iso.notes))
    with socket.socket() as server:  # a listener on this machine's loopback, reachable without isolation
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        result = run_program(program, FAST)
    assert result.status == "error" and result.error_type in ("OSError", "ConnectionRefusedError"), result


def test_output_flood_is_cut_off():
    result = run_program("while True:\n    print('x' * 10000)\n", SandboxConfig(timeout_s=5.0, max_output_bytes=10**5))
    assert not result.passed and result.status != "timed out"


def test_an_interpreter_that_cannot_run_is_reported():
    with pytest.raises(UnmaskError, match="no Python interpreter runs inside the sandbox"):
        probe_isolation(SandboxConfig(python="/nonexistent/python3"))
