"""The machine a figure was measured on, printed beside it: the CPU's vector flags and any limit put on its kernels.

`--avx2` (bench/e2e.py, bench/finetune.py) runs the children with PyTorch's kernels held to AVX2, as on a CPU
without AVX-512: ATen's dispatch (ATEN_CPU_CAPABILITY), oneDNN (ONEDNN_MAX_CPU_ISA) and MKL's GEMM
(MKL_ENABLE_INSTRUCTIONS). bitsandbytes' CPU library picks its own kernels at run time; it reads torch's capability
for some of its choices, not all.
"""

from __future__ import annotations

import os
import platform

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def cpu_flags(env: dict | None = None) -> str:
    """'x86_64, 2 cpus, flags: avx2 fma avx512f ...', and the kernels' limit where `env` (or this process) sets one."""
    env = os.environ if env is None else env
    flags: list[str] = []
    if os.path.exists("/proc/cpuinfo"):
        flags = next((ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    limits = [f"{k}={env[k]}" for k in AVX2_ONLY if k in env]
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, flags: {' '.join(shown) or 'none'}"
            + (f"; kernels limited to AVX2 ({' '.join(limits)})" if limits else ""))
