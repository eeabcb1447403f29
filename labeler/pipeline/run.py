"""`labeler run CONFIG.yaml`: the whole job from one validated file.

Stages run in order: revise → label → train-rm → ppo → dpo → report (dpo beside or instead of
train-rm → ppo). Each stage is resumable on its own (shards with fingerprints, training checkpoints),
so re-running the same config after a crash skips finished stages and continues the interrupted one at
the record or step where it stopped. The judge engine is opened once, lazily, and shared by the stages
that need it.

With `stages.iterations: N` the loop closes: label → train-rm → ppo (or label → dpo) runs N times,
iteration k in `RUN/iter-<k>/` (its preference split and card, `rm/`, `ppo/` or `dpo/`,
`eval-policy.json`). Iteration 1 labels pairs as `stages.label.pairs` says and trains from the starting
models; iteration k > 1 labels pairs its policy samples (iteration k-1's policy), continues training
iteration k-1's reward model on them, and continues PPO (or DPO) from iteration k-1's policy. After each
policy update, `labeler eval-policy` compares the iteration's policy with the starting policy
(`stages.ppo.policy` or `stages.dpo.policy`) on `eval_prompts`.

A trained folder (rm/, ppo/, dpo/) is kept only when it is finished on inputs that hold what they held when it
started (its `training-config.json` records them by content). When they changed, it is refused; with
`work.overwrite` it is removed with everything made from it (the policy after a reward model, the
iteration's evaluation, every later iteration) and trained again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labeler.core.config_files import read_yaml_mapping
from labeler.core.errors import InputError, InputErrors, option
from labeler.engine import EngineConfig, GenerationParams
from labeler.evaluate.policy_report import EVAL_POLICY_JSON
from labeler.evaluate.policy_run import EvalPolicyConfig, EvalSettings
from labeler.inputs.rows import check_input_file
from labeler.stages.common import WorkSelection
from labeler.stages.judge import JudgeOptions
from labeler.stages.label import PAIR_SAMPLING, RANKING_FIELDS
from labeler.stages.label import LabelConfig as _LabelConfig
from labeler.stages.rankings import Binarization
from labeler.stages.revise import REVISE_SAMPLING
from labeler.train.dpo.config import DPOConfig, DPOSettings
from labeler.train.ppo.config import PPOConfig, PPOSettings
from labeler.train.rm.config import RMSettings, RMTrainConfig

if TYPE_CHECKING:
    from labeler.engine.model_ref import ModelRef
    from labeler.stages.label import LabelConfig
    from labeler.stages.revise import ReviseConfig

_FORBID = ConfigDict(frozen=True, extra="forbid")


class ReviseStage(BaseModel):
    """Critique-and-revise (SFT split)."""

    model_config = _FORBID
    constitution: Path | None = Field(
        None, description="This stage's own constitution (such as CAI's critique/revision requests); "
        "null: the run's constitution.",
    )
    rounds: int = Field(2, ge=1, le=16, description="Critique-and-revise rounds per prompt.")
    sampling: GenerationParams = Field(
        default=REVISE_SAMPLING, description="Sampling for responses, critiques and revisions.",
    )


class LabelStage(BaseModel):
    """A/B judging (preference split)."""

    model_config = _FORBID
    constitution: Path | None = Field(
        None, description="This stage's own constitution (such as CAI's labelling principles), also the one "
        "each iteration's evaluation judges by and a principle-conditioned or per-principle reward model reads; "
        "null: the run's.",
    )
    pairs: Literal["revise", "prompts"] | Path = Field(
        "revise",
        description="'revise' (initial vs final revision of this run), 'prompts' (two policy samples), "
        "or a pairs file.",
    )
    pair_sampling: GenerationParams = Field(
        default=PAIR_SAMPLING,
        description="How the policy samples the two responses when pairs is 'prompts'.",
    )
    options: JudgeOptions = Field(default_factory=JudgeOptions, description="How pairs are judged (seed: the run's).")
    responses: int | None = Field(
        None, ge=2, description=_LabelConfig.model_fields["responses"].description
    )
    comparisons: str = Field("all", description=_LabelConfig.model_fields["comparisons"].description)
    binarize: Binarization | None = Field(None, description=_LabelConfig.model_fields["binarize"].description)


# The trainers' and the evaluation's own settings: the run config decides the rest for them (data, prompts,
# reward, output folder, seed, resuming).
class TrainRMStage(RMSettings):
    """Reward-model training on the preference split (`labeler train-rm`'s settings)."""


class PPOStage(PPOSettings):
    """PPO against the trained reward model (`labeler ppo`'s settings)."""


class DPOStage(DPOSettings):
    """DPO on the preference split (`labeler dpo`'s settings)."""


class EvalStage(EvalSettings):
    """Each iteration's policy against the start (`labeler eval-policy`'s settings)."""


class Stages(BaseModel):
    """Which stages run; a stage left out (or null) is skipped."""

    model_config = _FORBID
    revise: ReviseStage | None = Field(default_factory=ReviseStage, description="Critique-and-revise.")
    label: LabelStage | None = Field(default_factory=LabelStage, description="A/B judging.")
    train_rm: TrainRMStage | None = Field(None, description="Reward-model training on the preference split.")
    ppo: PPOStage | None = Field(None, description="PPO against the trained reward model.")
    dpo: DPOStage | None = Field(
        None,
        description="DPO of stages.dpo.policy on the preference split, each pair's soft label its target "
        "(beside or instead of train_rm and ppo); with iterations, the policy update of each iteration.",
    )
    iterations: int | None = Field(
        None,
        ge=1,
        description="Close the loop: run label → train-rm → ppo (or label → dpo) this many times, iteration k "
        "in RUN/iter-<k>/, each after the first labelling its own policy's samples and continuing from the "
        "previous reward model and policy; each iteration's policy is evaluated against the starting policy on "
        "eval_prompts. null: one pass, in the run folder itself.",
    )
    eval: EvalStage = Field(
        default_factory=EvalStage,
        description="How each iteration's policy is evaluated (`labeler eval-policy`; the judge is `engine`).",
    )
    report: bool = Field(True, description="Write RUN/report/ with statistics and plots.")


class RunConfig(BaseModel):
    """A whole labeler job."""

    model_config = _FORBID
    out: Path = Field(description="Run folder: sft/, preferences/, rm/, ppo/, report/, manifest.json.")
    constitution: Path = Field(description="Constitution file.")
    prompts: Path = Field(description="Prompts file (JSONL/Parquet/Arrow).")
    eval_prompts: Path | None = Field(
        None, description="Held-out prompts each iteration's policy is evaluated on (needed with stages.iterations)."
    )
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Judge and policy model and engine.")
    policy: EngineConfig | None = Field(None, description="A separate policy for revise/pairs (default: engine).")
    templates: Path | None = Field(None, description="Folder of templates overriding the shipped ones.")
    seed: int = Field(0, description="Run seed for every stage.")
    work: WorkSelection = Field(default_factory=WorkSelection, description="Rows, batching, job-array part.")
    stages: Stages = Field(default_factory=Stages, description="The stages and their options.")

    @model_validator(mode="after")
    def _stages_fit(self) -> RunConfig:
        s = self.stages
        if s.label is not None and s.label.pairs == "revise" and s.revise is None:
            raise ValueError("stages.label.pairs is 'revise' but stages.revise is off")
        if s.ppo is not None and s.train_rm is None:
            raise ValueError("stages.ppo needs stages.train_rm (its reward model)")
        if s.iterations is not None:
            if s.ppo is not None and s.dpo is not None:
                raise ValueError("stages.iterations updates the policy once an iteration: stages.ppo or stages.dpo, "
                                 "not both")
            update = "dpo" if s.dpo is not None else "ppo"
            needed = ("label", "dpo") if update == "dpo" else ("label", "train_rm", "ppo")
            missing = [name for name in needed if getattr(s, name) is None]
            if missing:
                raise ValueError(f"stages.iterations repeats {', '.join(needed)}: stages.{missing[0]} is off")
            if self.eval_prompts is None:
                raise ValueError("stages.iterations evaluates every iteration's policy: give eval_prompts")
            assert s.label is not None
            sampler = (self.policy or self.engine).model
            start = policy_update(self)[1].policy
            if s.label.pairs == "prompts" and sampler != start:
                raise ValueError(
                    f"with stages.iterations the policy that samples pairs ({sampler!r}) must be the policy "
                    f"{update.upper()} starts from (stages.{update}.policy {start!r})"
                )
        return self

    def constitution_of(self, stage: Literal["revise", "label"]) -> Path:
        """The constitution a stage uses: its own (`stages.<stage>.constitution`), else the run's."""
        section = getattr(self.stages, stage)
        own = section.constitution if section is not None else None
        return own if own is not None else self.constitution


def policy_update(config: RunConfig) -> tuple[Literal["ppo", "dpo"], Any]:
    """The stage that updates the policy in iterations, and its section: dpo when it is on, else ppo."""
    s = config.stages
    if s.dpo is not None:
        return "dpo", s.dpo
    assert s.ppo is not None
    return "ppo", s.ppo


def load_run_config(path: Path) -> RunConfig:
    """Read and validate a run config; relative paths are taken from the config file's folder."""
    data = read_yaml_mapping(path, what="a run config")
    try:
        config = RunConfig.model_validate(data)
    except InputError as exc:  # a validator that names the option itself (engine server settings)
        where = exc.field if exc.where == f"({exc.field})" else exc.place()
        raise InputError(exc.message, file=path, where=where) from exc
    except ValidationError as exc:
        problems = []
        for problem in exc.errors():
            key = ".".join(str(part) for part in problem["loc"])
            message = str(problem["msg"]).removeprefix("Value error, ")
            if key and not isinstance(problem.get("input"), dict):  # a section's check names its values
                message += f" (got {problem.get('input')!r:.80})"
            problems.append(InputError(message, file=path, where=f"key {key}" if key else None))
        raise InputErrors(problems) from None
    return _relative_to(config, path.parent)


def _relative_to(config: RunConfig, base: Path) -> RunConfig:
    def fix(p: Path | None) -> Path | None:
        if p is None or p.is_absolute():
            return p
        return (base / p).resolve()

    update: dict[str, Any] = {"out": fix(config.out), "constitution": fix(config.constitution),
                              "prompts": fix(config.prompts), "eval_prompts": fix(config.eval_prompts)}
    if config.templates is not None:
        update["templates"] = fix(config.templates)
    sections: dict[str, BaseModel] = {}
    revise, label = config.stages.revise, config.stages.label
    if revise is not None and revise.constitution is not None:
        sections["revise"] = revise.model_copy(update={"constitution": fix(revise.constitution)})
    if label is not None:
        paths = {"constitution": fix(label.constitution)}
        if isinstance(label.pairs, Path):
            paths["pairs"] = fix(label.pairs)
        sections["label"] = label.model_copy(update=paths)
    if sections:
        update["stages"] = config.stages.model_copy(update=sections)
    return config.model_copy(update=update)


@dataclass
class RunResult:
    out: Path
    stages_run: list[str] = field(default_factory=list)  # with iterations, e.g. "iter-2/ppo"
    rm_dir: Path | None = None  # the last one trained
    ppo_dir: Path | None = None  # the last one trained
    dpo_dir: Path | None = None  # the last one trained
    report: Path | None = None
    evaluations: list[Path] = field(default_factory=list)  # each iteration's eval-policy.json


# The fields of a stage's config that are not the run config's own fields of the same name, nor the
# fields of the stage's section (`stages.<stage>`): as revise_config, label_config_for and eval_config
# build them.
STAGE_FIELDS: dict[str, dict[str, str]] = {
    "revise": {"sampling": "stages.revise.sampling", "rounds": "stages.revise.rounds"},
    "label": {"judge": "engine", "pairs_from": "stages.label.pairs", "options": "stages.label.options",
              "pair_sampling": "stages.label.pair_sampling", "pairs": "stages.label.pairs"},
    "eval": {"judge": "engine", "baseline": "stages.ppo.policy", "prompts": "eval_prompts"},
}

# The stage section whose `constitution` a stage's config takes (`RunConfig.constitution_of`).
CONSTITUTION_OF: dict[str, Literal["revise", "label"]] = {
    "revise": "revise", "label": "label", "eval": "label", "train_rm": "label",
}

# The engine a stage's own engine checks are about.
ENGINE_OF = {"revise": "engine", "label": "judge", "eval": "judge"}


def config_key(config: RunConfig, stage: str, field_path: str) -> str | None:
    """The run-config key of a field of `stage`'s config (None: the stage made it, the run has no key).

    >>> run = RunConfig(out=Path("o"), constitution=Path("c"), prompts=Path("p"))
    >>> config_key(run, "label", "judge.model"), config_key(run, "ppo", "rollout_engine")
    ('engine.model', 'stages.ppo.rollout_engine')
    >>> config_key(run, "revise", "engine.api_key_env")
    'engine.api_key_env'
    """
    if field_path.partition(".")[0] in EngineConfig.model_fields and stage in ENGINE_OF:
        field_path = f"{ENGINE_OF[stage]}.{field_path}"  # a check given the stage's engine config alone
    head, _, rest = field_path.partition(".")
    owner = CONSTITUTION_OF.get(stage)
    if head == "constitution" and owner is not None and config.constitution_of(owner) != config.constitution:
        return f"stages.{owner}.constitution"
    renamed = {**STAGE_FIELDS.get(stage, {}), "engine": "policy" if config.policy is not None else "engine"}
    section = Stages.model_fields.get(stage)
    if head in STAGE_FIELDS.get(stage, {}) or (stage == "revise" and head == "engine"):
        key = renamed[head]
    elif section is not None and head in _stage_fields(section.annotation):
        key = f"stages.{stage}.{head}"
    elif head in RunConfig.model_fields:
        key = head
    else:
        return None
    return f"{key}.{rest}" if rest else key


def _stage_fields(annotation: Any) -> dict[str, Any]:
    """The fields of a stage section's model (its annotation: `Model | None`)."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return dict(candidate.model_fields)
    return {}


def revise_config(config: RunConfig) -> ReviseConfig:
    """The revise stage of a run (its policy: `policy`, else `engine`)."""
    from labeler.stages.revise import ReviseConfig

    assert config.stages.revise is not None
    return ReviseConfig(
        constitution=config.constitution_of("revise"), prompts=config.prompts, out=config.out,
        rounds=config.stages.revise.rounds,
        engine=config.policy or config.engine, sampling=config.stages.revise.sampling, seed=config.seed,
        templates=config.templates, work=config.work,
    )


def label_config(config: RunConfig) -> LabelConfig:
    """The label stage of a run: its pairs from the revise stage, from policy samples, or from a file."""
    from labeler.stages.label import LabelConfig

    stage = config.stages.label
    assert stage is not None
    source: dict[str, Any] = {}
    if stage.pairs == "revise":
        source["pairs_from"] = config.out
    elif stage.pairs == "prompts":
        source["prompts"] = config.prompts
    else:
        source["pairs"] = stage.pairs
    return LabelConfig(
        constitution=config.constitution_of("label"), out=config.out, judge=config.engine, policy=config.policy,
        pair_sampling=stage.pair_sampling, options=stage.options.model_copy(update={"seed": config.seed}),
        templates=config.templates, work=config.work, **source,
        **{name: getattr(stage, name) for name in RANKING_FIELDS},
    )


def check_pipeline(config: RunConfig) -> None:
    """Every check of every stage that needs no model, before any stage runs: bad input in a late stage
    (or a late iteration) is found before an early one has spent hours. Problems name the config key."""
    from labeler.engine.model_ref import resolve_model
    from labeler.stages.label import check_label
    from labeler.stages.revise import check_revise
    from labeler.train.ppo.rollout import rollout_plan
    from labeler.train.ppo.train import load_prompts
    from labeler.train.rm.train import label_kind_for

    stage = "run"
    try:
        check_input_file(config.prompts, where="key prompts")
        if config.eval_prompts is not None:
            check_input_file(config.eval_prompts, where="key eval_prompts")
        s = config.stages
        if s.revise is not None:
            stage = "revise"
            check_revise(revise_config(config))
        for k in iteration_numbers(config):
            # What iteration k > 1 starts from is written by iteration k - 1: its folders are checked, not
            # resolved (`iteration_policy` names them where they will be).
            if s.label is not None:
                stage = "label"
                label, policy = label_config_for(config, k)
                check_label(label, inputs_ready=k > 1 or s.label.pairs != "revise", policy_model=policy)
            if s.train_rm is not None:
                stage = "train_rm"
                rm = train_rm_config(config, s.train_rm, k)
                if k == 1:
                    resolve_model(rm.base_model, field=None, where="key stages.train_rm.base_model", kind="backbone")
                label_kind_for(rm)
                _check_trained(rm, config)
            if s.ppo is not None and s.train_rm is not None:
                stage = "ppo"
                ppo = ppo_config(config, s.ppo, k)
                start = None
                if k == 1:
                    start = resolve_model(ppo.policy, field=None, where="key stages.ppo.policy", kind="policy")
                    load_prompts(config.prompts)
                _check_trained(ppo, config)
                rollout_plan(ppo, start)
            if s.dpo is not None:
                stage = "dpo"
                dpo = dpo_config(config, s.dpo, k)
                if k == 1:
                    resolve_model(dpo.policy, field=None, where="key stages.dpo.policy", kind="policy")
                _check_trained(dpo, config)
            if s.iterations is not None:
                stage = "eval"
                _check_evaluation(config, k)
    except InputErrors as exc:
        raise InputErrors([_with_config_key(e, config, stage) for e in exc.errors]) from None
    except InputError as exc:
        raise _with_config_key(exc, config, stage) from None


def _check_evaluation(config: RunConfig, k: int) -> None:
    """Iteration k's evaluation: its inputs (once), and its output file (free, or a finished evaluation
    with these settings)."""
    from labeler.evaluate.policy_run import check_eval_policy, finished_evaluation

    evaluation = eval_config(config, k)
    if k == 1:
        check_eval_policy(evaluation, candidate_ready=False)
    finished_evaluation(evaluation)


def _with_config_key(error: InputError, config: RunConfig, stage: str) -> InputError:
    """The error with the field (of `stage`'s config) it names shown as the run config's key, and each
    field its message names as its key."""
    key = config_key(config, stage, error.field) if error.field is not None else None
    keyed = error if key is None else error.naming(f"key {key}")

    def quoted_key(field: str) -> str | None:
        key = config_key(config, stage, field)
        return None if key is None else f"`{key}`"

    return keyed.shown(quoted_key)


def device_plan(config: RunConfig) -> list[str]:
    """Where each stage's models run: replicas x devices each, and the devices a node needs for that.

    >>> device_plan(RunConfig(out=Path("o"), constitution=Path("c"), prompts=Path("p")))[0]
    'revise: policy default, 1 replica x 1 device = 1 device'
    """

    def engine_line(stage: str, role: str, engine: EngineConfig) -> str:
        if engine.name == "openai":
            servers = len(engine.base_urls)
            return f"{stage}: {role} {engine.model} on {servers} server{'s' * (servers > 1)} (none on this node)"
        replicas, each = engine.data_parallel_size, engine.tensor_parallel_size
        total = replicas * each
        return (f"{stage}: {role} {engine.model}, {replicas} replica{'s' * (replicas > 1)} x {each} "
                f"device{'s' * (each > 1)} = {total} device{'s' * (total > 1)}")

    s = config.stages
    lines = []
    if s.revise is not None:
        lines.append(engine_line("revise", "policy", config.policy or config.engine))
    if s.label is not None:
        lines.append(engine_line("label", "judge", config.engine))
        if s.label.pairs == "prompts" and config.policy is not None:
            lines.append(engine_line("label", "policy", config.policy))
    if s.train_rm is not None:
        lines.append("train_rm: one process here; `accelerate launch -m labeler train-rm` for one per GPU")
    if s.ppo is not None:
        lines.append("ppo: one process")
    if s.dpo is not None:
        lines.append("dpo: one process here; `accelerate launch -m labeler dpo` for one per GPU")
    if s.iterations is not None:
        updates = "dpo" if s.dpo is not None else "train_rm, ppo"
        lines.append(f"iterations: {s.iterations} x (label, {updates}, eval-policy: judge and both policies "
                     f"{config.engine.model}, 1 replica)")
    return lines


def run_pipeline(config: RunConfig) -> RunResult:
    """Run every configured stage in order; each resumes where a previous attempt stopped."""
    from labeler.store.lock import writer_lock

    check_pipeline(config)
    # One writer per run, from the first write (every check is done) to the end of the last stage.
    with writer_lock(config.out):
        return _run_stages(config)


def _run_stages(config: RunConfig) -> RunResult:
    """The stages of `run_pipeline`, after its checks: one loop over the iterations, a run without
    `stages.iterations` being the loop with one iteration, written in the run folder itself.

    Iteration k: (k = 1) revise; (k > 1) the evaluation of iteration k - 1's policy; label; then, with the
    engine closed (training needs the memory), train-rm and ppo. The judge engine opens lazily, once per
    iteration, and is shared by what runs in it. After the last iteration, its policy's evaluation."""
    from labeler.engine.lazy import LazyEngine
    from labeler.stages.runner import run_stage

    result = RunResult(config.out)
    s = config.stages
    iterating = s.iterations is not None

    def done(k: int, stage: str) -> None:
        result.stages_run.append(f"iter-{k}/{stage}" if iterating else stage)

    for k in iteration_numbers(config):
        with LazyEngine(config.engine) as engine:
            if k == 1 and s.revise is not None:
                # On Ray (work.ray) each worker opens its own engine and the lazy one here never starts.
                run_stage(revise_config(config), engine=engine if config.policy is None else None)
                result.stages_run.append("revise")
            if k > 1:
                result.evaluations.append(_evaluate(config, k - 1, engine))
                done(k - 1, "eval")
            if s.label is not None:
                run_stage(label_config_for(config, k)[0], engine=engine)
                done(k, "label")
        if s.train_rm is not None:
            result.rm_dir = _train_rm(config, k)
            done(k, "train_rm")
        if s.ppo is not None and result.rm_dir is not None:
            result.ppo_dir = _ppo(config, k)
            done(k, "ppo")
        if s.dpo is not None:
            result.dpo_dir = _dpo(config, k)
            done(k, "dpo")
    if s.iterations is not None:
        with LazyEngine(config.engine) as engine:
            result.evaluations.append(_evaluate(config, s.iterations, engine))
            done(s.iterations, "eval")
    if s.report:
        from labeler.report import write_report

        rm_dirs: list[Path] = []
        if s.train_rm is not None:
            rm_dirs = [train_rm_config(config, s.train_rm, k).out for k in iteration_numbers(config)]
        result.report = write_report(config.out, rm_dirs=[d for d in rm_dirs if d.is_dir()])
        result.stages_run.append("report")
    return result


# --- iterations ------------------------------------------------------------------------------------


def iteration_numbers(config: RunConfig) -> range:
    """1..N with `stages.iterations: N`; just 1 (the run folder itself) without."""
    return range(1, (config.stages.iterations or 1) + 1)


def iteration_dir(config: RunConfig, k: int) -> Path:
    """Where iteration k writes: RUN/iter-<k>, or RUN itself when the run does not iterate."""
    return config.out / f"iter-{k}" if config.stages.iterations is not None else config.out


def iteration_policy(config: RunConfig, k: int) -> ModelRef:
    """The policy iteration k starts from: `stages.ppo.policy` (or `stages.dpo.policy`) for k = 1, else the
    policy iteration k − 1's PPO exports at its last step (or its DPO saves in dpo/), named by where it will
    be (nothing is read: it may not exist yet)."""
    from labeler.core.layout import checkpoint_dir
    from labeler.engine.model_ref import ModelRef, checkpoint_label, resolve_model
    from labeler.train.ppo.model import ADAPTER_DIR, MODEL_DIR

    update, stage = policy_update(config)
    start = resolve_model(stage.policy, field=None, where=f"key stages.{update}.policy", kind="policy")
    if k == 1:
        return start
    if update == "dpo":
        trained = dpo_config(config, stage, k - 1)
        label = f"{trained.out.parent.name}/{trained.out.name}"
        return ModelRef(str(trained.out), trained.out, label, "folder", base=(start.base or start) if trained.lora
                        else None)  # fmt: skip
    previous = ppo_config(config, stage, k - 1)
    checkpoint = checkpoint_dir(previous.out, previous.steps)
    export = checkpoint / (ADAPTER_DIR if previous.lora else MODEL_DIR)
    base = (start.base or start) if previous.lora else None
    return ModelRef(str(checkpoint), export, checkpoint_label(checkpoint), "folder", base=base)


def label_config_for(config: RunConfig, k: int) -> tuple[LabelConfig, ModelRef | None]:
    """Iteration k's label stage, and the policy that samples its pairs when an earlier iteration trains it.

    Iteration 1 takes its pairs as `stages.label.pairs` says; iteration k > 1 from two samples per prompt
    of its own policy, on the policy engine's settings. Each iteration's samples have their own seed.
    """
    from labeler.stages.label import LabelConfig

    first = label_config(config)
    if config.stages.iterations is None:
        return first, None
    out = iteration_dir(config, k)
    options = first.options.model_copy(update={"seed": config.seed + k - 1})
    if k == 1:
        return first.model_copy(update={"out": out, "options": options}), None
    policy = iteration_policy(config, k)
    sampler = (config.policy or config.engine).model_copy(update={"model": policy.spec})
    return LabelConfig(
        constitution=first.constitution, out=out, prompts=config.prompts, judge=first.judge, policy=sampler,
        pair_sampling=first.pair_sampling, options=options, templates=first.templates, work=first.work,
        **{name: getattr(first, name) for name in RANKING_FIELDS},
    ), policy


def eval_config(config: RunConfig, k: int) -> EvalPolicyConfig:
    """Iteration k's evaluation: its policy against the starting policy on `eval_prompts`, judged by `engine`,
    its reward model scoring both."""
    _, stage = policy_update(config)
    assert config.eval_prompts is not None
    folder = iteration_dir(config, k)
    return EvalPolicyConfig(
        baseline=stage.policy,
        candidate=iteration_policy(config, k + 1).spec,
        prompts=config.eval_prompts,
        constitution=config.constitution_of("label"),
        judge=config.engine.model_copy(update={"data_parallel_size": 1}),  # one replica evaluates
        reward_model=str(folder / "rm") if config.stages.train_rm is not None else None,
        templates=config.templates,
        seed=config.seed,
        out=folder / EVAL_POLICY_JSON,
        quiet=config.work.quiet,
        **BaseModel.model_dump(config.stages.eval),
    )


def _evaluate(config: RunConfig, k: int, judge: Any) -> Path:
    """Iteration k's evaluation, unless a finished one with the same settings is there."""
    from labeler.evaluate.policy_run import eval_policy, finished_evaluation

    evaluation = eval_config(config, k)
    if finished_evaluation(evaluation) is None:
        eval_policy(evaluation, judge=judge)
    assert evaluation.out is not None
    return evaluation.out


def train_rm_config(config: RunConfig, stage: BaseModel, k: int = 1) -> RMTrainConfig:
    """The reward-model training of a run (of iteration k): on its preference split, into its rm/, resuming
    what is there; iteration k > 1 continues training iteration k − 1's reward model."""
    settings = stage.model_dump()
    uses_principles = settings.get("principle_conditioned") or settings.get("heads") == "principles"
    constitution = config.constitution_of("label") if uses_principles else None
    folder = iteration_dir(config, k)
    if k > 1:
        settings["base_model"] = str(iteration_dir(config, k - 1) / "rm")
    return RMTrainConfig(data=(folder,), out=folder / "rm", seed=config.seed, constitution=constitution,
                         resume=True, quiet=config.work.quiet, **settings)


def ppo_config(config: RunConfig, stage: BaseModel, k: int = 1) -> PPOConfig:
    """The PPO of a run (of iteration k): against its rm/, into its ppo/, resuming what is there; iteration
    k > 1 continues from iteration k − 1's policy, with a seed of its own."""
    settings = stage.model_dump()
    folder = iteration_dir(config, k)
    if k > 1:
        settings["policy"] = iteration_policy(config, k).spec
    return PPOConfig(prompts=config.prompts, out=folder / "ppo", reward_model=str(folder / "rm"),
                     seed=config.seed + k - 1, resume=True, quiet=config.work.quiet, **settings)


def dpo_config(config: RunConfig, stage: BaseModel, k: int = 1) -> DPOConfig:
    """The DPO of a run (of iteration k): on its preference split, into its dpo/, resuming what is there;
    iteration k > 1 continues from iteration k − 1's policy (its reference), with a seed of its own."""
    settings = stage.model_dump()
    folder = iteration_dir(config, k)
    if k > 1:
        settings["policy"] = iteration_policy(config, k).spec
    return DPOConfig(data=(folder,), out=folder / "dpo", seed=config.seed + k - 1, resume=True,
                     quiet=config.work.quiet, **settings)


def _train_rm(config: RunConfig, k: int) -> Path:
    """Iteration k's reward model: kept when finished on today's inputs, else (re)trained."""
    from labeler.train.rm.train import train_reward_model

    stage = config.stages.train_rm
    assert stage is not None
    rm = train_rm_config(config, stage, k)
    if not _keep_trained(config, k, rm, _rm_finished(rm)):
        train_reward_model(rm)
    return rm.out


def _ppo(config: RunConfig, k: int) -> Path:
    """Iteration k's policy: kept when finished on today's inputs, else (re)trained."""
    from labeler.train.ppo.train import train_ppo

    stage = config.stages.ppo
    assert stage is not None
    ppo = ppo_config(config, stage, k)
    if not _keep_trained(config, k, ppo, _ppo_finished(ppo)):
        train_ppo(ppo)
    return ppo.out


def _dpo(config: RunConfig, k: int) -> Path:
    """Iteration k's DPO policy: kept when finished on today's inputs, else (re)trained."""
    from labeler.train.dpo.train import DPO_CARD, train_dpo

    stage = config.stages.dpo
    assert stage is not None
    dpo = dpo_config(config, stage, k)
    if not _keep_trained(config, k, dpo, (dpo.out / DPO_CARD).is_file()):
        train_dpo(dpo)
    return dpo.out


def _rm_finished(rm: RMTrainConfig) -> bool:
    """Whether the reward model is saved: its card is written last."""
    from labeler.train.rm.model import REWARD_CARD

    return (rm.out / REWARD_CARD).is_file()


def _ppo_finished(ppo: PPOConfig) -> bool:
    """Whether the policy is trained: the last step's checkpoint is there."""
    from labeler.core.layout import checkpoint_steps

    return checkpoint_steps(ppo.out)[-1:] == [ppo.steps]


def _changed_inputs(trainer: RMTrainConfig | PPOConfig | DPOConfig) -> list[str]:
    """The options whose input holds other content than when the run in `trainer.out` started (none when
    no run is there, or it recorded no inputs)."""
    from labeler.train.common.inputs import changed_inputs, field_of, saved_run_config

    saved = saved_run_config(trainer.out)
    return [] if saved is None else [option(field_of(key)) for key in changed_inputs(trainer, saved)]


def _check_trained(trainer: RMTrainConfig | PPOConfig | DPOConfig, config: RunConfig) -> None:
    """The up-front check of a trained folder: its settings, and (without --overwrite, which replaces a
    stale one) that it was trained on inputs that hold what they hold now."""
    from labeler.train.common.resume import resume_point

    resume_point(trainer, check_inputs=False)
    if not config.work.overwrite:
        _refuse_changed(trainer, _changed_inputs(trainer))


def _refuse_changed(trainer: RMTrainConfig | PPOConfig | DPOConfig, changed: list[str]) -> None:
    """`InputError` naming the trained folder when inputs it was trained on changed."""
    if changed:
        raise InputError(
            f"was trained on inputs that hold other content now ({', '.join(changed)} changed); pass "
            "‹work.overwrite› to train it again, or choose another ‹out›",
            file=trainer.out,
            where=changed[0],
        )


def _keep_trained(config: RunConfig, k: int, trainer: RMTrainConfig | PPOConfig | DPOConfig, finished: bool) -> bool:
    """Whether iteration k's trained folder is kept as it is (finished on today's inputs); when its inputs
    changed, it is refused, or with --overwrite removed with everything trained from it, to be trained again
    (an unfinished run on today's inputs resumes)."""
    changed = _changed_inputs(trainer)
    if not changed:
        return finished
    if not config.work.overwrite:
        _refuse_changed(trainer, changed)
    _remove_trained_from(config, k, trainer.out)
    return False


def _remove_trained_from(config: RunConfig, k: int, folder: Path) -> None:
    """Remove `folder` (iteration k's rm/ or ppo/) and everything made from it: later iterations first, then
    this iteration's evaluation, its policy when the reward model goes, and the folder last, so that a run
    stopped part way leaves nothing stale behind a trained folder that is kept."""
    for later in iteration_numbers(config)[k:]:
        _remove_path(iteration_dir(config, later))
    here = iteration_dir(config, k)
    _remove_path(here / EVAL_POLICY_JSON)
    if folder.name == "rm":
        _remove_path(here / "ppo")
    _remove_path(folder)


def _remove_path(path: Path) -> None:
    """Remove a file or folder; a symbolic link is unlinked, never followed."""
    import shutil

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
