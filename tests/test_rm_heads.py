"""A reward model with one head per principle: the masked multi-head loss against a slow reference, the
default one-head training unchanged, two heads with opposite scripted rules each learning its own,
resuming, plain transformers scoring the same, and score-rm reweighting the heads without retraining."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from labeler.cli.app import main
from labeler.core.chat import Message
from labeler.core.layout import METRICS_FILE
from labeler.core.records import PreferenceRecord, PrincipleScore, conversation_columns, record_id
from labeler.store import RunStore
from labeler.train.rm.config import RMTrainConfig
from labeler.train.rm.losses import bradley_terry_loss, multi_head_bradley_terry_loss
from labeler.train.rm.model import REWARD_CARD, load_reward_model
from labeler.train.rm.train import train_reward_model

WORDS = "apple river stone cloud green quick lamp seven paper music".split()

# Two principles whose scripted rules disagree on every pair: `kind` prefers the response ending in
# "good", `blunt` the one ending in "bad". The overall label p_a follows `kind`.
CONSTITUTION = """\
name: opposite
principles:
  - id: kind
    dimension: Kind
    definition: The response is kind.
    weight: 1.0
  - id: blunt
    dimension: Blunt
    definition: The response is blunt.
    weight: 3.0
  - id: never-scored
    dimension: Unused
    definition: No pair has a score for this one.
"""


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the loss against a slow reference ---------------------------------------------------------------


def slow_multi_head_loss(
    reward_a: list[list[float]], reward_b: list[list[float]], target: list[list[float]], mask: list[list[bool]],
    weights: list[float],
) -> float:
    """The definition, one number at a time: per head the mean BCE over its labelled pairs, then the weighted
    mean over the heads that have a labelled pair."""
    import math

    total, weight_sum = 0.0, 0.0
    for k, weight in enumerate(weights):
        losses = []
        for i in range(len(reward_a)):
            if mask[i][k]:
                p = 1.0 / (1.0 + math.exp(-(reward_a[i][k] - reward_b[i][k])))
                losses.append(-(target[i][k] * math.log(p) + (1.0 - target[i][k]) * math.log(1.0 - p)))
        if losses:
            total += weight * sum(losses) / len(losses)
            weight_sum += weight
    return total / weight_sum


def test_multi_head_loss_matches_the_slow_reference_and_masked_pairs_train_nothing() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = int(torch.randint(1, 9, (1,), generator=generator))
        heads = int(torch.randint(1, 5, (1,), generator=generator))
        reward_a = torch.randn(batch, heads, generator=generator, dtype=torch.float64, requires_grad=True)
        reward_b = torch.randn(batch, heads, generator=generator, dtype=torch.float64)
        target = torch.rand(batch, heads, generator=generator, dtype=torch.float64)
        mask = torch.rand(batch, heads, generator=generator) < 0.6
        mask[0, 0] = True  # some head has a label
        weights = torch.rand(heads, generator=generator, dtype=torch.float64) + 0.1
        loss = multi_head_bradley_terry_loss(reward_a, reward_b, target, mask, weights)
        expected = slow_multi_head_loss(reward_a.tolist(), reward_b.tolist(), target.tolist(), mask.tolist(),
                                        weights.tolist())
        assert loss.item() == pytest.approx(expected, rel=1e-10)
        loss.backward()
        assert reward_a.grad is not None
        assert torch.all(reward_a.grad[~mask] == 0)  # a pair without a label for a head does not train it
        assert torch.all(reward_a.grad[mask] != 0)


def test_one_head_with_every_label_is_the_bradley_terry_loss() -> None:
    reward_a, reward_b, target = torch.randn(7), torch.randn(7), torch.rand(7)
    ones = torch.ones(7, 1, dtype=torch.bool)
    combined = multi_head_bradley_terry_loss(reward_a[:, None], reward_b[:, None], target[:, None], ones)
    torch.testing.assert_close(combined, bradley_terry_loss(reward_a, reward_b, target), rtol=0, atol=1e-7)
    torch.testing.assert_close(combined, F.binary_cross_entropy_with_logits(reward_a - reward_b, target))


# --- data ----------------------------------------------------------------------------------------------


def scripted_pair(index: int, rng: random.Random, *, blunt_scored: bool = True) -> PreferenceRecord:
    prompt = f"Question {index}: say something."
    filler = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
    good, bad = f"{filler} good", f"{filler} bad"
    a_good = rng.random() < 0.5
    a, b = (good, bad) if a_good else (bad, good)
    kind = 3.0 if a_good else -3.0
    scores = [PrincipleScore(principle_id="kind", score=kind)]
    if blunt_scored:
        scores.append(PrincipleScore(principle_id="blunt", score=-kind))
    p_a = 0.9 if a_good else 0.1
    return PreferenceRecord(
        id=record_id(prompt, a, b), **conversation_columns([Message(role="user", content=prompt)], good, bad),
        response_a=a, response_b=b, p_a=p_a, p_a_ab=p_a, p_a_ba=p_a, mass_ab=0.9, mass_ba=0.9,
        logprobs_ab=(-0.1, -2.0), logprobs_ba=(-0.1, -2.0), consistent=True, principle_ids=("kind", "blunt"),
        principle_scores=tuple(scores), margin=0.4, judge_model="synthetic", source="synthetic", flags=(),
    )  # fmt: skip


def write_run(folder: Path, records: Sequence[PreferenceRecord]) -> Path:
    store = RunStore.open(folder, "preferences", {"synthetic": len(records)})
    store.write_shard(list(records))
    store.mark_complete()
    return folder


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)  # every fourth pair has no blunt score: that head skips it
    pairs = [scripted_pair(i, rng, blunt_scored=i % 4 != 0) for i in range(160)]
    return write_run(tmp_path_factory.mktemp("run") / "run", pairs)


@pytest.fixture(scope="module")
def constitution(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("constitution") / "opposite.yaml"
    path.write_text(CONSTITUTION)
    return path


def heads_config(run: Path, model: Path, out: Path, constitution: Path | None, **overrides: object) -> RMTrainConfig:
    settings: dict[str, object] = {
        "data": (run,), "base_model": str(model), "out": out, "batch_size": 16, "learning_rate": 3e-3,
        "warmup_steps": 5, "max_length": 64, "eval_fraction": 0.2, "logging_steps": 10, "quiet": True,
    }  # fmt: skip
    if constitution is not None:
        settings |= {"heads": "principles", "constitution": constitution}
    return RMTrainConfig.model_validate(settings | overrides)


def metric_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]


# --- the default is today's training -------------------------------------------------------------------


def test_default_one_head_training_gives_the_same_losses_as_before(tiny_model: Path, tmp_path: Path) -> None:
    """Losses of one-head training on these pairs and seed, as recorded before heads existed."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_rm_train import preference

    rng = random.Random(0)
    run = write_run(tmp_path / "run", [preference(i, rng) for i in range(40)])
    out = tmp_path / "rm"
    train_reward_model(heads_config(run, tiny_model, out, None, max_steps=6, batch_size=8, logging_steps=1))
    losses = [row["loss"] for row in metric_rows(out)]
    before = [0.6934142708778381, 0.6900900602340698, 0.6823933720588684, 0.6624053120613098, 0.6432419300079346]
    assert losses == pytest.approx(before, abs=1e-5)
    card = json.loads((out / REWARD_CARD).read_text())
    assert "heads" not in card
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "LABEL_0"}


# --- two heads, opposite rules -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def heads_model(tiny_model: Path, scripted_run: Path, constitution: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rm") / "rm"
    torch.set_num_threads(1)
    train_reward_model(heads_config(scripted_run, tiny_model, out, constitution, epochs=20, max_steps=100))
    return out


def held_out(n: int) -> list[tuple[list[dict[str, str]], list[dict[str, str]]]]:
    """(good, bad) conversations of prompts the training never saw."""
    rng = random.Random(7)
    chats = []
    for i in range(n):
        prompt = {"role": "user", "content": f"Question {1000 + i}: say something."}
        filler = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        chats.append(([prompt, {"role": "assistant", "content": f"{filler} good"}],
                      [prompt, {"role": "assistant", "content": f"{filler} bad"}]))
    return chats


def test_each_head_learns_its_own_rule_and_not_the_other(heads_model: Path) -> None:
    model = load_reward_model(heads_model, device="cpu")
    assert model.heads == ("overall", "kind", "blunt")  # the unscored principle gets no head
    pairs = held_out(40)
    good = model.score_heads([g for g, _ in pairs])  # (40, 3)
    bad = model.score_heads([b for _, b in pairs])
    prefers_good = (good > bad).float().mean(dim=0)  # per head: how often "good" wins
    kind_rule = {"overall": prefers_good[0].item(), "kind": prefers_good[1].item(), "blunt": prefers_good[2].item()}
    blunt_rule = {name: 1.0 - value for name, value in kind_rule.items()}  # ties are not expected
    assert kind_rule["kind"] > 0.9 and blunt_rule["kind"] < 0.6
    assert blunt_rule["blunt"] > 0.9 and kind_rule["blunt"] < 0.6
    assert kind_rule["overall"] > 0.9  # p_a follows kind
    final_eval = [row for row in metric_rows(heads_model) if row["split"] == "eval"][-1]
    assert final_eval["accuracy/kind"] > 0.9 and final_eval["accuracy/blunt"] > 0.9
    card = json.loads((heads_model / REWARD_CARD).read_text())
    assert card["heads"] == ["overall", "kind", "blunt"] and card["head_weights"] == {"kind": 1.0, "blunt": 3.0}
    # the default weighting is the constitution's: 1 × kind + 3 × blunt
    torch.testing.assert_close(model.score([g for g, _ in pairs]), good[:, 1] + 3.0 * good[:, 2])


def test_saved_heads_model_scores_the_same_in_plain_transformers(heads_model: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    plain = AutoModelForSequenceClassification.from_pretrained(heads_model, use_safetensors=True).eval()
    assert plain.config.num_labels == 3 and plain.config.id2label == {0: "overall", 1: "kind", 2: "blunt"}
    tokenizer = AutoTokenizer.from_pretrained(heads_model)
    ours = load_reward_model(heads_model, device="cpu")
    for chat in [c for pair in held_out(3) for c in pair]:
        text = tokenizer.apply_chat_template(chat, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            expected = plain(**ids).logits[0]  # (3,)
        torch.testing.assert_close(ours.score_heads([chat])[0], expected, atol=1e-5, rtol=1e-5)


def test_heads_resume_gives_the_same_weights_and_metrics(
    tiny_model: Path, scripted_run: Path, constitution: Path, tmp_path: Path
) -> None:
    settings = {"max_steps": 8, "batch_size": 8, "checkpoint_every": 4, "logging_steps": 2, "eval_steps": 4,
                "head_loss_weights": "constitution"}
    whole = tmp_path / "whole"
    train_reward_model(heads_config(scripted_run, tiny_model, whole, constitution, **settings))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-4", resumed / "checkpoint-4")
    shutil.copy(whole / METRICS_FILE, resumed / METRICS_FILE)
    result = train_reward_model(heads_config(scripted_run, tiny_model, resumed, constitution, resume=True, **settings))
    assert result.steps == 8
    expected, actual = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected["score.weight"].shape == (3, 32)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6)
    timing = {"tokens_per_s"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in metric_rows(resumed)] == [
        {k: v for k, v in r.items() if k not in timing} for r in metric_rows(whole)
    ]
    assert "accuracy/blunt" in metric_rows(whole)[-1]


def test_loss_weights_from_the_constitution_change_training(
    tiny_model: Path, scripted_run: Path, constitution: Path, tmp_path: Path
) -> None:
    finals = {}
    for weights in ("equal", "constitution"):
        out = tmp_path / weights
        train_reward_model(heads_config(scripted_run, tiny_model, out, constitution, max_steps=3,
                                        head_loss_weights=weights))
        finals[weights] = load_file(out / "model.safetensors")["score.weight"]
    assert not torch.allclose(finals["equal"], finals["constitution"])


# --- score-rm: per head, and under any weighting ----------------------------------------------------------


def human_pairs(folder: Path) -> Path:
    """Human-labelled pairs where the human prefers the "good" response: the kind rule."""
    lines = []
    for i, (good, bad) in enumerate(held_out(16)):
        lines.append(json.dumps({"prompt": good[:1], "chosen": good[1]["content"], "rejected": bad[1]["content"],
                                 "topic": "even" if i % 2 == 0 else "odd"}))
    path = folder / "human.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def score_rm(model: Path, pairs: Path, out: Path, *extra: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["score-rm", "--model", str(model), "--pairs", str(pairs), "--group-by", "topic", "--out", str(out),
              *extra])
    assert exit_info.value.code == 0
    return json.loads(out.read_text())


def test_score_rm_reports_every_head_and_reweights_without_retraining(
    heads_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = human_pairs(tmp_path)
    weights_before = (heads_model / "model.safetensors").read_bytes()
    default = score_rm(heads_model, pairs, tmp_path / "default.json")
    assert default["weights"] == {"kind": 1.0, "blunt": 3.0}  # the constitution's
    assert list(default["heads"]) == ["overall", "kind", "blunt"]
    kind, blunt = default["heads"]["kind"], default["heads"]["blunt"]
    assert kind["overall"]["accuracy"] > 0.9 and blunt["overall"]["accuracy"] < 0.1
    assert sorted(kind["groups"]) == ["even", "odd"] and kind["groups"]["odd"]["pairs"] == 8
    printed = capsys.readouterr().out
    assert "accuracy of each head on its own" in printed and "kind=1, blunt=3" in printed

    towards_kind = score_rm(heads_model, pairs, tmp_path / "kind.json", "--weights", "kind=1")
    towards_blunt = score_rm(heads_model, pairs, tmp_path / "blunt.json", "--weights", "kind=1,blunt=2")
    assert towards_kind["overall"]["accuracy"] > 0.9 and towards_kind["overall"] == kind["overall"]
    assert towards_blunt["overall"]["accuracy"] < 0.5 < towards_kind["overall"]["accuracy"]
    assert towards_blunt["heads"] == towards_kind["heads"] == default["heads"]  # the same model scored each time
    assert (heads_model / "model.safetensors").read_bytes() == weights_before


def test_score_rm_on_a_one_head_model_reports_no_heads(tiny_model: Path, scripted_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "rm"
    train_reward_model(heads_config(scripted_run, tiny_model, out, None, max_steps=2))
    report = score_rm(out, human_pairs(tmp_path), tmp_path / "report.json")
    assert report["heads"] == {} and report["weights"] == {"LABEL_0": 1.0}


# --- PPO against a weighting of the heads -------------------------------------------------------------------


def test_ppo_rewards_with_the_weighted_sum_of_heads(heads_model: Path, tiny_model: Path, tmp_path: Path) -> None:
    """One PPO step from the same seed (so the same completions) under three weightings: the logged reward is
    the weighted sum of the heads, the default being the constitution's weights."""
    from labeler.train.ppo.config import PPOConfig
    from labeler.train.ppo.rewards import RewardModelReward
    from labeler.train.ppo.train import train_ppo

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}: say something."}) + "\n" for i in range(4)))
    rewards = {}
    for name, weights in {"kind": {"kind": 1.0}, "blunt": {"blunt": 1.0}, "default": None}.items():
        out = tmp_path / name
        train_ppo(PPOConfig(policy=str(tiny_model), prompts=prompts, out=out, reward_model=str(heads_model),
                            reward_weights=weights, steps=1, rollout_batch=4, minibatch=2, ppo_epochs=1,
                            max_new_tokens=4, device="cpu", rollout_engine="hf", quiet=True))
        rewards[name] = metric_rows(out)[0]["reward"]
    assert rewards["default"] == pytest.approx(rewards["kind"] + 3.0 * rewards["blunt"], abs=1e-4)
    assert rewards["kind"] != pytest.approx(rewards["blunt"], abs=1e-4)

    prompt = [Message(role="user", content="Question 1: say something.")]
    reward = RewardModelReward(heads_model, {"kind": 2.0, "overall": -1.0})
    heads = reward.model.score_heads([[{"role": "user", "content": "Question 1: say something."},
                                       {"role": "assistant", "content": "lamp good"}]])[0]
    assert reward([prompt], ["lamp good"])[0] == pytest.approx(float(2.0 * heads[1] - heads[0]), abs=1e-5)


def test_eval_policy_reports_the_mean_of_each_head(heads_model: Path, tiny_model: Path, tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from fake_engine import FakeEngine

    from labeler.engine import EngineConfig
    from labeler.evaluate.policy_run import EvalPolicyConfig, eval_policy

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}: say something."}) + "\n" for i in range(6)))
    constitution = tmp_path / "opposite.yaml"
    constitution.write_text(CONSTITUTION)
    config = EvalPolicyConfig(
        baseline=str(tiny_model), candidate=str(tiny_model), prompts=prompts, constitution=constitution,
        judge=EngineConfig(name="hf", model=str(tiny_model)), reward_model=str(heads_model), kl=False, quiet=True,
    )  # fmt: skip
    report = eval_policy(config, judge=FakeEngine(), baseline=FakeEngine("a"), candidate=FakeEngine("b"))
    assert report.rewards is not None and list(report.rewards.heads) == ["overall", "kind", "blunt"]
    model = load_reward_model(heads_model, device="cpu")
    for role in ("baseline", "candidate"):
        chats = [[{"role": "user", "content": f"Question {i}: say something."},
                  {"role": "assistant", "content": getattr(row, role)}] for i, row in enumerate(report.prompts)]
        expected = model.score_heads(chats).mean(dim=0)  # (3,)
        for k, head in enumerate(("overall", "kind", "blunt")):
            assert getattr(report.rewards.heads[head], role).mean == pytest.approx(float(expected[k]), abs=1e-5)
        weighted = getattr(report.rewards, role).mean  # the constitution's weights: 1 × kind + 3 × blunt
        assert weighted == pytest.approx(float(expected[1] + 3.0 * expected[2]), abs=1e-5)


def test_a_run_config_gives_per_principle_training_the_label_constitution(tmp_path: Path) -> None:
    from labeler.pipeline.run import RunConfig, train_rm_config

    stages = {"label": {"pairs": "prompts", "constitution": "c.yaml"}, "train_rm": {"heads": "principles"}}
    run = RunConfig.model_validate({"out": tmp_path, "constitution": "other.yaml", "prompts": "p", "stages": stages})
    config = train_rm_config(run, run.stages.train_rm)
    assert config.heads == "principles" and config.constitution is not None and config.constitution.name == "c.yaml"


def test_continuing_a_heads_model_needs_the_same_heads(heads_model: Path, scripted_run: Path, tmp_path: Path) -> None:
    from labeler.core.errors import InputError
    from labeler.train.rm.train import check_rm_training

    fewer = tmp_path / "kind-only.yaml"
    fewer.write_text("name: k\nprinciples:\n  - id: kind\n    definition: The response is kind.\n")
    with pytest.raises(InputError, match="heads overall, kind, blunt; this run trains overall, kind"):
        check_rm_training(heads_config(scripted_run, heads_model, tmp_path / "rm", fewer))
    same = check_rm_training(heads_config(scripted_run, heads_model, tmp_path / "rm", constitution_file(tmp_path)))
    assert same.heads == ("overall", "kind", "blunt") and same.loss_weights == (1.0, 1.0, 1.0)


def constitution_file(folder: Path) -> Path:
    path = folder / "opposite.yaml"
    path.write_text(CONSTITUTION)
    return path
