"""Every throughput target of labeler in one run, for a GPU machine with nothing to download.

The model is built here: a random-weight Llama of a 1-2B architecture (from a transformers config) with
the embedded model's tokenizer and chat template; random weights judge nonsense, but at exactly the cost
of real ones. Pairs are synthetic and fixed. Printed, each as a ratio from this one run:

- label path (`judge_pairs`) / raw vLLM fed the same token ids in one call       target >= 0.9
- label path / a transformers loop, one prompt per forward pass, on the same device target >= 5
- SALMON, 12 principles / 1 principle (prefix cache on)                              target <= 3
- revise / raw vLLM generating the same sequences and token counts in one call     target >= 0.85
- vLLM generation with CUDA graphs / eager (GPU only)
- labeler train-rm tokens/s / TRL RewardTrainer tokens/s (same model, pairs, batch; bf16 on GPU)

    python bench/gpu.py                 # on a GPU: a 1.2B model, about 6 minutes
    python bench/gpu.py --smoke         # anywhere: a tiny model, every path once (the test suite runs this)
    python bench/gpu.py --out gpu.json  # the figures as JSON too

Compare the ratios of one run; absolute figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Head size 64 throughout (2048/16, 128/2): vLLM's CPU attention kernels do not take every head size
# (16 is refused in bfloat16), and 64 is what the embedded model uses.
SIZES = {  # hidden, intermediate, layers, heads, kv heads
    "1b": (2048, 5632, 16, 16, 8),  # about 1.1B parameters with the embedded vocabulary
    "2b": (2048, 8192, 24, 16, 8),
    "smoke": (128, 256, 2, 2, 1),
}


def bench_module(name: str) -> ModuleType:
    """Another script of bench/ as a module (they share their measuring functions)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(folder: Path, size: str, dtype: str) -> Path:
    """A random-weight Llama of `size` with the embedded model's tokenizer, saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from labeler.engine.embedded import prepare_default_model

    hidden, intermediate, layers, heads, kv_heads = SIZES[size]
    tokenizer = AutoTokenizer.from_pretrained(prepare_default_model())
    config = LlamaConfig(
        hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, vocab_size=len(tokenizer), max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True, torch_dtype=dtype,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: random Llama '{size}', {params / 1e9:.2f}B parameters, {dtype}", flush=True)
    return folder


def synthetic_pairs(count: int, words: int) -> list[Any]:
    """Fixed pairs on the sample prompts: two responses of `words` words each."""
    from labeler.inputs.rows import read_prompts
    from labeler.stages.pairs import make_pair

    prompts = list(read_prompts(REPO / "data" / "sample_prompts.jsonl"))
    vocabulary = "the a river stone light quickly answer because water green seven careful".split()
    pairs = []
    for i in range(count):
        prompt = prompts[i % len(prompts)]
        a = " ".join(vocabulary[(i + k) % len(vocabulary)] for k in range(words))
        b = " ".join(vocabulary[(3 * i + 2 * k) % len(vocabulary)] for k in range(words))
        pairs.append(make_pair(prompt.messages, f"{i}. {a}.", f"{i}. {b}!", "bench"))
    return pairs


def transformers_loop(model_path: Path, inputs: Sequence[tuple[list[int], list[int]]], dtype: str) -> float:
    """One prompt per forward pass on the fastest device here, the two letters' log-probabilities read off."""
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(device).eval()
    with torch.inference_mode():
        model(torch.tensor([inputs[0][0]], device=device), logits_to_keep=1)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for ids, choice_ids in inputs:
            logits = model(torch.tensor([ids], device=device), logits_to_keep=1).logits[0, -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            _ = [float(logprobs[c]) for c in choice_ids]
        seconds = time.perf_counter() - t0
    del model
    return seconds


def generation_rate(engine: Any, prompts: int, tokens: int) -> float:
    """Generated tokens per second for `prompts` conversations of `tokens` new tokens each (EOS ignored)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from labeler.core.chat import Message
    from labeler.engine.chat import chat_text, encode_texts

    texts = [chat_text(engine.tokenizer, [Message(role="user", content=f"Tell story number {i}.")])
             for i in range(prompts)]
    inputs = [TokensPrompt(prompt_token_ids=ids) for ids in encode_texts(engine.tokenizer, texts)]
    sampling = SamplingParams(temperature=1.0, max_tokens=tokens, min_tokens=tokens, ignore_eos=True, seed=0)
    engine._llm.generate(inputs[:2], sampling, use_tqdm=False)  # warm-up (and graph capture)
    t0 = time.perf_counter()
    outputs = engine._llm.generate(inputs, sampling, use_tqdm=False)
    seconds = time.perf_counter() - t0
    return sum(len(o.outputs[0].token_ids) for o in outputs) / seconds


def train_rm_rates(model: Path, folder: Path, steps: int, batch: int, on_gpu: bool) -> tuple[float, float]:
    """Training tokens/s of labeler's reward-model trainer and of TRL's RewardTrainer on the same pairs."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from labeler.store import read_split
    from labeler.train.rm.config import RMTrainConfig
    from labeler.train.rm.train import train_reward_model

    run = bench_module("train_rm").write_synthetic_run(folder / "prefs", max(64, steps * batch), seed=0)
    precision = "bf16" if on_gpu else "no"
    config = RMTrainConfig(
        data=(run,), base_model=str(model), out=folder / "rm", loss="hard", batch_size=batch, max_steps=steps,
        epochs=100, learning_rate=1e-5, max_length=128, eval_fraction=0.0, logging_steps=steps, quiet=True,
        mixed_precision=precision,
    )  # fmt: skip
    result = train_reward_model(config)
    labeler_rate = result.tokens / result.train_seconds
    table = read_split(run, "preferences")
    # The split's conversational columns as they are (the margin column left out: both trainers see hard pairs).
    dataset = Dataset.from_dict({name: table.column(name).to_pylist() for name in ("prompt", "chosen", "rejected")})
    args = RewardConfig(
        output_dir=str(folder / "trl"), per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-5,
        max_length=128, bf16=on_gpu, save_strategy="no", eval_strategy="no", logging_steps=steps, report_to=[],
        disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    trainer = RewardTrainer(model=str(model), args=args, train_dataset=dataset)
    t0 = time.perf_counter()
    trainer.train()
    trl_rate = int(trainer._total_train_tokens) / (time.perf_counter() - t0)
    return labeler_rate, trl_rate


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="Tiny model and sizes: every path once, about a minute.")
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="Model architecture (default: 1b).")
    parser.add_argument("--pairs", type=int, default=None, help="Judged pairs (default: 256; smoke: 4).")
    parser.add_argument("--out", type=Path, default=None, help="Also write the figures as JSON here.")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from labeler.engine import EngineConfig, GenerationParams, Message, open_engine
    from labeler.engine.dtype import resolve_dtype
    from labeler.inputs.constitution import load_constitution
    from labeler.inputs.templates import Templates
    from labeler.stages.common import WorkSelection
    from labeler.stages.judge import JudgeOptions, judge_pairs, panel_for
    from labeler.stages.revise import ReviseConfig, revise

    judge_bench, revise_bench = bench_module("judge"), bench_module("revise")
    on_gpu = torch.cuda.is_available()
    size = args.size or ("smoke" if args.smoke else "1b")
    pairs_count = args.pairs or (4 if args.smoke else 256)
    dtype = resolve_dtype("auto")
    device = torch.cuda.get_device_name(0) if on_gpu else "CPU"
    print(f"device: {device}; torch {torch.__version__}; compute dtype {dtype}", flush=True)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        folder = Path(tmp)
        model = build_model(folder / "model", size, dtype)
        pairs = synthetic_pairs(pairs_count, words=6 if args.smoke else 60)
        templates = Templates.load()
        options = JudgeOptions()
        panel = panel_for(load_constitution(REPO / "constitutions" / "helpful-honest.yaml"), options, "helpful-honest")
        engine_config = EngineConfig(name="vllm", model=str(model), dtype="auto", max_model_len=4096)

        with open_engine(engine_config) as engine:
            recorder = judge_bench.RecordingEngine(engine)
            judge_pairs(recorder, templates, panel, pairs, options)  # warm-up, and the prompts it scores
            inputs = judge_bench.raw_inputs(engine, recorder.requests)
            label_s = min(judge_bench.label_path(engine, templates, panel, pairs, options) for _ in range(2))
            raw_s = min(judge_bench.raw_vllm(engine, inputs) for _ in range(2))
            figures["label_over_raw_vllm"] = raw_s / label_s
            salmon_pairs = pairs[: max(2, pairs_count // 8)]
            many, one = judge_bench.salmon_seconds(engine, templates, salmon_pairs)
            figures["salmon_12_over_1"] = many / one

            prompts = revise_bench.write_prompts(folder, 1 if args.smoke else 8)
            counter = revise_bench.CountingEngine(engine)
            revise_config = ReviseConfig(
                constitution=REPO / "constitutions" / "harmless.yaml", prompts=prompts, out=folder / "revise",
                rounds=1, sampling=GenerationParams(temperature=0.7, top_p=0.95, max_tokens=8 if args.smoke else 128),
                work=WorkSelection(quiet=True, limit=2 if args.smoke else None),
            )  # fmt: skip
            engine.generate([[Message(role="user", content="Hello!")]], GenerationParams(max_tokens=4))  # warm-up
            engine._llm.reset_prefix_cache()
            t0 = time.perf_counter()
            revise(revise_config, engine=counter)
            revise_s = time.perf_counter() - t0
            figures["revise_over_raw_generation"] = revise_bench.raw_generate(engine, counter.sequences, 0.7) / revise_s
            new_tokens, batch = (8, 4) if args.smoke else (256, 64)
            eager_rate = generation_rate(engine, batch, new_tokens) if on_gpu else 0.0

        hf_s = transformers_loop(model, inputs, dtype)
        figures["label_over_transformers_loop"] = hf_s / label_s
        if on_gpu:  # CUDA graphs: the same generation without eager mode
            with open_engine(engine_config.model_copy(update={"enforce_eager": False})) as graphs:
                figures["cuda_graphs_over_eager_generation"] = generation_rate(graphs, batch, new_tokens) / eager_rate
        steps, rm_batch = (2, 2) if args.smoke else (24, 16)
        labeler_rate, trl_rate = train_rm_rates(model, folder, steps, rm_batch, on_gpu)
        figures["train_rm_over_trl"] = labeler_rate / trl_rate

    targets = {
        "label_over_raw_vllm": ">= 0.9", "label_over_transformers_loop": ">= 5", "salmon_12_over_1": "<= 3",
        "revise_over_raw_generation": ">= 0.85", "cuda_graphs_over_eager_generation": "(GPU only)",
        "train_rm_over_trl": "(higher is better)",
    }  # fmt: skip
    for name, value in figures.items():
        print(f"{name:36s} {value:6.2f}x   target {targets[name]}", flush=True)
    if not on_gpu:
        print("cuda_graphs_over_eager_generation: not measured (no GPU)", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps({"device": device, "size": size, "dtype": dtype, **figures}, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
