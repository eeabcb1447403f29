"""PPO with rollouts from transformers and from vLLM, in one run: rollout tokens/s and seconds per step.

The same PPO run three times on the embedded model (float32, LoRA on every linear layer, the PPO
defaults): with `--rollout-engine hf` (the training model's `generate`), with `--rollout-engine vllm
--rollout-weights merged` (the policy's merged weights written and loaded in place into vLLM each step)
and with `--rollout-weights adapter` (the adapter saved and loaded by vLLM's LoRA support each step).
Prompts: the shipped sample prompts; reward: the `word:the` rule (any reward would do: only speed is
measured here). The runs are seeded alike, but their samples differ (different samplers), so their
response lengths differ too: the rollout figure is generated tokens per second of rollout time (sending
the policy to vLLM included), the step figure seconds per whole PPO step. For the merged run the time
spent writing and loading the weights is also given.

The first step is left out of every figure: vLLM starts its engine there (reported as start-up).

Then, to show what the adapter costs vLLM, one vLLM engine with LoRA enabled samples the same rollout-sized
batch (every completion run to the token limit) with a fresh random adapter of the PPO shape and without
any, taking turns twice: generated tokens/s each way.

    .venv/bin/python bench/ppo.py            # 4 steps of 16 rollouts of up to 64 tokens
    .venv/bin/python bench/ppo.py --smoke    # a few minutes: 2 steps of 4 rollouts of up to 16 tokens

On a GPU machine PPO trains on the GPU (`--device auto`); `--dtype bfloat16` halves its memory.

The machine is shared and noisy: compare the ratio from one run, never absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(engine: str, weights: str, args: argparse.Namespace, root: Path) -> dict[str, float]:
    from labeler.engine.embedded import prepare_default_model
    from labeler.train.ppo.config import PPOConfig
    from labeler.train.ppo.rollout import VLLMRollouts
    from labeler.train.ppo.train import train_ppo

    name = engine if engine == "hf" else f"{engine} {weights}"
    out = root / name.replace(" ", "-")
    config = PPOConfig.model_validate(
        {
            "policy": str(prepare_default_model()),
            "prompts": REPO / "data" / "sample_prompts.jsonl",
            "out": out,
            "reward_rule": "word:the",
            "rollout_engine": engine,
            "rollout_weights": weights,
            "steps": args.steps,
            "rollout_batch": args.rollout_batch,
            "minibatch": args.rollout_batch // 2,
            "ppo_epochs": 1,
            "max_new_tokens": args.max_tokens,
            "checkpoint_every": 0,
            "device": args.device,
            "dtype": args.dtype,
            "quiet": True,
        }
    )
    sends: list[float] = []  # seconds to give vLLM the policy, per step
    send = VLLMRollouts._send

    def timed_send(self: VLLMRollouts, *a: object, **k: object) -> object:
        began = time.perf_counter()
        try:
            return send(self, *a, **k)  # type: ignore[arg-type]
        finally:
            sends.append(time.perf_counter() - began)

    VLLMRollouts._send = timed_send  # type: ignore[method-assign]
    started = time.perf_counter()
    try:
        train_ppo(config)
    finally:
        VLLMRollouts._send = send  # type: ignore[method-assign]
    total = time.perf_counter() - started
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = rows[1:]  # step 1 starts vLLM's engine: left out of both figures
    figures = {
        "first_step_s": rows[0]["seconds"],
        "rollout_tokens": sum(r["rollout_tokens"] for r in timed),
        "rollout_tok_per_s": sum(r["rollout_tokens"] for r in timed) / sum(r["rollout_seconds"] for r in timed),
        "step_s": statistics.fmean(r["seconds"] for r in timed),
        "rollout_share": sum(r["rollout_seconds"] for r in timed) / sum(r["seconds"] for r in timed),
        "total_s": total,
        "send_s": statistics.fmean(sends[1:]) if len(sends) > 1 else 0.0,
    }
    sending = f" (of it {figures['send_s']:.1f} s a step sending the policy)" if sends else ""
    print(
        f"{name:14s} first step {figures['first_step_s']:6.1f} s | rollouts {figures['rollout_tokens']} tokens "
        f"at {figures['rollout_tok_per_s']:6.1f} tok/s | {figures['step_s']:6.1f} s per PPO step "
        f"({figures['rollout_share']:.0%} of it sampling){sending} | whole run {total:6.1f} s",
        flush=True,
    )
    return figures


def lora_cost(args: argparse.Namespace, root: Path) -> dict[str, float]:
    """vLLM's generation tokens/s on one rollout-sized batch with a LoRA adapter of the PPO shape and without."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from labeler.engine.embedded import prepare_default_model
    from labeler.engine.vllm_engine import VLLMEngine
    from labeler.train.ppo.config import PPOConfig
    model = prepare_default_model()
    rank = PPOConfig.model_fields["lora_rank"].default
    targets = PPOConfig.model_fields["lora_target_modules"].default
    adapter = root / "adapter"
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    # init_lora_weights=False: both matrices random, so the adapter changes what is sampled
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(adapter)
    del base
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = [
        list(tokenizer.apply_chat_template([{"role": "user", "content": f"Tell me something about the number {i}."}],
                                           add_generation_prompt=True, tokenize=True)["input_ids"])
        for i in range(args.rollout_batch)
    ]
    rates: dict[str, list[float]] = {"adapter": [], "none": []}
    with VLLMEngine(model, dtype=args.dtype, max_lora_rank=rank, kv_cache_gib=1,
                    max_model_len=512 + args.max_tokens) as engine:
        for turn in ("warm-up", "adapter", "none", "adapter", "none"):
            started = time.perf_counter()
            samples = engine.sample_tokens(prompts, max_tokens=args.max_tokens, seeds=list(range(len(prompts))),
                                           stop_token_ids=[], adapter=None if turn == "none" else adapter)
            seconds = time.perf_counter() - started
            if turn != "warm-up":
                rates[turn].append(sum(len(s.token_ids) for s in samples) / seconds)
    figures = {name: statistics.fmean(values) for name, values in rates.items()}
    print(f"vllm generation on one engine with LoRA enabled: {figures['adapter']:6.1f} tok/s with a rank-{rank} "
          f"adapter on {targets}, {figures['none']:6.1f} tok/s without: the adapter costs "
          f"{figures['none'] / figures['adapter']:.2f}x", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="A quick run of the same code (a few minutes).")
    parser.add_argument("--steps", type=int, default=4, help="PPO steps per run (the first is not timed).")
    parser.add_argument("--rollout-batch", type=int, default=16, help="Rollouts per step.")
    parser.add_argument("--max-tokens", type=int, default=64, help="Most new tokens per rollout.")
    parser.add_argument("--device", default="auto", help="Where PPO trains: auto (cuda when there is one), cpu, ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="Weights' dtype.")
    parser.add_argument("--out", type=Path, help="Also write every figure to this JSON file.")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.rollout_batch, args.max_tokens = 2, 4, 16

    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"cpu: {_cpu_model()}; {len(os.sched_getaffinity(0))} cores; torch threads {torch.get_num_threads()}; "
          f"gpu: {gpu}; {args.dtype}; {args.steps} steps x {args.rollout_batch} rollouts x up to {args.max_tokens} "
          "tokens", flush=True)
    figures: dict[str, object] = {"cpu": _cpu_model(), "gpu": gpu, "dtype": args.dtype}
    with tempfile.TemporaryDirectory(prefix="bench-ppo-") as folder:
        hf = run("hf", "auto", args, Path(folder))
        figures["hf"] = hf
        for weights in ("merged", "adapter"):
            vllm = run("vllm", weights, args, Path(folder))
            rollout_ratio = vllm["rollout_tok_per_s"] / hf["rollout_tok_per_s"]
            step_ratio = hf["step_s"] / vllm["step_s"]
            print(f"ratio vLLM ({weights}) / transformers: rollout tokens/s {rollout_ratio:.2f}x, "
                  f"seconds per PPO step {step_ratio:.2f}x faster", flush=True)
            figures[f"vllm_{weights}"] = vllm
            figures[f"vllm_{weights}_rollout_ratio"] = rollout_ratio
            figures[f"vllm_{weights}_step_ratio"] = step_ratio
        figures["lora_cost"] = lora_cost(args, Path(folder))
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
