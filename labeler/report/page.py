"""The report page as data (sections of paragraphs, tables and figures), rendered to Markdown and HTML.

Both renderings come from the same blocks, so `index.md` and `index.html` always show the same
numbers. Text may use `backticks` for code, in both. The HTML page is self-contained: its style is
inline and its images are referenced by file name, next to it.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

_CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Note:
    """A remark set apart from the text, e.g. why a plot was skipped."""

    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[int, ...] = ()  # indices of right-aligned columns


@dataclass(frozen=True)
class Image:
    """A figure file in the report folder."""

    file: str  # name relative to the report folder
    title: str
    caption: str


Block = Paragraph | Note | Table | Image


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Page:
    title: str
    sections: tuple[Section, ...]

    def images(self) -> list[Image]:
        return [block for section in self.sections for block in section.blocks if isinstance(block, Image)]


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for the page, or "n/a" when there is nothing to measure.

    >>> fmt(0.123456), fmt(None), fmt(2.0, 1)
    ('0.1235', 'n/a', '2.0')
    """
    return "n/a" if value is None else f"{value:.{digits}f}"


# --- Markdown ---------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    """A table cell: pipes escaped and line breaks flattened, so one row stays one line.

    >>> _md_cell("a|b\\nc")
    'a\\\\|b c'
    """
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    align = ["---:" if k in table.numeric else "---" for k in range(len(table.header))]
    lines = ["| " + " | ".join(map(_md_cell, table.header)) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in table.rows]
    return lines


def render_markdown(page: Page) -> str:
    lines = [f"# {page.title}", ""]
    for section in page.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Paragraph):
                lines.append(block.text)
            elif isinstance(block, Note):
                lines.append(f"> {block.text}")
            elif isinstance(block, Table):
                lines += _md_table(block)
            else:
                lines += [f"![{block.title}]({block.file})", "", f"*{block.caption}*"]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --- HTML -------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; }
th, td { border: 1px solid #ddd; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; }
.note { border-left: 4px solid #e0a800; background: #fff8e1; padding: .4em .8em; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .95em; }
"""


def _inline(text: str) -> str:
    """Escaped text with `code` spans.

    >>> _inline("a <b> `c&d`")
    'a &lt;b&gt; <code>c&amp;d</code>'
    """
    return _CODE.sub(r"<code>\1</code>", html.escape(text, quote=False))


def _html_table(table: Table) -> list[str]:
    lines = ["<table>", "<tr>" + "".join(f"<th>{_inline(cell)}</th>" for cell in table.header) + "</tr>"]
    for row in table.rows:
        cells = [
            f'<td class="num">{_inline(cell)}</td>' if k in table.numeric else f"<td>{_inline(cell)}</td>"
            for k, cell in enumerate(row)
        ]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return [*lines, "</table>"]


def render_html(page: Page) -> str:
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(page.title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{_inline(page.title)}</h1>",
    ]
    for section in page.sections:
        lines.append(f"<h2>{_inline(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Paragraph):
                lines.append(f"<p>{_inline(block.text)}</p>")
            elif isinstance(block, Note):
                lines.append(f'<p class="note">{_inline(block.text)}</p>')
            elif isinstance(block, Table):
                lines += _html_table(block)
            else:
                source = html.escape(block.file, quote=True)
                alt = html.escape(block.title, quote=True)
                lines += [
                    "<figure>",
                    f'<img src="{source}" alt="{alt}">',
                    f"<figcaption>{_inline(block.caption)}</figcaption>",
                    "</figure>",
                ]
    lines += ["</body>", "</html>"]
    return "\n".join(lines) + "\n"
