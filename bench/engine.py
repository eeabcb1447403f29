"""Throughput of the two engines on the embedded model: generation and A/B choice scoring.

Same model (the embedded SmolLM2-135M-Instruct, in `--dtype auto`: float32 on CPUs without native
bfloat16), same inputs for both engines, both cores:

- generation: the shipped sample prompts, several seeded samples each, `--max-tokens` new tokens at
  most (temperature 0.7); throughput is generated tokens per second of the `generate` call;
- judgments: the judge prompts of `labeler label` (judge template, both orders of every shipped
  human pair, the "The better response is (" opening) scored for the two letters in one
  `choice_logprobs` call; throughput is scored prompts per second.

Each engine is opened once, warmed up on a small call, then timed; the engines run one after the
other (never at the same time). Start-up time is reported but not part of the throughput.

    .venv/bin/python bench/engine.py

Prints each figure and the ratios vLLM / transformers. The machine is shared and noisy: compare
ratios from one run, never absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def judge_requests(repeat: int) -> list:
    """The label stage's judge prompts for the shipped human pairs, both orders, `repeat` times."""
    from labeler.engine import ChoiceRequest, Message
    from labeler.inputs.constitution import load_constitution
    from labeler.inputs.rows import iter_rows, row_messages
    from labeler.inputs.templates import Templates

    templates = Templates.load()
    question = load_constitution(REPO / "constitutions" / "helpful-honest.yaml").for_stage("judge")[0].judge or ""
    requests = []
    for round_index in range(repeat):
        for row in iter_rows(REPO / "data" / "human_pairs.jsonl"):
            messages = row_messages(row)
            # A different question per round so repeated pairs are new prompts, not cache hits.
            asked = f"{question} (round {round_index + 1})"
            chosen, rejected = row.data["chosen"], row.data["rejected"]
            for first, second in ((chosen, rejected), (rejected, chosen)):
                text = templates.judge(messages, first, second, asked)
                requests.append(ChoiceRequest((Message(role="user", content=text),), templates.judge_answer()))
    return requests


def conversations(samples: int) -> list:
    from labeler.engine import Message
    from labeler.inputs.rows import read_prompts

    prompts = list(read_prompts(REPO / "data" / "sample_prompts.jsonl"))
    return [[Message(role="user", content=p.messages[-1].content)] for p in prompts for _ in range(samples)]


def measure(name: str, args: argparse.Namespace) -> dict[str, float]:
    from labeler.engine import GenerationParams, load_engine

    started = time.perf_counter()
    with load_engine(name, None, dtype=args.dtype) as engine:
        startup = time.perf_counter() - started
        convs = conversations(args.samples)
        requests = judge_requests(args.repeat)
        params = GenerationParams(temperature=0.7, top_p=0.95, max_tokens=args.max_tokens)
        # Warm-up: first calls allocate buffers and (vLLM) profile; not part of the figures.
        engine.generate(convs[:2], params.model_copy(update={"max_tokens": 8}), seeds=[1, 2])
        engine.choice_logprobs(requests[:2], ["A", "B"])

        seeds = list(range(len(convs)))
        t0 = time.perf_counter()
        generations = engine.generate(convs, params, seeds)
        gen_s = time.perf_counter() - t0
        tokens = sum(sum(g.token_counts) for g in generations)

        t0 = time.perf_counter()
        scores = engine.choice_logprobs(requests, ["A", "B"])
        judge_s = time.perf_counter() - t0
        assert len(scores) == len(requests)
    figures = {
        "startup_s": startup,
        "gen_tokens": tokens,
        "gen_tok_per_s": tokens / gen_s,
        "judgments": len(requests),
        "judgments_per_s": len(requests) / judge_s,
    }
    print(
        f"{name:5s} start {startup:6.1f} s | generation {tokens} tokens in {gen_s:6.1f} s = "
        f"{figures['gen_tok_per_s']:7.1f} tok/s | {len(requests)} judgments in {judge_s:6.1f} s = "
        f"{figures['judgments_per_s']:6.2f} judgments/s",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4, help="Samples per sample prompt (12 prompts).")
    parser.add_argument("--max-tokens", type=int, default=128, help="Most new tokens per sample.")
    parser.add_argument("--repeat", type=int, default=2, help="Rounds over the 24 human pairs (x2 orders).")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    args = parser.parse_args()

    hf = measure("hf", args)
    vllm = measure("vllm", args)
    print(f"ratio vLLM / transformers: generation {vllm['gen_tok_per_s'] / hf['gen_tok_per_s']:.2f}x, "
          f"judgments {vllm['judgments_per_s'] / hf['judgments_per_s']:.2f}x")


if __name__ == "__main__":
    main()
