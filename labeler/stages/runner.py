"""Running a stage: here, in one process per model replica or on a Ray cluster; the dataset card written once.

    result = run_stage(config)          # a ReviseConfig or a LabelConfig
    merge_parts(parts, out)             # the parts of a job array -> one run, with its card
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import overload

from labeler.core.errors import InputError
from labeler.engine import Engine
from labeler.stages.label import LabelConfig, LabelResult
from labeler.stages.registry import StageConfig, StageResult, stage_spec
from labeler.stages.revise import ReviseConfig, ReviseResult
from labeler.store import merge_runs
from labeler.store.card import write_card
from labeler.store.lock import command_lock


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
            from labeler.stages.on_ray import run_on_ray

            if replicas > 1:
                raise InputError("‹ray› places one engine per worker; leave out ‹data_parallel_size›", field="work.ray")
            result: StageResult = run_on_ray(config)
        elif replicas > 1:
            from labeler.stages.parts import run_in_parts
            from labeler.stages.replicas import ReplicaExecutor

            result = run_in_parts(config, ReplicaExecutor(), how="‹data_parallel_size›")
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
