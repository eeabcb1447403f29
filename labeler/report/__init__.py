"""`labeler report RUN`: statistics and plots of a run, as `RUN/report/index.md` and `index.html`.

    from labeler.report import write_report
    index_html = write_report(Path("data/runs/demo"), human_pairs=Path("human.jsonl"), rm_dirs=[Path("rm")])

`collect` reads the run, `calibration` compares the judge with human choices, `metrics` reads reward-model
training logs, `plots` draws the figures, `page` renders Markdown and HTML, `build` puts them together.
`write_report` is imported on first use, so importing this package (e.g. for `ReportConfig`) does not
load matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labeler.report.config import ReportConfig

if TYPE_CHECKING:
    from labeler.report.build import write_report, write_report_from_config

__all__ = ["ReportConfig", "write_report", "write_report_from_config"]


def __getattr__(name: str) -> Any:
    if name in ("write_report", "write_report_from_config"):
        from labeler.report import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
