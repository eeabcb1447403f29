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
from labeler.stages.label import LabelConfig, LabelResult, label
from labeler.stages.revise import ReviseConfig, ReviseResult, revise
from labeler.store import merge_runs

StageConfig = ReviseConfig | LabelConfig
StageResult = ReviseResult | LabelResult


@dataclass(frozen=True)
class StageSpec:
    """What the runner needs to know of a stage."""

    name: str
    split: str  # the split of the run folder it writes
    run: Callable[[Any, Engine | None], Any]  # (config, an open engine or None) -> result
    engine: Callable[[Any], EngineConfig]  # the engine config the stage's model runs with


STAGES: dict[type, StageSpec] = {
    ReviseConfig: StageSpec("revise", "sft", lambda config, engine: revise(config, engine), lambda c: c.engine),
    LabelConfig: StageSpec("label", "preferences", lambda config, engine: label(config, engine), lambda c: c.judge),
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
    """Run a stage on Ray when `config.work.ray` names a cluster, else in this process (with `engine`
    when given: the stage's model, already open); then write the run's dataset card."""
    if config.work.ray is not None:
        from labeler.ray_runner import run_on_ray

        result: StageResult = run_on_ray(config)
    else:
        result = stage_spec(config).run(config, engine)
    write_card(config.out)
    return result


def merge_parts(parts: Sequence[Path], out: Path, *, command: str | None = None) -> Path:
    """Merge the run folders of a job array's parts into one run at `out` and write its card."""
    merge_runs(parts, out)
    write_card(out, command=command)
    return out
