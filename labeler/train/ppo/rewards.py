"""Rewards for PPO: one score per (prompt, completion), from a rule or from a trained reward model."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from labeler.core.chat import Message
from labeler.core.errors import InputError
from labeler.engine.base import Conversation
from labeler.engine.model_ref import ModelRef, resolve_model


@runtime_checkable
class RewardFn(Protocol):
    """Scores completions: `prompts[i]` (chat messages) was answered with `completions[i]` (text)."""

    def __call__(self, prompts: Sequence[Conversation], completions: list[str]) -> list[float]: ...


@dataclass(frozen=True)
class WordReward:
    """How many times a word appears in the completion (whole word, any case).

    >>> WordReward("blue")([[Message(role="user", content="Sky?")]] * 2, ["Blue, blue sky.", "Bluest"])
    [2.0, 0.0]
    """

    word: str
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.word.strip():
            raise ValueError("the target word is empty")
        object.__setattr__(self, "_pattern", re.compile(rf"(?<!\w){re.escape(self.word)}(?!\w)", re.IGNORECASE))

    def __call__(self, prompts: Sequence[Conversation], completions: list[str]) -> list[float]:
        return [float(len(self._pattern.findall(text))) for text in completions]


@dataclass(frozen=True)
class LengthReward:
    """The completion's length in characters over `chars` (an answer of `chars` characters scores 1).

    A length-only control: a policy trained on it answers at length and nothing else, so comparing it with
    its start (`labeler eval-policy`) shows how far a judge or a reward model prefers answers for their
    length alone.

    >>> LengthReward(10)([[Message(role="user", content="?")]] * 2, ["0123456789", "abc"])
    [1.0, 0.3]
    """

    chars: int

    def __post_init__(self) -> None:
        if self.chars < 1:
            raise ValueError("the length scale must be a positive number of characters")

    def __call__(self, prompts: Sequence[Conversation], completions: list[str]) -> list[float]:
        return [len(text) / self.chars for text in completions]


RULES: dict[str, Callable[[str], RewardFn]] = {"word": WordReward, "length": lambda chars: LengthReward(int(chars))}


def parse_reward_rule(rule: str, *, where: str = "--reward-rule") -> RewardFn:
    """A rule-based reward from its spelling `KIND:ARGUMENT` (e.g. `word:blue`).

    >>> parse_reward_rule("word:blue"), parse_reward_rule("length:200")
    (WordReward(word='blue'), LengthReward(chars=200))
    """
    kind, sep, argument = rule.partition(":")
    expected = "expected word:WORD or length:CHARS"
    if not sep or kind not in RULES or not argument.strip():
        raise InputError(f"bad reward rule {rule!r}: {expected}", where=where)
    try:
        return RULES[kind](argument)
    except ValueError as exc:
        raise InputError(f"bad reward rule {rule!r}: {exc} ({expected})", where=where) from None


class RewardModelReward:
    """Scores each full conversation (prompt + completion as the assistant's turn) with a reward model;
    a model with several heads by the weighted sum of its heads (`weights`, default the model's own)."""

    def __init__(self, folder: Path, weights: Mapping[str, float] | None = None) -> None:
        # Imported here: the reward-model package pulls in torch and transformers.
        from labeler.train.rm.model import load_reward_model

        self.model: Any = load_reward_model(folder)  # batches internally; scores on its own device
        self.weights = weights

    def __call__(self, prompts: Sequence[Conversation], completions: list[str]) -> list[float]:
        conversations = [
            [m.model_dump() for m in (*prompt, Message(role="assistant", content=completion))]
            for prompt, completion in zip(prompts, completions, strict=True)
        ]  # {role, content} dicts: what the reward model's chat template takes
        return [float(score) for score in self.model.score(conversations, self.weights).float().cpu()]


def check_reward(
    reward_model: str | None, reward_rule: str | None, reward_weights: Mapping[str, float] | None = None
) -> ModelRef | None:
    """Check the reward a config names without loading it: the rule parses, or the reward model resolves
    (and has every head `reward_weights` names)."""
    if reward_rule is not None:
        parse_reward_rule(reward_rule)
        return None
    if reward_model is None:
        raise InputError("give ‹reward_model› DIR or ‹reward_rule› KIND:ARGUMENT", field="reward_model")
    model = resolve_model(reward_model, field="reward_model", kind="reward")
    if reward_weights is not None:
        from labeler.train.rm.heads import check_head_weights, head_names

        check_head_weights(reward_weights, head_names(model.folder()), field="reward_weights")
    return model


def load_reward(
    reward_model: ModelRef | None, reward_rule: str | None, reward_weights: Mapping[str, float] | None = None
) -> RewardFn:
    """The reward a config names: a rule, or a reward model already checked by `check_reward`."""
    if reward_rule is not None:
        return parse_reward_rule(reward_rule)
    if reward_model is None:
        raise InputError("give ‹reward_model› DIR or ‹reward_rule› KIND:ARGUMENT", field="reward_model")
    return RewardModelReward(reward_model.folder(), reward_weights)
