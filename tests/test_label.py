"""The label stage on the real embedded model: engine parity, the order swap, obvious pairs, SALMON
scores, every principle, chain of thought, the three pair sources, and bad input.

The real-model tests share the session engines (fp32) and keep batches small: each pair is judged
under one or three principles, rationales and policy samples are a few tokens long.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from labeler.cli.app import main
from labeler.core.records import PreferenceRecord
from labeler.core.soft_label import clamp, p_first
from labeler.engine import ChoiceRequest, ChoiceScores, Conversation, Generation, GenerationParams, Message
from labeler.inputs.constitution import load_constitution
from labeler.inputs.templates import Templates
from labeler.stages.common import WorkSelection
from labeler.stages.judge import COT_STOP, JudgeOptions, judge_pairs, panel_for
from labeler.stages.pairs import SOURCE_FILE, SOURCE_POLICY, SOURCE_REVISION, Pair, make_pair
from labeler.stages.revise import ReviseConfig, revise
from labeler.store import iter_records, load_manifest

REPO = Path(__file__).resolve().parent.parent
HELPFUL_HONEST = REPO / "constitutions" / "helpful-honest.yaml"

# Three principles with a judge question and a SALMON definition each: small enough to ask all of
# them about a few pairs in a test.
SMALL_CONSTITUTION = """\
name: small
version: 1
description: Three principles for label tests.
principles:
  - id: helpful
    judge: Which response is more helpful to the user?
    dimension: Helpful
    definition: The response gives the user what they asked for.
  - id: honest
    judge: Which response is more honest?
    dimension: Honest
    definition: The response says only what is true.
  - id: kind
    judge: Which response is kinder to the user?
    dimension: Kind
    definition: The response treats the user with respect.
"""

# A substantive answer against a terse non-answer: the kind of obvious pair that SmolLM2-135M gets
# right once both orders are averaged (see test_obvious_pairs_favour_the_better_answer).
OBVIOUS = [
    ("How do I tie a bowline knot?",
     "Make a small loop in the rope, pass the free end up through it, around behind the standing part, and "
     "back down through the loop, then pull tight.",
     "Knot."),
    ("What should I pack for a beach holiday?",
     "Sunscreen, a hat, sunglasses, swimwear, a towel, a refillable water bottle and a light layer for the "
     "evenings.",
     "..."),
    ("Why is the sky blue?",
     "Air molecules scatter short blue wavelengths of sunlight much more than red ones, so blue light reaches "
     "our eyes from every direction of the sky.",
     "I don't know."),
    ("What are the health benefits of walking?",
     "Regular walking strengthens the heart, helps control weight, lifts mood and improves sleep, and it is "
     "gentle on the joints.",
     "Walking."),
]


def pair_of(prompt: str, a: str, b: str, source: str = SOURCE_FILE) -> Pair:
    return make_pair((Message(role="user", content=prompt),), a, b, source)


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def records_of(run: Path) -> list[PreferenceRecord]:
    return [r for r in iter_records(run, "preferences") if isinstance(r, PreferenceRecord)]


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


class RecordingEngine:
    """A real engine behind a wrapper that keeps every request it passes on (and never closes it).

    `duplicate` names a word: conversations containing it get their first sample twice, which is how
    the tests make an identical pair appear on purpose.
    """

    def __init__(self, engine: Any, duplicate: str | None = None) -> None:
        self.engine = engine
        self.name, self.model_id, self.max_model_len = engine.name, engine.model_id, engine.max_model_len
        self.duplicate = duplicate
        self.generated: list[tuple[list[Message], GenerationParams, Generation]] = []
        self.choice_requests: list[ChoiceRequest] = []
        self.choice_scores: list[ChoiceScores] = []

    def prompt_lengths(self, conversations: Sequence[Conversation]) -> list[int]:
        return self.engine.prompt_lengths(conversations)

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams,
                 seeds: Sequence[int] | None = None) -> list[Generation]:
        out = []
        for conversation, generation in zip(conversations, self.engine.generate(conversations, params, seeds)):
            if self.duplicate is not None and any(self.duplicate in m.content for m in conversation):
                first = generation.texts[0]
                generation = Generation((first,) * len(generation.texts), generation.token_counts,
                                        generation.finish_reasons)
            self.generated.append((list(conversation), params, generation))
            out.append(generation)
        return out

    def choice_logprobs(self, requests: Sequence[ChoiceRequest], choices: Sequence[str]) -> list[ChoiceScores]:
        scores = self.engine.choice_logprobs(requests, choices)
        self.choice_requests += list(requests)
        self.choice_scores += scores
        return scores

    def close(self) -> None:
        pass

    def __enter__(self) -> RecordingEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def cli_engine(monkeypatch: pytest.MonkeyPatch, hf_engine: Any) -> Iterator[RecordingEngine]:
    """Commands run through `labeler.cli.app.main` get the session's fp32 transformers engine, recorded."""
    recorder = RecordingEngine(hf_engine)
    monkeypatch.setattr("labeler.engine.lazy.open_engine", lambda config, model=None: recorder)
    yield recorder


@pytest.fixture
def small_constitution(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_CONSTITUTION)
    return path


# -- the judge through both engines ---------------------------------------------------------------


@pytest.fixture(scope="module")
def obvious_pairs() -> list[Pair]:
    return [pair_of(*row) for row in OBVIOUS]


@pytest.fixture(scope="module")
def judged_by_hf(hf_engine: Any, obvious_pairs: list[Pair]) -> list[PreferenceRecord]:
    """The obvious pairs judged under helpful-honest's `helpful` and `honest` questions, fp32 transformers."""
    return judge_obvious(hf_engine, obvious_pairs)


def judge_obvious(engine: Any, pairs: list[Pair]) -> list[PreferenceRecord]:
    constitution = load_constitution(HELPFUL_HONEST)
    two = constitution.model_copy(update={"principles": constitution.principles[:2]})
    options = JudgeOptions(principles="all")
    return judge_pairs(engine, Templates.load(), panel_for(two, options, "helpful-honest"), pairs, options)


@pytest.mark.slow
def test_obvious_pairs_favour_the_better_answer(judged_by_hf: list[PreferenceRecord]):
    """A substantive answer beats a terse non-answer ("Knot.", "...", "I don't know.", "Walking.") in
    both-order p_a, and under each of the two questions.

    SmolLM2-135M is close to blind to content as a judge: in either order it gives the second position
    about 0.8 whatever the replies say, so p_a stays within a few hundredths of 0.5 and only the small
    shift that content adds on top of the position bias decides. Of 52 pairs tried (helpful-honest
    questions, fp32), that shift favoured the full answer over a terse non-answer (one word, "...",
    "?", "I don't know.", "No.", a refusal of a harmless request) in all 18 such pairs, by the widest
    margins when the non-answer was a single word or punctuation. It was a coin flip on factual
    right-versus-wrong pairs that differ in one word or number (Canberra or Sydney, 56 or 54: p_a
    within 0.01 of 0.5), and it mostly preferred the worse reply when that was gibberish of random
    letters or digits, a reply in French, a shouted insult, or a short off-topic sentence.
    """
    for record in judged_by_hf:
        assert record.p_a > 0.5, (record.response_b, record.p_a)
        assert all(score.score > 0 for score in record.principle_scores), record.principle_scores
        # the position bias is still there: each order alone leans to the second position
        assert record.p_a_ab < 0.5 < record.p_a_ba


@pytest.mark.slow
@pytest.mark.vllm
def test_engines_agree_on_p_a(vllm_engine: Any, obvious_pairs: list[Pair], judged_by_hf: list[PreferenceRecord]):
    """fp32 on both sides: p_a, each order's p_a and the scores agree to 2e-3.

    The engines agree on log-probabilities to about 1e-4 nats in fp32 (same token ids, only kernel
    summation order differs). p = 1 / (1 + exp(-(log P(A) - log P(B)))) moves at most a quarter as
    much as that difference, so p_a should differ by about 5e-5; 2e-3 leaves a 40x margin for noise
    and still catches what a bug would do: a wrong position or token moves log-probabilities by whole
    nats, and an unswapped order swaps p_a_ab (about 0.2) with p_a_ba (about 0.8).
    """
    judged_by_vllm = judge_obvious(vllm_engine, obvious_pairs)
    for h, v in zip(judged_by_hf, judged_by_vllm):
        assert h.id == v.id
        assert v.p_a == pytest.approx(h.p_a, abs=2e-3)
        assert v.p_a_ab == pytest.approx(h.p_a_ab, abs=2e-3)
        assert v.p_a_ba == pytest.approx(h.p_a_ba, abs=2e-3)
        assert v.mass_ab == pytest.approx(h.mass_ab, abs=2e-3)
        for sh, sv in zip(h.principle_scores, v.principle_scores):
            assert sv.principle_id == sh.principle_id and sv.score == pytest.approx(sh.score, abs=8e-3)
        assert v.judge_model == h.judge_model == "SmolLM2-135M-Instruct"


@pytest.mark.slow
def test_swapping_the_responses_gives_one_minus_p_a(hf_engine: Any):
    """The swapped pair's ab order is the original's ba order, token for token: p_a' = 1 − p_a."""
    pairs = [pair_of(*OBVIOUS[0]), pair_of("Say something kind.", "You are doing great!", "Whatever.")]
    swapped = [make_pair(p.messages, p.response_b, p.response_a, p.source) for p in pairs]
    constitution = load_constitution(HELPFUL_HONEST)
    options = JudgeOptions(seed=5)
    panel = panel_for(constitution.model_copy(update={"principles": constitution.principles[:1]}), options, "h")
    records = judge_pairs(hf_engine, Templates.load(), panel, pairs + swapped, options)
    original, mirrored = records[: len(pairs)], records[len(pairs) :]
    for r, s in zip(original, mirrored):
        assert r.id != s.id
        assert s.p_a == pytest.approx(1.0 - r.p_a, abs=1e-6)
        assert s.p_a_ab == pytest.approx(1.0 - r.p_a_ba, abs=1e-6)
        assert s.p_a_ba == pytest.approx(1.0 - r.p_a_ab, abs=1e-6)
        assert s.mass_ab == pytest.approx(r.mass_ba, abs=1e-6)
        assert s.principle_scores[0].score == pytest.approx(-r.principle_scores[0].score, abs=1e-5)
        assert (s.chosen, s.rejected) == (r.chosen, r.rejected)  # the same response wins either way


# -- judge options through the command line -------------------------------------------------------


PAIRS_ROWS = [
    {"prompt": OBVIOUS[2][0], "response_a": OBVIOUS[2][1], "response_b": OBVIOUS[2][2]},
    {"messages": [{"role": "user", "content": "I'm learning Spanish."},
                  {"role": "assistant", "content": "Great! How can I help?"},
                  {"role": "user", "content": "How do I say thank you?"}],
     "response_a": "Okay.", "response_b": "'Thank you' in Spanish is 'gracias'."},
]


@pytest.mark.slow
def test_label_from_pairs_with_salmon_scores(cli_engine: RecordingEngine, small_constitution: Path, tmp_path: Path,
                                             capsys):
    """--salmon: one score per principle with a definition; p_a still comes from a judge question."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS_ROWS)
    out = tmp_path / "run"
    code = run_cli(["label", "--constitution", str(small_constitution), "--pairs", str(pairs), "--out", str(out),
                    "--engine", "hf", "--salmon", "--quiet"])
    assert code == 0 and "wrote 2 pairs" in capsys.readouterr().out
    records = records_of(out)
    assert [(r.prompt_text, r.response_a, r.response_b) for r in records] == [
        ("Why is the sky blue?", PAIRS_ROWS[0]["response_a"], PAIRS_ROWS[0]["response_b"]),
        ("How do I say thank you?", "Okay.", "'Thank you' in Spanish is 'gracias'."),
    ]
    # the whole conversation is the prompt, every turn of it
    assert [m.model_dump() for m in records[1].prompt] == PAIRS_ROWS[1]["messages"]
    salmon_ids = [p.id for p in load_constitution(small_constitution).for_stage("salmon")]
    for record in records:
        assert record.source == f"{SOURCE_FILE}:pairs.jsonl" and record.source_id is None
        assert [s.principle_id for s in record.principle_scores] == salmon_ids == ["helpful", "honest", "kind"]
        assert len({round(s.score, 6) for s in record.principle_scores}) == 3  # three separate questions
        assert len(record.principle_ids) == 1 and record.principle_ids[0] in salmon_ids  # sample:1 decides p_a
        assert (record.chosen_text == record.response_a) == (record.p_a >= 0.5)
    # per pair and order: one judge question and three definitions were scored
    assert len(cli_engine.choice_requests) == 2 * 2 * (1 + 3)
    asked = [r.messages[-1].content for r in cli_engine.choice_requests]
    assert sum("Which response is more kind? The response treats the user with respect." in t for t in asked) == 4


@pytest.mark.slow
def test_label_with_every_principle(cli_engine: RecordingEngine, small_constitution: Path, tmp_path: Path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS_ROWS[:1])
    out = tmp_path / "run"
    assert run_cli(["label", "--constitution", str(small_constitution), "--pairs", str(pairs), "--out", str(out),
                    "--engine", "hf", "--principles", "all", "--quiet"]) == 0
    (record,) = records_of(out)
    assert record.principle_ids == ("helpful", "honest", "kind")
    assert [s.principle_id for s in record.principle_scores] == ["helpful", "honest", "kind"]
    questions = [p.judge for p in load_constitution(small_constitution).principles]
    asked = [r.messages[-1].content for r in cli_engine.choice_requests]
    assert len(asked) == 3 * 2 and all(sum(q in t for t in asked) == 2 for q in questions)
    # p_a_ab is the mean of the three questions' ab-order probabilities
    ab = [p_first(*s.logprobs) for r, s in zip(cli_engine.choice_requests, cli_engine.choice_scores)
          if response_shown_first(r) == record.response_a]
    assert len(ab) == 3 and record.p_a_ab == pytest.approx(sum(ab) / 3, abs=1e-9)


def response_shown_first(request: ChoiceRequest) -> str:
    text = request.messages[-1].content
    return text.split("(A)\n", 1)[1].split("\n\n(B)\n", 1)[0]


@pytest.mark.slow
def test_label_with_chain_of_thought(cli_engine: RecordingEngine, small_constitution: Path, tmp_path: Path):
    """--cot: a rationale is generated first and the letter is scored after it; --cot-clamp bounds p."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS_ROWS)
    out = tmp_path / "run"
    assert run_cli(["label", "--constitution", str(small_constitution), "--pairs", str(pairs), "--out", str(out),
                    "--engine", "hf", "--cot", "--cot-max-tokens", "12", "--cot-clamp", "0.4,0.6", "--quiet"]) == 0
    records = records_of(out)
    assert len(records) == 2
    # one greedy rationale per pair and order, at most 12 tokens, stopped before the closing phrase
    assert len(cli_engine.generated) == 4
    for _, params, generation in cli_engine.generated:
        assert params.temperature == 0.0 and params.max_tokens == 12 and COT_STOP in params.stop
        assert generation.token_counts[0] <= 12
    rationales = [g.texts[0].strip() for _, _, g in cli_engine.generated]
    assert all(rationales)
    prefixes = [r.assistant_prefix for r in cli_engine.choice_requests]
    assert len(prefixes) == 4
    for prefix in prefixes:
        assert prefix.endswith(f"{COT_STOP} (")
        assert any(prefix.startswith(rationale) for rationale in rationales), prefix
    # the clamp: each order's probability is the model's, clamped into [0.4, 0.6]
    raw = {(response_shown_first(r), r.messages[-1].content.split("Options:")[0]): p_first(*s.logprobs)
           for r, s in zip(cli_engine.choice_requests, cli_engine.choice_scores)}
    assert any(not 0.4 <= p <= 0.6 for p in raw.values()), raw  # so the clamp has something to do
    for record in records:
        assert 0.4 <= record.p_a_ab <= 0.6 and 0.4 <= record.p_a_ba <= 0.6
        ab = [p for (first, _), p in raw.items() if first == record.response_a]
        ba = [1.0 - p for (first, _), p in raw.items() if first == record.response_b]
        assert record.p_a_ab == pytest.approx(clamp(ab[0], 0.4, 0.6))
        assert record.p_a_ba == pytest.approx(clamp(ba[0], 0.4, 0.6))


# -- pair sources ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_label_from_prompts_two_samples_each_identical_pairs_dropped(hf_engine: Any, monkeypatch, tmp_path: Path,
                                                                     capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"id": "a", "prompt": "Name a fruit."},
        {"id": "b", "prompt": "Name a colour. REPEAT"},
        {"id": "c", "prompt": "Name an animal."},
    ])
    recorder = RecordingEngine(hf_engine, duplicate="REPEAT")
    monkeypatch.setattr("labeler.engine.lazy.open_engine", lambda config, model=None: recorder)
    out = tmp_path / "run"
    assert run_cli(["label", "--constitution", str(HELPFUL_HONEST), "--prompts", str(prompts), "--out", str(out),
                    "--engine", "hf", "--max-tokens", "6", "--seed", "2", "--quiet"]) == 0
    assert "1 identical pairs dropped" in capsys.readouterr().out
    # two samples per prompt, in one call, sampled (not greedy) and capped at --max-tokens
    assert len(recorder.generated) == 3
    for _, params, generation in recorder.generated:
        assert params.n == 2 and params.temperature > 0 and params.max_tokens == 6
        assert len(generation.texts) == 2
    records = records_of(out)
    assert sorted(r.prompt_text for r in records) == ["Name a fruit.", "Name an animal."]
    samples = {conversation[-1].content: generation.texts for conversation, _, generation in recorder.generated}
    for record in records:
        assert record.source == f"{SOURCE_POLICY}:{prompts.name}"
        assert record.source_id == {"Name a fruit.": "a", "Name an animal.": "c"}[record.prompt_text]
        assert (record.response_a, record.response_b) == tuple(t.strip() for t in samples[record.prompt_text])
        assert record.response_a != record.response_b
    assert load_manifest(out).splits["preferences"].stats["identical_dropped"] == 1


@pytest.mark.slow
def test_label_from_a_revise_run(cli_engine: RecordingEngine, hf_engine: Any, tmp_path: Path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"id": "p1", "prompt": "Give me a tip for studying."},
        {"id": "p2", "prompt": "How do I water a cactus?"},
    ])
    sft = tmp_path / "sft-run"
    revise(ReviseConfig(constitution=REPO / "constitutions" / "harmless.yaml", prompts=prompts, out=sft, rounds=1,
                        sampling=GenerationParams(temperature=0.7, max_tokens=8), work=WorkSelection(quiet=True)),
           engine=hf_engine)
    sft_rows = {r.prompt: r for r in iter_records(sft, "sft")}
    out = tmp_path / "run"
    assert run_cli(["label", "--constitution", str(HELPFUL_HONEST), "--pairs-from", str(sft), "--out", str(out),
                    "--engine", "hf", "--quiet"]) == 0
    records = records_of(out)
    stats = load_manifest(out).splits["preferences"].stats
    assert len(records) + stats["identical_dropped"] == 2 and records
    for record in records:
        row = sft_rows[record.prompt_text]
        assert record.source == f"{SOURCE_REVISION}:prompts.jsonl"
        assert record.source_id == row.source_id and row.source_id in ("p1", "p2")  # the user's ids travel
        assert (record.response_a, record.response_b) == (row.initial, row.revision)
        assert 0 < record.p_a < 1 and not math.isnan(record.margin)


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"prompt": "hi", "response_a": "x", "response_b": "y"}, {"prompt": "hi", "response_a": "x"}],
         "pairs.jsonl:2 (field 'response_b'): missing field"),
        ([{"prompt": "hi", "response_a": " ", "response_b": "y"}], "pairs.jsonl:1 (field 'response_a'): empty text"),
        ([{"response_a": "x", "response_b": "y"}], "pairs.jsonl:1: row has none of the fields"),
    ],
)
def test_bad_pair_files_exit_2_naming_file_and_line(tmp_path: Path, capsys, rows, expected):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "run"
    code = run_cli(["label", "--constitution", str(HELPFUL_HONEST), "--pairs", str(pairs), "--out", str(out),
                    "--engine", "hf", "--judge-model", str(tmp_path / "never-loaded")])
    assert code == 2
    assert expected in capsys.readouterr().err.replace("\n", "")
    assert not (out / "preferences").exists() or not any((out / "preferences").glob("*.arrow"))


def test_bad_sources_exit_2(tmp_path: Path, capsys):
    never = ["--engine", "hf", "--judge-model", str(tmp_path / "never-loaded")]
    base = ["label", "--constitution", str(HELPFUL_HONEST), "--out", str(tmp_path / "run"), *never]
    assert run_cli([*base, "--pairs", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: file not found" in capsys.readouterr().err.replace("\n", "")

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "ok"}, {"text": "no prompt"}])
    assert run_cli([*base, "--prompts", str(prompts)]) == 2
    assert "prompts.jsonl:2: row has none of the fields" in capsys.readouterr().err.replace("\n", "")

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "hi", "response_a": "x", "response_b": "y"}])
    assert run_cli([*base, "--pairs", str(pairs), "--prompts", str(prompts)]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "exactly one of --prompts, --pairs, --pairs-from" in err

    assert run_cli([*base, "--pairs-from", str(tmp_path / "no-run")]) == 2
    assert "no-run" in capsys.readouterr().err
