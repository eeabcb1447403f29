"""Trained outputs follow what they were trained on: a training run records its inputs by content, a resume
on inputs that changed under the same path is refused, the same inputs by another path resume, and
`labeler run` retrains (with --overwrite) or refuses (without) a reward model and policy whose inputs changed."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from labeler.core.chat import Message
from labeler.core.errors import InputError
from labeler.core.layout import SAVED_CONFIG, STATE_FILE
from labeler.core.records import PreferenceRecord, conversation_columns, record_id
from labeler.pipeline import run as pipeline
from labeler.store import RunStore
from labeler.train.common.resume import resume_point, start_run
from labeler.train.ppo.config import PPOConfig
from labeler.train.rm.config import RMTrainConfig
from labeler.train.rm.model import REWARD_CARD
from labeler.train.rm.train import train_reward_model

REPO = Path(__file__).resolve().parent.parent
TINY_RM = {"max_steps": 2, "batch_size": 4, "max_length": 48, "eval_fraction": 0.0, "logging_steps": 1,
           "checkpoint_every": 1}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One thread: the machine's cores are shared, and small kernels gain nothing from two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pair(index: int, *, flipped: bool) -> PreferenceRecord:
    """Pair `index`, the response ending in "good" preferred (or, `flipped`, the other one)."""
    prompt, a, b = f"Question {index}?", f"answer {index} good", f"answer {index} bad"
    p_a = 0.1 if flipped else 0.9
    return PreferenceRecord(
        id=record_id(prompt, a, b), **conversation_columns([Message(role="user", content=prompt)], *((b, a) if flipped
        else (a, b))), response_a=a, response_b=b, p_a=p_a, p_a_ab=p_a, p_a_ba=p_a, mass_ab=0.9, mass_ba=0.9,
        logprobs_ab=(-0.1, -2.0), logprobs_ba=(-0.1, -2.0), consistent=True, principle_ids=(), principle_scores=(),
        margin=0.4, judge_model="synthetic", source="synthetic", flags=(),
    )  # fmt: skip


def write_labels(run: Path, *, flipped: bool) -> Path:
    """The run's preference split with these labels, replacing the one there (as `label --overwrite` does)."""
    if (run / "preferences").is_dir():
        shutil.rmtree(run / "preferences")
        (run / "manifest.json").unlink()
    store = RunStore.open(run, "preferences", {"config": {"flipped": flipped}})
    store.write_shard([pair(i, flipped=flipped) for i in range(8)])
    store.mark_complete()
    return run


def saved(out: Path) -> dict[str, Any]:
    return json.loads((out / SAVED_CONFIG).read_text())


def rm_config(run: Path, model: Path, out: Path, **overrides: Any) -> RMTrainConfig:
    return RMTrainConfig.model_validate(
        {"data": (run,), "base_model": str(model), "out": out, "quiet": True, **TINY_RM, **overrides}
    )


# --- train-rm --resume ----------------------------------------------------------------------------------


def test_resume_on_changed_data_is_refused_and_the_same_data_by_another_path_resumes(
    tiny_model: Path, tmp_path: Path
) -> None:
    run = write_labels(tmp_path / "run", flipped=False)
    out = tmp_path / "rm"
    train_reward_model(rm_config(run, tiny_model, out))
    recorded = saved(out)["inputs"]
    assert len(recorded["--data"]) == 64 and len(recorded["--base-model"] or "") in (0, 64)
    assert saved(out)["data"] == [str(run)]  # the config's own keys stay as they were

    # The same split by another path (a link to the run): compared by content, it resumes.
    link = tmp_path / "link"
    link.symlink_to(run)
    train_reward_model(rm_config(link, tiny_model, out, resume=True))
    assert saved(out)["inputs"]["--data"] == recorded["--data"]

    # Other labels under the same path: refused, naming the saved config and the option.
    write_labels(run, flipped=True)
    card = (out / REWARD_CARD).read_bytes()
    with pytest.raises(InputError) as caught:
        train_reward_model(rm_config(run, tiny_model, out, resume=True))
    assert caught.value.file == str(out / SAVED_CONFIG) and "(`data` changed)" in caught.value.render()
    assert "another `out`" in caught.value.render()
    assert (out / REWARD_CARD).read_bytes() == card  # nothing was written


def test_a_run_that_recorded_no_inputs_resumes_as_before(tiny_model: Path, tmp_path: Path) -> None:
    run = write_labels(tmp_path / "run", flipped=False)
    out = tmp_path / "rm"
    train_reward_model(rm_config(run, tiny_model, out))
    older = {key: value for key, value in saved(out).items() if key != "inputs"}
    (out / SAVED_CONFIG).write_text(json.dumps(older))
    write_labels(run, flipped=True)
    train_reward_model(rm_config(run, tiny_model, out, resume=True))  # no record to compare with
    assert "--data" in saved(out)["inputs"]


def test_ppo_records_its_reward_model_and_prompts_by_content(tmp_path: Path) -> None:
    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / REWARD_CARD).write_text('{"steps": 1}\n')
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Hi?"}\n')
    config = PPOConfig(out=tmp_path / "ppo", prompts=prompts, reward_model=str(rm), policy="some/hub-id")
    start_run(config)
    first = saved(config.out)["inputs"]
    assert first["--policy"] is None and len(first["--prompts"]) == 64
    (rm / REWARD_CARD).write_text('{"steps": 2}\n')
    resumed = config.model_copy(update={"resume": True})
    with pytest.raises(InputError, match=r"\(`reward_model` changed\)"):
        resume_point(resumed)


# --- labeler run ------------------------------------------------------------------------------------


def run_config(out: Path, model: Path, *, overwrite: bool, iterations: int | None = None) -> pipeline.RunConfig:
    stages: dict[str, Any] = {"revise": None, "label": None, "report": False,
                              "train_rm": {**TINY_RM, "base_model": str(model)}, "ppo": {"steps": 1,
                              "policy": str(model)}}  # fmt: skip
    extra: dict[str, Any] = {}
    if iterations is not None:
        stages.update(iterations=iterations, label={"pairs": "prompts"})
        extra = {"eval_prompts": REPO / "data/sample_prompts.jsonl", "engine": {"model": str(model)}}
    return pipeline.RunConfig.model_validate({
        "out": out, "constitution": REPO / "constitutions/harmless.yaml", "prompts": REPO / "data/sample_prompts.jsonl",
        "work": {"overwrite": overwrite, "quiet": True}, "stages": stages, **extra,
    })  # fmt: skip


@pytest.fixture
def fake_ppo(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """PPO that records its run and writes its last checkpoint at once; the folders it trained, in order."""
    trained: list[Path] = []

    def train_ppo(config: PPOConfig) -> Path:
        start_run(config)
        checkpoint = config.out / f"checkpoint-{config.steps}"
        checkpoint.mkdir()
        (checkpoint / STATE_FILE).write_text("{}")
        trained.append(config.out)
        return checkpoint

    monkeypatch.setattr("labeler.train.ppo.train.train_ppo", train_ppo)
    return trained


def test_run_with_overwrite_retrains_rm_and_ppo_when_the_labels_changed(
    tiny_model: Path, tmp_path: Path, fake_ppo: list[Path]
) -> None:
    run = write_labels(tmp_path / "run", flipped=False)
    config = run_config(run, tiny_model, overwrite=True)
    pipeline._train_rm(config, 1)
    pipeline._ppo(config, 1)
    card, inputs, ppo_inputs = (run / "rm" / REWARD_CARD).read_bytes(), saved(run / "rm")["inputs"], saved(run / "ppo")

    # The same labels: both are finished on today's inputs and kept.
    pipeline._train_rm(config, 1)
    pipeline._ppo(config, 1)
    assert (run / "rm" / REWARD_CARD).read_bytes() == card and len(fake_ppo) == 1

    # Relabelled: without --overwrite the stale model is refused, up front and at its stage; nothing changes.
    write_labels(run, flipped=True)
    keep = run_config(run, tiny_model, overwrite=False)
    rm = pipeline.train_rm_config(keep, keep.stages.train_rm)
    for attempt in (lambda: pipeline._check_trained(rm, keep), lambda: pipeline._train_rm(keep, 1)):
        with pytest.raises(InputError) as caught:
            attempt()
        message = caught.value.render()  # a run config's terms: its key work.overwrite
        assert caught.value.file == str(run / "rm") and "`data`" in message and "pass `work.overwrite`" in message
    assert (run / "rm" / REWARD_CARD).read_bytes() == card

    # With --overwrite: the reward model is trained again on the new labels, and the policy after it.
    pipeline._check_trained(rm, config)
    pipeline._train_rm(config, 1)
    assert saved(run / "rm")["inputs"]["--data"] != inputs["--data"]
    assert (run / "rm" / REWARD_CARD).read_bytes() != card
    pipeline._ppo(config, 1)
    assert len(fake_ppo) == 2
    assert saved(run / "ppo")["inputs"]["--reward-model"] != ppo_inputs["inputs"]["--reward-model"]


def test_a_stale_reward_model_goes_with_all_made_from_it_never_through_a_link(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    run = tmp_path / "run"
    config = run_config(run, model, overwrite=True, iterations=2)
    first, second = run / "iter-1", run / "iter-2"
    for folder in (first / "rm", second / "rm"):
        folder.mkdir(parents=True)
    (first / "eval-policy.json").write_text("{}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("x")
    (first / "ppo").symlink_to(elsewhere)

    pipeline._remove_trained_from(config, 1, first / "rm")
    assert not second.exists() and not (first / "eval-policy.json").exists()
    assert not (first / "ppo").is_symlink() and not (first / "rm").exists()
    assert (elsewhere / "keep.txt").read_text() == "x"  # the link was removed, not what it points to
