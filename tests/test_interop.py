"""A preference split trains TRL's RewardTrainer and DPOTrainer as it is: loaded with `datasets`, no
conversion, the conversational columns rendered with the chat template, every turn of a multi-turn
conversation included, and each row tokenised exactly as `labeler ppo` renders a conversation for its
reward model. A tiny random Llama (the embedded model's tokenizer and chat template), a few steps, one
thread: what is under test is the data path."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import datasets
import pytest
import torch
from sample_runs import HH_CONVERSATION, judged

from labeler.core.records import PreferenceRecord
from labeler.store import RunStore, make_fingerprint
from labeler.train.common.tokenizer import load_tokenizer
from labeler.train.rm.batch import encode_conversations


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def preferences(tmp_path_factory: pytest.TempPathFactory) -> datasets.Dataset:
    """The preference split of a run, as `datasets` loads it: 12 pairs, half of them a multi-turn dialogue."""
    run = tmp_path_factory.mktemp("interop") / "run"
    fingerprint = make_fingerprint(config={}, models={"judge": "judge"}, constitution_sha256=None,
                                   template_sha256s={}, seed=0)  # fmt: skip
    store = RunStore.open(run, "preferences", fingerprint)
    store.write_shard([judged(i) for i in range(7)])
    store.write_shard([judged(i) for i in range(7, 12)])
    store.mark_complete()
    dataset = datasets.load_dataset("arrow", data_files=str(run / "preferences" / "*.arrow"), split="train",
                                    cache_dir=str(run.parent / "cache"))  # fmt: skip
    assert dataset.column_names == list(PreferenceRecord.model_fields) and dataset.num_rows == 12
    return dataset


def test_reward_trainer_trains_on_the_split_and_sees_what_ppo_gives_the_reward_model(
    one_thread: None, tiny_model: Path, preferences: datasets.Dataset, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    tokenizer = load_tokenizer(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(
        output_dir=str(tmp_path / "rm"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
        max_length=256, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False,
        gradient_checkpointing=False, dataloader_num_workers=0, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = RewardTrainer(model=model, args=args, train_dataset=preferences, processing_class=tokenizer)
    assert len(trainer.train_dataset) == 12  # nothing dropped, nothing converted first

    # TRL renders prompt + chosen with the chat template: the very tokens `labeler ppo` scores with a
    # reward model (the conversation, then the completion as the assistant's turn).
    for index in (0, 1):
        row = preferences[index]
        conversation = [*row["prompt"], {"role": "assistant", "content": row["chosen_text"]}]
        ours = encode_conversations(tokenizer, [conversation], max_length=256)["input_ids"][0].tolist()
        assert trainer.train_dataset[index]["chosen_ids"] == ours
    rendered = tokenizer.decode(trainer.train_dataset[0]["chosen_ids"])
    positions = [rendered.index(m.content) for m in HH_CONVERSATION]
    assert positions == sorted(positions)  # every turn, in order, before the response
    assert rendered.index(preferences[0]["chosen_text"]) > positions[-1]

    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["margin"].dtype == torch.float32  # the margin column reaches the loss
    head = model.score.weight.detach().clone()
    result = trainer.train()
    assert result.global_step == 2 and math.isfinite(result.training_loss)
    assert not torch.equal(head, model.score.weight.detach())


def test_dpo_trainer_trains_on_the_split(
    one_thread: None, tiny_model: Path, preferences: datasets.Dataset, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    tokenizer = load_tokenizer(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
        max_length=256, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False,
        gradient_checkpointing=False, dataloader_num_workers=0, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = DPOTrainer(model=model, args=args, train_dataset=preferences, processing_class=tokenizer)
    assert len(trainer.train_dataset) == 12
    prompt = tokenizer.decode(trainer.train_dataset[0]["prompt_ids"])
    assert all(m.content in prompt for m in HH_CONVERSATION)  # the whole conversation is the prompt
    assert tokenizer.decode(trainer.train_dataset[0]["chosen_ids"]).startswith(preferences[0]["chosen_text"])
    before = [p.detach().clone() for p in model.parameters()]
    result = trainer.train()
    assert result.global_step == 2 and math.isfinite(result.training_loss)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
