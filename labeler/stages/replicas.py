"""Every GPU of a node busy: one model replica per group of GPUs (or CPU cores), one process each.

With `data_parallel_size` N, a stage runs as N parts (`labeler.stages.parts`), each in its own process
that sees only its own devices: `tensor_parallel_size` GPUs through `CUDA_VISIBLE_DEVICES`, or an equal
share of the CPU cores through its affinity. The parts are merged into one run, the same dataset one
replica makes.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from labeler.core.errors import InputError
from labeler.stages.parts import PartFailure, error_reason, parts_error
from labeler.stages.registry import StageConfig, StageResult, stage_spec


def device_groups(count: int, per_replica: int, devices: Sequence[int]) -> list[list[int]]:
    """`count` disjoint groups of `per_replica` devices, in order; `InputError` when there are too few.

    >>> device_groups(2, 2, [0, 1, 2, 3, 4])
    [[0, 1], [2, 3]]
    """
    if count * per_replica > len(devices):
        raise InputError(
            f"{count} replicas of {per_replica} device(s) each need {count * per_replica}, "
            f"but this process sees {len(devices)}",
            field="data_parallel_size",
        )
    return [list(devices[i * per_replica : (i + 1) * per_replica]) for i in range(count)]


@dataclass(frozen=True)
class Placement:
    """Where one replica runs: GPU ids, or CPU cores."""

    gpus: tuple[int, ...] = ()
    cores: tuple[int, ...] = ()

    def environment(self) -> dict[str, str]:
        """Environment variables a replica's process sets before it imports torch or vLLM."""
        if self.gpus:
            return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, self.gpus))}
        from labeler.engine.vllm_engine import cpu_bind_spec

        return {
            "VLLM_CPU_OMP_THREADS_BIND": cpu_bind_spec(set(self.cores)),
            "OMP_NUM_THREADS": str(len(self.cores)),
            # OpenMP threads that spin while they wait starve the other replicas' cores.
            "OMP_WAIT_POLICY": "PASSIVE",
        }


def placements(count: int, tensor_parallel_size: int) -> list[Placement]:
    """Where each of `count` replicas runs: GPU groups on a GPU node, else equal shares of the cores."""
    import torch

    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = [int(g) for g in visible.split(",") if g.strip()] if visible else list(range(torch.cuda.device_count()))
        return [Placement(gpus=tuple(g)) for g in device_groups(count, tensor_parallel_size, gpus)]
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // count)
    return [Placement(cores=tuple(c)) for c in device_groups(count, share, cores)]


class ReplicaExecutor:
    """Runs each part in its own process, placed on its own devices, all at once."""

    def default_parts(self, config: StageConfig) -> int:
        return stage_spec(config).engine(config).data_parallel_size

    def run(self, configs: Sequence[StageConfig]) -> list[StageResult]:
        tensor_parallel = stage_spec(configs[0]).engine(configs[0]).tensor_parallel_size
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: devices chosen before torch loads
        workers = []
        for config, placement in zip(configs, placements(len(configs), tensor_parallel), strict=True):
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=_replica, args=(config, placement, os.getcwd(), send))
            process.start()
            send.close()
            workers.append((process, receive))
        outcomes: list[tuple[str, Any]] = []
        try:
            for process, receive in workers:
                try:
                    outcomes.append(receive.recv())
                except EOFError:  # the process died without a word (killed, out of memory)
                    outcomes.append(("error", f"its process ended with exit code {process.exitcode}"))
                process.join()
        finally:
            for process, _ in workers:
                if process.is_alive() and process.pid is not None:
                    _kill_tree(process.pid)
        # Every part has ended: the others' work is on disk for a rerun, whatever failed.
        failures = [PartFailure(index, value, bad_input=kind == "input")
                    for index, (kind, value) in enumerate(outcomes) if kind != "ok"]  # fmt: skip
        if failures:
            raise parts_error(failures, len(outcomes), what="a replica")
        return [value for _, value in outcomes]


def _replica(config: StageConfig, placement: Placement, cwd: str, send: Any) -> None:
    """One replica's process: its devices, then the stage over its part, then its result to the parent."""
    os.environ.update(placement.environment())
    if placement.cores:
        os.sched_setaffinity(0, placement.cores)
    os.chdir(cwd)
    try:
        send.send(("ok", stage_spec(config).run(config, None)))
    except InputError as exc:
        send.send(("input", exc.render()))
    except Exception as exc:  # reported to the parent, which names the part: its message, not its frames
        send.send(("error", error_reason(exc)))


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    for process in [*parent.children(recursive=True), parent]:
        process.kill()
