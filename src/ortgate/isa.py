"""CPU fingerprint: what decides whether a hardware-specific graph may be reused, and int8 speed.

Read from /proc/cpuinfo where it exists (Linux), else from py-cpuinfo (macOS, Windows).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import cache
from pathlib import Path

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
        info = _from_proc(proc.read_text(errors="replace"))
    else:
        import cpuinfo

        raw = cpuinfo.get_cpu_info()
        info = {
            "vendor": raw.get("vendor_id_raw", ""),
            "model_name": raw.get("brand_raw", ""),
            "flags": sorted(f for f in INT8_FLAGS if f in set(raw.get("flags", []))),
        }
    return {"arch": platform.machine(), **info, "logical_cores": os.cpu_count()}


def fingerprint_id(fp: dict | None = None) -> str:
    """A short stable digest of the fingerprint (core count excluded: same chip, same graph)."""
    fp = dict(fp or cpu_fingerprint())
    fp.pop("logical_cores", None)
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]
