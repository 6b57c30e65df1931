"""CPU fingerprint: what decides whether a hardware-specific graph may be reused, and int8 speed.

Read from /proc/cpuinfo where it exists (Linux), else from py-cpuinfo (macOS, Windows).
"""

from __future__ import annotations

import math
import os
import platform
from functools import cache
from pathlib import Path

from ortgate.files import json_digest

# Flags that change which int8 kernels ONNX Runtime picks (x86 and arm).
INT8_FLAGS = (
    "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8",
    "asimddp", "i8mm", "sve",
)


def _from_proc(text: str) -> dict:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {
        "vendor": fields.get("vendor_id") or fields.get("CPU implementer", ""),
        "model_name": fields.get("model name") or fields.get("CPU part", ""),
        "flags": sorted(f for f in INT8_FLAGS if f in flags),
    }


@cache
def cpu_fingerprint() -> dict:
    """Architecture, vendor, model, logical cores and int8-relevant flags of this machine."""
    proc = Path("/proc/cpuinfo")
    if proc.is_file():
        info = {**_from_proc(proc.read_text(errors="replace")), "source": "/proc/cpuinfo"}
    else:  # macOS, Windows: no /proc; py-cpuinfo asks sysctl or the registry
        import cpuinfo

        raw = cpuinfo.get_cpu_info()
        info = {
            "vendor": raw.get("vendor_id_raw", ""),
            "model_name": raw.get("brand_raw", ""),
            "flags": sorted(f for f in INT8_FLAGS if f in set(raw.get("flags", []))),
            "source": "py-cpuinfo",
        }
    return {"arch": platform.machine(), **info, "logical_cores": os.cpu_count()}


def _cgroup_cpu_limit(root: Path) -> float | None:
    """The CPU quota of this process's cgroup in cores (cgroup v2 `cpu.max`, else v1 `cpu.cfs_quota_us` over
    `cpu.cfs_period_us`); None when there is none or it cannot be read."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        for v1 in (root / "cpu", root / "cpu,cpuacct"):
            if (v1 / "cpu.cfs_quota_us").is_file():
                quota = int((v1 / "cpu.cfs_quota_us").read_text())
                return None if quota <= 0 else quota / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup"), affinity: int | None = None) -> int:
    """The cores this process may run on: the CPU affinity mask, capped by a cgroup CPU quota (a 2-vCPU
    container on a 64-core host has 64 logical cores and 2 usable ones), at least 1."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = _cgroup_cpu_limit(cgroup_root)
    return max(1, min(affinity, math.ceil(limit)) if limit else affinity)


def machine_fingerprint() -> dict:
    """The CPU fingerprint plus, informational only, the cores this process may use and the ONNX Runtime build
    that runs on it: a library upgrade or a container's quota is not another CPU, so only the CPU part (its
    `id`) identifies the machine and keys hardware-specific graphs."""
    import onnxruntime

    return {**cpu_fingerprint(), "id": fingerprint_id(), "usable_cores": usable_cores(),
            "onnxruntime": onnxruntime.__version__,
            "providers": onnxruntime.get_available_providers()}


def suggest_preset(fp: dict | None = None) -> tuple[str, str]:
    """The quantization preset ONNX Runtime's and Optimum's guidance points to, and why.

    Only a suggestion: the suite measures every preset, since the obvious choice is not always the
    fastest (the reference saw arm64's preset beat avx2's by 30% on an AVX2-only Intel CPU).
    """
    fp = fp or cpu_fingerprint()
    flags, arch = set(fp.get("flags", [])), str(fp.get("arch", "")).lower()
    if arch in ("aarch64", "arm64") or "asimddp" in flags:
        extra = " with dot-product (asimddp)" if "asimddp" in flags else ""
        return "arm64", f"an ARM64 CPU{extra}: u8 activations × s8 weights is the fast int8 path there"
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        which = ", ".join(sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}))
        return "avx512_vnni", (f"VNNI int8 dot products ({which}): u8 × s8 multiply-adds without "
                               "intermediate saturation")
    if {"avx512f", "avx512bw"} <= flags:
        return "avx512", ("AVX-512 without VNNI: u8 × s8 through VPMADDUBSW can saturate; if accuracy drops, "
                          "try reduce_range")
    if "avx2" in flags:
        return "avx2", "AVX2 without VNNI: VPMADDUBSW can saturate with s8 weights; the avx2 preset uses u8 weights"
    return "arm64", "no int8-relevant x86 flags found; the generic u8 × s8 preset"


def fingerprint_id(fp: dict | None = None) -> str:
    """A short stable digest of the hardware (core count and how it was read excluded: same chip, same graph)."""
    fp = {k: v for k, v in (fp or cpu_fingerprint()).items() if k in ("arch", "vendor", "model_name", "flags")}
    return json_digest(fp)[:12]
