"""`make demo`: the main job end to end on the embedded model."""

from __future__ import annotations

import sys
from pathlib import Path

from labeler.engine import EngineConfig, GenerationParams
from labeler.generate import GenerateConfig, answer_prompts

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    for engine in ("vllm", "hf"):
        print(f"== answering sample prompts with the {engine} engine ==", flush=True)
        config = GenerateConfig(
            prompts=REPO / "data/sample_prompts.jsonl",
            engine=EngineConfig(name=engine),
            sampling=GenerationParams(temperature=0.0, max_tokens=48),
            limit=3,
        )
        for answer in answer_prompts(config):
            print(f"[{answer.prompt.id}] {answer.prompt.messages[-1].content}\n  -> {answer.text.strip()}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
