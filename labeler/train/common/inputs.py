"""What a training run's inputs hold, by content: recorded beside its config, so that a trained model says
what it was trained on, and a run resumed (or kept) on inputs that changed under the same path is caught.

`OUT/training-config.json` holds the config and, under `"inputs"`, one digest per input option:

- a data run (`--data`, read for its preference split): the sha256 of its shard checksums, in the order
  the manifest lists them (what the split holds, however the path is spelled);
- a reward model folder written by `labeler train-rm`: the sha256 of its card (which names the data runs,
  the config and the final metrics) and of its weights file when that is small enough to hash at once;
- any other file (prompts, a constitution): the sha256 of its bytes.

A model folder that is not a labeler reward model, a Hub id or an unset option has no digest: those are
compared by their spelling in the config, as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labeler.store.fingerprint import input_fingerprint, sha256_file, sha256_text
from labeler.train.common.config import TrainingConfig

INPUTS_KEY = "inputs"  # the key of the digests in OUT/training-config.json
# Weights files hashed with the card (larger ones are named by the card alone: it is written last, after
# the weights, and holds the run's data digests, config and metrics).
WEIGHTS_FILES = ("model.safetensors",)
WEIGHTS_HASH_LIMIT = 256 << 20
PREFERENCES = "preferences"


def input_identity(config: TrainingConfig) -> dict[str, str | None]:
    """The content digest of every input the config names (`INPUTS`), by option; None where an input is
    not there yet or has no content digest (a Hub id, a model folder not written by train-rm)."""
    identity: dict[str, str | None] = {}
    for option, value in config.input_paths().items():
        if value is None:
            continue
        if option == "--data":
            identity[option] = _data_digest(tuple(Path(run) for run in value))
        else:
            identity[option] = _path_digest(Path(str(value)))
    return identity


def _data_digest(runs: tuple[Path, ...]) -> str | None:
    """The digest of every run's preference split, in the order given; None when one has none yet."""
    digests = [input_fingerprint(run, split=PREFERENCES)["sha256"] for run in runs]
    if any(digest is None for digest in digests):
        return None
    return sha256_text(json.dumps(digests))


def _path_digest(path: Path) -> str | None:
    """A file's bytes; a reward model folder's card (and small weights); None for anything else."""
    from labeler.train.rm.model import REWARD_CARD

    real = path.resolve()
    if real.is_file():
        return sha256_file(real)
    card = real / REWARD_CARD
    if not card.is_file():
        return None
    parts = [sha256_file(card)]
    for name in WEIGHTS_FILES:
        weights = real / name
        if weights.is_file() and weights.stat().st_size <= WEIGHTS_HASH_LIMIT:
            parts.append(sha256_file(weights))
    return sha256_text(json.dumps(parts))


def compared_inputs(config: TrainingConfig, saved: Mapping[str, Any]) -> dict[str, bool]:
    """For every input with a content digest both in the saved run and now: whether it changed, by option.

    A saved config without recorded inputs (a run started by an older labeler), an input without a digest
    then or now, or one not there now, is left out: it is compared by its spelling, as before.

    >>> class Demo(TrainingConfig):
    ...     INPUTS = ("prompts",)
    ...     prompts: Path = Path("/nonexistent")
    >>> compared_inputs(Demo(out=Path("o")), {"inputs": {"--prompts": "ab"}})
    {}
    """
    recorded = saved.get(INPUTS_KEY)
    if not isinstance(recorded, Mapping):
        return {}
    return {
        option: recorded[option] != digest
        for option, digest in input_identity(config).items()
        if digest is not None and recorded.get(option) is not None
    }


def changed_inputs(config: TrainingConfig, saved: Mapping[str, Any]) -> list[str]:
    """The options whose input holds other content now than when the saved run started."""
    return [option for option, changed in compared_inputs(config, saved).items() if changed]


def field_of(option: str) -> str:
    """The config field of an input option.

    >>> field_of("--base-model")
    'base_model'
    """
    return option.removeprefix("--").replace("-", "_")


def saved_run_config(out: Path) -> dict[str, Any] | None:
    """The config recorded in `out` (None when there is none); `InputError` when it is not a JSON object."""
    from labeler.core.errors import InputError
    from labeler.core.layout import SAVED_CONFIG

    saved = out / SAVED_CONFIG
    if not saved.is_file():
        return None
    try:
        data = json.loads(saved.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=saved, line=exc.lineno) from exc
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", file=saved)
    return data
