"""Requests spread over one or more OpenAI-compatible servers, with retries labeler controls.

The openai client is built with `max_retries=0`; every retry happens here, so what is retried, how
long it waits and when the run gives up is explicit (and tested):

- retried: HTTP 408, 429 and 5xx, timeouts, refused or dropped connections; anything else (a bad
  request, a wrong key, an unknown model) stops at once with the server's message;
- the wait before retry r is `backoff * 2**(r-1)`, capped at `max_wait`, times a jitter in [0.5, 1)
  so that many clients do not retry in step, and never shorter than the server's Retry-After;
- a request is retried on whichever server is free, up to `max_retries` times; then the call raises
  `EngineError` and nothing of the batch is returned (the run stays resumable);
- a server that fails `eject_after` times in a row (429 does not count: it is busy, not broken) leaves
  the rotation for the pool's lifetime, with a warning, as long as another server is left.

Each server takes at most `concurrency` requests at once. A request goes to the live server with the
fewest requests in flight once one has a free slot, so a slow server ends up with less of the work.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from labeler.core.errors import EngineError

T = TypeVar("T")
Request = Callable[[Any], Awaitable[T]]  # takes the server's AsyncOpenAI client


@dataclass(frozen=True)
class RetryPolicy:
    """How failed requests are retried (the openai engine's fields of the same names)."""

    max_retries: int = 6
    backoff: float = 0.5
    max_wait: float = 30.0
    eject_after: int = 3


@dataclass(frozen=True)
class Failure:
    """A failed request that may be retried."""

    reason: str  # for messages: "HTTP 503", "timeout", "connection failed: ..."
    counts_against_server: bool  # False for 429: the server is busy, not broken
    retry_after: float | None = None  # seconds the server asked for (Retry-After), if any


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """The wait a server asks for: `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date.

    >>> retry_after_seconds({"retry-after": "2"}, now=0.0)
    2.0
    >>> retry_after_seconds({"retry-after-ms": "250"}, now=0.0)
    0.25
    >>> retry_after_seconds({"retry-after": "Thu, 01 Jan 1970 00:00:10 GMT"}, now=4.0)
    6.0
    >>> retry_after_seconds({"retry-after": "soon"}, now=0.0) is None
    True
    """
    lower = {key.lower(): value for key, value in headers.items()}
    for header, unit in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = lower.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) * unit
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now, 0.0)


def backoff_seconds(retry: int, policy: RetryPolicy, retry_after: float | None, jitter: float) -> float:
    """Seconds to wait before retry number `retry` (1 for the first), `jitter` drawn from [0, 1).

    >>> policy = RetryPolicy(backoff=0.5, max_wait=30.0)
    >>> [backoff_seconds(r, policy, None, 0.0) for r in (1, 2, 3, 8, 9)]
    [0.25, 0.5, 1.0, 15.0, 15.0]
    >>> backoff_seconds(1, policy, retry_after=2.0, jitter=0.0)  # the server's Retry-After wins
    2.0
    >>> backoff_seconds(1, policy, retry_after=3600.0, jitter=0.0)  # but never past max_wait
    30.0
    """
    step = min(policy.max_wait, policy.backoff * 2.0 ** (retry - 1))
    wait = step * (0.5 + 0.5 * jitter)
    if retry_after is not None:
        wait = max(wait, min(retry_after, policy.max_wait))
    return wait


def classify(exc: BaseException, now: float) -> Failure | None:
    """What a failed request means: a `Failure` to retry, or None when retrying cannot help."""
    import openai

    if isinstance(exc, openai.APITimeoutError):  # a subclass of APIConnectionError: test it first
        return Failure("timeout", counts_against_server=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return Failure(f"connection failed: {type(cause).__name__}", counts_against_server=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return Failure("HTTP 429", False, retry_after_seconds(exc.response.headers, now))
        if status == 408 or status >= 500:
            return Failure(f"HTTP {status}", True, retry_after_seconds(exc.response.headers, now))
    return None


@dataclass
class Server:
    """One server of the pool and what the pool knows about it."""

    url: str
    client: Any  # openai.AsyncOpenAI bound to `url`
    in_flight: int = 0
    failures: int = 0  # failures in a row that count against the server
    out: bool = False  # left the rotation
    answered: int = 0  # requests it answered
    last_pick: int = 0


def _stop_message(exc: BaseException, url: str, what: str) -> str:
    """Why a request cannot succeed, for a request the server refused outright."""
    import openai

    if isinstance(exc, openai.AuthenticationError):
        return f"{url} refused the API key (HTTP 401) for {what}: check the variable --api-key-env names"
    if isinstance(exc, openai.APIStatusError):
        return f"{url} answered HTTP {exc.status_code} to {what}: {exc.message}"
    return f"{url} gave an unusable answer to {what}: {exc}"


class ServerPool:
    """Runs requests against the live servers with bounded concurrency and the retry policy."""

    def __init__(
        self,
        servers: Sequence[Server],
        *,
        concurrency: int,
        policy: RetryPolicy,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not servers:
            raise ValueError("a server pool needs at least one server")
        self.servers = list(servers)
        self.concurrency = concurrency
        self.policy = policy
        self._sleep, self._jitter, self._clock = sleep, jitter, clock
        self._picks = itertools.count(1)
        self._changed: asyncio.Condition | None = None  # made inside the running loop, on first use

    @property
    def live(self) -> list[Server]:
        return [s for s in self.servers if not s.out]

    async def map(self, requests: Sequence[Request[T]], what: str) -> list[T]:
        """Every request's result, in order; the first request that cannot succeed stops the others."""
        tasks = [asyncio.ensure_future(self.call(request, what)) for request in requests]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
            # Wait for the cancelled ones to unwind; the error already raised is the one that matters.
            await asyncio.gather(*tasks, return_exceptions=True)

    async def call(self, request: Request[T], what: str, server: Server | None = None) -> T:
        """One request with retries: on any free live server, or only on `server` when given."""
        for attempt in itertools.count():
            chosen = await self._acquire(server)
            try:
                result = await request(chosen.client)
            except Exception as exc:  # asyncio.CancelledError is not an Exception: cancelling goes through
                failure = classify(exc, self._clock())
                if failure is None:
                    raise EngineError(_stop_message(exc, chosen.url, what)) from exc
                await self._failed(chosen, failure)
                if attempt >= self.policy.max_retries:
                    raise EngineError(
                        f"{what} failed {attempt + 1} times (last: {failure.reason} from {chosen.url}); "
                        f"giving up after {self.policy.max_retries} retries"
                    ) from exc
            else:
                chosen.failures = 0
                chosen.answered += 1
                return result
            finally:
                await self._release(chosen)
            await self._sleep(backoff_seconds(attempt + 1, self.policy, failure.retry_after, self._jitter()))
        raise AssertionError("unreachable")  # itertools.count() never ends

    async def _acquire(self, pinned: Server | None) -> Server:
        changed = self._condition()
        async with changed:
            while True:
                candidates = [pinned] if pinned is not None else self.live
                if not candidates or (pinned is not None and pinned.out):
                    raise EngineError(self._none_left_message(pinned))
                free = [s for s in candidates if s.in_flight < self.concurrency]
                if free:
                    chosen = min(free, key=lambda s: (s.in_flight, s.last_pick))
                    chosen.in_flight += 1
                    chosen.last_pick = next(self._picks)
                    return chosen
                await changed.wait()

    async def _release(self, server: Server) -> None:
        changed = self._condition()
        async with changed:
            server.in_flight -= 1
            changed.notify_all()

    async def _failed(self, server: Server, failure: Failure) -> None:
        if not failure.counts_against_server:
            return
        server.failures += 1
        others = [s for s in self.live if s is not server]
        if server.failures >= self.policy.eject_after and not server.out and others:
            server.out = True
            print(
                f"warning: {server.url} left the rotation after {server.failures} failures in a row "
                f"(last: {failure.reason}); going on with {len(others)} other server(s)",
                file=sys.stderr,
            )
            changed = self._condition()
            async with changed:
                changed.notify_all()

    def _none_left_message(self, pinned: Server | None) -> str:
        if pinned is not None:
            return f"{pinned.url} has left the rotation"
        return "no server is left in the rotation: " + ", ".join(s.url for s in self.servers)

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed
