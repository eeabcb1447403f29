"""Peak memory of the stages against input size: it should not grow with the number of prompts.

Each measurement runs one stage (`label --pairs` or `revise`) over N synthetic rows in a fresh
subprocess, with the scripted fake engine of `tests/fake_engine.py` in place of a model (so the
numbers are the stage's and the store's, not a model's), and reads the child's own peak resident
set size (`getrusage(RUSAGE_SELF).ru_maxrss`) twice: just before the stage writes the dataset card
(the stage and the store: reading, generating, judging, writing shards) and at the end (the card
included, which computes its statistics from the verified shards).

    .venv/bin/python bench/memory.py --small 1000 --large 20000

Prints each peak and, per stage, the ratios large / small (streaming: within 1.10).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORDS = "apple river stone cloud green quick lamp seven paper music bright slow".split()
STAGES = ("label", "revise")
TARGET_RATIO = 1.10


def write_input(path: Path, stage: str, rows: int, seed: int = 0) -> Path:
    """A JSONL of `rows` prompts (revise) or response pairs (label), written row by row."""
    rng = random.Random(seed)

    def words(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))

    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            row = {"id": f"q{i:06d}", "prompt": f"Question {i}: {words(4, 16)}?"}
            if stage == "label":
                row = {"prompt": row["prompt"], "response_a": words(6, 30), "response_b": words(6, 30)}
            handle.write(json.dumps(row) + "\n")
    return path


def peak_mib() -> float:
    """This process's peak resident set size so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(stage: str, input_path: Path, out: Path) -> dict[str, float]:
    """Run one stage with the fake engine in this process; its peak RSS and what it wrote."""
    sys.path.insert(0, str(REPO / "tests"))
    from fake_engine import FakeEngine

    import labeler.stages.runner
    from labeler.stages.common import WorkSelection
    from labeler.stages.label import LabelConfig
    from labeler.stages.revise import ReviseConfig

    # The runner writes the card after the stage: note the peak just before it, to tell the two apart.
    peaks: dict[str, float] = {}
    write_card = labeler.stages.runner.write_card

    def write_card_after_noting_peak(run_dir: Path, **kwargs: object) -> Path:
        peaks["before_card_mib"] = peak_mib()
        return write_card(run_dir, **kwargs)

    labeler.stages.runner.write_card = write_card_after_noting_peak  # type: ignore[assignment]

    constitution = REPO / "constitutions" / "harmless.yaml"
    work = WorkSelection(quiet=True)
    start = time.perf_counter()
    config: LabelConfig | ReviseConfig
    if stage == "label":
        config = LabelConfig(constitution=constitution, pairs=input_path, out=out, work=work)
    else:
        config = ReviseConfig(constitution=constitution, prompts=input_path, out=out, rounds=1, work=work)
    written = labeler.stages.runner.run_stage(config, FakeEngine()).written
    seconds = time.perf_counter() - start
    return {**peaks, "peak_mib": peak_mib(), "rows": written, "seconds": seconds}


def measure(stage: str, rows: int, folder: Path) -> dict[str, float]:
    """Peak RSS of one stage over `rows` inputs, in a fresh interpreter."""
    input_path = write_input(folder / f"{stage}-{rows}.jsonl", stage, rows)
    out = folder / f"run-{stage}-{rows}"
    child = subprocess.run(
        [sys.executable, __file__, "--child", stage, str(input_path), str(out)],
        check=True, capture_output=True, text=True, cwd=REPO,
    )
    result: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    if result["rows"] != rows:
        raise RuntimeError(f"{stage} wrote {result['rows']} of {rows} rows:\n{child.stderr[-2000:]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1000, help="Rows in the small input.")
    parser.add_argument("--large", type=int, default=20000, help="Rows in the large input.")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="Stages to measure.")
    parser.add_argument("--child", nargs=3, metavar=("STAGE", "INPUT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stage, input_path, out = args.child
        print(json.dumps(run_child(stage, Path(input_path), Path(out))))
        return

    worst = {"before_card_mib": 0.0, "peak_mib": 0.0}
    with tempfile.TemporaryDirectory(prefix="labeler-memory-") as tmp:
        for stage in args.stages:
            small = measure(stage, args.small, Path(tmp))
            large = measure(stage, args.large, Path(tmp))
            for result in (small, large):
                print(f"{stage:7s} {int(result['rows']):>7d} rows: peak RSS {result['before_card_mib']:7.1f} MiB "
                      f"before the card, {result['peak_mib']:7.1f} MiB in all ({result['seconds']:.1f} s)")
            for key, what in (("before_card_mib", "before the card"), ("peak_mib", "in all")):
                ratio = large[key] / small[key]
                worst[key] = max(worst[key], ratio)
                print(f"{stage:7s} ratio {args.large}/{args.small} rows, {what}: {ratio:.3f}")
    for key, what in (("before_card_mib", "before the card"), ("peak_mib", "in all")):
        verdict = "ok" if worst[key] <= TARGET_RATIO else "TOO HIGH"
        print(f"worst ratio {what}: {worst[key]:.3f} (target <= {TARGET_RATIO:.2f}): {verdict}")


if __name__ == "__main__":
    main()
