"""K responses per prompt judged as a tournament: what the prefix cache saves, and what a budget saves.

Responses: K policy samples per shipped sample prompt (up to `--max-tokens` tokens each, seeded, identical
ones dropped), generated once by the same vLLM engine before anything is timed. Every pair of a prompt's
responses is judged in both orders under one principle (the default `--principles sample:1`). Figures, in
seconds per prompt:

- ranked: `judge_rankings` (what `label --responses K --comparisons all` runs): a prompt's requests sent
  together, by the response shown first, with vLLM's prefix cache on;
- independent rows, cache off: the very same pairs as two-response rows in a shuffled order (a pairs file
  cut by hand), judged by an engine without the prefix cache: every request computed in full;
  target: ranked >= 1.5x faster;
- independent rows, cache on: the same shuffled rows with the cache on (what `label --pairs` of such a file
  costs today: the cache still finds much of what the rows share within a batch);
- budget: `--comparisons K-1` (the ring of neighbours) against all K(K-1)/2 pairs: its time, and how often
  it finds the same best and worst response as judging every pair.

The prefix cache is emptied before every timed call. The timed paths alternate for `--rounds` rounds; the
best round of each is reported. The machine is shared and noisy: compare the ratios of one run only.

    .venv/bin/python bench/listwise.py                 # 12 prompts, K = 4
    .venv/bin/python bench/listwise.py --smoke         # every path once on tiny sizes (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def response_sets(engine: Any, k: int, max_tokens: int, prompts: int) -> list[Any]:
    """K seeded samples per sample prompt, as `label --prompts --responses K` makes them."""
    from labeler.engine import GenerationParams
    from labeler.stages.pairs import PairCounts
    from labeler.stages.rankings import response_sets_from_prompts

    sampling = GenerationParams(temperature=1.0, top_p=0.95, max_tokens=max_tokens)
    found = response_sets_from_prompts(REPO / "data" / "sample_prompts.jsonl", engine, sampling, k, seed=0,
                                       batch_size=64, counts=PairCounts(), limit=prompts)
    return list(found)


def reset_cache(engine: Any) -> None:
    engine._llm.reset_prefix_cache()  # the vLLM `LLM` under labeler's engine


def timed(engine: Any, function: Callable[[], Any]) -> tuple[float, Any]:
    reset_cache(engine)
    t0 = time.perf_counter()
    result = function()
    return time.perf_counter() - t0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=4, help="K: responses per prompt.")
    parser.add_argument("--prompts", type=int, default=12, help="Sample prompts ranked (the file holds 12).")
    parser.add_argument("--max-tokens", type=int, default=96, help="Most tokens per policy sample.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating rounds of the timed paths.")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    parser.add_argument("--smoke", action="store_true", help="K = 3, 2 prompts, 8 tokens, one round.")
    parser.add_argument("--out", type=Path, default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args()
    if args.smoke:
        args.responses, args.prompts, args.max_tokens, args.rounds = 3, 2, 8, 1

    from labeler.engine import EngineConfig, open_engine
    from labeler.inputs.constitution import load_constitution
    from labeler.inputs.templates import Templates
    from labeler.stages.judge import JudgeOptions, judge_pairs, panel_for
    from labeler.stages.rankings import judge_rankings, pairs_of

    templates = Templates.load()
    options = JudgeOptions()
    panel = panel_for(load_constitution(REPO / "constitutions" / "helpful-honest.yaml"), options, "helpful-honest")
    config = EngineConfig(name="vllm", dtype=args.dtype)  # type: ignore[arg-type]
    k, budget = args.responses, args.responses - 1

    def ranked(engine: Any, design: int | None) -> Callable[[], Any]:
        return lambda: judge_rankings(engine, templates, panel, sets, options, design)

    def rows(engine: Any) -> Callable[[], Any]:
        return lambda: judge_pairs(engine, templates, panel, shuffled, options)

    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    with open_engine(config) as engine:
        sets = response_sets(engine, k, args.max_tokens, args.prompts)
        shuffled = [pair for found in sets for _, _, pair in pairs_of(found, None)]
        random.Random(0).shuffle(shuffled)
        print(f"{len(sets)} prompts, {sum(len(s.responses) for s in sets) / len(sets):.2f} responses each, "
              f"{len(shuffled)} pairs ({2 * len(shuffled)} judge prompts)", flush=True)
        judge_pairs(engine, templates, panel, shuffled[:2], options)  # warm-up
        for round_index in range(args.rounds):
            seconds, every = timed(engine, ranked(engine, None))
            keep("ranked", seconds)
            keep("rows_cache_on", timed(engine, rows(engine))[0])
            seconds, ring = timed(engine, ranked(engine, budget))
            keep("budget", seconds)
            print(f"round {round_index + 1}: ranked {best['ranked']:.2f} s, rows (cache on) "
                  f"{best['rows_cache_on']:.2f} s, budget {best['budget']:.2f} s", flush=True)
    with open_engine(config.model_copy(update={"enable_prefix_caching": False})) as engine:
        judge_pairs(engine, templates, panel, shuffled[:2], options)  # warm-up
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            judge_pairs(engine, templates, panel, shuffled, options)
            keep("rows_cache_off", time.perf_counter() - t0)

    n = len(sets)
    same_ends = sum(_ends(a) == _ends(b) for a, b in zip(every, ring)) / n
    figures = {
        "prompts": n,
        "responses_per_prompt": k,
        "pairs": len(shuffled),
        "seconds_per_prompt": {name: seconds / n for name, seconds in best.items()},
        "ranked_over_rows_cache_off": best["rows_cache_off"] / best["ranked"],
        "ranked_over_rows_cache_on": best["rows_cache_on"] / best["ranked"],
        "budget_over_all_time": best["budget"] / best["ranked"],
        "budget_pairs_per_prompt": budget,
        "budget_same_best_and_worst": same_ends,
    }
    per = figures["seconds_per_prompt"]
    print(f"\nseconds per prompt (K = {k}, all {k * (k - 1) // 2} pairs, both orders):")
    print(f"  ranked, prefix cache on:          {per['ranked']:.3f}")
    print(f"  independent rows, cache off:      {per['rows_cache_off']:.3f}")
    print(f"  independent rows, cache on:       {per['rows_cache_on']:.3f}")
    print(f"  budget {budget} pairs (ring), cache on: {per['budget']:.3f}")
    print(f"ranked / independent rows (cache off): {figures['ranked_over_rows_cache_off']:.2f}x faster (target >= 1.5)")
    print(f"ranked / independent rows (cache on):  {figures['ranked_over_rows_cache_on']:.2f}x faster")
    print(f"budget / all: {figures['budget_over_all_time']:.2f}x the time; same best and worst on "
          f"{same_ends:.0%} of prompts")
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


def _ends(ranking: Any) -> tuple[int, int]:
    scores: Sequence[float] = ranking.scores
    return max(range(len(scores)), key=scores.__getitem__), min(range(len(scores)), key=scores.__getitem__)


if __name__ == "__main__":
    main()
