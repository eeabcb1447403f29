"""The openai engine: OpenAI-compatible servers (`vllm serve`, TGI, hosted APIs) behind the engine contract.

Generation goes through the chat completions API, one request per sample, each with its own seed
derived from the conversation's seed (as the hf engine derives them), so a server that honours `seed`
gives a prompt the same samples whatever batch it comes in.

Choice scoring reads the server's log-probabilities, in one of two ways (the fingerprint records which):

- `continue_prefix`: the conversation ends with the judge's answer prefix as an open assistant
  message (`continue_final_message`, which vLLM's server offers), one token is generated, and the top
  log-probabilities of that token are read: the position the local engines score;
- `first_token_topk`, for servers that cannot continue a message: the prefix becomes a finished
  assistant turn, a user turn asks for the letter alone, and the top log-probabilities of the reply's
  first token are read, the spellings of a letter (" A", "(A", "A)") taken together.

Either way the server returns at most 20 log-probabilities: a choice outside them gets the smallest
one as an upper bound and is marked (the pair is flagged `choice_outside_topk`).

The methods are synchronous, like the other engines': each runs its batch's requests on a private
event loop, spread over the servers by `ServerPool` (bounded concurrency, explicit retries).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from labeler.core.chat import Message
from labeler.core.errors import EngineError, InputError
from labeler.engine.base import (
    ChoiceRequest,
    ChoiceScores,
    ClosedOnExit,
    Conversation,
    Generation,
    GenerationParams,
)
from labeler.engine.chat import derive_seed
from labeler.engine.pool import RetryPolicy, Server, ServerPool
from labeler.engine.topk import scores_from_topk

if TYPE_CHECKING:
    from labeler.engine import EngineConfig

T = TypeVar("T")

CONTINUE_PREFIX = "continue_prefix"
FIRST_TOKEN_TOPK = "first_token_topk"
TOP_LOGPROBS = 20  # the most the OpenAI API returns (vLLM's server: its --max-logprobs, 20 by default)
NO_KEY = "EMPTY"  # the client insists on some key; servers started without one ignore it (vLLM's convention)
# Chat markup a template adds around each turn and at its start, in tokens, for the byte bound of
# `prompt_token_bound` (ChatML: "<|im_start|>user\n" ... "<|im_end|>\n"; a default system prompt).
TURN_MARKUP_TOKENS = 16
TEMPLATE_OPENING_TOKENS = 128


def resolve_choice_method(setting: str, owners: Sequence[str]) -> str:
    """The scoring method to use: `setting`, or for "auto" what every server can do.

    `owners` are the `owned_by` fields the servers report for the model; vLLM's server reports "vllm"
    and continues a final assistant message. Any other server gets the method every server supports.

    >>> resolve_choice_method("auto", ["vllm", "vllm"])
    'continue_prefix'
    >>> resolve_choice_method("auto", ["vllm", "openai"])
    'first_token_topk'
    >>> resolve_choice_method("first_token_topk", ["vllm"])
    'first_token_topk'
    """
    if setting != "auto":
        return setting
    return CONTINUE_PREFIX if owners and all(owner == "vllm" for owner in owners) else FIRST_TOKEN_TOPK


def chat_messages(conversation: Conversation) -> list[dict[str, str]]:
    """The conversation as the API takes it: {role, content} objects."""
    return [m.model_dump() for m in conversation]


def continue_prefix_body(request: ChoiceRequest) -> tuple[tuple[Message, ...], dict[str, Any] | None]:
    """Messages and extra request fields that make the server continue the assistant prefix.

    Trailing whitespace leaves the prefix: a tokenizer folds a space into the next word (" A"), and a
    prompt that ends in a bare space asks the model for an unnatural next token.

    >>> from labeler.engine.base import Message
    >>> messages, extra = continue_prefix_body(ChoiceRequest((Message(role="user", content="Q?"),), "Answer: "))
    >>> messages[-1], extra
    (Message(role='assistant', content='Answer:'), {'continue_final_message': True, 'add_generation_prompt': False})
    >>> continue_prefix_body(ChoiceRequest((Message(role="user", content="Q?"),)))[1] is None
    True
    """
    prefix = request.assistant_prefix.rstrip()
    if not prefix:
        return request.messages, None  # the choice is the first token of a fresh assistant turn
    messages = (*request.messages, Message(role="assistant", content=prefix))
    return messages, {"continue_final_message": True, "add_generation_prompt": False}


def letter_instruction(choices: Sequence[str]) -> str:
    """The user turn that asks for the choice alone.

    >>> letter_instruction(["A", "B"])
    'Reply with just A or B, nothing else.'
    >>> letter_instruction(["A", "B", "C"])
    'Reply with just A, B or C, nothing else.'
    """
    listed = ", ".join(choices[:-1]) + " or " + choices[-1]
    return f"Reply with just {listed}, nothing else."


def first_token_messages(request: ChoiceRequest, choices: Sequence[str]) -> tuple[Message, ...]:
    """The conversation, what the assistant already said (if anything), then a request for the letter.

    >>> from labeler.engine.base import Message
    >>> request = ChoiceRequest((Message(role="user", content="Which is better?"),), "The better response is (")
    >>> [m.role for m in first_token_messages(request, ["A", "B"])]
    ['user', 'assistant', 'user']
    """
    said = request.assistant_prefix.strip()
    opening = (Message(role="assistant", content=said),) if said else ()
    return (*request.messages, *opening, Message(role="user", content=letter_instruction(choices)))


def first_token_top(response: Any) -> list[tuple[str, float]]:
    """(token, log-probability) pairs the server listed for the first generated token."""
    choice = response.choices[0]
    content = choice.logprobs.content if choice.logprobs is not None else None
    if not content:
        raise EngineError("the server returned no log-probabilities; choice scoring needs a server that does")
    first = content[0]
    return [(t.token, float(t.logprob)) for t in first.top_logprobs] + [(first.token, float(first.logprob))]


def tokenize_url(base_url: str) -> str:
    """Where vLLM's server counts tokens: /tokenize at its root, beside /v1.

    >>> tokenize_url("http://10.0.0.5:8000/v1/")
    'http://10.0.0.5:8000/tokenize'
    """
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/").removesuffix("/v1")
    return urlunsplit((parts.scheme, parts.netloc, f"{path}/tokenize", "", ""))


def prompt_token_bound(conversation: Conversation) -> int:
    """An upper bound on a conversation's prompt tokens without the model's tokenizer.

    Byte-level BPE and byte-fallback tokenizers never make a token of less than one byte, so a text
    has at most as many tokens as UTF-8 bytes; the chat template adds markup around each turn and may
    open with a default system prompt (allowances above).

    >>> from labeler.engine.base import Message
    >>> prompt_token_bound([Message(role="user", content="héllo")])  # 128 + 16 * 2 turns + 6 bytes
    166
    """
    text_bytes = sum(len(m.content.encode("utf-8")) for m in conversation)
    return TEMPLATE_OPENING_TOKENS + TURN_MARKUP_TOKENS * (len(conversation) + 1) + text_bytes


class OpenAIEngine(ClosedOnExit):
    """Batched chat generation and choice scoring through OpenAI-compatible servers."""

    name = "openai"

    def __init__(self, config: EngineConfig, api_key: str | None) -> None:
        import openai

        self.model_id = config.model
        self._loop = asyncio.new_event_loop()
        servers = [
            Server(url, openai.AsyncOpenAI(base_url=url, api_key=api_key or NO_KEY, max_retries=0,
                                           timeout=config.request_timeout))
            for url in config.base_urls
        ]
        policy = RetryPolicy(config.max_retries, config.retry_backoff, config.retry_max_wait, config.eject_after)
        self.pool = ServerPool(servers, concurrency=config.concurrency, policy=policy)
        self._closed = False
        try:
            cards = self._run(self._probe())
        except BaseException:
            self.close()
            raise
        self.choice_method = resolve_choice_method(config.choice_method, [str(c.owned_by) for c in cards])
        reported = [c.max_model_len for c in cards if isinstance(getattr(c, "max_model_len", None), int)]
        self._max_model_len = config.max_model_len or (min(reported) if reported else None)
        self._can_tokenize: bool | None = None  # learnt at the first prompt_lengths call

    # -- Engine protocol -------------------------------------------------------------------------

    @property
    def max_model_len(self) -> int:
        if self._max_model_len is None:
            raise InputError(
                "the servers do not report the model's context length; set max_model_len in the engine config",
                where="max_model_len",
            )
        return self._max_model_len

    def prompt_lengths(self, conversations: Sequence[Conversation]) -> list[int]:
        """Exact counts from vLLM's /tokenize; elsewhere an upper bound (`prompt_token_bound`)."""
        if not conversations:
            return []
        if self._can_tokenize is not False:
            counts = self._run(self.pool.map([partial(self._count, c) for c in conversations], "tokenize"))
            self._can_tokenize = all(n is not None for n in counts)
            if self._can_tokenize:
                return [n for n in counts if n is not None]
        return [prompt_token_bound(c) for c in conversations]

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: GenerationParams,
        seeds: Sequence[int] | None = None,
    ) -> list[Generation]:
        if seeds is not None and len(seeds) != len(conversations):
            raise ValueError(f"{len(seeds)} seeds for {len(conversations)} conversations")
        base = params.seed if params.seed is not None else 0
        request_seeds = list(seeds) if seeds is not None else [base] * len(conversations)
        calls = [
            partial(self._sample, c, params, derive_seed(request_seeds[i], j))
            for i, c in enumerate(conversations)
            for j in range(params.n)
        ]
        samples = self._run(self.pool.map(calls, "a generation request"))
        generations = []
        for i in range(len(conversations)):
            mine = samples[i * params.n : (i + 1) * params.n]
            generations.append(
                Generation(
                    texts=tuple(text for text, _, _ in mine),
                    token_counts=tuple(count for _, count, _ in mine),
                    finish_reasons=tuple(reason for _, _, reason in mine),
                )
            )
        return generations

    def choice_logprobs(self, requests: Sequence[ChoiceRequest], choices: Sequence[str]) -> list[ChoiceScores]:
        if len(choices) < 2 or len(set(choices)) != len(choices):
            raise ValueError(f"need at least two distinct choices, got {list(choices)}")
        calls = [partial(self._score, r, tuple(choices)) for r in requests]
        return self._run(self.pool.map(calls, "a choice-scoring request"))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run_until_complete(self._close_clients())
        finally:
            self._loop.close()

    # -- requests --------------------------------------------------------------------------------

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(work)

    async def _close_clients(self) -> None:
        await asyncio.gather(*(s.client.close() for s in self.pool.servers))

    async def _probe(self) -> list[Any]:
        """Each server's entry for the model; servers that do not answer leave the rotation."""
        answers = await asyncio.gather(
            *(self.pool.call(_list_models, "GET /models", server=s) for s in self.pool.servers),
            return_exceptions=True,
        )
        failed = [(s, a) for s, a in zip(self.pool.servers, answers) if isinstance(a, BaseException)]
        if len(failed) == len(answers):
            raise failed[0][1]
        for server, error in failed:
            if not isinstance(error, EngineError):
                raise error
            server.out = True
            print(f"warning: {server.url} left the rotation: {error}", file=sys.stderr)
        cards = []
        for server, answer in zip(self.pool.servers, answers):
            if server.out or isinstance(answer, BaseException):
                continue
            card = next((m for m in answer if m.id == self.model_id), None)
            if card is None:
                served = ", ".join(sorted(m.id for m in answer)) or "nothing"
                raise InputError(f"{server.url} does not serve {self.model_id!r} (it serves: {served})",
                                 field="model")
            cards.append(card)
        return cards

    async def _sample(
        self, conversation: Conversation, params: GenerationParams, seed: int, client: Any
    ) -> tuple[str, int, str]:
        options: dict[str, Any] = {}
        if params.stop:
            options["stop"] = list(params.stop)
        response = await client.chat.completions.create(
            model=self.model_id, messages=chat_messages(conversation), n=1, temperature=params.temperature,
            top_p=params.top_p, max_tokens=params.max_tokens, seed=seed, **options,
        )
        choice = response.choices[0]
        if response.usage is None:
            raise EngineError("the server reported no token usage for a generation")
        reason = "length" if choice.finish_reason == "length" else "stop"
        return choice.message.content or "", int(response.usage.completion_tokens), reason

    async def _score(self, request: ChoiceRequest, choices: tuple[str, ...], client: Any) -> ChoiceScores:
        if self.choice_method == CONTINUE_PREFIX:
            messages, extra = continue_prefix_body(request)
        else:
            messages, extra = first_token_messages(request, choices), None
        response = await client.chat.completions.create(
            model=self.model_id, messages=chat_messages(messages), max_tokens=1, temperature=0.0, logprobs=True,
            top_logprobs=TOP_LOGPROBS, extra_body=extra,
        )
        return scores_from_topk(first_token_top(response), choices, loose=self.choice_method == FIRST_TOKEN_TOPK)

    async def _count(self, conversation: Conversation, client: Any) -> int | None:
        """vLLM's token count of the conversation with the generation prompt; None where /tokenize is absent."""
        import openai

        body = {"model": self.model_id, "messages": chat_messages(conversation), "add_generation_prompt": True}
        try:
            answer = await client.post(tokenize_url(str(client.base_url)), cast_to=object, body=body)
        except openai.NotFoundError:
            return None
        if not isinstance(answer, dict) or not isinstance(answer.get("count"), int):
            raise EngineError(f"/tokenize answered without a token count: {str(answer)[:200]}")
        return int(answer["count"])


async def _list_models(client: Any) -> list[Any]:
    page = await client.models.list()
    return list(page.data)
