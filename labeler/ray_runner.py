"""Running a stage on a Ray cluster: one engine per worker, each worker one part of a job array.

```
OUT/.parts/sft/part-00000-of-00004/   # one run folder per part, each written by one Ray task
OUT/manifest.json, OUT/sft/...         # the parts merged (hard links) once every part is complete
```

Part `i` of `N` is exactly what `--shard-index i --num-shards N` selects, and `merge_runs` checks that
the parts share one fingerprint, cover every index once and never repeat a record, so the merged run
is the same dataset as a single-process run. Crash or preemption: run the same command again. Each
part resumes from its own folder (the number of parts is read back from the folders, whatever the
cluster's size is now), then the merge is done, or found done. Ray also retries a task whose worker
died, and the retry resumes the same way.

OUT must be on a filesystem every node sees, and labeler installed on every node.

    from labeler.ray_runner import RayOptions, run_on_ray
    result = run_on_ray(config, RayOptions(workers=8))   # config: a ReviseConfig or LabelConfig
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field

from labeler.errors import InputError
from labeler.stages.label import LabelConfig, LabelResult
from labeler.stages.revise import ReviseConfig, ReviseResult
from labeler.stages.runner import StageConfig, StageResult, stage_spec
from labeler.store import load_manifest
from labeler.store.manifest import read_manifest
from labeler.store.parts import merge_runs

R = TypeVar("R")

LOCAL = "local"  # the address that starts a Ray instance on this machine
PARTS_DIR = ".parts"
_PART_NAME = re.compile(r"^part-(?P<index>\d{5})-of-(?P<num>\d{5})$")
TASK_RETRIES = 3  # a worker lost to preemption or a crash: Ray reruns its part, which resumes


class RayOptions(BaseModel):
    """How a stage is spread over a Ray cluster (the address is the config's `work.ray`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int | None = Field(
        None,
        ge=1,
        description="Parts, one Ray task and one engine each (default: one per GPU, else one per num_cpus CPUs).",
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves for each worker.")
    num_gpus: float | None = Field(
        None,
        ge=0,
        description="GPUs for each worker (default: the engine's tensor_parallel_size on GPU clusters, else 0).",
    )
    local_cpus: int | None = Field(
        None, ge=1, description="CPUs of a Ray instance started on this machine (default: all it has)."
    )


@overload
def run_on_ray(config: ReviseConfig, options: RayOptions | None = None) -> ReviseResult: ...


@overload
def run_on_ray(config: LabelConfig, options: RayOptions | None = None) -> LabelResult: ...


def run_on_ray(config: StageConfig, options: RayOptions | None = None) -> StageResult:
    """Run `revise` or `label` over the parts of the input on Ray, then merge the parts into `config.out`.

    Connects to `config.work.ray` ('local' starts Ray here), or uses the Ray connection this process
    already has. Returns the stage's result summed over the parts, with `out` the merged run.
    """
    options = options or RayOptions()
    split = stage_spec(config).split
    work = config.work
    if work.part is not None:
        raise InputError("--ray splits the input itself; leave out --shard-index and --num-shards", where="--ray")
    out = Path(config.out).resolve()
    root = out / PARTS_DIR / split
    if work.overwrite:
        _discard_previous_run(out, split, root)
    _check_out_folder(out, split, root)

    import ray
    from ray.exceptions import RayTaskError

    started_here = not ray.is_initialized()
    if started_here:
        address = None if (work.ray or LOCAL) == LOCAL else work.ray
        ray.init(address=address, num_cpus=options.local_cpus if address is None else None, include_dashboard=False)
    try:
        num = _existing_part_count(root) or _default_workers(ray.cluster_resources(), options, config)
        num_gpus = _gpus_per_worker(ray.cluster_resources(), options, config)
        task = ray.remote(_run_part).options(
            num_cpus=options.num_cpus, num_gpus=num_gpus, max_retries=TASK_RETRIES, retry_exceptions=False
        )
        cwd = os.getcwd()
        refs = [task.remote(part_config(config, root, index, num), cwd) for index in range(num)]
        # Wait for every part, even after one fails: the others' work is then on disk for the rerun.
        results: list[StageResult] = []
        failures: list[RayTaskError] = []
        for ref in refs:
            try:
                results.append(ray.get(ref))
            except RayTaskError as exc:
                failures.append(exc)
        if failures:
            first = failures[0]
            # Bad input (another run in a part's folder, a bad row) is reported as if run here: exit 2.
            if isinstance(first.cause, InputError):
                raise first.cause from None
            raise first
    finally:
        if started_here:
            ray.shutdown()

    parts = [root / part_name(index, num) for index in range(num)]
    if not _already_merged(out, split, parts):
        merge_runs(parts, out)
    return combine_results(results, out)


def part_name(index: int, num: int) -> str:
    """Folder of part `index` (from 0) of `num` under OUT/.parts/SPLIT.

    >>> part_name(1, 4)
    'part-00001-of-00004'
    """
    return f"part-{index:05d}-of-{num:05d}"


def part_config(config: StageConfig, root: Path, index: int, num: int) -> StageConfig:
    """The config of one part: the same stage and settings, writing part (index, num) to its own folder.

    Never `overwrite`: the driver discards an old run before starting the parts, and a task that Ray
    retries after its worker died must resume its part, not start it again.
    """
    update = {"shard_index": index, "num_shards": num, "ray": None, "overwrite": False}
    work = config.work.model_copy(update=update)
    return config.model_copy(update={"out": root / part_name(index, num), "work": work})


def combine_results(results: Sequence[R], out: Path) -> R:
    """One result from the parts' results: counts summed, lists concatenated, `out` replaced.

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


def _run_part(config: StageConfig, cwd: str) -> StageResult:
    """One Ray task: the stage over one part, with its own engine, in the worker's process."""
    # Engines of several workers share a node's cores, and OpenMP threads that spin while they wait
    # starve the others' (a CPU engine ran 8x slower beside another). Read when torch loads, so it
    # holds for the engine this task opens in a fresh worker.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Paths in the config are relative to where the command ran (and the fingerprint keeps them as
    # given, so they are not rewritten): run from there when this node has that folder too.
    if os.path.isdir(cwd):
        os.chdir(cwd)
    result: StageResult = stage_spec(config).run(config, None)
    return result


def _existing_part_count(root: Path) -> int | None:
    """The number of parts an earlier attempt used (its folders), or None if there are none."""
    counts = set()
    for folder in root.glob("part-*"):
        match = _PART_NAME.match(folder.name)
        if match is None:
            raise InputError("not a part folder of a Ray run; move it away or pass --overwrite", file=folder)
        counts.add(int(match["num"]))
    if len(counts) > 1:
        raise InputError(f"part folders of runs with {sorted(counts)} parts; pass --overwrite", file=root)
    return counts.pop() if counts else None


def _default_workers(resources: dict[str, float], options: RayOptions, config: StageConfig) -> int:
    """Parts for a first attempt: as many as the cluster has room for engines."""
    if options.workers is not None:
        return options.workers
    gpus = _gpus_per_worker(resources, options, config)
    room = resources.get("GPU", 0.0) / gpus if gpus else resources.get("CPU", 1.0) / options.num_cpus
    return max(1, math.floor(room))


def _gpus_per_worker(resources: dict[str, float], options: RayOptions, config: StageConfig) -> float:
    if options.num_gpus is not None:
        return options.num_gpus
    if not resources.get("GPU"):
        return 0.0
    return float(stage_spec(config).engine(config).tensor_parallel_size)


def _check_out_folder(out: Path, split: str, root: Path) -> None:
    """Before any work: OUT must be new, or hold this split merged by an earlier Ray run of it."""
    manifest = read_manifest(out)
    if manifest is None:
        return
    if set(manifest.splits) != {split} or not root.is_dir():
        raise InputError(
            f"already holds a run with splits {sorted(manifest.splits)} not written with --ray; --ray merges "
            "its parts into a new run folder: use another --out, or pass --overwrite to replace "
            f"the {split!r} split",
            file=out / "manifest.json",
        )


def _discard_previous_run(out: Path, split: str, root: Path) -> None:
    """--overwrite: delete the parts and the merged split (only when the run holds nothing else)."""
    manifest = read_manifest(out)
    if manifest is not None:
        others = sorted(set(manifest.splits) - {split})
        if others:
            raise InputError(
                f"also holds the split(s) {others}, which --overwrite of a --ray run would lose; use another --out",
                file=out / "manifest.json",
            )
        for shard in (out / split).glob("*.arrow"):
            shard.unlink()
        (out / "manifest.json").unlink()
    if root.is_dir():
        shutil.rmtree(root)


def _already_merged(out: Path, split: str, parts: Sequence[Path]) -> bool:
    """Whether OUT already holds exactly the parts' shards (a rerun of a finished Ray run)."""
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
