"""Starting or resuming a training run in its output folder, the same way for every trainer.

`OUT/training-config.json` is written when a run starts, so an output folder always says which run it
holds: a second run is refused unless it resumes, and a resumed run must keep the first run's settings
(apart from those its config class lists as `RESUMABLE`).
"""

from __future__ import annotations

import json
from pathlib import Path

from labeler.core.errors import InputError, option
from labeler.core.layout import SAVED_CONFIG, holds_training_run, latest_checkpoint
from labeler.core.outputs import check_outputs
from labeler.store.atomic import atomic_write_text
from labeler.train.common.config import TrainingConfig
from labeler.train.common.inputs import INPUTS_KEY, compared_inputs, field_of, input_identity, saved_run_config


def resume_point(config: TrainingConfig, *, check_inputs: bool = True) -> Path | None:
    """The checkpoint to continue from (None: start afresh), after checking `config.out`; writes nothing.

    `--resume` without a checkpoint starts afresh, so a preemptible job can always pass it. A resumed run
    must read inputs with the content recorded when it started (`check_inputs=False` leaves that to the
    caller: a pipeline that replaces a stale run).
    """
    out = config.out
    check_outputs(out, "training", {field_of(option): path for option, path in config.input_paths().items()})
    saved = out / SAVED_CONFIG
    if not config.resume:
        if holds_training_run(out):
            raise InputError(
                "already holds a training run; pass ‹resume› to continue it, or choose another ‹out›", file=out
            )
        return None
    previous = saved_run_config(out)
    if previous is not None:
        compared = compared_inputs(config, previous)
        differences = config.differences(previous, by_content={field_of(option) for option in compared})
        if differences:
            raise InputError(
                "‹resume› with other settings than the run it continues (" + "; ".join(differences) + ")",
                file=saved,
            )
        changed = [option(field_of(key)) for key, differs in compared.items() if differs and check_inputs]
        if changed:
            raise InputError(
                f"‹resume› with inputs that hold other content than those the run was trained on "
                f"({', '.join(changed)} changed); choose another ‹out›, or start afresh in an empty one",
                file=saved,
                where=changed[0],
            )
    return latest_checkpoint(out)


def start_run(config: TrainingConfig) -> None:
    """Create the output folder and record the run's config in it, with what its inputs hold
    (`input_identity`): a resumed run records its inputs again, which the checks found unchanged."""
    config.out.mkdir(parents=True, exist_ok=True)
    record = {**config.model_dump(mode="json"), INPUTS_KEY: input_identity(config)}
    atomic_write_text(config.out / SAVED_CONFIG, json.dumps(record, indent=2) + "\n")
