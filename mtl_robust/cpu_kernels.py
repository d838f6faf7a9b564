"""The instruction set of the CPU kernels that train and attack a model, pinned to AVX2 by default.

A CPU picks its kernels by what it supports: on an AVX-512 machine oneDNN's convolutions and MKL's vector
maths (exp, log, ... in the losses) take AVX-512 paths whose sums round differently from the AVX2 paths an
AVX2-only CPU takes. The weights differ after 5 optimiser steps already, and the difference compounds over
training into other numbers under attack. Capping ATen and oneDNN at AVX2 and MKL at its vendor-neutral
branch makes an AVX-512 machine compute what an AVX2 machine computes (docs/reproducibility.md says what
this covers, what is only expected, and what it costs).

The libraries read their setting once, when they first run a kernel, so the entry points call
`pin_instruction_set` before anything imports torch. `MTL_ROBUST_CPU_ISA=native` leaves every library at its
own choice (faster on AVX-512, not reproducible across CPUs); a variable the user set is never overridden.
This module imports no torch at import time.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import MutableMapping

CHOICE_VARIABLE = "MTL_ROBUST_CPU_ISA"
CHOICES = ("avx2", "native")
# What each library is capped at: ATen's vectorised kernels (reductions, softmax, ...) and oneDNN's
# convolutions at AVX2; MKL (its vector maths: exp, log, sqrt, tanh, acos; and GEMM) at the one
# reproducibility branch Intel documents as giving the same results on Intel and non-Intel CPUs (COMPATIBLE:
# SSE2; its AVX2 branch falls back to MKL's own choice on AMD). It also fixes MKL's blocking and reductions.
PINNED = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "COMPATIBLE",
}
X86 = {"x86_64", "amd64", "i386", "i686"}


def requested_choice(environ: MutableMapping[str, str] = os.environ) -> str:
    """`avx2` (the default) or `native`, from MTL_ROBUST_CPU_ISA."""
    choice = environ.get(CHOICE_VARIABLE, "avx2").strip().lower() or "avx2"
    if choice not in CHOICES:
        raise ValueError(f"{CHOICE_VARIABLE} must be one of {', '.join(CHOICES)}, got {choice!r}")
    return choice


def pin_instruction_set(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Cap ATen, oneDNN and MKL at AVX2 unless MTL_ROBUST_CPU_ISA=native; returns what it set.

    Only on x86 (the variables mean nothing elsewhere), only variables the user has not set, and only while
    torch is not imported yet: a library that already chose its kernels would ignore the setting and the
    runtime record (`kernel_isa`) would claim a pin that did not happen.
    """
    if requested_choice(environ) == "native" or platform.machine().lower() not in X86:
        return {}
    if environ is os.environ and "torch" in sys.modules:
        return {}
    added = {name: value for name, value in PINNED.items() if name not in environ}
    environ.update(added)
    return added


def kernel_isa() -> str:
    """What decides the CPU kernels of this process, e.g. `aten=AVX2 onednn=AVX2 mkl=COMPATIBLE`.

    ATen's capability is the one torch actually uses; oneDNN's and MKL's are their settings (`native`: the
    library's own choice for this CPU, which ATen's capability then hints at).
    """
    import torch

    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "native"
    mkl = os.environ.get("MKL_CBWR") or os.environ.get("MKL_ENABLE_INSTRUCTIONS") or "native"
    return f"aten={torch.backends.cpu.get_cpu_capability()} onednn={onednn} mkl={mkl}"
