"""Progress for long work: a rich bar (description, bar, done/total, rate, elapsed, ETA) on a terminal,
plain log lines where there is none (batch jobs, CI logs) or when asked to be quiet.

    with progress_bar(len(todo), "judging", unit="pairs", completed=len(done)) as advance:
        for batch in batches:
            ...
            advance(len(batch))

Output goes to stderr, so stdout stays free for what a command prints as its result.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

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

Advance = Callable[[int], None]


class RateColumn(ProgressColumn):
    """Items per second, e.g. `12.3 pairs/s`."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        shown = "-" if speed is None else f"{speed:.1f}"
        return Text(f"{shown} {self.unit}/s", style="progress.data.speed")


def format_duration(seconds: float) -> str:
    """H:MM:SS.

    >>> format_duration(3725.4)
    '1:02:05'
    """
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def log_line(description: str, done: int, total: int | None, rate: float, elapsed: float, unit: str) -> str:
    """One plain progress line (the quiet form of the bar).

    >>> log_line("judging", 50, 200, 2.5, 20.0, "pairs")
    'judging: 50/200 (25.0%) 2.50 pairs/s elapsed 0:00:20 eta 0:01:00'
    >>> log_line("judging", 50, None, 2.5, 20.0, "pairs")
    'judging: 50 2.50 pairs/s elapsed 0:00:20'
    """
    if total is None:
        return f"{description}: {done} {rate:.2f} {unit}/s elapsed {format_duration(elapsed)}"
    percent = done / total if total else 1.0
    eta = format_duration((total - done) / rate) if rate > 0 else "-"
    return (
        f"{description}: {done}/{total} ({percent:.1%}) {rate:.2f} {unit}/s "
        f"elapsed {format_duration(elapsed)} eta {eta}"
    )


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
) -> Iterator[Advance]:
    """Show progress of `total` items (None if unknown); yields `advance(k)` to call as items finish.

    `completed` items were done before (a resumed run): they count toward done/total, not the rate.
    `quiet=None` picks the bar on a terminal and log lines elsewhere. Log lines are printed every
    `every` items (default: every 10 % of `total`) or `interval_s` seconds, whichever comes first,
    and once at the end.
    """
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
    )
    with Progress(*columns, console=Console(file=stream)) as progress:
        task = progress.add_task(description, total=total, completed=completed)

        def advance(k: int = 1) -> None:
            progress.advance(task, k)

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

    def emit(now: float) -> None:
        elapsed = now - start
        rate = (done - completed) / elapsed if elapsed > 0 else 0.0
        print(log_line(description, done, total, rate, elapsed, unit), file=stream, flush=True)

    def advance(k: int = 1) -> None:
        nonlocal done, last_done, last_time
        done += k
        now = time.monotonic()
        if done - last_done >= step or now - last_time >= interval_s:
            emit(now)
            last_done, last_time = done, now

    yield advance
    if done != last_done or done == completed:
        emit(time.monotonic())
