"""Charts for the HTML pages: matplotlib figures inlined in the page as `<svg>` elements.

Two kinds, one per page: paired bars (reference vs current shares of a drift report's bins or
categories) and timeline charts (lines or coloured cells over a run of windows, with shaded
stretches, labelled groups under the axis and vertical event markers, every chart of a page on
the same x axis so that the eye can go down the page at one moment). `legend` draws keys in
HTML for either.

matplotlib draws; this module turns its SVG into something a page can inline:

- Text stays text (`svg.fonttype` "none"), so it can be searched and selected. Its font is
  DejaVu Sans, the one matplotlib measures with, so labels land where matplotlib laid them out
  (a browser without it substitutes a sans-serif of about the same width).
- Nothing refers to anything: matplotlib's SVG points at its own `<defs>` (tick marks and line
  markers through `xlink:href`, clipping through `url(#...)`), and in a page of several charts
  those ids would be the page's. Nothing is clipped (each chart sets its limits around its
  data) and every `<use>` is replaced by a copy of what it shows; `_inline` refuses a chart
  that still refers to something.
- matplotlib names every group (`figure_1`, `patch_3`), the same names in every chart: the
  ids go. What a page or a reader needs to find carries a `Mark` instead: CSS classes,
  `data-*` attributes and a `<title>` (the tooltip the browser shows on hover).
- Deterministic: `svg.hashsalt` is fixed and no metadata (date, creator) is written, so the
  same data gives the same page, byte for byte.
- Smaller: coordinates are rounded to 0.1 px, which no screen shows (matplotlib writes six
  decimals), and groups left without attributes are unwrapped: 8% of the demo's report, 11%
  of a 13-feature drift report and 43% of its elements.

Every drawing happens inside `rc_context`, on a `Figure` that pyplot never sees: nothing of
this leaks into other matplotlib users of the process, and no GUI backend is touched.
"""

from __future__ import annotations

import copy
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import matplotlib
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from monitoring.html.page import e

_SVG = "{http://www.w3.org/2000/svg}"
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_TEXT = "#57606a"
_RULE = "#d0d7de"
_GRID = "#eaeef2"
_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "monitoring.html.charts",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 10,
    # A category or feature name is data: "$5-$10" is a label, not TeX.
    "text.parse_math": False,
    "text.color": _TEXT,
    "axes.edgecolor": _RULE,
    "axes.labelcolor": _TEXT,
    "xtick.color": _TEXT,
    "ytick.color": _TEXT,
    "axes.spines.top": False,
    "axes.spines.right": False,
    # Dash patterns in px, as the legend draws them, not scaled by the line width.
    "lines.scale_dashes": False,
}
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}
_NUMBER = re.compile(r"-?\d+\.\d+")
# Characters XML 1.0 cannot hold and fonts have no glyph for; a category value may have them,
# and matplotlib writes them as they are, into an SVG no parser reads. `_clean` replaces them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NO_TURN = re.compile(r"rotate\(-?0 [^)]*\)")  # what matplotlib writes on every upright text


@dataclass(frozen=True)
class Mark:
    """What a drawn element carries into the page: CSS classes, `data-*` attributes and a
    tooltip. `hover` makes an invisible element catch the pointer, for its tooltip."""

    css: str = ""
    data: Mapping[str, str] = field(default_factory=dict)
    tip: str = ""
    hover: bool = False


@dataclass(frozen=True)
class Key:
    """One entry of a legend: a `line` (solid or dashed), a `box` of colour or a `rule` (a
    vertical marker)."""

    label: str
    colour: str
    kind: str = "line"
    dashed: bool = False


def percent(value: float) -> str:
    """A share as a tick label: whole percents without decimals (40%), others with one."""
    return f"{value:.0%}" if abs(value * 100 - round(value * 100)) < 1e-9 else f"{value:.1%}"


def legend(keys: Sequence[Key], element_id: str = "") -> str:
    """The keys of a chart (or of every chart below), in HTML."""
    items = []
    for key in keys:
        css = f"swatch {key.kind}{' dashed' if key.dashed else ''}"
        paint = "background" if key.kind == "box" else "border-color"
        items.append(
            f'<span class="item"><span class="{css}" style="{paint}:{e(key.colour)}"></span>'
            f"{e(key.label)}</span>"
        )
    id_attr = f' id="{e(element_id)}"' if element_id else ""
    return f'<div class="legend"{id_attr}>{"".join(items)}</div>'


class _Canvas:
    """A figure sized in pixels (one SVG unit, one px at 72 dpi) and the marks on it."""

    def __init__(self, width: float, height: float) -> None:
        self.figure = Figure(figsize=(width / 72, height / 72), dpi=72, facecolor="white")
        self.marks: dict[str, Mark] = {}

    def mark(self, artist: Artist, mark: Mark) -> None:
        gid = f"kit-mark-{len(self.marks)}"
        artist.set_gid(gid)
        self.marks[gid] = mark

    def svg(self, element_id: str, title: str, css: str, *, tight: bool = False) -> str:
        """The figure as an inline `<svg>`; `tight` crops it to what is drawn (a chart whose
        x axis need not line up with others)."""
        for artist in self.figure.findobj():
            artist.set_clip_on(False)
        buffer = io.StringIO()
        crop = {"bbox_inches": "tight", "pad_inches": 4 / 72} if tight else {}
        self.figure.savefig(buffer, format="svg", metadata=_NO_METADATA, **crop)
        root = {"class": css, "id": element_id, "role": "img", "aria-label": _clean(title)}
        return _inline(buffer.getvalue(), self.marks, root)


@contextmanager
def _canvas(width: float, height: float) -> Iterator[_Canvas]:
    with matplotlib.rc_context(_RC):
        yield _Canvas(width, height)


def _inline(svg: str, marks: Mapping[str, Mark], root_attrs: Mapping[str, str]) -> str:
    """matplotlib's SVG document as an element for an HTML page (see the module docstring)."""
    root = ET.fromstring(svg)
    shapes = {shape.get("id"): shape for defs in root.iter(f"{_SVG}defs") for shape in defs}
    for parent in root.iter():
        for index, child in enumerate(parent):
            if child.tag == f"{_SVG}use":
                shown = copy.deepcopy(shapes[child.get(_XLINK_HREF, "").removeprefix("#")])
                shown.set("transform", f"translate({child.get('x', '0')} {child.get('y', '0')})")
                if child.get("style"):
                    shown.set("style", child.get("style", ""))
                parent[index] = shown
    for parent in root.iter():
        for child in list(parent):
            if child.tag in (f"{_SVG}defs", f"{_SVG}metadata"):
                parent.remove(child)
    width, height = root.get("viewBox", "0 0 0 0").split()[2:]
    root.attrib.clear()
    root.attrib.update({**root_attrs, "viewBox": f"0 0 {width} {height}"})
    root.attrib.update({"width": width, "height": height, "stroke-linejoin": "round"})
    for element in root.iter():
        element.tag = element.tag.removeprefix(_SVG)
        if element.text is not None and not element.text.strip():
            element.text = None
        element.tail = None
        if element is root:
            continue
        for name, value in element.attrib.items():
            if "href" in name or "url(" in value:
                raise ValueError(f"the chart refers to something: {name}={value!r}")
            if name in ("d", "x", "y", "transform"):
                element.set(name, _short(value))
        if _NO_TURN.fullmatch(element.get("transform", "")):
            del element.attrib["transform"]
        gid = element.attrib.pop("id", None)
        if gid in marks:
            _apply(element, marks[gid])
    _unwrap(root)
    return ET.tostring(root, encoding="unicode")


def _unwrap(parent: ET.Element) -> None:
    """Groups without attributes do nothing once their ids are gone: their children take
    their place, and an empty one goes."""
    children: list[ET.Element] = []
    for child in parent:
        _unwrap(child)
        if child.tag == "g" and not child.attrib:
            children.extend(child)
        else:
            children.append(child)
    parent[:] = children


def _apply(element: ET.Element, mark: Mark) -> None:
    if mark.css:
        element.set("class", mark.css)
    for name, value in mark.data.items():
        element.set(f"data-{name}", _clean(value))
    if mark.hover:
        element.set("pointer-events", "all")  # drawn with no fill, which takes no pointer
    if mark.tip:
        title = ET.Element("title")
        title.text = _clean(mark.tip)
        element.insert(0, title)


def _clean(text: str) -> str:
    """Text from data as matplotlib and XML can take it (see _NOT_XML)."""
    return _NOT_XML.sub("\ufffd", text)


def _short(value: str) -> str:
    """Coordinates to 0.1 px, and a path on one line."""
    return " ".join(_NUMBER.sub(lambda m: f"{float(m.group()):.1f}", value).split())


# ----------------------------------------------------------------------------- paired bars


@dataclass(frozen=True)
class Bars:
    """One side of a paired bar chart: a share per label, and its colour."""

    values: Sequence[float]
    colour: str


def bar_chart(
    element_id: str, title: str, labels: Sequence[str], sides: Sequence[Bars], tips: Sequence[str]
) -> str:
    """Shares side by side per label (reference and current, say), labels slanted under the
    bars; `tips[i]` is the tooltip of label i's bars."""
    group = 56 if len(labels) <= 12 else 34  # px per label: narrower when there are many
    left, right, top, plot_h, bottom = 48, 10, 10, 150, 84
    width = max(left + group * len(labels) + right, 200)
    with _canvas(width, top + plot_h + bottom) as canvas:
        ax = canvas.figure.add_axes(
            (
                left / width,
                bottom / (top + plot_h + bottom),
                (width - left - right) / width,
                plot_h / (top + plot_h + bottom),
            )
        )
        highest = max([v for side in sides for v in side.values] + [0.01])
        ax.set_xlim(0, max(len(labels), (width - left - right) / group))
        ax.set_ylim(0, highest * 1.1)  # headroom above the tallest bar
        ax.yaxis.set_major_locator(MaxNLocator(nbins=3))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: percent(value)))
        ax.grid(axis="y", color=_GRID)
        ax.set_axisbelow(True)
        ax.spines["left"].set_visible(False)
        ax.tick_params(length=0, labelsize=10)
        bar = 0.8 / len(sides)
        for s, side in enumerate(sides):
            for i, value in enumerate(side.values):
                (rect,) = ax.bar(i + 0.1 + s * bar, value, bar, align="edge", color=side.colour)
                canvas.mark(rect, Mark(tip=tips[i]))
        ax.set_xticks(
            [i + 0.5 for i in range(len(labels))],
            [_clean(label) for label in labels],
            rotation=35,
            ha="right",
            rotation_mode="anchor",
        )
        # Cropped: the room kept under the axis for long slanted labels is empty for short ones.
        return canvas.svg(element_id, title, "chart", tight=True)


# ----------------------------------------------------------------------------- timelines

# Geometry of a timeline chart, in px. The left margin is wide enough for the cell chart's row
# names and the same on every chart, so that the x axes of a page line up.
WIDTH = 1060
LEFT = 140
RIGHT = 16
TOP = 22  # room for the event labels above the plot
BELOW = 36  # group labels and the caption under the plot


@dataclass(frozen=True)
class Span:
    """A shaded stretch of positions [start, end), named in its top-left corner."""

    start: int
    end: int
    name: str
    fill: str


@dataclass(frozen=True)
class Event:
    """A vertical marker at one position, labelled above the plot."""

    position: int
    label: str
    colour: str
    dashed: bool
    mark: Mark


@dataclass(frozen=True)
class TimeAxis:
    """What every chart of a timeline shares: `count` positions, the labelled groups under the
    axis (start, end, label), the shaded spans, the events, the axis caption and a first line
    for each position's tooltip."""

    count: int
    groups: Sequence[tuple[int, int, str]]
    spans: Sequence[Span]
    events: Sequence[Event]
    caption: str
    tips: Sequence[str]


@dataclass(frozen=True)
class Series:
    """One line: its key (`data-series`), its label, a value or None per position."""

    key: str
    label: str
    values: Sequence[float | None]
    colour: str
    dashed: bool = False


@dataclass(frozen=True)
class Threshold:
    """A horizontal dashed line at `value`, labelled at its right end."""

    value: float
    label: str
    colour: str


@dataclass(frozen=True)
class Cell:
    """A coloured box at one position of a row of a cell chart."""

    colour: str
    mark: Mark


@dataclass(frozen=True)
class CellRow:
    """A row of a cell chart: its name (at its left, cut to the margin), its mark and its cells
    by position."""

    name: str
    mark: Mark
    cells: Mapping[int, Cell]


def line_chart(
    element_id: str,
    title: str,
    axis: TimeAxis,
    series: Sequence[Series],
    *,
    ticks: Callable[[float], str],
    thresholds: Sequence[Threshold] = (),
    fixed_range: tuple[float, float] | None = None,
    floor_zero: bool = False,
    extra_tips: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """Lines over the time axis, broken where a value is None (a value alone between two gaps
    is a dot). The y range covers the values and thresholds with some air, from 0 with
    `floor_zero`, or is `fixed_range`; `ticks` writes the y tick labels. Each position's
    tooltip gives the values there and its `extra_tips`."""
    plot_h = 170
    with _canvas(WIDTH, TOP + plot_h + BELOW) as canvas:
        ax = _time_axes(canvas, axis, plot_h, span_names=True)
        known = [v for s in series for v in s.values if v is not None]
        if fixed_range:
            low, high = fixed_range
        else:
            reach = known + [t.value for t in thresholds]
            low, high = (min(reach), max(reach)) if reach else (0.0, 1.0)
            low = 0.0 if floor_zero else low
            pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
            low, high = (low if floor_zero else low - pad), high + pad
        # Round ticks from the one at or below the lowest value to the one nearest above the
        # highest: the locator's own list runs a step past both ends, which on a PSI peak of
        # 1.0 took the axis to 1.5, a third of the chart empty.
        steps = MaxNLocator(nbins=4, steps=[1, 2, 5, 10]).tick_values(low, high)
        step = steps[1] - steps[0]
        marks = [t for t in steps if low - step * 0.999 < t < high + step / 2]
        low, high = min(low, marks[0]), max(high, marks[-1])
        ax.set_ylim(low, high)
        ax.set_yticks(marks)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: ticks(value)))
        ax.grid(axis="y", color=_GRID)
        for t in thresholds:
            line = ax.axhline(t.value, color=t.colour, linewidth=1, linestyle=(0, (5, 4)))
            canvas.mark(line, Mark("threshold", {"value": f"{t.value:g}"}))
            ax.annotate(
                _clean(t.label),
                (1, t.value),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 3),
                textcoords="offset points",
                ha="right",
                color=t.colour,
            )
        for s in series:
            values = [float("nan") if v is None else v for v in s.values]
            # A value with no neighbour draws no line: it gets a dot.
            alone = [
                i
                for i, v in enumerate(s.values)
                if v is not None
                and (i == 0 or s.values[i - 1] is None)
                and (i + 1 == len(values) or s.values[i + 1] is None)
            ]
            (line,) = ax.plot(
                [i + 0.5 for i in range(axis.count)],
                values,
                color=s.colour,
                linewidth=1.8,
                linestyle=(0, (5, 3)) if s.dashed else "-",
                marker="o" if alone else None,
                markevery=alone or None,
                markersize=5,
                markeredgewidth=0,
            )
            canvas.mark(line, Mark("series", {"series": s.key}, s.label))
        _events(canvas, ax, axis, plot_h)
        extra = extra_tips or {}
        for position in range(axis.count):
            facts = [axis.tips[position]]
            facts += [f"{s.label}: {_value(s.values[position])}" for s in series]
            facts += [f"{name}: {values[position]}" for name, values in extra.items()]
            column = ax.axvspan(
                position, position + 1, facecolor="none", edgecolor="none", zorder=5
            )
            canvas.mark(column, Mark(tip="\n".join(facts), hover=True))
        return canvas.svg(element_id, title, "chart wide")


def cell_chart(element_id: str, title: str, axis: TimeAxis, rows: Sequence[CellRow]) -> str:
    """One row per name, a coloured cell at each position where it has one (which alert fired
    in which window, say)."""
    row_h = 18
    plot_h = row_h * len(rows)
    with _canvas(WIDTH, TOP + plot_h + BELOW) as canvas:
        # The rows would hide the span names: a legend above the charts names the shading.
        ax = _time_axes(canvas, axis, plot_h, span_names=False)
        ax.set_ylim(len(rows), 0)
        ax.yaxis.set_major_locator(NullLocator())
        step = (WIDTH - LEFT - RIGHT) / axis.count
        for r, line in enumerate(rows):
            shown = _clean(line.name if len(line.name) <= 22 else line.name[:21] + "…")
            text = ax.annotate(
                shown,
                (0, r + 0.5),
                xycoords=("axes fraction", "data"),
                xytext=(-6, 0),
                textcoords="offset points",
                ha="right",
                va="center_baseline",
                fontsize=11,
            )
            canvas.mark(text, line.mark)
            for position, cell in sorted(line.cells.items()):
                box = ax.bar(
                    position,
                    12 / row_h,
                    max(1.0, 1.5 / step),
                    r + 3 / row_h,
                    align="edge",
                    color=cell.colour,
                )[0]
                canvas.mark(box, cell.mark)
        _events(canvas, ax, axis, plot_h)
        return canvas.svg(element_id, title, "chart wide")


def _time_axes(canvas: _Canvas, axis: TimeAxis, plot_h: float, *, span_names: bool) -> Any:
    """The backdrop every timeline chart shares: spans, group boundaries and labels."""
    height = TOP + plot_h + BELOW
    ax = canvas.figure.add_axes(
        (LEFT / WIDTH, BELOW / height, (WIDTH - LEFT - RIGHT) / WIDTH, plot_h / height)
    )
    ax.set_xlim(0, axis.count)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)
    ax.tick_params(length=0, labelsize=11)
    for span in axis.spans:
        band = ax.axvspan(span.start, span.end, facecolor=span.fill, edgecolor="none", zorder=0)
        canvas.mark(band, Mark("phase-band", {"phase": span.name}, span.name))
        if span_names:
            ax.annotate(
                _clean(span.name),
                (span.start, 1),
                xycoords=("data", "axes fraction"),
                xytext=(3, -11),
                textcoords="offset points",
                color="#6e7781",
            )
    for start, _, _ in axis.groups[1:]:
        ax.axvline(start, ymin=-6 / plot_h, color="#afb8c1", linewidth=1, zorder=0.6)
    ax.set_xticks([(start + end) / 2 for start, end, _ in axis.groups])
    ax.set_xticklabels([_clean(name) for _, _, name in axis.groups])
    ax.set_xlabel(_clean(axis.caption), fontsize=11, labelpad=3)
    return ax


def _events(canvas: _Canvas, ax: Any, axis: TimeAxis, plot_h: float) -> None:
    for event in axis.events:
        x = event.position + 0.5
        line = ax.axvline(
            x,
            ymax=1 + 4 / plot_h,
            color=event.colour,
            linewidth=2,
            linestyle=(0, (4, 3)) if event.dashed else "-",
        )
        canvas.mark(line, event.mark)
        ax.annotate(
            _clean(event.label),
            (x, 1),
            xycoords=("data", "axes fraction"),
            xytext=(0, 7),
            textcoords="offset points",
            ha="center",
            fontweight="bold",
            color=event.colour,
        )


def _value(value: float | None) -> str:
    return "n/a" if value is None else format(value, ".4g")
