"""A part that fails (a replica's engine, a Ray task) is named in one message with its own error, not a
traceback; the parts written so far stay for the rerun. Bad input in a part keeps exit code 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from labeler.core.errors import InputError, PartsFailed
from labeler.engine.model_ref import FORBID_LOAD_ENV
from labeler.stages.parts import PartFailure, error_reason, parts_error

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions" / "harmless.yaml"
PROMPTS = REPO / "data" / "sample_prompts.jsonl"
TIMEOUT = 120


def env() -> dict[str, str]:
    # This checkout's labeler, whatever the working directory of the command.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "PYTHONPATH": path}


def test_replicas_whose_engines_fail_name_the_part_and_why_in_one_message(tmp_path: Path, embedded_model: Path) -> None:
    """Real replica processes (`--data-parallel-size 2`), each failing as it loads its model."""
    failed = subprocess.run(
        [sys.executable, "-m", "labeler", "revise", "--constitution", str(HARMLESS), "--prompts", str(PROMPTS),
         "--out", str(tmp_path / "out"), "--engine", "hf", "--model", str(embedded_model), "--dtype", "float32",
         "--limit", "4", "--rounds", "1", "--max-tokens", "8", "--data-parallel-size", "2", "--quiet"],
        capture_output=True, text=True, env={**env(), FORBID_LOAD_ENV: "1"}, cwd=REPO, timeout=TIMEOUT,
    )  # fmt: skip
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr, failed.stderr[-2000:]
    # A part with rows to revise loads its model and fails; one without any (4 rows, hashed into 2 parts)
    # may finish. Each failed part is one line: which part, and its own error.
    failures = re.findall(r"a replica failed \(part ([12]) of 2\): (.*)", failed.stderr)
    assert failures, failed.stderr
    for _, reason in failures:
        assert reason.startswith(f"RuntimeError: {FORBID_LOAD_ENV} is set, but something tried to load"), reason
    last = failed.stderr.strip().splitlines()[-(len(failures) + 1) :]
    assert last[-1] == "The parts written so far are kept: run the same command again to resume.", failed.stderr
    assert last[0].startswith("error: a replica failed"), failed.stderr  # the message and nothing after it


def test_bad_input_in_a_part_stays_bad_input() -> None:
    error = parts_error([PartFailure(0, "RuntimeError: the engine died"),
                         PartFailure(1, InputError("not JSON", file="rows.jsonl", line=7).render(), bad_input=True)],
                        2, what="a replica")  # fmt: skip
    assert isinstance(error, InputError)  # exit code 2
    assert "a replica failed (part 2 of 2): rows.jsonl:7: not JSON" in str(error)
    assert "a replica failed (part 1 of 2): RuntimeError: the engine died" in str(error)
    assert "fix it, then run the same command again" in str(error)


def test_a_part_that_failed_otherwise_is_a_failure_naming_it() -> None:
    error = parts_error([PartFailure(2, error_reason(MemoryError()))], 3, what="a Ray task")
    assert isinstance(error, PartsFailed) and not isinstance(error, InputError)  # exit code 1
    assert str(error).splitlines() == [
        "a Ray task failed (part 3 of 3): MemoryError",
        "The parts written so far are kept: run the same command again to resume.",
    ]
