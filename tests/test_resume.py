"""Crash safety end to end: kill -9 real runs at seeded random points and run the same command again
until it succeeds. The finished dataset must hold every record exactly once and equal the records
of an uninterrupted run, exactly: the hf engine seeds every request, and a resumed run cuts its
batches where the killed one did (one shard per batch), so even the floats are the same.

A fast tier does the same in-process with the scripted fake engine, dying at every engine call.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_engine import FakeEngine

from labeler.core.errors import InputError
from labeler.engine import Conversation, Generation, GenerationParams
from labeler.inputs.rows import read_prompts
from labeler.stages.common import WorkSelection
from labeler.stages.label import LabelConfig, label
from labeler.stages.revise import ReviseConfig, revise
from labeler.store import RunStore, iter_records, load_manifest, read_split
from labeler.store.atomic import temp_path_for

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions/harmless.yaml"
PROMPTS = REPO / "data/sample_prompts.jsonl"
LIMIT = 8
BATCH = 2  # LIMIT / BATCH = 4 shards per split
KILL_SEED = 1121
TIMEOUT = 600  # seconds for one command; several share two cores here


class Crash(BaseException):
    """Stands for kill -9 in-process: not an Exception, so nothing on the way up handles it."""


class CrashingEngine(FakeEngine):
    """The fake engine, dying at its `calls`-th engine call."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls_left = calls

    def _tick(self) -> None:
        self.calls_left -= 1
        if self.calls_left <= 0:
            raise Crash

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams,
                 seeds: Sequence[int] | None = None) -> list[Generation]:
        self._tick()
        return super().generate(conversations, params, seeds)

    def choice_logprobs(self, requests, choices):  # type: ignore[no-untyped-def]
        self._tick()
        return super().choice_logprobs(requests, choices)


def test_stages_resume_after_dying_at_any_engine_call(tmp_path: Path) -> None:
    """revise, then label, die at each engine call in turn; each rerun finishes the same dataset."""

    def revise_config(out: Path) -> ReviseConfig:
        return ReviseConfig(constitution=HARMLESS, prompts=PROMPTS, out=out, rounds=2, seed=7,
                            work=WorkSelection(batch_size=5, quiet=True))

    def label_config(out: Path) -> LabelConfig:
        return LabelConfig(constitution=HARMLESS, pairs_from=out, out=out, work=WorkSelection(batch_size=5, quiet=True))

    reference = tmp_path / "reference"
    revise(revise_config(reference), engine=FakeEngine())
    label(label_config(reference), judge=FakeEngine())
    # 12 prompts in batches of 5: three batches of five calls (initial, 2 x critique, 2 x revision).
    for calls in range(1, 16):
        run = tmp_path / f"revise-{calls}"
        with pytest.raises(Crash):
            revise(revise_config(run), engine=CrashingEngine(calls))
        assert revise(revise_config(run), engine=FakeEngine()).written == 12 - 5 * ((calls - 1) // 5)
        assert records_by_id(run, "sft") == records_by_id(reference, "sft")
    # Three batches of pairs, one judging call each.
    for calls in range(1, 4):
        run = tmp_path / f"label-{calls}"
        shutil.copytree(reference / "sft", run / "sft")
        shutil.copy(reference / "manifest.json", run / "manifest.json")
        _drop_split(run, "preferences")
        with pytest.raises(Crash):
            label(label_config(run), judge=CrashingEngine(calls))
        label(label_config(run), judge=FakeEngine())
        assert records_by_id(run, "preferences") == records_by_id(reference, "preferences")


def _drop_split(run: Path, split: str) -> None:
    """Leave a run's manifest as if `split` had never been started."""
    manifest = load_manifest(run)
    splits = {name: entry for name, entry in manifest.splits.items() if name != split}
    (run / "manifest.json").write_text(manifest.model_copy(update={"splits": splits}).model_dump_json())


def test_a_manifest_write_cut_short_is_removed_on_reopen(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path, "sft", {"config": {"n": 1}})
    store.mark_complete()
    leftover = temp_path_for(tmp_path / "manifest.json")
    leftover.write_text('{"splits": {')  # what a kill halfway through the write leaves
    RunStore.open(tmp_path, "sft", {"config": {"n": 1}})
    assert not leftover.exists()
    assert load_manifest(tmp_path).splits["sft"].status == "complete"


def cli_env() -> dict[str, str]:
    # Passive OpenMP waiting: two runs share two cores here, and spinning threads starve each other.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_WAIT_POLICY": "PASSIVE"}


def revise_command(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "labeler", "revise", "--constitution", str(HARMLESS), "--prompts", str(PROMPTS),
        "--out", str(out), "--engine", "hf", "--model", str(model), "--dtype", "float32", "--limit", str(LIMIT),
        "--batch-size", str(BATCH), "--rounds", "1", "--max-tokens", "16", "--quiet", *extra,
    ]


def label_command(model: Path, out: Path) -> list[str]:
    """Judge the run's own revision pairs (initial vs final revision) into the same run folder."""
    return [
        sys.executable, "-m", "labeler", "label", "--constitution", str(HARMLESS), "--pairs-from", str(out),
        "--out", str(out), "--engine", "hf", "--judge-model", str(model), "--dtype", "float32",
        "--batch-size", str(BATCH), "--quiet",
    ]


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """The command in its own process group, so that a kill reaches everything it started."""
    with open(log, "ab") as handle:
        return subprocess.Popen(command, cwd=REPO, env=cli_env(), stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)


def finish(process: subprocess.Popen[bytes], log: Path) -> None:
    assert process.wait(timeout=TIMEOUT) == 0, log.read_text()[-3000:]


def shard_files(run: Path, split: str) -> list[Path]:
    return sorted((run / split).glob("shard-*.arrow"))


def kill_at(process: subprocess.Popen[bytes], run: Path, split: str, shards: int, delay: float) -> bool:
    """SIGKILL the process group `delay` s after `shards` shard files exist; False if it ended first."""
    deadline = time.monotonic() + TIMEOUT
    while len(shard_files(run, split)) < shards:
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"no {shards} shards in {run / split} after {TIMEOUT} s"
        time.sleep(0.02)
    time.sleep(delay)
    if process.poll() is not None:
        return False
    os.killpg(process.pid, signal.SIGKILL)
    return process.wait(timeout=60) == -signal.SIGKILL


def run_with_kills(
    command: list[str], run: Path, split: str, plan: list[tuple[int, float]], log: Path, rows: int | None = None
) -> int:
    """Run `command`, killing it at each (shards, delay) of `plan` and starting it again; then let it finish.

    Returns how many kills landed. After each, a split that is not finished (fewer than `rows`
    records, when known) must say so, and reading it as a dataset must fail.
    """
    kills = 0
    for shards, delay in plan:
        process = start(command, log)
        if not kill_at(process, run, split, shards, delay):
            assert process.returncode == 0, log.read_text()[-3000:]
            return kills
        kills += 1
        entry = load_manifest(run).splits[split]
        if rows is not None and entry.rows < rows:
            assert entry.status == "running"
        if entry.status == "running":
            with pytest.raises(InputError, match="incomplete"):
                read_split(run, split)
    finish(start(command, log), log)
    return kills


def records_by_id(run: Path, split: str) -> dict[str, dict]:
    return {record.id: record.model_dump() for record in iter_records(run, split)}


@dataclass(frozen=True)
class Runs:
    run: Path  # killed and resumed: sft, then preferences judged from it
    reference: Path  # the same two commands, never interrupted
    kills: dict[str, int]
    model: Path
    log: Path


@pytest.fixture(scope="module")
def runs(embedded_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    folder = tmp_path_factory.mktemp("resume")
    run, reference, log = folder / "run", folder / "reference", folder / "log.txt"
    rng = random.Random(KILL_SEED)
    # Kill once during the first batches and once later; a delay of 0 can land between a shard's
    # rename and its manifest entry (the orphan that the next run adopts).
    revise_plan = [(1, rng.uniform(0.0, 1.0)), (rng.choice([2, 3]), rng.choice([0.0, rng.uniform(0.0, 1.0)]))]
    label_plan = [(1, rng.choice([0.0, rng.uniform(0.0, 0.3)]))]  # judging a batch takes well under a second

    # The uninterrupted reference runs beside the killed one (they share nothing but the cores).
    uninterrupted = start(revise_command(embedded_model, reference), log)
    kills = {"sft": run_with_kills(revise_command(embedded_model, run), run, "sft", revise_plan, log, rows=LIMIT)}
    finish(uninterrupted, log)
    uninterrupted = start(label_command(embedded_model, reference), log)
    kills["preferences"] = run_with_kills(label_command(embedded_model, run), run, "preferences", label_plan, log)
    finish(uninterrupted, log)
    return Runs(run, reference, kills, embedded_model, log)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_revise_killed_and_resumed_equals_an_uninterrupted_run(runs: Runs) -> None:
    assert runs.kills["sft"] >= 1, "no kill landed: the test would prove nothing"
    expected_ids = [p.id for p in read_prompts(PROMPTS)][:LIMIT]
    ids = read_split(runs.run, "sft").column("id").to_pylist()  # verifies checksums and unique ids
    assert sorted(ids) == sorted(expected_ids)
    assert records_by_id(runs.run, "sft") == records_by_id(runs.reference, "sft")
    assert load_manifest(runs.run).splits["sft"].status == "complete"
    # Writes cut short by a kill leave no temporary shard or manifest behind once the run finishes.
    assert not list((runs.run / "sft").glob("*.partial")) and not list(runs.run.glob(".manifest.json.*.partial"))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_label_killed_and_resumed_equals_an_uninterrupted_run(runs: Runs) -> None:
    assert runs.kills["preferences"] >= 1, "no kill landed: the test would prove nothing"
    judged = records_by_id(runs.run, "preferences")
    assert judged == records_by_id(runs.reference, "preferences")
    revised = list(iter_records(runs.run, "sft"))
    assert len(judged) == sum(r.initial.strip() != r.revision.strip() for r in revised) > 0
    # The kills during labelling left the run's other split as it was.
    assert records_by_id(runs.run, "sft") == records_by_id(runs.reference, "sft")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_rerunning_a_finished_command_writes_nothing(runs: Runs, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs.run, run)
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in shard_files(run, "sft")}
    shards_before = load_manifest(run).splits["sft"].shards
    again = subprocess.run(revise_command(runs.model, run), cwd=REPO, env=cli_env(), capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"wrote 0 rows ({LIMIT} already done" in again.stdout
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in shard_files(run, "sft")} == before
    assert load_manifest(run).splits["sft"].shards == shards_before


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_another_config_is_refused_until_overwrite(runs: Runs, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs.run, run)
    records = records_by_id(run, "sft")
    changed = subprocess.run(revise_command(runs.model, run, "--rounds", "2"), cwd=REPO, env=cli_env(),
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert changed.returncode == 2, changed.stderr[-3000:]
    assert "config.rounds" in changed.stderr and "--overwrite" in changed.stderr
    assert records_by_id(run, "sft") == records  # nothing mixed in

    # --limit is not part of the fingerprint: one prompt is enough to see the new settings win.
    replaced = subprocess.run(revise_command(runs.model, run, "--rounds", "2", "--overwrite", "--limit", "1"),
                              cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    rows = list(iter_records(run, "sft"))
    assert len(rows) == 1 and len(rows[0].rounds) == 2
    assert load_manifest(run).splits["sft"].fingerprint["config"]["rounds"] == 2
