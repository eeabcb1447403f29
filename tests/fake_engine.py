"""A scripted engine for stage tests and the memory benchmark: no model, no randomness.

Every text and every log-probability is a function of a sha256 of the request (conversation, seed,
sample index, choice), so a request gets the same answer alone, in any batch, in any process, and
after any number of resumes, which is what the resume and job-array tests compare on.

    with FakeEngine() as engine:
        revise(config, engine=engine)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from types import TracebackType

from labeler.engine import ChoiceRequest, ChoiceScores, Conversation, Generation, GenerationParams, Message

WORDS = (
    "the", "answer", "is", "careful", "kind", "safe", "honest", "because", "consider", "people", "often", "help",
    "water", "plants", "sorry", "friend", "budget", "cook", "simple", "steps", "first", "then", "avoid", "risk",
)
LONGEST_TEXT = 12  # words; keeps generated exchanges (and so the benchmark's records) small
OTHER_MASS_LOGIT = 0.0  # the logit of "any other token", so choice masses are below 1 as with real models


def digest(*parts: object) -> bytes:
    """sha256 of the JSON of `parts` (messages as role/content pairs).

    >>> digest("a", 1) == digest("a", 1), digest("a", 1) == digest("a", 2)
    (True, False)
    """
    blob = json.dumps(parts, default=_jsonable, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).digest()


def _jsonable(value: object) -> object:
    if isinstance(value, Message):
        return [value.role, value.content]
    raise TypeError(f"cannot hash {type(value).__name__}")


def scripted_text(conversation: Conversation, seed: int | None, sample: int, max_tokens: int) -> str:
    """The reply to a conversation: 1 to 12 words (one word per token), chosen by its digest.

    >>> conversation = [Message(role="user", content="hi")]
    >>> scripted_text(conversation, 1, 0, 16) == scripted_text(conversation, 1, 0, 16)
    True
    >>> len(scripted_text(conversation, 1, 0, 2).split()) <= 2
    True
    """
    key = digest(list(conversation), seed, sample)
    count = 1 + key[0] % min(LONGEST_TEXT, max_tokens)
    return " ".join(WORDS[b % len(WORDS)] for b in key[1 : 1 + count])


def scripted_logit(request: ChoiceRequest, choice: str) -> float:
    """A logit in [-3, 3) for `choice` after `request`, from their digest."""
    key = digest(list(request.messages), request.assistant_prefix, choice)
    return 6.0 * int.from_bytes(key[:4], "big") / 2**32 - 3.0


class FakeEngine:
    """Implements `labeler.engine.Engine` with scripted answers; counts what it was asked."""

    name = "fake"

    def __init__(self, model_id: str = "fake-model", max_model_len: int = 4096) -> None:
        self.model_id = model_id
        self.max_model_len = max_model_len
        self.requests: Counter[str] = Counter()  # method -> conversations or choice requests seen
        self.closed = False

    def prompt_lengths(self, conversations: Sequence[Conversation]) -> list[int]:
        # About one token per word plus a few for each turn's chat markup.
        return [sum(len(m.content.split()) + 4 for m in c) + 3 for c in conversations]

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: GenerationParams,
        seeds: Sequence[int] | None = None,
    ) -> list[Generation]:
        if seeds is not None and len(seeds) != len(conversations):
            raise ValueError(f"{len(seeds)} seeds for {len(conversations)} conversations")
        self.requests["generate"] += len(conversations)
        generations = []
        for index, conversation in enumerate(conversations):
            # Greedy decoding ignores seeds, as a real engine's does.
            seed = None if params.temperature == 0.0 else seeds[index] if seeds is not None else params.seed
            samples = [self._sample(conversation, seed, j, params) for j in range(params.n)]
            generations.append(
                Generation(
                    texts=tuple(text for text, _, _ in samples),
                    token_counts=tuple(count for _, count, _ in samples),
                    finish_reasons=tuple(reason for _, _, reason in samples),
                )
            )
        return generations

    def choice_logprobs(self, requests: Sequence[ChoiceRequest], choices: Sequence[str]) -> list[ChoiceScores]:
        self.requests["choice_logprobs"] += len(requests)
        scores = []
        for request in requests:
            logits = [scripted_logit(request, choice) for choice in choices]
            log_total = math.log(sum(math.exp(x) for x in [*logits, OTHER_MASS_LOGIT]))
            scores.append(ChoiceScores(tuple(x - log_total for x in logits)))
        return scores

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def _sample(
        conversation: Conversation, seed: int | None, sample: int, params: GenerationParams
    ) -> tuple[str, int, str]:
        text = scripted_text(conversation, seed, sample, params.max_tokens)
        hits = [text.index(stop) for stop in params.stop if stop in text]
        if hits:
            return text[: min(hits)], len(text[: min(hits)].split()), "stop"
        count = len(text.split())
        return text, count, "length" if count >= params.max_tokens else "stop"


class RuleJudge:
    """A judge whose choice scores follow a rule of the subclass's (`choice_logprobs`), for judging tests
    that need a known answer; it generates one fixed sentence and counts words as tokens."""

    name = "scripted"
    model_id = "rule-judge"
    max_model_len = 4096

    def prompt_lengths(self, conversations: Sequence[Conversation]) -> list[int]:
        return [sum(len(m.content.split()) for m in c) for c in conversations]

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams,
                 seeds: Sequence[int] | None = None) -> list[Generation]:
        return [Generation(("I compare them.",), (3,), ("stop",)) for _ in conversations]

    def choice_logprobs(self, requests: Sequence[ChoiceRequest], choices: Sequence[str]) -> list[ChoiceScores]:
        raise NotImplementedError  # each judge's rule

    def close(self) -> None:
        pass

    def __enter__(self) -> RuleJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        pass
