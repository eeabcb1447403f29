"""An engine that starts on first use: a resumed pipeline whose stages are already done never waits
for a model to load."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from labeler.engine import EngineConfig, open_engine, resolve_model
from labeler.engine.base import ChoiceRequest, ChoiceScores, Conversation, Engine, Generation, GenerationParams


class LazyEngine:
    """Opens the engine its config names the first time it is asked to compute anything."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.name = config.name
        # A server's model is a name it serves, not a folder here.
        self.model_id = config.model if config.name == "openai" else str(resolve_model(config.model))
        self._engine: Engine | None = None

    @property
    def started(self) -> bool:
        return self._engine is not None

    def _get(self) -> Engine:
        if self._engine is None:
            self._engine = open_engine(self.config.model_copy(update={"model": self.model_id}))
        return self._engine

    @property
    def max_model_len(self) -> int:  # type: ignore[override]
        return self._get().max_model_len

    @property
    def choice_method(self) -> str:
        """What the engine scores choices with (see `labeler.engine.choice_method_of`); opens it."""
        from labeler.engine import choice_method_of

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

    def __enter__(self) -> LazyEngine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["LazyEngine"]
