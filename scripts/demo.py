"""`make demo`: the main job end to end on the embedded model.

revise → label (with SALMON scores) → train a small reward model → report, from configs/demo.yaml;
then the judge's agreement with a small human-labelled sample written for the project.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from labeler.cli.app import main as labeler

REPO = Path(__file__).resolve().parent.parent


def step(title: str, args: list[str]) -> None:
    print(f"\n== {title}: labeler {' '.join(args)}", flush=True)
    started = time.monotonic()
    try:
        labeler(args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    print(f"== {title} took {time.monotonic() - started:.0f} s", flush=True)


def main() -> None:
    step("the whole job", ["run", str(REPO / "configs/demo.yaml")])
    step(
        "judge agreement with human labels",
        ["eval-judge", "--pairs", str(REPO / "data/human_pairs.jsonl"), "--group-by", "category",
         "--out", str(REPO / "data/runs/demo/eval_judge.json")],
    )
    run = REPO / "data/runs/demo"
    step("report with the judge's calibration", ["report", str(run), "--eval-judge", str(run / "eval_judge.json")])
    print(
        f"\ndataset:      {run / 'preferences'} (SFT split: {run / 'sft'})\n"
        f"dataset card: {run / 'README.md'}\n"
        f"reward model: {run / 'rm'}\n"
        f"report:       {run / 'report' / 'index.html'}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
