"""`--ray`: a stage spread over Ray workers, one engine and one part each, merged into one run that
must be the same dataset as a single-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labeler.cli.app import main
from labeler.core.errors import InputError
from labeler.core.layout import RUN_PARTS_FOLDER
from labeler.engine import EngineConfig, GenerationParams
from labeler.pipeline.run import ReviseStage, RunConfig, Stages, run_pipeline
from labeler.stages.common import WorkSelection, fingerprint_config
from labeler.stages.label import LabelResult
from labeler.stages.on_ray import RayOptions, _default_workers, run_on_ray
from labeler.stages.pairs import PairCounts
from labeler.stages.parts import combine_results, existing_part_count, part_config, part_name
from labeler.stages.revise import ReviseConfig
from labeler.store import iter_records, load_manifest

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions/harmless.yaml"
PROMPTS = REPO / "data/sample_prompts.jsonl"
LIMIT = 5  # the first five sample prompts fall into both parts of two


def revise_config(out: Path, model: str = "default", **work: object) -> ReviseConfig:
    return ReviseConfig(
        constitution=HARMLESS,
        prompts=PROMPTS,
        out=out,
        rounds=1,
        engine=EngineConfig(name="hf", model=model, dtype="float32"),
        sampling=GenerationParams(temperature=0.7, top_p=0.95, max_tokens=16),
        work=WorkSelection(limit=LIMIT, batch_size=2, quiet=True, **work),
    )


def records_by_id(run: Path, split: str = "sft") -> dict[str, dict]:
    return {record.id: record.model_dump() for record in iter_records(run, split)}


def test_a_part_keeps_the_fingerprint_and_never_overwrites(tmp_path: Path) -> None:
    config = revise_config(tmp_path / "out", ray="local", overwrite=True)
    part = part_config(config, tmp_path / "out" / RUN_PARTS_FOLDER / "sft", 1, 3)
    assert part.work.part == (1, 3) and part.work.ray is None and not part.work.overwrite
    assert part.out == tmp_path / "out" / RUN_PARTS_FOLDER / "sft" / "part-00001-of-00003"
    assert fingerprint_config(part) == fingerprint_config(config)


def test_results_of_parts_add_up(tmp_path: Path) -> None:
    parts = [LabelResult(tmp_path / "a", 3, 1, PairCounts(2)), LabelResult(tmp_path / "b", 4, 0, PairCounts(1))]
    assert combine_results(parts, tmp_path) == LabelResult(tmp_path, 7, 1, PairCounts(3))


def test_workers_default_to_one_per_gpu_else_per_cpus(tmp_path: Path) -> None:
    config = revise_config(tmp_path)
    assert _default_workers({"CPU": 2.0}, RayOptions(), config) == 2
    assert _default_workers({"CPU": 16.0}, RayOptions(num_cpus=4), config) == 4
    assert _default_workers({"CPU": 64.0, "GPU": 8.0}, RayOptions(), config) == 8
    tensor_parallel = config.model_copy(update={"engine": config.engine.model_copy(update={"tensor_parallel_size": 2})})
    assert _default_workers({"CPU": 64.0, "GPU": 8.0}, RayOptions(), tensor_parallel) == 4
    assert _default_workers({"CPU": 64.0}, RayOptions(workers=3), config) == 3


def test_a_rerun_keeps_the_number_of_parts_it_started_with(tmp_path: Path) -> None:
    assert existing_part_count(tmp_path) is None
    for index in range(3):
        (tmp_path / part_name(index, 3)).mkdir()
    assert existing_part_count(tmp_path) == 3
    (tmp_path / part_name(0, 2)).mkdir()
    with pytest.raises(InputError, match=r"\[2, 3\] parts"):
        existing_part_count(tmp_path)


def test_bad_ray_requests_exit_2_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["revise", "--constitution", str(HARMLESS), "--prompts", str(PROMPTS), "--out", str(tmp_path / "x"),
            "--engine", "hf", "--ray", "local"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--shard-index", "0", "--num-shards", "2"])
    assert exit_info.value.code == 2 and "--ray" in capsys.readouterr().err
    # A folder holding a run made without --ray is not merged into.
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_text(
        '{"labeler_version": "0", "created": "t", "updated": "t", '
        '"splits": {"sft": {"fingerprint": {}, "status": "complete"}}}'
    )
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and "not written in parts" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray instance of two CPUs, quiet, shut down after the module."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 1024**2)
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_revise_on_two_ray_workers_equals_one_process(ray_cluster: None, embedded_model: Path, tmp_path: Path) -> None:
    # The single-process reference through the CLI, running while the Ray workers do.
    single = tmp_path / "single"
    reference = subprocess.Popen(
        [sys.executable, "-m", "labeler", "revise", "--constitution", str(HARMLESS), "--prompts", str(PROMPTS),
         "--out", str(single), "--engine", "hf", "--model", str(embedded_model), "--dtype", "float32",
         "--limit", str(LIMIT), "--batch-size", "2", "--rounds", "1", "--max-tokens", "16", "--quiet"],
        cwd=REPO, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    out = tmp_path / "ray"
    config = revise_config(out, str(embedded_model), ray="local")
    result = run_on_ray(config, RayOptions(workers=2))
    stdout, stderr = reference.communicate(timeout=600)
    assert reference.returncode == 0, stderr[-3000:]

    assert (result.out, result.written, result.already_done) == (out.resolve(), LIMIT, 0)
    parts = [out / RUN_PARTS_FOLDER / "sft" / part_name(index, 2) for index in range(2)]
    assert all(len(records_by_id(part)) > 0 for part in parts)  # both workers had prompts
    assert records_by_id(out) == records_by_id(single)
    assert load_manifest(out).splits["sft"].fingerprint == load_manifest(single).splits["sft"].fingerprint

    # Running the finished command again resumes every part, finds nothing to do, and keeps the merge.
    shards = load_manifest(out).splits["sft"].shards
    again = run_on_ray(config, RayOptions(workers=2))
    assert (again.written, again.already_done) == (0, LIMIT)
    assert load_manifest(out).splits["sft"].shards == shards

    # `labeler run` with `work.ray` set spreads its stages over the workers the same way.
    piped = tmp_path / "pipeline"
    run_pipeline(RunConfig(
        out=piped, constitution=HARMLESS, prompts=PROMPTS, engine=config.engine, work=config.work,
        stages=Stages(revise=ReviseStage(rounds=1, sampling=config.sampling), label=None, report=False),
    ))  # fmt: skip
    assert (piped / RUN_PARTS_FOLDER / "sft" / part_name(1, 2)).is_dir()  # made by the Ray workers
    assert records_by_id(piped) == records_by_id(single)


