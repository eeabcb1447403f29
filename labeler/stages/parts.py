"""A stage run as parts, each in its own run folder, merged into one run: on a Ray cluster, or in one
process per model replica on this node (`data_parallel_size`).

```
OUT/.parts/sft/part-00000-of-00004/   # one run folder per part, each written by one worker
OUT/manifest.json, OUT/sft/...         # the parts merged (hard links) once every part is complete
OUT/.parts/sft.new/part-00000-of-00004/  # --overwrite: the new parts, until all are complete
```

Part `i` of `N` is exactly what `--shard-index i --num-shards N` selects, and `merge_runs` checks that
the parts share one fingerprint, cover every index once and never repeat a record, so the merged run
is the same dataset as a single-process run. Crash or preemption: run the same command again. Each
part resumes from its own folder (the number of parts is read back from the folders, whatever the
number of workers is now), then the merge is done, or found done.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from labeler.core.errors import InputError, PartsFailed
from labeler.core.layout import RUN_PARTS_FOLDER
from labeler.stages.registry import StageConfig, StageResult, stage_spec
from labeler.store import load_manifest, merge_runs
from labeler.store.lock import writer_lock
from labeler.store.manifest import read_manifest

R = TypeVar("R")

STAGING_SUFFIX = ".new"  # OUT/.parts/SPLIT.new: the parts of an --overwrite, until they replace the old ones
_PART_NAME = re.compile(r"^part-(?P<index>\d{5})-of-(?P<num>\d{5})$")


class PartExecutor(Protocol):
    """Runs the part configs of a stage somewhere (Ray tasks, local processes) and returns their results."""

    def default_parts(self, config: StageConfig) -> int:
        """How many parts a first attempt splits the input into."""
        ...

    def run(self, configs: Sequence[StageConfig]) -> list[StageResult]:
        """Every part's result, in order; after every part has ended, `parts_error` of those that failed."""
        ...


@dataclasses.dataclass(frozen=True)
class PartFailure:
    """Why one part failed: its own error's message (no traceback), and whether it was bad input."""

    index: int
    reason: str
    bad_input: bool = False


def parts_error(failures: Sequence[PartFailure], count: int, *, what: str) -> InputError | PartsFailed:
    """One error for the parts (of `count`) that failed, each named with its reason: `InputError` (exit 2)
    when a part's input was bad, as that is what the user must fix first, else `PartsFailed` (exit 1).

    >>> print(parts_error([PartFailure(1, "RuntimeError: out of memory")], 2, what="a replica"))
    a replica failed (part 2 of 2): RuntimeError: out of memory
    The parts written so far are kept: run the same command again to resume.
    """
    lines = [f"{what} failed (part {f.index + 1} of {count}): {f.reason}" for f in failures]
    bad_input = any(f.bad_input for f in failures)
    fix = "fix it, then " if bad_input else ""
    lines.append(f"The parts written so far are kept: {fix}run the same command again to resume.")
    text = "\n".join(lines)
    return InputError(text) if bad_input else PartsFailed(text)


def error_reason(exc: BaseException) -> str:
    """An exception as its type's name and its message, as a traceback ends, without the frames.

    >>> error_reason(MemoryError())
    'MemoryError'
    """
    if isinstance(exc, InputError):
        return exc.render()
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def run_in_parts(config: StageConfig, executor: PartExecutor, *, how: str) -> StageResult:
    """Run a stage as parts with `executor`, then merge them into `config.out`; `how` names the option
    that asked for parts, for messages. Returns the stage's result summed over the parts.

    --overwrite builds the new parts beside the old ones (`OUT/.parts/SPLIT.new`) and replaces the old
    parts and the old merged split only once every new part is complete: a run whose engine fails, or
    whose parts fail, keeps the old split as it was.
    """
    split = stage_spec(config).split
    work = config.work
    if work.part is not None:
        raise InputError(f"{how} splits the input itself; leave out ‹shard_index› and ‹num_shards›", where=how)
    out = Path(config.out).resolve()
    root = out / RUN_PARTS_FOLDER / split
    # One writer per run: the parts write their own folders under OUT/.parts, this process OUT itself.
    with writer_lock(out):
        refuse_linked_parts(out, split, overwrite=work.overwrite)
        if work.overwrite:
            folder = staging_folder(root)
            remove_folder(folder)  # the parts of an earlier --overwrite that failed: --overwrite starts again
        else:
            check_out_folder(out, split, root, how=how)
            folder = root
        num = existing_part_count(folder) or executor.default_parts(config)
        results = executor.run([part_config(config, folder, index, num) for index in range(num)])
        parts = [root / part_name(index, num) for index in range(num)]
        if work.overwrite:
            # Every new part is complete: only now do the old parts, then the old merged split, go.
            replace_parts(root, folder)
            merge_runs(parts, out, replace=True)
        elif not already_merged(out, split, parts):
            merge_runs(parts, out)
    return combine_results(results, out)


def staging_folder(root: Path) -> Path:
    """Where --overwrite builds the new parts of `root` (OUT/.parts/SPLIT) while the old ones stay.

    >>> staging_folder(Path("run/.parts/sft"))
    PosixPath('run/.parts/sft.new')
    """
    return root.with_name(root.name + STAGING_SUFFIX)


def remove_folder(folder: Path) -> None:
    """Delete a folder of labeler's own (one that is a symbolic link: the link only)."""
    if folder.is_symlink():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)  # links inside are removed, never followed


def replace_parts(root: Path, staging: Path) -> None:
    """Put the complete new parts in `staging` where the old parts in `root` were.

    The old folder is renamed aside before it is deleted, so `root` always holds one run's parts."""
    old = root.with_name(root.name + ".old")
    remove_folder(old)
    if root.is_symlink():
        root.unlink()
    elif root.exists():
        root.rename(old)
    staging.rename(root)
    remove_folder(old)


def refuse_linked_parts(out: Path, split: str, *, overwrite: bool) -> None:
    """Part folders reached through a symbolic link would be written (and, replaced, deleted) outside the
    run. OUT/.parts as a link is refused; OUT/.parts/SPLIT and OUT/SPLIT as links are refused unless
    --overwrite, which replaces the link itself, never the files it points to."""
    parts_dir = out / RUN_PARTS_FOLDER
    if parts_dir.is_symlink():
        raise InputError(
            "is a symbolic link: a run's part folders must be inside the run; delete the link "
            "(the files it points to are left alone), or give another ‹out›",
            file=parts_dir,
        )
    if overwrite:
        return
    for folder in (parts_dir / split, out / split):
        if folder.is_symlink():
            raise InputError(
                "is a symbolic link: a run's folders must be inside the run; pass ‹overwrite› to replace "
                "the link with a new folder (the files it points to are left alone), or give another ‹out›",
                file=folder,
            )


def part_name(index: int, num: int) -> str:
    """Folder of part `index` (from 0) of `num` under OUT/.parts/SPLIT.

    >>> part_name(1, 4)
    'part-00001-of-00004'
    """
    return f"part-{index:05d}-of-{num:05d}"


def part_config(config: StageConfig, root: Path, index: int, num: int) -> StageConfig:
    """The config of one part: the same stage and settings, writing part (index, num) to its own folder,
    with one model replica.

    Never `overwrite`: the parts of an --overwrite start in a fresh folder, and a part retried after its
    worker died must resume, not start again.
    """
    update = {"shard_index": index, "num_shards": num, "ray": None, "overwrite": False}
    changes: dict[str, Any] = {"out": root / part_name(index, num), "work": config.work.model_copy(update=update)}
    for name in stage_spec(config).engine_fields:
        engine = getattr(config, name)
        if engine is not None:
            changes[name] = engine.model_copy(update={"data_parallel_size": 1})
    return config.model_copy(update=changes)


def combine_results(results: Sequence[R], out: Path) -> R:
    """One result from the parts' results: counts summed, lists concatenated, `out` replaced.

    >>> from labeler.stages.revise import ReviseResult
    >>> combine_results([ReviseResult(Path("a"), written=2, skipped_too_long=["x"]),
    ...                  ReviseResult(Path("b"), written=3, skipped_too_long=["y"])], Path("run"))
    ReviseResult(out=PosixPath('run'), written=5, already_done=0, skipped_too_long=['x', 'y'], empty_outputs=0)
    """
    combined = _combine_values(list(results))
    return dataclasses.replace(combined, out=out)


def _combine_values(values: list[Any]) -> Any:
    first = values[0]
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        fields = {f.name: _combine_values([getattr(v, f.name) for v in values]) for f in dataclasses.fields(first)}
        return type(first)(**fields)
    if isinstance(first, bool):  # a flag of the run (such as `ranked`), the same in every part
        if any(value != first for value in values):
            raise TypeError("the parts disagree on a flag of the run")
        return first
    if isinstance(first, int | float):
        return sum(values)
    if isinstance(first, list):
        return [item for value in values for item in value]
    return first  # paths: the caller sets the merged run's


def existing_part_count(root: Path) -> int | None:
    """The number of parts an earlier attempt used (its folders), or None if there are none."""
    counts = set()
    for folder in root.glob("part-*"):
        if folder.is_symlink():
            raise InputError("is a symbolic link: a part folder must be inside the run; delete the link", file=folder)
        match = _PART_NAME.match(folder.name)
        if match is None:
            raise InputError("not a part folder of a run in parts; move it away or pass ‹overwrite›", file=folder)
        counts.add(int(match["num"]))
    if len(counts) > 1:
        raise InputError(f"part folders of runs with {sorted(counts)} parts; pass ‹overwrite›", file=root)
    return counts.pop() if counts else None


def check_out_folder(out: Path, split: str, root: Path, *, how: str) -> None:
    """Before any work: OUT must not hold this split, unless an earlier run in parts merged it there."""
    manifest = read_manifest(out)
    if manifest is not None and split in manifest.splits and not root.is_dir():
        raise InputError(
            f"already holds a {split!r} split not written in parts; {how} merges its parts into the run "
            "folder: use another ‹out›, or pass ‹overwrite› to replace the split",
            file=out / "manifest.json",
        )


def already_merged(out: Path, split: str, parts: Sequence[Path]) -> bool:
    """Whether OUT already holds exactly the parts' shards (a rerun of a finished run in parts)."""
    manifest = read_manifest(out)
    if manifest is None or split not in manifest.splits:
        return False
    merged = manifest.splits[split]
    expected = [(s.file, s.sha256) for part in parts for s in load_manifest(part).splits[split].shards]
    if merged.status == "complete" and [(s.file, s.sha256) for s in merged.shards] == expected:
        return True
    raise InputError(
        f"holds a merged {split!r} split that differs from its parts in {out / RUN_PARTS_FOLDER}; "
        "pass ‹overwrite› to redo the run",
        file=out / "manifest.json",
    )
