"""Shared fixtures: one prepared model and one engine of each kind per test session.

The vLLM engine takes about 40 s to start on CPU, so it is started at most once per session and only
when a test asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    """The embedded SmolLM2-135M-Instruct as a Hugging Face folder (converted once, then reused)."""
    from labeler.engine.embedded import prepare_default_model

    return prepare_default_model()


@pytest.fixture(scope="session")
def hf_engine(embedded_model: Path) -> Iterator[object]:
    """transformers engine on the embedded model, fp32 (the reference in parity tests)."""
    from labeler.engine import load_engine

    with load_engine("hf", embedded_model, dtype="float32") as engine:
        yield engine


@pytest.fixture(scope="session")
def vllm_engine(embedded_model: Path) -> Iterator[object]:
    """vLLM CPU engine on the embedded model, fp32, started once per session."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install .[cpu])")
    from labeler.engine import load_engine

    with load_engine("vllm", embedded_model, dtype="float32") as engine:
        yield engine


SERVED_NAME = "smollm2"
API_KEY_ENV = "LABELER_TEST_API_KEY"
TEST_API_KEY = "lbl-test-key-7f3e9a1c5d2b8e4f6a0c"  # distinctive: tests grep run folders for it


@pytest.fixture(scope="session")
def vllm_server_launch(embedded_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """vLLM's OpenAI-compatible server of the embedded model (fp32) on 127.0.0.1, launched once per session
    and not yet waited for: a test that also needs the offline engine asks for this first, so the two
    start side by side. The server wants `TEST_API_KEY`, which `$LABELER_TEST_API_KEY` holds for the tests."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install .[cpu])")
    from servers import VLLMServer

    os.environ[API_KEY_ENV] = TEST_API_KEY
    server = VLLMServer(embedded_model, SERVED_NAME, TEST_API_KEY, tmp_path_factory.mktemp("vllm-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_server(vllm_server_launch: object) -> object:
    """The launched server, once it answers GET /v1/models."""
    vllm_server_launch.wait_ready()  # type: ignore[attr-defined]
    return vllm_server_launch
@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, embedded_model: Path) -> Path:
    """A randomly initialised 2-layer Llama with the embedded model's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
