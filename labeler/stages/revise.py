"""Critique-and-revise (Constitutional AI, supervised stage) → the SFT split.

For each prompt: an initial response (given in the input, or sampled), then for each round a principle
sampled by (run seed, prompt id, round), a critique request → critique, a revision request → revision.
The model sees the exchange so far, after the constitution's few-shot demonstrations. Each step is
one batched engine call for the whole batch of prompts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from labeler.core.batching import batches
from labeler.core.errors import InputError
from labeler.core.outputs import check_outputs
from labeler.core.progress import progress_bar
from labeler.core.records import SOURCE_PROMPTS_FILE, RevisionRound, SFTRecord, prompt_text, source_label
from labeler.core.sampling import rng_for, seed_for, weighted_sample
from labeler.engine import Engine, EngineConfig, GenerationParams, Message, engine_model
from labeler.engine.model_ref import ModelRef
from labeler.inputs.constitution import Principle, load_constitution
from labeler.inputs.rows import Prompt, read_prompts
from labeler.inputs.templates import Templates
from labeler.stages.common import WorkSelection, engine_for, fingerprint_config, model_label
from labeler.store import Fingerprint, RunStore, check_run, in_part, make_fingerprint

# The sampling of a revise run unless told otherwise, on the command line and in a run config alike.
REVISE_SAMPLING = GenerationParams(temperature=0.7, top_p=0.95, max_tokens=160)


class ReviseConfig(BaseModel):
    """Options of `labeler revise`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    constitution: Path = Field(description="Constitution file (its critique and revision requests are used).")
    prompts: Path = Field(description="JSONL/Parquet/Arrow with `prompt` or `messages`, optional `id`, `response`.")
    out: Path = Field(description="Run folder; the SFT split goes to OUT/sft.")
    rounds: int = Field(2, ge=1, le=16, description="Critique-and-revise rounds per prompt.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Model and engine.")
    sampling: GenerationParams = Field(
        default=REVISE_SAMPLING,
        description="Sampling for responses, critiques and revisions (seeds come from the run seed).",
    )
    seed: int = Field(0, description="Run seed: principles and samples derive from it and the prompt id.")
    templates: Path | None = Field(None, description="Folder of templates overriding the shipped ones.")
    work: WorkSelection = Field(default_factory=WorkSelection, description="Which rows, batching, resuming.")


@dataclass
class ReviseResult:
    out: Path
    written: int = 0
    already_done: int = 0
    skipped_too_long: list[str] = field(default_factory=list)
    empty_outputs: int = 0


@dataclass
class _Work:
    """One prompt going through the loop."""

    prompt: Prompt
    exchange: list[Message]  # few-shot demos + prompt + every turn so far
    initial: str = ""
    current: str = ""
    rounds: list[RevisionRound] = field(default_factory=list)


@dataclass(frozen=True)
class RevisePlan:
    """What the checks of a revise run found, before any model loads."""

    principles: tuple[Principle, ...]
    templates: Templates
    demos: list[Message]  # the constitution's few-shot conversations, flattened
    model: ModelRef
    total: int  # prompts this process takes
    fingerprint: Fingerprint


def check_revise(config: ReviseConfig, engine: Engine | None = None) -> RevisePlan:
    """Every check of a revise run that needs no model: constitution, templates, every prompt row, the model
    argument and the output folder (an existing run must have the same fingerprint)."""
    constitution = load_constitution(config.constitution)
    principles = constitution.for_stage("revise")
    if not principles:
        raise InputError(
            "no principle has both critique and revision texts, which critique-and-revise needs",
            file=config.constitution,
        )
    templates = Templates.load(config.templates)
    if not any(True for _ in read_prompts(config.prompts)):
        raise InputError("no prompts in the file", file=config.prompts, field="prompts")
    total = sum(1 for _ in _selected(config))  # reads every row once: a bad row fails here
    model = engine_model(config.engine, field="engine.model")
    fingerprint = make_fingerprint(
        config=fingerprint_config(config),
        models={"policy": model_label(engine, model)},
        constitution_sha256=constitution.sha256(),
        constitution=constitution.summary(),
        template_sha256s={k: v for k, v in templates.sha256().items() if k in ("critique", "revision")},
        seed=config.seed,
    )
    check_outputs(config.out, "run", {"constitution": config.constitution, "prompts": config.prompts,
                                      "templates": config.templates, "engine.model": config.engine.model})
    check_run(config.out, "sft", fingerprint, overwrite=config.work.overwrite, part=config.work.part)
    demos = [m for conversation in constitution.few_shot for m in conversation]
    return RevisePlan(principles, templates, demos, model, total, fingerprint)


def revise(config: ReviseConfig, engine: Engine | None = None) -> ReviseResult:
    """Run the critique-and-revise loop over the prompts and write the SFT split of `config.out`."""
    plan = check_revise(config, engine)
    principles, templates, demos = plan.principles, plan.templates, plan.demos
    result = ReviseResult(config.out)
    # Opened before the model: a run made with other settings is refused before anything loads.
    store = RunStore.open(config.out, "sft", plan.fingerprint, overwrite=config.work.overwrite, part=config.work.part)
    done = store.done_ids()
    result.already_done = len(done)
    with engine_for(config.engine, engine, plan.model) as engine:
        budget: int | None = None  # computed at the first batch, so a finished run loads no model
        with progress_bar(plan.total, "revising", unit="prompts", completed=len(done),
                          quiet=config.work.quiet or None) as advance:
            # Prompts stream through in batches: memory does not grow with the size of the input.
            todo = (p for p in _selected(config) if p.id not in done)
            for batch in batches(todo, config.work.batch_size):
                if budget is None:
                    budget = _token_budget(engine, templates, principles, config)
                lengths = engine.prompt_lengths([demos + list(p.messages) for p in batch])
                fits = []
                for prompt, length in zip(batch, lengths):
                    if length + budget > engine.max_model_len:
                        result.skipped_too_long.append(prompt.id)
                    else:
                        fits.append(prompt)
                records = _revise_batch(engine, templates, principles, demos, fits, config, result)
                store.write_shard(records)
                result.written += len(records)
                advance(len(batch))
    store.mark_complete(
        {
            "rows": result.written + result.already_done,
            "skipped_too_long": len(result.skipped_too_long),
            "empty_outputs": result.empty_outputs,
        }
    )
    return result


def _selected(config: ReviseConfig) -> Iterator[Prompt]:
    prompts = read_prompts(config.prompts)
    if config.work.limit is not None:
        prompts = islice(prompts, config.work.limit)
    part = config.work.part
    for prompt in prompts:
        if part is None or in_part(prompt.id, *part):
            yield prompt


def _token_budget(engine: Engine, templates: Templates, principles: Sequence[Principle], config: ReviseConfig) -> int:
    """Tokens a prompt's exchange may grow by: every generated turn plus the longest requests."""
    requests = [
        [Message(role="user", content=templates.critique(p)), Message(role="user", content=templates.revision(p))]
        for p in principles
    ]
    longest = max(engine.prompt_lengths(requests))
    generated = (1 + 2 * config.rounds) * config.sampling.max_tokens
    return generated + config.rounds * longest


def _revise_batch(
    engine: Engine,
    templates: Templates,
    principles: Sequence[Principle],
    demos: list[Message],
    prompts: Sequence[Prompt],
    config: ReviseConfig,
    result: ReviseResult,
) -> list[SFTRecord]:
    if not prompts:
        return []
    work = [_Work(p, demos + list(p.messages)) for p in prompts]
    sampling = config.sampling.model_copy(update={"n": 1})

    def generate(items: Sequence[_Work], purpose: str) -> list[str]:
        seeds = [seed_for(config.seed, w.prompt.id, purpose) for w in items]
        texts = [g.texts[0].strip() for g in engine.generate([w.exchange for w in items], sampling, seeds)]
        result.empty_outputs += sum(not t for t in texts)
        return texts

    # Initial responses: given ones are kept, the rest sampled in one call.
    missing = [w for w in work if w.prompt.response is None]
    for w, text in zip(missing, generate(missing, "initial")):
        w.initial = text
    for w in work:
        if w.prompt.response is not None:
            w.initial = w.prompt.response
        w.current = w.initial
        w.exchange.append(Message(role="assistant", content=w.initial))

    for round_index in range(config.rounds):
        chosen = [
            weighted_sample(
                principles, [p.weight for p in principles], 1, rng_for(config.seed, w.prompt.id, "round", round_index)
            )[0]
            for w in work
        ]
        for w, principle in zip(work, chosen):
            w.exchange.append(Message(role="user", content=templates.critique(principle)))
        critiques = generate(work, f"critique-{round_index}")
        for w, principle, critique in zip(work, chosen, critiques):
            w.exchange.append(Message(role="assistant", content=critique))
            w.exchange.append(Message(role="user", content=templates.revision(principle)))
        revisions = generate(work, f"revision-{round_index}")
        for w, principle, critique, revision in zip(work, chosen, critiques, revisions):
            # An empty revision would erase the answer: keep the previous one instead.
            text = revision or w.current
            w.exchange.append(Message(role="assistant", content=text))
            w.rounds.append(RevisionRound(principle_id=principle.id, critique=critique, revision=text))
            w.current = text

    model = engine.model_id
    source = source_label(SOURCE_PROMPTS_FILE, config.prompts)
    return [
        SFTRecord(
            id=w.prompt.id,
            source_id=w.prompt.source_id,
            prompt=prompt_text(w.prompt.messages),
            prompt_messages=w.prompt.messages,
            initial=w.initial,
            revision=w.current,
            rounds=tuple(w.rounds),
            messages=(*w.prompt.messages, Message(role="assistant", content=w.current)),
            model=model,
            source=source,
        )
        for w in work
    ]
