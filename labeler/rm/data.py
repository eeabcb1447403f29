"""Preference pairs for reward-model training: read, check, split, label, batch.

Flow: `load_preference_pairs` reads the preference split of each run (checksums verified by the store)
into `PreferencePair`s; `split_train_eval` holds out a seeded fraction by id; a `LabelKind` turns a pair
into a `TrainingExample` (two full conversations and a target P(A better)); `collate_pairs` renders them
with the tokenizer's chat template into one padded batch, the prompt tokens a pair shares kept once.

Each label kind owns the columns it reads and how it makes its target, so adding a kind is adding one
class: `PairLabels` (soft `p_a`, or hard p_a >= 0.5) and `PrincipleLabels` (SALMON, `principle_scores`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from labeler.errors import InputError
from labeler.rm.salmon import SalmonPrinciple, ShownPrinciple, salmon_target, sample_shown_principles, with_principles

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

PREFERENCES = "preferences"
Message = Mapping[str, str]


@dataclass(frozen=True)
class PreferencePair:
    """One judged pair as the trainer needs it (a subset of a preference row)."""

    id: str
    prompt_messages: tuple[Message, ...]
    response_a: str
    response_b: str
    p_a: float
    margin: float | None = None
    principle_scores: Mapping[str, float] | None = None


@dataclass(frozen=True)
class TrainingExample:
    """Two full conversations (prompt + one response each) and the probability that A is better."""

    conversation_a: tuple[Message, ...]
    conversation_b: tuple[Message, ...]
    target_a: float
    margin: float  # TRL-style: how much the chosen response should win by (0 when unused)


@dataclass(frozen=True)
class RunData:
    """Where a run's pairs came from, recorded in the saved model's `labeler-rm.json`."""

    path: str
    rows: int
    split_sha256: str  # sha256 of the manifest's preference entry: fingerprint and every shard's checksum


# --- column checks ------------------------------------------------------------------------------


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t)


def _is_list_of_struct(t: pa.DataType, fields: Mapping[str, Callable[[pa.DataType], bool]]) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_struct(t.value_type):
        return False
    struct = t.value_type
    names = {struct.field(i).name: struct.field(i).type for i in range(struct.num_fields)}
    return all(name in names and check(names[name]) for name, check in fields.items())


# Column name -> (check of its Arrow type, what the check expects, in words).
COLUMN_TYPES: dict[str, tuple[Callable[[pa.DataType], bool], str]] = {
    "id": (_is_text, "text"),
    "prompt_messages": (
        lambda t: _is_list_of_struct(t, {"role": _is_text, "content": _is_text}),
        "a list of {role, content} messages",
    ),
    "response_a": (_is_text, "text"),
    "response_b": (_is_text, "text"),
    "p_a": (_is_number, "a number in [0, 1]"),
    "margin": (_is_number, "a number"),
    "principle_scores": (
        lambda t: _is_list_of_struct(t, {"principle_id": _is_text, "score": _is_number}),
        "a list of {principle_id, score}",
    ),
}
CONVERSATION_COLUMNS = ("id", "prompt_messages", "response_a", "response_b")


def check_columns(schema: pa.Schema, columns: Sequence[str], *, file: Path | str, why: Mapping[str, str]) -> None:
    """Raise InputError naming the file and column if a needed column is missing or has the wrong type.

    `why` says, per column, which option needs it, so that the message tells the user what to change.
    """
    for name in columns:
        check, expected = COLUMN_TYPES[name]
        reason = f" (needed for {why[name]})" if name in why else ""
        if name not in schema.names:
            raise InputError(f"missing column {name!r}{reason}", file=file, where=f"column {name}")
        actual = schema.field(name).type
        if not check(actual):
            raise InputError(
                f"column {name!r} has type {actual}, expected {expected}{reason}", file=file, where=f"column {name}"
            )


def _check_values(table: pa.Table, *, file: Path | str, need_margin: bool) -> None:
    """Soft labels must be probabilities and margins finite; name the first bad row by position and id."""
    p_a = table.column("p_a").cast(pa.float64())
    bad = pc.or_kleene(pc.is_null(p_a, nan_is_null=True), pc.or_(pc.less(p_a, 0.0), pc.greater(p_a, 1.0)))
    _raise_first_bad(table, bad, "p_a", "must be a probability in [0, 1]", file=file)
    if need_margin:
        margin = table.column("margin").cast(pa.float64())
        bad = pc.invert(pc.fill_null(pc.is_finite(margin), False))
        _raise_first_bad(table, bad, "margin", "must be a finite number", file=file)


def _raise_first_bad(
    table: pa.Table, bad: pa.ChunkedArray, column: str, message: str, *, file: Path | str
) -> None:
    bad = pc.fill_null(bad, True)
    if not pc.any(bad).as_py():
        return
    row = pc.index(bad, True).as_py()
    value = table.column(column)[row].as_py()
    raise InputError(
        f"{column} {message}, got {value!r}", file=file, where=f"row {row} (id {table.column('id')[row].as_py()})"
    )


# --- reading runs -------------------------------------------------------------------------------


def pairs_from_table(
    table: pa.Table,
    *,
    file: Path | str,
    need_margin: bool = False,
    need_principle_scores: bool = False,
    why: Mapping[str, str] | None = None,
) -> list[PreferencePair]:
    """The pairs of one preference table, after checking the columns the chosen options need.

    >>> table = pa.table({"id": ["x"], "prompt_messages": [[{"role": "user", "content": "hi"}]],
    ...                   "response_a": ["hello"], "response_b": ["go away"], "p_a": [0.9]})
    >>> pairs_from_table(table, file="run/preferences")[0].p_a
    0.9
    >>> pairs_from_table(table.drop_columns(["p_a"]), file="run/preferences")
    Traceback (most recent call last):
    ...
    labeler.errors.InputError: run/preferences (column p_a): missing column 'p_a'
    """
    columns = [*CONVERSATION_COLUMNS, "p_a"]
    if need_margin:
        columns.append("margin")
    if need_principle_scores:
        columns.append("principle_scores")
    check_columns(table.schema, columns, file=file, why=why or {})
    _check_values(table, file=file, need_margin=need_margin)
    data = {name: table.column(name).to_pylist() for name in columns}
    pairs = []
    for row in range(table.num_rows):
        messages = data["prompt_messages"][row]
        if not messages:
            raise InputError("prompt_messages is empty", file=file, where=f"row {row} (id {data['id'][row]})")
        scores = None
        if need_principle_scores:
            scores = {s["principle_id"]: float(s["score"]) for s in data["principle_scores"][row] or []}
        pairs.append(
            PreferencePair(
                id=data["id"][row],
                prompt_messages=tuple({"role": m["role"], "content": m["content"]} for m in messages),
                response_a=data["response_a"][row],
                response_b=data["response_b"][row],
                p_a=float(data["p_a"][row]),
                margin=float(data["margin"][row]) if need_margin else None,
                principle_scores=scores,
            )
        )
    return pairs


def load_preference_pairs(
    runs: Sequence[Path],
    *,
    need_margin: bool = False,
    need_principle_scores: bool = False,
    why: Mapping[str, str] | None = None,
) -> tuple[list[PreferencePair], list[RunData]]:
    """Every pair of the preference split of each run, in order; InputError on anything unusable.

    The store verifies each shard's checksum and refuses runs whose preference split is unfinished.
    """
    from labeler.store import read_split

    if not runs:
        raise InputError("no run given: pass at least one run folder with --data", where="--data")
    pairs: list[PreferencePair] = []
    sources: list[RunData] = []
    for run in runs:
        run = Path(run)
        if not run.is_dir():
            raise InputError("not a folder (expected a labeler run folder)", file=run, where="--data")
        table = read_split(run, PREFERENCES)
        if table.num_rows == 0:
            raise InputError("the preference split has no rows", file=run / PREFERENCES)
        pairs += pairs_from_table(
            table,
            file=run / PREFERENCES,
            need_margin=need_margin,
            need_principle_scores=need_principle_scores,
            why=why,
        )
        sources.append(RunData(path=str(run.resolve()), rows=table.num_rows, split_sha256=_split_sha256(run)))
    return pairs, sources


def _split_sha256(run: Path) -> str:
    """sha256 of the run's manifest entry for the preference split: identifies the data a model saw."""
    from labeler.store.manifest import load_manifest

    entry = load_manifest(run).splits[PREFERENCES]
    return hashlib.sha256(entry.model_dump_json().encode("utf-8")).hexdigest()


# --- train / eval split -------------------------------------------------------------------------


def split_train_eval(ids: Sequence[str], eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Positions of the training and evaluation rows: a seeded fraction held out, decided by id alone.

    A row is held out when sha256(seed, id), read as a number in [0, 1), falls below `eval_fraction`,
    so a pair that appears in two runs lands on the same side, and adding runs never moves an old pair
    across. When that leaves a side empty (tiny data), the row nearest the threshold moves over, so
    both sides have a row once there are two rows or more and the fraction is positive.

    >>> split_train_eval(["a", "b", "c", "d", "e", "f"], 0.3, seed=0)
    ([0, 1, 2, 3, 4], [5])
    >>> split_train_eval(["a", "b"], 0.0, seed=0)
    ([0, 1], [])
    """
    if eval_fraction <= 0.0 or len(set(ids)) < 2:
        return list(range(len(ids))), []

    def position(pair_id: str) -> float:
        return int(hashlib.sha256(f"{seed}:{pair_id}".encode()).hexdigest()[:15], 16) / 16**15

    unique = sorted(set(ids), key=position)
    held_ids = {pair_id for pair_id in unique if position(pair_id) < eval_fraction}
    if not held_ids:
        held_ids = {unique[0]}
    if len(held_ids) == len(unique):
        held_ids.discard(unique[-1])
    eval_rows = [i for i, pair_id in enumerate(ids) if pair_id in held_ids]
    train_rows = [i for i, pair_id in enumerate(ids) if pair_id not in held_ids]
    return train_rows, eval_rows


def epoch_batches(
    num_examples: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """This process's batches of example positions for one epoch: a seeded shuffle, then sharding.

    With several processes the remainder is dropped so that every process takes the same number of
    steps (they synchronise gradients at every step); the last batch of a process may be short.

    >>> epoch_batches(5, 2, seed=0, epoch=0)
    [[2, 3], [1, 0], [4]]
    >>> [len(b) for b in epoch_batches(5, 2, seed=0, epoch=0, rank=1, world_size=2)]
    [2]
    """
    order = list(range(num_examples))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    per_process = num_examples // world_size
    mine = order[rank::world_size][:per_process]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


# --- label kinds --------------------------------------------------------------------------------


class LabelKind(Protocol):
    """Turns a pair into a training example; owns the columns it needs and how it makes its target."""

    @property
    def needs_principle_scores(self) -> bool:
        """Whether the pairs must carry `principle_scores`."""
        ...

    def example(self, pair: PreferencePair, *, epoch: int) -> TrainingExample: ...


def _conversation(messages: Sequence[Message], response: str) -> tuple[Message, ...]:
    return (*messages, {"role": "assistant", "content": response})


@dataclass(frozen=True)
class PairLabels:
    """Overall preference: the soft label `p_a`, or its hard version (p_a >= 0.5)."""

    hard: bool = False
    needs_principle_scores: bool = False

    def example(self, pair: PreferencePair, *, epoch: int) -> TrainingExample:
        target = (1.0 if pair.p_a >= 0.5 else 0.0) if self.hard else pair.p_a
        return TrainingExample(
            conversation_a=_conversation(pair.prompt_messages, pair.response_a),
            conversation_b=_conversation(pair.prompt_messages, pair.response_b),
            target_a=target,
            margin=pair.margin or 0.0,
        )


@dataclass(frozen=True)
class PrincipleLabels:
    """SALMON: a few principles in a system message, the target from the most decisive shown principle.

    The principles shown are drawn anew for each (seed, epoch, pair id), so every epoch shows a pair
    under another mix, and a rerun draws the same mixes.
    """

    principles: tuple[SalmonPrinciple, ...]
    count: int
    negate_probability: float
    seed: int
    hard: bool = False
    needs_principle_scores: bool = True

    def shown_for(self, pair: PreferencePair, *, epoch: int) -> tuple[ShownPrinciple, ...]:
        rng = random.Random(f"{self.seed}:{epoch}:{pair.id}")
        return sample_shown_principles(
            self.principles,
            (pair.principle_scores or {}).keys(),
            count=self.count,
            negate_probability=self.negate_probability,
            rng=rng,
        )

    def usable(self, pair: PreferencePair) -> bool:
        """Whether the judge scored at least one of the constitution's salmon principles for this pair."""
        ids = {p.id for p in self.principles}
        return any(pid in ids for pid in (pair.principle_scores or {}))

    def example(self, pair: PreferencePair, *, epoch: int) -> TrainingExample:
        shown = self.shown_for(pair, epoch=epoch)
        target = salmon_target(shown, pair.principle_scores or {})
        if self.hard:
            target = 1.0 if target >= 0.5 else 0.0
        messages = with_principles(pair.prompt_messages, shown)
        return TrainingExample(
            conversation_a=_conversation(messages, pair.response_a),
            conversation_b=_conversation(messages, pair.response_b),
            target_a=target,
            margin=0.0,
        )


# --- tokenising ---------------------------------------------------------------------------------


def render(tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[Message]]) -> list[str]:
    """Each conversation as the chat template writes it (the template holds every special token)."""
    return [str(tokenizer.apply_chat_template([dict(m) for m in c], tokenize=False)) for c in conversations]


def encode_conversations(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[Message]], max_length: int
) -> dict[str, torch.Tensor]:
    """Render each conversation with the chat template and tokenise: `input_ids`, `attention_mask`, (N, T).

    Padding follows `tokenizer.padding_side`. Sequences longer than `max_length` lose tokens from the
    left: the reward is read at the last token, so the end of the response must survive.
    """
    tokenizer.truncation_side = "left"
    encoded = tokenizer(
        render(tokenizer, conversations),
        add_special_tokens=False,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def shared_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common start of two token sequences, leaving each at least one token of its own.

    The two conversations of a pair share their prompt tokens: those run through the model once.

    >>> shared_prefix_length([1, 2, 3, 4], [1, 2, 5])
    2
    >>> shared_prefix_length([1, 2, 3], [1, 2, 3, 4])  # the last token must stay: the reward is read there
    2
    """
    limit = min(len(a), len(b)) - 1
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into (ids, mask), both (N, T)."""
    import torch

    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def collate_pairs(
    examples: Sequence[TrainingExample],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    *,
    share_prefix: bool = True,
) -> dict[str, torch.Tensor]:
    """One batch of B pairs for `LastTokenReward`: the A conversations, then the B ones, right-padded.

    Without sharing: `input_ids`, `attention_mask` of shape (2B, T). With sharing, the tokens that a
    pair's two conversations start with (the prompt) go once into `prefix_ids`, `prefix_mask` (B, P),
    and `input_ids`, `attention_mask` (2B, S) hold only what follows, row i continuing prefix row
    i mod B: same rewards, fewer tokens through the model. Sharing falls back to full rows when a pair
    shares nothing. Always: `target_a`, `margin` (B,), and `tokens` (a scalar: the real tokens of all
    2B full conversations, the throughput measure).
    """
    import torch

    tokenizer.truncation_side = "left"
    texts = render(tokenizer, [e.conversation_a for e in examples] + [e.conversation_b for e in examples])
    ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    ids_a, ids_b = ids[: len(examples)], ids[len(examples) :]
    batch: dict[str, torch.Tensor] = {}
    shared = [shared_prefix_length(a, b) for a, b in zip(ids_a, ids_b, strict=True)]
    if share_prefix and min(shared) > 0:
        batch["prefix_ids"], batch["prefix_mask"] = _pad([a[:n] for a, n in zip(ids_a, shared)], tokenizer.pad_token_id)
        rest = [a[n:] for a, n in zip(ids_a, shared)] + [b[n:] for b, n in zip(ids_b, shared)]
        batch["input_ids"], batch["attention_mask"] = _pad(rest, tokenizer.pad_token_id)
    else:
        batch["input_ids"], batch["attention_mask"] = _pad(ids, tokenizer.pad_token_id)
    batch["target_a"] = torch.tensor([e.target_a for e in examples], dtype=torch.float32)
    batch["margin"] = torch.tensor([e.margin for e in examples], dtype=torch.float32)
    batch["tokens"] = torch.tensor(sum(len(row) for row in ids))
    return batch


def count_truncated(tokenizer: PreTrainedTokenizerBase, examples: Sequence[TrainingExample], max_length: int) -> int:
    """How many of the 2 × len(examples) conversations are longer than `max_length` tokens."""
    texts = render(tokenizer, [e.conversation_a for e in examples] + [e.conversation_b for e in examples])
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return sum(length > max_length for length in lengths)
