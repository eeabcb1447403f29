"""Small runs for the dataset tests: judged pairs whose numbers give every export filter rows to remove,
multi-turn conversations (an HH-style dialogue) and the users' own ids."""

from __future__ import annotations

import math
from pathlib import Path

from labeler.core.chat import Message
from labeler.core.records import (
    FLAG_LOW_MASS,
    FLAG_ORDER_FLIP,
    FLAG_TIE,
    PreferenceRecord,
    PrincipleScore,
    RevisionRound,
    SFTRecord,
    conversation_columns,
    record_id,
)
from labeler.store import RunStore, make_fingerprint

HH_CONVERSATION = (
    Message(role="system", content="You are a helpful, harmless assistant."),
    Message(role="user", content="My neighbour's dog barks all night."),
    Message(role="assistant", content="That sounds exhausting. Have you talked to them about it?"),
    Message(role="user", content="Yes, twice. What else can I do?"),
)


def judged(i: int) -> PreferenceRecord:
    """Pair `i`: numbers chosen so that every filter has rows to remove (multi-turn for even i)."""
    p_ab = (0.95, 0.8, 0.6, 0.3, 0.55, 0.5, 0.9, 0.2, 0.7, 0.52, 0.99, 0.4)[i % 12]
    p_ba = (0.85, 0.6, 0.3, 0.1, 0.45, 0.5, 0.95, 0.25, 0.72, 0.51, 0.97, 0.45)[i % 12]
    mass_ab, mass_ba = (0.2, 0.9) if i % 5 == 0 else (0.9, 0.95)
    p_a = (p_ab + p_ba) / 2
    consistent = (p_ab > 0.5) == (p_ba > 0.5) and p_ab != 0.5 and p_ba != 0.5
    flags = [flag for flag, on in ((FLAG_LOW_MASS, min(mass_ab, mass_ba) < 0.5), (FLAG_ORDER_FLIP, not consistent),
                                   (FLAG_TIE, p_a == 0.5)) if on]  # fmt: skip
    prompt = HH_CONVERSATION if i % 2 == 0 else (Message(role="user", content=f"Question {i}?"),)
    a, b = f"First answer {i}.", f"Second answer {i}."
    chosen, rejected = (a, b) if p_a >= 0.5 else (b, a)
    return PreferenceRecord(
        id=record_id(str(i), a, b), source_id=f"user-{i}" if i % 3 else None,
        **conversation_columns(prompt, chosen, rejected), response_a=a, response_b=b,
        p_a=p_a, p_a_ab=p_ab, p_a_ba=p_ba, mass_ab=mass_ab, mass_ba=mass_ba,
        logprobs_ab=(math.log(mass_ab * p_ab), math.log(mass_ab * (1 - p_ab))),
        logprobs_ba=(math.log(mass_ba * p_ba), math.log(mass_ba * (1 - p_ba))), consistent=consistent,
        principle_ids=("kind",), principle_scores=(), margin=abs(p_a - 0.5) * 2, judge_model="judge",
        source="pairs_file:pairs.jsonl", flags=tuple(flags),
    )  # fmt: skip


def revised(i: int) -> SFTRecord:
    messages = (Message(role="user", content=f"Task {i}"),)
    return SFTRecord(
        id=f"task-{i}", source_id=f"task-{i}", prompt=f"Task {i}", prompt_messages=messages, initial="first",
        revision="better", rounds=(RevisionRound(principle_id="kind", critique="c", revision="better"),),
        messages=(*messages, Message(role="assistant", content="better")), model="m",
        source="prompts_file:prompts.jsonl",
    )  # fmt: skip


def fingerprint(stage: str) -> dict:
    return make_fingerprint(config={"stage": stage}, models={"judge": "judge"}, constitution_sha256="c" * 64,
                            template_sha256s={}, seed=0,
                            constitution={"name": "kind", "version": "1", "license": "cc-by-4.0"})  # fmt: skip


def make_run(folder: Path, pairs: int = 24, *, complete: bool = True) -> Path:
    run = folder / "run"
    store = RunStore.open(run, "preferences", fingerprint("label"))
    records = [judged(i) for i in range(pairs)]
    for start in range(0, pairs, 5):
        store.write_shard(records[start : start + 5])
    if complete:
        store.mark_complete({"rows": pairs})
    sft = RunStore.open(run, "sft", fingerprint("revise"))
    sft.write_shard([revised(i) for i in range(4)])
    sft.mark_complete()
    return run


SCRIPT_TEXT = "<script>window.__injected = 1</script><b>bold?</b>"


def review_pair(i: int) -> PreferenceRecord:
    """Pair `i` of the review run: `judged(i)` with SALMON scores, its own principle, and (pair 7) HTML in
    its text, which the review pages must show as text."""
    record = judged(i)
    principle = ("kind", "honest")[i % 2]
    update: dict = {
        "principle_ids": (principle,),
        "principle_scores": (PrincipleScore(principle_id=principle, score=1.5 - i / 8),
                             PrincipleScore(principle_id="brief", score=-0.4)),
    }  # fmt: skip
    if i == 7:
        prompt = (Message(role="user", content=f"Explain this page: {SCRIPT_TEXT}"),)
        update |= {"prompt": prompt, "prompt_text": prompt[0].content}
    return record.model_copy(update=update)


def make_review_run(folder: Path, pairs: int = 30, *, complete: bool = True) -> Path:
    """A run for the review pages: `pairs` pairs in shards of 8, and the SFT rows of `make_run`."""
    run = folder / "run"
    store = RunStore.open(run, "preferences", fingerprint("label"))
    records = [review_pair(i) for i in range(pairs)]
    for start in range(0, pairs, 8):
        store.write_shard(records[start : start + 8])
    if complete:
        store.mark_complete({"rows": pairs})
    sft = RunStore.open(run, "sft", fingerprint("revise"))
    sft.write_shard([revised(i) for i in range(4)])
    sft.mark_complete()
    return run
