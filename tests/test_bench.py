"""The GPU benchmark keeps working where there is no GPU: `bench/gpu.py --smoke` runs every path once."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_benchmark_smoke_runs_every_measurement(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    result = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    for name in ("label_over_raw_vllm", "label_over_transformers_loop", "salmon_12_over_1",
                 "revise_over_raw_generation", "train_rm_over_trl"):
        assert math.isfinite(figures[name]) and figures[name] > 0, name
        assert name in result.stdout
    assert "not measured (no GPU)" in result.stdout or "cuda_graphs_over_eager_generation" in figures
