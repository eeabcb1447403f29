"""`labeler label`: build or read response pairs, judge them A/B in both orders → preference split.

With K responses per prompt (`responses` samples, or a file of `responses` lists) the pairs of each
prompt's design are judged as a tournament, ranked by Bradley-Terry into the rankings split, and the
preference split is derived from the rankings (`labeler.stages.rankings`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labeler.core.batching import batches
from labeler.core.errors import InputError
from labeler.core.outputs import check_outputs
from labeler.core.progress import progress_bar
from labeler.core.records import PreferenceRecord, RankingRecord
from labeler.engine import Engine, EngineConfig, GenerationParams, engine_model
from labeler.engine.model_ref import ModelRef
from labeler.inputs.constitution import load_constitution
from labeler.inputs.templates import MAX_OUTPUT_CHARS, Templates
from labeler.stages.common import WorkSelection, engine_for, fingerprint_config, model_label, settled_choice_method
from labeler.stages.judge import JudgeOptions, Panel, judge_pairs, longest_requests, panel_for, position_priors
from labeler.stages.pairs import (
    Pair,
    PairCounts,
    pairs_from_file,
    pairs_from_prompts,
    pairs_from_revise_run,
    too_long_message,
)
from labeler.stages.rankings import (
    Binarization,
    ResponseSet,
    binarize,
    is_responses_file,
    judge_rankings,
    pairs_of,
    parse_budget,
    response_sets_from_file,
    response_sets_from_prompts,
)
from labeler.store import Fingerprint, RunStore, check_run, in_part, iter_records, make_fingerprint

JUDGE_TEMPLATES = ("judge", "judge_answer", "judge_cot", "judge_cot_answer", "salmon")
# No tokenizer packs more characters into a token than this (SmolLM2's longest token has 81, runs of
# spaces or '#'): a pair with more characters than this many per token of the judge's context cannot
# fit it, and is refused before anything loads. Shorter ones are measured by the judge's tokenizer.
MAX_CHARS_PER_TOKEN = 100
# Characters a judge template adds around a pair, at most, within the templates' output cap.
TEMPLATE_ROOM = 100_000


# How the policy samples the two responses of a pair from a prompt unless told otherwise, on the command
# line and in a run config alike.
PAIR_SAMPLING = GenerationParams(n=2, temperature=1.0, top_p=0.95, max_tokens=160)


class LabelConfig(BaseModel):
    """Options of `labeler label`. Exactly one pair source: prompts, pairs or pairs_from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    constitution: Path = Field(description="Constitution file (judge questions; definitions for SALMON).")
    out: Path = Field(description="Run folder; the preference split goes to OUT/preferences.")
    prompts: Path | None = Field(None, description="Prompts: two policy samples per prompt form a pair.")
    pairs: Path | None = Field(None, description="File of `prompt` (or `messages`), `response_a`, `response_b`.")
    pairs_from: Path | None = Field(None, description="A revise run: its initial response vs final revision.")
    judge: EngineConfig = Field(default_factory=EngineConfig, description="The judge model and engine.")
    policy: EngineConfig | None = Field(None, description="Policy for ‹prompts› (default: the judge model).")
    pair_sampling: GenerationParams = Field(
        default=PAIR_SAMPLING,
        description="How the policy samples the two responses of a pair.",
    )
    responses: int | None = Field(
        None,
        ge=2,
        description="Sample K responses per prompt (from prompts), judge pairs of them and rank them by "
        "Bradley-Terry (the rankings split); 2 is one pair per prompt, the same as leaving it out.",
    )
    comparisons: str = Field(
        "all",
        description="Rankings: the pairs of a prompt's responses judged: 'all' (every pair, each in both orders) "
        "or N (N pairs per prompt of a round robin: neighbours first, N >= K-1 keeps every response connected).",
    )
    binarize: Binarization | None = Field(
        None,
        description="Rankings: the preference split's pairs: best-worst (the default), best-random or all-pairs "
        "(p_a from the judged pair, or from the fitted scores for a pair not judged, flagged from_scores).",
    )
    options: JudgeOptions = Field(default_factory=JudgeOptions, description="How pairs are judged.")
    templates: Path | None = Field(None, description="Folder of templates overriding the shipped ones.")
    work: WorkSelection = Field(default_factory=WorkSelection, description="Which rows, batching, resuming.")

    @model_validator(mode="after")
    def _one_source(self) -> LabelConfig:
        given = [name for name in ("prompts", "pairs", "pairs_from") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of ‹prompts›, ‹pairs›, ‹pairs_from› (got {given or 'none'})")
        if self.pair_sampling.temperature <= 0:
            raise ValueError("pair_sampling.temperature must be > 0, or both samples would be the same")
        if self.responses is not None and self.prompts is None:
            raise InputError("samples responses from prompts: give prompts, or a file of responses lists as pairs",
                             field="responses")
        budget = parse_budget(self.comparisons)
        if budget is not None and self.responses is not None and self.responses > 2 and budget < self.responses - 1:
            raise InputError(f"{budget} pairs cannot connect {self.responses} responses: give at least "
                             f"{self.responses - 1}, or 'all'", field="comparisons")
        return self

    @field_validator("comparisons")
    @classmethod
    def _comparisons(cls, value: str) -> str:
        if not re.fullmatch(r"all|[1-9][0-9]{0,5}", value):
            raise ValueError(f"expected 'all' or a number of pairs per prompt (at least 1), got {value!r}")
        return value


@dataclass
class LabelResult:
    out: Path
    written: int = 0
    already_done: int = 0
    counts: PairCounts = field(default_factory=PairCounts)
    skipped_too_long: list[str] = field(default_factory=list)  # ids of pairs longer than the judge's context
    ranked: bool = False  # K responses per prompt were ranked (rankings split) and binarized
    rankings_written: int = 0  # rankings: prompts ranked by this run (`written` counts preference rows)


@dataclass(frozen=True)
class LabelPlan:
    """What the checks of a label run found, before any model loads."""

    panel: Panel
    templates: Templates
    judge: ModelRef
    policy: ModelRef | None  # the model that samples pairs from prompts, when it is not the judge
    total: int | None  # pairs (or prompts) this run reads
    fingerprint: Fingerprint
    judge_engine: EngineConfig  # the judge's config, an openai judge's choice method settled
    ranking_fingerprint: Fingerprint | None = None  # the rankings split's, when the run ranks K responses


def ranks(config: LabelConfig) -> bool:
    """Whether a label run ranks K responses per prompt (rankings split) rather than judging pairs."""
    if config.responses is not None:
        return config.responses > 2
    return config.pairs is not None and is_responses_file(config.pairs)


RANKING_FIELDS = ("responses", "comparisons", "binarize")


def check_label(
    config: LabelConfig,
    judge: Engine | None = None,
    policy: Engine | None = None,
    *,
    inputs_ready: bool = True,
    policy_model: ModelRef | None = None,
) -> LabelPlan:
    """Every check of a label run that needs no model: constitution, templates, every input row (the
    shards of a revise run verified), the model arguments, the options and the output folder.

    `inputs_ready=False` leaves out the input check (in a pipeline, the revise stage writes them first).
    `policy_model`: the policy's model argument already resolved (in a pipeline, a policy an earlier
    stage trains: its folder need not exist yet).
    """
    listwise = ranks(config) if inputs_ready else config.responses is not None and config.responses > 2
    if not listwise:
        _refuse_ranking_options(config)
    elif config.work.part is not None or config.work.ray is not None:
        field_name = "work.ray" if config.work.ray is not None else "work.num_shards"
        raise InputError("runs in one process when it ranks K responses per prompt", field=field_name)
    constitution = load_constitution(config.constitution)
    panel = panel_for(constitution, config.options, str(config.constitution))
    templates = Templates.load(config.templates)
    counted = _count_inputs(config, pair_char_limit(config.judge.max_model_len)) if inputs_ready else None
    judge_model = engine_model(config.judge, field="judge.model")
    total = None
    if counted is not None:
        total, longest = counted
        _check_longest_pair(config, longest, judge_model)
    models = {"judge": model_label(judge, judge_model)}
    policy_ref = None
    if config.prompts is not None:
        if policy is None and config.policy is not None and config.policy != config.judge:
            policy_ref = policy_model or engine_model(config.policy, field="policy.model")
        models["policy"] = model_label(policy, policy_ref) if policy_ref is not None else models["judge"]
    # Last, after every local check: an openai judge set to `auto` asks its servers what they can do.
    choice_method = settled_choice_method(config.judge, judge)
    judge_engine = config.judge if choice_method is None else config.judge.model_copy(
        update={"choice_method": choice_method}
    )
    config_data = fingerprint_config(config, {"judge": choice_method} if choice_method else None)
    if not listwise:
        # A run that judges pairs has the fingerprint it had before rankings existed: it resumes such runs.
        for name in RANKING_FIELDS:
            config_data.pop(name, None)
    else:
        config_data["binarize"] = config.binarize or "best-worst"

    def fingerprint_of(data: dict[str, object]) -> Fingerprint:
        return make_fingerprint(
            config=data,
            models=models,
            constitution_sha256=constitution.sha256(),
            constitution=constitution.summary(),
            template_sha256s=_judge_text_sha256s(templates, panel),
            seed=config.options.seed,
        )

    fingerprint = fingerprint_of(config_data)
    # The rankings do not depend on how they are binarized.
    ranking_fingerprint = fingerprint_of({k: v for k, v in config_data.items() if k != "binarize"}) if (
        listwise) else None
    check_outputs(config.out, "run", {
        "constitution": config.constitution, "prompts": config.prompts, "pairs": config.pairs,
        "pairs_from": config.pairs_from, "options.few_shot_file": config.options.few_shot_file,
        "templates": config.templates, "judge.model": config.judge.model,
        "policy.model": config.policy.model if config.policy is not None else None,
    }, same_run=config.pairs_from)  # the preference split of the revise run it reads is another split
    check_run(config.out, "preferences", fingerprint, overwrite=config.work.overwrite, part=config.work.part)
    if ranking_fingerprint is not None:
        check_run(config.out, "rankings", ranking_fingerprint, overwrite=config.work.overwrite, part=config.work.part)
    return LabelPlan(panel, templates, judge_model, policy_ref, total, fingerprint, judge_engine, ranking_fingerprint)


def _refuse_ranking_options(config: LabelConfig) -> None:
    """`InputError` for a ranking option given to a run that judges pairs."""
    if config.binarize is not None:
        raise InputError("binarizes rankings, and this run judges pairs: sample more than 2 responses per prompt "
                         "(responses) or give a file of responses lists", field="binarize")
    if config.comparisons != "all":
        raise InputError("chooses pairs among K responses, and this run judges pairs: sample more than 2 "
                         "responses per prompt (responses) or give a file of responses lists", field="comparisons")


def _judge_text_sha256s(templates: Templates, panel: Panel) -> dict[str, str]:
    """The texts a judge run renders besides the constitution: its templates and any demonstrations."""
    from labeler.inputs.constitution.judge_demos import demos_sha256

    texts = {k: v for k, v in templates.sha256().items() if k in JUDGE_TEMPLATES}
    if panel.demos:
        texts["judge_demonstrations"] = demos_sha256(panel.demos)
    return texts


def label(
    config: LabelConfig,
    judge: Engine | None = None,
    policy: Engine | None = None,
    *,
    policy_model: ModelRef | None = None,
) -> LabelResult:
    """Judge every pair in both orders and write the preference split of `config.out`."""
    plan = check_label(config, judge, policy, policy_model=policy_model)
    if plan.ranking_fingerprint is not None:
        return _label_rankings(config, plan, judge, policy)
    result = LabelResult(config.out)
    # Opened before any model: a run made with other settings is refused before anything loads.
    store = RunStore.open(
        config.out, "preferences", plan.fingerprint, overwrite=config.work.overwrite, part=config.work.part
    )
    done = store.done_ids()
    result.already_done = len(done)
    with engine_for(plan.judge_engine, judge, plan.judge) as judge_engine, _policy_engine(
        config, plan, judge_engine, policy
    ) as policy_engine:
        priors = position_priors(judge_engine, plan.templates, plan.panel, config.options) if (
            config.options.calibrate) else None
        # Pairs judged before count as done, not toward the rate; pairs dropped as identical leave the total.
        with progress_bar(plan.total, "judging", unit="pairs", completed=len(done),
                          quiet=config.work.quiet or None) as advance:
            dropped = 0
            for batch in batches(_pairs(config, policy_engine, result.counts), config.work.batch_size):
                new = [p for p in batch if p.id not in done]
                todo = _fitting(judge_engine, plan, config.options, new, result)
                records = judge_pairs(judge_engine, plan.templates, plan.panel, todo, config.options, priors)
                store.write_shard(records)
                result.written += len(records)
                advance(len(new), dropped=result.counts.identical_dropped - dropped)
                dropped = result.counts.identical_dropped
            advance(0, dropped=result.counts.identical_dropped - dropped)  # those after the last batch
    store.mark_complete(
        {
            "rows": result.written + result.already_done,
            "identical_dropped": result.counts.identical_dropped,
            "skipped_too_long": len(result.skipped_too_long),
        }
    )
    return result


def _fitting(
    engine: Engine, plan: LabelPlan, options: JudgeOptions, pairs: Sequence[Pair], result: LabelResult
) -> list[Pair]:
    """The pairs whose every request fits the judge's context; the ids of the others go to
    `result.skipped_too_long` (an engine would refuse the whole batch for one of them)."""
    if not pairs:
        return list(pairs)
    try:
        context = engine.max_model_len
    except InputError:
        # Servers that do not report their context (hosted APIs) refuse an over-long request themselves.
        return list(pairs)
    requests = [r for pair in pairs for r in longest_requests(plan.templates, plan.panel, options, pair)]
    lengths = engine.prompt_lengths(requests)
    # The choice token (and with --cot, the rationale before it) must fit after the prompt.
    room = context - 1 - (options.cot_max_tokens if options.cot else 0)
    per_pair = len(requests) // len(pairs)
    fitting = []
    for index, pair in enumerate(pairs):
        if max(lengths[index * per_pair : (index + 1) * per_pair]) > room:
            result.skipped_too_long.append(pair.id)
        else:
            fitting.append(pair)
    return fitting


def _policy_engine(
    config: LabelConfig, plan: LabelPlan, judge: Engine, policy: Engine | None
) -> contextlib.AbstractContextManager[Engine | None]:
    """The engine that samples pairs: none unless --prompts; the judge itself when the models match."""
    if config.prompts is None:
        return contextlib.nullcontext(None)
    if policy is not None or plan.policy is None or config.policy is None:
        return engine_for(config.judge, policy or judge)
    return engine_for(config.policy, None, plan.policy)


def _pairs(config: LabelConfig, policy: Engine | None, counts: PairCounts) -> Iterator[Pair]:
    part = config.work.part
    if config.pairs is not None:
        pairs: Iterator[Pair] = islice(pairs_from_file(config.pairs, seed=config.options.seed), config.work.limit)
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


def pair_char_limit(context: int | None) -> int:
    """The most characters the texts of one pair may hold: what a judge template may render, and, when the
    judge's context length is known, what could fit in it.

    >>> pair_char_limit(None), pair_char_limit(2048)
    (1900000, 204800)
    """
    limit = MAX_OUTPUT_CHARS - TEMPLATE_ROOM
    return limit if context is None else min(limit, MAX_CHARS_PER_TOKEN * context)


def _check_longest_pair(config: LabelConfig, longest: Pair | None, judge: ModelRef) -> None:
    """`InputError` naming the line of the longest pair of a pairs file when its characters cannot fit
    the context the judge model's config allows (a context given as max_model_len was checked already)."""
    context = judge.model_context_length
    if longest is None or config.judge.max_model_len is not None or context is None:
        return
    limit = pair_char_limit(context)
    if longest.characters > limit:
        raise InputError(too_long_message(longest.characters, limit), file=config.pairs, line=longest.line)


def _count_inputs(config: LabelConfig, max_chars: int | None = None) -> tuple[int, Pair | None]:
    """Validate every input row and count them (for the progress bar), capped by --limit; a pair file's
    pairs may hold at most `max_chars` characters each. Also the pair file's longest pair, if any."""
    from labeler.inputs.rows import read_prompts
    from labeler.store import iter_shard_tables

    longest: Pair | None = None
    if config.pairs_from is not None:
        # Verified shard by shard (checksums, schema), and the sft split must be complete.
        n = sum(table.num_rows for table in iter_shard_tables(config.pairs_from, "sft"))
        if n == 0:
            raise InputError("the run's sft split has no rows to take pairs from", file=config.pairs_from,
                             field="pairs_from")
    elif config.pairs is not None and is_responses_file(config.pairs):
        n = 0
        budget = parse_budget(config.comparisons)
        for found in response_sets_from_file(config.pairs, max_chars):
            n += 1
            k = len(found.responses)
            if budget is not None and budget < min(k - 1, k * (k - 1) // 2):
                raise InputError(f"{budget} pairs per prompt cannot connect this row's {k} responses: need at "
                                 f"least {k - 1}, or 'all'", file=config.pairs, line=found.line, field="comparisons")
    elif config.pairs is not None:
        n = 0
        for pair in pairs_from_file(config.pairs, max_chars, seed=config.options.seed):
            n += 1
            longest = pair if longest is None or pair.characters > longest.characters else longest
        if n == 0:
            raise InputError("no pairs in the file", file=config.pairs, field="pairs")
    else:
        assert config.prompts is not None
        n = sum(1 for _ in read_prompts(config.prompts))
        if n == 0:
            raise InputError("no prompts in the file", file=config.prompts, field="prompts")
    return (n if config.work.limit is None else min(n, config.work.limit)), longest


def _label_rankings(
    config: LabelConfig, plan: LabelPlan, judge: Engine | None, policy: Engine | None
) -> LabelResult:
    """Rank each prompt's responses into the rankings split, then derive the preference split from it."""
    assert plan.ranking_fingerprint is not None
    result = LabelResult(config.out, ranked=True)
    budget = parse_budget(config.comparisons)
    rankings = RunStore.open(config.out, "rankings", plan.ranking_fingerprint, overwrite=config.work.overwrite)
    preferences = RunStore.open(config.out, "preferences", plan.fingerprint, overwrite=config.work.overwrite)
    done = rankings.done_ids()
    if not rankings.is_complete:
        with engine_for(plan.judge_engine, judge, plan.judge) as judge_engine, _policy_engine(
            config, plan, judge_engine, policy
        ) as policy_engine:
            priors = position_priors(judge_engine, plan.templates, plan.panel, config.options) if (
                config.options.calibrate) else None
            with progress_bar(plan.total, "ranking", unit="prompts", completed=len(done),
                              quiet=config.work.quiet or None) as advance:
                dropped = 0
                # A shard holds whole prompts: a crash mid-prompt leaves none of its comparisons behind.
                for batch in batches(_response_sets(config, policy_engine, result.counts), config.work.batch_size):
                    new = [s for s in batch if s.id not in done]
                    todo = _fitting_sets(judge_engine, plan, config.options, new, budget, result)
                    records = judge_rankings(judge_engine, plan.templates, plan.panel, todo, config.options, budget,
                                             priors)
                    rankings.write_shard(records)
                    result.rankings_written += len(records)
                    gone = result.counts.identical_dropped + result.counts.too_few_responses
                    advance(len(new), dropped=gone - dropped)
                    dropped = gone
        rankings.mark_complete({
            "rows": result.rankings_written + len(done),
            "identical_dropped": result.counts.identical_dropped,
            "too_few_responses": result.counts.too_few_responses,
            "skipped_too_long": len(result.skipped_too_long),
        })
    result.already_done = len(done)
    # The preference split, from the committed rankings (all of them, those of an earlier run too).
    written = preferences.done_ids()
    how = config.binarize or "best-worst"
    total = len(written)
    for rows in batches((row for row in _binarized(config.out, how, config.options.seed) if row.id not in written),
                        config.work.batch_size):
        preferences.write_shard(rows)
        result.written += len(rows)
    total += result.written
    preferences.mark_complete({"rows": total, "binarize": how, "from_rankings": True})
    return result


def _binarized(run_dir: Path, how: Binarization, seed: int) -> Iterator[PreferenceRecord]:
    """The preference rows of every committed ranking of a run, binarized by `how`."""
    for ranking in iter_records(run_dir, "rankings"):
        assert isinstance(ranking, RankingRecord)  # the rankings split holds nothing else
        yield from binarize(ranking, how, seed)


def _response_sets(config: LabelConfig, policy: Engine | None, counts: PairCounts) -> Iterator[ResponseSet]:
    if config.pairs is not None:
        yield from islice(response_sets_from_file(config.pairs), config.work.limit)
        return
    assert config.prompts is not None and policy is not None and config.responses is not None
    yield from response_sets_from_prompts(
        config.prompts, policy, config.pair_sampling, config.responses, config.options.seed, config.work.batch_size,
        counts, limit=config.work.limit,
    )


def _fitting_sets(
    engine: Engine, plan: LabelPlan, options: JudgeOptions, sets: Sequence[ResponseSet], budget: int | None,
    result: LabelResult,
) -> list[ResponseSet]:
    """The sets whose every pair fits the judge's context; the ids of the others go to
    `result.skipped_too_long`."""
    pairs = [pair for found in sets for _, _, pair in pairs_of(found, budget)]
    scratch = LabelResult(result.out)
    _fitting(engine, plan, options, pairs, scratch)
    too_long = set(scratch.skipped_too_long)
    fitting = []
    for found in sets:
        if any(pair.id in too_long for _, _, pair in pairs_of(found, budget)):
            result.skipped_too_long.append(found.id)
        else:
            fitting.append(found)
    return fitting
