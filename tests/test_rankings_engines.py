"""K = 4 responses per prompt, every pair judged, on the embedded model through vLLM and transformers (fp32,
the session engines): the command of the README, what it writes, and the two engines agreeing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from test_label import RecordingEngine, run_cli

from labeler.core.records import PreferenceRecord, RankingRecord
from labeler.stages.common import WorkSelection
from labeler.stages.label import LabelConfig, label
from labeler.store import iter_records

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions" / "harmless.yaml"


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(params=["hf", "vllm"])
def session_engine(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("hf_engine" if request.param == "hf" else "vllm_engine")


def test_four_samples_all_pairs_best_worst(session_engine: Any, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    prompts = _write(tmp_path / "p.jsonl", [{"id": "a", "prompt": "Name a fruit."}])
    recorder = RecordingEngine(session_engine)
    monkeypatch.setattr("labeler.engine.lazy.open_engine", lambda config, model=None: recorder)
    out = tmp_path / "run"
    code = run_cli(["label", "--constitution", str(HARMLESS), "--prompts", str(prompts), "--out", str(out),
                 "--engine", session_engine.name, "--dtype", "float32", "--responses", "4", "--comparisons", "all",
                 "--binarize", "best-worst", "--max-tokens", "6", "--seed", "3", "--quiet"])
    assert code == 0
    (_, params, _), *_ = recorder.generated
    assert params.n == 4 and params.max_tokens == 6
    rankings: list[RankingRecord] = list(iter_records(out, "rankings"))  # type: ignore[arg-type]
    assert [r.source_id for r in rankings] == ["a"]
    judged = 0
    for ranking in rankings:
        k = len(ranking.responses)
        assert 2 <= k <= 4 and len(set(ranking.responses)) == k
        assert len(ranking.comparisons) == k * (k - 1) // 2
        assert all(math.isfinite(s) for s in ranking.scores) and abs(sum(ranking.scores)) < 1e-9
        judged += 2 * len(ranking.comparisons)
    assert len(recorder.choice_requests) == judged  # every pair in both orders, nothing else
    preferences: list[PreferenceRecord] = list(iter_records(out, "preferences"))  # type: ignore[arg-type]
    assert len(preferences) == len(rankings)
    for ranking in rankings:
        (row,) = [p for p in preferences if p.prompt == ranking.prompt]
        best = ranking.responses[max(range(len(ranking.scores)), key=ranking.scores.__getitem__)]
        worst = ranking.responses[min(range(len(ranking.scores)), key=ranking.scores.__getitem__)]
        assert {row.response_a, row.response_b} == {best, worst}
    # The derived preference split is what TRL reads: conversational prompt, chosen and rejected.
    datasets = pytest.importorskip("datasets")
    (shard,) = sorted((out / "preferences").glob("*.arrow"))
    table = datasets.Dataset.from_file(str(shard))
    assert table[0]["chosen"][0]["role"] == "assistant" and table[0]["prompt"][-1]["role"] == "user"


def test_engines_agree_on_a_ranking(hf_engine: Any, vllm_engine: Any, tmp_path: Path) -> None:
    rows = _write(tmp_path / "r.jsonl", [{"prompt": "How do I boil an egg?", "responses": [
        "Put the egg in boiling water for about nine minutes, then cool it in cold water.",
        "Eggs.",
        "Boil water, add the egg gently, wait 6 to 10 minutes depending on how firm you like it.",
        "I refuse to talk about eggs.",
    ]}])
    runs = {}
    for name, engine in (("hf", hf_engine), ("vllm", vllm_engine)):
        config = LabelConfig(constitution=HARMLESS, pairs=rows, out=tmp_path / name, work=WorkSelection(quiet=True))
        label(config, judge=engine)
        (runs[name],) = iter_records(tmp_path / name, "rankings")
    hf, vllm = runs["hf"], runs["vllm"]
    assert [c.p_a for c in vllm.comparisons] == pytest.approx([c.p_a for c in hf.comparisons], abs=2e-3)
    assert vllm.scores == pytest.approx(hf.scores, abs=1e-2)
