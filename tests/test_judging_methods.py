"""Judging methods and their comparison: principle ensembles (--aggregate), contextual calibration, few-shot
judging (the constitution's demonstrations and the CAI feedback few-shot format), SALMON as the judgment,
and `eval-judge --compare` with paired-bootstrap differences and cost.

The methods are checked against slow references on a scripted judge whose position bias and content
signal are known; the real model runs them in `test_methods_run_on_the_real_model`.
"""

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
from labeler.core.errors import InputError, InputErrors
from labeler.core.soft_label import combine_orders, judgment
from labeler.engine import ChoiceRequest, ChoiceScores, Message
from labeler.evaluate.judge_report import CompareReport, paired_bootstrap
from labeler.evaluate.judge_run import EvalJudgeConfig, eval_judge
from labeler.inputs.constitution import Constitution, Principle, load_constitution
from labeler.inputs.constitution.judge_demos import read_judge_demos, split_transcript
from labeler.inputs.templates import Templates
from labeler.stages.judge import (
    CONTENT_FREE,
    JudgeOptions,
    judge_pairs,
    panel_for,
    position_priors,
    prior_key,
)
from labeler.stages.pairs import make_pair

REPO = Path(__file__).resolve().parent.parent
HELPFUL = REPO / "constitutions" / "helpful-honest.yaml"
SALMON = REPO / "constitutions" / "salmon.yaml"
TEMPLATES = Templates.load(None)


class BiasedJudge(RuleJudge):
    """A judge with a known position bias and content signal, read from the rendered prompt.

    log P(A) − log P(B) = `bias` (+ the question's own bias) + `signal` when the first reply holds "right"
    and − `signal` when the second does. Counts the prompts it scores and keeps the last requests.
    """

    model_id = "biased-judge"

    def __init__(self, bias: float = 2.0, signal: float = 0.5) -> None:
        self.bias, self.signal = bias, signal
        self.prompts = 0
        self.requests: list[ChoiceRequest] = []

    def log_odds(self, request: ChoiceRequest) -> float:
        text = request.messages[-1].content
        match = re.search(r"\(A\)\n(.*?)\n\n\(B\)\n(.*?)\n\n", text, re.S)
        assert match is not None, text
        first, second = match.group(1), match.group(2)
        # every question has a bias of its own, so calibration must be per principle
        own = (sum(map(ord, text[-120:])) % 7) / 10.0
        content = self.signal * (("right" in first) - ("right" in second))
        return self.bias + own + content

    def choice_logprobs(self, requests: Sequence[ChoiceRequest], choices: Sequence[str]) -> list[ChoiceScores]:
        self.prompts += len(requests)
        self.requests = list(requests)
        scores = []
        for request in requests:
            d = self.log_odds(request)
            scores.append(ChoiceScores((-math.log1p(math.exp(-d)) - 0.1, -math.log1p(math.exp(d)) - 0.1)))
        return scores


def human_pairs(path: Path, n: int) -> Path:
    rows = [{"prompt": f"Question {i}?", "chosen": f"right answer {i}", "rejected": f"other answer {i}",
             "axis": "odd" if i % 2 else "even"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


PAIRS = [make_pair([Message(role="user", content=f"Q{i}?")], f"right {i}", f"not so {i}", "test") for i in range(6)]


# -- the math ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_combine_orders_matches_slow_references(seed: int) -> None:
    rng = np.random.default_rng(seed)
    raw = [(rng.normal(-1, 1, 2), rng.normal(-1, 1, 2), float(rng.normal())) for _ in range(5)]
    judgments = [judgment(ab, ba, position_prior=prior) for ab, ba, prior in raw]
    weights = rng.uniform(0.5, 2.0, 5)

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    # slow: from the raw numbers, the prior taken out of each order's log-odds toward the first position
    ab_odds = [(ab[0] - ab[1]) - prior for ab, _, prior in raw]
    ba_odds = [-((ba[0] - ba[1]) - prior) for _, ba, prior in raw]  # in ba, "A" is response_b
    mean_p = (sum(w * sigmoid(x) for w, x in zip(weights, ab_odds)) / weights.sum(),
              sum(w * sigmoid(x) for w, x in zip(weights, ba_odds)) / weights.sum())
    mean_odds = (sigmoid(sum(w * x for w, x in zip(weights, ab_odds)) / weights.sum()),
                 sigmoid(sum(w * x for w, x in zip(weights, ba_odds)) / weights.sum()))
    assert combine_orders(judgments, "prob", weights) == pytest.approx(mean_p)
    assert combine_orders(judgments, "logodds", weights) == pytest.approx(mean_odds)
    # SALMON scores average both orders, where a prior cancels
    for (ab, ba, _), j in zip(raw, judgments):
        assert j.score == pytest.approx(((ab[0] - ab[1]) + (ba[1] - ba[0])) / 2)


def test_paired_bootstrap_matches_a_slow_reference() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, 120).astype(float)
    b = np.where(rng.random(120) < 0.2, 1 - a, a)
    d = paired_bootstrap(a, b, seed=7, resamples=500)
    picks = np.random.default_rng(7).integers(0, 120, size=(500, 120))
    slow = sorted(sum(b[i] - a[i] for i in row) / 120 for row in picks)
    assert d.mean == pytest.approx((b - a).mean())
    assert d.low == pytest.approx(np.percentile(slow, 2.5)) and d.high == pytest.approx(np.percentile(slow, 97.5))
    assert d.low <= d.mean <= d.high
    same = paired_bootstrap(a, a)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)


# -- calibration ---------------------------------------------------------------------------------------


def test_calibration_removes_each_principles_position_prior() -> None:
    constitution = load_constitution(HELPFUL)
    options = JudgeOptions(principles="all", calibrate=True)
    panel = panel_for(constitution, options, str(HELPFUL))
    judge = BiasedJudge(bias=3.0, signal=0.5)
    priors = position_priors(judge, TEMPLATES, panel, options)
    assert judge.prompts == len(panel.judge) * len(CONTENT_FREE)
    # content-free pairs hold no "right", so each prior is the bias plus that question's own
    assert len(set(priors.values())) > 1
    for principle in panel.judge:
        assert 3.0 <= priors[prior_key(principle, False)] <= 3.7

    raw = judge_pairs(judge, TEMPLATES, panel, PAIRS, options.model_copy(update={"calibrate": False}))
    calibrated = judge_pairs(judge, TEMPLATES, panel, PAIRS, options, priors)
    for before, after in zip(raw, calibrated):
        # uncalibrated, each order prefers its first position; calibrated, both prefer the "right" reply
        assert before.p_a_ab > 0.9 and before.p_a_ba < 0.1 and not before.consistent
        assert after.p_a_ab == pytest.approx(1 / (1 + math.exp(-0.5)), abs=1e-6)
        assert after.p_a_ba == pytest.approx(after.p_a_ab, abs=1e-6) and after.consistent
        # SALMON-style scores do not depend on the prior
        assert [s.score for s in before.principle_scores] == pytest.approx([s.score for s in after.principle_scores])
    # without priors given, judge_pairs measures them itself
    assert [r.p_a for r in judge_pairs(judge, TEMPLATES, panel, PAIRS, options)] == [r.p_a for r in calibrated]


# -- ensembles and SALMON as the judgment -------------------------------------------------------------


def test_logodds_ensembles_differ_from_probability_ensembles_as_the_math_says() -> None:
    constitution = load_constitution(HELPFUL)
    judge = BiasedJudge(bias=1.0, signal=1.0)
    panel = panel_for(constitution, JudgeOptions(principles="all"), str(HELPFUL))
    prob = judge_pairs(judge, TEMPLATES, panel, PAIRS, JudgeOptions(principles="all", aggregate="prob"))
    odds = judge_pairs(judge, TEMPLATES, panel, PAIRS, JudgeOptions(principles="all", aggregate="logodds"))
    for p, o in zip(prob, odds):
        assert p.principle_ids == o.principle_ids and len(p.principle_ids) == 8
        assert p.principle_scores == o.principle_scores
        # per order the log-odds differ by principle; in the ab order all are positive, where the logistic is
        # concave, so the logistic of the mean is above the mean of the logistics; in the ba order all are
        # at most 0, where it is convex, so it is below (Jensen)
        assert o.p_a_ab > p.p_a_ab > 0.5 and o.p_a_ba < p.p_a_ba <= 0.5


def test_salmon_decides_by_the_weighted_mean_of_principle_scores() -> None:
    constitution = load_constitution(SALMON)
    weights = {p.id: p.weight for p in constitution.for_stage("salmon")}
    options = JudgeOptions(decide="salmon")
    panel = panel_for(constitution, options, str(SALMON))
    assert panel.judge == () and len(panel.salmon) == len(weights)
    judge = BiasedJudge(bias=1.0, signal=0.8)
    for record in judge_pairs(judge, TEMPLATES, panel, PAIRS, options):
        scores = {s.principle_id: s.score for s in record.principle_scores}
        assert set(scores) == set(weights)
        total = sum(weights.values())
        # both orders' log-odds averaged over principles (weighted) give p_a_ab and p_a_ba; their mean is p_a
        mean_score = sum(weights[k] * v for k, v in scores.items()) / total
        assert math.log(record.p_a_ab / (1 - record.p_a_ab)) / 2 + math.log(
            record.p_a_ba / (1 - record.p_a_ba)) / 2 == pytest.approx(mean_score)
        assert mean_score == pytest.approx(0.8)  # the content signal, the position bias gone
    # a judge constitution asked to decide by SALMON asks no judge question
    helpful = panel_for(load_constitution(HELPFUL), options, str(HELPFUL))
    assert helpful.judge == () and len(helpful.salmon) == 8


class PrincipleJudge(RuleJudge):
    """Prefers the first reply by `log_odds` under each principle whose text is in the question: a fixed
    position preference per principle, so each order's probability is known exactly."""

    def __init__(self, log_odds: dict[str, float]) -> None:
        self.by_text = log_odds

    def choice_logprobs(self, requests: Sequence[ChoiceRequest], choices: Sequence[str]) -> list[ChoiceScores]:
        scores = []
        for request in requests:
            d = sum(v for text, v in self.by_text.items() if text in request.messages[-1].content)
            scores.append(ChoiceScores((-math.log1p(math.exp(-d)), -math.log1p(math.exp(d)))))
        return scores


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.mark.parametrize("stage", ["salmon", "judge"])
def test_the_constitutions_weights_decide_p_a_by_default(stage: str) -> None:
    """A definitions-only constitution (SALMON's published weights), or weighted judge questions all asked,
    is averaged with its weights under the default `decide: judge`, not equally."""
    texts = {"Prefers brevity": 2.0, "Prefers detail": -2.0}
    principles = [Principle(id=f"p{i}", weight=w, **{"definition" if stage == "salmon" else "judge": text})
                  for i, (text, w) in enumerate(zip(texts, (3.0, 1.0)))]
    constitution = Constitution(name="weighted", principles=tuple(principles))
    options = JudgeOptions(principles="all")
    panel = panel_for(constitution, options, "weighted.yaml")
    [record] = judge_pairs(PrincipleJudge(texts), TEMPLATES, panel, PAIRS[:1], options)
    # each principle prefers one position in both orders: P(A first) = sigmoid(d), P(A second) = sigmoid(-d)
    assert record.p_a_ab == pytest.approx((3 * sigmoid(2.0) + sigmoid(-2.0)) / 4)
    assert record.p_a_ba == pytest.approx((3 * sigmoid(-2.0) + sigmoid(2.0)) / 4)
    assert record.p_a_ab != pytest.approx(0.5)  # the equal mean would be exactly 0.5


def test_principles_drawn_by_weight_are_averaged_equally() -> None:
    """With `principles: sample:K` the draw weighs the judge questions already (CAI): no second weighting."""
    texts = {"Prefers brevity": 2.0, "Prefers detail": -2.0}
    constitution = Constitution(name="weighted", principles=(
        Principle(id="p0", judge="Prefers brevity", weight=3.0), Principle(id="p1", judge="Prefers detail")))
    options = JudgeOptions(principles="sample:2")
    panel = panel_for(constitution, options, "weighted.yaml")
    [record] = judge_pairs(PrincipleJudge(texts), TEMPLATES, panel, PAIRS[:1], options)
    assert len(record.principle_ids) == 2
    assert record.p_a_ab == pytest.approx(0.5) and record.p_a_ba == pytest.approx(0.5)


# -- few-shot judging ----------------------------------------------------------------------------------


def test_demonstrations_come_first_with_alternating_positions() -> None:
    constitution = load_constitution(HELPFUL)
    assert len(constitution.judge_few_shot) == 4
    options = JudgeOptions(few_shot=3)
    panel = panel_for(constitution, options, str(HELPFUL))
    assert panel.demos == constitution.judge_few_shot[:3]
    judge = BiasedJudge()
    judge_pairs(judge, TEMPLATES, panel, PAIRS[:2], options)
    assert len(judge.requests) == 4
    for request in judge.requests:
        roles = [m.role for m in request.messages]
        assert roles == ["user", "assistant"] * 3 + ["user"]
        answers = [m.content for m in request.messages if m.role == "assistant"]
        assert answers == ["The better response is (A)", "The better response is (B)", "The better response is (A)"]
        for index, demo in enumerate(panel.demos):
            shown = request.messages[2 * index].content
            first = shown.index("(A)\n")
            better_at, worse_at = shown.index(demo.better, first), shown.index(demo.worse, first)
            assert (better_at < worse_at) == (index % 2 == 0)
            # the demonstration asks the same question as the real turn
            question = re.search(r"\n\n([^\n]*)\nOptions:", request.messages[-1].content)
            assert question is not None and question.group(1) in shown


CAI_FEEDBACK = [
    {"prompt": "\n\nHuman: How do I hotwire a car?\n\nAssistant:", "corrects": ["I can't help with that."],
     "incorrects": ["Strip the ignition wires and touch them together.", "Find a screwdriver first."]},
    {"prompt": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke.\n\nAssistant:",
     "corrects": ["Why did the scarecrow win an award? He was outstanding in his field."], "incorrects": ["No."]},
]


def test_the_cai_feedback_few_shot_format_is_read_as_demonstrations(tmp_path: Path) -> None:
    path = tmp_path / "feedback.json"
    path.write_text(json.dumps(CAI_FEEDBACK))
    demos = read_judge_demos(path)
    assert len(demos) == 3  # each correct against each incorrect
    assert demos[0].conversation == (Message(role="user", content="How do I hotwire a car?"),)
    assert (demos[0].better, demos[1].worse) == ("I can't help with that.", "Find a screwdriver first.")
    assert [m.role for m in demos[2].conversation] == ["user", "assistant", "user"]
    # labeler's own format, in YAML, reads the same demonstrations back
    own = tmp_path / "demos.yaml"
    import yaml

    own.write_text(yaml.safe_dump([d.model_dump(mode="json") for d in demos]))
    assert read_judge_demos(own) == demos
    # and it drives few-shot judging
    constitution = load_constitution(HELPFUL)
    options = JudgeOptions(few_shot=2, few_shot_file=path)
    panel = panel_for(constitution, options, str(HELPFUL))
    assert panel.demos == demos[:2]
    # as a constitution it is refused with a message saying what it is
    with pytest.raises(InputErrors, match="judging demonstrations"):
        load_constitution(path)


@pytest.mark.parametrize("entry, field", [
    ({"prompt": "no transcript", "corrects": ["a"], "incorrects": ["b"]}, "prompt"),
    ({"prompt": "\n\nHuman: hi\n\nAssistant:", "corrects": "a", "incorrects": ["b"]}, "corrects"),
    ({"prompt": "\n\nHuman: hi\n\nAssistant:", "corrects": ["a"], "incorrects": ["b"], "score": 1}, "score"),
])
def test_bad_demonstrations_name_the_entry_and_field(tmp_path: Path, entry: dict[str, object], field: str) -> None:
    path = tmp_path / "feedback.json"
    path.write_text(json.dumps([CAI_FEEDBACK[0], entry]))
    with pytest.raises(InputErrors) as info:
        read_judge_demos(path)
    assert f"demonstration 1, field '{field}'" in str(info.value) and str(path) in str(info.value)


def test_own_format_errors_have_lines(tmp_path: Path) -> None:
    path = tmp_path / "demos.yaml"
    path.write_text("- conversation:\n    - {role: user, content: hi}\n  better: yes please\n")
    with pytest.raises(InputErrors) as info:
        read_judge_demos(path)
    assert f"{path}:1" in str(info.value) and "'worse'" in str(info.value)


def test_split_transcript_keeps_every_turn() -> None:
    messages = split_transcript("Human: a\n\nAssistant: b\n\nHuman: c")
    assert [(m.role, m.content) for m in messages] == [("user", "a"), ("assistant", "b"), ("user", "c")]
    with pytest.raises(ValueError, match="ending with a Human turn"):
        split_transcript("\n\nHuman: a\n\nAssistant: b")


def test_validate_reads_a_feedback_file_and_counts_demonstrations(tmp_path: Path, capsys) -> None:
    path = tmp_path / "feedback.json"
    path.write_text(json.dumps(CAI_FEEDBACK))
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", str(path), str(HELPFUL)])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "3 (better, worse) pairs" in out and "4 judging demonstrations" in out


def test_demonstrations_change_a_label_runs_fingerprint(tmp_path: Path) -> None:
    from labeler.stages.label import LabelConfig, check_label

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "hi", "response_a": "a", "response_b": "b"}) + "\n")
    path = tmp_path / "feedback.json"
    path.write_text(json.dumps(CAI_FEEDBACK))
    prints = []
    for options in (JudgeOptions(few_shot=1, few_shot_file=path), JudgeOptions(few_shot=2, few_shot_file=path)):
        config = LabelConfig(constitution=HELPFUL, pairs=pairs, out=tmp_path / "out", options=options)
        prints.append(check_label(config, judge=BiasedJudge()).fingerprint)
    path.write_text(json.dumps(CAI_FEEDBACK[::-1]))
    config = LabelConfig(constitution=HELPFUL, pairs=pairs, out=tmp_path / "out",
                         options=JudgeOptions(few_shot=1, few_shot_file=path))
    prints.append(check_label(config, judge=BiasedJudge()).fingerprint)
    assert len({json.dumps(p, sort_keys=True) for p in prints}) == 3


def test_incompatible_options_are_refused() -> None:
    for bad in ({"cot": True, "few_shot": 1}, {"cot": True, "calibrate": True}, {"cot": True, "decide": "salmon"},
                {"few_shot_file": "x.json"}):
        with pytest.raises(ValueError):
            JudgeOptions.model_validate(bad)
    constitution = Constitution(name="c", principles=(Principle(id="p", judge="Which is kinder?"),))
    with pytest.raises(InputError, match="more demonstrations"):
        panel_for(constitution, JudgeOptions(few_shot=1), "c.yaml")


# -- eval-judge --compare ------------------------------------------------------------------------------


def test_compare_scores_each_configuration_on_the_same_pairs(tmp_path: Path) -> None:
    pairs = human_pairs(tmp_path / "pairs.jsonl", 40)
    files = []
    for name, body in (("plain", "name: plain\n"),
                       ("calibrated", "options: {calibrate: true}\n"),
                       ("ensemble", "name: ensemble\noptions: {principles: 'sample:3', aggregate: logodds}\n")):
        path = tmp_path / "configs" / f"{name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(body)
        files.append(path)
    out = tmp_path / "compare.json"
    config = EvalJudgeConfig(pairs=pairs, group_by="axis", compare=tuple(files), out=out, batch_size=16, quiet=True)
    judge = BiasedJudge(bias=3.0, signal=0.5)
    report = eval_judge(config, judge=judge)
    assert isinstance(report, CompareReport) and report.n == 40
    plain, calibrated, ensemble = report.configurations
    assert [c.name for c in report.configurations] == ["plain", "calibrated", "ensemble"]
    # cost: prompts scored per configuration (the calibration's content-free prompts included)
    assert plain.prompts == 80 and ensemble.prompts == 240
    assert calibrated.prompts == 80 + 8 * len(CONTENT_FREE)
    assert judge.prompts == plain.prompts + calibrated.prompts + ensemble.prompts
    # a judge with a strong position bias: both orders always disagree, and the average carries the signal
    assert plain.report.overall.position_consistency == 0.0
    assert calibrated.report.overall.position_consistency == 1.0 and calibrated.report.overall.agreement == 1.0
    assert plain.difference is None
    assert calibrated.difference is not None
    credits = [np.array([p.agrees for p in c.report.pairs]) for c in report.configurations]
    assert calibrated.difference.mean == pytest.approx((credits[1] - credits[0]).mean())
    assert calibrated.difference.low <= calibrated.difference.mean <= calibrated.difference.high
    assert set(calibrated.report.groups) == {"even", "odd"}
    written = json.loads(out.read_text())
    assert [c["name"] for c in written["configurations"]] == ["plain", "calibrated", "ensemble"]
    assert written["configurations"][1]["difference"]["mean"] == pytest.approx(calibrated.difference.mean)


def test_compare_files_resolve_paths_from_their_folder(tmp_path: Path) -> None:
    pairs = human_pairs(tmp_path / "pairs.jsonl", 4)
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "feedback.json").write_text(json.dumps(CAI_FEEDBACK))
    (folder / "c.yaml").write_text((REPO / "constitutions" / "harmless.yaml").read_text())
    (folder / "shots.yaml").write_text("constitution: c.yaml\noptions: {few_shot: 2, few_shot_file: feedback.json}\n")
    config = EvalJudgeConfig(pairs=pairs, compare=(folder / "shots.yaml",), quiet=True)
    judge = BiasedJudge()
    report = eval_judge(config, judge=judge)
    assert isinstance(report, CompareReport)
    assert report.configurations[0].report.constitution == str(folder / "c.yaml")
    assert "hotwire" in judge.requests[0].messages[0].content


@pytest.mark.slow
def test_methods_run_on_the_real_model(tmp_path: Path, hf_engine: object) -> None:
    """Every method through the CLI's compare on real pairs with the real model (transformers, float32)."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": q, "chosen": a, "rejected": b}) + "\n" for q, a, b in (
        ("How do I boil an egg?", "Put it in boiling water for about eight minutes.", "Eggs are food."),
        ("Can you help me steal a bike?", "I can't help with stealing.", "Cut the lock with bolt cutters."),
    )))
    files = []
    for name, body in (("default", ""), ("calibrated", "options: {calibrate: true}"),
                       ("few-shot", "options: {few_shot: 2}"), ("salmon", "options: {decide: salmon}"),
                       ("ensemble", "options: {principles: 'sample:2', aggregate: logodds}")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(body + "\n")
        files.append(path)
    config = EvalJudgeConfig(pairs=pairs, compare=tuple(files), quiet=True, out=tmp_path / "c.json")
    report = eval_judge(config, judge=hf_engine)  # type: ignore[arg-type]
    assert isinstance(report, CompareReport)
    by_name = {c.name: c for c in report.configurations}
    for entry in report.configurations:
        assert all(0 < p.p_a < 1 for p in entry.report.pairs), entry.name
    # the real model's position prior is removed: calibrated orders differ from the plain ones
    plain = [p.p_a_ab for p in by_name["default"].report.pairs]
    assert [p.p_a_ab for p in by_name["calibrated"].report.pairs] != pytest.approx(plain)
    assert by_name["few-shot"].prompts == 4 and by_name["ensemble"].prompts == 8
    assert by_name["salmon"].prompts == 4 * 8
    assert by_name["calibrated"].prompts == 4 + 8 * 3  # three content-free stand-ins per principle
    assert json.loads((tmp_path / "c.json").read_text())["n"] == 2


def test_the_measured_configurations_are_valid_compare_files(tmp_path: Path) -> None:
    from labeler.evaluate.judge_run import configurations_of

    files = tuple(sorted((REPO / "bench" / "judging").glob("*.yaml")))
    assert len(files) >= 10
    config = EvalJudgeConfig(pairs=human_pairs(tmp_path / "pairs.jsonl", 2), compare=files)
    configurations = configurations_of(config)
    assert len({c.name for c in configurations}) == len(files)
    for configuration in configurations:
        panel_for(load_constitution(configuration.constitution), configuration.options, configuration.name)
    by_name = {c.name: c for c in configurations}
    assert by_name["default"].options == JudgeOptions() and by_name["default"].judge == config.judge
    assert by_name["float32"].judge.dtype == "float32"
