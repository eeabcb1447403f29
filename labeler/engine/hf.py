"""The transformers engine: same contract as the vLLM engine, plain torch underneath.

Used where vLLM is absent and as the reference in parity tests. Generation is a small decoding loop
(rather than `model.generate`) so that every sample draws from its own seeded generator: a prompt's
samples are then the same whether it is generated alone or in a batch, which resumable runs rely on.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from labeler.engine.base import (
    ChoiceRequest,
    ChoiceScores,
    ClosedOnExit,
    Conversation,
    Generation,
    GenerationParams,
)
from labeler.engine.chat import chat_text, choice_inputs, derive_seed, encode_texts
from labeler.engine.logs import engine_logs


class HFEngine(ClosedOnExit):
    """Batched chat generation and choice scoring with transformers."""

    name = "hf"

    def __init__(
        self,
        model_path: Path,
        *,
        dtype: str = "bfloat16",
        batch_size: int = 16,
        threads: int | None = None,
        trust_remote_code: bool = False,
        model_id: str | None = None,
        max_model_len: int | None = None,
        adapter: Path | None = None,
        choice_logits: str = "float32",
    ) -> None:
        """`model_path` is the base model; `adapter` a PEFT adapter folder merged into it."""
        engine_logs()  # before transformers is imported: its warnings only when asked for
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
        self._torch = torch
        self.model_id = model_id or Path(model_path).name
        self.batch_size = batch_size
        own_tokenizer = adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file()
        self.tokenizer = AutoTokenizer.from_pretrained(
            adapter if own_tokenizer else model_path, trust_remote_code=trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            model_path,
            dtype=getattr(torch, dtype),
            use_safetensors=True,  # never unpickle weights
            trust_remote_code=trust_remote_code,
        )
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        self.model = model.eval()
        config_len = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_model_len = min(max_model_len or config_len, config_len)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.float32_choices = choice_logits == "float32" and dtype != "float32"

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
        prompts = encode_texts(self.tokenizer, [chat_text(self.tokenizer, c) for c in conversations])
        base = params.seed if params.seed is not None else 0
        request_seeds = list(seeds) if seeds is not None else [base] * len(prompts)
        # One row per sample; each sample gets its own generator, seeded from its request's seed.
        rows = [(i, j) for i in range(len(prompts)) for j in range(params.n)]
        row_seeds = [derive_seed(request_seeds[i], j) for i, j in rows]
        results: dict[tuple[int, int], tuple[str, tuple[int, ...], str]] = {}
        order = sorted(range(len(rows)), key=lambda r: len(prompts[rows[r][0]]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            outs = self._decode([prompts[rows[r][0]] for r in chunk], [row_seeds[r] for r in chunk], params)
            for r, out in zip(chunk, outs):
                results[rows[r]] = out
        generations = []
        for i in range(len(prompts)):
            samples = [results[(i, j)] for j in range(params.n)]
            generations.append(
                Generation(
                    texts=tuple(s[0] for s in samples),
                    token_counts=tuple(len(s[1]) for s in samples),
                    finish_reasons=tuple(s[2] for s in samples),
                    token_ids=tuple(s[1] for s in samples),
                )
            )
        return generations

    def choice_logprobs(
        self, requests: Sequence[ChoiceRequest], choices: Sequence[str]
    ) -> list[ChoiceScores]:
        torch = self._torch
        inputs = choice_inputs(self.tokenizer, requests, choices)
        scores: list[ChoiceScores | None] = [None] * len(inputs)
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i][0]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            ids, mask, positions = self._left_pad([inputs[i][0] for i in chunk])
            head = _float32_head(self.model) if self.float32_choices else contextlib.nullcontext()
            with torch.inference_mode(), head:
                # logits_to_keep=1: only the last position's logits, not a [B, T, V] tensor.
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1
                ).logits[:, -1, :]
            logprobs = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
            for row, i in enumerate(chunk):
                choice_ids = inputs[i][1]
                scores[i] = ChoiceScores(tuple(float(logprobs[row, t]) for t in choice_ids))
        return [s for s in scores if s is not None]

    def close(self) -> None:
        self.model = None
        gc.collect()

    # -- internals -------------------------------------------------------------------------------

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[Any, Any, Any]:
        """Left-padded ids and mask, and positions over real tokens only (a row sees what it sees alone)."""
        from labeler.core.padding import pad_rows, position_ids_from_mask

        ids, mask = pad_rows(seqs, self.pad_id, side="left")
        return ids, mask, position_ids_from_mask(mask)

    def _text(self, token_ids: list[int]) -> str:
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        assert isinstance(text, str)  # one sequence in, one string out (the stubs also allow a batch)
        return text

    def _decode(
        self, prompts: Sequence[Sequence[int]], seeds: Sequence[int], params: GenerationParams
    ) -> list[tuple[str, tuple[int, ...], str]]:
        """Sample one completion per prompt row; returns (text, token ids, finish reason)."""
        torch = self._torch
        ids, mask, positions = self._left_pad(prompts)
        batch = len(prompts)
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        tokens: list[list[int]] = [[] for _ in range(batch)]
        finish: list[str | None] = [None] * batch
        texts: list[str | None] = [None] * batch
        past = None
        step_ids = ids
        with torch.inference_mode():
            for _ in range(params.max_tokens):
                out = self.model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=past,
                    use_cache=True,
                    logits_to_keep=1,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()  # (B, V)
                next_ids = _sample(torch, logits, params, generators)
                for row in range(batch):
                    if finish[row] is not None:
                        continue
                    token = int(next_ids[row])
                    tokens[row].append(token)
                    if token in self.eos_ids:
                        finish[row] = "stop"
                    elif params.stop:
                        text = self._text(tokens[row])
                        cut = _cut_at_stop(text, params.stop)
                        if cut is not None:
                            finish[row], texts[row] = "stop", cut
                if all(f is not None for f in finish):
                    break
                # Finished rows keep decoding harmlessly; rows are independent and their output is dropped.
                step_ids = next_ids[:, None]
                mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype)], dim=1)
                positions = positions[:, -1:] + 1
        results = []
        for row in range(batch):
            cut = texts[row]
            text = cut if cut is not None else self._text(tokens[row])
            results.append((text, tuple(tokens[row]), finish[row] or "length"))
        return results


@contextlib.contextmanager
def _float32_head(model: Any) -> Iterator[None]:
    """The output projection computes in float32 from the final hidden state while the block runs.

    In bfloat16 this model's logits (30-60 in size) are rounded to steps of 0.25, and so is
    log P(A) - log P(B). The projection is swapped for one that casts the hidden state and the weight
    to float32, so whatever the model does to its logits afterwards (soft-capping, scaling) is done
    in float32 too.
    """
    import torch

    inner = model.get_output_embeddings()
    if not isinstance(inner, torch.nn.Linear):
        raise TypeError(f"cannot compute float32 logits through a {type(inner).__name__} output layer")

    class Float32Head(torch.nn.Module):
        def forward(self, hidden: Any) -> Any:  # (B, 1, C) -> (B, 1, V), in float32
            bias = None if inner.bias is None else inner.bias.float()
            return torch.nn.functional.linear(hidden.float(), inner.weight.float(), bias)

    model.set_output_embeddings(Float32Head())
    try:
        yield
    finally:
        model.set_output_embeddings(inner)


def _sample(torch: Any, logits: Any, params: GenerationParams, generators: Sequence[Any]) -> Any:
    """Next token per row: greedy at temperature 0, else temperature + top-p, one generator per row."""
    if params.temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)
        # Drop a token when the mass before it already reaches top_p (the top token always stays).
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= params.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, sorted_idx, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.stack(
        [torch.multinomial(probs[row], 1, generator=g)[0] for row, g in enumerate(generators)]
    )


def _cut_at_stop(text: str, stops: Sequence[str]) -> str | None:
    """The text before the first stop string, or None when no stop string occurs.

    >>> _cut_at_stop("one. two.", (".",))
    'one'
    >>> _cut_at_stop("one", (".",)) is None
    True
    """
    hits = [text.index(s) for s in stops if s in text]
    return text[: min(hits)] if hits else None


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids
