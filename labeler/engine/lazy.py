"""An engine that starts on first use: a resumed pipeline whose stages are already done never waits
for a model to load."""

from __future__ import annotations

from collections.abc import Sequence

from labeler.engine import EngineConfig, engine_model, open_engine
from labeler.engine.base import (
    ChoiceRequest,
    ChoiceScores,
    ClosedOnExit,
    Conversation,
    Engine,
    Generation,
    GenerationParams,
)
from labeler.engine.model_ref import ModelRef


class LazyEngine(ClosedOnExit):
    """Opens the engine its config names the first time it is asked to compute anything."""

    def __init__(self, config: EngineConfig, model: ModelRef | None = None) -> None:
        self.config = config
        self.name = config.name
        self.model = model or engine_model(config)
        self.model_id = self.model.label  # for the openai engine, the name the servers serve
        self._engine: Engine | None = None

    @property
    def started(self) -> bool:
        return self._engine is not None

    def _get(self) -> Engine:
        if self._engine is None:
            self._engine = open_engine(self.config, self.model)
        return self._engine

    @property
    def max_model_len(self) -> int:
        return self._get().max_model_len

    @property
    def choice_method(self) -> str:
        """What the engine scores choices with (see `labeler.engine.choice_method_of`): a local engine stays
        closed; an openai engine opens (it asks its servers, which loads nothing here)."""
        from labeler.engine import choice_method_of

        if self.config.name != "openai":
            return "exact"
        return choice_method_of(self._get())

    def prompt_lengths(self, conversations: Sequence[Conversation]) -> list[int]:
        return self._get().prompt_lengths(conversations)

    def generate(
        self, conversations: Sequence[Conversation], params: GenerationParams, seeds: Sequence[int] | None = None
    ) -> list[Generation]:
        return self._get().generate(conversations, params, seeds)

    def choice_logprobs(self, requests: Sequence[ChoiceRequest], choices: Sequence[str]) -> list[ChoiceScores]:
        return self._get().choice_logprobs(requests, choices)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


__all__ = ["LazyEngine"]
