"""Code that runs inside vLLM's worker processes: the precision of the output projection, and new weights.

vLLM injects `WorkerExtension` into its worker class (the `worker_extension_cls` engine option), so
`LLM.collective_rpc("labeler_...", args=...)` runs one of its methods in every worker.

Head precision. vLLM computes logits with the model's dtype unless the model config names another
`head_dtype` (vLLM's documented `hf_overrides={"head_dtype": "float32"}`). In bfloat16 the logits of a
small model are 30-60 in size, where bfloat16 steps by 0.25, so log P(A) - log P(B) comes out on a 0.25
grid. `LogitsProcessor` reads its `head_dtype` attribute on every call, so switching it to float32
makes the projection run in float32 on the final hidden state: on CUDA as a GEMM that accumulates
straight into float32, elsewhere by casting both operands. labeler switches it on only around choice
scoring: on CPU the cast of the vocabulary-sized weight costs little next to a prefill step but tripled
the time of a decode step of the embedded model.

New weights (PPO's rollouts). The policy's weights reach the workers as a safetensors file of tensors
under the model's checkpoint names. They go in through vLLM's in-place reload, which runs each layer's
post-load processing again: on CPU the linear layers pack their weights for oneDNN when loaded and drop
the originals, so copying into the parameters (`load_weights` alone) would change nothing they compute.
Tensors cannot be handed over through `collective_rpc` itself (its serialisation turns them into lists).
A tied output head needs its kernel rebuilt after the reload (see `labeler_reload_weights`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

WORKER_EXTENSION = "labeler.engine.vllm_worker.WorkerExtension"


def _tensors(path: str) -> Iterator[tuple[str, Any]]:
    """(name, tensor) of a safetensors file, one tensor in memory at a time."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as file:
        for name in file.keys():
            yield name, file.get_tensor(name)


class WorkerExtension:
    """Mixed into vLLM's worker class; `self` is the worker."""

    def labeler_set_head_dtype(self, name: str) -> str:
        """Set the dtype of every logits processor ("float32", ..., or "model"); returns the one it replaced."""
        import torch
        from vllm.model_executor.layers.logits_processor import LogitsProcessor

        dtype = None if name == "model" else getattr(torch, name)
        previous: str | None = None
        model = self.get_model()  # type: ignore[attr-defined]
        for module in model.modules():
            if isinstance(module, LogitsProcessor):
                if previous is None:
                    current = module.head_dtype
                    previous = str(current).removeprefix("torch.") if current is not None else "model"
                module.head_dtype = dtype
        if previous is None:
            raise RuntimeError(f"{type(model).__name__} has no LogitsProcessor: cannot set its head dtype")
        return previous

    def labeler_reload_weights(self, path: str) -> None:
        """Replace the model's weights with those of a safetensors file (checkpoint names and layout)."""
        from vllm.model_executor.layers.vocab_parallel_embedding import (
            ParallelLMHead,
            UnquantizedEmbeddingMethod,
        )

        # The reload warns about every layer the checkpoint has no tensor for: the rotary cache (computed,
        # never loaded) and a tied output head, on every step. Both are expected here.
        quiet = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            self.model_runner.reload_weights(  # type: ignore[attr-defined]
                weights_iterator=_tensors(path), is_checkpoint_format=True
            )
        finally:
            quiet.setLevel(level)
        # An output head tied to the input embeddings loads nothing of its own, so the reload keeps its
        # old kernel: on CPU a oneDNN copy of the old embeddings. Its weight is the embeddings' tensor,
        # which now holds the new values: build the kernel again from it.
        for module in self.get_model().modules():  # type: ignore[attr-defined]
            if isinstance(module, ParallelLMHead) and isinstance(module.quant_method, UnquantizedEmbeddingMethod):
                module.quant_method.process_weights_after_loading(module)
