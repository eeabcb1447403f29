"""`labeler run CONFIG.yaml`: the whole job from one validated file.

Stages run in order: revise → label → train-rm → ppo → report. Each stage is resumable on its own
(shards with fingerprints, training checkpoints), so re-running the same config after a crash skips
finished stages and continues the interrupted one at the record or step where it stopped. The judge
engine is opened once, lazily, and shared by the stages that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from labeler.config_files import read_yaml_mapping
from labeler.engine import EngineConfig, GenerationParams
from labeler.errors import InputError, InputErrors
from labeler.inputs import check_input_file
from labeler.ppo.config import PPOConfig
from labeler.rm.config import RMTrainConfig
from labeler.stages.common import WorkSelection
from labeler.stages.judge import JudgeOptions

if TYPE_CHECKING:
    from labeler.stages.label import LabelConfig
    from labeler.stages.revise import ReviseConfig

_FORBID = ConfigDict(frozen=True, extra="forbid")


def _stage_model(name: str, source: type[BaseModel], drop: set[str]) -> type[BaseModel]:
    """A stage section made from a trainer's own config (help text written once, in one place)."""
    fields: dict[str, Any] = {
        key: (info.annotation, info) for key, info in source.model_fields.items() if key not in drop
    }
    return create_model(name, __config__=_FORBID, __doc__=f"The `{name}` stage: fields of {source.__name__}.", **fields)


class ReviseStage(BaseModel):
    """Critique-and-revise (SFT split)."""

    model_config = _FORBID
    rounds: int = Field(2, ge=1, le=16, description="Critique-and-revise rounds per prompt.")
    sampling: GenerationParams = Field(
        default_factory=lambda: GenerationParams(temperature=0.7, top_p=0.95, max_tokens=160),
        description="Sampling for responses, critiques and revisions.",
    )


class LabelStage(BaseModel):
    """A/B judging (preference split)."""

    model_config = _FORBID
    pairs: Literal["revise", "prompts"] | Path = Field(
        "revise",
        description="'revise' (initial vs final revision of this run), 'prompts' (two policy samples), "
        "or a pairs file.",
    )
    pair_sampling: GenerationParams = Field(
        default_factory=lambda: GenerationParams(n=2, temperature=1.0, top_p=0.95, max_tokens=160),
        description="How the policy samples the two responses when pairs is 'prompts'.",
    )
    options: JudgeOptions = Field(default_factory=JudgeOptions, description="How pairs are judged (seed: the run's).")


# The trainers' own configs, less what the run config decides for them (data, output folder, seed, resuming).
TrainRMStage = _stage_model("TrainRMStage", RMTrainConfig, {"data", "out", "resume", "seed", "constitution", "quiet"})
PPOStage = _stage_model(
    "PPOStage", PPOConfig, {"prompts", "out", "reward_model", "reward_rule", "seed", "resume", "quiet"}
)


class Stages(BaseModel):
    """Which stages run; a stage left out (or null) is skipped."""

    model_config = _FORBID
    revise: ReviseStage | None = Field(default_factory=ReviseStage, description="Critique-and-revise.")
    label: LabelStage | None = Field(default_factory=LabelStage, description="A/B judging.")
    train_rm: TrainRMStage | None = Field(None, description="Reward-model training on the preference split.")  # type: ignore[valid-type]
    ppo: PPOStage | None = Field(None, description="PPO against the trained reward model.")  # type: ignore[valid-type]
    report: bool = Field(True, description="Write RUN/report/ with statistics and plots.")


class RunConfig(BaseModel):
    """A whole labeler job."""

    model_config = _FORBID
    out: Path = Field(description="Run folder: sft/, preferences/, rm/, ppo/, report/, manifest.json.")
    constitution: Path = Field(description="Constitution file.")
    prompts: Path = Field(description="Prompts file (JSONL/Parquet/Arrow).")
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
        return self


def load_run_config(path: Path) -> RunConfig:
    """Read and validate a run config; relative paths are taken from the config file's folder."""
    data = read_yaml_mapping(path)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for problem in exc.errors():
            key = ".".join(str(part) for part in problem["loc"])
            message = str(problem["msg"]).removeprefix("Value error, ")
            if key:
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
                              "prompts": fix(config.prompts)}
    if config.templates is not None:
        update["templates"] = fix(config.templates)
    label = config.stages.label
    if label is not None and isinstance(label.pairs, Path):
        stages = config.stages.model_copy(update={"label": label.model_copy(update={"pairs": fix(label.pairs)})})
        update["stages"] = stages
    return config.model_copy(update=update)


@dataclass
class RunResult:
    out: Path
    stages_run: list[str] = field(default_factory=list)
    rm_dir: Path | None = None
    ppo_dir: Path | None = None
    report: Path | None = None


# What a command-line option is called in a run config, for messages about a config's checks.
CONFIG_KEYS = {
    "--prompts": "prompts", "--constitution": "constitution", "--templates": "templates", "--out": "out",
    "--judge-model": "engine.model", "--policy-model": "policy.model",
    "--pairs": "stages.label.pairs", "--base-model": "stages.train_rm.base_model", "--policy": "stages.ppo.policy",
}


def revise_config(config: RunConfig) -> ReviseConfig:
    """The revise stage of a run (its policy: `policy`, else `engine`)."""
    from labeler.stages.revise import ReviseConfig

    assert config.stages.revise is not None
    return ReviseConfig(
        constitution=config.constitution, prompts=config.prompts, out=config.out, rounds=config.stages.revise.rounds,
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
        constitution=config.constitution, out=config.out, judge=config.engine, policy=config.policy,
        pair_sampling=stage.pair_sampling, options=stage.options.model_copy(update={"seed": config.seed}),
        templates=config.templates, work=config.work, **source,
    )


def check_pipeline(config: RunConfig) -> None:
    """Every check of every stage that needs no model, before any stage runs: bad input in a late stage
    is found before an early one has spent hours. Problems name the config key."""
    from labeler.models import resolve_model
    from labeler.ppo.train import load_prompts
    from labeler.rm.train import label_kind_for
    from labeler.stages.label import check_label
    from labeler.stages.revise import check_revise
    from labeler.training.resume import resume_point

    try:
        check_input_file(config.prompts, where="key prompts")
        s = config.stages
        if s.revise is not None:
            check_revise(revise_config(config))
        if s.label is not None:
            check_label(label_config(config), inputs_ready=s.label.pairs != "revise")
        if s.train_rm is not None:
            rm = train_rm_config(config, s.train_rm)
            resolve_model(rm.base_model, where="--base-model")
            label_kind_for(rm)
            resume_point(rm)
        if s.ppo is not None and s.train_rm is not None:
            ppo = ppo_config(config, s.ppo)
            resolve_model(ppo.policy, where="--policy", kind="policy")
            load_prompts(config.prompts)
            resume_point(ppo)
    except InputErrors as exc:
        raise InputErrors([_with_config_key(e, config) for e in exc.errors]) from None
    except InputError as exc:
        raise _with_config_key(exc, config) from None


def _with_config_key(error: InputError, config: RunConfig) -> InputError:
    """The error with the option it names replaced by the run config's key."""
    keys = {**CONFIG_KEYS, "--model": "policy.model" if config.policy is not None else "engine.model"}
    if error.where not in keys:
        return error
    return InputError(error.message, file=error.file, line=error.line, where=f"key {keys[error.where]}")


def device_plan(config: RunConfig) -> list[str]:
    """Where each stage's models run: replicas x devices each, and the devices a node needs for that.

    >>> device_plan(RunConfig(out=Path("o"), constitution=Path("c"), prompts=Path("p")))[0]
    'revise: policy default, 1 replica x 1 device = 1 device'
    """

    def engine_line(stage: str, role: str, engine: EngineConfig) -> str:
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
    return lines


def run_pipeline(config: RunConfig) -> RunResult:
    """Run every configured stage in order; each resumes where a previous attempt stopped."""
    from labeler.engine.lazy import LazyEngine
    from labeler.stages.runner import run_stage

    check_pipeline(config)
    result = RunResult(config.out)
    s = config.stages
    with LazyEngine(config.engine) as engine:
        if s.revise is not None:
            # On Ray (work.ray) each worker opens its own engine and the lazy one here never starts.
            run_stage(revise_config(config), engine=engine if config.policy is None else None)
            result.stages_run.append("revise")
        if s.label is not None:
            run_stage(label_config(config), engine=engine)
            result.stages_run.append("label")
    # The engine is closed here: training needs the memory.
    if s.train_rm is not None:
        result.rm_dir = _train_rm(config, s.train_rm)
        result.stages_run.append("train_rm")
    if s.ppo is not None and result.rm_dir is not None:
        result.ppo_dir = _ppo(config, s.ppo, result.rm_dir)
        result.stages_run.append("ppo")
    if s.report:
        from labeler.report import write_report

        result.report = write_report(config.out, rm_dirs=[result.rm_dir] if result.rm_dir else [])
        result.stages_run.append("report")
    return result


def train_rm_config(config: RunConfig, stage: BaseModel) -> RMTrainConfig:
    """The reward-model training of a run: on its preference split, into RUN/rm, resuming what is there."""
    settings = stage.model_dump()
    constitution = config.constitution if settings.get("principle_conditioned") else None
    return RMTrainConfig(data=(config.out,), out=config.out / "rm", seed=config.seed, constitution=constitution,
                         resume=True, quiet=config.work.quiet, **settings)


def ppo_config(config: RunConfig, stage: BaseModel) -> PPOConfig:
    """The PPO of a run: against RUN/rm, into RUN/ppo, resuming what is there."""
    return PPOConfig(prompts=config.prompts, out=config.out / "ppo", reward_model=str(config.out / "rm"),
                     seed=config.seed, resume=True, quiet=config.work.quiet, **stage.model_dump())


def _train_rm(config: RunConfig, stage: BaseModel) -> Path:
    from labeler.rm.model import REWARD_CARD
    from labeler.rm.train import train_reward_model

    rm_config = train_rm_config(config, stage)
    if not (rm_config.out / REWARD_CARD).is_file():  # the card is written last: the model is finished
        train_reward_model(rm_config)
    return rm_config.out


def _ppo(config: RunConfig, stage: BaseModel, rm_dir: Path) -> Path:
    from labeler.ppo.train import train_ppo

    ppo = ppo_config(config, stage)
    train_ppo(ppo)
    return ppo.out
