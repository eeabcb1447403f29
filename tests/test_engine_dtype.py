"""`--dtype auto`: bfloat16 where the hardware computes in it, float32 on CPUs that would emulate it."""

from __future__ import annotations

from pathlib import Path

from labeler.engine import EngineConfig
from labeler.engine.dtype import auto_dtype, cpu_flags, resolve_dtype

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme avx2 avx512f avx512_vnni
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme avx2 avx512f avx512_vnni
"""


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert cpu_flags(info) == {"fpu", "vme", "avx2", "avx512f", "avx512_vnni"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_auto_picks_float32_without_native_bfloat16_and_explicit_dtypes_pass_through() -> None:
    flags = frozenset(CPUINFO.split("flags\t\t: ")[1].split("\n")[0].split())
    assert auto_dtype(cuda=False, flags=flags) == "float32"
    assert auto_dtype(cuda=False, flags=flags | {"avx512_bf16"}) == "bfloat16"
    assert auto_dtype(cuda=True, flags=flags) == "bfloat16"
    for explicit in ("bfloat16", "float16", "float32"):
        assert resolve_dtype(explicit) == explicit
    assert resolve_dtype("auto") in {"bfloat16", "float32"}
    assert EngineConfig().dtype == "auto"
