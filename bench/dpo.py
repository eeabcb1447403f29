"""Training throughput of `labeler dpo` against TRL's `DPOTrainer`, in one run.

Same model (the embedded SmolLM2-135M-Instruct, float32), same pairs (a synthetic preference run,
rendered by both through the chat template and split into prompt and response the same way), same
batch size, learning rate, LoRA adapter (q_proj, v_proj, rank 16) and threads; one epoch over every
pair, so both see exactly the same tokens; hard labels (TRL's sigmoid loss); no gradient checkpointing,
no mixed precision, no checkpoints, no evaluation.

Both read reference log-probabilities once before training: labeler always does (its cache), TRL with
`precompute_ref_log_probs=True`; the time of that pass and of loading is left out of both. TRL is also
run as it defaults (a reference pass with the adapter disabled at every step), for the record.
Throughput is the real (non-padding) tokens of both sides of every pair per second of the training loop.

    .venv/bin/python bench/dpo.py --pairs 64 --batch-size 4 --threads 2
    .venv/bin/python bench/dpo.py --smoke --out figures.json   # seconds: a tiny random model, a few pairs

Prints each trainer and the ratios of throughputs (labeler / TRL).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

WORDS = "apple river stone cloud green quick lamp seven paper music bright slow".split()
LORA_MODULES = ("q_proj", "v_proj")


def write_synthetic_run(folder: Path, pairs: int, seed: int) -> Path:
    """A finished preference run: two independent responses per prompt, the one ending in "good" preferred."""
    from labeler.core.chat import Message
    from labeler.core.records import PreferenceRecord, conversation_columns, record_id
    from labeler.store import RunStore

    rng = random.Random(seed)
    records = []
    for i in range(pairs):
        prompt = f"Question {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
        good = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + " good"
        bad = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + " bad"
        a, b = (good, bad) if i % 2 == 0 else (bad, good)
        p_a = 1.0 if a == good else 0.0
        records.append(
            PreferenceRecord(
                id=record_id(prompt, a, b), **conversation_columns([Message(role="user", content=prompt)], good, bad),
                response_a=a, response_b=b, p_a=p_a, p_a_ab=p_a, p_a_ba=p_a,
                mass_ab=1.0, mass_ba=1.0, logprobs_ab=(-0.1, -2.3), logprobs_ba=(-0.1, -2.3), consistent=True,
                principle_ids=(), principle_scores=(), margin=1.0, judge_model="synthetic", source="synthetic",
                flags=(),
            )
        )  # fmt: skip
    store = RunStore.open(folder, "preferences", {"bench": pairs, "seed": seed})
    store.write_shard(records)
    store.mark_complete()
    return folder


def tiny_model(folder: Path) -> Path:
    """A randomly initialised 2-layer Llama with the embedded model's tokenizer (for --smoke)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from labeler.engine.embedded import prepare_default_model

    tokenizer = AutoTokenizer.from_pretrained(prepare_default_model())
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def run_labeler(run: Path, model: Path, out: Path, args: argparse.Namespace) -> tuple[int, float]:
    from labeler.train.dpo.config import DPOConfig
    from labeler.train.dpo.train import train_dpo

    config = DPOConfig(
        data=(run,), policy=str(model), out=out, loss="hard", beta=0.1, batch_size=args.batch_size, epochs=1,
        learning_rate=1e-5, lr_schedule="constant", max_length=args.max_length, eval_fraction=0.0,
        logging_steps=10**6, quiet=True, seed=0, lora_rank=16, lora_alpha=32, lora_target_modules=LORA_MODULES,
    )  # fmt: skip
    result = train_dpo(config)
    return result.tokens, result.train_seconds


def run_trl(run: Path, model: Path, out: Path, args: argparse.Namespace, *, precompute: bool) -> float:
    """Seconds of TRL's training loop over the same pairs (one epoch)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from labeler.store import read_split

    table = read_split(run, "preferences").select(["prompt", "chosen", "rejected"])
    config = DPOConfig(
        output_dir=str(out), per_device_train_batch_size=args.batch_size, num_train_epochs=1, learning_rate=1e-5,
        lr_scheduler_type="constant", beta=0.1, loss_type="sigmoid", max_length=args.max_length,
        precompute_ref_log_probs=precompute, bf16=False, gradient_checkpointing=False, save_strategy="no",
        eval_strategy="no", logging_steps=10**6, report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        seed=0, use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=list(LORA_MODULES), task_type="CAUSAL_LM")
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), args=config,
        train_dataset=Dataset.from_dict(table.to_pydict()), processing_class=AutoTokenizer.from_pretrained(model),
        peft_config=lora,
    )  # fmt: skip
    started = time.monotonic()
    trainer.train()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=64, help="Pairs in the synthetic run (one epoch over them).")
    parser.add_argument("--batch-size", type=int, default=4, help="Pairs per step.")
    parser.add_argument("--max-length", type=int, default=128, help="Token limit (the synthetic pairs fit in it).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument("--model", type=Path, default=None, help="Policy model folder (default: the embedded model).")
    parser.add_argument("--smoke", action="store_true", help="A tiny random model and 8 pairs: every path, in seconds.")
    parser.add_argument("--out", type=Path, default=None, help="Write the figures as JSON here.")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers
    import trl

    from labeler.engine.embedded import prepare_default_model

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        if args.smoke:
            args.pairs, args.batch_size = 8, 4
        model = tiny_model(Path(tmp) / "tiny") if args.smoke else (args.model or prepare_default_model())
        run = write_synthetic_run(Path(tmp) / "run", args.pairs, seed=0)
        print(f"model {model}\ntorch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
              f"{transformers.__version__}, trl {trl.__version__}\n{args.pairs} pairs, one epoch, batch "
              f"{args.batch_size}, max_length {args.max_length}, float32, LoRA r16 on {', '.join(LORA_MODULES)}",
              flush=True)  # fmt: skip
        tokens, labeler_s = run_labeler(run, model, Path(tmp) / "labeler", args)
        rates = {"labeler": tokens / labeler_s}
        for name, precompute in (("trl_precomputed_reference", True), ("trl_default", False)):
            rates[name] = tokens / run_trl(run, model, Path(tmp) / name, args, precompute=precompute)
    for name, rate in rates.items():
        print(f"{name:26s} {tokens:7d} tokens {tokens / rate:7.1f} s {rate:8.1f} tokens/s", flush=True)
    figures = {
        "tokens": tokens,
        "tokens_per_s": rates,
        "labeler_over_trl": rates["labeler"] / rates["trl_precomputed_reference"],
        "labeler_over_trl_default": rates["labeler"] / rates["trl_default"],
    }
    print(f"ratio labeler / TRL DPOTrainer (reference precomputed by both): {figures['labeler_over_trl']:.2f}x; "
          f"against TRL's default (a reference pass every step): {figures['labeler_over_trl_default']:.2f}x")
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
