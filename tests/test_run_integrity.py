"""A run's integrity against what users and machines do to it, with real `labeler` processes: two writers
on one run, inputs edited (or named another way) between a kill and the rerun, --overwrite against a
server that is down, a split folder that is a symbolic link, a full disk, and a run that two writers
of an earlier labeler already broke.

The judge is the openai engine against a scripted server on 127.0.0.1 (tests/servers.py): cheap, and a
test decides when it answers, so a process can be held inside its run while another one starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from fake_engine import FakeEngine
from sample_runs import make_run, revised
from servers import ScriptedServer, chat_reply

from labeler.core.errors import InputError
from labeler.core.layout import RUN_PARTS_FOLDER, WRITER_LOCK
from labeler.engine import GenerationParams
from labeler.engine.model_ref import FORBID_LOAD_ENV
from labeler.stages.common import WorkSelection
from labeler.stages.parts import run_in_parts
from labeler.stages.registry import StageConfig, StageResult, stage_spec
from labeler.stages.revise import ReviseConfig, revise
from labeler.store import RunStore, iter_records, load_manifest, read_split
from labeler.store.lock import holder_pid, writer_lock

REPO = Path(__file__).resolve().parent.parent
CONSTITUTION = REPO / "constitutions" / "helpful-honest.yaml"
HARMLESS = REPO / "constitutions" / "harmless.yaml"
PROMPTS = REPO / "data" / "sample_prompts.jsonl"
GOOD = (200, chat_reply([("A", -0.1), ("B", -2.0)]), {})
TIMEOUT = 120


def write_pairs(path: Path, n: int = 3, *, answer: str = "Answer") -> Path:
    rows = [{"prompt": f"Question {i}?", "response_a": f"{answer} {i}.", "response_b": f"No idea {i}."}
            for i in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def label_command(url: str, out: Path, *, pairs: Path, constitution: Path = CONSTITUTION, extra: tuple = ()) -> list:
    return [sys.executable, "-m", "labeler", "label", "--constitution", str(constitution), "--pairs", str(pairs),
            "--out", str(out), "--engine", "openai", "--base-url", url, "--judge-model", "scripted",
            "--choice-method", "first_token_topk", "--batch-size", "1", "--quiet", *extra]  # fmt: skip


def env() -> dict[str, str]:
    # This checkout's labeler, whatever the working directory of the command.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "PYTHONPATH": path}


def run(command: list, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, env=env(), cwd=cwd, timeout=TIMEOUT)


def wait_for(condition, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def committed_shards(out: Path) -> int:
    try:
        return len(load_manifest(out).splits["preferences"].shards)
    except (InputError, KeyError):
        return 0


class Gate:
    """A scripted reply that holds every request once `closed()` says so, until `open()`."""

    def __init__(self, closed) -> None:  # type: ignore[no-untyped-def]
        self.closed = closed
        self.released = threading.Event()

    def __call__(self, request: object) -> tuple:
        if self.closed():
            self.released.wait(timeout=TIMEOUT)
        return GOOD

    def open(self) -> None:
        self.released.set()


def ids(out: Path, split: str = "preferences") -> list[str]:
    return read_split(out, split).column("id").to_pylist()


# --- one writer per run --------------------------------------------------------------------------


def test_a_second_process_is_refused_at_once_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    gate = Gate(closed=lambda: True)  # the first process waits inside its first request
    with ScriptedServer(default=gate) as server:
        command = label_command(server.url, out, pairs=write_pairs(tmp_path / "pairs.jsonl"))
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                                 cwd=REPO)
        try:
            wait_for(lambda: holder_pid(out) == first.pid, "the first process to take the lock")
            started = time.monotonic()
            second = run(command)
            assert time.monotonic() - started < 60
            assert second.returncode == 2, second.stderr[-2000:]
            assert f"pid {first.pid}" in second.stderr and str(out) in second.stderr
            assert "Traceback" not in second.stderr
        finally:
            gate.open()
            _, stderr = first.communicate(timeout=TIMEOUT)
        assert first.returncode == 0, stderr[-2000:]
    assert sorted(ids(out)) == sorted(set(ids(out))) and len(ids(out)) == 3  # every record once


def test_a_lock_held_by_a_library_caller_refuses_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with writer_lock(out):
        refused = run(label_command("http://127.0.0.1:9", out, pairs=write_pairs(tmp_path / "pairs.jsonl")))
    assert refused.returncode == 2 and f"pid {os.getpid()}" in refused.stderr, refused.stderr[-2000:]
    assert not (out / "manifest.json").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / WRITER_LOCK).write_text("4194303\n")  # no such process holds it: the kernel dropped its flock
    with ScriptedServer(default=GOOD) as server:
        process = subprocess.Popen(label_command(server.url, out, pairs=write_pairs(tmp_path / "pairs.jsonl")),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=REPO)
        _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr[-2000:]
    # taken over (else the command would have been refused), and given back with its file at the end
    assert not (out / WRITER_LOCK).exists() and len(ids(out)) == 3


def test_the_lock_is_reentrant_in_one_process_and_released_with_the_store(tmp_path: Path) -> None:
    out = tmp_path / "run"
    store = RunStore.open(out, "sft", {"config": {}})
    again = RunStore.open(out, "sft", {"config": {}})  # a pipeline's next stage: the same process
    probe = [sys.executable, "-c", "import sys; from labeler.store.lock import writer_lock\n"
             "with writer_lock(sys.argv[1]): pass", str(out)]  # fmt: skip
    assert run(probe).returncode != 0  # held by this process
    del store, again
    assert run(probe).returncode == 0, "the lock outlived its stores"


# --- a run already broken by two writers ---------------------------------------------------------


def test_a_run_two_writers_broke_is_explained_then_repaired_by_the_same_command(tmp_path: Path) -> None:
    out = tmp_path / "run"
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    with ScriptedServer(default=GOOD) as server:
        command = label_command(server.url, out, pairs=pairs)
        assert run(command).returncode == 0
        # What two writers of one split leave: the same records committed twice, in two shards.
        manifest = json.loads((out / "manifest.json").read_text())
        first = manifest["splits"]["preferences"]["shards"][0]
        shutil.copy(out / first["file"], out / "preferences" / "shard-00003.arrow")
        manifest["splits"]["preferences"]["shards"].append({**first, "file": "preferences/shard-00003.arrow"})
        (out / "manifest.json").write_text(json.dumps(manifest))
        export = run([sys.executable, "-m", "labeler", "export", str(out), "--out", str(tmp_path / "export")])
        assert export.returncode == 2, export.stderr[-2000:]
        assert "two processes wrote it at once" in export.stderr and "rerun the command" in export.stderr
        assert "shard-00003.arrow" in export.stderr
        repaired = run(command)
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    assert sorted(ids(out)) == sorted(set(ids(out))) and len(ids(out)) == 3
    assert not (out / "preferences" / "shard-00003.arrow").exists()


def test_repair_drops_only_the_repeating_shards_and_redoes_what_only_they_held(tmp_path: Path) -> None:
    out = tmp_path / "run"
    a = RunStore.open(out, "sft", {"config": {}})
    b = RunStore.open(out, "sft", {"config": {}})  # a second writer that knows nothing of the first
    records = [revised(i) for i in range(5)]
    a.write_shard(records[0:2])
    b.write_shard(records[0:2])  # repeats the first shard
    a.write_shard(records[2:4])
    b.write_shard(records[3:5])  # repeats record 3, and alone holds record 4
    with pytest.raises(InputError, match="two processes"):
        read_split(out, "sft", require_complete=False)
    reopened = RunStore.open(out, "sft", {"config": {}})
    assert reopened.done_ids() == {r.id for r in records[:4]}  # record 4 is made again
    assert len(load_manifest(out).splits["sft"].shards) == 2
    assert len(list((out / "sft").glob("*.arrow"))) == 2
    reopened.write_shard(records[4:5])
    reopened.mark_complete()
    assert sorted(ids(out, "sft")) == sorted(r.id for r in records)


# --- inputs fingerprinted by what they hold ------------------------------------------------------


def test_an_input_edited_between_a_kill_and_the_rerun_is_refused_and_the_same_file_another_way_resumes(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    original = pairs.read_bytes()
    gate = Gate(closed=lambda: committed_shards(out) >= 1)  # hold the process after its first shard
    with ScriptedServer(default=gate) as server:
        process = subprocess.Popen(label_command(server.url, out, pairs=pairs), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=env(), cwd=REPO)
        wait_for(lambda: committed_shards(out) >= 1, "the first shard")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=TIMEOUT)
        gate.open()
        assert load_manifest(out).splits["preferences"].status == "running"
        gate.closed = lambda: False

        write_pairs(pairs, answer="Another answer")  # the same name, other pairs
        edited = run(label_command(server.url, out, pairs=pairs))
        assert edited.returncode == 2, edited.stderr[-2000:]
        assert "config.pairs.sha256" in edited.stderr and "Traceback" not in edited.stderr
        assert committed_shards(out) == 1  # nothing mixed in

        # The original bytes again, by an absolute path through a link of another folder, the constitution
        # through a link too, from another working directory: the run resumes.
        pairs.write_bytes(original)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "pairs.jsonl").symlink_to(pairs)
        (elsewhere / "rules.yaml").symlink_to(CONSTITUTION)
        resumed = run(label_command(server.url, Path("..") / "run", pairs=Path("pairs.jsonl"),
                                    constitution=Path("rules.yaml")), cwd=elsewhere)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "1 already done" in resumed.stdout
    assert sorted(ids(out)) == sorted(set(ids(out))) and len(ids(out)) == 3
    fingerprint = load_manifest(out).splits["preferences"].fingerprint
    assert fingerprint["config"]["pairs"]["name"] == "pairs.jsonl"
    assert str(tmp_path) not in json.dumps(fingerprint)  # no path of the machine in the manifest


# --- --overwrite ---------------------------------------------------------------------------------


def test_overwrite_against_a_server_that_is_down_keeps_the_old_rows(tmp_path: Path) -> None:
    out = make_run(tmp_path)
    before = read_split(out, "preferences")
    settings = tmp_path / "engine.yaml"
    settings.write_text("max_retries: 0\nretry_backoff: 0.01\n")
    down = run([sys.executable, "-m", "labeler", "label", "--constitution", str(CONSTITUTION), "--pairs-from",
                str(out), "--out", str(out), "--overwrite", "--engine", "openai", "--base-url", "http://127.0.0.1:9",
                "--judge-model", "judge", "--choice-method", "first_token_topk", "--engine-config", str(settings),
                "--quiet"])  # fmt: skip
    assert down.returncode == 1, down.stderr[-2000:]
    assert "Traceback" not in down.stderr
    assert read_split(out, "preferences").equals(before)  # every old row, the old fingerprint
    assert load_manifest(out).splits["preferences"].status == "complete"


def test_overwrite_of_a_split_folder_that_is_a_link_replaces_the_link_not_the_files_it_points_to(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    with ScriptedServer(default=GOOD) as server:
        assert run(label_command(server.url, out, pairs=pairs)).returncode == 0
        elsewhere = tmp_path / "precious"
        shutil.move(out / "preferences", elsewhere)
        (out / "preferences").symlink_to(elsewhere)
        kept = {path.name: path.read_bytes() for path in elsewhere.iterdir()}
        refused = run(label_command(server.url, out, pairs=pairs))
        assert refused.returncode == 2 and "symbolic link" in refused.stderr, refused.stderr[-2000:]
        replaced = run(label_command(server.url, out, pairs=pairs, extra=("--overwrite",)))
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert {path.name: path.read_bytes() for path in elsewhere.iterdir()} == kept
    assert not (out / "preferences").is_symlink() and len(ids(out)) == 3


# --- --overwrite of a run in parts (--data-parallel-size, --ray) ---------------------------------


def revise_config(out: Path, *, seed: int, overwrite: bool = False) -> ReviseConfig:
    return ReviseConfig(constitution=HARMLESS, prompts=PROMPTS, out=out, rounds=1, seed=seed,
                        sampling=GenerationParams(max_tokens=12),
                        work=WorkSelection(batch_size=3, quiet=True, overwrite=overwrite))  # fmt: skip


class FailingEngine(FakeEngine):
    """The scripted engine, failing at its `calls`-th generation (after writing what came before)."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls_left = calls

    def generate(self, conversations, params, seeds=None):  # type: ignore[no-untyped-def]
        self.calls_left -= 1
        if self.calls_left <= 0:
            raise RuntimeError("the engine died")
        return super().generate(conversations, params, seeds)


class InProcessParts:
    """A `PartExecutor` running each part here on the scripted engine; the parts in `failing` fail after
    their first batches, and the first failure is raised once every part has ended (as replicas do)."""

    def __init__(self, num: int = 2, failing: tuple[int, ...] = ()) -> None:
        self.num = num
        self.failing = failing

    def default_parts(self, config: StageConfig) -> int:
        return self.num

    def run(self, configs: Sequence[StageConfig]) -> list[StageResult]:
        results, errors = [], []
        for index, config in enumerate(configs):
            engine = FailingEngine(calls=4) if index in self.failing else FakeEngine()
            try:
                results.append(stage_spec(config).run(config, engine))
            except RuntimeError as exc:
                errors.append(str(exc))  # the message only, as a replica sends it: the part's store is let go
        if errors:
            raise RuntimeError(f"a part failed: {errors[0]}")
        return results


def sft_rows(out: Path) -> dict[str, dict]:
    return {record.id: record.model_dump() for record in iter_records(out, "sft")}


def test_overwrite_in_parts_whose_parts_fail_keeps_every_old_row_and_a_rerun_replaces_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_in_parts(revise_config(out, seed=1), InProcessParts(), how="--data-parallel-size")
    old_rows, old_entry = sft_rows(out), load_manifest(out).splits["sft"]
    old_parts = {p: p.read_bytes() for p in sorted((out / RUN_PARTS_FOLDER).rglob("*.arrow"))}
    assert len(old_rows) == 12 and len(old_parts) >= 2

    with pytest.raises(RuntimeError, match="the engine died"):
        run_in_parts(revise_config(out, seed=2, overwrite=True), InProcessParts(failing=(1,)), how="--ray")
    assert sft_rows(out) == old_rows and load_manifest(out).splits["sft"] == old_entry  # the old split, whole
    assert {p: p.read_bytes() for p in sorted((out / RUN_PARTS_FOLDER / "sft").rglob("*.arrow"))} == old_parts
    assert list((out / RUN_PARTS_FOLDER / "sft.new").rglob("*.arrow"))  # the new parts were really under way

    # Settings differ from the old run: without --overwrite the parts refuse, and nothing changes.
    with pytest.raises(InputError, match="different settings"):
        run_in_parts(revise_config(out, seed=2), InProcessParts(), how="--ray")
    assert sft_rows(out) == old_rows

    run_in_parts(revise_config(out, seed=2, overwrite=True), InProcessParts(), how="--ray")
    single = revise(revise_config(tmp_path / "single", seed=2), engine=FakeEngine())
    assert single.written == 12 and sft_rows(out) == sft_rows(tmp_path / "single") != old_rows
    assert sorted(p.name for p in (out / RUN_PARTS_FOLDER).iterdir()) == ["sft"]  # no staging or old parts left
    assert sorted(p.name for p in (out / "sft").iterdir()) == sorted(
        Path(shard.file).name for shard in load_manifest(out).splits["sft"].shards
    )  # no file of the old split left beside the new one
    again = run_in_parts(revise_config(out, seed=2), InProcessParts(), how="--ray")  # a rerun: found done
    assert (again.written, again.already_done) == (0, 12) and sft_rows(out) == sft_rows(tmp_path / "single")


def test_overwrite_in_parts_replaces_a_single_process_split_only_at_the_merge(tmp_path: Path) -> None:
    out = make_run(tmp_path)  # preferences and sft, written by one process
    before = read_split(out, "sft")
    with pytest.raises(RuntimeError):
        run_in_parts(revise_config(out, seed=2, overwrite=True), InProcessParts(failing=(0, 1)), how="--ray")
    assert read_split(out, "sft").equals(before)
    run_in_parts(revise_config(out, seed=2, overwrite=True), InProcessParts(), how="--ray")
    assert len(sft_rows(out)) == 12 and len(ids(out)) == 24  # the other split stays as it was


@pytest.mark.parametrize("link", ["sft", f"{RUN_PARTS_FOLDER}/sft"])
def test_overwrite_in_parts_of_a_linked_folder_replaces_the_link_not_the_files_it_points_to(
    tmp_path: Path, link: str
) -> None:
    out = tmp_path / "run"
    run_in_parts(revise_config(out, seed=1), InProcessParts(), how="--ray")
    elsewhere = tmp_path / "precious"
    shutil.move(out / link, elsewhere)
    (out / link).symlink_to(elsewhere)
    kept = {p: p.read_bytes() for p in sorted(elsewhere.rglob("*")) if p.is_file()}
    with pytest.raises(InputError, match="symbolic link") as refused:
        run_in_parts(revise_config(out, seed=1), InProcessParts(), how="--ray")
    assert refused.value.file == str(out / link)
    with pytest.raises(RuntimeError):
        run_in_parts(revise_config(out, seed=2, overwrite=True), InProcessParts(failing=(1,)), how="--ray")
    assert (out / link).is_symlink()  # a failed overwrite changes nothing
    run_in_parts(revise_config(out, seed=2, overwrite=True), InProcessParts(), how="--ray")
    assert {p: p.read_bytes() for p in sorted(elsewhere.rglob("*")) if p.is_file()} == kept
    assert not (out / link).is_symlink() and len(sft_rows(out)) == 12


def test_a_parts_folder_that_is_a_link_is_refused_even_with_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_in_parts(revise_config(out, seed=1), InProcessParts(), how="--ray")
    elsewhere = tmp_path / "precious"
    shutil.move(out / RUN_PARTS_FOLDER, elsewhere)
    (out / RUN_PARTS_FOLDER).symlink_to(elsewhere)
    kept = {p: p.read_bytes() for p in sorted(elsewhere.rglob("*")) if p.is_file()}
    for overwrite in (False, True):
        with pytest.raises(InputError, match="symbolic link") as refused:
            run_in_parts(revise_config(out, seed=2, overwrite=overwrite), InProcessParts(), how="--ray")
        assert refused.value.file == str(out / RUN_PARTS_FOLDER)
    assert {p: p.read_bytes() for p in sorted(elsewhere.rglob("*")) if p.is_file()} == kept
    assert len(sft_rows(out)) == 12


def test_overwrite_with_replicas_whose_engines_fail_keeps_the_old_rows(tmp_path: Path, embedded_model: Path) -> None:
    """Real replica processes (`--data-parallel-size 2`), each failing as it loads its model."""
    out = make_run(tmp_path)
    before = read_split(out, "sft")
    failed = subprocess.run(
        [sys.executable, "-m", "labeler", "revise", "--constitution", str(HARMLESS), "--prompts", str(PROMPTS),
         "--out", str(out), "--engine", "hf", "--model", str(embedded_model), "--dtype", "float32", "--limit", "4",
         "--rounds", "1", "--max-tokens", "8", "--data-parallel-size", "2", "--overwrite", "--quiet"],
        capture_output=True, text=True, env={**env(), FORBID_LOAD_ENV: "1"}, cwd=REPO, timeout=TIMEOUT,
    )  # fmt: skip
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "a replica failed" in failed.stderr and FORBID_LOAD_ENV in failed.stderr  # it failed in the replicas
    assert read_split(out, "sft").equals(before) and load_manifest(out).splits["sft"].status == "complete"
    assert len(ids(out)) == 24


# --- a full disk ----------------------------------------------------------------------------------


def can_mount_tmpfs(folder: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    folder.mkdir(exist_ok=True)
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder)],
                           capture_output=True)  # fmt: skip
    return probe.returncode == 0


def test_a_full_disk_during_label_says_which_file_and_the_rerun_finishes(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not can_mount_tmpfs(disk):
        pytest.skip("this machine cannot mount a tmpfs (no user namespaces)")
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    saved = tmp_path / "saved"
    with ScriptedServer(default=GOOD) as server:
        command = " ".join(f"'{part}'" for part in label_command(server.url, disk / "run", pairs=pairs))
        # In a mount namespace of its own: a disk of 3 pages (the lock, the manifest, no room for a shard),
        # then the same disk grown and the same command again; the run is copied out for the checks.
        script = (f"mount -t tmpfs -o size=12k tmpfs '{disk}' && cd '{REPO}' && "
                  f"{{ {command} 2> '{tmp_path}/full.err'; echo $? > '{tmp_path}/full.code'; }}; "
                  f"mount -o remount,size=4m '{disk}' && {command} 2> '{tmp_path}/again.err'; "
                  f"echo $? > '{tmp_path}/again.code'; cp -a '{disk}/run' '{saved}'")  # fmt: skip
        subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env(), timeout=2 * TIMEOUT, check=False)
    full_err = (tmp_path / "full.err").read_text()
    assert (tmp_path / "full.code").read_text().strip() == "1", full_err[-2000:]
    assert "no space left on the device" in full_err and "run the same command again" in full_err
    assert str(disk / "run") in full_err and "Traceback" not in full_err
    assert len([line for line in full_err.splitlines() if line.strip()]) == 1, full_err
    assert (tmp_path / "again.code").read_text().strip() == "0", (tmp_path / "again.err").read_text()[-2000:]
    assert sorted(ids(saved)) == sorted(set(ids(saved))) and len(ids(saved)) == 3
