"""The compute dtype an engine runs in when the user says `auto`.

bfloat16 halves memory and is fast where the hardware computes in it: GPUs, and CPUs with AVX512-BF16
or AMX. A CPU without those emulates it through float32 conversions; on such a 2-core machine the
embedded model scored judge prompts about 2.4x faster in vLLM in float32 than in bfloat16, so `auto`
picks float32 there.
"""

from __future__ import annotations

from pathlib import Path

NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def auto_dtype(*, cuda: bool, flags: frozenset[str]) -> str:
    """bfloat16 on a GPU or a CPU that computes in it natively, otherwise float32.

    >>> auto_dtype(cuda=True, flags=frozenset())
    'bfloat16'
    >>> auto_dtype(cuda=False, flags=frozenset({"avx2", "amx_bf16"}))
    'bfloat16'
    >>> auto_dtype(cuda=False, flags=frozenset({"avx2", "avx512f"}))
    'float32'
    """
    return "bfloat16" if cuda or flags & NATIVE_BF16_CPU_FLAGS else "float32"


def resolve_dtype(dtype: str) -> str:
    """`dtype` itself, or for "auto" the dtype this machine runs fastest in (see `auto_dtype`)."""
    if dtype != "auto":
        return dtype
    import torch

    return auto_dtype(cuda=torch.cuda.is_available(), flags=cpu_flags())
