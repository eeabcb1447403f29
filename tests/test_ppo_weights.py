"""The policy's merged weights (what vLLM loads each PPO step) against PEFT's own merge, on a tiny random model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from labeler.train.ppo.model import POLICY_ADAPTER, REFERENCE_ADAPTER
from labeler.train.ppo.weights import merge_blocker, merged_weights, save_merged


def tiny_llama(tied: bool = True, bias: bool = False) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied,
                         attention_bias=bias, mlp_bias=bias)
    return LlamaForCausalLM(config).eval()


def with_adapter(model: Any, **lora: Any) -> Any:
    """`model` under a LoRA adapter whose B matrices (and biases) are seeded noise, so it changes the model."""
    from peft import LoraConfig, get_peft_model

    options: dict[str, Any] = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear", **lora}
    peft_model = get_peft_model(model, LoraConfig(**options))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return peft_model


def peft_merge(peft_model: Any) -> dict[str, torch.Tensor]:
    """The slow reference: PEFT merges a deep copy into its base weights and unwraps it."""
    return copy.deepcopy(peft_model).merge_and_unload().state_dict()


@pytest.mark.parametrize("lora_bias", [False, True])
def test_merged_weights_equal_peft_merge_and_leave_the_policy_unmerged(lora_bias: bool) -> None:
    policy = with_adapter(tiny_llama(bias=lora_bias), lora_bias=lora_bias)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    merged = merged_weights(policy)
    reference = peft_merge(policy)
    assert set(merged) == set(reference) - {"lm_head.weight"}  # the tied head is written once, as embeddings
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=1e-6, msg=name)
    base_q = before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"]
    changed = merged["model.layers.0.self_attn.q_proj.weight"] - base_q
    assert float(changed.abs().max()) > 1e-3  # the adapter really is in it
    assert all(torch.equal(v, policy.state_dict()[k]) for k, v in before.items())  # training state untouched


def test_only_the_policy_adapter_is_merged_when_a_reference_adapter_sits_beside_it(tmp_path: Path) -> None:
    """A run that starts from an adapter holds a frozen copy of it as the reference: it is not merged."""
    start = with_adapter(tiny_llama())
    start.save_pretrained(tmp_path / "start")
    expected = peft_merge(start)
    from peft import PeftModel

    policy = PeftModel.from_pretrained(tiny_llama(), str(tmp_path / "start"), adapter_name=POLICY_ADAPTER)
    policy.load_adapter(str(tmp_path / "start"), adapter_name=REFERENCE_ADAPTER)
    policy.set_adapter(POLICY_ADAPTER)
    merged = merged_weights(policy)
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6, msg=name)


def test_a_plain_model_is_its_state_dict_and_an_untied_head_is_kept(tmp_path: Path) -> None:
    model = tiny_llama(tied=False)
    merged = load_file(save_merged(model, tmp_path / "w.safetensors"))
    assert set(merged) == set(model.state_dict())
    assert all(torch.equal(merged[k], v) for k, v in model.state_dict().items())


def test_variants_of_lora_are_named_as_what_cannot_be_merged() -> None:
    assert merge_blocker(with_adapter(tiny_llama())) is None
    dora = with_adapter(tiny_llama(), use_dora=True)
    assert "LoRA variant" in (merge_blocker(dora) or "")
    with pytest.raises(ValueError, match="cannot merge"):
        merged_weights(dora)
    with pytest.warns(UserWarning, match="no bias"):
        no_bias = with_adapter(tiny_llama(), lora_bias=True)  # a trained bias for layers without one
    assert "has no bias" in (merge_blocker(no_bias) or "")


def test_what_rollouts_send_leaves_out_only_frozen_embeddings_and_head() -> None:
    policy = with_adapter(tiny_llama(tied=False))
    complete, sent = merged_weights(policy), merged_weights(policy, complete=False)
    assert set(complete) - set(sent) == {"model.embed_tokens.weight", "lm_head.weight"}
    assert all(torch.equal(sent[k], complete[k]) for k in sent)
    # An adapter on the embeddings changes them: then they are sent.
    on_embeddings = with_adapter(tiny_llama(), target_modules=["embed_tokens", "q_proj"])
    assert "model.embed_tokens.weight" in merged_weights(on_embeddings, complete=False)
    full = tiny_llama()  # full fine-tuning: every weight may have changed
    assert set(merged_weights(full, complete=False)) == set(merged_weights(full))
