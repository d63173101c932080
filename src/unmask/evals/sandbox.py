"""Run model-written Python programs in a sandbox: one subprocess each, in a fresh temporary folder.

    results = run_programs([source, ...], SandboxConfig(timeout_s=5))   # parallel across cores
    print(describe_isolation(probe_isolation(SandboxConfig())))

What protects the machine, and what does not (`probe_isolation` reports which parts are on here):
- a wall-clock timeout, after which the program's process group is killed with SIGKILL, and CPU-time,
  address-space, process-count, file-size and open-file limits set with `resource` before it starts;
- a minimal environment (PATH, HOME, TMPDIR, LANG): no variable of the harness (tokens, keys) reaches it;
- its working folder, HOME and TMPDIR are a fresh temporary folder, deleted afterwards;
- as root: a private network namespace (only a loopback that is down, so every connection fails) and a
  private, otherwise unused user id. The program then cannot delete, write or signal anything it does not
  own; it can still read world-readable files and create files in world-writable folders (/tmp, /dev/shm).
  After it ends, every process left with that user id is killed, so a daemon or fork bomb cannot linger.
  The harness's own interpreter may sit where that user cannot read it (e.g. under /root), in which case
  the programs run on the first `python3` on the system PATH that the sandbox user can execute;
- not root: the same limits, and a network namespace inside a user namespace where the kernel allows it;
  the program runs as the harness's user, so files that user may delete are NOT protected, and a process
  that leaves its process group (setsid) is not killed.
This guards against accidents of model-written code. It is not a jail for adversarial code: there is no
seccomp filter, no mount namespace and no cgroup.

A program passes only if it exits with status 0 after writing a random per-run sentinel that the harness
appends after the tests, so `sys.exit(0)` or `os._exit(0)` inside a test counts as a failure.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UnmaskError

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
_UNSHARE_FAILED = 120  # launcher exit codes: the namespace could not be made / the interpreter not run
_EXEC_FAILED = 121
_MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"
_TAIL_BYTES = 64 * 1024
# Private user ids are drawn from this range, far above any real account's, so that a collision with
# another process's user id (whose processes the cleanup would kill) is practically impossible.
_UID_RANGE = (1_000_000_000, 2_000_000_000)

# Runs as the harness's user (root when isolating), sets the limits, enters the namespaces, drops to the
# private user id and replaces itself with the interpreter that runs program.py.
_LAUNCHER = r"""
import json, os, resource, sys
cfg = json.loads(sys.argv[1])
for name, soft, hard in cfg["rlimits"]:
    resource.setrlimit(getattr(resource, name), (soft, hard))
if cfg["unshare"]:
    try:
        if hasattr(os, "unshare"):
            os.unshare(cfg["unshare"])
        else:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(cfg["unshare"]) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except OSError as e:
        os.write(2, ("unmask-sandbox: unshare failed: %s\n" % e).encode())
        os._exit(120)
os.chdir(cfg["cwd"])
if cfg["uid"] is not None:
    os.setgroups([])
    os.setgid(cfg["uid"])
    os.setuid(cfg["uid"])
try:
    os.execve(cfg["python"], [cfg["python"], "-I", "program.py"], cfg["env"])
except OSError as e:
    os.write(2, ("unmask-sandbox: cannot run %s: %s\n" % (cfg["python"], e)).encode())
    os._exit(121)
"""


@dataclass
class SandboxConfig:
    timeout_s: float = 5.0  # wall clock per program
    cpu_s: int | None = None  # CPU seconds; None: the wall-clock timeout rounded up, plus one
    memory_bytes: int = 2 * 1024**3  # address space (RLIMIT_AS): a 100 GB allocation fails at once
    max_processes: int = 16  # processes and threads the program may add (RLIMIT_NPROC): the fork budget
    max_output_bytes: int = 1024**2  # any file it writes, stdout and stderr included (RLIMIT_FSIZE)
    max_open_files: int = 64
    isolate_network: bool = True
    python: str | None = None  # interpreter for the programs; None: chosen by probe_isolation
    workers: int | None = None  # parallel programs; None: the cores this process may use


@dataclass(frozen=True)
class Isolation:
    """What the sandbox can enforce on this machine, as found by running a probe program."""

    python: str
    private_user: bool  # each program runs under its own unprivileged user id (needs root)
    network_isolated: bool
    notes: tuple[str, ...] = ()


@dataclass
class ExecResult:
    status: str  # "passed" | "failed" (a test assertion failed) | "timed out" | "error"
    error_type: str | None  # e.g. "AssertionError", "NameError", "MemoryError", "EarlyExit", "SIGKILL"
    detail: str  # the last line of stderr, or what happened
    returncode: int | None
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _python_candidates(config: SandboxConfig) -> list[str]:
    if config.python:
        return [config.python]
    found = [sys.executable, shutil.which("python3", path=_MINIMAL_PATH)]
    return list(dict.fromkeys(p for p in found if p))


_PROBE_CACHE: dict[tuple, Isolation] = {}


def probe_isolation(config: SandboxConfig) -> Isolation:
    """Find an interpreter the sandbox user can run and whether the network namespace works (cached)."""
    key = (config.python, config.isolate_network, _is_root())
    if key in _PROBE_CACHE:
        return _PROBE_CACHE[key]
    private_user = _is_root()
    notes: list[str] = []
    if not private_user:
        notes.append("not running as root: programs run as the harness's user, so files it may delete are "
                     "not protected and processes that leave their process group are not killed")
    failures = []
    for python in _python_candidates(config):
        network = config.isolate_network
        for _ in range(2):
            trial = Isolation(python=python, private_user=private_user, network_isolated=network)
            result, launcher_rc = _run_one("pass\n", config, trial)
            if launcher_rc == _UNSHARE_FAILED and network:
                notes.append(f"network isolation is off: {result.detail}")
                network = False
                continue
            break
        if result.passed:
            if not config.isolate_network:
                notes.append("network isolation is off: disabled by the caller")
            if python != sys.executable:
                notes.append(f"programs run on {python}: the harness's interpreter {sys.executable} cannot "
                             "be run by the sandbox user")
            iso = Isolation(python=python, private_user=private_user, network_isolated=network, notes=tuple(notes))
            _PROBE_CACHE[key] = iso
            return iso
        failures.append(f"{python}: {result.status} ({result.detail})")
    raise UnmaskError("no Python interpreter runs inside the sandbox (set SandboxConfig.python to one the "
                      "sandbox user may execute): " + "; ".join(failures))


def describe_isolation(iso: Isolation) -> str:
    parts = [f"interpreter {iso.python}",
             "private user id per program" if iso.private_user else "same user as the harness",
             "network isolated" if iso.network_isolated else "NETWORK ISOLATION OFF"]
    return "sandbox: " + ", ".join(parts) + "".join(f"\n  note: {n}" for n in iso.notes)


def run_program(source: str, config: SandboxConfig | None = None) -> ExecResult:
    """Run one program (Python source) in the sandbox; it passes if it runs to its end and exits 0."""
    config = config or SandboxConfig()
    return _run_one(source, config, probe_isolation(config))[0]


def run_programs(sources: Sequence[str], config: SandboxConfig | None = None,
                 on_done: Callable[[int, ExecResult], None] | None = None) -> list[ExecResult]:
    """Run many programs in parallel (one subprocess each); results in the order of `sources`.

    `on_done(index, result)` is called from a worker thread as each program finishes (for progress
    bars and journals); keep it short and thread-safe.
    """
    config = config or SandboxConfig()
    iso = probe_isolation(config)
    workers = config.workers or available_cores()
    results: list[ExecResult | None] = [None] * len(sources)

    def work(i: int) -> None:
        results[i] = _run_one(sources[i], config, iso)[0]
        if on_done is not None:
            on_done(i, results[i])

    # Threads suffice: each one only waits on its subprocess.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for f in [pool.submit(work, i) for i in range(len(sources))]:
            f.result()
    return results  # type: ignore[return-value]


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _minimal_env(folder: str) -> dict[str, str]:
    return {"PATH": _MINIMAL_PATH, "HOME": folder, "TMPDIR": folder, "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _rlimits(config: SandboxConfig, iso: Isolation) -> list[tuple[str, int, int]]:
    cpu = config.cpu_s if config.cpu_s is not None else math.ceil(config.timeout_s) + 1
    # The process limit counts every task of the user id. A private id starts with none; the harness's
    # own user already has some, so the budget is added to what it has now.
    nproc = config.max_processes + (0 if iso.private_user else _count_tasks_of_uid(os.getuid()))
    limits = [("RLIMIT_CPU", cpu, cpu + 1), ("RLIMIT_AS", config.memory_bytes, config.memory_bytes),
              ("RLIMIT_NPROC", nproc, nproc), ("RLIMIT_FSIZE", config.max_output_bytes, config.max_output_bytes),
              ("RLIMIT_NOFILE", config.max_open_files, config.max_open_files), ("RLIMIT_CORE", 0, 0)]
    return limits


def _run_one(source: str, config: SandboxConfig, iso: Isolation) -> tuple[ExecResult, int | None]:
    """(result, the launcher's own exit code when it failed before the program started, else None)."""
    nonce = uuid.uuid4().hex
    # os.write on a fresh alias: the program may have shadowed print or rebound sys.stdout.
    program = source + f"\n\nimport os as _unmask_sandbox_os\n_unmask_sandbox_os.write(1, b'{nonce}\\n')\n"
    base = Path(tempfile.mkdtemp(prefix="unmask-sandbox-"))
    uid = random.SystemRandom().randrange(*_UID_RANGE) if iso.private_user else None
    start = time.monotonic()
    try:
        base.chmod(0o711)  # the sandbox user may pass through to work/ but not list or read the logs
        work = base / "work"
        work.mkdir(mode=0o700)
        (work / "program.py").write_text(program, encoding="utf-8")
        if uid is not None:
            os.chown(work, uid, uid)
        unshare = 0
        if iso.network_isolated:
            unshare = CLONE_NEWNET if iso.private_user else CLONE_NEWUSER | CLONE_NEWNET
        env = _minimal_env(str(work))
        launch = {"rlimits": _rlimits(config, iso), "unshare": unshare, "cwd": str(work), "uid": uid,
                  "python": iso.python, "env": env}
        timed_out = False
        with open(base / "stdout", "wb") as out, open(base / "stderr", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(launch)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=work, env=env,
                                    start_new_session=True, close_fds=True)
            try:
                proc.wait(timeout=config.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc.pid)
                proc.wait()
                if uid is not None:
                    kill_processes_of_uid(uid, iso.python)
        seconds = time.monotonic() - start
        stdout_tail = _tail(base / "stdout")
        stderr_tail = _tail(base / "stderr").decode("utf-8", "replace")
        result = _classify(proc.returncode, timed_out, nonce.encode() in stdout_tail, stderr_tail, seconds, config)
        launcher_rc = proc.returncode if proc.returncode in (_UNSHARE_FAILED, _EXEC_FAILED) and \
            "unmask-sandbox:" in stderr_tail else None
        return result, launcher_rc
    finally:
        shutil.rmtree(base, onerror=_force_remove)


def _classify(rc: int, timed_out: bool, sentinel_seen: bool, stderr: str, seconds: float,
              config: SandboxConfig) -> ExecResult:
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    last = last[:300]
    if timed_out:
        return ExecResult("timed out", "Timeout", f"no exit after {config.timeout_s:g} s wall clock", rc, seconds)
    if rc == 0:
        if sentinel_seen:
            return ExecResult("passed", None, "", rc, seconds)
        return ExecResult("error", "EarlyExit", "exited with status 0 before the tests finished", rc, seconds)
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        if name == "SIGXCPU":
            return ExecResult("timed out", "CPUTimeLimit", "CPU-time limit reached", rc, seconds)
        if name == "SIGXFSZ":
            return ExecResult("error", "OutputLimit", f"wrote more than {config.max_output_bytes} bytes", rc,
                              seconds)
        return ExecResult("error", name, f"killed by {name}", rc, seconds)
    m = re.match(r"^([A-Za-z_][\w.]*)(?::|$)", last)
    if m and (m.group(1).endswith(("Error", "Exception", "Exit", "Interrupt")) or "." in m.group(1)):
        error_type = m.group(1).rsplit(".", 1)[-1]
        return ExecResult("failed" if error_type == "AssertionError" else "error", error_type, last, rc, seconds)
    return ExecResult("error", "ExitStatus", last or f"exited with status {rc}", rc, seconds)


def _tail(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL_BYTES))
        return f.read()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _count_tasks_of_uid(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) whose real user id is `uid`."""
    return sum(threads for _, threads in pids_of_uid(uid, with_threads=True))


def pids_of_uid(uid: int, with_threads: bool = False) -> list:
    """Running processes (zombies excluded) whose real user id is `uid`, read from /proc/PID/status, which a
    process cannot hide by making itself non-dumpable; with_threads: (pid, thread count) pairs."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                status = f.read()
        except OSError:  # it exited meanwhile
            continue
        uids = re.search(r"^Uid:\s+(\d+)", status, re.M)
        if uids and int(uids.group(1)) == uid and not re.search(r"^State:\s+Z", status, re.M):
            threads = re.search(r"^Threads:\s+(\d+)", status, re.M)
            found.append((int(name), int(threads.group(1)) if threads else 1) if with_threads else int(name))
    return found


def kill_processes_of_uid(uid: int, python: str, attempts: int = 5) -> bool:
    """Kill every process of a private user id; True when none is left.

    The kill is sent by a process running as that same user id (kill(-1) reaches exactly the processes
    it may signal), so a mistaken id can never hit another user's processes; kill(-1) is atomic against
    forks, so a fork bomb cannot outrun it.
    """
    for _ in range(attempts):
        if not pids_of_uid(uid):
            return True
        subprocess.run([python, "-I", "-S", "-c", "import os; os.kill(-1, 9)"], user=uid, group=uid,
                       extra_groups=[], env={"PATH": _MINIMAL_PATH}, cwd="/", stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        time.sleep(0.01)  # killed processes leave /proc once their parent reaps them (or init does)
    return not pids_of_uid(uid)


def _force_remove(func, path, exc_info) -> None:
    """rmtree's error hook: a program may have made its files read-only; make writable and retry."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, onerror=_force_remove)
        else:
            os.unlink(path)
    except OSError:
        pass
