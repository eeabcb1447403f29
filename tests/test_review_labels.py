"""Human labels added with `labeler review` at work: `eval-judge --human RUN` measures the run's judge on
exactly those pairs (with inter-annotator agreement), `export --prefer-human` trains on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sample_runs import make_review_run, review_pair

from labeler.cli.app import main
from labeler.core.records import PreferenceRecord
from labeler.evaluate.human_run import human_run_report
from labeler.evaluate.judge_report import judge_metrics
from labeler.evaluate.stats import wilson_interval
from labeler.store.human import append_label, new_label
from labeler.store.readers import read_split

PAIRS = 24


def _cli(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code in (0, None)


def _label(run: Path, who: str, choices: dict[int, str]) -> None:
    for i, choice in choices.items():
        append_label(run, new_label(review_pair(i).id, who, choice))


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    run = make_review_run(tmp_path, PAIRS)
    _label(run, "ana", {0: "B", 1: "A", 2: "A", 3: "B", 6: "A", 7: "tie", 8: "skip"})
    _label(run, "ana", {0: "A"})  # changed her mind: the last record counts
    _label(run, "bo", {1: "A", 2: "B", 3: "B", 7: "tie", 9: "B"})
    return run


def test_eval_judge_measures_the_runs_judge_on_exactly_the_labelled_pairs(labelled: Path, capsys, tmp_path) -> None:
    out = tmp_path / "human.json"
    _cli(["eval-judge", "--human", str(labelled), "--out", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    # Sides: 0 A (ana), 1 A (both), 2 split (A vs B: left out), 3 B (both), 6 A, 9 B; 7 only ties, 8 only a skip.
    sides = {0: True, 1: True, 3: False, 6: True, 9: False}
    pairs = [review_pair(i) for i in sorted(sides)]
    expected = judge_metrics(
        np.array([p.p_a_ab for p in pairs]),
        np.array([p.p_a_ba for p in pairs]),
        np.array([(p.mass_ab + p.mass_ba) / 2 for p in pairs]),
        np.array(list(sides.values())),
    )
    assert report["measured_pairs"] == 5 and report["overall"] == expected.model_dump()
    assert (report["labelled_pairs"], report["ties"], report["skipped"], report["split"]) == (8, 1, 1, 1)
    assert report["annotators"] == ["ana", "bo"] and report["per_annotator"]["bo"]["n"] == 4
    # Two people on pairs 1, 2, 3, 7: the same choice on 1, 3 and 7, not on 2.
    inter = report["inter_annotator"]
    assert (inter["pairs"], inter["comparisons"], inter["agreement"]) == (4, 4, 0.75)
    assert (inter["agreement_low"], inter["agreement_high"]) == pytest.approx(wilson_interval(3, 4, z=1.959964))
    assert "inter-annotator agreement" in printed and "75.0%" in printed
    # --pairs RUN/human means the same.
    _cli(["eval-judge", "--pairs", str(labelled / "human"), "--out", str(out)])
    assert json.loads(out.read_text())["overall"] == expected.model_dump()


def test_a_run_without_human_labels_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no human labels") as refused:
        human_run_report(make_review_run(tmp_path, 4))
    assert getattr(refused.value, "field", None) == "human"


def test_export_prefer_human_uses_peoples_side_and_says_how_many(labelled: Path, capsys, tmp_path: Path) -> None:
    out = tmp_path / "export"
    _cli(["export", str(labelled), "--out", str(out), "--prefer-human"])
    assert "5 rows labelled by people" in capsys.readouterr().out
    rows = {row["id"]: row for row in read_split(out, "preferences").to_pylist()}
    assert len(rows) == PAIRS
    zero, two, three = (rows[review_pair(i).id] for i in (0, 2, 3))
    assert zero["chosen_text"] == review_pair(0).response_a and zero["p_a"] == 1.0 and "human_label" in zero["flags"]
    assert three["chosen_text"] == review_pair(3).response_b and three["p_a"] == 0.0 and three["margin"] == 1.0
    assert three["p_a_ab"] == review_pair(3).p_a_ab  # the judge's own numbers stay
    assert PreferenceRecord.from_row(two) == review_pair(2)  # annotators split: the judge's label stays
    assert sum("human_label" in row["flags"] for row in rows.values()) == 5
    card = (out / "README.md").read_text()
    assert "**Human labels:** 5 of the 24 preferences rows" in card
    assert json.loads((out / "manifest.json").read_text())["export"]["splits"]["preferences"]["human_labels"] == 5
