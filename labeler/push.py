"""`labeler push`: publish a run (or an export) as a Hugging Face Hub dataset.

What is sent, and nothing else: every shard of the splits the manifest lists as complete (each checked
against its sha256 first), `manifest.json` listing only those splits, and the dataset card rendered for
the Hub (its front matter with license, language, size and task categories; its usage snippets loading
the Hub id). Never `.parts/`, `rm/`, `ppo/`, temporary files, or the report (unless `with_report`).
Files in the repository's split folders that this push does not send are deleted in the same commit,
so the repository holds exactly the dataset its manifest describes.

The token comes from the `HF_TOKEN` environment variable only; labeler never stores or prints it.
`dry_run` prints the files and bytes a push would send, and touches no network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from labeler.constitution.models import license_id
from labeler.errors import InputError
from labeler.records import SPLITS
from labeler.store.fingerprint import sha256_file
from labeler.store.manifest import MANIFEST_NAME, load_manifest, manifest_path

TOKEN_ENV = "HF_TOKEN"
REPORT_FOLDER = "report"
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def repo_id(value: str) -> str:
    """A Hub repository id, ORG/NAME.

    >>> repo_id("acme/kind-prefs")
    'acme/kind-prefs'
    >>> repo_id("acme/prefs/v2")
    Traceback (most recent call last):
    ...
    ValueError: expected ORG/NAME: two names of letters, digits, '.', '_' or '-' joined by one '/'
    """
    if not _REPO_ID.fullmatch(value):
        raise ValueError("expected ORG/NAME: two names of letters, digits, '.', '_' or '-' joined by one '/'")
    return value


class PushConfig(BaseModel):
    """Options of `labeler push`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run: Path = Field(description="Run folder (or `labeler export` folder) to publish.")
    repo: Annotated[str, AfterValidator(repo_id)] = Field(
        description="The Hub dataset to push to, ORG/NAME (created if missing)."
    )
    private: bool = Field(False, description="Create the dataset private (an existing one keeps its visibility).")
    dry_run: bool = Field(False, description="Print the files and bytes that would be sent; send nothing.")
    with_report: bool = Field(False, description="Also send RUN/report/ (written by `labeler report`).")
    license: Annotated[str, AfterValidator(license_id)] | None = Field(
        None, description="License id for the card (e.g. apache-2.0); default: the constitutions' licenses."
    )
    language: tuple[str, ...] = Field(("en",), min_length=1, description="Language codes of the data (repeat).")
    pretty_name: str | None = Field(None, description="Title of the dataset on the Hub (default: NAME).")


@dataclass(frozen=True)
class Upload:
    """One file a push sends: a file of the run as it is, or content made for the Hub (card, manifest)."""

    path_in_repo: str
    size: int
    local: Path | None = None
    data: bytes | None = None

    @property
    def content(self) -> Path | bytes:
        if self.local is not None:
            return self.local
        assert self.data is not None
        return self.data


@dataclass(frozen=True)
class PushPlan:
    """Everything a push sends, in order, and the splits it publishes."""

    repo: str
    splits: tuple[str, ...]
    uploads: tuple[Upload, ...]

    @property
    def total_bytes(self) -> int:
        return sum(upload.size for upload in self.uploads)


def plan_push(config: PushConfig) -> PushPlan:
    """What a push sends; `InputError` (naming the option, or the shard) before anything is sent."""
    from labeler.card import CARD_NAME, HubMetadata, render_card

    run = config.run
    manifest = load_manifest(run, where="RUN")
    splits = tuple(name for name in SPLITS if name in manifest.splits and manifest.splits[name].status == "complete")
    if not splits:
        have = ", ".join(f"{name} ({entry.status})" for name, entry in manifest.splits.items()) or "no split"
        raise InputError(f"no complete split to push (the run has {have})", file=manifest_path(run), where="RUN")

    shards: list[Upload] = []
    for name in splits:
        for shard in manifest.splits[name].shards:
            path = run / shard.file
            if not path.is_file():
                raise InputError("shard listed in manifest.json is missing", file=path)
            if sha256_file(path) != shard.sha256:
                raise InputError("sha256 does not match manifest.json: the shard was altered after it was written",
                                 file=path)  # fmt: skip
            shards.append(Upload(shard.file, path.stat().st_size, local=path))

    published = manifest.model_copy(update={"splits": {name: manifest.splits[name] for name in splits}})
    manifest_bytes = (published.model_dump_json(indent=2) + "\n").encode("utf-8")
    hub = HubMetadata(repo_id=config.repo, license=config.license, language=config.language,
                      pretty_name=config.pretty_name)  # fmt: skip
    card = render_card(run, hub=hub, splits=splits).encode("utf-8")
    uploads = [
        Upload(CARD_NAME, len(card), data=card),
        Upload(MANIFEST_NAME, len(manifest_bytes), data=manifest_bytes),
        *shards,
    ]
    if config.with_report:
        uploads += _report_files(run)
    return PushPlan(config.repo, splits, tuple(uploads))


def _report_files(run: Path) -> list[Upload]:
    folder = run / REPORT_FOLDER
    files = sorted(path for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else []
    if not files:
        raise InputError("has no report to send; write it with `labeler report RUN` first", file=folder,
                         where="--with-report")  # fmt: skip
    return [Upload(path.relative_to(run).as_posix(), path.stat().st_size, local=path) for path in files]


def describe(plan: PushPlan, *, private: bool) -> str:
    """The dry run's listing: each file with its size in bytes, then the total.

    >>> print(describe(PushPlan("org/x", ("sft",), (Upload("README.md", 120, data=b""),)), private=False))
    would push to the dataset org/x (public):
             120  README.md
             120  bytes in 1 file
    """
    visibility = "private" if private else "public"
    lines = [f"would push to the dataset {plan.repo} ({visibility}):"]
    lines += [f"{upload.size:>12}  {upload.path_in_repo}" for upload in plan.uploads]
    count = len(plan.uploads)
    lines.append(f"{plan.total_bytes:>12}  bytes in {count} file{'s' if count != 1 else ''}")
    return "\n".join(lines)


def stale_files(existing: Sequence[str], plan: PushPlan) -> list[str]:
    """Files in the repository's split folders (and its report folder) that this push does not send.

    >>> plan = PushPlan("o/x", ("preferences",), (Upload("preferences/shard-00000.arrow", 1, data=b""),))
    >>> stale_files([".gitattributes", "README.md", "preferences/shard-00001.arrow", "sft/shard-00000.arrow",
    ...              "preferences/shard-00000.arrow", "notes.txt"], plan)
    ['preferences/shard-00001.arrow', 'sft/shard-00000.arrow']
    """
    sent = {upload.path_in_repo for upload in plan.uploads}
    managed = (*SPLITS, REPORT_FOLDER) if any(p.startswith(f"{REPORT_FOLDER}/") for p in sent) else tuple(SPLITS)
    return sorted(path for path in existing if path.split("/", 1)[0] in managed and path not in sent)


@dataclass(frozen=True)
class PushResult:
    plan: PushPlan
    deleted: tuple[str, ...]
    url: str | None  # the commit's address; None for a dry run


def push(config: PushConfig, api: Any = None) -> PushResult:
    """Push the run's complete splits, manifest and card to `config.repo` (or only plan it: `dry_run`).

    `api` is an `huggingface_hub.HfApi` (made here with the token from `HF_TOKEN` when not given).
    """
    token = os.environ.get(TOKEN_ENV) or None
    if not config.dry_run and api is None and token is None:
        raise InputError(f"set the {TOKEN_ENV} environment variable to a Hugging Face token with write access "
                         "(labeler reads it from the environment only)", where=TOKEN_ENV)  # fmt: skip
    plan = plan_push(config)
    if config.dry_run:
        return PushResult(plan, (), None)
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    if api is None:
        api = HfApi(token=token)
    api.create_repo(config.repo, repo_type="dataset", private=config.private, exist_ok=True)
    deleted = stale_files(api.list_repo_files(config.repo, repo_type="dataset"), plan)
    operations: list[Any] = [CommitOperationAdd(path_in_repo=u.path_in_repo, path_or_fileobj=u.content)
                             for u in plan.uploads]  # fmt: skip
    operations += [CommitOperationDelete(path_in_repo=path) for path in deleted]
    commit = api.create_commit(
        config.repo,
        operations,
        commit_message=f"labeler push: {', '.join(plan.splits)}",
        repo_type="dataset",
    )
    return PushResult(plan, tuple(deleted), str(getattr(commit, "commit_url", "")) or None)
