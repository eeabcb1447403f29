"""What every stage shares: options that select work, engine reuse, and run bookkeeping."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from labeler.engine import Engine, EngineConfig, choice_method_of, open_engine
from labeler.engine.dtype import resolve_dtype

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
            raise ValueError("--shard-index and --num-shards go together")
        if self.shard_index is not None and self.num_shards is not None and self.shard_index >= self.num_shards:
            raise ValueError(f"shard_index {self.shard_index} must be below num_shards {self.num_shards}")
        return self

    @property
    def part(self) -> tuple[int, int] | None:
        if self.shard_index is None or self.num_shards is None:
            return None
        return (self.shard_index, self.num_shards)


@contextlib.contextmanager
def engine_for(config: EngineConfig, engine: Engine | None) -> Iterator[Engine]:
    """Use the engine a caller passed (kept open), or open one from the config (closed after)."""
    if engine is not None:
        yield engine
        return
    with open_engine(config) as opened:
        yield opened


def model_label(engine: Engine) -> str:
    """The id recorded in datasets: the model folder's name (paths differ between machines), or the
    name a server serves the model under (such as org/model), whole."""
    if engine.name == "openai":
        return engine.model_id
    return Path(engine.model_id).name


def fingerprint_config(config: BaseModel, engines: Mapping[str, Engine | None] | None = None) -> dict[str, Any]:
    """The config as the fingerprint sees it (work-selection and engine-runtime keys left out).

    `engines` holds the open engines by config key ("judge", "policy", "engine"): an openai judge
    records the choice method it settled on when it opened (what `auto` resolved to).
    """
    data = config.model_dump(mode="json")
    for key in NOT_FINGERPRINTED:
        data.pop(key, None)
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
            kept = {"name": "openai", "model": engine["model"]}
            if key == "judge":
                kept["choice_method"] = _resolved_choice_method(engine["choice_method"], (engines or {}).get(key))
            data[key] = kept
            continue
        # Which model and how it computes change records; where its threads run does not.
        kept = {k: engine[k] for k in ("name", "model", "dtype") if k in engine}
        if kept.get("dtype") == "auto":
            # What auto means depends on the machine (bfloat16 on a GPU, float32 on most CPUs): record
            # what it resolves to where the stage runs, so parts computed in different dtypes never merge.
            kept["dtype"] = resolve_dtype("auto")
        data[key] = kept
    return data


def _resolved_choice_method(setting: str, engine: Engine | None) -> str:
    if setting != "auto":
        return setting
    if engine is None:
        raise ValueError("choice_method 'auto' is known only once the judge engine is open: pass it in `engines`")
    return choice_method_of(engine)
