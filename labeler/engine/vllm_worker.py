"""Code that runs inside vLLM's worker processes: the precision of the output projection.

vLLM computes logits with the model's dtype unless the model config names another `head_dtype`
(vLLM's documented `hf_overrides={"head_dtype": "float32"}`). In bfloat16 the logits of a small
model are 30-60 in size, where bfloat16 steps by 0.25, so log P(A) - log P(B) comes out on a 0.25
grid. `LogitsProcessor` reads its `head_dtype` attribute on every call, so switching it to float32
makes the projection run in float32 on the final hidden state: on CUDA as a GEMM that accumulates
straight into float32, elsewhere by casting both operands.

labeler switches it on only around choice scoring: on CPU the cast of the vocabulary-sized weight
costs little next to a prefill step but tripled the time of a decode step of the embedded model.
vLLM injects this class into its worker class (the `worker_extension_cls` engine option), so
`LLM.collective_rpc("labeler_set_head_dtype", args=("float32",))` runs in every worker.
"""

from __future__ import annotations

WORKER_EXTENSION = "labeler.engine.vllm_worker.HeadPrecision"


class HeadPrecision:
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
