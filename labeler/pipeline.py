"""`labeler run CONFIG.yaml`: the whole job from one validated file.

Stages run in order: revise → label → train-rm → ppo → report. Each stage is resumable on its own
(shards with fingerprints, training checkpoints), so re-running the same config after a crash skips
finished stages and continues the interrupted one at the record or step where it stopped. The judge
engine is opened once, lazily, and shared by the stages that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from labeler.engine import EngineConfig, GenerationParams, resolve_model
from labeler.errors import InputError, InputErrors
from labeler.ppo.config import PPOConfig
from labeler.rm.config import RMTrainConfig
from labeler.stages.common import WorkSelection
from labeler.stages.judge import JudgeOptions

_FORBID = ConfigDict(frozen=True, extra="forbid")


def _stage_model(name: str, source: type[BaseModel], drop: set[str], **extra: Any) -> type[BaseModel]:
    """A stage section made from a trainer's own config (help text written once, in one place)."""
    fields: dict[str, Any] = {
        key: (info.annotation, info) for key, info in source.model_fields.items() if key not in drop
    }
    fields.update(extra)
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
        description="'revise' (initial vs final revision of this run), 'prompts' (two policy samples), or a pairs file.",
    )
    pair_sampling: GenerationParams = Field(
        default_factory=lambda: GenerationParams(n=2, temperature=1.0, top_p=0.95, max_tokens=160),
        description="How the policy samples the two responses when pairs is 'prompts'.",
    )
    options: JudgeOptions = Field(default_factory=JudgeOptions, description="How pairs are judged (seed: the run's).")


TrainRMStage = _stage_model(
    "TrainRMStage",
    RMTrainConfig,
    {"data", "out", "resume", "base_model", "seed", "constitution"},
    base_model=(str, Field("default", description="Backbone: a model folder or 'default' (the embedded model).")),
)
PPOStage = _stage_model(
    "PPOStage",
    PPOConfig,
    {"policy", "prompts", "out", "reward_model", "reward_rule", "seed", "resume"},
    policy=(str, Field("default", description="Policy model folder or 'default' (the embedded model).")),
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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the run config: {exc}", file=path) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"invalid YAML: {exc}", file=path, line=mark.line + 1 if mark else None) from exc
    if not isinstance(data, dict):
        raise InputError("a run config is a YAML mapping", file=path)
    try:
        config = RunConfig.model_validate(data)
    except InputError as exc:  # a validator that names the option itself (engine server settings)
        raise InputError(exc.message, file=path, where=exc.where) from exc
    except ValidationError as exc:
        raise InputErrors(
            [
                InputError(f"{problem['msg']} (got {problem.get('input')!r})", file=path,
                           where="key " + ".".join(str(p) for p in problem["loc"]))
                for problem in exc.errors()
            ]
        ) from exc
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


def run_pipeline(config: RunConfig) -> RunResult:
    """Run every configured stage in order; each resumes where a previous attempt stopped."""
    from labeler.engine.lazy import LazyEngine
    from labeler.ray_runner import run_stage
    from labeler.stages.label import LabelConfig
    from labeler.stages.revise import ReviseConfig

    result = RunResult(config.out)
    s = config.stages
    with LazyEngine(config.engine) as engine:
        policy_cfg = config.policy or config.engine
        if s.revise is not None:
            revise_config = ReviseConfig(
                constitution=config.constitution, prompts=config.prompts, out=config.out, rounds=s.revise.rounds,
                engine=policy_cfg, sampling=s.revise.sampling, seed=config.seed, templates=config.templates,
                work=config.work,
            )
            # On Ray (work.ray) each worker opens its own engine and the lazy one here never starts.
            run_stage(revise_config, engine=engine if config.policy is None else None)
            result.stages_run.append("revise")
        if s.label is not None:
            source: dict[str, Any] = {}
            if s.label.pairs == "revise":
                source["pairs_from"] = config.out
            elif s.label.pairs == "prompts":
                source["prompts"] = config.prompts
            else:
                source["pairs"] = s.label.pairs
            label_config = LabelConfig(
                constitution=config.constitution, out=config.out, judge=config.engine, policy=config.policy,
                pair_sampling=s.label.pair_sampling, options=s.label.options.model_copy(update={"seed": config.seed}),
                templates=config.templates, work=config.work, **source,
            )
            run_stage(label_config, engine=engine)
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


def _train_rm(config: RunConfig, stage: BaseModel) -> Path:
    from labeler.rm.train import train_reward_model

    out = config.out / "rm"
    settings = stage.model_dump()
    base = str(resolve_model(settings.pop("base_model")))
    constitution = config.constitution if settings.get("principle_conditioned") else None
    if _finished(out, "labeler-rm.json"):
        return out
    train_reward_model(
        RMTrainConfig(data=(config.out,), out=out, base_model=base, seed=config.seed,
                      constitution=constitution, resume=_has_checkpoint(out), **settings)
    )
    return out


def _ppo(config: RunConfig, stage: BaseModel, rm_dir: Path) -> Path:
    from labeler.ppo.train import train_ppo

    out = config.out / "ppo"
    settings = stage.model_dump()
    policy = resolve_model(settings.pop("policy"))
    ppo_config = PPOConfig(policy=policy, prompts=config.prompts, out=out, reward_model=rm_dir, seed=config.seed,
                           resume=_has_checkpoint(out), **settings)
    train_ppo(ppo_config)
    return out


def _has_checkpoint(out: Path) -> bool:
    return any(out.glob("checkpoint-*"))


def _finished(out: Path, marker: str) -> bool:
    return (out / marker).is_file()
