"""Throughput of critique-and-revise (`labeler revise` through the vLLM engine) against the raw engine.

The revise stage generates in dependent steps (initial responses, then per round a critique and a
revision), one batched engine call per step, and writes the SFT split. The baseline is the same
work without the dependencies: every sequence revise generated (the same rendered conversations,
the same number of new tokens each, forced with min_tokens and ignore_eos) handed to vLLM's
`LLM.generate` in ONE call. Target: revise >= 0.85x of the raw engine's generated tokens per second.

Prompts: the shipped sample prompts, repeated `--copies` times under distinct ids. The prefix cache
is emptied before each timed part.

    .venv/bin/python bench/revise.py

The machine is shared and noisy: compare the ratios of one run, never absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class CountingEngine:
    """Passes every call to an engine and keeps each generated sequence's conversation and length."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.name, self.model_id, self.max_model_len = engine.name, engine.model_id, engine.max_model_len
        self.sequences: list[tuple[list[Any], int]] = []  # (conversation, generated tokens)
        self.calls = 0

    def prompt_lengths(self, conversations: Sequence[Any]) -> list[int]:
        return self.engine.prompt_lengths(conversations)

    def generate(self, conversations: Sequence[Any], params: Any, seeds: Sequence[int] | None = None) -> list[Any]:
        generations = self.engine.generate(conversations, params, seeds)
        self.calls += 1
        for conversation, generation in zip(conversations, generations):
            self.sequences += [(list(conversation), count) for count in generation.token_counts]
        return generations

    def choice_logprobs(self, requests: Sequence[Any], choices: Sequence[str]) -> list[Any]:
        return self.engine.choice_logprobs(requests, choices)

    def __enter__(self) -> CountingEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def write_prompts(folder: Path, copies: int) -> Path:
    rows = [json.loads(line) for line in (REPO / "data" / "sample_prompts.jsonl").read_text().splitlines() if line]
    path = folder / "prompts.jsonl"
    with open(path, "w") as f:
        for copy in range(copies):
            for row in rows:
                f.write(json.dumps({**row, "id": f"{row['id']}-{copy}"}) + "\n")
    return path


def raw_generate(engine: Any, sequences: Sequence[tuple[list[Any], int]], temperature: float) -> float:
    """The same conversations and token counts as one vLLM call; returns its seconds."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from labeler.engine.chat import chat_text, encode_texts

    texts = [chat_text(engine.tokenizer, conversation) for conversation, _ in sequences]
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in encode_texts(engine.tokenizer, texts)]
    sampling = [
        SamplingParams(temperature=temperature, top_p=0.95, max_tokens=max(1, n), min_tokens=max(1, n),
                       ignore_eos=True, seed=i)
        for i, (_, n) in enumerate(sequences)
    ]
    engine._llm.reset_prefix_cache()
    t0 = time.perf_counter()
    outputs = engine._llm.generate(prompts, sampling, use_tqdm=False)
    seconds = time.perf_counter() - t0
    produced = sum(len(o.outputs[0].token_ids) for o in outputs)
    assert produced == sum(max(1, n) for _, n in sequences), produced
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=2, help="Times the 12 sample prompts are repeated.")
    parser.add_argument("--rounds", type=int, default=1, help="Critique-and-revise rounds.")
    parser.add_argument("--max-tokens", type=int, default=96, help="Most new tokens per generated turn.")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    args = parser.parse_args()

    from labeler.engine import EngineConfig, GenerationParams, Message, open_engine
    from labeler.stages.common import WorkSelection
    from labeler.stages.revise import ReviseConfig, revise

    temperature = 0.7
    with tempfile.TemporaryDirectory() as tmp, open_engine(EngineConfig(name="vllm", dtype=args.dtype)) as engine:  # type: ignore[arg-type]
        prompts = write_prompts(Path(tmp), args.copies)
        engine.generate([[Message(role="user", content="Hello!")]], GenerationParams(max_tokens=8))  # warm-up
        config = ReviseConfig(
            constitution=REPO / "constitutions" / "harmless.yaml",
            prompts=prompts,
            out=Path(tmp) / "run",
            rounds=args.rounds,
            sampling=GenerationParams(temperature=temperature, top_p=0.95, max_tokens=args.max_tokens),
            work=WorkSelection(quiet=True),
        )
        counter = CountingEngine(engine)
        engine._llm.reset_prefix_cache()
        t0 = time.perf_counter()
        result = revise(config, engine=counter)  # type: ignore[arg-type]
        revise_s = time.perf_counter() - t0
        tokens = sum(n for _, n in counter.sequences)
        raw_s = raw_generate(engine, counter.sequences, temperature)

    n = result.written
    print(f"revise: {n} prompts, {args.rounds} round(s), {counter.calls} engine calls, {len(counter.sequences)} "
          f"sequences, {tokens} tokens in {revise_s:.1f} s = {n / revise_s:.2f} prompts/s, "
          f"{tokens / revise_s:.1f} tok/s")
    print(f"raw vLLM, one call, same sequences and token counts: {raw_s:.1f} s = {tokens / raw_s:.1f} tok/s")
    print(f"revise / raw: {raw_s / revise_s:.2f}x  (target >= 0.85)")


if __name__ == "__main__":
    main()
