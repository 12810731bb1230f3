"""The one home of memory accounting for benchmarks: peak and current bytes on any device.

Accelerators report their caching allocator's numbers through torch's generic device module (which
one comes from `tinygpt.common.device.accelerator_module`); the CPU reports the process's resident
set from the kernel.  Not an entry point.
"""
from __future__ import annotations

import contextlib
import resource
import sys

import torch

from tinygpt.common import device as devices


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory window for `peak_memory_bytes`.

    CPU: resets the kernel's peak-RSS mark (Linux /proc/self/clear_refs "5"); where that is not
    possible the CPU peak stays the process-lifetime peak.
    """
    mod = devices.accelerator_module(device)
    if mod is not None:
        mod.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def peak_memory_bytes(device: torch.device | str) -> int:
    """Peak allocated bytes since the last reset: allocator peak on accelerators, peak RSS on CPU."""
    mod = devices.accelerator_module(device)
    if mod is not None:
        return int(mod.max_memory_allocated(device))
    hwm = _proc_status_kib("VmHWM")  # resettable, unlike getrusage
    if hwm is not None:
        return hwm * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, Linux KiB


def memory_summary(device: torch.device | str) -> dict[str, int]:
    """Byte counts for logs/benchmarks. Accelerators: allocated, reserved, peak_allocated, free,
    total.  CPU: rss, peak_rss."""
    mod = devices.accelerator_module(device)
    if mod is None:
        rss = _proc_status_kib("VmRSS")
        out = {"peak_rss": peak_memory_bytes(device)}
        if rss is not None:
            out["rss"] = rss * 1024
        return out
    free, total = mod.mem_get_info(device)
    return {"allocated": int(mod.memory_allocated(device)), "reserved": int(mod.memory_reserved(device)),
            "peak_allocated": int(mod.max_memory_allocated(device)), "free": int(free), "total": int(total)}


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None
