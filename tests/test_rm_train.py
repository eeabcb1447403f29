"""Reward-model training end to end: a tiny random Llama learns a separable preference set, padding
never changes a reward, resuming matches an uninterrupted run, LoRA merges into a plain model, bad data
exits 2, and (slow) the embedded model's loss falls in a few steps."""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from labeler.cli.app import main
from labeler.core.chat import Message
from labeler.core.errors import InputError
from labeler.core.layout import METRICS_FILE
from labeler.core.records import PreferenceRecord, PrincipleScore, conversation_columns, record_id
from labeler.store import RunStore, ShardInfo, SplitEntry, sha256_bytes
from labeler.store.manifest import new_manifest, write_manifest
from labeler.store.shards import encode_shard
from labeler.train.rm.config import RMTrainConfig
from labeler.train.rm.model import REWARD_CARD, load_reward_model
from labeler.train.rm.train import train_reward_model

WORDS = "apple river stone cloud green quick lamp seven paper music".split()
TIMING = {"tokens_per_s"}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One thread: on two cores shared with other work, two threads ran these tests about 3x slower
    (each small kernel waits for the slower thread), and the results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def preference(index: int, rng: random.Random, *, soft: bool = True) -> PreferenceRecord:
    """A separable pair: the response ending in "good" beats the same filler ending in "bad"."""
    prompt = f"Question {index}: say something."
    filler = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
    good, bad = f"{filler} good", f"{filler} bad"
    a_good = rng.random() < 0.5
    a, b = (good, bad) if a_good else (bad, good)
    p_a = (rng.uniform(0.8, 1.0) if a_good else rng.uniform(0.0, 0.2)) if soft else float(a_good)
    score = 3.0 if a_good else -3.0
    return PreferenceRecord(
        id=record_id(prompt, a, b),
        **conversation_columns([Message(role="user", content=prompt)], good, bad),
        response_a=a,
        response_b=b,
        p_a=p_a,
        p_a_ab=p_a,
        p_a_ba=p_a,
        mass_ab=0.9,
        mass_ba=0.9,
        logprobs_ab=(-0.1, -2.0),
        logprobs_ba=(-0.1, -2.0),
        consistent=True,
        principle_ids=("kind", "brief"),
        principle_scores=(
            PrincipleScore(principle_id="kind", score=score),
            PrincipleScore(principle_id="brief", score=-0.2 * score),
        ),
        margin=abs(p_a - 0.5),
        judge_model="synthetic",
        source="synthetic",
        flags=(),
    )


def write_run(folder: Path, records: Sequence[PreferenceRecord]) -> Path:
    store = RunStore.open(folder, "preferences", {"synthetic": len(records)})
    store.write_shard(list(records))
    store.mark_complete()
    return folder


@pytest.fixture(scope="module")
def separable_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    return write_run(tmp_path_factory.mktemp("run") / "run", [preference(i, rng) for i in range(160)])


def tiny_config(run: Path, model: Path, out: Path, **overrides: object) -> RMTrainConfig:
    settings: dict[str, object] = {
        "data": (run,),
        "base_model": str(model),
        "out": out,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "warmup_steps": 5,
        "max_length": 64,
        "eval_fraction": 0.2,
        "logging_steps": 10,
        "quiet": True,
    }
    settings.update(overrides)
    return RMTrainConfig.model_validate(settings)


def metric_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]


# --- learning, padding, saving -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_model: Path, separable_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rm") / "rm"
    torch.set_num_threads(1)
    train_reward_model(tiny_config(separable_run, tiny_model, out, epochs=20, max_steps=100))
    return out


def test_tiny_model_learns_separable_preferences(trained: Path) -> None:
    rows = metric_rows(trained)
    train_rows = [r for r in rows if r["split"] == "train"]
    final_eval = [r for r in rows if r["split"] == "eval"][-1]
    assert final_eval["pairs"] >= 20 and final_eval["accuracy"] >= 0.9
    assert train_rows[-1]["accuracy"] >= 0.9 and train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert final_eval["margin"] > 0.5  # r_chosen − r_rejected
    card = json.loads((trained / REWARD_CARD).read_text())
    assert card["steps"] == 100 and card["metrics"]["eval"]["accuracy"] == final_eval["accuracy"]
    assert card["runs"][0]["rows"] == 160 and len(card["runs"][0]["split_sha256"]) == 64
    assert (trained / "model.safetensors").is_file() and not list(trained.glob("*.bin"))


def conversations(n: int) -> list[list[dict[str, str]]]:
    rng = random.Random(1)
    return [
        [
            {"role": "user", "content": f"Question {i}: " + " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))},
            {"role": "assistant", "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9))) + " good"},
        ]
        for i in range(n)
    ]


def test_left_and_right_padding_give_the_same_rewards(trained: Path) -> None:
    model = load_reward_model(trained, device="cpu", batch_size=8)
    chats = conversations(8)
    model.tokenizer.padding_side = "right"
    right = model.score(chats)
    model.tokenizer.padding_side = "left"
    left = model.score(chats)
    alone = torch.cat([model.score([chat]) for chat in chats])  # no padding at all
    assert right.shape == (8,) and right.dtype == torch.float32
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)
    assert right.std() > 0  # the rewards depend on the text


def test_shared_prompt_gives_the_same_rewards_and_gradients(tiny_model: Path) -> None:
    """Running a pair's common prompt once (its keys/values reused by both responses) changes no number."""
    from labeler.train.common.tokenizer import load_tokenizer
    from labeler.train.rm.batch import collate_pairs
    from labeler.train.rm.labels import TrainingExample
    from labeler.train.rm.model import LastTokenReward, load_classifier

    tokenizer = load_tokenizer(tiny_model)
    torch.manual_seed(0)
    classifier = load_classifier(tiny_model, dtype=torch.float32, pad_token_id=tokenizer.pad_token_id)
    reward = LastTokenReward(classifier).train()
    chats = conversations(10)  # prompts of different lengths: padding sits between prefix and continuation
    examples = []
    for a, b in zip(chats[:5], chats[5:], strict=True):
        turns = tuple(Message(**m) for m in a)
        other = Message(role="assistant", content=b[-1]["content"] + " more")
        examples.append(TrainingExample(turns, (*turns[:-1], other), 0.7, 0.0))
    results = {}
    for share in (True, False):
        batch = collate_pairs(examples, tokenizer, 64, share_prefix=share)
        assert ("prefix_ids" in batch) == share
        classifier.zero_grad()
        rewards = reward(batch["input_ids"], batch["attention_mask"], batch.get("prefix_ids"), batch.get("prefix_mask"))
        (rewards * torch.arange(10.0)).sum().backward()  # weights: every row's gradient counts differently
        grads = {name: p.grad.clone() for name, p in classifier.named_parameters() if p.grad is not None}
        results[share] = (rewards.detach(), grads, int(batch["tokens"]))
    torch.testing.assert_close(results[True][0], results[False][0], atol=1e-5, rtol=1e-5)
    assert results[True][1].keys() == results[False][1].keys() and len(results[True][1]) > 10
    for name, grad in results[False][1].items():
        torch.testing.assert_close(results[True][1][name], grad, atol=1e-5, rtol=1e-4)
    assert results[True][2] == results[False][2]  # throughput counts the same tokens either way


def test_saved_model_loads_with_plain_transformers(trained: Path) -> None:
    """The folder is an ordinary sequence classifier; on an unpadded input its own pooling agrees."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    plain = AutoModelForSequenceClassification.from_pretrained(trained, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(trained)
    chat = conversations(1)[0]
    ids = tokenizer(tokenizer.apply_chat_template(chat, tokenize=False), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        expected = plain(**ids).logits[0, 0]
    ours = load_reward_model(trained, device="cpu").score([chat])[0]
    assert ours.item() == pytest.approx(expected.item(), abs=1e-5)


# --- resume ------------------------------------------------------------------------------------------


def test_resume_gives_the_same_weights_and_metrics(tiny_model: Path, separable_run: Path, tmp_path: Path) -> None:
    settings = {"max_steps": 12, "batch_size": 8, "checkpoint_every": 5, "logging_steps": 3, "eval_steps": 4}
    whole = tmp_path / "whole"
    train_reward_model(tiny_config(separable_run, tiny_model, whole, **settings))
    assert sorted(p.name for p in whole.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]

    # An interrupted run: what was on disk right after checkpoint-5 (plus metric lines written later).
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-5", resumed / "checkpoint-5")
    shutil.copy(whole / METRICS_FILE, resumed / METRICS_FILE)
    result = train_reward_model(tiny_config(separable_run, tiny_model, resumed, resume=True, **settings))
    assert result.steps == 12

    expected, actual = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6)
    strip = [{k: v for k, v in row.items() if k not in TIMING} for row in metric_rows(whole)]
    again = [{k: v for k, v in row.items() if k not in TIMING} for row in metric_rows(resumed)]
    assert again == strip


def test_resume_refuses_other_settings_and_reuse_needs_resume(
    tiny_model: Path, separable_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rm"
    train_reward_model(tiny_config(separable_run, tiny_model, out, max_steps=4, checkpoint_every=2))
    with pytest.raises(InputError, match="`resume` to continue"):
        train_reward_model(tiny_config(separable_run, tiny_model, out, max_steps=4, checkpoint_every=2))
    with pytest.raises(InputError, match=r"learning_rate: 0\.003 then, 0\.01 now"):
        train_reward_model(
            tiny_config(
                separable_run, tiny_model, out, max_steps=4, checkpoint_every=2, learning_rate=1e-2, resume=True
            )
        )
    # --resume before any checkpoint exists (e.g. preempted early) starts afresh
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / METRICS_FILE).write_text('{"step": 1, "split": "train", "loss": 9.0}\n')
    train_reward_model(tiny_config(separable_run, tiny_model, fresh, max_steps=2, logging_steps=1, resume=True))
    assert [row["step"] for row in metric_rows(fresh)] == [1, 2, 2] and metric_rows(fresh)[0]["loss"] != 9.0


# --- LoRA, SALMON, CLI -------------------------------------------------------------------------------


def test_lora_is_merged_on_save(tiny_model: Path, separable_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "rm"
    settings = {"lora": True, "lora_rank": 4, "max_steps": 6, "learning_rate": 1e-2}
    train_reward_model(tiny_config(separable_run, tiny_model, out, **settings))
    assert not (out / "adapter_config.json").exists()
    base, merged = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    q = "model.layers.0.self_attn.q_proj.weight"
    k = "model.layers.0.self_attn.k_proj.weight"
    assert not torch.equal(base[q], merged[q])  # adapters merged in
    torch.testing.assert_close(base[k], merged[k], rtol=0, atol=0)  # untouched by LoRA
    assert "score.weight" in merged and not any("lora" in name for name in merged)
    assert load_reward_model(out, device="cpu").score(conversations(3)).shape == (3,)


CONSTITUTION = """\
name: synthetic
principles:
  - id: kind
    dimension: Kind
    definition: The response is kind.
    negative_definition: The response is unkind.
  - id: brief
    dimension: Brief
    definition: The response is brief.
  - id: judge-only
    judge: Which response is better?
"""


def test_principle_conditioned_training_through_the_cli(
    tiny_model: Path, separable_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    constitution = tmp_path / "c.yaml"
    constitution.write_text(CONSTITUTION)
    out = tmp_path / "rm"
    args = ["train-rm", "--data", str(separable_run), "--base-model", str(tiny_model), "--out", str(out),
            "--principle-conditioned", "--constitution", str(constitution), "--max-steps", "4",
            "--batch-size", "8", "--max-length", "96", "--learning-rate", "1e-3", "--logging-steps", "2"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    card = json.loads((out / REWARD_CARD).read_text())
    assert card["config"]["principle_conditioned"] is True and card["steps"] == 4
    assert card["salmon_principles"] == ["kind", "brief"]  # the judge-only principle is not a salmon one
    assert [r["step"] for r in metric_rows(out) if r["split"] == "train"] == [2, 4]
    assert "reward model:" in capsys.readouterr().out


def test_hard_loss_with_margin_through_the_cli(tiny_model: Path, separable_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "rm"
    with pytest.raises(SystemExit) as exit_info:
        main(["train-rm", "--data", str(separable_run), "--base-model", str(tiny_model), "--out", str(out),
              "--loss", "hard", "--margin", "--max-steps", "3", "--batch-size", "4", "--max-length", "32",
              "--eval-fraction", "0"])
    assert exit_info.value.code == 0
    card = json.loads((out / REWARD_CARD).read_text())
    assert card["config"]["loss"] == "hard" and card["config"]["margin"] is True
    assert card["pairs"] == {"train": 160, "eval": 0, "skipped": 0}
    assert card["truncated_conversations"] > 0  # 32 tokens cut into the default system prompt


# --- bad input exits 2 -----------------------------------------------------------------------------


def write_raw_run(folder: Path, table: pa.Table) -> Path:
    """A run whose preference shard holds `table` as is, with a correct checksum (bypassing the writer)."""
    data = encode_shard(table)
    (folder / "preferences").mkdir(parents=True)
    (folder / "preferences" / "shard-00000.arrow").write_bytes(data)
    info = ShardInfo(file="preferences/shard-00000.arrow", rows=table.num_rows, sha256=sha256_bytes(data))
    entry = SplitEntry(fingerprint={}, status="complete", shards=(info,))
    write_manifest(folder, new_manifest().with_split("preferences", entry))
    return folder


def exit_code_and_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


def test_bad_data_exits_2_with_a_clear_message(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(0)
    good = PreferenceRecord.to_table([preference(i, rng) for i in range(4)])
    no_p_a = write_raw_run(tmp_path / "no-p-a", good.drop_columns(["p_a"]))
    p_a_text = write_raw_run(tmp_path / "p-a-text", good.set_column(
        good.schema.get_field_index("p_a"), "p_a", good.column("p_a").cast("string")))
    no_preferences = tmp_path / "no-splits"
    no_preferences.mkdir()
    write_manifest(no_preferences, new_manifest())  # a run folder whose manifest lists no split
    base = ["train-rm", "--base-model", str(tiny_model), "--out", str(tmp_path / "out"), "--max-steps", "1"]

    code, err = exit_code_and_error(base, capsys)
    assert code == 2 and "--data" in err
    code, err = exit_code_and_error([*base, "--data", str(no_p_a), "--lr", "1e-3"], capsys)
    assert code == 2 and "--lr was renamed --learning-rate" in err
    code, err = exit_code_and_error([*base, "--data", str(no_p_a)], capsys)
    assert code == 2 and "shard-00000.arrow" in err and "columns do not match" in err
    code, err = exit_code_and_error([*base, "--data", str(p_a_text)], capsys)
    assert code == 2 and "shard-00000.arrow" in err
    code, err = exit_code_and_error([*base, "--data", str(no_preferences)], capsys)
    assert code == 2 and "no 'preferences' split" in err and "manifest.json" in err
    code, err = exit_code_and_error([*base, "--data", str(tmp_path / "missing")], capsys)
    assert code == 2 and "not a folder" in err
    code, err = exit_code_and_error([*base, "--data", str(no_p_a), "--eval-fraction", "1.5"], capsys)
    assert code == 2 and "--eval-fraction" in err
    code, err = exit_code_and_error([*base, "--data", str(no_p_a), "--principle-conditioned"], capsys)
    assert code == 2 and "constitution" in err


def test_constitution_without_salmon_principles_exits_2(
    tiny_model: Path, separable_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    constitution = tmp_path / "judge-only.yaml"
    constitution.write_text("name: j\nprinciples:\n  - id: j\n    judge: Which is better?\n")
    code, err = exit_code_and_error(
        ["train-rm", "--data", str(separable_run), "--base-model", str(tiny_model), "--out", str(tmp_path / "o"),
         "--principle-conditioned", "--constitution", str(constitution)],
        capsys,
    )
    assert code == 2 and "judge-only.yaml" in err and "no salmon principles" in err


# --- score-rm ----------------------------------------------------------------------------------------


def test_score_rm_reports_accuracy_per_group(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(5)
    lines = []
    for i in range(12):
        filler = " ".join(rng.choice(WORDS) for _ in range(3))
        prompt: object = f"Question {i}: say something." if i % 2 else [{"role": "user", "content": f"Q{i}?"}]
        lines.append(json.dumps({"prompt": prompt, "chosen": f"{filler} good", "rejected": f"{filler} bad",
                                 "topic": "even" if i % 2 == 0 else "odd"}))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(lines) + "\n")
    report_path = tmp_path / "report.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["score-rm", "--model", str(trained), "--pairs", str(pairs), "--group-by", "topic",
              "--out", str(report_path)])
    assert exit_info.value.code == 0
    report = json.loads(report_path.read_text())
    assert report["overall"]["pairs"] == 12 and report["overall"]["accuracy"] >= 0.9
    assert sorted(report["groups"]) == ["even", "odd"] and report["groups"]["odd"]["pairs"] == 6
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "invalid JSON"),
        ('{"prompt": "p", "chosen": "c"}', "(field 'rejected'): missing field"),
        ('{"prompt": 3, "chosen": "c", "rejected": "r"}', "(field 'prompt'): expected text or a non-empty list"),
        ('{"prompt": [{"role": "user"}], "chosen": "c", "rejected": "r"}', "message 0 needs a role"),
        ('{"prompt": "p", "chosen": "c", "rejected": "r"}', "(field 'topic'): missing or empty group value"),
        ('{"prompt": "p", "chosen": [{"role": "user", "content": "c"}], "rejected": "r", "topic": "x"}',
         "(field 'chosen'): expected text or a list of one {role: assistant, content} message"),
        ('{"prompt": "p", "chosen": "same", "rejected": "same ", "topic": "x"}', "chosen and rejected are the same"),
    ],
)
def test_score_rm_bad_rows_name_file_and_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "p", "chosen": "c", "rejected": "r", "topic": "x"}\n\n' + line + "\n")
    code, err = exit_code_and_error(
        ["score-rm", "--model", str(trained), "--pairs", str(pairs), "--group-by", "topic"], capsys
    )
    assert code == 2 and f"{pairs}:3" in err and message in err


# --- the embedded model -----------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_model_loss_falls_in_a_few_steps(embedded_model: Path, tmp_path: Path) -> None:
    """Full fine-tuning of the real 135M model on four pairs: each step sees all four, so the loss
    at step 4 is measured on the same pairs as at step 1, after three updates."""
    rng = random.Random(3)
    run = write_run(tmp_path / "run", [preference(i, rng, soft=False) for i in range(4)])
    out = tmp_path / "rm"
    config = RMTrainConfig(
        data=(run,), base_model=str(embedded_model), out=out, batch_size=4, max_steps=4, epochs=4, learning_rate=5e-5,
        max_length=40, eval_fraction=0.0, logging_steps=1, quiet=True,
    )
    result = train_reward_model(config)
    losses = [r["loss"] for r in metric_rows(out) if r["split"] == "train"]
    assert result.steps == 4 and len(losses) == 4
    assert losses[-1] < losses[0] - 0.05, losses
    card = json.loads((out / REWARD_CARD).read_text())
    assert card["metrics"]["train"]["loss"] == losses[-1]


# --- fitting large models: gradient checkpointing, bfloat16 weights ---------------------------------


def test_gradient_checkpointing_changes_memory_not_the_numbers(
    tiny_model: Path, separable_run: Path, tmp_path: Path
) -> None:
    settings = {"max_steps": 3, "batch_size": 8, "logging_steps": 1, "eval_fraction": 0.0, "share_prefix": False}
    train_reward_model(tiny_config(separable_run, tiny_model, tmp_path / "plain", **settings))
    train_reward_model(tiny_config(separable_run, tiny_model, tmp_path / "ckpt", gradient_checkpointing=True,
                                   **settings))
    plain = [row["loss"] for row in metric_rows(tmp_path / "plain")]
    recomputed = [row["loss"] for row in metric_rows(tmp_path / "ckpt")]
    assert len(plain) == 3 and plain == pytest.approx(recomputed, abs=1e-5)


def test_bfloat16_weights_train_and_save_in_bfloat16(tiny_model: Path, separable_run: Path, tmp_path: Path) -> None:
    from labeler.train.rm.train import weights_dtype

    config = tiny_config(separable_run, tiny_model, tmp_path / "bf16", weights_dtype="bfloat16", max_steps=2,
                         eval_fraction=0.0, logging_steps=1)
    assert weights_dtype(config) == torch.bfloat16
    assert weights_dtype(config.model_copy(update={"weights_dtype": "auto", "mixed_precision": "bf16"})) == (
        torch.bfloat16 if torch.cuda.is_available() else torch.float32
    )
    train_reward_model(config)
    saved = load_file(tmp_path / "bf16" / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    assert all(math.isfinite(row["loss"]) for row in metric_rows(tmp_path / "bf16"))


def test_score_rm_gives_the_same_figures_on_every_shape_of_the_same_rows(trained: Path, tmp_path: Path) -> None:
    """Anthropic's HH-RLHF rows as released (two whole transcripts), as transcripts with a prompt, TRL's
    implicit prompt and its one-message replies: the same figures as the rows given as messages."""
    from test_intake_rows import hh_rows, shapes, write

    from labeler.evaluate.reward_model import score_reward_model
    from labeler.train.rm.config import ScoreRMConfig

    reports = {}
    for name, rows in shapes(hh_rows()).items():
        config = ScoreRMConfig(model=str(trained), pairs=write(tmp_path / f"{name}.jsonl", rows))
        reports[name] = score_reward_model(config).model_dump(exclude={"pairs_file"})
    assert reports["messages"]["overall"]["pairs"] == len(hh_rows())
    for name, report in reports.items():
        assert report == reports["messages"], name
