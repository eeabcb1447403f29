"""K responses per prompt on the scripted engine: the rankings split, its binarization, K = 2 unchanged,
resuming after a crash, a judge of known strengths, invariance to row and response order."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fake_engine import FakeEngine

from labeler.core.records import FLAG_FROM_SCORES, PreferenceRecord, RankingRecord
from labeler.engine import ChoiceRequest, ChoiceScores
from labeler.stages.common import WorkSelection
from labeler.stages.label import LabelConfig, label
from labeler.stages.rankings import Binarization
from labeler.store import iter_records, load_manifest, read_split

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions" / "harmless.yaml"
PROMPTS = REPO / "data" / "sample_prompts.jsonl"
STRENGTHS = {"Answer one.": 2.0, "Answer two.": -1.0, "Answer three.": 0.5, "Answer four.": -2.5, "Answer five.": 1.0}


class StrengthJudge(FakeEngine):
    """A judge that prefers each response by a known strength: in a request showing X before Y, the logits
    of A and B are X's and Y's strengths (both orders agree, so p_a = σ(s_x − s_y))."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[ChoiceRequest] = []

    def choice_logprobs(self, requests: Sequence[ChoiceRequest], choices: Sequence[str]) -> list[ChoiceScores]:
        self.sent += requests
        scores = []
        for request in requests:
            text = request.messages[-1].content
            shown = sorted((text.index(r), r) for r in STRENGTHS if r in text)
            assert len(shown) == 2, text
            first, second = (STRENGTHS[r] for _, r in shown)
            total = math.log(math.exp(first) + math.exp(second))
            scores.append(ChoiceScores((first - total, second - total)))
        return scores


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _config(out: Path, **fields: Any) -> LabelConfig:
    work = fields.pop("work", WorkSelection(quiet=True, batch_size=2))
    return LabelConfig(constitution=HARMLESS, out=out, work=work, **fields)


def _rankings(out: Path) -> list[RankingRecord]:
    records = list(iter_records(out, "rankings"))
    assert all(isinstance(r, RankingRecord) for r in records)
    return records  # type: ignore[return-value]


def _preferences(out: Path) -> list[PreferenceRecord]:
    return list(iter_records(out, "preferences"))  # type: ignore[arg-type]


def _response_rows() -> list[dict[str, Any]]:
    texts = list(STRENGTHS)
    return [
        {"id": "r1", "prompt": "Say something.", "responses": texts[:4]},
        {"id": "r2", "prompt": "Say something else.", "response_ids": ["a", "b", "c", "d", "e"],
         "responses": [[{"role": "assistant", "content": t}] for t in texts]},
        {"messages": [{"role": "user", "content": "Hi."}], "responses": texts[2:]},
    ]


def test_known_strengths_are_recovered_and_binarized(tmp_path: Path) -> None:
    rows = _write_rows(tmp_path / "responses.jsonl", _response_rows())
    judge = StrengthJudge()
    result = label(_config(tmp_path / "run", pairs=rows, binarize="all-pairs"), judge=judge)
    assert result.ranked and result.rankings_written == 3
    table = read_split(tmp_path / "run", "rankings")
    assert table.schema.equals(RankingRecord.arrow_schema(), check_metadata=False)
    rankings = {r.source_id: r for r in _rankings(tmp_path / "run")}
    for ranking in rankings.values():
        strengths = [STRENGTHS[r] for r in ranking.responses]
        k = len(strengths)
        assert sorted(range(k), key=lambda i: ranking.scores[i]) == sorted(range(k), key=lambda i: strengths[i])
        assert len(ranking.comparisons) == k * (k - 1) // 2 and ranking.design == "all"
        assert ranking.intransitive_triples == 0 and ranking.flags == ()
        assert all(e > 0 for e in ranking.score_errors)
        for c in ranking.comparisons:
            expected = 1 / (1 + math.exp(strengths[c.b] - strengths[c.a]))
            assert c.p_a == pytest.approx(expected) and c.consistent
    assert rankings["r2"].response_ids == ("a", "b", "c", "d", "e")
    assert rankings[None].response_ids == ("0", "1", "2")
    # every pair of every ranking, each the judged comparison (none fitted)
    preferences = _preferences(tmp_path / "run")
    assert len(preferences) == 6 + 10 + 3
    assert not any(FLAG_FROM_SCORES in p.flags for p in preferences)
    assert all(STRENGTHS[p.chosen_text] > STRENGTHS[p.rejected_text] for p in preferences)
    assert load_manifest(tmp_path / "run").splits["preferences"].stats["binarize"] == "all-pairs"


@pytest.mark.parametrize("how", ["best-worst", "best-random", "all-pairs"])
def test_budget_design_and_binarizations(tmp_path: Path, how: Binarization) -> None:
    rows = _write_rows(tmp_path / "responses.jsonl", [_response_rows()[1]])
    judge = StrengthJudge()
    label(_config(tmp_path / "run", pairs=rows, comparisons="4", binarize=how), judge=judge)
    (ranking,) = _rankings(tmp_path / "run")
    assert ranking.design == "round_robin:4" and len(ranking.comparisons) == 4
    assert len(judge.sent) == 4 * 2  # each pair in both orders (one principle each)
    # The ring of neighbours alone orders the five responses by strength.
    assert sorted(ranking.responses, key=lambda r: ranking.scores[ranking.responses.index(r)]) == sorted(
        STRENGTHS, key=STRENGTHS.__getitem__)
    preferences = _preferences(tmp_path / "run")
    best = "Answer one."
    if how == "all-pairs":
        assert len(preferences) == 10
        fitted = [p for p in preferences if FLAG_FROM_SCORES in p.flags]
        assert len(fitted) == 6
        for p in fitted:
            a, b = ranking.responses.index(p.response_a), ranking.responses.index(p.response_b)
            assert p.p_a == pytest.approx(1 / (1 + math.exp(ranking.scores[b] - ranking.scores[a])))
            assert p.principle_ids == () and p.p_a_ab == p.p_a_ba == p.p_a
    else:
        (row,) = preferences
        assert row.chosen_text == best
        if how == "best-worst":
            # best (index 0) and worst (index 3) are not neighbours in the ring: the pair is fitted.
            assert row.rejected_text == "Answer four." and FLAG_FROM_SCORES in row.flags


def test_two_responses_equal_the_pair_run(tmp_path: Path) -> None:
    """--responses 2 is the run without it: the same shards, byte for byte, and the same fingerprint."""
    work = WorkSelection(quiet=True, batch_size=3, limit=7)
    label(_config(tmp_path / "pairs", prompts=PROMPTS, work=work), judge=FakeEngine())
    label(_config(tmp_path / "two", prompts=PROMPTS, responses=2, work=work), judge=FakeEngine())
    assert not (tmp_path / "two" / "rankings").exists()
    one, two = (load_manifest(tmp_path / name).splits["preferences"] for name in ("pairs", "two"))
    assert one.fingerprint == two.fingerprint
    assert [s.sha256 for s in one.shards] == [s.sha256 for s in two.shards] and one.rows == two.rows > 0
    for a, b in zip(sorted((tmp_path / "pairs" / "preferences").iterdir()),
                    sorted((tmp_path / "two" / "preferences").iterdir())):
        assert a.read_bytes() == b.read_bytes()


def test_sampled_responses_drop_repeats(tmp_path: Path) -> None:
    class Repeating(FakeEngine):
        def generate(self, conversations, params, seeds=None):  # type: ignore[no-untyped-def]
            generations = super().generate(conversations, params, seeds)
            # Every sample of the first prompt the same; the second sample of the others repeats the first.
            out = []
            for index, g in enumerate(generations):
                texts = (g.texts[0],) * len(g.texts) if index == 0 else (g.texts[0], g.texts[0], *g.texts[2:])
                out.append(type(g)(texts=texts, token_counts=g.token_counts, finish_reasons=g.finish_reasons))
            return out

    work = WorkSelection(quiet=True, batch_size=4, limit=4)
    result = label(_config(tmp_path / "run", prompts=PROMPTS, responses=4, work=work), judge=Repeating())
    rankings = _rankings(tmp_path / "run")
    assert result.counts.too_few_responses == 1 and len(rankings) == 3
    assert result.counts.identical_dropped == 3 + 3 * 1
    assert all(r.response_ids == ("0", "2", "3") and len(r.comparisons) == 3 for r in rankings)
    assert all(r.source.startswith("policy_samples:") for r in rankings)


class Crash(BaseException):
    """Stands for kill -9 in-process: nothing on the way up handles it."""


class CrashingJudge(StrengthJudge):
    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls_left = calls

    def choice_logprobs(self, requests: Sequence[ChoiceRequest], choices: Sequence[str]) -> list[ChoiceScores]:
        self.calls_left -= 1
        if self.calls_left <= 0:
            raise Crash
        return super().choice_logprobs(requests, choices)


def test_a_crash_mid_run_resumes_without_duplicate_comparisons(tmp_path: Path) -> None:
    rows = _write_rows(tmp_path / "responses.jsonl", _response_rows() * 1 + [
        {"prompt": f"Prompt {i}.", "responses": list(STRENGTHS)[: 2 + i % 4]} for i in range(6)])
    work = WorkSelection(quiet=True, batch_size=2)
    label(_config(tmp_path / "reference", pairs=rows, work=work), judge=StrengthJudge())
    run = tmp_path / "run"
    for calls in (1, 2, 4):  # die while judging the 1st, 2nd, 4th batch of prompts
        with pytest.raises(Crash):
            label(_config(run, pairs=rows, work=work), judge=CrashingJudge(calls))
        assert load_manifest(run).splits["rankings"].status == "running"
    before = {r.id for r in _rankings_so_far(run)}
    judge = StrengthJudge()
    label(_config(run, pairs=rows, work=work), judge=judge)
    done, reference = _rankings(run), _rankings(tmp_path / "reference")
    assert sorted(r.id for r in done) == sorted(r.id for r in reference) and len(done) == 9
    assert {r.id: r for r in done} == {r.id: r for r in reference}
    for ranking in done:  # every pair once
        assert len({frozenset((c.a, c.b)) for c in ranking.comparisons}) == len(ranking.comparisons)
    # The last run judged the pairs of the prompts not committed before, and only those, each once.
    assert 0 < len(before) < 9
    left = [r for r in done if r.id not in before]
    assert len(judge.sent) == 2 * sum(len(r.comparisons) for r in left)
    assert len({tuple(q.messages) for q in judge.sent}) == len(judge.sent)
    assert len(_preferences(run)) == len(done)


def _rankings_so_far(run: Path) -> list[RankingRecord]:
    return list(iter_records(run, "rankings", require_complete=False))  # type: ignore[arg-type]


def test_scores_ignore_row_order_and_response_order(tmp_path: Path) -> None:
    """The scripted engine's logits are hashes of each request: any label could come out, and still a
    ranking's scores follow its responses wherever they are listed, and rows in any order rank the same."""
    rng = random.Random(5)
    texts = [f"Reply number {i} with some words." for i in range(5)]
    rows = [{"id": f"q{j}", "prompt": f"Question {j}?", "responses": rng.sample(texts, 4)} for j in range(4)]
    label(_config(tmp_path / "a", pairs=_write_rows(tmp_path / "a.jsonl", rows)), judge=FakeEngine())
    shuffled = [dict(row, responses=rng.sample(row["responses"], 4)) for row in reversed(rows)]
    label(_config(tmp_path / "b", pairs=_write_rows(tmp_path / "b.jsonl", shuffled)), judge=FakeEngine())
    first = {r.source_id: r for r in _rankings(tmp_path / "a")}
    second = {r.source_id: r for r in _rankings(tmp_path / "b")}
    for key, one in first.items():
        other = second[key]
        by_text = dict(zip(other.responses, other.scores))
        assert [by_text[t] for t in one.responses] == pytest.approx(one.scores, abs=1e-7)
        assert one.intransitive_triples == other.intransitive_triples
    assert any(r.intransitive_triples for r in first.values()) or len({r.scores for r in first.values()}) > 1


def test_requests_of_a_prompt_are_sent_together(tmp_path: Path) -> None:
    rows = _write_rows(tmp_path / "responses.jsonl", _response_rows()[:2])
    judge = StrengthJudge()
    label(_config(tmp_path / "run", pairs=rows, work=WorkSelection(quiet=True, batch_size=8)), judge=judge)
    conversations = [re.search(r"Say something( else)?\.", q.messages[-1].content).group(0) for q in judge.sent]
    # one run of each conversation, and inside it, those showing the same response first are adjacent
    runs = [c for index, c in enumerate(conversations) if index == 0 or conversations[index - 1] != c]
    assert runs == ["Say something.", "Say something else."]
    firsts = [min((q.messages[-1].content.index(r), r) for r in STRENGTHS if r in q.messages[-1].content)[1]
              for q in judge.sent]
    blocks = [f for index, f in enumerate(firsts) if index == 0 or firsts[index - 1] != f]
    assert len(blocks) == 4 + 5


def test_rankings_table_schema_is_explicit() -> None:
    schema = RankingRecord.arrow_schema()
    assert schema.field("scores").type == pa.list_(pa.field("item", pa.float64(), nullable=False))
    assert schema.field("comparisons").type.value_type.field("p_a").type == pa.float64()
    empty = RankingRecord.to_table([])
    assert empty.schema == schema and empty.num_rows == 0


def test_train_rm_export_and_report_read_a_ranked_run(tmp_path: Path, tiny_model: Path) -> None:
    from labeler.publish.export import ExportConfig, export_run
    from labeler.report.build import write_report
    from labeler.train.rm.config import RMTrainConfig
    from labeler.train.rm.pairs import load_pairs
    from labeler.train.rm.train import train_reward_model

    rows = _write_rows(tmp_path / "responses.jsonl", _response_rows())
    run = tmp_path / "run"
    label(_config(run, pairs=rows, binarize="all-pairs"), judge=StrengthJudge())
    assert load_pairs([run]) == _preferences(run)  # the reward model's reader takes the derived split as it is
    out = tmp_path / "rm"
    train_reward_model(RMTrainConfig(data=(run,), base_model=str(tiny_model), out=out, batch_size=4, max_steps=2,
                                     max_length=64, eval_fraction=0.0, quiet=True))
    assert (out / "model.safetensors").is_file() or any(out.rglob("*.safetensors"))
    exported = tmp_path / "export"
    export_run(ExportConfig(run=run, out=exported))
    assert load_pairs([exported]) == _preferences(run)
    assert _rankings(exported) == _rankings(run)
    shaped = tmp_path / "ultrafeedback"
    export_run(ExportConfig(run=run, out=shaped, ultrafeedback=True, format="jsonl"))
    assert not (shaped / "rankings").exists()
    rows = [json.loads(line) for line in (shaped / "ultrafeedback" / "shard-00000.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {row["prompt"] for row in rows} == {"Say something.", "Say something else.", "Hi."}
    for row in rows:
        best = min(row["completions"], key=lambda c: c["rank"])
        assert best["score"] == max(c["score"] for c in row["completions"])
        assert STRENGTHS[best["response"]] == max(STRENGTHS[c["response"]] for c in row["completions"])
    assert len(list(iter_records(shaped, "ultrafeedback"))) == 3  # a verified split of an export run
    write_report(run)
    statistics = json.loads((run / "report" / "statistics.json").read_text())
    assert statistics["rankings"]["prompts"] == 3 and statistics["rankings"]["intransitive_rate"] == 0.0
    spreads = [max(r.scores) - min(r.scores) for r in _rankings(run)]
    assert statistics["rankings"]["mean_score_spread"] == pytest.approx(sum(spreads) / 3)
    assert "intransitive rate" in (run / "report" / "index.md").read_text()


def test_a_run_config_ranks_k_responses(tmp_path: Path) -> None:
    import yaml

    from labeler.pipeline.run import label_config, load_run_config

    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["stages"]["label"] = {"pairs": "prompts", "responses": 3, "comparisons": "2", "binarize": "best-random"}
    for key in ("prompts", "constitution"):
        config[key] = str((REPO / "configs" / config[key]).resolve())
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    label_stage = label_config(load_run_config(path))
    assert (label_stage.responses, label_stage.comparisons, label_stage.binarize) == (3, "2", "best-random")
