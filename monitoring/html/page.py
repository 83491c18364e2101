"""The page frame of every HTML report: the document, the shared style, escaping, cards, badges
and tables.

A page is one self-contained file: the style is inline, charts are inline `<svg>` (see
`monitoring.html.charts`), and nothing is fetched, so it reads the same from an attachment on a
host without internet. Every text that comes from data (feature, category and alert names,
reasons, summaries) goes through `e`: category values come from users. `row` takes its cells as
HTML (the caller escapes what is text); every other helper takes text and escapes it.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #1f2328; background: #fff; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1rem; margin: 1.2rem 0 .25rem; }
.lead { color: #444; }
.meta, .note, .facts { color: #57606a; font-size: .85rem; }
.facts { margin: 0 0 .4rem; }
.cards { display: flex; flex-wrap: wrap; gap: .75rem; margin: 1rem 0; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem .9rem; flex: 1 1 auto;
        min-width: 8rem; }
.card .label { font-size: .8rem; color: #57606a; }
.card .value { font-size: 1.3rem; font-weight: 600; }
.card.alarm { border-color: #cf222e; background: #ffebe9; }
.card.calm { border-color: #1a7f37; background: #dafbe1; }
table { border-collapse: collapse; width: 100%; font-size: .85rem; margin: .5rem 0; }
th, td { border-bottom: 1px solid #d0d7de; padding: .3rem .45rem; text-align: right;
         vertical-align: top; }
th:first-child, td:first-child, .text { text-align: left; }
thead th { background: #f6f8fa; }
table.kv { width: auto; min-width: 28rem; }
.badge { border-radius: 1rem; padding: .05rem .55rem; font-size: .78rem; font-weight: 600;
         white-space: nowrap; }
.badge.critical, .badge.failed, .badge.rejected { background: #cf222e; color: #fff; }
.badge.warning { background: #bf8700; color: #fff; }
.badge.passed, .badge.promoted { background: #1a7f37; color: #fff; }
.badge.none, .badge.info, .badge.unknown { background: #eaeef2; color: #57606a; }
.legend { font-size: .85rem; color: #57606a; margin: .2rem 0; }
.legend .item { display: inline-block; margin-right: 1rem; white-space: nowrap; }
.swatch { display: inline-block; vertical-align: middle; margin-right: .3rem; }
.swatch.line { width: 22px; border-top: 2px solid; }
.swatch.dashed { border-top-style: dashed; }
.swatch.box { width: 14px; height: 11px; border: 1px solid #d0d7de; }
.swatch.rule { width: 0; height: 12px; margin: 0 .4rem 0 .3rem; border-left: 2px solid; }
.swatch.rule.dashed { border-left-style: dashed; }
svg.chart { display: block; max-width: 100%; height: auto; }
svg.chart.wide { width: 100%; }
details summary { cursor: pointer; color: #0969da; margin: .5rem 0; }
"""


def e(value: Any) -> str:
    """`value` as HTML text or attribute value (None is empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def document(title: str, body: Iterable[str], *, style: str = "") -> str:
    """A whole page: `title` as its title and heading, then `body` (HTML), the shared style plus
    `style`."""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{e(title)}</title><style>{STYLE}{style}</style></head><body>",
            f"<h1>{e(title)}</h1>",
            *body,
            "</body></html>",
        ]
    )


def write_page(text: str, path: str | Path) -> Path:
    """Write a page to `path` (folders are created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def card(label: str, value: str, css: str = "", element_id: str = "") -> str:
    """One figure in a box: `label` above `value` (both text)."""
    id_attr = f' id="{e(element_id)}"' if element_id else ""
    return (
        f'<div class="card {e(css)}"{id_attr}><div class="label">{e(label)}</div>'
        f'<div class="value">{e(value)}</div></div>'
    )


def cards(items: Iterable[str]) -> str:
    """A row of `card`s that wraps on narrow screens."""
    return f'<div class="cards">{"".join(items)}</div>'


def badge(css: str, text: str) -> str:
    """A coloured word: severity, gate verdict, retrain outcome (`css` picks the colour)."""
    return f'<span class="badge {e(css)}">{e(text)}</span>'


def attributes(attrs: Mapping[str, Any] | None) -> str:
    """HTML attributes, escaped, with a leading space ("" when there are none)."""
    return "".join(f' {name}="{e(value)}"' for name, value in (attrs or {}).items())


def row(
    cells: Sequence[str],
    *,
    text: Collection[int] = (),
    attrs: Mapping[str, Any] | None = None,
    header: bool = False,
) -> str:
    """A table row of HTML `cells`; the columns in `text` are left-aligned as words are (the
    others are numbers, right-aligned); `header` makes the first cell a `<th>`."""
    out = []
    for k, cell in enumerate(cells):
        tag = "th" if header and k == 0 else "td"
        css = ' class="text"' if k in text else ""
        out.append(f"<{tag}{css}>{cell}</{tag}>")
    return f"<tr{attributes(attrs)}>{''.join(out)}</tr>"


def table(
    head: Sequence[str] | None,
    rows: Iterable[str],
    *,
    text: Collection[int] = (),
    element_id: str = "",
    css: str = "",
) -> str:
    """A table of `row`s under the column names `head` (text; None for no header row); the
    columns in `text` are left-aligned, as in `row`."""
    attrs = {"class": css} if css else {}
    if element_id:
        attrs["id"] = element_id
    header = ""
    if head is not None:
        header = "<thead><tr>" + "".join(
            f'<th class="text">{e(h)}</th>' if k in text else f"<th>{e(h)}</th>"
            for k, h in enumerate(head)
        )
        header += "</tr></thead>"
    return f"<table{attributes(attrs)}>{header}<tbody>{''.join(rows)}</tbody></table>"


def moment(text: Any, missing: str) -> str:
    """An ISO time as a person reads it: to the minute, in UTC; `missing` when there is none,
    the text itself when it is not a time."""
    if not text:
        return missing
    try:
        return datetime.fromisoformat(str(text)).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(text)
