"""The openai engine against a real vLLM server of the embedded model (fp32, one per session).

Everything stays on 127.0.0.1. Two vLLM servers do not fit on a 2-core test machine beside the
offline engine, so the second "server" is a loopback proxy in front of the same one; faults come
from loopback proxies that drop connections, answer 429 (Retry-After) or 500, or reply late.

Runs are small (6 pairs, one principle each): the server's prefix cache then holds every judge
prompt after the first run, and the later runs cost little.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY_ENV, SERVED_NAME, TEST_API_KEY
from servers import FaultPlan, Proxy

from labeler.engine import ChoiceRequest, EngineConfig, GenerationParams, Message, open_engine
from labeler.engine.openai_engine import first_token_messages
from labeler.inputs.constitution import load_constitution
from labeler.inputs.human_pairs import read_human_labelled_pairs
from labeler.inputs.templates import Templates
from labeler.stages.common import WorkSelection
from labeler.stages.judge import JudgeOptions, judge_pairs, panel_for
from labeler.stages.label import LabelConfig, label
from labeler.stages.pairs import SOURCE_FILE, make_pair
from labeler.store import iter_records, load_manifest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
CONSTITUTION = REPO / "constitutions" / "helpful-honest.yaml"
N_PAIRS = 6
# The server's log-probabilities against the offline engine's, both fp32 on the same token ids: they
# agreed exactly here. The tolerance leaves room for a different kernel summation order on other CPUs
# (about 1e-4 nats between vLLM and transformers) and catches any real mistake (a wrong position,
# token or template shifts a log-probability by whole nats).
P_A_TOLERANCE = 1e-4
LOGPROB_TOLERANCE = 1e-3


def human_pairs() -> list[Any]:
    return read_human_labelled_pairs(REPO / "data" / "human_pairs.jsonl")[:N_PAIRS]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    rows = [{"messages": [{"role": m.role, "content": m.content} for m in p.prompt], "response_a": p.chosen,
             "response_b": p.rejected} for p in human_pairs()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def judge_config(*urls: str, **options: Any) -> EngineConfig:
    settings = {"retry_backoff": 0.05, "retry_max_wait": 2.0, **options}
    return EngineConfig.model_validate({"name": "openai", "model": SERVED_NAME, "base_urls": urls,
                                        "api_key_env": API_KEY_ENV, **settings})


def label_run(judge: EngineConfig, pairs_file: Path, out: Path) -> list[dict[str, Any]]:
    config = LabelConfig(constitution=CONSTITUTION, out=out, pairs=pairs_file, judge=judge,
                         work=WorkSelection(batch_size=4, quiet=True))
    label(config)
    return rows_of(out)


def rows_of(run: Path) -> list[dict[str, Any]]:
    return sorted((r.to_row() for r in iter_records(run, "preferences")), key=lambda row: row["id"])


def assert_same_rows(rows: Any, reference: Any, path: str = "rows") -> None:
    """The same records, every text and id exact, every number within float32 noise: a request the server
    batched with another, or answered from its prefix cache, can come back some 1e-6 apart from one it
    did not (float32 sums in another order)."""
    if isinstance(reference, float):
        assert rows == pytest.approx(reference, rel=1e-5, abs=1e-5), path
    elif isinstance(reference, dict):
        assert isinstance(rows, dict) and rows.keys() == reference.keys(), path
        for key in reference:
            assert_same_rows(rows[key], reference[key], f"{path}.{key}")
    elif isinstance(reference, (list, tuple)):
        assert type(rows) is type(reference) and len(rows) == len(reference), path
        for i, (a, b) in enumerate(zip(rows, reference)):
            assert_same_rows(a, b, f"{path}[{i}]")
    else:
        assert rows == reference, path


def assert_key_in_no_file(run: Path) -> None:
    files = [p for p in run.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert TEST_API_KEY.encode() not in path.read_bytes(), path


@pytest.fixture(scope="module")
def reference(vllm_server: Any, pairs_file: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The fault-free run: one server, addressed directly."""
    out = tmp_path_factory.mktemp("reference") / "run"
    rows = label_run(judge_config(vllm_server.url), pairs_file, out)
    assert len(rows) == N_PAIRS
    assert_key_in_no_file(out)
    return rows


def test_p_a_through_the_server_equals_the_offline_engine(vllm_server_launch: Any, vllm_engine: Any,
                                                          vllm_server: Any):
    # (The server is launched first and boots while the offline engine loads.)
    pairs = [make_pair(list(p.prompt), p.chosen, p.rejected, SOURCE_FILE) for p in human_pairs()]
    options = JudgeOptions()
    panel = panel_for(load_constitution(CONSTITUTION), options, str(CONSTITUTION))
    templates = Templates.load()
    with open_engine(judge_config(vllm_server.url)) as engine:
        assert engine.choice_method == "continue_prefix"  # auto: the server is vLLM
        served = judge_pairs(engine, templates, panel, pairs, options)
    offline = judge_pairs(vllm_engine, templates, panel, pairs, options)
    for s, o in zip(served, offline):
        assert abs(s.p_a - o.p_a) <= P_A_TOLERANCE, (s.p_a, o.p_a)
        for a, b in zip(s.logprobs_ab + s.logprobs_ba, o.logprobs_ab + o.logprobs_ba):
            assert abs(a - b) <= LOGPROB_TOLERANCE, (s, o)
        assert "choice_outside_topk" not in s.flags  # after "(", both letters are among the top 20
        assert s.judge_model == SERVED_NAME


def test_first_token_topk_reads_what_the_exact_engine_computes(vllm_server: Any, vllm_engine: Any):
    """Asking for a one-letter reply: each choice's summed spellings hold at least the exact letter's
    probability, and a choice missing from the top 20 really is below the bound recorded for it."""
    questions = [ChoiceRequest((Message(role="user", content=f"{p.prompt[-1].content}\n(A) {p.chosen}\n(B) "
                                                              f"{p.rejected}\nWhich reply is better?"),))
                 for p in human_pairs()]
    with open_engine(judge_config(vllm_server.url, choice_method="first_token_topk")) as engine:
        served = engine.choice_logprobs(questions, ["A", "B"])
    # The exact engine scores the very conversation the server saw: the letter is the reply's first token.
    exact = vllm_engine.choice_logprobs(
        [ChoiceRequest(first_token_messages(q, ["A", "B"])) for q in questions], ["A", "B"]
    )
    bounded = 0
    for s, e in zip(served, exact):
        for logprob, is_bound, exact_logprob in zip(s.logprobs, s.bounded, e.logprobs):
            if is_bound:
                bounded += 1
                assert exact_logprob <= logprob + LOGPROB_TOLERANCE, (s, e)
            else:
                assert logprob >= exact_logprob - LOGPROB_TOLERANCE, (s, e)
                assert math.exp(logprob) - math.exp(exact_logprob) < 0.05, (s, e)  # spellings other than "A" are rare
    assert bounded < 2 * len(questions)


def test_generation_and_token_counts_match_the_offline_engine(vllm_server: Any, vllm_engine: Any):
    conversations = [list(p.prompt) for p in human_pairs()[:2]]
    greedy = GenerationParams(temperature=0.0, max_tokens=10)
    sampled = GenerationParams(n=2, temperature=0.9, max_tokens=10)
    with open_engine(judge_config(vllm_server.url)) as engine:
        # The offline engine also returns the sampled token ids (PPO rollouts read them); the text is what both give.
        offline = [dataclasses.replace(g, token_ids=()) for g in vllm_engine.generate(conversations, greedy)]
        assert engine.generate(conversations, greedy) == offline
        first = engine.generate(conversations, sampled, seeds=[1, 2])
        assert engine.generate(conversations, sampled, seeds=[1, 2]) == first  # the server honours seeds
        assert engine.generate(conversations[1:], sampled, seeds=[2]) == first[1:]  # whatever the batch
        assert engine.prompt_lengths(conversations) == vllm_engine.prompt_lengths(conversations)
        assert engine.max_model_len == 2048
    assert all(len(g.texts) == 2 and all(0 < n <= 10 for n in g.token_counts) for g in first)


def test_two_servers_share_the_work_and_change_nothing(vllm_server: Any, pairs_file: Path, reference: list, tmp_path):
    with Proxy(vllm_server.url) as second:
        rows = label_run(judge_config(vllm_server.url, second.url, concurrency=2), pairs_file, tmp_path / "run")
        assert second.forwarded >= 3  # 12 judge requests, two in flight on each server
    assert_same_rows(rows, reference)


def test_faults_on_every_server_change_nothing(vllm_server: Any, pairs_file: Path, reference: list, tmp_path):
    plans = [FaultPlan(seed=1, rate=0.6, slow_seconds=1.5), FaultPlan(seed=2, rate=0.6, slow_seconds=1.5)]
    with Proxy(vllm_server.url, plans[0]) as one, Proxy(vllm_server.url, plans[1]) as two:
        rows = label_run(judge_config(one.url, two.url, eject_after=50), pairs_file, tmp_path / "run")
        faults = one.faults + two.faults
    assert_same_rows(rows, reference)
    assert set(faults) == {"drop", "429", "500", "slow"} and sum(faults.values()) >= 6, faults
    assert_key_in_no_file(tmp_path / "run")


def test_kill_9_mid_run_then_rerun_gives_the_same_dataset(vllm_server: Any, pairs_file: Path, reference: list,
                                                          tmp_path: Path):
    # Every request's first sighting waits a second at the proxy, so the run lasts long enough to be killed.
    with Proxy(vllm_server.url, FaultPlan(seed=0, rate=1.0, kinds=("slow",), slow_seconds=1.0)) as slow:
        out = tmp_path / "run"
        command = [sys.executable, "-m", "labeler", "label", "--engine", "openai", "--base-url", slow.url,
                   "--api-key-env", API_KEY_ENV, "--judge-model", SERVED_NAME, "--constitution", str(CONSTITUTION),
                   "--pairs", str(pairs_file), "--out", str(out), "--batch-size", "2", "--quiet"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        victim = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not shards_listed(out) and time.monotonic() < deadline:
            assert victim.poll() is None, victim.stdout.read().decode() if victim.stdout else ""
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    wrote, done = map(int, re.search(r"wrote (\d+) pairs \((\d+) already done", rerun.stdout).groups())
    assert wrote + done == N_PAIRS and wrote > 0 and done > 0  # killed mid-run, resumed after what it wrote
    assert_same_rows(rows_of(out), reference)
    assert TEST_API_KEY not in rerun.stdout + rerun.stderr
    assert_key_in_no_file(out)


def shards_listed(run: Path) -> bool:
    """Whether the run's manifest lists a finished preference shard yet."""
    if not (run / "manifest.json").is_file():
        return False
    entry = load_manifest(run).splits.get("preferences")
    return entry is not None and bool(entry.shards)


def test_bench_server_smoke(vllm_server: Any, vllm_engine: Any, capsys: pytest.CaptureFixture[str]):
    """bench/server.py --smoke on the session's server and offline engine (its two-server phase lists the
    one server twice): it runs, and prints the ratios it returns."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_server", REPO / "bench" / "server.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    figures = bench.main(["--smoke", "--base-url", vllm_server.url, "--served-name", SERVED_NAME,
                          "--api-key-env", API_KEY_ENV], offline=vllm_engine)
    out = capsys.readouterr().out
    assert figures.pairs == 3 and min(figures.offline, figures.one_server, figures.half_server, figures.two_servers) > 0
    assert f"one server / offline:     {figures.one_server_ratio:.2f}x" in out
    assert f"two servers / one server: {figures.two_server_ratio:.2f}x" in out
