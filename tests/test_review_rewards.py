"""`labeler review --reward-model`: every pair scored in the background, and the list's filter on where the
reward model agrees or disagrees with the judge."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from sample_runs import make_review_run, review_pair
from starlette.testclient import TestClient

from labeler.review.app import COOKIE, build_app
from labeler.review.rewards import Conversation, PairRewards, reward_model_scorer, verdict

PAIRS = 24


def by_length(batch: Sequence[Conversation]) -> list[float]:
    """A stand-in reward model: the longer the response (and the higher its pair's number), the better."""
    return [len(conversation[-1]["content"]) + (0.5 if "Second" in conversation[-1]["content"] else 0.0)
            for conversation in batch]  # fmt: skip


def test_the_list_keeps_the_pairs_the_reward_model_agrees_or_disagrees_on(tmp_path: Path) -> None:
    run = make_review_run(tmp_path, PAIRS)
    rewards = PairRewards(name="by-length")
    rewards.score_run(run, by_length)
    assert rewards.done and rewards.problem is None and len(rewards.rewards) == PAIRS
    # "Second answer i." is longer than "First answer i.": the stand-in always prefers B.
    expected = {which: {review_pair(i).id for i in range(PAIRS) if verdict(review_pair(i).p_a, 0.0, 1.0) == which}
                for which in ("agree", "disagree")}  # fmt: skip
    assert expected["agree"] and expected["disagree"]
    app = build_app(run, annotator="ana", token="t" * 20, page_size=50, allowed_hosts={"testserver"}, rewards=rewards)
    client = TestClient(app, cookies={COOKIE: "t" * 20})
    for which, ids in expected.items():
        page = client.get(f"/?rm={which}")
        assert page.status_code == 200
        assert set(re.findall(r'data-id="([0-9a-f]+)"', page.text)) == ids
        assert f"{PAIRS} of {PAIRS} pairs scored" in page.text
    pair = client.get(f"/pair/{review_pair(0).id}").text
    assert "r(A) +15.000, r(B) +16.500: disagrees with the judge" in pair  # the judge prefers A on pair 0


def test_a_real_reward_model_folder_scores_conversations(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    config = AutoConfig.from_pretrained(tiny_model, num_labels=1)
    folder = tmp_path / "rm"
    LlamaForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    score = reward_model_scorer(folder)
    pair = review_pair(4)
    a, b = ([{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": text}]
            for text in (pair.response_a, pair.response_b))  # fmt: skip
    first = score([a, b])
    assert len(first) == 2 and first[0] != first[1]
    assert score([a]) == [first[0]]
