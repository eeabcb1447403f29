"""`labeler push`: publish a run (or an export) as a Hugging Face Hub dataset.

What is sent, and nothing else: every shard of the splits the manifest lists as complete (each checked
against its sha256 first), `manifest.json` listing only those splits, and the dataset card rendered for
the Hub (its front matter with license, language, size and task categories; its usage snippets loading
the Hub id). Never `.parts/`, `rm/`, `ppo/`, temporary files, or the report (unless `with_report`).
Files in the repository's split folders that this push does not send are deleted in the same commit,
so the repository holds exactly the dataset its manifest describes. Nothing is sent through a symbolic
link out of the run (such a run is refused, naming the link), and the card, the manifest and the report's
text name files, never paths of this machine (see `labeler.store.published`). The repository id and the
language codes are checked against the Hub's rules before anything is read.

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

from labeler.core.errors import InputError
from labeler.core.records import SPLITS
from labeler.inputs.constitution.schema import license_id
from labeler.store.manifest import MANIFEST_NAME, load_manifest, manifest_path
from labeler.store.published import (
    TEXT_SUFFIXES,
    check_inside_run,
    files_inside_run,
    published_bytes,
    published_manifest,
)

TOKEN_ENV = "HF_TOKEN"
REPORT_FOLDER = "report"
REPO_NAME_MAX = 96
_REPO_PART = re.compile(r"[A-Za-z0-9._-]+")
# ISO 639 codes (two or three letters), optionally with subtags (zh-Hans, pt-BR), or the Hub's own words.
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*|code|multilingual")


def repo_problem(part: str) -> str | None:
    """What the Hub's naming rules refuse in one part (ORG or NAME) of a repository id, or None.

    >>> repo_problem("kind-prefs"), repo_problem("x.git"), repo_problem("x--y"), repo_problem("-x")
    (None, 'ends in .git', "holds '--'", "starts or ends with '-' or '.'")
    """
    if not _REPO_PART.fullmatch(part):
        return "holds a character other than letters, digits, '.', '_' and '-'"
    if len(part) > REPO_NAME_MAX:
        return f"is {len(part)} characters long, more than the Hub's {REPO_NAME_MAX}"
    if part[0] in "-." or part[-1] in "-.":
        return "starts or ends with '-' or '.'"
    for twice in ("--", ".."):
        if twice in part:
            return f"holds {twice!r}"
    if part.endswith(".git"):
        return "ends in .git"
    return None


def repo_id(value: str) -> str:
    """A Hub repository id, ORG/NAME, checked against the Hub's naming rules before anything is sent.

    >>> repo_id("acme/kind-prefs")
    'acme/kind-prefs'
    >>> repo_id("acme/prefs/v2")
    Traceback (most recent call last):
    ...
    ValueError: expected ORG/NAME: two names of letters, digits, '.', '_' or '-' joined by one '/'
    >>> repo_id("acme/x--y")
    Traceback (most recent call last):
    ...
    ValueError: the name 'x--y' holds '--', which the Hub refuses
    """
    parts = value.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError("expected ORG/NAME: two names of letters, digits, '.', '_' or '-' joined by one '/'")
    for role, part in zip(("organisation", "name"), parts):
        problem = repo_problem(part)
        if problem is not None:
            raise ValueError(f"the {role} {part!r} {problem}, which the Hub refuses")
    return value


def language_codes(codes: tuple[str, ...]) -> tuple[str, ...]:
    """The language codes of the card, each once; `ValueError` for anything that is not one code.

    >>> language_codes(("en", "fr", "en", "zh-Hans"))
    ('en', 'fr', 'zh-Hans')
    >>> language_codes(("en, fr",))
    Traceback (most recent call last):
    ...
    ValueError: 'en, fr' is not a language code: give one ISO 639 code per ‹language›, such as en, fr or zh-Hans
    """
    for code in codes:
        if not _LANGUAGE.fullmatch(code):
            raise ValueError(f"{code!r} is not a language code: give one ISO 639 code per ‹language›, "
                             "such as en, fr or zh-Hans")  # fmt: skip
    return tuple(dict.fromkeys(codes))


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
    language: Annotated[tuple[str, ...], AfterValidator(language_codes)] = Field(
        ("en",), min_length=1, description="Language codes of the data, ISO 639 (repeat: ‹language› en ‹language› fr)."
    )
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
    """What a push sends; `InputError` (naming the option, the shard or the link) before anything is sent.

    Every file sent is reached without leaving the run (a symbolic link out of it is refused), and what
    labeler writes for the Hub (card, manifest, report text) names no path of this machine.
    """
    from labeler.store.card import CARD_NAME, HubMetadata, render_card

    run = config.run
    check_inside_run(run, MANIFEST_NAME)
    manifest = load_manifest(run, where="RUN")
    splits = tuple(name for name in SPLITS if name in manifest.splits and manifest.splits[name].status == "complete")
    if not splits:
        have = ", ".join(f"{name} ({entry.status})" for name, entry in manifest.splits.items()) or "no split"
        raise InputError(f"no complete split to push (the run has {have})", file=manifest_path(run), where="RUN")
    shard_paths = [(shard.file, check_inside_run(run, shard.file)) for name in splits
                   for shard in manifest.splits[name].shards]  # fmt: skip

    hub = HubMetadata(repo_id=config.repo, license=config.license, language=config.language,
                      pretty_name=config.pretty_name)  # fmt: skip
    # The card reads every shard sent through the store's verified reader (sha256, schema, rows, ids):
    # a missing, truncated or altered shard stops the push here, before anything is sent.
    card = render_card(run, hub=hub, splits=splits).encode("utf-8")
    shards = [Upload(file, path.stat().st_size, local=path) for file, path in shard_paths]
    published = published_manifest(manifest)
    published = published.model_copy(update={"splits": {name: published.splits[name] for name in splits}})
    manifest_bytes = (published.model_dump_json(indent=2) + "\n").encode("utf-8")
    uploads = [
        Upload(CARD_NAME, len(card), data=card),
        Upload(MANIFEST_NAME, len(manifest_bytes), data=manifest_bytes),
        *shards,
    ]
    if config.with_report:
        uploads += _report_files(run)
    return PushPlan(config.repo, splits, tuple(uploads))


def _report_files(run: Path) -> list[Upload]:
    """RUN/report/ as published: its text without local paths, its plots as they are."""
    folder = run / REPORT_FOLDER
    files = files_inside_run(run, REPORT_FOLDER) if folder.is_dir() or folder.is_symlink() else []
    if not files:
        raise InputError("has no report to send; write it with `labeler report RUN` first", file=folder,
                         field="with_report")  # fmt: skip
    uploads = []
    for path in files:
        name = path.relative_to(run).as_posix()
        if path.suffix.lower() in TEXT_SUFFIXES:
            data = published_bytes(path, path.read_bytes())
            uploads.append(Upload(name, len(data), data=data))
        else:
            uploads.append(Upload(name, path.stat().st_size, local=path))
    return uploads


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


def hub_token(value: str | None) -> str | None:
    """The token `HF_TOKEN` holds, without surrounding blanks; None when unset; `InputError` when it is set
    to nothing but blanks (a mistake the Hub would only answer with an unclear refusal).

    >>> hub_token(None), hub_token(" hf_abc\\n")
    (None, 'hf_abc')
    """
    if value is None:
        return None
    token = value.strip()
    if not token:
        raise InputError("is set but empty (only blanks); set it to a Hugging Face token with write access, "
                         "or leave it unset for a ‹dry_run›", where=TOKEN_ENV)  # fmt: skip
    return token


def push(config: PushConfig, api: Any = None) -> PushResult:
    """Push the run's complete splits, manifest and card to `config.repo` (or only plan it: `dry_run`).

    `api` is an `huggingface_hub.HfApi` (made here with the token from `HF_TOKEN` when not given).
    """
    token = hub_token(os.environ.get(TOKEN_ENV)) if not config.dry_run and api is None else None
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
