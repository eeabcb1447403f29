"""EngineConfig's fields are declared once, each tagged with the engines that read it and whether it
enters the fingerprint; every list of field names is derived from those tags."""

from __future__ import annotations

import inspect

import pytest

from labeler.engine import (
    LOCAL_ONLY,
    OPENAI_ONLY,
    EngineConfig,
    engine_arguments,
    fingerprint_fields,
    read_by,
)
from labeler.engine.hf import HFEngine
from labeler.engine.vllm_engine import VLLMEngine


def test_every_field_is_tagged_with_the_engines_that_read_it() -> None:
    for name, field in EngineConfig.model_fields.items():
        tags = field.json_schema_extra
        assert isinstance(tags, dict) and tags["engines"], name
        assert set(tags["engines"]) <= {"vllm", "hf", "openai"} and isinstance(tags["fingerprint"], bool), name
        assert isinstance(tags["refused"], bool), name


def test_the_derived_lists_are_the_ones_the_engines_were_written_against() -> None:
    assert OPENAI_ONLY == ("base_urls", "api_key_env", "choice_method", "concurrency", "request_timeout",
                           "max_retries", "retry_backoff", "retry_max_wait", "eject_after")
    assert LOCAL_ONLY == ("dtype", "batch_size", "kv_cache_gib", "threads_bind", "enforce_eager",
                          "enable_prefix_caching", "kv_block_size", "tensor_parallel_size", "data_parallel_size",
                          "gpu_memory_utilization", "trust_remote_code", "choice_logits", "deterministic")
    assert fingerprint_fields("vllm") == fingerprint_fields("hf") == ("name", "model", "dtype", "choice_logits")
    assert fingerprint_fields("openai") == ("name", "model", "choice_method")


@pytest.mark.parametrize(("engine", "cls"), [("vllm", VLLMEngine), ("hf", HFEngine)])
def test_each_engine_class_takes_exactly_the_fields_its_engine_reads(engine: str, cls: type) -> None:
    """What the class is given from a config are the fields tagged for it (less which engine and model,
    replicas and determinism, settled before it starts); each is a parameter of the class."""
    parameters = set(inspect.signature(cls.__init__).parameters) - {"self", "model_path"}
    given = engine_arguments(EngineConfig(name=engine), engine)  # type: ignore[arg-type]
    assert set(given) <= parameters
    caller_only = {"model_id", "adapter", "max_lora_rank", "threads"}  # known to the caller, not the config
    assert parameters - set(given) <= caller_only
    assert set(given) == set(read_by(engine)) - {"name", "model", "data_parallel_size", "deterministic"}  # type: ignore[arg-type]


def test_an_option_of_one_kind_of_engine_is_refused_with_the_other() -> None:
    with pytest.raises(Exception, match="options of the openai engine only: `api_key_env`"):
        EngineConfig(name="hf", api_key_env="KEY")
    with pytest.raises(Exception, match="options of the local engines, which the server decides: dtype"):
        EngineConfig(name="openai", model="m", base_urls=("http://localhost:8000",), dtype="float32")
    # read by vLLM alone, but taken by the others as it always was: they seed each request themselves
    assert EngineConfig(name="openai", model="m", base_urls=("http://localhost:8000",), seed=3).seed == 3
