"""Progress for long work: a rich bar (description, bar, done/total, rate, elapsed, ETA) on a terminal,
plain log lines where there is none (batch jobs, CI logs) or when asked to be quiet.

    with progress_bar(len(todo), "judging", unit="pairs", completed=len(done)) as advance:
        for batch in batches:
            ...
            advance(len(batch), dropped=len(left_out))  # items of the total that will never come

Output goes to stderr, so stdout stays free for what a command prints as its result.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class Advance(Protocol):
    """Call as work finishes: `advance(k)` items done, with an optional short note (e.g. the loss);
    `dropped` items of the total turned out to need no work (a pair of two identical responses): the
    total shrinks by as many, so that the bar ends full."""

    def __call__(self, k: int = 1, note: str | None = None, *, dropped: int = 0) -> None: ...


def rate_text(speed: float | None, unit: str) -> str:
    """Items per second, or seconds per item when slower than one a second.

    >>> rate_text(12.34, "pairs"), rate_text(0.1, "steps"), rate_text(None, "steps")
    ('12.3 pairs/s', '10.0 s/step', '- steps/s')
    """
    if speed is None or speed <= 0:
        return f"- {unit}/s"
    if speed < 1:
        return f"{1 / speed:.1f} s/{unit.removesuffix('s')}"
    return f"{speed:.1f} {unit}/s"


class RateColumn(ProgressColumn):
    """The rate of a task (see `rate_text`)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(rate_text(task.finished_speed or task.speed, self.unit), style="progress.data.speed")


def format_duration(seconds: float) -> str:
    """H:MM:SS.

    >>> format_duration(3725.4)
    '1:02:05'
    """
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def log_line(
    description: str, done: int, total: int | None, rate: float, elapsed: float, unit: str, note: str = ""
) -> str:
    """One plain progress line (the quiet form of the bar).

    >>> log_line("judging", 50, 200, 2.5, 20.0, "pairs")
    'judging: 50/200 (25.0%) 2.50 pairs/s elapsed 0:00:20 eta 0:01:00'
    >>> log_line("ppo", 5, None, 0.25, 20.0, "steps", "reward 0.4")
    'ppo: 5 0.25 steps/s elapsed 0:00:20 reward 0.4'
    """
    if total is None:
        line = f"{description}: {done} {rate:.2f} {unit}/s elapsed {format_duration(elapsed)}"
    else:
        percent = done / total if total else 1.0
        eta = format_duration((total - done) / rate) if rate > 0 else "-"
        line = (
            f"{description}: {done}/{total} ({percent:.1%}) {rate:.2f} {unit}/s "
            f"elapsed {format_duration(elapsed)} eta {eta}"
        )
    return f"{line} {note}" if note else line


@contextlib.contextmanager
def progress_bar(
    total: int | None,
    description: str,
    *,
    unit: str = "items",
    completed: int = 0,
    quiet: bool | None = None,
    every: int | None = None,
    interval_s: float = 30.0,
    stream: TextIO | None = None,
    enabled: bool = True,
) -> Iterator[Advance]:
    """Show progress of `total` items (None if unknown); yields `advance(k, note)` to call as items finish.

    `completed` items were done before (a resumed run): they count toward done/total, not the rate.
    `quiet=None` picks the bar on a terminal and log lines elsewhere. Log lines are printed every
    `every` items (default: every 10 % of `total`) or `interval_s` seconds, whichever comes first,
    and once at the end; the latest note ends each line. `enabled=False` shows nothing (e.g. on the
    other processes of a distributed run).
    """
    if not enabled:
        yield lambda k=1, note=None, *, dropped=0: None
        return
    stream = stream if stream is not None else sys.stderr
    if quiet is None:
        quiet = not stream.isatty()
    if quiet:
        with _log_lines(total, description, unit, completed, every, interval_s, stream) as advance:
            yield advance
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
    )
    # A long step (PPO on a large model) must not make the rate and ETA forget earlier steps.
    with Progress(*columns, console=Console(file=stream), speed_estimate_period=3600.0) as progress:
        task = progress.add_task(description, total=total, completed=completed, note="")
        expected = total

        def advance(k: int = 1, note: str | None = None, *, dropped: int = 0) -> None:
            nonlocal expected
            if dropped and expected is not None:
                expected -= dropped
                progress.update(task, total=expected)
            if note is None:
                progress.update(task, advance=k)
            else:
                progress.update(task, advance=k, note=note)

        yield advance


@contextlib.contextmanager
def _log_lines(
    total: int | None,
    description: str,
    unit: str,
    completed: int,
    every: int | None,
    interval_s: float,
    stream: TextIO,
) -> Iterator[Advance]:
    step = every if every is not None else max(1, (total or 0) // 10)
    start = last_time = time.monotonic()
    done = last_done = completed
    latest = ""
    shown_total = total  # the total of the last line printed

    def emit(now: float) -> None:
        nonlocal shown_total
        elapsed = now - start
        rate = (done - completed) / elapsed if elapsed > 0 else 0.0  # items done before are no work of this run
        print(log_line(description, done, total, rate, elapsed, unit, latest), file=stream, flush=True)
        shown_total = total

    def advance(k: int = 1, note: str | None = None, *, dropped: int = 0) -> None:
        nonlocal done, last_done, last_time, latest, total
        if dropped and total is not None:
            total -= dropped
        done += k
        latest = note if note is not None else latest
        now = time.monotonic()
        if done - last_done >= step or now - last_time >= interval_s:
            emit(now)
            last_done, last_time = done, now

    yield advance
    if done != last_done or done == completed or total != shown_total:
        emit(time.monotonic())
