"""A stage run as parts, each in its own run folder, merged into one run: on a Ray cluster, or in one
process per model replica on this node (`data_parallel_size`).

```
OUT/.parts/sft/part-00000-of-00004/   # one run folder per part, each written by one worker
OUT/manifest.json, OUT/sft/...         # the parts merged (hard links) once every part is complete
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

from labeler.errors import InputError
from labeler.stages.runner import StageConfig, StageResult, stage_spec
from labeler.store import load_manifest, merge_runs
from labeler.store.lock import writer_lock
from labeler.store.manifest import read_manifest

R = TypeVar("R")
PARTS_DIR = ".parts"
_PART_NAME = re.compile(r"^part-(?P<index>\d{5})-of-(?P<num>\d{5})$")


class PartExecutor(Protocol):
    """Runs the part configs of a stage somewhere (Ray tasks, local processes) and returns their results."""

    def default_parts(self, config: StageConfig) -> int:
        """How many parts a first attempt splits the input into."""
        ...

    def run(self, configs: Sequence[StageConfig]) -> list[StageResult]:
        """Every part's result, in order; raises the first part's error after every part has ended."""
        ...


def run_in_parts(config: StageConfig, executor: PartExecutor, *, how: str) -> StageResult:
    """Run a stage as parts with `executor`, then merge them into `config.out`; `how` names the option
    that asked for parts, for messages. Returns the stage's result summed over the parts."""
    split = stage_spec(config).split
    work = config.work
    if work.part is not None:
        raise InputError(f"{how} splits the input itself; leave out --shard-index and --num-shards", where=how)
    out = Path(config.out).resolve()
    root = out / PARTS_DIR / split
    # One writer per run: the parts write their own folders under OUT/.parts, this process OUT itself.
    with writer_lock(out):
        if work.overwrite:
            discard_previous_run(out, split, root)
        check_out_folder(out, split, root, how=how)
        num = existing_part_count(root) or executor.default_parts(config)
        results = executor.run([part_config(config, root, index, num) for index in range(num)])
        parts = [root / part_name(index, num) for index in range(num)]
        if not already_merged(out, split, parts):
            merge_runs(parts, out)
    return combine_results(results, out)


def part_name(index: int, num: int) -> str:
    """Folder of part `index` (from 0) of `num` under OUT/.parts/SPLIT.

    >>> part_name(1, 4)
    'part-00001-of-00004'
    """
    return f"part-{index:05d}-of-{num:05d}"


def part_config(config: StageConfig, root: Path, index: int, num: int) -> StageConfig:
    """The config of one part: the same stage and settings, writing part (index, num) to its own folder,
    with one model replica.

    Never `overwrite`: the driver discards an old run before starting the parts, and a part retried
    after its worker died must resume, not start again.
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
    if isinstance(first, bool):
        raise TypeError("cannot combine flags of parts")
    if isinstance(first, int | float):
        return sum(values)
    if isinstance(first, list):
        return [item for value in values for item in value]
    return first  # paths: the caller sets the merged run's


def existing_part_count(root: Path) -> int | None:
    """The number of parts an earlier attempt used (its folders), or None if there are none."""
    counts = set()
    for folder in root.glob("part-*"):
        match = _PART_NAME.match(folder.name)
        if match is None:
            raise InputError("not a part folder of a run in parts; move it away or pass --overwrite", file=folder)
        counts.add(int(match["num"]))
    if len(counts) > 1:
        raise InputError(f"part folders of runs with {sorted(counts)} parts; pass --overwrite", file=root)
    return counts.pop() if counts else None


def check_out_folder(out: Path, split: str, root: Path, *, how: str) -> None:
    """Before any work: OUT must not hold this split, unless an earlier run in parts merged it there."""
    manifest = read_manifest(out)
    if manifest is not None and split in manifest.splits and not root.is_dir():
        raise InputError(
            f"already holds a {split!r} split not written in parts; {how} merges its parts into the run "
            "folder: use another --out, or pass --overwrite to replace the split",
            file=out / "manifest.json",
        )


def discard_previous_run(out: Path, split: str, root: Path) -> None:
    """--overwrite: delete the parts and the merged split (the run's other splits stay)."""
    from labeler.store.manifest import manifest_lock, write_manifest

    manifest = read_manifest(out)
    if manifest is not None and split in manifest.splits:
        with manifest_lock(out):
            for shard in (out / split).glob("*.arrow"):
                shard.unlink()
            splits = {name: entry for name, entry in manifest.splits.items() if name != split}
            write_manifest(out, manifest.model_copy(update={"splits": splits}))
    if root.is_dir():
        shutil.rmtree(root)


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
        f"holds a merged {split!r} split that differs from its parts in {out / PARTS_DIR}; "
        "pass --overwrite to redo the run",
        file=out / "manifest.json",
    )
