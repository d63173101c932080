"""How many CPU threads a command's forward passes use: `--threads N`, or as many as there are idle cores.

Why not torch's default (one thread per core): a forward pass of a small model is a few hundred tiny operations,
each split statically over every thread, so each waits for its slowest thread. When another program keeps a
core busy, the thread that shares that core gets a slice of it every few milliseconds, and every operation
waits for it. Measured on a 2-core VM with the bundled default (batch 1; 2026-12-02): idle, 2 threads decode
1.0-1.3x as fast as 1. With `unmask train` on 1 thread beside it, 1 thread still decoded 242 tokens/s (idle:
207-233), while 2 threads had not finished in 9 minutes what 1 thread did in 17 s; beside a one-thread matrix
multiplication loop, a 128-token answer took 0.42-0.57 s on 1 thread and 1.29-1.72 s on 2; beside a Python busy
loop, 2 threads took 3.7x as long as 1 (1.4x with OMP_WAIT_POLICY=PASSIVE). Answers were token-identical at 1
and 2 threads (32 prompts, both bundled models, batch 1 and 8).

So by default (`--threads 0`) a command on the CPU looks at how busy its cores are over 50 ms (/proc/stat,
on Linux) and uses torch's default thread count, lowered to the cores that are idle, at least 1.
OMP_NUM_THREADS, when set, is the user's choice and is kept, as is an explicit `--threads N`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

SAMPLE_SECONDS = 0.05
HELP = ("CPU threads for the forward passes (default 0: torch's default, one per core, less the cores other "
        "programs keep busy, so that a busy machine does not stall every operation; OMP_NUM_THREADS, when "
        "set, is kept)")


def usable_cpus() -> set[int]:
    """The CPU numbers this process may run on."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def busy_cores(cpus: set[int], interval: float = SAMPLE_SECONDS, stat_path: str = "/proc/stat") -> float | None:
    """How many of `cpus` other processes keep busy over the next `interval` seconds (this one sleeps
    meanwhile), from the kernel's per-CPU time counters; None where there are none (not Linux)."""
    def read() -> dict[int, tuple[int, int]]:
        counters = {}
        with open(stat_path) as f:
            for line in f:
                name, *values = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    fields = [int(x) for x in values]
                    counters[int(name[3:])] = (sum(fields[:8]), fields[3] + (fields[4] if len(fields) > 4 else 0))
        return counters  # cpu -> (all time, idle + iowait time)

    try:
        before = read()
        time.sleep(interval)
        after = read()
    except (OSError, ValueError, IndexError):
        return None
    busy, seen = 0.0, 0
    for cpu, (total1, idle1) in after.items():
        total0, idle0 = before.get(cpu, (total1, idle1))
        if total1 > total0:
            busy += 1.0 - (idle1 - idle0) / (total1 - total0)
            seen += 1
    return max(0.0, busy) if seen else None


def auto_threads(default: int, usable: int, busy: float | None) -> int:
    """Torch's default thread count, lowered to the usable cores that are not busy (rounded), at least 1."""
    if busy is None:
        return default
    return max(1, min(default, usable - int(busy + 0.5)))


def check_threads(value: int, flag: str = "--threads") -> None:
    from .errors import UnmaskError

    if value < 0:
        raise UnmaskError(f"{flag} {value}: give a number of threads >= 1, or 0 for the default")


_before: int | None = None  # torch's thread count before use_threads first changed it
_chosen: int | None = None  # the count use_threads chose for this command (a command may load several models)


def use_threads(requested: int, device: str = "cpu", *, note: Callable[[str], None] | None = None) -> int:
    """Set torch's CPU thread count for the rest of the command: `requested`, or with 0 the choice above.
    Returns the count; `note(text)` hears why it was lowered (default: stderr). `restore_threads` undoes it.
    The cores are looked at once per command: a later call with 0 keeps the count chosen first."""
    global _before, _chosen
    import torch

    check_threads(requested)
    current = torch.get_num_threads()
    if not requested and _chosen is not None:
        return _chosen
    if requested:
        threads = requested
    elif not str(device).startswith("cpu") or os.environ.get("OMP_NUM_THREADS"):
        threads = current
    else:
        cpus = usable_cpus()
        busy = busy_cores(cpus)
        threads = auto_threads(current, len(cpus), busy)
        if threads < current:
            (note or (lambda text: print(text, file=sys.stderr)))(
                f"{busy:.1f} of {len(cpus)} CPU cores are busy with other work: using {threads} thread(s), not "
                f"{current} (--threads N to choose)")
    if threads != current:
        if _before is None:
            _before = current
        torch.set_num_threads(threads)
    _chosen = threads
    return threads


def restore_threads() -> None:
    """Give torch back the thread count it had before use_threads (the CLI's entry point calls this on exit, so
    that a command run in-process, as the tests do, leaves the process as it found it)."""
    global _before, _chosen
    _chosen = None
    if _before is not None:
        import torch

        torch.set_num_threads(_before)
        _before = None
