"""`labeler label`: build or read response pairs, judge them A/B in both orders → preference split."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from labeler.card import write_card
from labeler.constitution import load_constitution
from labeler.engine import Engine, EngineConfig, GenerationParams
from labeler.errors import InputError
from labeler.progress import progress_bar
from labeler.stages.common import WorkSelection, engine_for, fingerprint_config, model_label
from labeler.stages.judge import JudgeOptions, judge_pairs, panel_for
from labeler.stages.pairs import Pair, PairCounts, pairs_from_file, pairs_from_prompts, pairs_from_revise_run
from labeler.store import RunStore, in_part, make_fingerprint
from labeler.templates import Templates

JUDGE_TEMPLATES = ("judge", "judge_answer", "judge_cot", "judge_cot_answer", "salmon")


class LabelConfig(BaseModel):
    """Options of `labeler label`. Exactly one pair source: prompts, pairs or pairs_from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    constitution: Path = Field(description="Constitution file (judge questions; definitions for SALMON).")
    out: Path = Field(description="Run folder; the preference split goes to OUT/preferences.")
    prompts: Path | None = Field(None, description="Prompts: two policy samples per prompt form a pair.")
    pairs: Path | None = Field(None, description="File of `prompt` (or `messages`), `response_a`, `response_b`.")
    pairs_from: Path | None = Field(None, description="A revise run: its initial response vs final revision.")
    judge: EngineConfig = Field(default_factory=EngineConfig, description="The judge model and engine.")
    policy: EngineConfig | None = Field(None, description="Policy for --prompts (default: the judge model).")
    pair_sampling: GenerationParams = Field(
        default_factory=lambda: GenerationParams(n=2, temperature=1.0, top_p=0.95, max_tokens=160),
        description="How the policy samples the two responses of a pair.",
    )
    options: JudgeOptions = Field(default_factory=JudgeOptions, description="How pairs are judged.")
    templates: Path | None = Field(None, description="Folder of templates overriding the shipped ones.")
    work: WorkSelection = Field(default_factory=WorkSelection, description="Which rows, batching, resuming.")

    @model_validator(mode="after")
    def _one_source(self) -> LabelConfig:
        given = [name for name in ("prompts", "pairs", "pairs_from") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of --prompts, --pairs, --pairs-from (got {given or 'none'})")
        if self.pair_sampling.temperature <= 0:
            raise ValueError("pair_sampling.temperature must be > 0, or both samples would be the same")
        return self


@dataclass
class LabelResult:
    out: Path
    written: int = 0
    already_done: int = 0
    counts: PairCounts = field(default_factory=PairCounts)


def label(config: LabelConfig, judge: Engine | None = None, policy: Engine | None = None) -> LabelResult:
    """Judge every pair in both orders and write the preference split of `config.out`."""
    constitution = load_constitution(config.constitution)
    panel = panel_for(constitution, config.options, str(config.constitution))
    templates = Templates.load(config.templates)
    result = LabelResult(config.out)
    total = _count_inputs(config)  # reads every row once: bad input fails before a model loads
    with engine_for(config.judge, judge) as judge_engine:
        policy_cm = _policy_engine(config, judge_engine, policy)
        with policy_cm as policy_engine:
            models = {"judge": model_label(judge_engine)}
            if policy_engine is not None:
                models["policy"] = model_label(policy_engine)
            shas = templates.sha256()
            fingerprint = make_fingerprint(
                config=fingerprint_config(config, {"judge": judge_engine, "policy": policy_engine}),
                models=models,
                constitution_sha256=constitution.sha256(),
                template_sha256s={k: v for k, v in shas.items() if k in JUDGE_TEMPLATES},
                seed=config.options.seed,
            )
            store = RunStore.open(
                config.out, "preferences", fingerprint, overwrite=config.work.overwrite, part=config.work.part
            )
            done = store.done_ids()
            result.already_done = len(done)
            with progress_bar(total, "judging", unit="pairs", quiet=config.work.quiet or None) as advance:
                for batch in _batches(_pairs(config, policy_engine, result.counts), config.work.batch_size):
                    todo = [p for p in batch if p.id not in done]
                    records = judge_pairs(judge_engine, templates, panel, todo, config.options)
                    store.write_shard(records)
                    result.written += len(records)
                    advance(len(batch))
            store.mark_complete(
                {"rows": result.written + result.already_done, "identical_dropped": result.counts.identical_dropped}
            )
    write_card(config.out)
    return result


class _NoEngine:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _policy_engine(config: LabelConfig, judge: Engine, policy: Engine | None):  # type: ignore[no-untyped-def]
    """The engine that samples pairs: none unless --prompts; the judge itself when the models match."""
    if config.prompts is None:
        return _NoEngine()
    if policy is not None or config.policy is None or config.policy == config.judge:
        return engine_for(config.judge, policy or judge)
    return engine_for(config.policy, None)


def _pairs(config: LabelConfig, policy: Engine | None, counts: PairCounts) -> Iterator[Pair]:
    part = config.work.part
    if config.pairs is not None:
        pairs: Iterator[Pair] = islice(pairs_from_file(config.pairs), config.work.limit)
    elif config.pairs_from is not None:
        pairs = islice(pairs_from_revise_run(config.pairs_from, counts), config.work.limit)
    else:
        assert config.prompts is not None and policy is not None
        # Split by prompt before sampling: each task of a job array samples only its own prompts.
        yield from pairs_from_prompts(
            config.prompts, policy, config.pair_sampling, config.options.seed, config.work.batch_size, counts,
            limit=config.work.limit, part=part,
        )
        return
    for pair in pairs:
        if part is None or in_part(pair.id, *part):
            yield pair


def _batches(pairs: Iterator[Pair], size: int) -> Iterator[Sequence[Pair]]:
    batch: list[Pair] = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _count_inputs(config: LabelConfig) -> int | None:
    """Validate every input row and count them (for the progress bar), capped by --limit."""
    from labeler.inputs import read_prompts
    from labeler.store import load_manifest

    if config.pairs_from is not None:
        entry = load_manifest(config.pairs_from).splits.get("sft")
        if entry is None:
            raise InputError("the run has no sft split to take pairs from (run `labeler revise` first)",
                             file=config.pairs_from)
        n = sum(s.rows for s in entry.shards)
    elif config.pairs is not None:
        n = sum(1 for _ in pairs_from_file(config.pairs))
    else:
        assert config.prompts is not None
        n = sum(1 for _ in read_prompts(config.prompts))
    return n if config.work.limit is None else min(n, config.work.limit)
