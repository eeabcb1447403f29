"""A preference split trains TRL's RewardTrainer as it is: loaded with `datasets`, no conversion."""

from __future__ import annotations

import math
from pathlib import Path

import datasets
import pytest

from labeler.engine.base import Message
from labeler.records import PreferenceRecord, PrincipleScore, record_id
from labeler.store import RunStore, make_fingerprint


def pair(i: int) -> PreferenceRecord:
    prompt = f"Name a colour, number {i}."
    a, b = f" Blue, {i}.", f" I refuse to answer {i}."
    p_ab, p_ba = 0.55 + (i % 4) * 0.1, 0.6
    p_a = (p_ab + p_ba) / 2
    return PreferenceRecord(
        id=record_id(prompt, a, b),
        prompt=prompt,
        prompt_messages=(Message(role="user", content=prompt),),
        response_a=a,
        response_b=b,
        chosen=a,
        rejected=b,
        p_a=p_a,
        p_a_ab=p_ab,
        p_a_ba=p_ba,
        mass_ab=0.9,
        mass_ba=0.8,
        logprobs_ab=(math.log(0.9 * p_ab), math.log(0.9 * (1 - p_ab))),
        logprobs_ba=(math.log(0.8 * p_ba), math.log(0.8 * (1 - p_ba))),
        consistent=True,
        principle_ids=("helpful",),
        principle_scores=(PrincipleScore(principle_id="helpful", score=math.log(p_a / (1 - p_a))),),
        margin=round(i / 16, 4),
        judge_model="judge",
        source="synthetic",
        flags=(),
    )


@pytest.mark.slow
def test_reward_trainer_trains_on_the_preference_split(tmp_path: Path, embedded_model: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    records = [pair(i) for i in range(16)]
    run = tmp_path / "run"
    fingerprint = make_fingerprint(
        config={}, models={"judge": "judge"}, constitution_sha256=None, template_sha256s={}, seed=0
    )
    store = RunStore.open(run, "preferences", fingerprint)
    store.write_shard(records[:10])
    store.write_shard(records[10:])
    store.mark_complete()

    dataset = datasets.load_dataset(
        "arrow", data_files=str(run / "preferences" / "*.arrow"), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert dataset.column_names == list(PreferenceRecord.model_fields)
    assert dataset.num_rows == 16

    tokenizer = AutoTokenizer.from_pretrained(embedded_model)
    model = AutoModelForSequenceClassification.from_pretrained(embedded_model, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    # Only the reward head learns: what is under test is the data path, and two steps of the whole
    # 135M-parameter model take minutes on a shared 2-core CPU.
    model.model.requires_grad_(False)
    args = RewardConfig(
        output_dir=str(tmp_path / "rm"),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-4,
        max_length=64,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        seed=0,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    assert len(trainer.train_dataset) == 16  # nothing dropped by max_length: the columns were read as text

    batch = next(iter(trainer.get_train_dataloader()))
    # The float margin column reaches the loss, and each row gives a chosen and a rejected sequence.
    assert batch["margin"].dtype == torch.float32
    assert all(any(abs(m - r.margin) < 1e-6 for r in records) for m in batch["margin"].tolist())
    assert batch["input_ids"].shape[0] == 2 * args.per_device_train_batch_size
    first = tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert first.startswith("Name a colour, number") and "Blue" in first  # prompt + chosen, as text

    head = model.score.weight.detach().clone()
    result = trainer.train()
    assert result.global_step == 2 and math.isfinite(result.training_loss)
    assert not torch.equal(head, model.score.weight.detach())
