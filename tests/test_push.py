"""`labeler push`: exactly the complete splits, the manifest and the card go to the Hub, and nothing else.

There is no network here: the dry run is checked file by file, and the real push runs against a recording
stand-in for `huggingface_hub.HfApi`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sample_runs import fingerprint, judged, revised

from labeler.cli.app import main
from labeler.core.errors import InputError
from labeler.publish.push import PushConfig, plan_push, push
from labeler.store import RunStore, load_manifest


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return busy_run(tmp_path)


def busy_run(folder: Path) -> Path:
    """A run with a complete preference split, an sft split still running, and what else a run folder
    collects: a reward model, PPO checkpoints, a report, leftovers of a job array and a temporary file."""
    run = folder / "my-run"
    store = RunStore.open(run, "preferences", fingerprint("label"))
    store.write_shard([judged(i) for i in range(5)])
    store.write_shard([judged(i) for i in range(5, 9)])
    store.mark_complete()
    RunStore.open(run, "sft", fingerprint("revise")).write_shard([revised(0)])  # not complete
    for name in ("rm/model.safetensors", "ppo/checkpoint-1/state.json", ".parts/p0/manifest.json",
                 "report/index.html", "report/p_a.png", "preferences/.shard-00002.arrow.1-ab.partial",
                 "preferences/shard-00099.arrow"):  # a shard the manifest does not list
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(b"not for the Hub")
    return run


def sent(plan: Any) -> dict[str, int]:
    return {upload.path_in_repo: upload.size for upload in plan.uploads}


def test_the_dry_run_lists_exactly_the_complete_splits_the_manifest_and_the_card(run: Path, capsys) -> None:
    shards = load_manifest(run).splits["preferences"].shards
    plan = plan_push(PushConfig(run=run, repo="acme/kind-prefs", dry_run=True))
    files = sent(plan)
    assert list(files) == ["README.md", "manifest.json", *(s.file for s in shards)]
    for shard in shards:
        assert files[shard.file] == (run / shard.file).stat().st_size
    assert plan.splits == ("preferences",)

    assert main_exit(["push", str(run), "--repo", "acme/kind-prefs", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "would push to the dataset acme/kind-prefs (public):"
    assert [line.split() for line in out[1:-1]] == [[str(size), name] for name, size in files.items()]
    assert out[-1].split() == [str(sum(files.values())), "bytes", "in", "4", "files"]

    with_report = sent(plan_push(PushConfig(run=run, repo="acme/kind-prefs", with_report=True)))
    assert set(with_report) - set(files) == {"report/index.html", "report/p_a.png"}


def test_the_published_manifest_and_card_describe_what_is_sent(run: Path) -> None:
    plan = plan_push(PushConfig(run=run, repo="acme/kind-prefs", language=("en", "fr")))
    data = {upload.path_in_repo: upload.data for upload in plan.uploads if upload.data is not None}
    manifest = json.loads(data["manifest.json"])
    assert list(manifest["splits"]) == ["preferences"]  # the running sft split stays home
    card = data["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "cc-by-4.0"  # from the constitution, recorded in the fingerprint
    assert front["language"] == ["en", "fr"] and front["pretty_name"] == "kind-prefs"
    assert front["size_categories"] == ["n<1K"] and front["task_categories"] == ["text-generation"]
    assert front["configs"] == [{"config_name": "preferences",
                                 "data_files": [{"split": "train", "path": "preferences/*.arrow"}]}]  # fmt: skip
    assert 'load_dataset("acme/kind-prefs", "preferences", split="train")' in card
    assert str(run) not in card and str(run.parent) not in card  # the card never names a local path

    licensed = plan_push(PushConfig(run=run, repo="acme/kind-prefs", license="MIT", pretty_name='Kind "prefs"'))
    front = yaml.safe_load(next(u.data for u in licensed.uploads if u.path_in_repo == "README.md").split(b"---")[1])
    assert front["license"] == "mit" and front["pretty_name"] == 'Kind "prefs"'


class RecordingHub:
    """Stands in for `huggingface_hub.HfApi`: records every call, holds the files of one repository."""

    def __init__(self, existing: list[str]) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.files = list(existing)

    def create_repo(self, repo_id: str, **options: Any) -> str:
        self.calls.append(("create_repo", (repo_id, options)))
        return f"https://huggingface.co/datasets/{repo_id}"

    def list_repo_files(self, repo_id: str, **options: Any) -> list[str]:
        self.calls.append(("list_repo_files", (repo_id, options)))
        return self.files

    def create_commit(self, repo_id: str, operations: list[Any], **options: Any) -> Any:
        self.calls.append(("create_commit", (repo_id, operations, options)))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/datasets/{repo_id}/commit/1"})()


def test_a_push_sends_the_plan_in_one_commit_and_deletes_stale_shards(run: Path, monkeypatch) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub = RecordingHub([".gitattributes", "README.md", "preferences/shard-00007.arrow", "sft/shard-00000.arrow",
                        "notes.md"])  # fmt: skip
    result = push(PushConfig(run=run, repo="acme/kind-prefs", private=True), api=hub)
    (name, (repo, options)), _, (_, (_, operations, commit)) = hub.calls
    assert (name, repo, options) == ("create_repo", "acme/kind-prefs",
                                     {"repo_type": "dataset", "private": True, "exist_ok": True})  # fmt: skip
    added = [op for op in operations if isinstance(op, CommitOperationAdd)]
    deleted = [op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)]
    assert [op.path_in_repo for op in added] == [u.path_in_repo for u in result.plan.uploads]
    assert deleted == ["preferences/shard-00007.arrow", "sft/shard-00000.arrow"] == list(result.deleted)
    assert commit["repo_type"] == "dataset"
    shard = next(op for op in added if op.path_in_repo.startswith("preferences/"))
    assert Path(shard.path_or_fileobj) == run / shard.path_in_repo  # shards go as files, unread into memory


def test_the_token_comes_from_the_environment_and_is_never_printed(run: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(InputError, match="HF_TOKEN") as info:
        push(PushConfig(run=run, repo="acme/kind-prefs"))
    assert info.value.where == "HF_TOKEN"
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    assert main_exit(["push", str(run), "--repo", "acme/kind-prefs", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "hf_secret_value_123" not in captured.out + captured.err
    assert not any("hf_secret" in path.read_text(errors="ignore") for path in run.rglob("*") if path.is_file())


@pytest.mark.parametrize(
    "options, where",
    [
        ({"repo": "no-slash"}, "--repo"),
        ({"repo": "acme/kind prefs"}, "--repo"),
        ({"license": "Not A License"}, "--license"),
    ],
)
def test_bad_options_exit_2_naming_them(run: Path, options: dict[str, str], where: str, capsys) -> None:
    argv = ["push", str(run), "--repo", options.get("repo", "acme/x"), "--dry-run"]
    if "license" in options:
        argv += ["--license", options["license"]]
    assert main_exit(argv) == 2
    assert where in capsys.readouterr().err


def test_an_altered_shard_or_a_run_with_nothing_complete_is_refused(run: Path, tmp_path: Path) -> None:
    shard = run / load_manifest(run).splits["preferences"].shards[0].file
    shard.write_bytes(shard.read_bytes()[:-8])
    with pytest.raises(InputError, match="sha256") as info:
        plan_push(PushConfig(run=run, repo="acme/x", dry_run=True))
    assert info.value.file == str(shard)

    running = tmp_path / "running"
    RunStore.open(running, "sft", fingerprint("revise")).write_shard([revised(0)])
    with pytest.raises(InputError, match="no complete split"):
        plan_push(PushConfig(run=running, repo="acme/x", dry_run=True))
    intact = busy_run(tmp_path / "intact")
    for path in (intact / "report").iterdir():
        path.unlink()
    with pytest.raises(InputError, match="no report") as info:
        plan_push(PushConfig(run=intact, repo="acme/x", with_report=True))
    assert info.value.field == "with_report"


def main_exit(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0
