"""What a benchmark ran on: hardware and software, the device's memory bandwidth, and peak memory.

Peak memory is torch.cuda.max_memory_allocated on a GPU (reset before each case). On a CPU it is the
process's resident-set high-water mark (VmHWM), which Linux lets a process reset by writing "5" to
/proc/self/clear_refs; where that is not possible the figure is the peak since the process started,
and `PeakMemory.kind` says so.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

import torch

from .. import __version__


def device_info(device: torch.device) -> dict:
    """CPU model, cores, torch threads, GPU name, and the software versions."""
    info = {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        # PASSIVE (idle threads sleep) costs a small model's decode steps 1.3-1.6x on a 2-core CPU: record it.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "memory_total_gib": round(_meminfo_kib("MemTotal") / 2**20, 2) if _meminfo_kib("MemTotal") else None,
        "device": str(device),
        "gpu": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 2),
                       "cuda": torch.version.cuda}
    return info


def software_info() -> dict:
    import numpy

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "unmask": __version__, "platform": platform.platform()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meminfo_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory a new allocation may use now: free GPU memory, or the kernel's MemAvailable (None if unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    kib = _meminfo_kib("MemAvailable")
    return kib * 1024 if kib is not None else None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_bandwidth(device: torch.device, megabytes: int = 256, repeats: int = 5) -> float:
    """Measured copy bandwidth in bytes/s: a big tensor copied repeatedly; each copy reads and writes it once.

    The best of `repeats` copies is kept (a bound on what the device sustains, as the floor needs). On a CPU
    this is what the current torch threads reach, not the socket's peak.
    """
    n = megabytes * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: page faults are not bandwidth
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * src.element_size() / best


class PeakMemory:
    """Peak memory of the work between reset() and read(), in bytes."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            self.kind = "torch.cuda.max_memory_allocated"
        elif _can_reset_hwm():
            self.kind = "process RSS high-water mark (VmHWM, reset per case)"
        else:
            self.kind = "process RSS high-water mark since start (ru_maxrss; could not be reset)"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif "reset per case" in self.kind:
            Path("/proc/self/clear_refs").write_text("5")

    def read(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        hwm = _status_kib("VmHWM")
        if hwm is not None:
            return hwm * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _can_reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None
