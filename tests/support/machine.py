"""The machine a benchmark or chaos run ran on, for its report."""

from __future__ import annotations

import os
import platform
import subprocess


def describe_machine() -> dict[str, str]:
    """CPU model and count, memory and OS, as the reports print them."""
    cpu = "unknown"
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    with open("/proc/meminfo") as meminfo:
        kib = int(meminfo.readline().split()[1])
    return {"cpu": cpu, "nproc": str(os.cpu_count()), "memory": f"{kib / 1024**2:.1f} GiB",
            "os": platform.platform()}
