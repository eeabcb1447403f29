"""The engine boundary: what every stage may ask of a model, and nothing more.

Two calls, both batched:
- `generate`: chat generation through the model's chat template.
- `choice_logprobs`: the log-probability of each candidate choice as the next token (exact with the
  local engines; from a top-k list, with missing choices marked as bounded, through a server).

Of the library, only modules under `labeler/engine/` import vllm or an HTTP client; transformers also
the trainers' model modules (the import contracts in `.importlinter` say which).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from labeler.core.chat import Message

Conversation = Sequence[Message]

MAX_CONTEXT_TOKENS = 2**24
"""The longest context (and so the most new tokens) any option may ask for: beyond it a number is a typo."""


class GenerationParams(BaseModel):
    """Sampling parameters for one batched `generate` call (one object, validated once)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(1, ge=1, description="Samples per conversation.")
    temperature: float = Field(0.7, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, le=MAX_CONTEXT_TOKENS, description="Most new tokens per sample.")
    stop: tuple[str, ...] = Field((), description="Strings that end a sample (not included in the text).")
    seed: int | None = Field(
        None, description="Base seed; a per-conversation seed passed to `generate` overrides it."
    )

    @model_validator(mode="after")
    def _greedy_is_single(self) -> GenerationParams:
        if self.temperature == 0.0 and self.n > 1:
            raise ValueError(f"n={self.n} with temperature=0 would return {self.n} identical samples")
        return self


@dataclass(frozen=True)
class Generation:
    """The samples for one conversation."""

    texts: tuple[str, ...]
    token_counts: tuple[int, ...]
    finish_reasons: tuple[str, ...]  # "stop" (EOS or a stop string) or "length"
    # The sampled token ids of each sample, EOS included when one ended it (empty: not recorded).
    token_ids: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class TokenSample:
    """One completion sampled from token ids: its tokens (the stop token included when one ended it) and
    the log-probability the sampler gave each of them."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]


@dataclass(frozen=True)
class ChoiceRequest:
    """A prompt whose next token is a choice: the conversation, then the start of the assistant turn.

    `assistant_prefix` is text the assistant has already "said" (a chain-of-thought rationale, or
    "The better response is "): the choice token is scored right after it.
    """

    messages: tuple[Message, ...]
    assistant_prefix: str = ""


@dataclass(frozen=True)
class ChoiceScores:
    """Log-probabilities of each candidate choice as the next token, in the order asked.

    `bounded` (empty, or one flag per choice) marks a choice whose log-probability is only an upper
    bound: an engine that sees a top-k list instead of the whole distribution, where the choice was
    missing, reports the smallest log-probability of that list for it.

    >>> ChoiceScores((-0.1, -3.0)).any_bounded, ChoiceScores((-0.1, -3.0), (False, True)).any_bounded
    (False, True)
    """

    logprobs: tuple[float, ...]
    bounded: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if self.bounded and len(self.bounded) != len(self.logprobs):
            raise ValueError(f"{len(self.bounded)} bounded flags for {len(self.logprobs)} choices")

    @property
    def any_bounded(self) -> bool:
        """Whether some choice's log-probability is an upper bound rather than exact."""
        return any(self.bounded)

    @property
    def mass(self) -> float:
        """Total probability the model put on the candidates at all."""
        import math

        return sum(math.exp(lp) for lp in self.logprobs)


class ClosedOnExit(ABC):
    """An engine's `with` block: the engine itself, closed (its memory freed) when the block ends."""

    @abstractmethod
    def close(self) -> None:
        """Free what the engine holds (its model, processes, connections); safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@runtime_checkable
class Engine(Protocol):
    """What stages may call. Engines are context managers that free memory on exit."""

    # Read-only for stages: an engine may hold them as attributes or compute them (a lazy engine does).
    @property
    def name(self) -> str: ...

    @property
    def model_id(self) -> str: ...

    @property
    def max_model_len(self) -> int: ...

    def prompt_lengths(self, conversations: Sequence[Conversation]) -> list[int]:
        """Token count of each conversation rendered with the chat template and generation prompt."""
        ...

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: GenerationParams,
        seeds: Sequence[int] | None = None,
    ) -> list[Generation]:
        """One `Generation` per conversation; `seeds` (one per conversation) override `params.seed`."""
        ...

    def choice_logprobs(
        self, requests: Sequence[ChoiceRequest], choices: Sequence[str]
    ) -> list[ChoiceScores]:
        """For each request, log P(choice) as the next token for every choice (see `ChoiceScores`)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Engine: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class TokenSampler(Engine, Protocol):
    """An engine that also samples from token ids and takes new weights while it runs: what PPO's
    rollouts ask of the vLLM engine (`labeler.train.ppo.rollout`), beside the stages' calls."""

    def sample_tokens(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_tokens: int,
        seeds: Sequence[int],
        stop_token_ids: Sequence[int],
        greedy: bool = False,
        adapter: Path | None = None,
    ) -> list[TokenSample]:
        """One completion of token ids per prompt, sampled from the model's plain softmax (or greedy), with
        `adapter` (a PEFT adapter folder) applied; each ends at a stop token (kept) or after `max_tokens`."""
        ...

    def replace_weights(self, weights: Path) -> None:
        """Load a safetensors file of the model's tensors into the running model."""
        ...
