"""Throughput of the label path (`judge_pairs` through the vLLM engine) against its baselines.

Pairs: two policy samples per shipped sample prompt (up to `--max-tokens` tokens each, the way
`labeler label --prompts` makes pairs), generated once by the same engine before anything is timed.
Each pair is judged in both orders under one principle (the default `--principles sample:1`).
Figures, in judged pairs per second (each pair = 2 scored prompts):

- label path: `judge_pairs` with the vLLM engine: rendering, tokenisation, one engine call, soft labels;
- (a) raw vLLM: the very same token ids handed to vLLM's `LLM.generate` in one call (max_tokens=1 and
  the two letters' exact log-probabilities), with nothing of labeler around it; target: label path
  >= 0.9x of it;
- (b) a plain transformers loop: the same token ids, one prompt per forward pass (same dtype, both cores);
  target: label path >= 5x faster.

Then SALMON scoring: every pair scored under the 12 principles of constitutions/salmon.yaml against
under its first principle alone (target: 12 principles <= 3x the time of 1), with the prefix cache
on and then off (a second engine), which shows what the cache saves.

The prefix cache is emptied before every timed call, so no figure profits from an earlier one. The
label path and the raw engine alternate for `--rounds` rounds; the best round of each is reported.

    .venv/bin/python bench/judge.py

The machine is shared and noisy: compare the ratios of one run, never absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class RecordingEngine:
    """Passes every call to an engine and keeps the choice requests it was asked to score."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.name, self.model_id, self.max_model_len = engine.name, engine.model_id, engine.max_model_len
        self.requests: list[Any] = []

    def prompt_lengths(self, conversations: Sequence[Any]) -> list[int]:
        return self.engine.prompt_lengths(conversations)

    def generate(self, conversations: Sequence[Any], params: Any, seeds: Sequence[int] | None = None) -> list[Any]:
        return self.engine.generate(conversations, params, seeds)

    def choice_logprobs(self, requests: Sequence[Any], choices: Sequence[str]) -> list[Any]:
        self.requests += list(requests)
        return self.engine.choice_logprobs(requests, choices)


def make_pairs(engine: Any, max_tokens: int, per_prompt: int) -> list[Any]:
    """`per_prompt` pairs per sample prompt from seeded policy samples (identical samples skipped)."""
    from labeler.engine import GenerationParams
    from labeler.inputs.rows import read_prompts
    from labeler.stages.pairs import SOURCE_POLICY, make_pair

    prompts = list(read_prompts(REPO / "data" / "sample_prompts.jsonl"))
    params = GenerationParams(n=2 * per_prompt, temperature=1.0, top_p=0.95, max_tokens=max_tokens)
    generations = engine.generate([p.messages for p in prompts], params, seeds=list(range(len(prompts))))
    pairs = []
    for prompt, generation in zip(prompts, generations):
        texts = [t.strip() for t in generation.texts]
        for a, b in zip(texts[0::2], texts[1::2]):
            if a and b and a != b:
                pairs.append(make_pair(prompt.messages, a, b, SOURCE_POLICY))
    return pairs


def reset_cache(engine: Any) -> None:
    engine._llm.reset_prefix_cache()  # the vLLM `LLM` under labeler's engine


def timed(function: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - t0, result


def label_path(engine: Any, templates: Any, panel: Any, pairs: Sequence[Any], options: Any) -> float:
    from labeler.stages.judge import judge_pairs

    reset_cache(engine)
    seconds, records = timed(judge_pairs, engine, templates, panel, pairs, options)
    assert len(records) == len(pairs)
    return seconds


def raw_inputs(engine: Any, requests: Sequence[Any]) -> list[tuple[list[int], list[int]]]:
    from labeler.engine.chat import choice_inputs

    return choice_inputs(engine.tokenizer, requests, ["A", "B"])


def raw_vllm(engine: Any, inputs: Sequence[tuple[list[int], list[int]]]) -> float:
    """The same prompts straight into vLLM, one call, nothing of labeler around it."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    prompts = [TokensPrompt(prompt_token_ids=ids) for ids, _ in inputs]
    sampling = [SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=c, detokenize=False) for _, c in inputs]
    reset_cache(engine)
    seconds, outputs = timed(lambda: engine._llm.generate(prompts, sampling, use_tqdm=False))
    assert len(outputs) == len(inputs)
    return seconds


def transformers_loop(model_path: Path, inputs: Sequence[tuple[list[int], list[int]]], dtype: str) -> float:
    """One prompt per forward pass, last position's log-softmax, the two letters read off."""
    import os

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).eval()
    with torch.inference_mode():
        model(torch.tensor([inputs[0][0]]), logits_to_keep=1)  # warm-up
        t0 = time.perf_counter()
        for ids, choice_ids in inputs:
            logits = model(torch.tensor([ids]), logits_to_keep=1).logits[0, -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            _ = [float(logprobs[c]) for c in choice_ids]
        return time.perf_counter() - t0


def salmon_seconds(engine: Any, templates: Any, pairs: Sequence[Any]) -> tuple[float, float]:
    """Time to score the pairs under salmon.yaml's 12 principles, and under its first one alone."""
    from labeler.inputs.constitution import load_constitution
    from labeler.stages.judge import JudgeOptions, panel_for

    constitution = load_constitution(REPO / "constitutions" / "salmon.yaml")
    one = constitution.model_copy(update={"principles": constitution.principles[:1]})
    options = JudgeOptions(salmon=True)
    many_panel = panel_for(constitution, options, "salmon.yaml")
    one_panel = panel_for(one, options, "salmon.yaml")
    assert len(many_panel.salmon) == 12 and len(one_panel.salmon) == 1
    t_one = label_path(engine, templates, one_panel, pairs, options)
    t_many = label_path(engine, templates, many_panel, pairs, options)
    return t_many, t_one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=128, help="Most tokens per policy sample.")
    parser.add_argument("--pairs-per-prompt", type=int, default=2, help="Pairs per sample prompt (12 prompts).")
    parser.add_argument("--salmon-pairs", type=int, default=8, help="Pairs scored in the SALMON comparison.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating rounds of label path and raw engine.")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    parser.add_argument("--kv-block-size", type=int, default=None, help="vLLM KV-cache block (default: labeler's).")
    args = parser.parse_args()

    from labeler.engine import EngineConfig, open_engine
    from labeler.engine.dtype import resolve_dtype
    from labeler.engine.model_ref import resolve_model
    from labeler.inputs.constitution import load_constitution
    from labeler.inputs.templates import Templates
    from labeler.stages.judge import JudgeOptions, judge_pairs, panel_for

    templates = Templates.load()
    options = JudgeOptions()
    panel = panel_for(load_constitution(REPO / "constitutions" / "helpful-honest.yaml"), options, "helpful-honest")
    config = EngineConfig(name="vllm", dtype=args.dtype, kv_block_size=args.kv_block_size)  # type: ignore[arg-type]

    with open_engine(config) as engine:
        pairs = make_pairs(engine, args.max_tokens, args.pairs_per_prompt)
        recorder = RecordingEngine(engine)
        judge_pairs(recorder, templates, panel, pairs, options)  # warm-up, and the prompts it scores
        inputs = raw_inputs(engine, recorder.requests)
        tokens = sum(len(ids) for ids, _ in inputs)
        print(f"{len(pairs)} pairs, {len(inputs)} prompts, {tokens / len(inputs):.0f} tokens per prompt", flush=True)
        label_s, raw_s = [], []
        for round_index in range(args.rounds):
            label_s.append(label_path(engine, templates, panel, pairs, options))
            raw_s.append(raw_vllm(engine, inputs))
            print(f"round {round_index + 1}: label path {len(pairs) / label_s[-1]:.2f} pairs/s, "
                  f"raw vLLM {len(pairs) / raw_s[-1]:.2f} pairs/s", flush=True)
        salmon_pairs = pairs[: args.salmon_pairs]
        cached_many, cached_one = salmon_seconds(engine, templates, salmon_pairs)
    print(f"salmon, prefix cache on: 12 principles {cached_many:.1f} s, 1 principle {cached_one:.1f} s", flush=True)

    with open_engine(config.model_copy(update={"enable_prefix_caching": False})) as engine:
        judge_pairs(engine, templates, panel, pairs[:2], options)  # warm-up
        uncached_many, uncached_one = salmon_seconds(engine, templates, salmon_pairs)
    print(f"salmon, prefix cache off: 12 principles {uncached_many:.1f} s, 1 principle {uncached_one:.1f} s",
          flush=True)

    hf_s = transformers_loop(resolve_model("default").folder(), inputs, resolve_dtype(args.dtype))
    label_rate, raw_rate, hf_rate = (len(pairs) / min(label_s), len(pairs) / min(raw_s), len(pairs) / hf_s)
    print(f"\njudged pairs/s: label path {label_rate:.2f}, raw vLLM {raw_rate:.2f}, transformers loop {hf_rate:.2f}")
    print(f"label path / raw vLLM:          {label_rate / raw_rate:.2f}x  (target >= 0.9)")
    print(f"label path / transformers loop: {label_rate / hf_rate:.2f}x  (target >= 5)")
    print(f"salmon 12 principles / 1:       {cached_many / cached_one:.2f}x  (target <= 3; "
          f"{uncached_many / uncached_one:.2f}x without the prefix cache)")
    print(f"prefix-cache gain on salmon-12: {uncached_many / cached_many:.2f}x")


if __name__ == "__main__":
    main()
