"""The openai engine without a model: options, the retry loop and server rotation (against scripted
servers on 127.0.0.1), reading choices from top-k lists, and the fingerprint. The same engine
against a real vLLM server is in test_openai_server.py."""

from __future__ import annotations

import doctest
import json
import math
import time
from pathlib import Path

import pytest
from servers import STALL_SECONDS, ScriptedServer, chat_reply, free_port

from labeler.cli.app import main
from labeler.core.errors import EngineError, InputError
from labeler.engine import ChoiceRequest, EngineConfig, GenerationParams, Message, open_engine
from labeler.engine.chat import derive_seed
from labeler.engine.pool import RetryPolicy, backoff_seconds
from labeler.engine.topk import choice_of_token, scores_from_topk
from labeler.stages.common import fingerprint_config, settled_choice_method
from labeler.stages.label import LabelConfig

REQUEST = ChoiceRequest((Message(role="user", content="Which is better? (A) or (B)"),), "The better response is (")
CONVERSATION = [Message(role="user", content="Say hi.")]


@pytest.fixture
def server():
    with ScriptedServer() as s:
        yield s


def engine_on(*servers: ScriptedServer | str, **options: object):
    """An openai engine on scripted servers (or URLs), with waits short enough for a unit test."""
    urls = tuple(s if isinstance(s, str) else s.url for s in servers)
    settings = {"retry_backoff": 0.01, "retry_max_wait": 2.0, **options}
    return open_engine(EngineConfig.model_validate({"name": "openai", "model": "scripted", "base_urls": urls,
                                                    **settings}))


def error(status: int, message: str = "no", headers: dict[str, str] | None = None):
    return (status, {"error": {"message": message, "type": "x", "code": status}}, headers or {})


def test_docstring_examples() -> None:
    import labeler.core.soft_label
    import labeler.engine
    import labeler.engine.base
    import labeler.engine.openai_engine
    import labeler.engine.pool
    import labeler.engine.topk

    for module in (labeler.engine, labeler.engine.base, labeler.engine.openai_engine, labeler.engine.pool,
                   labeler.engine.topk, labeler.core.soft_label):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# -- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "where", "says"),
    [
        ({"name": "openai"}, "base_urls", "needs at least one server URL"),
        ({"name": "openai", "base_urls": "ftp://host/v1"}, "base_urls", "http:// or https://"),
        ({"name": "openai", "base_urls": "localhost:8000"}, "base_urls", "http:// or https://"),
        ({"name": "vllm", "base_urls": "http://h:8000"}, "name", "`base_urls`"),
        ({"name": "hf", "api_key_env": "KEY"}, "name", "`api_key_env`"),
        ({"name": "vllm", "concurrency": 4}, "name", "concurrency"),
        ({"name": "openai", "base_urls": "http://h:8000", "dtype": "float32"}, "name", "dtype"),
    ],
)
def test_engine_options_that_do_not_fit_are_refused_by_name(options, where, says):
    with pytest.raises(InputError) as caught:
        EngineConfig.model_validate(options)
    assert caught.value.field == where
    assert says in caught.value.render()


def test_base_urls_take_repeats_and_comma_lists_and_get_v1():
    config = EngineConfig(name="openai", model="m", base_urls=("http://a:8000,https://b.example/api/v2/", "http://c:1"))
    assert config.base_urls == ("http://a:8000/v1", "https://b.example/api/v2", "http://c:1/v1")


def test_credentials_in_a_url_are_refused_without_echoing_them():
    with pytest.raises(InputError) as caught:
        EngineConfig(name="openai", base_urls=("http://user:hunter2@h:8000",))
    assert "hunter2" not in str(caught.value) and "`api_key_env`" in str(caught.value)


def test_a_missing_key_variable_stops_before_any_request(server, monkeypatch):
    monkeypatch.delenv("LABELER_UNSET_KEY", raising=False)
    with pytest.raises(InputError) as caught:
        engine_on(server, api_key_env="LABELER_UNSET_KEY")
    assert caught.value.field == "api_key_env" and "LABELER_UNSET_KEY" in caught.value.message
    assert server.requests == []


def test_a_key_given_in_place_of_a_name_is_never_echoed(server):
    with pytest.raises(InputError) as caught:
        engine_on(server, api_key_env="sk-proj-abc123")
    assert "sk-proj-abc123" not in str(caught.value)
    assert server.requests == []


def test_the_key_goes_out_as_a_bearer_token(server, monkeypatch):
    monkeypatch.setenv("LABELER_TEST_KEY_X", "k-123")
    with engine_on(server, api_key_env="LABELER_TEST_KEY_X") as engine:
        engine.choice_logprobs([REQUEST], ["A", "B"])
    assert {r.headers["authorization"] for r in server.requests} == {"Bearer k-123"}


def test_a_model_the_server_does_not_serve_is_named(server):
    with pytest.raises(InputError) as caught:
        open_engine(EngineConfig(name="openai", model="other", base_urls=(server.url,)))
    assert caught.value.field == "model" and "'other'" in caught.value.message and "scripted" in caught.value.message


# -- retries --------------------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_honours_retry_after():
    policy = RetryPolicy(backoff=1.0, max_wait=10.0)
    waits = [backoff_seconds(r, policy, None, jitter=0.999) for r in range(1, 7)]
    assert waits == pytest.approx([1.0, 2.0, 4.0, 8.0, 10.0, 10.0], rel=1e-3)
    assert all(0.5 * w <= backoff_seconds(r, policy, None, 0.0) + 1e-9 for r, w in enumerate(waits, 1))
    assert backoff_seconds(1, policy, retry_after=7.0, jitter=0.0) == 7.0


def test_retry_after_is_waited_for_on_429(server):
    server.script = [error(429, "busy", {"Retry-After": "0.6"})]
    with engine_on(server) as engine:
        start = time.monotonic()
        (score,) = engine.choice_logprobs([REQUEST], ["A", "B"])
        assert time.monotonic() - start >= 0.6
    assert len(server.chat_requests) == 2 and score.logprobs[0] == pytest.approx(-0.1)


def test_errors_dropped_connections_and_timeouts_are_retried(server):
    server.script = [error(500), "drop", error(503), "stall"]
    with engine_on(server, request_timeout=STALL_SECONDS / 3) as engine:
        (score,) = engine.choice_logprobs([REQUEST], ["A", "B"])
    assert len(server.chat_requests) == 5
    assert score.logprobs[0] == pytest.approx(-0.1) and score.bounded == (False, True)


def test_a_refused_request_stops_at_once_with_the_servers_message(server):
    server.script = [error(400, "prompt too long for this model")]
    with engine_on(server) as engine, pytest.raises(EngineError) as caught:
        engine.choice_logprobs([REQUEST], ["A", "B"])
    assert "HTTP 400" in str(caught.value) and "prompt too long" in str(caught.value)
    assert len(server.chat_requests) == 1


def test_a_refused_key_names_the_option(server):
    server.script = [error(401, "bad key")]
    with engine_on(server) as engine, pytest.raises(EngineError, match="--api-key-env"):
        engine.choice_logprobs([REQUEST], ["A", "B"])


def test_after_the_retry_budget_the_engine_raises_and_returns_nothing(server):
    server.default = error(503, "down")
    with engine_on(server, max_retries=2) as engine, pytest.raises(EngineError) as caught:
        engine.choice_logprobs([REQUEST], ["A", "B"])
    assert "failed 3 times" in str(caught.value) and "HTTP 503" in str(caught.value)
    assert len(server.chat_requests) == 3


def test_a_failing_server_leaves_the_rotation_and_the_others_carry_on(capsys):
    with ScriptedServer(default=error(500)) as bad, ScriptedServer() as good:
        with engine_on(bad, good, eject_after=2, concurrency=1) as engine:
            scores = engine.choice_logprobs([REQUEST] * 12, ["A", "B"])
            assert [s.out for s in engine.pool.servers] == [True, False]
        assert len(bad.chat_requests) == 2 and len(good.chat_requests) == 12
    assert all(s.logprobs[0] == pytest.approx(-0.1) for s in scores)
    assert "left the rotation after 2 failures" in capsys.readouterr().err


def test_the_last_server_is_never_taken_out(server):
    server.script = [error(500)] * 4
    with engine_on(server, eject_after=1) as engine:
        engine.choice_logprobs([REQUEST], ["A", "B"])
        assert not engine.pool.servers[0].out


def test_rate_limits_do_not_take_a_server_out():
    with ScriptedServer(default=error(429, "busy", {"Retry-After": "0"})) as busy, ScriptedServer() as good:
        with engine_on(busy, good, eject_after=1, concurrency=1) as engine:
            engine.choice_logprobs([REQUEST] * 6, ["A", "B"])
            assert not engine.pool.servers[0].out
        assert len(busy.chat_requests) >= 2 and len(good.chat_requests) == 6


def test_two_servers_share_the_work():
    with ScriptedServer() as one, ScriptedServer() as two:
        with engine_on(one, two, concurrency=2) as engine:
            probes = [s.answered for s in engine.pool.servers]
            engine.choice_logprobs([REQUEST] * 20, ["A", "B"])
            answered = [s.answered - p for s, p in zip(engine.pool.servers, probes)]
    assert sum(answered) == 20 and min(answered) >= 5, answered


def test_a_server_down_at_start_is_left_out(server, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    with engine_on(dead, server, max_retries=1) as engine:
        assert [s.out for s in engine.pool.servers] == [True, False]
        engine.choice_logprobs([REQUEST], ["A", "B"])
    assert "left the rotation" in capsys.readouterr().err


def test_no_server_up_at_start_is_an_engine_error():
    with pytest.raises(EngineError, match="connection failed"):
        engine_on(f"http://127.0.0.1:{free_port()}", max_retries=0)


# -- what is asked and how answers are read -------------------------------------------------------


@pytest.mark.parametrize(("owned_by", "method"), [("vllm", "continue_prefix"), ("someone-else", "first_token_topk")])
def test_auto_continues_the_prefix_on_vllm_and_asks_for_a_letter_elsewhere(owned_by, method):
    with ScriptedServer(owned_by=owned_by) as server, engine_on(server) as engine:
        assert engine.choice_method == method
        engine.choice_logprobs([REQUEST], ["A", "B"])
        body = server.chat_requests[0].json()
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
    if method == "continue_prefix":
        assert body["messages"][-1] == {"role": "assistant", "content": "The better response is ("}
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    else:
        assert body["messages"][-1]["role"] == "user" and "A or B" in body["messages"][-1]["content"]
        assert "continue_final_message" not in body


def test_the_method_option_overrides_auto():
    with ScriptedServer(owned_by="vllm") as server, engine_on(server, choice_method="first_token_topk") as engine:
        assert engine.choice_method == "first_token_topk"


def test_letter_spellings_add_up_and_a_missing_choice_is_bounded(server):
    top = [("(A", math.log(0.5)), (" A", math.log(0.2)), ("The", math.log(0.1)), ("**", math.log(0.05))]
    server.default = (200, chat_reply(top), {})
    with engine_on(server, choice_method="first_token_topk") as engine:
        (score,) = engine.choice_logprobs([REQUEST], ["A", "B"])
    assert math.exp(score.logprobs[0]) == pytest.approx(0.7)
    assert score.logprobs[1] == pytest.approx(math.log(0.05)) and score.bounded == (False, True)


def test_choice_reading_on_garbage_and_against_a_slow_reference():
    assert choice_of_token("", ["A", "B"], loose=True) is None
    assert choice_of_token("\n", ["A", "B"], loose=False) is None
    with pytest.raises(ValueError):
        scores_from_topk([], ["A", "B"], loose=False)
    top = [("A", -0.4), (" A", -2.0), ("B", -1.3), ("A", -0.4), ("b", -3.0)]  # a repeated entry counts once
    score = scores_from_topk(top, ["A", "B"], loose=False)
    slow_a = math.log(math.exp(-0.4) + math.exp(-2.0))
    assert score.logprobs == pytest.approx((slow_a, -1.3)) and score.bounded == (False, False)


def test_generation_sends_one_seeded_request_per_sample(server):
    server.default = (200, chat_reply(text="hello", tokens=7), {})
    params = GenerationParams(n=2, temperature=0.8, max_tokens=9, stop=("\n\n",))
    with engine_on(server) as engine:
        (generation,) = engine.generate([CONVERSATION], params, seeds=[41])
    bodies = [r.json() for r in server.chat_requests]
    assert sorted(b["seed"] for b in bodies) == sorted([derive_seed(41, 0), derive_seed(41, 1)])
    assert all(b["n"] == 1 and b["max_tokens"] == 9 and b["stop"] == ["\n\n"] for b in bodies)
    assert generation.texts == ("hello", "hello") and generation.token_counts == (7, 7)


def test_without_a_tokenize_endpoint_prompt_lengths_are_an_upper_bound(server):
    with engine_on(server) as engine:
        lengths = engine.prompt_lengths([CONVERSATION, CONVERSATION * 3])
        asked = len(server.requests)
        assert engine.prompt_lengths([CONVERSATION]) == lengths[:1]
        assert len(server.requests) == asked  # learnt once that the server cannot count
        with pytest.raises(InputError, match="max_model_len"):
            _ = engine.max_model_len
    assert lengths[0] < lengths[1] and lengths[0] >= len("Say hi.")


# -- fingerprints and the command line ------------------------------------------------------------


def label_config(tmp_path: Path, **judge: object) -> LabelConfig:
    engine = EngineConfig.model_validate({"name": "openai", "model": "org/judge", "base_urls": "http://h:1",
                                          "api_key_env": "SOME_KEY", **judge})
    return LabelConfig(constitution=tmp_path / "c.yaml", out=tmp_path / "out", pairs=tmp_path / "p.jsonl",
                       judge=engine)


def test_fingerprint_keeps_model_and_method_never_urls_or_key(tmp_path):
    fingerprint = fingerprint_config(label_config(tmp_path, choice_method="first_token_topk"))
    assert fingerprint["judge"] == {"name": "openai", "model": "org/judge", "choice_method": "first_token_topk"}
    assert "http://h" not in json.dumps(fingerprint) and "SOME_KEY" not in json.dumps(fingerprint)


def test_fingerprint_records_what_auto_resolved_to(tmp_path, server):
    config = label_config(tmp_path, base_urls=server.url, model="scripted", api_key_env=None)
    with pytest.raises(ValueError, match="auto"):
        fingerprint_config(config)
    settled = settled_choice_method(config.judge, None)  # asks the (non-vLLM) server; loads nothing
    assert fingerprint_config(config, {"judge": settled})["judge"]["choice_method"] == "first_token_topk"
    with engine_on(server) as engine:
        assert settled_choice_method(config.judge, engine) == "first_token_topk"


def write_pairs(path: Path, n: int) -> Path:
    rows = [{"prompt": f"Question {i}?", "response_a": f"Answer {i}.", "response_b": f"No idea {i}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def label_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["label", "--constitution", str(Path(__file__).parent.parent / "constitutions" / "helpful-honest.yaml"),
            "--pairs", str(write_pairs(tmp_path / "pairs.jsonl", 3)), "--out", str(tmp_path / "run"), "--quiet", *extra]


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as caught:
        main(args)
    return int(caught.value.code or 0)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--engine", "openai", "--base-url", "localhost:8000", "--judge-model", "scripted"], "--base-url"),
        (["--engine", "vllm", "--base-url", "http://127.0.0.1:9"], "--base-url"),
        (["--engine", "openai", "--base-url", "http://127.0.0.1:9", "--api-key-env", "LABELER_UNSET_KEY",
          "--judge-model", "scripted"], "--api-key-env"),
    ],
)
def test_cli_bad_server_options_exit_2_before_anything_runs(tmp_path, capsys, monkeypatch, extra, named):
    monkeypatch.delenv("LABELER_UNSET_KEY", raising=False)
    assert run_cli(label_args(tmp_path, *extra)) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_stops_with_exit_1_and_a_message_when_the_server_refuses(tmp_path, capsys):
    with ScriptedServer(default=error(400, "this server refuses")) as server:
        args = label_args(tmp_path, "--engine", "openai", "--base-url", server.url, "--judge-model", "scripted")
        code = run_cli(args)
    err = capsys.readouterr().err
    assert code == 1 and "this server refuses" in err and "run the same command again" in err
    assert "Traceback" not in err


def test_out_of_retries_mid_run_keeps_what_was_written_and_the_rerun_resumes(tmp_path, capsys):
    from labeler.store import iter_records

    settings = tmp_path / "engine.yaml"
    settings.write_text("max_retries: 1\nretry_backoff: 0.01\n")
    good = (200, chat_reply([("A", -0.1), ("B", -2.0)]), {})
    with ScriptedServer(script=[good] * 2, default=error(503, "down")) as server:  # one pair, then down
        args = label_args(tmp_path, "--engine", "openai", "--base-url", server.url, "--judge-model", "scripted",
                          "--engine-config", str(settings), "--batch-size", "1")
        assert run_cli(args) == 1
        assert "run the same command again" in capsys.readouterr().err
        kept = iter_records(tmp_path / "run", "preferences", require_complete=False)
        assert len(list(kept)) == 1  # the first pair's shard stays
        server.default = good
        assert run_cli(args) == 0
    assert "wrote 2 pairs (1 already done" in capsys.readouterr().out
    ids = [r.id for r in iter_records(tmp_path / "run", "preferences")]
    assert len(ids) == 3 == len(set(ids))


def test_judging_flags_exactly_the_pairs_with_a_bounded_choice():
    from fake_engine import FakeEngine, scripted_logit

    from labeler.engine import ChoiceScores
    from labeler.inputs.constitution import load_constitution
    from labeler.inputs.templates import Templates
    from labeler.stages.judge import JudgeOptions, judge_pairs, panel_for
    from labeler.stages.pairs import SOURCE_FILE, make_pair

    class TopKEngine(FakeEngine):
        """Marks option B bounded where its scripted logit is low, as a short top-k list would miss it."""

        def __init__(self) -> None:
            super().__init__()
            self.bounded: list[bool] = []  # per request, in the order asked

        def choice_logprobs(self, requests, choices):
            scores = super().choice_logprobs(requests, choices)
            missing = [scripted_logit(r, choices[1]) < -1.5 for r in requests]
            self.bounded += missing
            return [ChoiceScores(s.logprobs, (False, m)) for s, m in zip(scores, missing)]

    repo = Path(__file__).parent.parent
    options = JudgeOptions()  # one principle per pair: its two orders are two requests in a row
    panel = panel_for(load_constitution(repo / "constitutions" / "helpful-honest.yaml"), options, "helpful-honest")
    pairs = [make_pair([Message(role="user", content=f"Q{i}?")], f"yes {i}", f"no {i}", SOURCE_FILE) for i in range(24)]
    engine = TopKEngine()
    records = judge_pairs(engine, Templates.load(), panel, pairs, options)
    expected = {i for i in range(len(pairs)) if any(engine.bounded[2 * i : 2 * i + 2])}
    flagged = {i for i, r in enumerate(records) if "choice_outside_topk" in r.flags}
    assert flagged == expected and 0 < len(flagged) < len(pairs)


def test_a_run_config_with_a_bad_server_url_names_the_file(tmp_path):
    from labeler.pipeline.run import load_run_config

    path = tmp_path / "run.yaml"
    path.write_text("out: runs/x\nconstitution: c.yaml\nprompts: p.jsonl\n"
                    "engine: {name: openai, model: judge, base_urls: [localhost:8000]}\n")
    with pytest.raises(InputError) as caught:
        load_run_config(path)
    assert caught.value.file == str(path) and caught.value.where == "base_urls"


def test_the_device_plan_of_a_run_on_servers_names_no_device_here():
    from labeler.pipeline.run import RunConfig, device_plan

    engine = EngineConfig(name="openai", model="judge", base_urls=("http://a:8000", "http://b:8000"))
    config = RunConfig(out=Path("o"), constitution=Path("c"), prompts=Path("p"), engine=engine)
    assert device_plan(config)[1] == "label: judge judge on 2 servers (none on this node)"
