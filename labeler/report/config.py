"""The options of `labeler report`, in one frozen model (kept apart from the plotting code, so the CLI
can read its help texts without importing matplotlib)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ReportConfig(BaseModel):
    """What `labeler report` reports on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run: Path = Field(description="Run folder (with manifest.json) to report on.")
    human_pairs: Path | None = Field(
        None,
        description="Human-labelled pairs (JSONL, Parquet or Arrow with prompt, chosen, rejected): pairs of the "
        "preference split found in it give the judge's agreement and a reliability diagram.",
    )
    rm_dirs: tuple[Path, ...] = Field(
        (),
        description="Reward-model output folders (or metrics.jsonl files) whose training curves to plot; "
        "RUN/rm/metrics.jsonl is used too when present.",
    )
    eval_judge: Path | None = Field(
        None,
        description="An eval-judge JSON (a `pairs` list with `p_chosen` per pair) to plot calibration from; "
        "default: RUN/report/eval_judge.json when present.",
    )
    eval_policy: tuple[Path, ...] = Field(
        (),
        description="eval-policy JSON files (`labeler eval-policy --out`) to show in the policy section; "
        "RUN/eval-policy.json and each iteration's RUN/iter-<k>/eval-policy.json are shown too when present.",
    )
