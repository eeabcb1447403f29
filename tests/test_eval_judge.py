"""eval-judge: metrics against slow references, reading human pairs, a scripted judge, the real model."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fake_engine import RuleJudge

from labeler.cli.app import main
from labeler.engine import ChoiceRequest, ChoiceScores
from labeler.evaluate.human_agreement import (
    CALIBRATION_BINS,
    agreement,
    expected_calibration_error,
    reliability_table,
)
from labeler.evaluate.judge_report import judge_metrics, position_consistency
from labeler.evaluate.judge_run import EvalJudgeConfig, chosen_first, eval_judge, read_human_pairs
from labeler.evaluate.stats import first_position_rate
from labeler.stages.judge import JudgeOptions

HUMAN_PAIRS = Path(__file__).resolve().parent.parent / "data" / "human_pairs.jsonl"


# -- slow, obvious references ---------------------------------------------------------------------


def ref_side(p: float) -> str | None:
    return "a" if p > 0.5 else "b" if p < 0.5 else None


def ref_credit(p: float, human_a: bool) -> float:
    side = ref_side(p)
    if side is None:
        return 0.5
    return 1.0 if (side == "a") == human_a else 0.0


def ref_agreement(ps: Sequence[float], human: Sequence[bool]) -> float:
    return sum(ref_credit(p, h) for p, h in zip(ps, human)) / len(ps)


def ref_consistency(ab: Sequence[float], ba: Sequence[float]) -> float:
    same = 0
    for x, y in zip(ab, ba):
        if ref_side(x) is not None and ref_side(x) == ref_side(y):
            same += 1
    return same / len(ab)


def ref_p_first(ab: Sequence[float], ba: Sequence[float]) -> float:
    shown_first = []
    for x, y in zip(ab, ba):
        shown_first.append(x)  # ab order: response_a shown first, P(response_a) = x
        shown_first.append(1.0 - y)  # ba order: response_b shown first, P(response_b) = 1 - y
    return sum(shown_first) / len(shown_first)


def ref_reliability(
    ps: Sequence[float], human: Sequence[bool], bins: int
) -> list[tuple[int, float | None, float | None]]:
    width = 0.5 / bins
    rows = []
    for i in range(bins):
        low, high = 0.5 + i * width, 0.5 + (i + 1) * width
        members = []
        for p, h in zip(ps, human):
            c = max(p, 1.0 - p)
            if low <= c < high or (i == bins - 1 and c >= high):
                members.append((c, ref_credit(p, h)))
        if members:
            rows.append((len(members), sum(c for c, _ in members) / len(members),
                         sum(k for _, k in members) / len(members)))
        else:
            rows.append((0, None, None))
    return rows


def ref_ece(ps: Sequence[float], human: Sequence[bool], bins: int) -> float:
    total = 0.0
    for count, conf, acc in ref_reliability(ps, human, bins):
        if count:
            total += count / len(ps) * abs(acc - conf)
    return total


def random_case(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random per-pair arrays with the edge values (exact ties, 0, 1, bin edges) mixed in."""
    rng = np.random.default_rng(seed)
    ab = rng.uniform(0, 1, n)
    ba = rng.uniform(0, 1, n)
    edges = np.array([0.5, 0.0, 1.0, 0.75, 0.25, 0.5])
    ab[: len(edges)] = edges
    ba[1 : len(edges) + 1] = edges
    mass = rng.uniform(0, 1, n)
    human = rng.uniform(0, 1, n) < 0.5
    return ab, ba, mass, human


@pytest.mark.parametrize("seed", range(8))
def test_metrics_match_slow_references(seed):
    ab, ba, mass, human = random_case(seed, n=50 + 17 * seed)
    p = (ab + ba) / 2
    m = judge_metrics(ab, ba, mass, human)
    assert m.n == len(ab)
    assert m.agreement == pytest.approx(ref_agreement(p.tolist(), human.tolist()), abs=1e-12)
    assert m.agreement_ab == pytest.approx(ref_agreement(ab.tolist(), human.tolist()), abs=1e-12)
    assert m.agreement_ba == pytest.approx(ref_agreement(ba.tolist(), human.tolist()), abs=1e-12)
    assert m.position_consistency == pytest.approx(ref_consistency(ab.tolist(), ba.tolist()), abs=1e-12)
    assert m.p_first == pytest.approx(ref_p_first(ab.tolist(), ba.tolist()), abs=1e-12)
    assert m.mean_mass == pytest.approx(sum(mass.tolist()) / len(mass), abs=1e-12)
    assert m.ece == pytest.approx(ref_ece(p.tolist(), human.tolist(), CALIBRATION_BINS), abs=1e-12)
    for bins in (CALIBRATION_BINS, 4):
        fast = reliability_table(p, human, bins)
        slow = ref_reliability(p.tolist(), human.tolist(), bins)
        assert [r.count for r in fast] == [r[0] for r in slow]
        for r, (_, conf, acc) in zip(fast, slow):
            if conf is None:
                assert r.mean_confidence is None and r.accuracy is None
            else:
                assert r.mean_confidence == pytest.approx(conf) and r.accuracy == pytest.approx(acc)
        assert sum(r.count for r in fast) == len(p)
        assert expected_calibration_error(p, human, bins) == pytest.approx(ref_ece(p.tolist(), human.tolist(), bins))


def test_metrics_of_a_judge_that_always_picks_the_first_position():
    """Always 'A' with 90 %: half right per order, never consistent, P(first) 0.9, p_a an exact coin flip."""
    n = 40
    human = np.arange(n) % 2 == 0
    ab, ba = np.full(n, 0.9), np.full(n, 0.1)  # ba is mapped back: 'A' there means response_b
    m = judge_metrics(ab, ba, np.full(n, 0.8), human)
    assert (m.agreement, m.agreement_ab, m.agreement_ba) == (0.5, 0.5, 0.5)
    assert m.position_consistency == 0.0
    assert m.p_first == pytest.approx(0.9)
    # every pair is a coin flip (confidence 0.5, credit 0.5): perfectly calibrated
    assert m.ece == pytest.approx(0.0)
    assert reliability_table((ab + ba) / 2, human)[0].count == n


def test_metrics_of_a_perfect_overconfident_and_a_wrong_judge():
    human = np.array([True, False, True, False])
    right = np.where(human, 0.99, 0.01)
    m = judge_metrics(right, right, np.ones(4), human)
    assert (m.agreement, m.position_consistency) == (1.0, 1.0)
    assert m.p_first == pytest.approx(0.5)
    assert m.ece == pytest.approx(0.01)
    wrong = 1.0 - right
    assert judge_metrics(wrong, wrong, np.ones(4), human).ece == pytest.approx(0.99)
    assert agreement(wrong, human) == 0.0
    assert position_consistency(right, wrong) == 0.0
    assert first_position_rate(np.array([1.0]), np.array([1.0])) == 0.5  # always picks response_a: no position bias


# -- reading human pairs --------------------------------------------------------------------------


def test_shipped_human_pairs_are_balanced_and_laid_out_by_the_row_hash(tmp_path: Path):
    pairs = read_human_pairs(HUMAN_PAIRS, "category", seed=0)
    rows = [json.loads(line) for line in HUMAN_PAIRS.read_text().splitlines()]
    assert len(pairs) == len(rows) >= 20
    assert {p.group for p in pairs} == {"helpful", "harmless", "honest"}
    for human, row in zip(pairs, rows):
        chosen = human.pair.response_a if human.human_a else human.pair.response_b
        rejected = human.pair.response_b if human.human_a else human.pair.response_a
        assert (chosen, rejected) == (row["chosen"], row["rejected"])
    first = sum(p.human_a for p in pairs)
    assert 0 < first < len(pairs)
    assert abs(first - len(pairs) / 2) <= len(pairs) / 4, first
    # the layout depends on the row and the seed, not on the file order
    backwards = tmp_path / "backwards.jsonl"
    backwards.write_text("".join(line + "\n" for line in reversed(HUMAN_PAIRS.read_text().splitlines())))
    reread = read_human_pairs(backwards, None, seed=0)
    assert [p.human_a for p in reversed(reread)] == [p.human_a for p in pairs]
    other_seed = read_human_pairs(HUMAN_PAIRS, None, seed=1)
    assert [p.human_a for p in other_seed] != [p.human_a for p in pairs]
    assert chosen_first(3, "x") == chosen_first(3, "x")


GOOD = {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5", "category": "math"}


def line(**changes: object) -> str:
    row = {**GOOD, **changes}
    return json.dumps({k: v for k, v in row.items() if v is not None})


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (line(chosen=None), r"human\.jsonl:2 \(field 'chosen'\): missing field"),
        (line(rejected="   "), r"human\.jsonl:2 \(field 'rejected'\): empty text"),
        (line(rejected="4"), r"human\.jsonl:2 \(field 'rejected'\): chosen and rejected are the same"),
        (line(prompt=None), r"human\.jsonl:2: row has none of the fields prompt"),
        (line(category=None), r"human\.jsonl:2 \(field 'category'\): missing or empty group value"),
        ("{not json", r"human\.jsonl:2: invalid JSON"),
    ],
)
def test_bad_human_pairs_exit_2_naming_file_and_line(tmp_path: Path, capsys, bad: str, expected: str):
    path = tmp_path / "human.jsonl"
    path.write_text(line() + "\n" + bad + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["eval-judge", "--pairs", str(path), "--group-by", "category", "--engine", "hf"])
    assert exit_info.value.code == 2
    assert re.search(expected, capsys.readouterr().err.replace("\n", "")), expected


def test_missing_and_empty_pair_files_exit_2(tmp_path: Path, capsys):
    for path, expected in ((tmp_path / "nope.jsonl", "file not found"), (tmp_path / "empty.jsonl", "no pairs")):
        if path.name == "empty.jsonl":
            path.write_text("\n")
        with pytest.raises(SystemExit) as exit_info:
            main(["eval-judge", "--pairs", str(path), "--engine", "hf"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.replace("\n", "")
        assert path.name in err and expected in err


# -- a scripted judge -----------------------------------------------------------------------------


class ScriptedJudge(RuleJudge):
    """A judge that reads the two replies out of the rendered prompt and scores them with a rule."""

    model_id = "scripted-judge"

    def __init__(self, rule: str) -> None:
        self.rule = rule

    def choice_logprobs(self, requests: Sequence[ChoiceRequest], choices: Sequence[str]) -> list[ChoiceScores]:
        scores = []
        for request in requests:
            text = request.messages[-1].content
            first = re.search(r"\(A\)\n(.*?)\n\n\(B\)", text, re.S).group(1)
            if self.rule == "first":
                p = 0.9
            else:  # "correct": the reply containing "right" wins
                p = 0.8 if "right" in first else 0.2
            scores.append(ChoiceScores((math.log(p * 0.9), math.log((1 - p) * 0.9))))
        return scores


def write_pairs(path: Path, n: int) -> Path:
    rows = [
        {"prompt": f"Question {i}?", "chosen": f"right answer {i}", "rejected": f"wrong answer {i}",
         "topic": "odd" if i % 2 else "even"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_judge_on_a_scripted_judge_reports_agreement_bias_and_json(tmp_path: Path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 30)
    out = tmp_path / "report" / "eval.json"
    config = EvalJudgeConfig(pairs=pairs, group_by="topic", out=out, batch_size=7, quiet=True,
                             options=JudgeOptions(principles="sample:2"))
    report = eval_judge(config, judge=ScriptedJudge("correct"))
    assert report.overall.n == 30 and report.judge_model == "scripted-judge"
    assert report.overall.agreement == 1.0 and report.overall.position_consistency == 1.0
    assert report.overall.p_first == pytest.approx(0.5)
    assert report.overall.mean_mass == pytest.approx(0.9)
    assert report.overall.ece == pytest.approx(0.2)  # always 80 % sure, always right
    assert set(report.groups) == {"even", "odd"} and sum(g.n for g in report.groups.values()) == 30
    assert 0 < report.chosen_as_a < 30
    assert [r.chosen_is_a for r in report.pairs].count(True) == report.chosen_as_a
    written = json.loads(out.read_text())
    assert written["overall"]["agreement"] == 1.0 and len(written["pairs"]) == 30
    assert len(written["reliability"]) == CALIBRATION_BINS
    assert all(pair["p_chosen"] == pytest.approx(0.8) for pair in written["pairs"])
    # `labeler report` reads the probability of each human choice from this file
    from labeler.report.human_agreement import read_eval_judge

    assert read_eval_judge(out).p_chosen.tolist() == pytest.approx([0.8] * 30)

    biased = eval_judge(config.model_copy(update={"out": None}), judge=ScriptedJudge("first"))
    assert all(r.p_a == pytest.approx(0.5, abs=1e-9) for r in biased.pairs)  # a coin flip, up to rounding
    assert biased.overall.position_consistency == 0.0
    assert biased.overall.p_first == pytest.approx(0.9)
    # the single orders follow the layout: ab agrees exactly where the human's choice was shown first
    assert biased.overall.agreement_ab == pytest.approx(biased.chosen_as_a / 30)
    assert biased.overall.agreement_ba == pytest.approx(1 - biased.chosen_as_a / 30)


# -- the real embedded model ----------------------------------------------------------------------


@pytest.mark.slow
def test_eval_judge_command_on_the_real_model(tmp_path: Path, capsys, embedded_model: Path):
    """Six shipped pairs (two per category) through the CLI with the transformers engine."""
    rows = [json.loads(line) for line in HUMAN_PAIRS.read_text().splitlines()]
    six = [row for category in ("helpful", "honest", "harmless") for row in
           [r for r in rows if r["category"] == category][:2]]
    small = tmp_path / "six.jsonl"
    small.write_text("".join(json.dumps(row) + "\n" for row in six))
    out = tmp_path / "eval.json"
    main_args = ["eval-judge", "--pairs", str(small), "--group-by", "category", "--engine", "hf",
                 "--judge-model", str(embedded_model), "--dtype", "float32", "--out", str(out), "--quiet"]
    with pytest.raises(SystemExit) as exit_info:
        main(main_args)
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "agreement (both orders)" in printed and "harmless" in printed and "[0.95, 1.00]" in printed
    report = json.loads(out.read_text())
    assert report["overall"]["n"] == 6 and {g: m["n"] for g, m in report["groups"].items()} == {
        "helpful": 2, "honest": 2, "harmless": 2}
    pairs = report["pairs"]
    assert all(0 < p["p_a_ab"] < 1 and 0 < p["p_a_ba"] < 1 and 0 < p["mass_ab"] <= 1 for p in pairs)
    # the summary is the metrics of the per-pair numbers it reports
    ab = np.array([p["p_a_ab"] for p in pairs])
    ba = np.array([p["p_a_ba"] for p in pairs])
    mass = np.array([(p["mass_ab"] + p["mass_ba"]) / 2 for p in pairs])
    human = np.array([p["chosen_is_a"] for p in pairs])
    assert judge_metrics(ab, ba, mass, human).model_dump() == pytest.approx(report["overall"])
    # the judge prompt opens the answer so that the letters carry most of the probability
    assert report["overall"]["mean_mass"] > 0.5


def test_agreement_interval_contains_the_share_and_narrows_with_more_pairs() -> None:
    from labeler.evaluate.judge_report import Z_95_SIX_DECIMALS
    from labeler.evaluate.stats import wilson_interval

    def interval(share: float, n: int) -> tuple[float, float]:  # as judge_metrics asks for it
        return wilson_interval(share * n, n, z=Z_95_SIX_DECIMALS)

    for share in (0.0, 0.3, 0.5, 0.531, 1.0):
        low, high = interval(share, 100)
        assert 0.0 <= low <= share <= high <= 1.0
        wide = interval(share, 100)
        narrow = interval(share, 400)
        assert narrow[1] - narrow[0] < wide[1] - wide[0]
    # Slow reference: the Wilson bounds are where |share - p| = z * sqrt(p (1 - p) / n).
    low, high = interval(0.531, 400)
    for p in (low, high):
        assert abs(0.531 - p) == pytest.approx(1.959964 * np.sqrt(p * (1 - p) / 400), rel=1e-6)
