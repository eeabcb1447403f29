"""`labeler dpo` on the tiny random model: response-token masking, the cached reference, checkpoints and
resuming after kill -9, saving for plain transformers/PEFT, and parity with TRL's DPOTrainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from labeler.cli.app import main
from labeler.core.chat import Message
from labeler.core.layout import METRICS_FILE
from labeler.core.records import PreferenceRecord, conversation_columns, record_id
from labeler.store import RunStore
from labeler.train.dpo.batch import collate, tokenize_pair
from labeler.train.dpo.config import DPOConfig
from labeler.train.dpo.losses import hard_dpo_loss, response_logprobs
from labeler.train.dpo.model import Policy, sequence_logprobs
from labeler.train.dpo.train import DPO_CARD, REFERENCE_CACHE, pair_margin, train_dpo

REPO = Path(__file__).resolve().parent.parent
TIMING = {"tokens_per_s"}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pair(i: int, *, p_good: float = 0.9, flags: tuple[str, ...] = ()) -> PreferenceRecord:
    """A pair whose response ending in "good" is preferred with probability p_good (its side alternates)."""
    prompt = [Message(role="user", content=f"Question {i}: say something.")]
    good, bad = f"river {'stone ' * (i % 3)}good", f"river {'cloud ' * (i % 2)}bad"
    a, b = (good, bad) if i % 2 == 0 else (bad, good)
    p_a = p_good if a == good else 1.0 - p_good
    return PreferenceRecord(
        id=record_id(prompt[0].content, a, b), **conversation_columns(prompt, good, bad),
        response_a=a, response_b=b, p_a=p_a, p_a_ab=p_a, p_a_ba=p_a, mass_ab=0.9, mass_ba=0.9,
        logprobs_ab=(-0.1, -2.0), logprobs_ba=(-0.1, -2.0), consistent=True, principle_ids=(), principle_scores=(),
        margin=abs(2 * p_a - 1), judge_model="synthetic", source="synthetic", flags=flags,
    )  # fmt: skip


def write_run(folder: Path, records: Sequence[PreferenceRecord]) -> Path:
    store = RunStore.open(folder, "preferences", {"synthetic": len(records)})
    store.write_shard(list(records))
    store.mark_complete()
    return folder


@pytest.fixture(scope="module")
def pairs_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = [pair(i, flags=("order_flip",) if i % 10 == 9 else ()) for i in range(40)]
    return write_run(tmp_path_factory.mktemp("dpo-run") / "run", records)


def tiny_config(run: Path, model: Path, out: Path, **overrides: Any) -> DPOConfig:
    settings: dict[str, Any] = dict(
        data=(run,), policy=str(model), out=out, batch_size=8, learning_rate=1e-2, beta=0.5, max_length=64,
        eval_fraction=0.2, logging_steps=2, quiet=True, lora_rank=4, lora_alpha=8,
    )  # fmt: skip
    settings.update(overrides)
    return DPOConfig.model_validate(settings)


def metric_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]


def tokenizer_of(model: Path) -> Any:
    from labeler.train.common.tokenizer import load_tokenizer

    return load_tokenizer(model)


def plain_lm(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).eval()


# --- tokens and masking ------------------------------------------------------------------------------


def test_response_tokens_are_what_the_chat_template_adds_after_the_prompt(tiny_model: Path) -> None:
    tokenizer = tokenizer_of(tiny_model)
    record = pair(0)
    tokens = tokenize_pair(tokenizer, record, max_length=512)
    assert tokenizer.decode(list(tokens.response_a)) == f"{record.response_a}<|im_end|>\n"
    prompt_text = tokenizer.apply_chat_template([m.model_dump() for m in record.prompt], tokenize=False,
                                                add_generation_prompt=True)  # fmt: skip
    assert tokenizer.decode(list(tokens.prompt)) == prompt_text
    short = tokenize_pair(tokenizer, record, max_length=8)
    assert short.truncated and len(short.prompt) + max(len(short.response_a), len(short.response_b)) <= 8
    assert short.response_a == tokens.response_a  # the prompt lost tokens, the response kept them


def test_prompt_and_padding_logits_change_nothing() -> None:
    """Only the positions that predict response tokens count: any change to the logits that predict prompt
    tokens or padding, or to the padding's token ids, leaves the sum as it was."""
    torch.manual_seed(0)
    input_ids = torch.tensor([[5, 6, 7, 8, 0, 0], [5, 6, 9, 0, 0, 0]])
    response_mask = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0]])
    logits = torch.randn(2, 6, 12)
    before = response_logprobs(logits, input_ids, response_mask)
    changed = logits.clone()
    changed[:, 0] += 100 * torch.randn(2, 12)  # predicts prompt token 6 (position 1)
    changed[0, 3:] = torch.randn(3, 12)  # predicts padding
    changed[1, 2:] = torch.randn(4, 12)
    other_pad = input_ids.masked_fill(torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]]).bool(), 3)
    torch.testing.assert_close(response_logprobs(changed, other_pad, response_mask), before)
    changed[0, 1, input_ids[0, 2]] += 1.0  # the logit that predicts a response token does count
    assert not torch.allclose(response_logprobs(changed, input_ids, response_mask), before)


def test_padding_and_a_changed_prompt_token_change_nothing_on_a_model(tiny_model: Path) -> None:
    """On the real forward pass: a pair's log-probabilities are the same alone or padded beside a longer
    pair; a prompt token's own log-probability is not in them (its row changes only through the context)."""
    tokenizer, lm = tokenizer_of(tiny_model), plain_lm(tiny_model)
    short, long = tokenize_pair(tokenizer, pair(0), 64), tokenize_pair(tokenizer, pair(5), 64)
    pad = int(tokenizer.pad_token_id)
    with torch.no_grad():
        alone = sequence_logprobs(lm, collate([short], pad))  # (2,): A, B
        beside = sequence_logprobs(lm, collate([short, long], pad))  # (4,): A0, A1, B0, B1
        other_pad = sequence_logprobs(lm, collate([short, long], 7))
    torch.testing.assert_close(beside[[0, 2]], alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(other_pad, beside, rtol=0, atol=1e-5)
    # the sum is over response tokens: it equals a per-token sum read off the full logits
    batch = collate([short], pad)
    with torch.no_grad():
        logits = lm(input_ids=batch["input_ids"]).logits[0]
    start, ids = len(short.prompt), batch["input_ids"][0]
    manual = sum(torch.log_softmax(logits[t - 1], -1)[ids[t]] for t in range(start, start + len(short.response_a)))
    assert alone[0].item() == pytest.approx(float(manual), abs=1e-4)


# --- a LoRA run: metrics, the cached reference, the saved adapter -------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_model: Path, pairs_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("dpo") / "out"
    calls = {"reference": 0}
    original = Policy.reference

    def counted(self: Policy) -> Any:
        calls["reference"] += 1
        return original(self)

    Policy.reference = counted  # type: ignore[method-assign]
    try:
        torch.set_num_threads(1)
        train_dpo(tiny_config(pairs_run, tiny_model, out, max_steps=6, epochs=2, eval_fraction=0.0,
                              drop_flags=("order_flip",)))
    finally:
        Policy.reference = original  # type: ignore[method-assign]
    return out, calls["reference"]


def test_lora_run_writes_metrics_and_learns(trained: tuple[Path, int]) -> None:
    out, _ = trained
    rows = metric_rows(out)
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert {"loss", "margin", "accuracy", "lr", "tokens", "tokens_per_s"} <= rows[-1].keys()
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["margin"] > 0
    card = json.loads((out / DPO_CARD).read_text())
    assert card["pairs"] == {"train": 36, "eval": 0, "dropped": 4}  # --drop-flags order_flip left out 4 pairs


def test_reference_logprobs_are_computed_once_and_are_the_start_policys(
    trained: tuple[Path, int], tiny_model: Path, pairs_run: Path
) -> None:
    """Six steps, one reference pass (the cache); the cached numbers are the starting model's."""
    out, reference_passes = trained
    assert reference_passes == 1
    cached = load_file(out / REFERENCE_CACHE)["logprobs"]  # (N, 2)
    records = [pair(i) for i in range(40) if i % 10 != 9]
    tokenizer, start = tokenizer_of(tiny_model), plain_lm(tiny_model)
    with torch.no_grad():
        fresh = sequence_logprobs(start, collate([tokenize_pair(tokenizer, r, 64) for r in records[:4]], 2))
    torch.testing.assert_close(cached[:4], torch.stack(fresh.chunk(2), dim=1), rtol=0, atol=1e-5)


def test_saved_adapter_loads_with_plain_peft(trained: tuple[Path, int], tiny_model: Path) -> None:
    """OUT is a PEFT adapter folder: loaded on the base with PEFT alone, it is the trained policy (its margin
    on the training pairs is what the last steps reached, and it differs from the base)."""
    from peft import PeftModel

    out, _ = trained
    lm = PeftModel.from_pretrained(plain_lm(tiny_model), str(out)).eval()
    tokenizer = tokenizer_of(out)
    records = [pair(i) for i in range(8)]
    batch = collate([tokenize_pair(tokenizer, r, 64) for r in records], 2)
    with torch.no_grad():
        trained_logps = sequence_logprobs(lm, batch)
        with lm.disable_adapter():
            base_logps = sequence_logprobs(lm, batch)
    h = pair_margin(trained_logps, torch.stack(base_logps.chunk(2), dim=1), batch["response_tokens"],
                    tiny_config(Path("r"), tiny_model, Path("o")))  # fmt: skip
    p_a = torch.tensor([r.p_a for r in records])
    assert ((h > 0) == (p_a > 0.5)).float().mean().item() >= 0.75  # the preferred side gained


# --- resume after kill -9 ----------------------------------------------------------------------------

KILL_AFTER_CHECKPOINT = """
import os, signal, sys
import torch
torch.set_num_threads(1)
import labeler.train.dpo.train as dpo_train
from labeler.cli.app import main
saving = dpo_train.save_checkpoint
def save_then_die(out, step, **kwargs):
    folder = saving(out, step, **kwargs)
    if step == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return folder
dpo_train.save_checkpoint = save_then_die
main(sys.argv[1:])
"""


def test_resume_after_kill_9_gives_the_same_weights(
    tiny_model: Path, pairs_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed right after checkpoint-4 of 6, then resumed: the same adapter and metrics as a run never
    interrupted; the resumed run reads the cached reference log-probabilities (no reference pass of its own
    but the held-out KL)."""
    args = ["--data", str(pairs_run), "--policy", str(tiny_model), "--batch-size", "8", "--learning-rate", "1e-2",
            "--beta", "0.5", "--max-length", "64", "--eval-fraction", "0.2", "--logging-steps", "1",
            "--max-steps", "6", "--epochs", "2", "--checkpoint-every", "2", "--lora-rank", "4", "--quiet"]  # fmt: skip
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    with pytest.raises(SystemExit) as exit_info:
        main(["dpo", *args, "--out", str(whole)])
    assert exit_info.value.code in (0, None)

    env = {**os.environ, "PYTHONPATH": str(REPO), "KILL_AT": "4"}
    dead = subprocess.run([sys.executable, "-c", KILL_AFTER_CHECKPOINT, "dpo", *args, "--out", str(killed)],
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert dead.returncode == -9, dead.stderr
    assert not (killed / "adapter_model.safetensors").exists() and (killed / "checkpoint-4").is_dir()
    passes = []
    original = Policy.reference
    monkeypatch.setattr(Policy, "reference", lambda self: passes.append(1) or original(self))
    with pytest.raises(SystemExit) as exit_info:
        main(["dpo", *args, "--out", str(killed), "--resume"])
    assert exit_info.value.code in (0, None)
    eval_pairs = metric_rows(whole)[-1]["pairs"]
    assert len(passes) == -(-eval_pairs // 8)  # one per held-out batch of the final evaluation, none else

    expected, actual = load_file(whole / "adapter_model.safetensors"), load_file(killed / "adapter_model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6)
    strip = [{k: v for k, v in row.items() if k not in TIMING} for row in metric_rows(whole)]
    assert [{k: v for k, v in row.items() if k not in TIMING} for row in metric_rows(killed)] == strip
    assert {"kl", "accuracy", "margin", "loss"} <= metric_rows(whole)[-1].keys()  # the held-out evaluation


# --- full fine-tuning through the CLI ----------------------------------------------------------------


def test_full_fine_tuning_with_hard_loss_saves_a_plain_model(
    tiny_model: Path, pairs_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "full"
    with pytest.raises(SystemExit) as exit_info:
        main(["dpo", "--data", str(pairs_run), "--policy", str(tiny_model), "--out", str(out), "--no-lora",
              "--loss", "hard", "--learning-rate", "1e-3", "--max-steps", "3", "--batch-size", "8",
              "--max-length", "64", "--eval-fraction", "0.2", "--quiet"])  # fmt: skip
    assert exit_info.value.code in (0, None)
    assert "policy:" in capsys.readouterr().out
    trained_lm, start = plain_lm(out), plain_lm(tiny_model)
    changed = [name for name, p in trained_lm.state_dict().items() if not torch.equal(p, start.state_dict()[name])]
    assert changed  # the whole model trained ...
    eval_row = metric_rows(out)[-1]
    assert eval_row["split"] == "eval" and eval_row["kl"] > 0  # ... away from its frozen reference


# --- parity with TRL ---------------------------------------------------------------------------------


def test_hard_loss_equals_trl_dpo_trainer_on_the_first_batch(tiny_model: Path, tmp_path: Path) -> None:
    """Same policy, reference, pairs and batch (float32): labeler's tokens, masks, log-probabilities and hard
    loss give the loss TRL's DPOTrainer computes, within 1e-4."""
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    reference, policy = plain_lm(tiny_model), plain_lm(tiny_model)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    records = [pair(i, p_good=1.0) for i in range(4)]
    rows = [{"prompt": [m.model_dump() for m in r.prompt], "chosen": [m.model_dump() for m in r.chosen],
             "rejected": [m.model_dump() for m in r.rejected]} for r in records]  # fmt: skip
    tokenizer = tokenizer_of(tiny_model)
    args = TRLDPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, beta=0.1, report_to=[],
                        use_cpu=True, max_length=None, save_strategy="no", bf16=False)  # fmt: skip
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)  # fmt: skip
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, next(iter(trainer.get_train_dataloader()))).item()

    batch = collate([tokenize_pair(tokenizer, r, 512) for r in records], int(tokenizer.pad_token_id))
    with torch.no_grad():
        policy_logps = sequence_logprobs(policy, batch)
        reference_logps = torch.stack(sequence_logprobs(reference, batch).chunk(2), dim=1)
    config = DPOConfig(data=(tmp_path,), out=tmp_path / "o", loss="hard", beta=0.1)
    h = pair_margin(policy_logps, reference_logps, batch["response_tokens"], config)
    ours = hard_dpo_loss(h, torch.tensor([r.p_a for r in records]), beta=0.1).item()
    assert abs(trl_loss - 0.6931) > 1e-3  # the two models differ: a loss of log 2 would prove nothing
    assert ours == pytest.approx(trl_loss, abs=1e-4)



def test_pair_margin_for_ipo_uses_per_token_means(tmp_path: Path) -> None:
    logps = torch.tensor([-4.0, -6.0])  # policy: A, B of one pair
    reference = torch.tensor([[-5.0, -5.0]])  # (B, 2)
    lengths = torch.tensor([2.0, 4.0])
    soft = DPOConfig(data=(tmp_path,), out=tmp_path / "o")
    ipo = DPOConfig(data=(tmp_path,), out=tmp_path / "o", loss="ipo")
    assert pair_margin(logps, reference, lengths, soft).item() == pytest.approx(1.0 - (-1.0))
    assert pair_margin(logps, reference, lengths, ipo).item() == pytest.approx(1.0 / 2 - (-1.0) / 4)


def test_bfloat16_weights_and_gradient_checkpointing_train_and_save(
    tiny_model: Path, pairs_run: Path, tmp_path: Path
) -> None:
    # The memory options of a large policy, on the tiny one: the weights train in bfloat16, activations are
    # recomputed in the backward pass, and the run still learns and saves an adapter.
    out = tmp_path / "bf16"
    result = train_dpo(tiny_config(pairs_run, tiny_model, out, max_steps=2, weights_dtype="bfloat16",
                                   gradient_checkpointing=True, eval_fraction=0.0))  # fmt: skip
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(row["loss"])) for row in metric_rows(out))
    adapter = load_file(out / "adapter_model.safetensors")  # PEFT keeps adapters in float32 over a bf16 base
    assert adapter and all(torch.isfinite(tensor).all() for tensor in adapter.values())
    assert any(tensor.abs().sum() > 0 for name, tensor in adapter.items() if "lora_B" in name)  # it moved
