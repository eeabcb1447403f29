"""The two engines on the real embedded model: parity, seeding, batching, bad model paths."""

from __future__ import annotations

import math

import pytest

from labeler.engine import ChoiceRequest, GenerationParams, Message
from labeler.engine.chat import _common_prefix_length, choice_inputs

pytestmark = pytest.mark.slow

QUESTIONS = [
    ("What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 5."),
    ("What is the capital of France?", "Paris is the capital of France.", "I don't know, maybe Berlin."),
    ("How should I treat a small cut?", "Rinse it with clean water and cover it with a bandage.", "Rub dirt on it."),
    ("Say something kind.", "You are doing great, keep going!", "You are useless."),
]


def judging_request(prompt: str, a: str, b: str, prefix: str = "") -> ChoiceRequest:
    text = (
        f"Consider this conversation.\nUser: {prompt}\n\n"
        f"Options:\n(A) {a}\n(B) {b}\n\n"
        "Which response is more helpful and correct? Answer with the single letter A or B."
    )
    return ChoiceRequest((Message(role="user", content=text),), prefix)


REQUESTS = [judging_request(*q) for q in QUESTIONS] + [
    judging_request(*q, prefix="The better response is (") for q in QUESTIONS
]
CONVERSATIONS = [[Message(role="user", content=q[0])] for q in QUESTIONS]


def test_choice_tokens_resolve_from_prefix_text(hf_engine):
    """'(' then 'A' are separate tokens; bare letters are single tokens after the assistant turn opens."""
    tok = hf_engine.tokenizer
    (plain_ids, plain_choices), (paren_ids, paren_choices) = choice_inputs(
        tok, [REQUESTS[0], REQUESTS[len(QUESTIONS)]], ["A", "B"]
    )
    assert [tok.decode([t]) for t in plain_choices] == ["A", "B"]
    assert tok.decode(paren_ids[-1:]).endswith("(")
    assert [tok.decode([t]) for t in paren_choices] == ["A", "B"]
    # a prefix ending in a space: the space merges into the choice token, and the prompt stops before it
    spaced_request = judging_request(*QUESTIONS[0], prefix="Answer: ")
    ((spaced_ids, spaced_choices),) = choice_inputs(tok, [spaced_request], ["A", "B"])
    assert [tok.decode([t]) for t in spaced_choices] == [" A", " B"]
    assert tok.decode(spaced_ids).endswith("Answer:")


def test_common_prefix_length():
    assert _common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert _common_prefix_length([[5], [6]]) == 0


def test_choice_mass_is_substantial_on_a_judging_prompt(hf_engine):
    """With the answer opened as "The better response is (", the letters carry the probability.

    Right after the assistant turn opens, this 135M model spreads its mass (about 0.1 on the two
    letters); after the opened parenthesis nearly all of it sits on A or B. The judge templates
    therefore score the choice after such a prefix.
    """
    prefixed = REQUESTS[len(QUESTIONS) :]
    masses = [s.mass for s in hf_engine.choice_logprobs(prefixed, ["A", "B"])]
    assert min(masses) > 0.5, masses
    bare = [s.mass for s in hf_engine.choice_logprobs(REQUESTS[: len(QUESTIONS)], ["A", "B"])]
    assert sum(masses) > sum(bare), (masses, bare)


def test_choice_logprobs_parity_between_engines(hf_engine, vllm_engine):
    """fp32 on both sides: the engines must agree to well under 1e-2 nats.

    Both run the same token ids in fp32, where the two implementations agree to about 1e-4 nats (only
    kernel summation order differs). In bf16 they can differ by up to ~0.25 nats on this model
    (bf16 keeps 8 bits of mantissa), so parity is checked in fp32 where a real bug (wrong position,
    wrong token, missing chat template) would show as differences of whole nats.
    """
    hf = hf_engine.choice_logprobs(REQUESTS, ["A", "B"])
    vl = vllm_engine.choice_logprobs(REQUESTS, ["A", "B"])
    for h, v in zip(hf, vl):
        for lh, lv in zip(h.logprobs, v.logprobs):
            assert abs(lh - lv) < 1e-2, (h, v)


@pytest.mark.parametrize("engine_fixture", ["hf_engine", "vllm_engine"])
def test_batched_choice_scores_equal_one_at_a_time(engine_fixture, request):
    engine = request.getfixturevalue(engine_fixture)
    batched = engine.choice_logprobs(REQUESTS, ["A", "B"])
    single = [engine.choice_logprobs([r], ["A", "B"])[0] for r in REQUESTS[:3]]
    for b, s in zip(batched, single):
        assert all(math.isclose(x, y, abs_tol=1e-3) for x, y in zip(b.logprobs, s.logprobs)), (b, s)


@pytest.mark.parametrize("engine_fixture", ["hf_engine", "vllm_engine"])
def test_seeded_generation_reproduces_and_batches(engine_fixture, request):
    engine = request.getfixturevalue(engine_fixture)
    params = GenerationParams(n=2, temperature=0.9, top_p=0.95, max_tokens=16)
    first = engine.generate(CONVERSATIONS, params, seeds=[11, 12, 13, 14])
    again = engine.generate(CONVERSATIONS, params, seeds=[11, 12, 13, 14])
    assert first == again
    # the same prompt with the same seed gives the same samples alone as in a batch
    alone = engine.generate(CONVERSATIONS[2:3], params, seeds=[13])
    assert alone[0].texts == first[2].texts
    # a different seed gives different samples somewhere
    other = engine.generate(CONVERSATIONS, params, seeds=[21, 22, 23, 24])
    assert [g.texts for g in other] != [g.texts for g in first]
    for g in first:
        assert len(g.texts) == 2 and all(0 < n <= 16 for n in g.token_counts)
        assert set(g.finish_reasons) <= {"stop", "length"}


@pytest.mark.parametrize("engine_fixture", ["hf_engine", "vllm_engine"])
def test_greedy_generation_answers_and_respects_limits(engine_fixture, request):
    engine = request.getfixturevalue(engine_fixture)
    out = engine.generate(CONVERSATIONS[1:2], GenerationParams(temperature=0.0, max_tokens=24))
    assert "Paris" in out[0].texts[0]
    short = engine.generate(CONVERSATIONS[1:2], GenerationParams(temperature=0.0, max_tokens=3))
    assert short[0].token_counts == (3,) and short[0].finish_reasons == ("length",)
    stopped = engine.generate(CONVERSATIONS[1:2], GenerationParams(temperature=0.0, max_tokens=24, stop=("France",)))
    assert "France" not in stopped[0].texts[0] and stopped[0].finish_reasons == ("stop",)


def test_greedy_generation_agrees_between_engines(hf_engine, vllm_engine):
    params = GenerationParams(temperature=0.0, max_tokens=12)
    hf = hf_engine.generate(CONVERSATIONS, params)
    vl = vllm_engine.generate(CONVERSATIONS, params)
    same = sum(h.texts == v.texts for h, v in zip(hf, vl))
    assert same >= len(CONVERSATIONS) - 1, (hf, vl)


def test_prompt_lengths_match_tokenizer(hf_engine, vllm_engine):
    assert hf_engine.prompt_lengths(CONVERSATIONS) == vllm_engine.prompt_lengths(CONVERSATIONS)
    assert all(n > 5 for n in hf_engine.prompt_lengths(CONVERSATIONS))
    assert vllm_engine.max_model_len == hf_engine.max_model_len == 8192


def test_seeded_long_prompts_beyond_one_engine_step(vllm_engine):
    """More seeded prompt tokens than one engine step holds (8192 on CPU): vLLM must schedule whole
    prompts over several steps. With prefills split across steps, a seeded request made vLLM rewind a
    CPU random generator, which cannot be done, and the engine died."""
    filler = " ".join(f"item {i} is on the list." for i in range(160))  # about 1,000 tokens
    conversations = [[Message(role="user", content=f"List {k}: {filler} Which item comes first?")] for k in range(9)]
    lengths = vllm_engine.prompt_lengths(conversations)
    assert sum(lengths) > 8192 and max(lengths) < 2048
    params = GenerationParams(temperature=0.9, max_tokens=3)
    first = vllm_engine.generate(conversations, params, seeds=list(range(9)))
    assert all(g.token_counts[0] > 0 for g in first)
    assert vllm_engine.generate(conversations[4:5], params, seeds=[4])[0].texts == first[4].texts



def test_cpu_kv_blocks_are_small_enough_to_reuse_shared_prefixes(vllm_engine):
    """The prefix cache reuses whole KV blocks only. vLLM's CPU default (128 tokens) threw away up to
    127 shared tokens per SALMON request; labeler asks for 32-token blocks on CPU."""
    from labeler.engine.vllm_engine import DEFAULT_CPU_KV_BLOCK

    assert DEFAULT_CPU_KV_BLOCK == 32
    assert vllm_engine._llm.llm_engine.vllm_config.cache_config.block_size == DEFAULT_CPU_KV_BLOCK
