"""Servers on 127.0.0.1 for the openai engine's tests.

- `VLLMServer`: vLLM's OpenAI-compatible server of the embedded model, as users run it (a real server).
- `Proxy`: a loopback HTTP proxy in front of a server: it passes requests through, or, with a
  `FaultPlan`, drops connections, answers 429 (with Retry-After) or 500, or replies slowly, for a
  seeded fraction of requests. A pass-through proxy also stands in for a second server where two
  vLLM servers would not fit on the test machine's cores.
- `ScriptedServer`: answers from a script (for the retry-logic unit tests only).

Proxies and the scripted server run an asyncio server in a thread; one request per connection
("Connection: close"), which is all the openai client needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# -- vLLM's server --------------------------------------------------------------------------------


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` of a model folder, in its own process group."""

    def __init__(
        self,
        model: Path,
        served_name: str,
        api_key: str,
        workdir: Path,
        *,
        cores: str | None = None,
        extra_env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.served_name = served_name
        self.api_key = api_key
        self.log = workdir / "vllm-server.log"
        tmp = workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": cores or _bind_spec(),
            "VLLM_LOGGING_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
            "TMPDIR": str(tmp),  # vLLM leaves IPC socket files there
            "VLLM_CACHE_ROOT": str(workdir / "vllm-cache"),
            "VLLM_API_KEY": api_key,  # the key the server wants, kept off its command line
            **(extra_env or {}),
        }
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
            "--served-model-name", served_name, "--host", HOST, "--port", str(self.port),
            "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048", "--block-size", "32",
            "--disable-uvicorn-access-log", *extra_args,
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            # Its own session: the engine runs in child processes, and the whole group is killed at the end.
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def wait_ready(self, timeout: float = 420.0) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.api_key}"}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v1/models", headers=headers, timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(2)
        raise RuntimeError(f"the vLLM server did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The log's error lines (vLLM reports a child's root cause far above the end), then its last lines."""
        text = self.log.read_text(errors="replace").splitlines()
        errors = [line for line in text[:-lines] if "Error" in line and 'File "' not in line]
        return "\n".join([*errors[-10:], "...", *text[-lines:]])

    def stop(self) -> None:
        # The whole group at once: the engine's child processes outlive a terminated parent, and a test
        # server has nothing to save.
        _kill_group(self.process, signal.SIGKILL)
        self.process.wait(timeout=30)


def _bind_spec() -> str:
    cores = sorted(os.sched_getaffinity(0))
    return f"{cores[0]}-{cores[-1]}" if cores == list(range(cores[0], cores[-1] + 1)) else ",".join(map(str, cores))


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass  # the group is gone already


# -- HTTP plumbing --------------------------------------------------------------------------------


@dataclass
class HTTPRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body) if self.body else {}


async def read_request(reader: asyncio.StreamReader) -> HTTPRequest:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    request_line, *header_lines = head.rstrip("\r\n").split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return HTTPRequest(method, path, headers, body)


def http_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
              500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}",
             "Connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _ThreadedServer:
    """An asyncio TCP server on 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self._server: asyncio.AbstractServer | None = None
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self._server = self.loop.run_until_complete(asyncio.start_server(self._serve, HOST, self.port))
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.handle(await read_request(reader), writer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away (it timed out, or was killed): nothing to answer
        finally:
            writer.close()

    async def handle(self, request: HTTPRequest, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
            # Connections still being served (a stalled or slow reply) end here, inside the loop.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def __enter__(self):  # noqa: ANN204
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- proxies --------------------------------------------------------------------------------------

FAULTS = ("drop", "429", "500", "slow")


@dataclass(frozen=True)
class FaultPlan:
    """Which requests a proxy spoils: a seeded `rate` of first sightings, never a retry.

    A request's fate is a function of the seed and its body, so it does not depend on the order
    requests arrive in; a body seen before passes through, so every request gets through in the end.
    """

    seed: int
    rate: float
    kinds: tuple[str, ...] = FAULTS
    slow_seconds: float = 3.0
    retry_after: str = "1"

    def fault(self, body: bytes, seen_before: int) -> str | None:
        if seen_before:
            return None
        digest = hashlib.sha256(self.seed.to_bytes(8, "big") + body).digest()
        if int.from_bytes(digest[:4], "big") / 2**32 >= self.rate:
            return None
        return self.kinds[digest[4] % len(self.kinds)]


class Proxy(_ThreadedServer):
    """Forwards each request to `upstream` (http://127.0.0.1:PORT), spoiling some per `plan`."""

    def __init__(self, upstream: str, plan: FaultPlan | None = None) -> None:
        self.upstream_port = int(upstream.rsplit(":", 1)[1].split("/")[0])
        self.plan = plan
        self.seen: Counter[bytes] = Counter()
        self.faults: Counter[str] = Counter()
        self.forwarded = 0
        super().__init__()

    async def handle(self, request: HTTPRequest, writer: asyncio.StreamWriter) -> None:
        key = request.method.encode() + request.path.encode() + request.body
        fault = self.plan.fault(key, self.seen[key]) if self.plan is not None else None
        self.seen[key] += 1
        if fault is not None:
            self.faults[fault] += 1
        if fault == "drop":
            return  # close without a word: the client sees the connection drop
        if fault == "429":
            writer.write(http_response(429, b'{"error": {"message": "slow down"}}',
                                       {"Retry-After": self.plan.retry_after if self.plan else "1"}))
            return
        if fault == "500":
            writer.write(http_response(500, b'{"error": {"message": "injected failure"}}'))
            return
        if fault == "slow" and self.plan is not None:
            await asyncio.sleep(self.plan.slow_seconds)
        writer.write(await self._forward(request))
        await writer.drain()
        self.forwarded += 1

    async def _forward(self, request: HTTPRequest) -> bytes:
        reader, upstream = await asyncio.open_connection(HOST, self.upstream_port)
        headers = {k: v for k, v in request.headers.items() if k not in ("connection", "keep-alive")}
        headers["connection"] = "close"
        head = f"{request.method} {request.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        upstream.write(head.encode("latin-1") + b"\r\n" + request.body)
        await upstream.drain()
        answer = await reader.read()  # the upstream closes after one response
        upstream.close()
        head_bytes, _, body = answer.partition(b"\r\n\r\n")
        status, *lines = head_bytes.decode("latin-1").split("\r\n")
        kept = [line for line in lines if line.split(":", 1)[0].strip().lower() not in ("connection", "keep-alive")]
        return ("\r\n".join([status, *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1") + body


# -- a scripted server (retry-logic unit tests) ---------------------------------------------------

Reply = tuple[int, dict, dict[str, str]] | str  # (status, JSON body, headers), or "drop" / "stall"
STALL_SECONDS = 3.0  # a "stall" reply: silence this long, then the connection closes


def chat_reply(top: list[tuple[str, float]] | None = None, text: str = "ok", tokens: int = 1) -> dict:
    """A chat completion as an OpenAI-compatible server writes it; `top`: first token's top log-probabilities."""
    logprobs = None
    if top is not None:
        first = {"token": top[0][0], "logprob": top[0][1], "bytes": None,
                 "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top]}
        logprobs = {"content": [first]}
    return {
        "id": "x", "object": "chat.completion", "created": 0, "model": "scripted",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                     "logprobs": logprobs}],
        "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens},
    }  # fmt: skip


@dataclass
class ScriptedServer(_ThreadedServer):
    """Answers GET /v1/models with one model, and chat completions from `script` (then `default`)."""

    script: list[Reply] = field(default_factory=list)
    default: Reply | Callable[[HTTPRequest], Reply] = field(
        default_factory=lambda: (200, chat_reply([("A", -0.1)]), {})
    )
    model: str = "scripted"
    owned_by: str = "scripted-org"
    requests: list[HTTPRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    async def handle(self, request: HTTPRequest, writer: asyncio.StreamWriter) -> None:
        self.requests.append(request)
        if request.method == "GET" and request.path.endswith("/models"):
            card = {"id": self.model, "object": "model", "created": 0, "owned_by": self.owned_by}
            writer.write(http_response(200, json.dumps({"object": "list", "data": [card]}).encode()))
            return
        if not request.path.endswith("/chat/completions"):
            writer.write(http_response(404, b'{"error": {"message": "not found"}}'))
            return
        reply = self.script.pop(0) if self.script else self.default
        if callable(reply):
            reply = reply(request)
        if reply == "drop":
            return
        if reply == "stall":
            await asyncio.sleep(STALL_SECONDS)
            return
        status, body, headers = reply
        writer.write(http_response(status, json.dumps(body).encode(), headers))

    @property
    def chat_requests(self) -> list[HTTPRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]
