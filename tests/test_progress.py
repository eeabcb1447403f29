"""Progress a run reports: its total shrinks by the items that need no work, and the rate counts only
the work of this run (not what a resumed run finds done)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from fake_engine import FakeEngine

from labeler.core.progress import progress_bar
from labeler.engine import Conversation, Generation, GenerationParams
from labeler.stages.common import WorkSelection
from labeler.stages.label import LabelConfig, label

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions/harmless.yaml"


def test_dropped_items_leave_the_total_and_the_last_line_is_complete() -> None:
    stream = io.StringIO()
    with progress_bar(4, "judging", unit="pairs", quiet=True, stream=stream) as advance:
        advance(3, dropped=1)
    assert stream.getvalue().splitlines()[-1].startswith("judging: 3/3 (100.0%)")


def test_items_dropped_after_the_last_advance_still_end_the_bar_full() -> None:
    stream = io.StringIO()
    with progress_bar(4, "judging", unit="pairs", quiet=True, stream=stream, every=1) as advance:
        advance(3)
        advance(0, dropped=1)
    assert stream.getvalue().splitlines()[-1].startswith("judging: 3/3 (100.0%)")


def test_the_rate_counts_only_the_items_of_this_run(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 110.0, 110.0])  # start, the advance, the last line: 10 s for 5 new items
    monkeypatch.setattr("labeler.core.progress.time.monotonic", lambda: next(clock))
    stream = io.StringIO()
    with progress_bar(2045, "judging", unit="pairs", completed=2040, quiet=True, stream=stream) as advance:
        advance(5)
    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("judging: 2045/2045 (100.0%) 0.50 pairs/s"), line


def test_the_rich_bar_total_shrinks_by_the_dropped_items() -> None:
    from rich.progress import Progress

    seen: list[tuple[float | None, float]] = []
    original = Progress.update

    def update(self: Progress, task_id: object, **fields: object) -> None:
        original(self, task_id, **fields)  # type: ignore[arg-type]
        task = self.tasks[0]
        seen.append((task.total, task.completed))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Progress, "update", update)
        with progress_bar(4, "judging", unit="pairs", quiet=False, stream=io.StringIO()) as advance:
            advance(3, dropped=1)
    assert seen[-1] == (3, 3)


class TwinEngine(FakeEngine):
    """Samples both responses to a prompt with "REPEAT" alike: a pair the label stage drops as identical."""

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams,
                 seeds: Sequence[int] | None = None) -> list[Generation]:
        out = super().generate(conversations, params, seeds)
        return [
            Generation((g.texts[0],) * len(g.texts), g.token_counts, g.finish_reasons)
            if any("REPEAT" in m.content for m in c) else g
            for c, g in zip(conversations, out)
        ]


def _label_lines(
    tmp_path: Path, prompts: list[dict[str, str]], capsys: pytest.CaptureFixture[str], limit: int | None = None
) -> list[str]:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in prompts))
    config = LabelConfig(constitution=HARMLESS, prompts=path, out=tmp_path / "run",
                         work=WorkSelection(batch_size=2, quiet=True, limit=limit))
    capsys.readouterr()
    label(config, judge=TwinEngine(), policy=TwinEngine())
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("judging:")]


def test_label_ends_full_when_a_pair_is_dropped_as_identical(tmp_path: Path, capsys) -> None:
    rows = [{"id": "a", "prompt": "Name a fruit."}, {"id": "b", "prompt": "Name a colour. REPEAT"},
            {"id": "c", "prompt": "Name an animal."}, {"id": "d", "prompt": "Name a tree."}]
    lines = _label_lines(tmp_path, rows, capsys)
    assert lines[-1].startswith("judging: 3/3 (100.0%)"), lines


def test_a_resumed_label_counts_what_it_finds_done_as_done(tmp_path: Path, capsys) -> None:
    rows = [{"id": str(i), "prompt": f"Name thing {i}."} for i in range(6)]
    _label_lines(tmp_path, rows, capsys, limit=4)
    lines = _label_lines(tmp_path, rows, capsys)  # the same run without the limit: a resume of four done
    done, total = re.match(r"judging: (\d+)/(\d+)", lines[-1]).groups()  # type: ignore[union-attr]
    assert (done, total) == ("6", "6"), lines
    first = re.match(r"judging: (\d+)/", lines[0]).group(1)  # type: ignore[union-attr]
    assert int(first) >= 4, lines  # the four judged before start the count
