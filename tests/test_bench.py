"""The benchmarks meant for a GPU keep working where there is none: `--smoke` runs every path once."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def smoke(script: str, out: Path) -> tuple[dict[str, Any], str]:
    """Run `bench/<script> --smoke --out OUT`; its figures and what it printed."""
    result = subprocess.run([sys.executable, f"bench/{script}", "--smoke", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_benchmark_smoke_runs_every_measurement(tmp_path: Path) -> None:
    figures, stdout = smoke("gpu.py", tmp_path / "gpu.json")
    for name in ("label_over_raw_vllm", "label_over_transformers_loop", "salmon_12_over_1",
                 "revise_over_raw_generation", "train_rm_over_trl"):
        assert math.isfinite(figures[name]) and figures[name] > 0, name
        assert name in stdout
    assert "not measured (no GPU)" in stdout or "cuda_graphs_over_eager_generation" in figures


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.timeout(900)
def test_ppo_benchmark_smoke_times_every_rollout_path(tmp_path: Path) -> None:
    """`bench/ppo.py --smoke`: PPO with transformers', vLLM's merged and vLLM's adapter rollouts, and the LoRA cost."""
    figures, stdout = smoke("ppo.py", tmp_path / "ppo.json")
    for name in ("vllm_merged_rollout_ratio", "vllm_adapter_rollout_ratio", "vllm_merged_step_ratio"):
        assert math.isfinite(figures[name]) and figures[name] > 0, name
    assert figures["vllm_merged"]["send_s"] > 0 and figures["hf"]["send_s"] == 0  # only vLLM is sent weights
    assert figures["lora_cost"]["adapter"] > 0 and figures["lora_cost"]["none"] > 0
    assert "ratio vLLM (merged) / transformers" in stdout


@pytest.mark.timeout(300)
def test_review_benchmark_smoke_times_every_page(tmp_path: Path) -> None:
    """`bench/review.py --smoke`: the real `labeler review` server on a run of 2,000 pairs answers each page."""
    figures, stdout = smoke("review.py", tmp_path / "review.json")
    assert figures["pairs"] == 2000
    for name in ("start_s", "list_s", "list_flag_s", "list_p_range_uncertain_s", "list_far_page_s", "search_first_s",
                 "search_next_page_s", "pair_s"):  # fmt: skip
        assert math.isfinite(figures[name]) and figures[name] > 0, name
    assert "the 1 s target" in stdout and figures["cpu"] in stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dpo_benchmark_smoke_times_labeler_and_trl_on_the_same_tokens(tmp_path: Path) -> None:
    """`bench/dpo.py --smoke`: labeler dpo and TRL's DPOTrainer (reference precomputed, and as it defaults)."""
    figures, stdout = smoke("dpo.py", tmp_path / "dpo.json")
    assert figures["tokens"] > 0
    for name in ("labeler", "trl_precomputed_reference", "trl_default"):
        assert math.isfinite(figures["tokens_per_s"][name]) and figures["tokens_per_s"][name] > 0, name
    assert figures["labeler_over_trl"] > 0 and "ratio labeler / TRL DPOTrainer" in stdout


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.timeout(900)
def test_listwise_benchmark_smoke_times_every_path(tmp_path: Path) -> None:
    """`bench/listwise.py --smoke`: K responses ranked with the prefix cache, the same pairs as independent
    rows with the cache off and on, and a budget design against every pair."""
    figures, stdout = smoke("listwise.py", tmp_path / "listwise.json")
    for name in ("ranked", "rows_cache_off", "rows_cache_on", "budget"):
        assert math.isfinite(figures["seconds_per_prompt"][name]) and figures["seconds_per_prompt"][name] > 0, name
    assert figures["prompts"] == 2 and 2 <= figures["pairs"] <= 2 * 3  # K = 3: every pair of each prompt
    assert 0.0 <= figures["budget_same_best_and_worst"] <= 1.0
    assert "ranked / independent rows (cache off)" in stdout
