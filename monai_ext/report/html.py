"""HTML pieces of the report: escaped text, tables, figures, notes of what is missing, sections and the page."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from monai_ext.report.gather import Table

__all__ = ["figure_html", "missing_html", "page_html", "section_html", "table_html"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { border-bottom: 2px solid #446; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 1.5em 1em 0; display: inline-table; vertical-align: top; }
caption { font-weight: 600; text-align: left; padding-bottom: 0.3em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; font-size: 0.9em; }
th { background: #eef; } td:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; } .missing { color: #a40; font-style: italic; }
.meta { color: #555; font-size: 0.9em; }
"""


def table_html(table: Table) -> str:
    """A :class:`~monai_ext.report.gather.Table` as an HTML table with a caption (and a note of the rows left out)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    more = f"<tr><td colspan='{len(table.header)}'>... {table.omitted} more rows</td></tr>" if table.omitted else ""
    return f"<table><caption>{escape(table.title)}</caption><tr>{head}</tr>{body}{more}</table>"


def figure_html(src: str, caption: str) -> str:
    """An image (``src`` relative to the page) with its caption."""
    return (
        f'<figure><img src="{escape(src)}" alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'
    )


def missing_html(text: str) -> str:
    """A note that a part of the results is not there (and where it was looked for)."""
    return f'<p class="missing">{escape(text)}</p>'


def section_html(anchor: str, title: str, parts: Sequence[str]) -> str:
    """A titled section of already rendered ``parts``."""
    return f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>\n' + "\n".join(parts) + "\n</section>"


def page_html(title: str, meta: Sequence[str], sections: Sequence[tuple[str, str, str]]) -> str:
    """
    The whole page: a title, lines of metadata, a table of contents and the sections.

    Args:
        title: the page title.
        meta: lines shown under the title (the folders read, the time).
        sections: ``(anchor, title, rendered section)`` in order.
    """
    toc = " · ".join(f'<a href="#{escape(a)}">{escape(t)}</a>' for a, t, _ in sections)
    lines = "".join(f'<p class="meta">{escape(m)}</p>' for m in meta)
    body = "\n".join(s for _, _, s in sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body><h1>{escape(title)}</h1>{lines}<nav>{toc}</nav>\n{body}\n</body></html>\n"
    )
