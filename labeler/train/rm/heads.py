"""The heads of a reward model: their names, read from the folder without loading it, and weightings of them.

A reward model written with `heads=principles` is a sequence classifier with one output per head; its
config's `id2label` names them (`overall`, then one per principle) and its `labeler-rm.json` holds the
constitution's weight of each principle head: the weighting used when none is given. A reward model
with one head is read as that head with weight 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labeler.core.errors import InputError
from labeler.core.input_files import read_json

REWARD_CARD = "labeler-rm.json"
"""File written next to a trained reward model: its training config, data runs and final metrics."""


def read_reward_card(path: Path | str) -> dict[str, Any]:
    """The `labeler-rm.json` of a model folder (empty when the folder was not written by labeler)."""
    card = Path(path) / REWARD_CARD
    if not card.is_file():
        return {}
    data = read_json(card, what="a reward-model card", invalid="not valid JSON")
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", file=card)
    return data


def head_names(folder: Path | str) -> tuple[str, ...]:
    """The names of a reward model's outputs, in order, from its config.json's `id2label` (no model loads)."""
    config_file = Path(folder) / "config.json"
    config = read_json(config_file, what="a model config")
    labels = config.get("id2label") if isinstance(config, dict) else None
    count = config.get("num_labels") if isinstance(config, dict) else None
    if not isinstance(labels, dict) or not labels:
        return tuple(f"LABEL_{i}" for i in range(count if isinstance(count, int) and count > 0 else 1))
    try:
        return tuple(str(labels[key]) for key in sorted(labels, key=int))
    except ValueError:
        raise InputError("id2label keys must be output numbers", file=config_file, where="id2label") from None


def default_head_weights(heads: Sequence[str], card: Mapping[str, Any]) -> dict[str, float]:
    """The weighting a reward model is used with when none is given: its card's `head_weights`, else the
    first head alone (a one-head model's only head).

    >>> default_head_weights(["overall", "kind"], {"head_weights": {"kind": 2.0}})
    {'kind': 2.0}
    >>> default_head_weights(["LABEL_0"], {})
    {'LABEL_0': 1.0}
    """
    saved = card.get("head_weights")
    if isinstance(saved, dict) and saved:
        return {str(name): float(weight) for name, weight in saved.items()}
    return {heads[0]: 1.0}


def check_head_weights(weights: Mapping[str, float], heads: Sequence[str], *, field: str) -> dict[str, float]:
    """`weights` when every name is one of `heads` and some weight is not zero; else `InputError` naming `field`.

    >>> check_head_weights({"kind": 1.0}, ["overall", "kind"], field="weights")
    {'kind': 1.0}
    >>> check_head_weights({"kindness": 1.0}, ["overall", "kind"], field="weights")
    Traceback (most recent call last):
    ...
    labeler.core.errors.InputError: weights: unknown head 'kindness': the reward model's heads are overall, kind
    """
    unknown = [name for name in weights if name not in heads]
    if unknown:
        raise InputError(
            f"unknown head {', '.join(map(repr, unknown))}: the reward model's heads are {', '.join(heads)}",
            field=field,
        )
    if not any(weights.values()):
        raise InputError("every weight is zero: give at least one head a weight", field=field)
    return dict(weights)


def weight_vector(heads: Sequence[str], weights: Mapping[str, float]) -> list[float]:
    """One weight per head, in output order (a head not named weighs 0): reward = Σ_k w_k r_k.

    >>> weight_vector(["overall", "kind", "brief"], {"brief": 0.5, "kind": 2.0})
    [0.0, 2.0, 0.5]
    """
    return [float(weights.get(name, 0.0)) for name in heads]


def parse_head_weights(text: str) -> dict[str, float]:
    """`name=w,name=w` as a mapping; ValueError on a malformed entry.

    >>> parse_head_weights("harmless=2, helpful=0.5")
    {'harmless': 2.0, 'helpful': 0.5}
    >>> parse_head_weights("harmless")
    Traceback (most recent call last):
    ...
    ValueError: expected NAME=WEIGHT, got 'harmless'
    """
    weights: dict[str, float] = {}
    for entry in (part.strip() for part in text.split(",")):
        name, sep, value = entry.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected NAME=WEIGHT, got {entry!r}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"weight of {name.strip()!r} is not a number: {value.strip()!r}") from None
        if weight != weight or weight in (float("inf"), float("-inf")):
            raise ValueError(f"weight of {name.strip()!r} must be finite")
        if name.strip() in weights:
            raise ValueError(f"head {name.strip()!r} given twice")
        weights[name.strip()] = weight
    return weights
