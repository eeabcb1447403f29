"""Running a stage: one registry of the stages, run here or on a Ray cluster, the dataset card written once.

    result = run_stage(config)          # a ReviseConfig or a LabelConfig
    merge_parts(parts, out)             # the parts of a job array -> one run, with its card
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from labeler.card import write_card
from labeler.engine import Engine, EngineConfig
from labeler.errors import InputError
from labeler.stages.label import LabelConfig, LabelResult, label
from labeler.stages.revise import ReviseConfig, ReviseResult, revise
from labeler.store import merge_runs
from labeler.store.lock import command_lock

StageConfig = ReviseConfig | LabelConfig
StageResult = ReviseResult | LabelResult


@dataclass(frozen=True)
class StageSpec:
    """What the runner needs to know of a stage."""

    name: str
    split: str  # the split of the run folder it writes
    run: Callable[[Any, Engine | None], Any]  # (config, an open engine or None) -> result
    engine_fields: tuple[str, ...]  # the config's engine sections, the first its main model's

    def engine(self, config: Any) -> EngineConfig:
        """The engine config the stage's main model runs with."""
        engine: EngineConfig = getattr(config, self.engine_fields[0])
        return engine


STAGES: dict[type, StageSpec] = {
    ReviseConfig: StageSpec("revise", "sft", lambda config, engine: revise(config, engine), ("engine",)),
    LabelConfig: StageSpec("label", "preferences", lambda config, engine: label(config, engine), ("judge", "policy")),
}


def stage_spec(config: StageConfig) -> StageSpec:
    """The registry entry of a stage config."""
    try:
        return STAGES[type(config)]
    except KeyError:
        raise TypeError(f"no stage runs a {type(config).__name__}") from None


@overload
def run_stage(config: ReviseConfig, engine: Engine | None = None) -> ReviseResult: ...


@overload
def run_stage(config: LabelConfig, engine: Engine | None = None) -> LabelResult: ...


def run_stage(config: StageConfig, engine: Engine | None = None) -> StageResult:
    """Run a stage on Ray when `config.work.ray` names a cluster, in one process per model replica when
    its engine has `data_parallel_size` > 1, else in this process (with `engine` when given: the stage's
    model, already open); then write the run's dataset card."""
    # One writer per run: the lock a stage takes before its first write stays held through the card.
    with command_lock(config.out):
        replicas = stage_spec(config).engine(config).data_parallel_size
        if config.work.ray is not None:
            from labeler.ray_runner import run_on_ray

            if replicas > 1:
                raise InputError("--ray places one engine per worker; leave out --data-parallel-size", where="--ray")
            result: StageResult = run_on_ray(config)
        elif replicas > 1:
            from labeler.stages.parts import run_in_parts
            from labeler.stages.replicas import ReplicaExecutor

            result = run_in_parts(config, ReplicaExecutor(), how="--data-parallel-size")
        else:
            result = stage_spec(config).run(config, engine)
        write_card(config.out)
    return result


def merge_parts(parts: Sequence[Path], out: Path, *, command: str | None = None) -> Path:
    """Merge the run folders of a job array's parts into one run at `out` and write its card."""
    with command_lock(out):
        merge_runs(parts, out)
        write_card(out, command=command)
    return out
