"""The output check every command makes (`labeler.core.outputs.check_outputs`): what it lets through, which the
bad-input table cannot show (that table holds the refusals), and the layouts the pipeline relies on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeler.core.errors import InputError
from labeler.core.outputs import check_outputs
from labeler.train.common.config import SEED_BOUND
from labeler.train.rm.config import RMTrainConfig


def _run(folder: Path) -> Path:
    """A folder that is a labeler run as far as the check looks: it has a manifest."""
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    return folder


def test_label_may_write_the_preference_split_into_the_revise_run_it_reads(tmp_path: Path) -> None:
    # `label --pairs-from RUN --out RUN` (the pipeline's revise -> label): another split of the same run.
    run = _run(tmp_path / "run")
    check_outputs(run, "run", {"--pairs-from": run}, same_run=run)
    with pytest.raises(InputError, match="--pairs-from"):
        check_outputs(run, "run", {"--pairs-from": run})  # without it, an input run is no output
    with pytest.raises(InputError, match="--pairs-from"):
        check_outputs(run, "training", {"--pairs-from": run}, same_run=run)  # only a split-writer shares a run


def test_outputs_inside_an_input_run_are_the_pipeline_layout(tmp_path: Path) -> None:
    # RUN/rm trained on RUN, RUN/iter-1 labelled from RUN's revise split: beside the run's own folders.
    run = _run(tmp_path / "run")
    check_outputs(run / "rm", "training", {"--data": (run,)})
    check_outputs(run / "iter-1", "run", {"--pairs-from": run}, same_run=run)
    for reserved in ("sft", "preferences", "report"):
        with pytest.raises(InputError, match=f"inside .*{reserved}"):
            check_outputs(run / reserved / "rm", "training", {"--data": (run,)})


def test_labeler_own_hidden_files_leave_a_folder_empty(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in (".lock", ".manifest.lock", ".manifest.json.123-abcd.partial"):
        (out / name).write_text("")
    check_outputs(out, "run")
    check_outputs(out, "training")
    (out / ".git").mkdir()  # someone else's hidden folder: not labeler's
    with pytest.raises(InputError, match=r"not empty \(\.git\)"):
        check_outputs(out, "run")


def test_a_folder_of_its_own_kind_is_accepted(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    (run / "preferences").mkdir()
    check_outputs(run, "run")  # a rerun resumes (the store checks its fingerprint)
    trained = tmp_path / "rm"
    trained.mkdir()
    (trained / "training-config.json").write_text("{}")
    check_outputs(trained, "training")  # the trainer refuses it without --resume, with its own message
    with pytest.raises(InputError, match="no manifest.json"):
        check_outputs(trained, "run")
    with pytest.raises(InputError, match="no training run"):
        check_outputs(run, "training")


def test_a_file_output_may_replace_an_earlier_output_but_never_an_input(tmp_path: Path) -> None:
    report, pairs = tmp_path / "report.json", tmp_path / "pairs.jsonl"
    report.write_text("{}")
    pairs.write_text("{}\n")
    check_outputs(report, "file", {"--pairs": pairs})
    with pytest.raises(InputError, match="--pairs"):
        check_outputs(tmp_path / "." / "pairs.jsonl", "file", {"--pairs": pairs})


def test_model_arguments_that_are_no_paths_are_no_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    check_outputs(tmp_path / "default", "run", {"--model": "default", "--judge-model": "org/name"})


def test_scratch_space_under_dev_shm_is_writable_but_not_dev_itself(tmp_path: Path) -> None:
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm on this machine")
    check_outputs(Path("/dev/shm/labeler-test-not-created"), "run")
    with pytest.raises(InputError, match="/dev"):
        check_outputs(Path("/dev/labeler-test-not-created"), "run")


def test_check_outputs_writes_nothing(tmp_path: Path) -> None:
    check_outputs(tmp_path / "a" / "b" / "run", "run")
    check_outputs(tmp_path / "c" / "answers.jsonl", "file")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seed", [-1, SEED_BOUND, 2**70])
def test_training_seeds_outside_what_numpy_and_torch_take_are_refused(seed: int, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        RMTrainConfig(data=(tmp_path,), out=tmp_path / "rm", seed=seed)
    assert RMTrainConfig(data=(tmp_path,), out=tmp_path / "rm", seed=SEED_BOUND - 1).seed == SEED_BOUND - 1


def test_train_rm_input_paths_name_the_options(tmp_path: Path) -> None:
    config = RMTrainConfig(data=(tmp_path / "a", tmp_path / "b"), out=tmp_path / "rm", base_model="default")
    assert json.loads(json.dumps({k: str(v) for k, v in config.input_paths().items()})).keys() == {
        "--data", "--base-model", "--constitution"
    }
