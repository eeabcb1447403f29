"""Answer prompts with a model: the smallest end-to-end use of an engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from labeler.core.errors import InputError
from labeler.core.outputs import check_outputs
from labeler.engine import EngineConfig, GenerationParams, engine_model, open_engine
from labeler.inputs.rows import Prompt, read_prompts


class GenerateConfig(BaseModel):
    """Options of `labeler generate`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompts: Path = Field(description="JSONL/Parquet/Arrow file with `prompt` or `messages` per row.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Engine and model.")
    sampling: GenerationParams = Field(
        default_factory=lambda: GenerationParams(temperature=0.0, max_tokens=128), description="Sampling."
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N prompts.")
    out: Path | None = Field(None, description="Write answers as JSONL here.")


@dataclass(frozen=True)
class Answer:
    prompt: Prompt
    text: str
    tokens: int


def answer_prompts(config: GenerateConfig) -> list[Answer]:
    """Generate one answer per prompt in one batched engine call."""
    prompts = list(islice(read_prompts(config.prompts), config.limit))
    if not prompts:
        raise InputError("no prompts in the file", file=config.prompts, field="prompts")
    model = engine_model(config.engine, field="engine.model")
    if config.out is not None:
        check_outputs(config.out, "file", {"prompts": config.prompts, "engine.model": config.engine.model})
    with open_engine(config.engine, model) as engine:
        seeds = [config.sampling.seed or 0] * len(prompts)
        generations = engine.generate([p.messages for p in prompts], config.sampling, seeds)
    answers = [Answer(p, g.texts[0], g.token_counts[0]) for p, g in zip(prompts, generations)]
    if config.out is not None:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        config.out.write_text("".join(json.dumps(row) + "\n" for row in _rows(answers)))
    return answers


def _rows(answers: list[Answer]) -> Iterator[dict[str, object]]:
    for a in answers:
        yield {"id": a.prompt.id, "prompt": a.prompt.messages[-1].content, "response": a.text, "tokens": a.tokens}
