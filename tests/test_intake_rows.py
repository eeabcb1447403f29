"""Conversations as people store them: HH-RLHF transcripts, the released HH-RLHF rows and TRL's implicit
prompt read as the same turns by every reader (prompts, pairs, human pairs), and the rows that cannot be."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from fake_engine import RuleJudge

from labeler.core.chat import Message
from labeler.core.errors import InputError
from labeler.engine import ChoiceRequest, ChoiceScores
from labeler.evaluate.judge_run import EvalJudgeConfig, eval_judge
from labeler.inputs.human_pairs import read_human_labelled_pairs
from labeler.inputs.rows import read_prompts
from labeler.inputs.transcripts import is_transcript, split_at_last_reply, transcript_turns
from labeler.stages.judge import JudgeOptions
from labeler.stages.pairs import pairs_from_file

HH_ROWS = Path(__file__).resolve().parent / "fixtures" / "hh_rlhf_rows.jsonl"  # see fixtures/README.md


def transcript(messages: Sequence[dict[str, str]], *, open_reply: bool) -> str:
    """Messages written as Anthropic wrote HH-RLHF: "\\n\\nHuman: ...\\n\\nAssistant: ..."."""
    names = {"user": "Human", "assistant": "Assistant"}
    text = "".join(f"\n\n{names[m['role']]}: {m['content']}" for m in messages)
    return text + ("\n\nAssistant:" if open_reply else "")


def hh_rows() -> list[dict]:
    """Real HH-RLHF pairs as conversations of messages (their texts hold no turn marker of their own)."""
    return [json.loads(line) for line in HH_ROWS.read_text(encoding="utf-8").splitlines()]


def shapes(rows: list[dict]) -> dict[str, list[dict]]:
    """The same rows in every shape a reader takes."""
    def reply(row: dict, name: str) -> list[dict[str, str]]:
        return [*row["prompt"], {"role": "assistant", "content": row[name]}]

    return {
        "messages": [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows],
        "transcript": [{"prompt": transcript(r["prompt"], open_reply=True), "chosen": r["chosen"],
                        "rejected": r["rejected"]} for r in rows],
        "released": [{"chosen": transcript(reply(r, "chosen"), open_reply=False),
                      "rejected": transcript(reply(r, "rejected"), open_reply=False)} for r in rows],
        "implicit": [{"chosen": reply(r, "chosen"), "rejected": reply(r, "rejected")} for r in rows],
        "implicit-trl-replies": [{"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                  "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows],
    }


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- the pure parts ----------------------------------------------------------------------------------


def test_a_transcript_reads_back_as_the_turns_it_was_written_from() -> None:
    rng = random.Random(0)
    for _ in range(50):
        turns = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i} {rng.random():.3f}\nsecond line"}
                 for i in range(rng.randrange(1, 8) * 2 - 1)]  # ends with the user
        for open_reply in (True, False):
            text = transcript(turns, open_reply=open_reply)
            assert is_transcript(text) == (len(turns) > 1 or open_reply)
            assert [(m.role, m.content) for m in transcript_turns(text)] == [(t["role"], t["content"]) for t in turns]


def test_text_that_only_starts_like_a_transcript_stays_text() -> None:
    assert not is_transcript("Human: what does this word mean?")
    assert not is_transcript("Tell me about the Human: Assistant: dialogue format")
    with pytest.raises(ValueError, match="empty"):
        transcript_turns("\n\nHuman: \n\nAssistant: hi")


def test_two_conversations_split_at_their_last_assistant_turn() -> None:
    user, ai = (lambda text: Message(role="user", content=text)), (lambda text: Message(role="assistant", content=text))
    prompt = (user("Hi"), ai("Hello"), user("Tell me a joke"))
    assert split_at_last_reply([*prompt, ai("Knock knock")], [*prompt, ai("No.")]) == (prompt, "Knock knock", "No.")
    # replies that begin alike are still whole replies (turns are compared, not characters)
    assert split_at_last_reply([*prompt, ai("Sure: A")], [*prompt, ai("Sure: B")])[1:] == ("Sure: A", "Sure: B")
    for chosen, rejected, message in [
        ([user("a"), ai("b")], [user("x"), ai("y")], "share no conversation"),
            ([user("a"), ai("b")], [user("a"), ai("b"), user("c"), ai("d")], "goes on for 0 turn"),
        ([*prompt, ai("a"), user("more")], [*prompt, ai("b")], "goes on for 2 turn"),
        ([*prompt, ai("a")], [*prompt, ai("a")], "the same conversation"),
    ]:
        with pytest.raises(ValueError, match=message):
            split_at_last_reply(chosen, rejected)


# --- every reader, every shape -----------------------------------------------------------------------


def test_every_shape_of_the_same_rows_reads_as_the_same_pairs(tmp_path: Path) -> None:
    """HH transcripts, the released shape (two whole transcripts, no prompt), TRL's implicit prompt (two
    message lists) and TRL's one-message replies all read as the rows given as messages."""
    rows = hh_rows()
    assert any(len(r["prompt"]) > 1 for r in rows)  # multi-turn conversations among them
    read = {name: read_human_labelled_pairs(write(tmp_path / f"{name}.jsonl", given))
            for name, given in shapes(rows).items()}
    reference = [(p.prompt, p.chosen, p.rejected) for p in read["messages"]]
    assert reference[0][0][0] == Message(**rows[0]["prompt"][0])
    for name, pairs in read.items():
        assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == reference, name
    # prompts: a transcript prompt reads as the same turns
    prompts = write(tmp_path / "prompts.jsonl", [{"prompt": r["prompt"]} for r in shapes(rows)["transcript"]])
    assert [p.messages for p in read_prompts(prompts)] == [r[0] for r in reference]


def test_eval_judge_gives_the_same_figures_on_every_shape(tmp_path: Path) -> None:
    rows = hh_rows()
    reports = {}
    for name, given in shapes(rows).items():
        config = EvalJudgeConfig(pairs=write(tmp_path / f"{name}.jsonl", given), quiet=True,
                                 options=JudgeOptions(principles="sample:2"))
        report = eval_judge(config, judge=LongerJudge()).model_dump()
        report.pop("pairs_file", None)
        reports[name] = report
    for name, report in reports.items():
        assert report == reports["messages"], name
    assert reports["messages"]["overall"]["n"] == len(rows)


class LongerJudge(RuleJudge):
    """Prefers the longer of the two replies shown, by a margin that grows with the difference."""

    model_id = "longer-judge"

    def choice_logprobs(self, requests: Sequence[ChoiceRequest], choices: Sequence[str]) -> list[ChoiceScores]:
        import re

        scores = []
        for request in requests:
            match = re.search(r"\(A\)\n(.*?)\n\n\(B\)\n(.*?)\n\n", request.messages[-1].content, re.S)
            assert match is not None
            d = math.tanh((len(match.group(1)) - len(match.group(2))) / 50)
            scores.append(ChoiceScores((-math.log1p(math.exp(-d)), -math.log1p(math.exp(d)))))
        return scores


def test_label_takes_chosen_and_rejected_in_a_seeded_order_and_records_it(tmp_path: Path) -> None:
    rows = hh_rows()
    path = write(tmp_path / "pairs.jsonl", shapes(rows)["released"])
    pairs = list(pairs_from_file(path, seed=3))
    assert [p.input_chosen for p in pairs] == [p.input_chosen for p in pairs_from_file(path, seed=3)]  # rerun
    for pair, row in zip(pairs, rows, strict=True):
        chosen = pair.response_a if pair.input_chosen == "a" else pair.response_b
        rejected = pair.response_b if pair.input_chosen == "a" else pair.response_a
        assert (chosen, rejected) == (row["chosen"], row["rejected"])
        assert pair.messages == tuple(Message(**m) for m in row["prompt"])
    # the same pairs given as messages are the same pairs, in the same order
    as_messages = write(tmp_path / "messages.jsonl", shapes(rows)["messages"])
    assert [p.id for p in pairs_from_file(as_messages, seed=3)] == [p.id for p in pairs]
    # about half each way, so the file's order teaches the judge no position; another seed, another draw
    many = write(tmp_path / "many.jsonl", [{"prompt": f"Q{i}?", "chosen": f"good {i}", "rejected": f"bad {i}"}
                                           for i in range(200)])
    drawn = [p.input_chosen for p in pairs_from_file(many, seed=3)]
    assert 70 <= drawn.count("a") <= 130
    assert drawn != [p.input_chosen for p in pairs_from_file(many, seed=4)]
    # response_a/response_b rows are read as before: no file label
    plain = write(tmp_path / "ab.jsonl", [{"prompt": "Hi?", "response_a": "Hello.", "response_b": "Go away."}])
    (pair,) = pairs_from_file(plain, seed=3)
    assert (pair.response_a, pair.input_chosen) == ("Hello.", None)


# --- rows that cannot be read ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "Hi", "messages": [{"role": "user", "content": "Bye"}], "chosen": "a", "rejected": "b"},
         "two different conversations, in 'prompt' and 'messages'"),
        ({"prompt": "\n\nHuman: Hi\n\nAssistant: Hello", "chosen": "a", "rejected": "b"},
         "the transcript ends with an assistant reply"),
        ({"chosen": "\n\nHuman: Hi\n\nAssistant: a", "rejected": "\n\nHuman: Bye\n\nAssistant: b"},
         "do not split into a shared prompt and two replies"),
        ({"chosen": "\n\nHuman: Hi\n\nAssistant: a", "rejected": "just a reply"},
         "rejected must be the whole conversation"),
        ({"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a"}]},
         "missing field"),
    ],
)
def test_unreadable_rows_name_file_line_and_field(tmp_path: Path, row: dict, message: str) -> None:
    path = write(tmp_path / "pairs.jsonl", [{"prompt": "fine", "chosen": "x", "rejected": "y"}, row])
    with pytest.raises(InputError, match=message) as info:
        read_human_labelled_pairs(path)
    assert info.value.file == str(path) and info.value.line == 2


def test_the_same_conversation_in_two_fields_is_one_conversation(tmp_path: Path) -> None:
    turns = [{"role": "user", "content": "Hi"}]
    path = write(tmp_path / "p.jsonl", [{"prompt": "Hi", "messages": turns, "chosen": "a", "rejected": "b"}])
    (pair,) = read_human_labelled_pairs(path)
    assert pair.prompt == (Message(role="user", content="Hi"),)
