"""Judged pairs/s through vLLM's OpenAI-compatible server against the offline vLLM engine, same pairs.

Pairs: the human-labelled pairs of data/human_pairs.jsonl (28; `--pairs` takes fewer), each judged in
both orders under `--principles` of constitutions/helpful-honest.yaml, through `judge_pairs`: the label
path, from rendering to soft labels. Two phases, each timing two setups in alternating rounds (the
best round of each counts), so each ratio compares figures taken side by side:

1. offline vLLM engine (float32, 32-token KV blocks, prefix cache on) against the openai engine on one
   `python -m vllm.entrypoints.openai.api_server` of the same model and settings on the same cores
   (target: >= 0.8x);
2. the offline engine closed, two such servers each bound to half the cores: the openai engine on
   one of them against the openai engine on both, which is how throughput grows with servers (on a
   cluster, each server has its own GPU).

At most two vLLM instances run at a time (a shared 24 GiB machine holds them). Every prefix cache is
emptied before every timed run: the offline engine's directly, the servers' through POST
/reset_prefix_cache (vLLM's dev mode, which this script turns on for its own servers).

    .venv/bin/python bench/server.py           # full size (several minutes: three servers start)
    .venv/bin/python bench/server.py --smoke   # 3 pairs, one round

`--base-url` (with `--served-name`, `--api-key-env`) measures servers that are already running
instead of starting any (two of them for phase 2; one is listed twice when only one is given, which
exercises the code path and measures nothing). The smoke test passes its session server and
offline engine. The machine is shared and noisy: compare the ratios of one run, never absolute
numbers across runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SERVED_NAME = "judge"
BENCH_KEY_ENV = "LABELER_BENCH_API_KEY"
# The servers' scheduler, as labeler sets up the offline engine on CPU (see vllm_engine.py).
SERVER_FLAGS = ("--max-num-batched-tokens", "8192", "--no-enable-chunked-prefill")


@dataclass(frozen=True)
class Figures:
    """Judged pairs per second, best round; each pair of figures measured side by side."""

    pairs: int
    offline: float  # phase 1
    one_server: float  # phase 1: one server on every core
    half_server: float  # phase 2: one server on half the cores
    two_servers: float  # phase 2: two such servers

    @property
    def one_server_ratio(self) -> float:
        return self.one_server / self.offline

    @property
    def two_server_ratio(self) -> float:
        return self.two_servers / self.half_server


def make_pairs(n: int) -> list[Any]:
    from labeler.inputs.human_pairs import read_human_labelled_pairs
    from labeler.stages.pairs import SOURCE_FILE, make_pair

    human = read_human_labelled_pairs(REPO / "data" / "human_pairs.jsonl")[:n]
    return [make_pair(list(h.prompt), h.chosen, h.rejected, SOURCE_FILE) for h in human]


def reset_server_caches(urls: Sequence[str], api_key: str | None) -> None:
    """Empty each server's prefix cache, or say that one keeps it (a server not in dev mode)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    for url in dict.fromkeys(urls):
        root = url.rstrip("/").removesuffix("/v1")
        answer = httpx.post(f"{root}/reset_prefix_cache", headers=headers, timeout=60)
        if answer.status_code == 404:
            print(f"  ({root} offers no /reset_prefix_cache: its prefix cache stays warm)", flush=True)
        else:
            answer.raise_for_status()


def timed_judging(engine: Any, pairs: Sequence[Any], principles: str) -> float:
    from labeler.inputs.constitution import load_constitution
    from labeler.inputs.templates import Templates
    from labeler.stages.judge import JudgeOptions, judge_pairs, panel_for

    options = JudgeOptions(principles=principles)
    panel = panel_for(load_constitution(REPO / "constitutions" / "helpful-honest.yaml"), options, "helpful-honest")
    templates = Templates.load()
    start = time.perf_counter()
    records = judge_pairs(engine, templates, panel, pairs, options)
    seconds = time.perf_counter() - start
    assert len(records) == len(pairs)
    return seconds


@dataclass(frozen=True)
class Setup:
    """One thing to time: an open engine, and how to empty its prefix cache first."""

    name: str
    engine: Any
    reset: Callable[[], None]


def alternate(first: Setup, second: Setup, pairs: Sequence[Any], args: argparse.Namespace) -> tuple[float, float]:
    """Best judged pairs/s of each setup over `args.rounds` alternating rounds, after a warm-up of each."""
    for setup in (first, second):  # first-request costs, connections
        timed_judging(setup.engine, pairs[:1], args.principles)
    best = [float("inf"), float("inf")]
    for round_index in range(args.rounds):
        rates = []
        for index, setup in enumerate((first, second)):
            setup.reset()
            seconds = timed_judging(setup.engine, pairs, args.principles)
            best[index] = min(best[index], seconds)
            rates.append(f"{setup.name} {len(pairs) / seconds:.2f}")
        print(f"  round {round_index + 1}: {', '.join(rates)} pairs/s", flush=True)
    return len(pairs) / best[0], len(pairs) / best[1]


@contextmanager
def served(urls: Sequence[str], name: str, served_name: str, key_env: str | None, concurrency: int) -> Iterator[Setup]:
    from labeler.engine import EngineConfig, api_key_from_env, open_engine

    config = EngineConfig(name="openai", model=served_name, base_urls=tuple(urls), api_key_env=key_env,
                          concurrency=concurrency)
    key = api_key_from_env(config)
    with open_engine(config) as engine:
        yield Setup(name, engine, lambda: reset_server_caches(urls, key))


@contextmanager
def running_servers(model: Path, cores: Sequence[str], workdir: Path, key: str) -> Iterator[list[str]]:
    """Servers of `model`, one per entry of `cores` (OpenMP binding), started together; their URLs."""
    sys.path.insert(0, str(REPO / "tests"))
    from servers import VLLMServer  # the launcher the tests use

    servers = [
        VLLMServer(model, SERVED_NAME, key, workdir / f"server-{i}", cores=c, extra_env={"VLLM_SERVER_DEV_MODE": "1"},
                   extra_args=SERVER_FLAGS)
        for i, c in enumerate(cores)
    ]
    try:
        for server in servers:
            server.wait_ready()
        yield [s.url for s in servers]
    finally:
        for server in servers:
            server.stop()


def core_spans() -> tuple[str, tuple[str, str]]:
    """Every usable core, and the two halves, as OpenMP bind specs."""
    cores = sorted(os.sched_getaffinity(0))
    half = max(1, len(cores) // 2)
    spec = lambda cs: ",".join(map(str, cs))  # noqa: E731
    return spec(cores), (spec(cores[:half]), spec(cores[half:] or cores[:half]))


def main(argv: Sequence[str] | None = None, offline: Any = None) -> Figures:
    """Run the benchmark; `offline` is an open vllm engine to use instead of opening one (tests)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=28, help="Human-labelled pairs to judge (at most 28).")
    parser.add_argument("--principles", default="sample:2", help="Principles per pair: 'sample:K' or 'all'.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating rounds per phase.")
    parser.add_argument("--concurrency", type=int, default=32, help="Requests in flight per server.")
    parser.add_argument("--smoke", action="store_true", help="3 pairs, one principle, one round.")
    parser.add_argument("--base-url", action="append", default=[], help="A running server (repeat for two).")
    parser.add_argument("--served-name", default=SERVED_NAME, help="With --base-url: the model name served.")
    parser.add_argument("--api-key-env", default=None, help="With --base-url: variable holding the key.")
    args = parser.parse_args(argv)
    if args.smoke:
        args.pairs, args.principles, args.rounds = 3, "sample:1", 1

    from labeler.engine import EngineConfig, open_engine
    from labeler.engine.model_ref import resolve_model

    pairs = make_pairs(args.pairs)
    model = resolve_model("default").folder()
    own_offline = offline is None
    given = args.base_url
    key_env, served_name = (args.api_key_env, args.served_name) if given else (BENCH_KEY_ENV, SERVED_NAME)
    if not given:
        os.environ[BENCH_KEY_ENV] = os.urandom(16).hex()
    every_core, halves = core_spans()
    print(f"{len(pairs)} pairs, principles {args.principles}, both orders; {args.concurrency} requests in flight "
          "per server", flush=True)
    with tempfile.TemporaryDirectory(prefix="labeler-bench-") as tmp:
        # Phase 1: offline against one server on the same cores.
        print(f"phase 1: offline vLLM against one server (cores {every_core})", flush=True)
        if own_offline:
            offline = open_engine(EngineConfig(name="vllm", dtype="float32", kv_cache_gib=1))
        try:
            with (running_servers(model, [every_core], Path(tmp), os.environ[BENCH_KEY_ENV]) if not given
                  else _given(given[:1])) as urls:
                with served(urls, "one server", served_name, key_env, args.concurrency) as one:
                    local = Setup("offline", offline, offline._llm.reset_prefix_cache)
                    offline_rate, one_rate = alternate(local, one, pairs, args)
        finally:
            if own_offline:
                offline.close()  # phase 2 needs the memory
        # Phase 2: one half-core server against two.
        print(f"phase 2: one server (cores {halves[0]}) against two (cores {halves[0]} and {halves[1]})", flush=True)
        with (running_servers(model, halves, Path(tmp), os.environ[BENCH_KEY_ENV]) if not given
              else _given((given * 2)[:2])) as urls:
            with served(urls[:1], "one server", served_name, key_env, args.concurrency) as half, \
                    served(urls, "two servers", served_name, key_env, args.concurrency) as both:
                half_rate, two_rate = alternate(half, both, pairs, args)

    figures = Figures(len(pairs), offline_rate, one_rate, half_rate, two_rate)
    print(f"\njudged pairs/s: offline vLLM {offline_rate:.2f}, one server {one_rate:.2f}; "
          f"one half-core server {half_rate:.2f}, two half-core servers {two_rate:.2f}")
    print(f"one server / offline:     {figures.one_server_ratio:.2f}x  (target >= 0.8)")
    print(f"two servers / one server: {figures.two_server_ratio:.2f}x  (each on half the cores; two half-core "
          f"servers / one server on every core, across phases: {two_rate / one_rate:.2f}x)")
    return figures


@contextmanager
def _given(urls: Sequence[str]) -> Iterator[list[str]]:
    yield list(urls)


if __name__ == "__main__":
    main()
