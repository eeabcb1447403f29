"""Pairs longer than the judge's context: skipped and counted while labelling (the engine never sees them),
refused before anything loads when their characters alone cannot fit.

On the scripted engine (a token a word), then once through the transformers engine on the embedded model
with a small context.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from fake_engine import FakeEngine

from labeler.cli.app import main
from labeler.core.errors import InputError
from labeler.engine import ChoiceRequest, ChoiceScores, Message
from labeler.stages.common import WorkSelection
from labeler.stages.label import LabelConfig, check_label, label
from labeler.store import iter_records, load_manifest
from labeler.store.card import write_card

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions" / "harmless.yaml"
CONTEXT = 600  # tokens of the scripted judge: short pairs fit, a pair of 1,000 words does not


class ContextBoundEngine(FakeEngine):
    """The scripted engine, refusing a request longer than its context as vLLM does (for the whole batch)."""

    def choice_logprobs(self, requests: Sequence[ChoiceRequest], choices: Sequence[str]) -> list[ChoiceScores]:
        lengths = self.prompt_lengths([(*r.messages, Message(role="assistant", content=r.assistant_prefix))
                                       for r in requests])
        if max(lengths, default=0) > self.max_model_len:
            raise ValueError(f"a request of {max(lengths)} tokens, longer than {self.max_model_len}")
        return super().choice_logprobs(requests, choices)


def pairs_file(path: Path, long_lines: Sequence[int], total: int = 6) -> Path:
    rows = []
    for line in range(1, total + 1):
        answer = "word " * 1000 if line in long_lines else f"Answer {line}."
        rows.append({"prompt": f"Question {line}?", "response_a": answer, "response_b": "No."})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def config(tmp_path: Path, pairs: Path, **judge: object) -> LabelConfig:
    return LabelConfig.model_validate({
        "constitution": HARMLESS, "pairs": pairs, "out": tmp_path / "run",
        "work": WorkSelection(batch_size=4, quiet=True), "judge": judge,
    })


def test_pairs_longer_than_the_context_are_skipped_and_counted(tmp_path: Path) -> None:
    pairs = pairs_file(tmp_path / "pairs.jsonl", long_lines=(2, 5))
    with ContextBoundEngine(max_model_len=CONTEXT) as engine:
        result = label(config(tmp_path, pairs), judge=engine)
    assert result.written == 4 and len(result.skipped_too_long) == 2
    written = {record.prompt_text for record in iter_records(tmp_path / "run", "preferences")}
    assert written == {"Question 1?", "Question 3?", "Question 4?", "Question 6?"}
    entry = load_manifest(tmp_path / "run").splits["preferences"]
    assert entry.status == "complete" and entry.stats is not None and entry.stats["skipped_too_long"] == 2
    assert '"skipped_too_long": 2' in write_card(tmp_path / "run").read_text()


def test_a_rerun_skips_them_again_and_judges_nothing_twice(tmp_path: Path) -> None:
    pairs = pairs_file(tmp_path / "pairs.jsonl", long_lines=(1,))
    with ContextBoundEngine(max_model_len=CONTEXT) as engine:
        label(config(tmp_path, pairs), judge=engine)
    with ContextBoundEngine(max_model_len=CONTEXT) as engine:
        again = label(config(tmp_path, pairs), judge=engine)
        assert again.written == 0 and again.already_done == 5 and len(again.skipped_too_long) == 1
        assert engine.requests["choice_logprobs"] == 0


def test_a_pair_whose_characters_cannot_fit_is_refused_naming_its_line(tmp_path: Path) -> None:
    """Without a tokenizer: more characters than 100 a token of the context is too long for any tokenizer."""
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "Hi?", "response_a": "Hello.", "response_b": "No."},
            {"prompt": "Hi?", "response_a": "x" * 7000, "response_b": "No."}]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(InputError) as info:
        check_label(config(tmp_path, pairs, max_model_len=64))
    assert (info.value.file, info.value.line) == (str(pairs), 2) and "7006 characters" in info.value.message
    check_label(config(tmp_path, pairs, max_model_len=128))  # 12,800 characters may fit: measured later
    assert not (tmp_path / "run").exists()


def test_the_hf_engine_skips_a_pair_over_its_context(tmp_path: Path, embedded_model: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    pairs = pairs_file(tmp_path / "pairs.jsonl", long_lines=(2,), total=2)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["label", "--constitution", str(HARMLESS), "--pairs", str(pairs), "--out", str(out),
              "--engine", "hf", "--dtype", "float32", "--max-model-len", "512", "--quiet"])
    assert exit_info.value.code in (0, None)
    assert "1 skipped as longer than the judge's context" in capsys.readouterr().out
    assert [r.prompt_text for r in iter_records(out, "preferences")] == ["Question 1?"]
    stats = load_manifest(out).splits["preferences"].stats
    assert stats is not None and stats["skipped_too_long"] == 1


class UntoldContextEngine(FakeEngine):
    """The scripted engine as a server that does not report its context length (a hosted API)."""

    @property  # type: ignore[override]
    def max_model_len(self) -> int:
        raise InputError("the servers do not report the model's context length", where="max_model_len")

    @max_model_len.setter
    def max_model_len(self, value: int) -> None:
        pass


def test_an_engine_that_does_not_know_its_context_judges_every_pair(tmp_path: Path) -> None:
    pairs = pairs_file(tmp_path / "pairs.jsonl", long_lines=(2,), total=3)
    with UntoldContextEngine() as engine:
        result = label(config(tmp_path, pairs), judge=engine)
    assert result.written == 3 and not result.skipped_too_long
