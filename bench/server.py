"""Judged pairs/s through vLLM's OpenAI-compatible server against the offline vLLM engine, same pairs.

Pairs: the human-labelled pairs of data/human_pairs.jsonl (28; `--pairs` takes fewer), each judged in
both orders under `--principles` of constitutions/helpful-honest.yaml, through `judge_pairs`: the label
path, from rendering to soft labels. Figures, in judged pairs per second:

- offline: the vllm engine (float32, 32-token KV blocks, prefix cache on);
- one server: the openai engine against one `python -m vllm.entrypoints.openai.api_server` of the
  same model with the same settings, on the same cores (target: >= 0.8x offline);
- two servers: two such servers, each bound to its half of the cores, behind one openai engine. Where
  one server already keeps every core busy this shows what splitting the machine costs or saves; on a
  cluster each server has its own GPU, and the requests simply spread over them.

Every prefix cache is emptied before every timed run: the offline engine's directly, the servers'
through POST /reset_prefix_cache (vLLM's dev mode, which this script turns on for its own servers).
Offline and server runs alternate for `--rounds` rounds; the best round of each is reported.

    .venv/bin/python bench/server.py           # full size (several minutes: three servers start)
    .venv/bin/python bench/server.py --smoke   # 3 pairs, one round

`--base-url` (with `--served-name`, `--api-key-env`) measures servers that are already running instead
of starting any; the smoke test passes its session server (twice, for the two-server path). The
machine is shared and noisy: compare the ratios of one run, never absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
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
    """Judged pairs per second, best round; each server figure with the offline one measured alongside."""

    pairs: int
    offline_one: float
    one_server: float
    offline_two: float
    two_servers: float

    @property
    def one_server_ratio(self) -> float:
        return self.one_server / self.offline_one

    @property
    def two_server_ratio(self) -> float:
        return self.two_servers / self.one_server


def make_pairs(n: int) -> list[Any]:
    from labeler.human_pairs import read_human_labelled_pairs
    from labeler.stages.pairs import SOURCE_FILE, make_pair

    human = read_human_labelled_pairs(REPO / "data" / "human_pairs.jsonl")[:n]
    return [make_pair(list(h.prompt), h.chosen, h.rejected, SOURCE_FILE) for h in human]


def reset_offline_cache(engine: Any) -> None:
    engine._llm.reset_prefix_cache()  # the vLLM `LLM` under labeler's engine


def reset_server_caches(urls: Sequence[str], api_key: str | None) -> bool:
    """Empty each server's prefix cache; False where a server does not offer it (not in dev mode)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    done = True
    for url in dict.fromkeys(urls):
        root = url.rstrip("/").removesuffix("/v1")
        answer = httpx.post(f"{root}/reset_prefix_cache", headers=headers, timeout=60)
        if answer.status_code == 404:
            done = False
        else:
            answer.raise_for_status()
    return done


def timed_judging(engine: Any, pairs: Sequence[Any], principles: str) -> float:
    from labeler.constitution import load_constitution
    from labeler.stages.judge import JudgeOptions, judge_pairs, panel_for
    from labeler.templates import Templates

    options = JudgeOptions(principles=principles)
    panel = panel_for(load_constitution(REPO / "constitutions" / "helpful-honest.yaml"), options, "helpful-honest")
    templates = Templates.load()
    start = time.perf_counter()
    records = judge_pairs(engine, templates, panel, pairs, options)
    seconds = time.perf_counter() - start
    assert len(records) == len(pairs)
    return seconds


def server_config(urls: Sequence[str], served_name: str, key_env: str | None, concurrency: int) -> Any:
    from labeler.engine import EngineConfig

    return EngineConfig(name="openai", model=served_name, base_urls=tuple(urls), api_key_env=key_env,
                        concurrency=concurrency)


def compare(offline: Any, urls: Sequence[str], pairs: Sequence[Any], args: argparse.Namespace, label: str,
            key_env: str | None, served_name: str) -> tuple[float, float]:
    """Best judged pairs/s of the offline engine and of the openai engine on `urls`, alternating rounds."""
    from labeler.engine import api_key_from_env, open_engine

    config = server_config(urls, served_name, key_env, args.concurrency)
    key = api_key_from_env(config)
    best_offline = best_server = float("inf")
    with open_engine(config) as engine:
        for warm_up in (offline, engine):  # first-request costs, connections
            timed_judging(warm_up, pairs[:1], args.principles)
        for round_index in range(args.rounds):
            reset_offline_cache(offline)
            best_offline = min(best_offline, timed_judging(offline, pairs, args.principles))
            if not reset_server_caches(urls, key):
                print("  (a server offers no /reset_prefix_cache: its cache stays warm)", flush=True)
            seconds = timed_judging(engine, pairs, args.principles)
            best_server = min(best_server, seconds)
            print(f"  round {round_index + 1}: offline {len(pairs) / best_offline:.2f} pairs/s, {label} "
                  f"{len(pairs) / seconds:.2f} pairs/s", flush=True)
    return len(pairs) / best_offline, len(pairs) / best_server


def cores_halves() -> tuple[str, str]:
    cores = sorted(os.sched_getaffinity(0))
    half = max(1, len(cores) // 2)
    return ",".join(map(str, cores[:half])), ",".join(map(str, cores[half:] or cores[:half]))


def start_servers(model: Path, cores: Sequence[str], workdir: Path, key: str) -> list[Any]:
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
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def main(argv: Sequence[str] | None = None, offline: Any = None) -> Figures:
    """Run the benchmark; `offline` is an open vllm engine to use instead of opening one (tests)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=28, help="Human-labelled pairs to judge (at most 28).")
    parser.add_argument("--principles", default="sample:2", help="Principles per pair: 'sample:K' or 'all'.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating rounds of offline and server runs.")
    parser.add_argument("--concurrency", type=int, default=32, help="Requests in flight per server.")
    parser.add_argument("--smoke", action="store_true", help="3 pairs, one principle, one round.")
    parser.add_argument("--base-url", action="append", default=[], help="A running server (repeat for two).")
    parser.add_argument("--served-name", default=SERVED_NAME, help="With --base-url: the model name served.")
    parser.add_argument("--api-key-env", default=None, help="With --base-url: variable holding the key.")
    args = parser.parse_args(argv)
    if args.smoke:
        args.pairs, args.principles, args.rounds = 3, "sample:1", 1

    from labeler.engine import EngineConfig, open_engine, resolve_model

    pairs = make_pairs(args.pairs)
    model = resolve_model("default")
    own_offline = offline is None
    if own_offline:
        offline = open_engine(EngineConfig(name="vllm", dtype="float32", kv_cache_gib=1))
    try:
        if args.base_url:
            one_urls, two_urls = args.base_url[:1], (args.base_url * 2)[:2]
            key_env, served = args.api_key_env, args.served_name
            print(f"{len(pairs)} pairs; servers given: {', '.join(dict.fromkeys(args.base_url))}", flush=True)
            offline_1, server_1 = compare(offline, one_urls, pairs, args, "one server", key_env, served)
            offline_2, server_2 = compare(offline, two_urls, pairs, args, "two servers", key_env, served)
        else:
            key = os.urandom(16).hex()
            os.environ[BENCH_KEY_ENV] = key
            cores = sorted(os.sched_getaffinity(0))
            with tempfile.TemporaryDirectory(prefix="labeler-bench-") as tmp:
                print(f"{len(pairs)} pairs; starting one server on cores {cores[0]}-{cores[-1]}", flush=True)
                servers = start_servers(model, [f"{cores[0]}-{cores[-1]}"], Path(tmp), key)
                try:
                    offline_1, server_1 = compare(offline, [s.url for s in servers], pairs, args, "one server",
                                                  BENCH_KEY_ENV, SERVED_NAME)
                finally:
                    for server in servers:
                        server.stop()
                halves = cores_halves()
                print(f"starting two servers, on cores {halves[0]} and {halves[1]}", flush=True)
                servers = start_servers(model, halves, Path(tmp), key)
                try:
                    offline_2, server_2 = compare(offline, [s.url for s in servers], pairs, args, "two servers",
                                                  BENCH_KEY_ENV, SERVED_NAME)
                finally:
                    for server in servers:
                        server.stop()
    finally:
        if own_offline:
            offline.close()

    figures = Figures(len(pairs), offline_1, server_1, offline_2, server_2)
    print(f"\njudged pairs/s ({len(pairs)} pairs, principles {args.principles}, both orders): "
          f"offline vLLM {offline_1:.2f}, one server {server_1:.2f}; offline {offline_2:.2f}, two servers {server_2:.2f}")
    print(f"one server / offline:     {figures.one_server_ratio:.2f}x  (target >= 0.8)")
    print(f"two servers / one server: {figures.two_server_ratio:.2f}x  (two servers / offline alongside: "
          f"{server_2 / offline_2:.2f}x)")
    return figures


if __name__ == "__main__":
    main()
