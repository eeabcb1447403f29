"""Where response pairs come from: a file of pairs, a revise run, or two policy samples per prompt."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from labeler.core.batching import batches
from labeler.core.records import SFTRecord, record_id, source_file, source_label
from labeler.core.sampling import rng_for, seed_for
from labeler.engine import Engine, GenerationParams, Message
from labeler.inputs.rows import Row, iter_rows, read_prompts, row_messages, row_replies, source_id, text_field
from labeler.store import in_part, iter_records

# `source` kinds; the column reads KIND:FILE, FILE the name of the input file the row came from
# (`labeler.core.records.source_label`), and `source_id` is the row's own id in that file.
SOURCE_FILE = "pairs_file"
SOURCE_REVISION = "revision_vs_initial"
SOURCE_POLICY = "policy_samples"


@dataclass(frozen=True)
class Pair:
    """Two responses to one conversation, to be judged."""

    id: str
    messages: tuple[Message, ...]
    response_a: str
    response_b: str
    source: str
    source_id: str | None = None  # the input row's own id, when it has one
    line: int | None = None  # its line (or row) in a pairs file
    input_chosen: str | None = None  # "a" or "b": the response the file marked as chosen, when it did

    @property
    def characters(self) -> int:
        """Characters of its texts: the conversation and both responses."""
        return sum(len(m.content) for m in self.messages) + len(self.response_a) + len(self.response_b)


def pair_id(messages: Sequence[Message], response_a: str, response_b: str) -> str:
    """Stable id of a pair: the conversation and both responses, in order (swapping changes it)."""
    conversation = json.dumps([[m.role, m.content] for m in messages], ensure_ascii=False)
    return record_id(conversation, response_a, response_b)


def unordered_pair_key(messages: Sequence[Message], response_a: str, response_b: str) -> str:
    """A key of the conversation and the two responses as a set: a pair and its swap share it.

    >>> m = [Message(role="user", content="hi")]
    >>> unordered_pair_key(m, "x", "y") == unordered_pair_key(m, "y", "x") != pair_id(m, "x", "y")
    True
    """
    conversation = json.dumps([[m.role, m.content] for m in messages], ensure_ascii=False)
    # Tagged, so that it never equals the id of the pair in its sorted order.
    return record_id("unordered", conversation, *sorted((response_a, response_b)))


def make_pair(messages: Sequence[Message], a: str, b: str, source: str, source_id: str | None = None) -> Pair:
    return Pair(pair_id(messages, a, b), tuple(messages), a, b, source, source_id)


def pairs_from_file(path: Path, max_chars: int | None = None, *, seed: int = 0) -> Iterator[Pair]:
    """Rows with the conversation (`prompt` or `messages`), `response_a` and `response_b`, or `chosen` and
    `rejected` (also as whole conversations without a prompt: HH-RLHF's released rows), and an optional
    `id`; bad rows name file and line. A chosen/rejected row is shown as A and B in an order drawn from
    `seed` and the unordered pair (the same on every rerun, half the pairs each way, so the file's order
    cannot teach the judge a position), and `input_chosen` records which one the file chose. A pair listed
    twice (the same record id) is bad input naming both lines; with `max_chars`, so is a pair whose texts
    hold more characters (see `labeler.stages.label`)."""
    source = source_label(SOURCE_FILE, path)
    seen: dict[str, int] = {}
    for row in iter_rows(path):
        messages, a, b, chosen = _file_pair(row, seed)
        pair = dataclasses.replace(make_pair(messages, a, b, source, source_id(row)), line=row.line,
                                   input_chosen=chosen)
        if max_chars is not None and pair.characters > max_chars:
            raise row.error(too_long_message(pair.characters, max_chars))
        if pair.id in seen:
            raise row.error(f"the same pair (conversation and both responses, in order) as line {seen[pair.id]}")
        seen[pair.id] = row.line
        yield pair


def _file_pair(row: Row, seed: int) -> tuple[tuple[Message, ...], str, str, str | None]:
    """(conversation, response_a, response_b, the one the file chose as "a"/"b" or None) of a pairs row."""
    labelled = "response_a" not in row.data and "response_b" not in row.data and (
        "chosen" in row.data or "rejected" in row.data
    )
    if not labelled:
        messages = row_messages(row)
        a, b = text_field(row, "response_a"), text_field(row, "response_b")
        assert a is not None and b is not None  # required fields: text_field raised otherwise
        return messages, a, b, None
    messages, chosen, rejected = row_replies(row, "chosen", "rejected")
    if rng_for(seed, unordered_pair_key(messages, chosen, rejected), "order").random() < 0.5:
        return messages, chosen, rejected, "a"
    return messages, rejected, chosen, "b"


def too_long_message(characters: int, max_chars: int) -> str:
    """What a pair too long for the judge is told (its file and line come with the error)."""
    return f"the pair holds {characters} characters, more than the judge can take ({max_chars})"


@dataclass
class PairCounts:
    identical_dropped: int = 0  # pairs (or, for rankings, responses) dropped as identical or empty
    too_few_responses: int = 0  # rankings: prompts left with fewer than two distinct responses


def pairs_from_revise_run(run_dir: Path, counts: PairCounts) -> Iterator[Pair]:
    """The natural pair of each revised prompt: initial response (A) vs final revision (B)."""
    for record in iter_records(run_dir, "sft"):
        assert isinstance(record, SFTRecord)  # the sft split holds nothing else
        if record.initial.strip() == record.revision.strip():
            counts.identical_dropped += 1
            continue
        source = source_label(SOURCE_REVISION, source_file(record.source))
        yield make_pair(record.prompt_messages, record.initial, record.revision, source, record.source_id)


def pairs_from_prompts(
    prompts_file: Path,
    policy: Engine,
    sampling: GenerationParams,
    seed: int,
    batch_size: int,
    counts: PairCounts,
    limit: int | None = None,
    part: tuple[int, int] | None = None,
) -> Iterator[Pair]:
    """Two samples per prompt from the policy (seeded by run seed and prompt id); identical pairs dropped.

    With `part` (index, count), only the prompts of that part of a job array (by prompt id) are sampled.
    """
    params = sampling.model_copy(update={"n": 2})
    source = source_label(SOURCE_POLICY, prompts_file)
    prompts = read_prompts(prompts_file)
    if limit is not None:  # not read further: a bad row after the limit is not this run's input
        prompts = islice(prompts, limit)
    selected = (prompt for prompt in prompts if part is None or in_part(prompt.id, *part))
    for batch in batches(selected, batch_size):
        seeds = [seed_for(seed, p.id, "pair") for p in batch]
        for prompt, generation in zip(batch, policy.generate([p.messages for p in batch], params, seeds)):
            a, b = (t.strip() for t in generation.texts)
            if not a or not b or a == b:
                counts.identical_dropped += 1
                continue
            yield make_pair(prompt.messages, a, b, source, prompt.source_id)
