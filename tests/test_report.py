"""`labeler report`: plots exist and are real images, the page's numbers match the shards, skips are said,
bad runs exit 2, and the report folder is replaced whole."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from labeler.cli.app import main
from labeler.core.chat import Message
from labeler.core.records import (
    FLAG_LOW_MASS,
    FLAG_ORDER_FLIP,
    PreferenceRecord,
    PrincipleScore,
    RevisionRound,
    SFTRecord,
    conversation_columns,
    record_id,
)
from labeler.core.soft_label import aggregate, judgment
from labeler.evaluate.human_agreement import expected_calibration_error
from labeler.report import write_report
from labeler.report.human_agreement import calibration
from labeler.store import RunStore, make_fingerprint
from labeler.store.manifest import new_manifest, write_manifest

PRINCIPLES = ("harm-general", "honesty", "helpfulness")
WORDS = "the a model answer careful safe honest helpful reply question user explain risk detail clear".split()
PREFERENCE_PNGS = ("p_a_histogram.png", "order_scatter.png", "label_rates.png")
PRINCIPLE_PNGS = ("principle_scores.png", "principle_correlation.png")
SFT_PNGS = ("sft_lengths.png", "sft_rounds.png")


# --- a synthetic run --------------------------------------------------------------------------


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _order_logprobs(rng: random.Random, first_better: float, position: float) -> tuple[float, float]:
    """[log P("A"), log P("B")] of a judge that weighs content and the first slot, with some mass elsewhere."""
    p_first = 1 / (1 + math.exp(-(first_better + position)))
    mass = rng.uniform(0.05, 1.0)
    return math.log(mass * p_first), math.log(mass * (1 - p_first))


def preference_records(rng: random.Random, n: int) -> list[PreferenceRecord]:
    """Pairs judged under the 3 principles (some under 2), with position bias, order flips and low mass."""
    records = []
    for i in range(n):
        prompt = f"question {i}: {_text(rng, 3, 8)}?"
        response_a, response_b = _text(rng, 5, 30), _text(rng, 5, 30)
        quality = rng.gauss(0, 1.5)  # how much better response_a is; shared, so principles correlate
        principles = PRINCIPLES if rng.random() < 0.8 else PRINCIPLES[:2]
        judgments = []
        for _ in principles:
            content = quality + rng.gauss(0, 0.7)
            position = rng.gauss(0.8, 0.5)
            judgments.append(
                judgment(_order_logprobs(rng, content, position), _order_logprobs(rng, -content, position))
            )
        label = aggregate(judgments, low_mass=0.3)
        chosen, rejected = (response_a, response_b) if label.a_wins else (response_b, response_a)
        records.append(
            PreferenceRecord(
                id=record_id(prompt, response_a, response_b),
                **conversation_columns((Message(role="user", content=prompt),), chosen, rejected),
                response_a=response_a,
                response_b=response_b,
                p_a=label.p_a,
                p_a_ab=label.p_a_ab,
                p_a_ba=label.p_a_ba,
                mass_ab=label.mass_ab,
                mass_ba=label.mass_ba,
                logprobs_ab=label.logprobs_ab,
                logprobs_ba=label.logprobs_ba,
                consistent=label.consistent,
                principle_ids=principles,
                principle_scores=tuple(
                    PrincipleScore(principle_id=p, score=j.score) for p, j in zip(principles, judgments, strict=True)
                ),
                margin=label.margin,
                judge_model="judge",
                source="two-samples",
                flags=label.flags,
            )
        )
    return records


def sft_records(rng: random.Random, n: int) -> list[SFTRecord]:
    records = []
    for i in range(n):
        prompt = f"task {i}: {_text(rng, 3, 8)}"
        initial = _text(rng, 10, 40)
        rounds = tuple(
            RevisionRound(principle_id=rng.choice(PRINCIPLES), critique=_text(rng, 5, 15), revision=_text(rng, 8, 50))
            for _ in range(rng.randint(0, 3))
        )
        revision = rounds[-1].revision if rounds else initial
        messages = (Message(role="user", content=prompt),)
        records.append(
            SFTRecord(
                id=record_id(prompt),
                prompt=prompt,
                prompt_messages=messages,
                initial=initial,
                revision=revision,
                rounds=rounds,
                messages=(*messages, Message(role="assistant", content=revision)),
                model="policy",
            )
        )
    return records


def _fingerprint(stage: str) -> dict:
    return make_fingerprint(
        config={"stage": stage},
        models={"judge": "judge"},
        constitution_sha256="c" * 64,
        template_sha256s={"judge.jinja": "t" * 64},
        seed=0,
    )


def write_split(run_dir: Path, split: str, records: list) -> None:
    store = RunStore.open(run_dir, split, _fingerprint(split))
    half = len(records) // 2
    store.write_shard(records[:half])  # two shards: the report must read across shards
    store.write_shard(records[half:])
    store.mark_complete()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run with both splits, a reward-model log, human-labelled pairs and eval-judge results; reported once."""
    rng = random.Random(1234)
    root = tmp_path_factory.mktemp("report")
    run_dir = root / "run"
    preferences = preference_records(rng, 160)
    sft = sft_records(rng, 60)
    write_split(run_dir, "preferences", preferences)
    write_split(run_dir, "sft", sft)

    # a reward model trained into RUN/rm, its log cut short by a trainer still writing
    (run_dir / "rm").mkdir()
    lines = []
    for step in range(10, 110, 10):
        train = {"loss": 0.7 - step / 400, "accuracy": 0.5 + step / 400, "margin": step / 100, "lr": 1e-5}
        lines.append(json.dumps({"step": step, "split": "train", **train}))
        if step % 50 == 0:
            evaluation = {"loss": 0.72 - step / 500, "accuracy": 0.5 + step / 500, "margin": step / 120, "pairs": 16}
            lines.append(json.dumps({"step": step, "split": "eval", **evaluation}))
    (run_dir / "rm" / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 110, "spl', encoding="utf-8")
    # a second reward model given with --rm, logging eval_* keys in the training rows
    other_rm = root / "rm-hard"
    other_rm.mkdir()
    other_rows = [
        {"step": s, "loss": 0.69 - s / 300, "eval_loss": 0.7 - s / 350, "eval_accuracy": 0.55} for s in (5, 10, 15)
    ]
    (other_rm / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other_rows), encoding="utf-8")

    # human labels: 30 pairs of the split (half listed in the other order) and 5 the run never judged
    human_rows, expected_p_chosen = [], []
    for record in preferences[:30]:
        human_a = rng.random() < 0.5
        chosen, rejected = (record.response_a, record.response_b) if human_a else (record.response_b, record.response_a)
        human_rows.append({"prompt": record.prompt_text, "chosen": chosen, "rejected": rejected})
        expected_p_chosen.append(record.p_a if human_a else 1 - record.p_a)
    human_rows += [{"prompt": f"unseen {k}", "chosen": "x", "rejected": "y"} for k in range(5)]
    human_file = root / "human.jsonl"
    human_file.write_text("".join(json.dumps(r) + "\n" for r in human_rows), encoding="utf-8")

    judge_p = [rng.uniform(0, 1) for _ in range(40)]
    judge_file = root / "judge.json"
    judge_file.write_text(json.dumps({"agreement": 0.61, "pairs": [{"p_chosen": p} for p in judge_p]}))

    index = write_report(run_dir, human_pairs=human_file, rm_dirs=[other_rm], judge=judge_file)
    return {
        "run": run_dir,
        "index": index,
        "preferences": preferences,
        "sft": sft,
        "human_p_chosen": expected_p_chosen,
        "judge_p": judge_p,
    }


# --- reading the page back --------------------------------------------------------------------


def page_tables(markdown: str) -> list[list[list[str]]]:
    """Every Markdown table of the page as rows of cells (header first, alignment row dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(re.fullmatch(r"-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def statistic_values(markdown: str) -> dict[str, str]:
    """label → value of every two-column table row; a label must not appear twice."""
    values: dict[str, str] = {}
    for table in page_tables(markdown):
        for row in table[1:]:
            if len(row) == 2:
                assert row[0] not in values, f"label {row[0]!r} appears twice on the page"
                values[row[0]] = row[1]
    return values


def assert_shown(values: dict[str, str], label: str, expected: float) -> None:
    shown = values[label]
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    assert float(shown) == pytest.approx(expected, abs=0.51 * 10**-decimals), label


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path.name
    assert len(data) > 1024, path.name
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 400, (path.name, image.shape)
    assert image[..., :3].std() > 0.01, f"{path.name} is a blank image"


# --- tests ------------------------------------------------------------------------------------


def test_every_plot_is_a_real_png_and_the_html_is_self_contained(full_run: dict):
    report = full_run["run"] / "report"
    assert full_run["index"] == report / "index.html"
    expected = {*PREFERENCE_PNGS, *PRINCIPLE_PNGS, *SFT_PNGS, "rm_curves.png", "calibration_human.png",
                "calibration_eval_judge.png"}
    assert {p.name for p in report.glob("*.png")} == expected
    for name in expected:
        assert_png(report / name)

    page_html = (report / "index.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', page_html)
    assert sorted(sources) == sorted(expected)
    assert not re.search(r"(src|href)=\"(https?:)?//", page_html), "the page must not load anything from outside"
    assert "<link" not in page_html and "<script" not in page_html
    markdown = (report / "index.md").read_text(encoding="utf-8")
    figure_table = next(table for table in page_tables(markdown) if table[0] == ["figure", "file"])
    figure_files = [row[1].strip("`") for row in figure_table[1:]]
    assert sorted(figure_files) == sorted(expected)
    assert json.loads((report / "statistics.json").read_text())["figures"] == figure_files


def test_page_numbers_equal_those_computed_from_the_records(full_run: dict):
    markdown = (full_run["run"] / "report" / "index.md").read_text(encoding="utf-8")
    values = statistic_values(markdown)
    prefs: list[PreferenceRecord] = full_run["preferences"]
    n = len(prefs)

    assert int(values["preference pairs"]) == n
    assert_shown(values, "mean p_a", sum(r.p_a for r in prefs) / n)
    assert_shown(values, "consistency rate (both orders agree)", sum(r.consistent for r in prefs) / n)
    flips = sum(FLAG_ORDER_FLIP in r.flags for r in prefs) / n
    assert_shown(values, f"order-flip rate (`{FLAG_ORDER_FLIP}` flag)", flips)
    assert_shown(values, f"low-mass rate (`{FLAG_LOW_MASS}` flag)", sum(FLAG_LOW_MASS in r.flags for r in prefs) / n)
    assert_shown(values, "mean mass on the two choice tokens", sum((r.mass_ab + r.mass_ba) / 2 for r in prefs) / n)
    assert_shown(values, "chosen is response_a (rate)", sum(r.chosen_text == r.response_a for r in prefs) / n)
    first_shown = sum((r.p_a_ab + 1 - r.p_a_ba) / 2 for r in prefs) / n
    assert_shown(values, "mean probability on the response shown first (0.5: no position bias)", first_shown)
    # the synthetic judge favours the first slot, so the page must show position bias, and real flips and low mass
    assert first_shown > 0.55
    assert 0 < float(values[f"low-mass rate (`{FLAG_LOW_MASS}` flag)"]) < 1
    assert 0 < float(values["consistency rate (both orders agree)"]) < 1

    histogram = [sum(min(int(r.p_a * 10), 9) == k for r in prefs) for k in range(10)]
    shown_histogram = [int(values[f"[{k / 10:.1f}, {(k + 1) / 10:.1f}{']' if k == 9 else ')'}"]) for k in range(10)]
    assert shown_histogram == histogram

    principle_rows = {row[0].strip("`"): row for table in page_tables(markdown) if table[0][0] == "principle"
                      and len(table[0]) == 5 for row in table[1:]}
    assert set(principle_rows) == set(PRINCIPLES)
    for principle in PRINCIPLES:
        scores = [s.score for r in prefs for s in r.principle_scores if s.principle_id == principle]
        _, pairs, mean, std, favours_a = principle_rows[principle]
        assert int(pairs) == len(scores)
        assert float(mean) == pytest.approx(np.mean(scores), abs=6e-5)
        assert float(std) == pytest.approx(np.std(scores), abs=6e-5)
        assert float(favours_a) == pytest.approx(np.mean([s > 0 for s in scores]), abs=6e-5)

    sft: list[SFTRecord] = full_run["sft"]
    m = len(sft)
    assert int(values["SFT records"]) == m
    assert_shown(values, "mean critique-and-revise rounds", sum(len(r.rounds) for r in sft) / m)
    assert_shown(values, "revised rate (final differs from initial)", sum(r.revision != r.initial for r in sft) / m)
    assert_shown(values, "mean initial response length (chars)", sum(len(r.initial) for r in sft) / m)
    assert_shown(values, "mean final revision length (chars)", sum(len(r.revision) for r in sft) / m)
    assert_shown(values, "mean prompt length (chars)", sum(len(r.prompt) for r in sft) / m)
    for principle in PRINCIPLES:
        used = sum(rnd.principle_id == principle for r in sft for rnd in r.rounds)
        assert int(values[f"`{principle}`"]) == used


def test_calibration_matches_human_pairs_in_either_order(full_run: dict):
    markdown = (full_run["run"] / "report" / "index.md").read_text(encoding="utf-8")
    assert "30 of the 35 pairs" in markdown
    table = next(t for t in page_tables(markdown) if t[0][0] == "statistic" and len(t[0]) == 3)
    assert table[0][1:] == ["human labels", "eval-judge"]
    rows = {row[0]: row[1:] for row in table[1:]}
    human, judge = np.array(full_run["human_p_chosen"]), np.array(full_run["judge_p"])
    assert rows["calibration pairs"] == [str(len(human)), str(len(judge))]
    for column, p in enumerate((human, judge)):
        agreement = np.mean([1.0 if x > 0.5 else 0.5 if x == 0.5 else 0.0 for x in p])
        assert float(rows["agreement with humans"][column]) == pytest.approx(agreement, abs=6e-5)
        assert float(rows["Brier score"][column]) == pytest.approx(np.mean((1 - p) ** 2), abs=6e-5)
    assert statistic_values(markdown)["`agreement`"] == "0.6100"  # the eval-judge file's own summary number
    # the eval-judge file travels with the report, so the next report finds it without the option
    assert json.loads((full_run["run"] / "report" / "eval_judge.json").read_text())["agreement"] == 0.61


def test_reward_model_logs_are_read_defensively(full_run: dict):
    markdown = (full_run["run"] / "report" / "index.md").read_text(encoding="utf-8")
    assert "1 unreadable line(s) left out (line 13)" in markdown
    table = next(t for t in page_tables(markdown) if t[0][0] == "model")
    rows = {row[0]: row for row in table[1:]}
    assert set(rows) == {"rm", "rm-hard"}
    assert rows["rm"][1:4] == ["10", "100", f"{0.7 - 100 / 400:.4f}"]
    assert rows["rm"][6] == f"{0.5 + 100 / 500:.4f}"  # last eval accuracy, from "split": "eval" rows
    assert rows["rm-hard"][5:7] == [f"{0.7 - 15 / 350:.4f}", "0.5500"]  # from eval_* keys


def test_report_of_a_run_with_only_preferences_says_what_it_skipped(tmp_path: Path):
    run_dir = tmp_path / "run"
    write_split(run_dir, "preferences", preference_records(random.Random(7), 40))
    index = write_report(run_dir)
    report = run_dir / "report"
    assert {p.name for p in report.glob("*.png")} == {*PREFERENCE_PNGS, *PRINCIPLE_PNGS}
    for name in (*PREFERENCE_PNGS, *PRINCIPLE_PNGS):
        assert_png(report / name)
    markdown = (report / "index.md").read_text(encoding="utf-8")
    skipped = {row[0]: row[1] for t in page_tables(markdown) if t[0] == ["plot", "reason"] for row in t[1:]}
    assert skipped["SFT response lengths"] == "the run has no sft split"
    assert skipped["SFT rounds and principle usage"] == "the run has no sft split"
    assert "no reward-model metrics" in skipped["reward-model training curves"]
    assert "Plot skipped (SFT response lengths): the run has no sft split." in index.read_text(encoding="utf-8")
    assert "SFT records" not in statistic_values(markdown)


def test_rewriting_replaces_the_whole_report_and_keeps_eval_judge(full_run: dict, tmp_path: Path):
    run_dir = tmp_path / "run"
    RunStore.open(run_dir, "sft", _fingerprint("sft")).mark_complete()  # no rows, so no plot but calibration
    (run_dir / "report").mkdir()
    (run_dir / "report" / "stale.png").write_bytes(b"old")
    (run_dir / "report" / "eval_judge.json").write_text(json.dumps({"pairs": [{"p_chosen": 0.9}, {"p_chosen": 0.2}]}))
    write_report(run_dir)
    report = run_dir / "report"
    assert not (report / "stale.png").exists()
    assert (report / "calibration_eval_judge.png").is_file()
    assert json.loads((report / "eval_judge.json").read_text())["pairs"][0]["p_chosen"] == 0.9
    leftovers = [p.name for p in run_dir.iterdir() if p.name.startswith(".report.") and p.name != ".report.lock"]
    assert leftovers == []

    # eval-judge results of another layout (no per-pair p_chosen) still give their numbers, without a diagram
    other_layout = {"pairs": 12, "agreement": 0.75, "groups": {"helpful": {"agreement": 0.8}}}
    (report / "eval_judge.json").write_text(json.dumps(other_layout))
    write_report(run_dir)
    values = statistic_values((report / "index.md").read_text(encoding="utf-8"))
    assert values["`pairs`"] == "12" and values["`groups.helpful.agreement`"] == "0.8000"
    assert not (report / "calibration_eval_judge.png").exists()
    assert "lists no pairs with `p_chosen`" in (report / "index.md").read_text(encoding="utf-8")


def test_cli_on_a_run_with_only_sft_prints_the_index(full_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture):
    run_dir = tmp_path / "run"
    write_split(run_dir, "sft", full_run["sft"][:10])
    human_file = tmp_path / "human.jsonl"
    human_file.write_text(json.dumps({"prompt": "p", "chosen": "x", "rejected": "y"}) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["report", str(run_dir), "--human-pairs", str(human_file)])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "report" / "index.html")
    report = run_dir / "report"
    assert {p.name for p in report.glob("*.png")} == set(SFT_PNGS)
    markdown = (report / "index.md").read_text(encoding="utf-8")
    assert "Plot skipped (p_a histogram): the run has no preferences split." in markdown
    assert "Plot skipped (calibration against human labels): the run has no preferences split" in markdown


def test_bad_runs_and_missing_files_exit_2(full_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture):
    run_dir = tmp_path / "run"
    RunStore.open(run_dir, "sft", _fingerprint("sft")).mark_complete()

    empty = tmp_path / "empty"
    empty.mkdir()
    no_splits = tmp_path / "no-splits"
    no_splits.mkdir()
    write_manifest(no_splits, new_manifest())
    for bad in (tmp_path / "missing", empty, no_splits):
        with pytest.raises(SystemExit) as info:
            main(["report", str(bad)])
        assert info.value.code == 2, bad
        assert str(bad) in capsys.readouterr().err
        assert not (bad / "report").exists()

    missing_files = (["--rm", "no-rm"], ["--eval-judge", "no.json"], ["--human-pairs", "no.jsonl"])
    for option, name in missing_files:
        args = [option, str(tmp_path / name)]
        with pytest.raises(SystemExit) as info:
            main(["report", str(run_dir), *args])
        assert info.value.code == 2, args
        assert name in capsys.readouterr().err
    bad_judge = tmp_path / "judge.json"
    bad_judge.write_text(json.dumps({"pairs": [{"p_chosen": 1.5}]}))
    with pytest.raises(SystemExit) as info:
        main(["report", str(run_dir), "--eval-judge", str(bad_judge)])
    assert info.value.code == 2
    assert "pairs[0]" in capsys.readouterr().err


def test_calibration_math_against_a_slow_reference():
    """The report's calibration is eval-judge's: confidence bins on [0.5, 1], checked one pair at a time."""
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0, 1, 200), [0.0, 0.5, 1.0]])
    result = calibration(p, "test")
    # slow, obvious: each pair's confidence max(p, 1 - p) and whether the judge sided with the human
    points = [(max(x, 1 - x), 1.0 if x > 0.5 else 0.5 if x == 0.5 else 0.0) for x in p]
    gaps = 0.0
    for k in range(10):
        members = [(c, y) for c, y in points if min(int((c - 0.5) * 20), 9) == k]
        if members:
            accuracy = sum(y for _, y in members) / len(members)
            mean_confidence = sum(c for c, _ in members) / len(members)
            gaps += len(members) * abs(accuracy - mean_confidence)
    assert result.ece == pytest.approx(gaps / len(points))
    assert sum(b.count for b in result.bins) == len(p)
    assert result.brier == pytest.approx(sum((1 - x) ** 2 for x in p) / len(p))
    assert result.ece == expected_calibration_error(p, np.ones(len(p), dtype=bool))  # eval-judge's own number
