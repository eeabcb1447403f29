"""Choice-score precision and batch dependence on the shortest pairs of the HH-RLHF dev set.

    python bench/choice_precision.py ENGINE DTYPE CHOICE_LOGITS N OUT.json   # per-order differences
    python bench/choice_precision.py ENGINE DTYPE CHOICE_LOGITS N --batch     # worst |p_a(1) - p_a(N)|

Pairs: the N shortest of ../shared/data/hh-rlhf-dev.jsonl (conversation and both replies, in characters),
judged in both orders under the default constitution. The first form writes each pair's log-probabilities
and p_a, and prints how many distinct per-order differences log P(A) - log P(B) there are and how many
p_a are exactly 0.5; compare two OUT files for |bfloat16 - float32|. The second judges the pairs as one
batch and again one at a time in reverse order.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from labeler.engine import EngineConfig, open_engine
from labeler.evaluate.judge_run import DEFAULT_CONSTITUTION, read_human_pairs
from labeler.inputs.constitution import load_constitution
from labeler.inputs.templates import Templates
from labeler.stages.judge import JudgeOptions, judge_pairs, panel_for

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-dev.jsonl"


def main() -> None:
    name, dtype, choice_logits, n, target = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    human = sorted(read_human_pairs(DEV, "axis", 0),
                   key=lambda h: len(str(h.pair.messages)) + len(h.pair.response_a) + len(h.pair.response_b))
    pairs = [h.pair for h in human[:n]]
    options = JudgeOptions()
    panel = panel_for(load_constitution(DEFAULT_CONSTITUTION), options, str(DEFAULT_CONSTITUTION))
    templates = Templates.load(None)
    config = EngineConfig(name=name, dtype=dtype, choice_logits=choice_logits)  # type: ignore[arg-type]
    with open_engine(config) as engine:

        def run(batch: int, ordered: list) -> dict[str, float]:
            if hasattr(engine, "batch_size"):
                engine.batch_size = batch
            out = {}
            for start in range(0, len(ordered), batch):
                out.update({r.id: r.p_a for r in judge_pairs(engine, templates, panel, ordered[start:start + batch],
                                                             options)})
            return out

        if target == "--batch":
            big, one = run(n, pairs), run(1, pairs[::-1])
            print(name, dtype, choice_logits, "worst |p_a(1) - p_a(n)|", max(abs(big[k] - one[k]) for k in big))
            return
        start = time.time()
        records = judge_pairs(engine, templates, panel, pairs, options)
        seconds = time.time() - start
    Path(target).write_text(json.dumps([{"ab": r.logprobs_ab, "ba": r.logprobs_ba, "p_a": r.p_a} for r in records]))
    d = np.array([r.logprobs_ab[0] - r.logprobs_ab[1] for r in records])
    print(name, dtype, choice_logits, f"{seconds:.1f}s", "distinct differences", len(set(np.round(d, 6))),
          "p_a exactly 0.5", sum(r.p_a == 0.5 for r in records))


if __name__ == "__main__":
    main()
