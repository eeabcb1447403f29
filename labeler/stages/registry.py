"""The registry of the stages: what an executor (this process, model replicas, Ray) needs to know of each.

Below every executor, so that they and the runner that picks one all read the same table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labeler.engine import Engine, EngineConfig
from labeler.stages.label import LabelConfig, LabelResult, label
from labeler.stages.revise import ReviseConfig, ReviseResult, revise

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
