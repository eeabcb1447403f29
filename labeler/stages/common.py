"""What every stage shares: options that select work, engine reuse, and run bookkeeping."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from labeler.engine import Engine, EngineConfig, choice_method_of, fingerprint_fields, open_engine
from labeler.engine.dtype import resolve_dtype
from labeler.engine.lazy import LazyEngine
from labeler.engine.model_ref import ModelRef
from labeler.store.fingerprint import input_fingerprint

# Config keys that never change the records a stage writes: where they go, how they are batched,
# how chatty the run is, and which slice of a job array this process takes (the store records that).
NOT_FINGERPRINTED = frozenset(
    {"out", "overwrite", "quiet", "batch_size", "limit", "shard_index", "num_shards", "ray", "engine_options"}
)

RAY_ADDRESS_HELP = (
    "Run on a Ray cluster, one engine per worker, each worker one part of the input: 'local' starts Ray "
    "on this machine, 'auto' joins the cluster this node belongs to, or give an address such as ray://HOST:10001."
)


class WorkSelection(BaseModel):
    """Which part of the input a process takes, and how it reports."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limit: int | None = Field(None, ge=1, description="Use only the first N input rows.")
    shard_index: int | None = Field(None, ge=0, description="Job arrays: this task's index (0-based).")
    num_shards: int | None = Field(None, ge=1, description="Job arrays: number of tasks.")
    batch_size: int = Field(64, ge=1, description="Records per engine call and per shard.")
    overwrite: bool = Field(False, description="Replace an existing run with another configuration.")
    quiet: bool = Field(False, description="Plain log lines instead of progress bars.")
    ray: str | None = Field(None, description=RAY_ADDRESS_HELP)

    @model_validator(mode="after")
    def _part_is_complete(self) -> WorkSelection:
        if (self.shard_index is None) != (self.num_shards is None):
            raise ValueError("‹shard_index› and ‹num_shards› go together")
        if self.shard_index is not None and self.num_shards is not None and self.shard_index >= self.num_shards:
            raise ValueError(f"‹shard_index› {self.shard_index} must be below ‹num_shards› {self.num_shards} "
                             f"(the parts are numbered 0 to {self.num_shards - 1})")
        return self

    @property
    def part(self) -> tuple[int, int] | None:
        if self.shard_index is None or self.num_shards is None:
            return None
        return (self.shard_index, self.num_shards)


@contextlib.contextmanager
def engine_for(config: EngineConfig, engine: Engine | None, model: ModelRef | None = None) -> Iterator[Engine]:
    """Use the engine a caller passed (kept open), or one that starts on its first call (closed after),
    so a stage whose work is already done never waits for a model to load."""
    if engine is not None:
        yield engine
        return
    with LazyEngine(config, model) as lazy:
        yield lazy


def model_label(engine: Engine | None, model: ModelRef) -> str:
    """The id recorded in datasets for the model: the engine's own, or the resolved argument's (a folder's
    name, or org/name@commit for a Hub model: paths differ between machines)."""
    return engine.model_id if engine is not None else model.label


def fingerprint_config(config: BaseModel, choice_methods: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The config as the fingerprint sees it (work-selection and engine-runtime keys left out).

    `choice_methods`, by config key ("judge"): how an openai judge reads choice probabilities, where its
    setting is `auto` (what `settled_choice_method` found).
    """
    data = config.model_dump(mode="json")
    for key in NOT_FINGERPRINTED:
        data.pop(key, None)
    _fingerprint_inputs(config, data)
    work = data.pop("work", None)
    if isinstance(work, dict):
        data.update({k: v for k, v in work.items() if k not in NOT_FINGERPRINTED})
    for key in ("engine", "judge", "policy"):
        engine = data.get(key)
        if not isinstance(engine, dict):
            continue
        if engine.get("name") == "openai":
            # The served model and, for a judge, how its choice probabilities were read change records;
            # where the servers run, how many, and the key do not (nor is the key ever in a config).
            kept = {k: engine[k] for k in fingerprint_fields("openai") if k != "choice_method"}
            if key == "judge":
                settled = (choice_methods or {}).get(key)
                kept["choice_method"] = _resolved_choice_method(engine["choice_method"], settled)
            data[key] = kept
            continue
        # Which model and how it computes change records; where its threads run does not.
        kept = {k: engine[k] for k in fingerprint_fields(engine["name"]) if k in engine}
        if engine.get("deterministic"):
            kept["dtype"] = "float32"  # what a deterministic engine computes in, whatever the machine
        if kept.get("dtype") == "auto":
            # What auto means depends on the machine (bfloat16 on a GPU, float32 on most CPUs): record
            # what it resolves to where the stage runs, so parts computed in different dtypes never merge.
            kept["dtype"] = resolve_dtype("auto")
        data[key] = kept
    return data


# Inputs that are run folders, and the split a stage reads from each (`input_fingerprint`).
RUN_INPUTS = {"pairs_from": "sft"}


def _fingerprint_inputs(config: BaseModel, data: dict[str, Any]) -> None:
    """Replace, in `data` (the config as JSON), the path of every input file or folder by what it holds
    (`input_fingerprint`), at any depth: the same file by another path, or through a link, resumes a run;
    the file edited is refused as differing. No path of the machine is kept in the fingerprint."""
    for name, value in config:
        if name not in data:
            continue
        if isinstance(value, Path):
            data[name] = input_fingerprint(value, split=RUN_INPUTS.get(name))
        elif isinstance(value, BaseModel) and isinstance(data[name], dict):
            _fingerprint_inputs(value, data[name])


def _resolved_choice_method(setting: str, settled: str | None) -> str:
    if setting != "auto":
        return setting
    if settled is None:
        raise ValueError("choice_method 'auto' is known only once the servers are asked: pass `choice_methods`")
    return settled


def settled_choice_method(config: EngineConfig, engine: Engine | None) -> str | None:
    """How an openai judge will read choice probabilities (None for the local engines, which read them
    exactly): its setting, or for `auto` what the servers answer (a request to each, nothing loaded)."""
    if config.name != "openai":
        return None
    if engine is not None:
        return choice_method_of(engine)
    if config.choice_method != "auto":
        return config.choice_method
    with open_engine(config) as probe:
        return choice_method_of(probe)
