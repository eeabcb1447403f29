"""Training throughput of labeler's reward-model trainer against TRL's `RewardTrainer`.

Same model (the embedded SmolLM2-135M-Instruct, float32), same pairs (a synthetic preference run whose
two responses per prompt are independent texts, so only the prompt is shared, as with two policy
samples), rendered by both through the chat template; same batch size, learning rate, steps and
threads; no gradient checkpointing, no mixed precision, no checkpoints, no evaluation for either.
Throughput is the real (non-padding) tokens of both conversations of every pair trained on, per second
of the training loop (model loading and TRL's up-front tokenisation are left out).

labeler runs twice: as shipped (a pair's shared prompt runs through the model once) and with
`share_prefix=False` (every conversation in full, the same computation TRL does), so the ratio shows
both what the default gains and what the loop itself costs. Rounds rotate the order.

    .venv/bin/python bench/train_rm.py --steps 24 --batch-size 4 --threads 1

Prints each run and the ratios of median throughputs (labeler / TRL).
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

WORDS = "apple river stone cloud green quick lamp seven paper music bright slow".split()


def write_synthetic_run(folder: Path, pairs: int, seed: int) -> Path:
    """A finished preference run of separable pairs (the response ending in "good" wins)."""
    from labeler.core.chat import Message
    from labeler.core.records import PreferenceRecord, conversation_columns, record_id
    from labeler.store import RunStore

    rng = random.Random(seed)
    records = []
    for i in range(pairs):
        prompt = f"Question {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
        good = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + " good"
        bad = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + " bad"
        a_good = rng.random() < 0.5
        a, b = (good, bad) if a_good else (bad, good)
        p_a = 0.9 if a_good else 0.1
        records.append(
            PreferenceRecord(
                id=record_id(prompt, a, b), **conversation_columns([Message(role="user", content=prompt)], good, bad),
                response_a=a, response_b=b, p_a=p_a, p_a_ab=p_a, p_a_ba=p_a,
                mass_ab=1.0, mass_ba=1.0, logprobs_ab=(-0.1, -2.3), logprobs_ba=(-0.1, -2.3), consistent=True,
                principle_ids=(), principle_scores=(), margin=0.4, judge_model="synthetic", source="synthetic",
                flags=(),
            )
        )
    store = RunStore.open(folder, "preferences", {"bench": pairs, "seed": seed})
    store.write_shard(records)
    store.mark_complete()
    return folder


def run_labeler(
    run: Path, model: Path, out: Path, args: argparse.Namespace, *, share_prefix: bool
) -> tuple[int, float]:
    from labeler.train.rm.config import RMTrainConfig
    from labeler.train.rm.train import train_reward_model

    config = RMTrainConfig(
        data=(run,), base_model=str(model), out=out, loss="hard", batch_size=args.batch_size,
        max_steps=args.steps, epochs=100, learning_rate=1e-5, max_length=args.max_length, eval_fraction=0.0,
        logging_steps=args.steps, quiet=True, seed=0, share_prefix=share_prefix,
    )
    result = train_reward_model(config)
    return result.tokens, result.train_seconds


def shared_fraction(run: Path, model: Path, args: argparse.Namespace) -> float:
    """Fraction of all tokens that are a pair's shared prompt (what prefix sharing runs once, not twice)."""
    from labeler.train.common.tokenizer import load_tokenizer
    from labeler.train.rm.batch import collate_pairs
    from labeler.train.rm.labels import HardLabels
    from labeler.train.rm.pairs import load_pairs

    tokenizer = load_tokenizer(model)
    examples = [HardLabels().example(pair, epoch=0) for pair in load_pairs([run])]
    batch = collate_pairs(examples, tokenizer, args.max_length)
    return float(batch["prefix_mask"].sum() * 2 / batch["tokens"])


def run_trl(run: Path, model: Path, out: Path, args: argparse.Namespace) -> tuple[int, float]:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from labeler.store import read_split

    # The split is in TRL's conversational form (the prompt as messages, each response as an assistant
    # turn), so both trainers render exactly the same chat-template text. Only those columns are kept:
    # TRL would also subtract `margin`, which the labeler run here does not.
    table = read_split(run, "preferences").select(["prompt", "chosen", "rejected"])
    dataset = Dataset.from_dict(table.to_pydict())
    config = RewardConfig(
        output_dir=str(out), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=1e-5, max_length=args.max_length, bf16=False, gradient_checkpointing=False,
        save_strategy="no", eval_strategy="no", logging_steps=args.steps, report_to=[], disable_tqdm=True,
        dataloader_num_workers=0, seed=0,
    )
    trainer = RewardTrainer(model=str(model), args=config, train_dataset=dataset)
    started = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - started
    return int(trainer._total_train_tokens), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=24, help="Optimizer steps per trainer and round.")
    parser.add_argument("--batch-size", type=int, default=4, help="Pairs per step.")
    parser.add_argument("--max-length", type=int, default=128, help="Token limit (the synthetic pairs fit in it).")
    parser.add_argument("--pairs", type=int, default=256, help="Pairs in the synthetic run.")
    parser.add_argument("--rounds", type=int, default=1, help="Rounds of all trainers, in rotating order.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument("--model", type=Path, default=None, help="Base model folder (default: the embedded model).")
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
    model = args.model or prepare_default_model()
    trainers: dict[str, Callable[[Path, Path, Path, argparse.Namespace], tuple[int, float]]] = {
        "labeler": functools.partial(run_labeler, share_prefix=True),
        "labeler-no-share": functools.partial(run_labeler, share_prefix=False),
        "trl": run_trl,
    }
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    with tempfile.TemporaryDirectory(prefix="bench-train-rm-") as tmp:
        run = write_synthetic_run(Path(tmp) / "run", args.pairs, seed=0)
        print(
            f"model {model}\ntorch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
            f"{transformers.__version__}, trl {trl.__version__}\n{args.steps} steps x {args.batch_size} pairs, "
            f"max_length {args.max_length}, float32, no gradient checkpointing; shared prompt tokens: "
            f"{shared_fraction(run, model, args):.0%} of all tokens",
            flush=True,
        )
        names = list(trainers)
        for round_index in range(args.rounds):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                tokens, seconds = trainers[name](run, model, Path(tmp) / f"{name}-{round_index}", args)
                rates[name].append(tokens / seconds)
                print(
                    f"round {round_index} {name:17s} {tokens:7d} tokens {seconds:7.1f} s "
                    f"{tokens / seconds:8.1f} tokens/s",
                    flush=True,
                )
    median = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"labeler {median['labeler']:.1f} tokens/s, labeler without prefix sharing {median['labeler-no-share']:.1f}, "
        f"TRL RewardTrainer {median['trl']:.1f}: ratio {median['labeler'] / median['trl']:.2f}x "
        f"(without sharing {median['labeler-no-share'] / median['trl']:.2f}x)"
    )


if __name__ == "__main__":
    main()
