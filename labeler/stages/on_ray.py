"""Running a stage on a Ray cluster: one engine per worker, each worker one part of the input.

The parts and their merge are `labeler.stages.parts`'s (the same as job arrays and model replicas);
this module only places the parts on Ray. Ray also retries a task whose worker died, and the retry
resumes its part. OUT must be on a filesystem every node sees, and labeler installed on every node.

    from labeler.stages.on_ray import RayOptions, run_on_ray
    result = run_on_ray(config, RayOptions(workers=8))   # config: a ReviseConfig or LabelConfig
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, Field

from labeler.core.errors import InputError
from labeler.stages.label import LabelConfig, LabelResult
from labeler.stages.parts import PartFailure, error_reason, parts_error, run_in_parts
from labeler.stages.registry import StageConfig, StageResult, stage_spec
from labeler.stages.revise import ReviseConfig, ReviseResult

LOCAL = "local"  # the address that starts a Ray instance on this machine
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
    executor = RayExecutor(config.work.ray, options or RayOptions())
    try:
        return run_in_parts(config, executor, how="‹ray›")
    finally:
        executor.shutdown()


class RayExecutor:
    """Runs each part as one Ray task (one engine each); starts Ray on first use unless connected."""

    def __init__(self, address: str | None, options: RayOptions) -> None:
        self.address = address
        self.options = options
        self.started_here = False

    def _ray(self) -> Any:
        import ray

        if not ray.is_initialized():
            address = None if (self.address or LOCAL) == LOCAL else self.address
            local_cpus = self.options.local_cpus if address is None else None
            ray.init(address=address, num_cpus=local_cpus, include_dashboard=False)
            self.started_here = True
        return ray

    def default_parts(self, config: StageConfig) -> int:
        return _default_workers(self._ray().cluster_resources(), self.options, config)

    def run(self, configs: Sequence[StageConfig]) -> list[StageResult]:
        from ray.exceptions import RayTaskError

        ray = self._ray()
        num_gpus = _gpus_per_worker(ray.cluster_resources(), self.options, configs[0])
        task = ray.remote(_run_part).options(
            num_cpus=self.options.num_cpus, num_gpus=num_gpus, max_retries=TASK_RETRIES, retry_exceptions=False
        )
        cwd = os.getcwd()
        refs = [task.remote(config, cwd) for config in configs]
        # Wait for every part, even after one fails: the others' work is then on disk for the rerun.
        results: list[StageResult] = []
        failures: list[PartFailure] = []
        for index, ref in enumerate(refs):
            try:
                results.append(ray.get(ref))
            except RayTaskError as exc:
                # The task's own error, not Ray's traceback of it. Bad input (another run in a part's
                # folder, a bad row) stays bad input: exit 2.
                cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                failures.append(PartFailure(index, error_reason(cause), bad_input=isinstance(cause, InputError)))
        if failures:
            raise parts_error(failures, len(refs), what="a Ray task")
        return results

    def shutdown(self) -> None:
        if self.started_here:
            import ray

            ray.shutdown()


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
