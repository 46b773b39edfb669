"""The coordinator's pictures (tfshare.web.charts): hostile names stay text, and the layout
says what the data says (rows by depth, receipts by delay, bars by value).

Each picture is parsed as XML: a name that broke out of its text node or attribute would
add an element or an attribute, or make the SVG ill-formed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from tfshare.audit import report as R
from tfshare.web import charts

SVG = "{http://www.w3.org/2000/svg}"
# Every element the templates draw: anything else came from data.
DRAWN = {"svg", "title", "defs", "marker", "path", "line", "g", "rect", "text", "circle"}
HOSTILE = [
    "<script>alert(1)</script>",
    '"><svg onload="alert(1)">',
    "police]]><x/>",
    "' onmouseover='alert(1)",
    "&lt;b&gt;",
    "ngo\u202egnp.exe",
    "labour\x1b[2J\nFORGED",
]


def parsed(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def tags(root: ET.Element) -> set[str]:
    return {element.tag.removeprefix(SVG) for element in root.iter()}


def titles(root: ET.Element) -> list[str]:
    return [element.text or "" for element in root.iter(f"{SVG}title")]


def texts(root: ET.Element) -> list[str]:
    return [element.text or "" for element in root.iter(f"{SVG}text")]


def attribute_names(root: ET.Element) -> set[str]:
    return {name for element in root.iter() for name in element.attrib}


DRAWN_ATTRIBUTES = {
    "xmlns", "class", "role", "width", "height", "viewBox", "aria-label", "x", "y", "x1",
    "y1", "x2", "y2", "cx", "cy", "r", "rx", "fill", "stroke", "stroke-width", "marker-end",
    "id", "refX", "refY", "markerWidth", "markerHeight", "orient", "d", "text-anchor",
    "font-weight", "font-size", "font-style", "data-msg", "data-recipient-row",
    "stroke-dasharray",
}  # fmt: skip


def lineage_of(name: str) -> str:
    nodes = [
        charts.Node("aa", name, "", 0, label="aa", focus=True),
        charts.Node("bb", name, name, 1, label=name, flagged=True),
        charts.Node("cc", name, "escalate", -1, label="cc", logged=False),
    ]
    return charts.lineage_svg(nodes, [charts.Edge("cc", "aa"), charts.Edge("aa", "bb")], title=name)


def receipts_of(name: str) -> str:
    return charts.receipts_svg(
        [
            charts.ReceiptPoint(name, 1500),
            charts.ReceiptPoint(name, 2500, "rejected", name),
            charts.ReceiptPoint("silent", None),
        ],
        title=name,
    )


def bars_of(name: str) -> str:
    chart = charts.bar_chart(name, [name, "received"], [charts.BarGroup(name, [3, 1], [name, "1"])])
    return str(chart.svg)


BUILDERS = [lineage_of, receipts_of, bars_of]


def test_hostile_names_are_text_in_every_picture() -> None:
    """Script tags, attribute breakouts, a CDATA end, an entity, a bidi override and a
    terminal escape with a newline: each picture stays well-formed SVG with only the
    elements and attributes the templates draw, and the name appears as text, made visible."""
    for name in HOSTILE:
        for build in BUILDERS:
            markup = build(name)
            root = parsed(markup)
            assert tags(root) <= DRAWN, (build.__name__, name)
            assert attribute_names(root) <= DRAWN_ATTRIBUTES, (build.__name__, name)
            assert "<script" not in markup and "<x/>" not in markup
            shown = charts.shown(name)
            assert any(shown in t for t in titles(root)), (build.__name__, name)


def test_hidden_characters_are_shown_as_escapes() -> None:
    """A right-to-left override or an escape sequence would reorder or hide what the
    coordinator reads: it is drawn as its escape, in the box and in the title."""
    root = parsed(lineage_of("ngo\u202egnp.exe"))
    sender_texts = [t for t in texts(root) if t.startswith("ngo")]
    assert sender_texts and all("\\u202e" in t and "\u202e" not in t for t in sender_texts)
    root = parsed(receipts_of("labour\x1b[2J\nFORGED"))
    assert any("labour\\x1b[2J\\x0aFORGED" in t for t in titles(root))
    assert not any("\n" in t or "\x1b" in t for t in texts(root) + titles(root))


def test_a_long_name_is_cut_in_its_box_and_whole_in_its_title() -> None:
    name = "agency-" + "x" * 80
    root = parsed(lineage_of(name))
    senders = [t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "sender"]
    assert len(senders) == 3
    assert all(len(t) == charts.NODE_CHARS and t.endswith("\u2026") for t in senders)
    assert any(name in t for t in titles(root))


@given(st.text(max_size=60))
def test_no_input_string_adds_markup(name: str) -> None:
    """Property: whatever the name, each picture holds exactly as many '<' as with a plain
    name (none came from the data), parses, and carries the name as text."""
    for build in BUILDERS:
        markup = build(name)
        plain = build("x")
        assert markup.count("<") == plain.count("<"), build.__name__
        root = parsed(markup)
        assert tags(root) <= DRAWN
        if name:
            assert any(charts.shown(name) in t for t in titles(root)), build.__name__


# --- layout --------------------------------------------------------------------------------


def node_boxes(root: ET.Element) -> dict[str, tuple[int, int]]:
    boxes = {}
    for g in root.iter(f"{SVG}g"):
        key = g.get("data-msg")
        rect = g.find(f"{SVG}rect")
        if key is not None and rect is not None:
            boxes[key] = (int(rect.get("x", "0")), int(rect.get("y", "0")))
    return boxes


def test_lineage_rows_follow_depth_and_edges_point_from_parent_to_child() -> None:
    """Parent above the message traced, its two children side by side below; one arrow per
    edge from the bottom of the parent to the top of the child; an edge naming a message not
    drawn is left out."""
    nodes = [
        charts.Node("p", "police", "", -1),
        charts.Node("m", "ngo", "escalate", 0, focus=True),
        charts.Node("c1", "labour", "reshare", 1),
        charts.Node("c2", "coord", "reply", 1),
    ]
    edges = [
        charts.Edge("p", "m"),
        charts.Edge("m", "c1"),
        charts.Edge("m", "c2"),
        charts.Edge("m", "ghost"),
    ]
    root = parsed(charts.lineage_svg(nodes, edges))
    boxes = node_boxes(root)
    assert boxes["p"][1] < boxes["m"][1] < boxes["c1"][1] == boxes["c2"][1]
    assert boxes["c1"][0] < boxes["c2"][0]  # in the order given
    lines = [ln for ln in root.iter(f"{SVG}line") if ln.get("class") == "edge"]
    assert len(lines) == 3
    first = lines[0]
    assert int(first.get("y1", "0")) == boxes["p"][1] + charts.NODE_H
    assert int(first.get("y2", "0")) == boxes["m"][1]
    focus = [g for g in root.iter(f"{SVG}g") if "focus" in (g.get("class") or "")]
    assert [g.get("data-msg") for g in focus] == ["m"]


def test_an_unlogged_parent_is_drawn_dashed_and_says_so() -> None:
    root = parsed(lineage_of("police"))
    unlogged = [g for g in root.iter(f"{SVG}g") if "unlogged" in (g.get("class") or "")]
    assert len(unlogged) == 1
    rect = unlogged[0].find(f"{SVG}rect")
    assert rect is not None and rect.get("stroke-dasharray")
    assert any("not in this log" in t for t in texts(unlogged[0]))


def marks(root: ET.Element) -> list[tuple[str, float]]:
    found = []
    for g in root.iter(f"{SVG}g"):
        kind = g.get("class") or ""
        if kind.startswith("receipt "):
            shape = g.find(f"{SVG}circle")
            if shape is not None:
                found.append((kind, float(shape.get("cx", "0"))))
            else:
                path = g.find(f"{SVG}path")
                assert path is not None
                found.append((kind, float(re.split(r"\s+", path.get("d", ""))[1]) + 5))
    return found


def test_receipts_are_placed_by_delay_on_one_scale() -> None:
    """0.5 s, 2 s and 4 s on a 4 s scale: at 1/8, 1/2 and the end of the plot; a rejection
    is a cross labelled with its code; a silent recipient says "no receipt"; a receipt from
    before sending (clocks differ) is drawn at 0."""
    points = [
        charts.ReceiptPoint("ngo", 500),
        charts.ReceiptPoint("labour", 2000, "rejected", "E_DECRYPT"),
        charts.ReceiptPoint("police", 4000),
        charts.ReceiptPoint("coord", None),
        charts.ReceiptPoint("fast-clock", -300),
    ]
    root = parsed(charts.receipts_svg(points))
    x0, w = charts.LABEL_W, charts.PLOT_W
    assert marks(root) == [
        ("receipt accepted", x0 + w / 8),
        ("receipt rejected", x0 + w / 2),
        ("receipt accepted", x0 + w),
        ("receipt accepted", x0),
    ]
    assert "E_DECRYPT" in texts(root)
    assert "no receipt" in texts(root)
    assert charts.time_ticks(4000) == [0, 1000, 2000, 3000, 4000]


def test_the_time_axis_ends_at_a_round_span_holding_the_slowest_receipt() -> None:
    """Receipts 34-60 ms after sending are spread over a 60 ms axis, not lost at the left
    of a second; nothing at all still draws an axis."""
    assert charts.time_ticks(60) == [0, 15, 30, 45, 60]
    assert charts.time_ticks(61) == [0, 20, 40, 60, 80]
    assert charts.time_ticks(7 * 3_600_000)[-1] == 8 * 3_600_000
    assert charts.time_ticks(0) == [0, 2, 5, 7, 10]
    assert charts.time_ticks(45_000) == [0, 15_000, 30_000, 45_000, 60_000]
    spans = [charts.time_ticks(ms)[-1] for ms in range(0, 10**9, 99_991)]
    assert spans == sorted(spans)  # a slower receipt never gets a shorter axis


def bar_widths(chart: charts.Chart) -> list[int]:
    root = parsed(str(chart.svg))
    return [int(r.get("width", "0")) for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]


def test_report_charts_draw_each_tally_to_scale() -> None:
    """Two rows of a real report: sent/received/rejected bars to one scale (the largest,
    8, fills the plot), rejections per code, and the median delays; the table beside each
    picture holds the same figures as text."""
    rows = [
        R.Tally("ngo", "alerts", sent=2, received=8, rejected_by_code={"E_DECRYPT": 2},
                median_delay_ms=1500.0),
        R.Tally("police", "alerts", sent=4, received=0, median_delay_ms=None),
    ]  # fmt: skip
    report = R.Report(0, None, rows, R.Tally(R.ALL, R.ALL, 6, 8, {"E_DECRYPT": 2}, 1500.0))
    counts, by_code, delays = charts.report_charts(report)
    full = charts.BAR_PLOT_W
    # police received and rejected nothing: bars of width 0, kept in their place.
    assert bar_widths(counts) == [full * 2 // 8, full, full * 2 // 8, full // 2, 0, 0]
    assert counts.rows == (
        ("ngo \u00b7 alerts", ("2", "8", "2")),
        ("police \u00b7 alerts", ("4", "0", "0")),
    )
    assert by_code.series == ("E_DECRYPT",) and bar_widths(by_code) == [full]
    assert [label for label, _ in by_code.rows] == ["ngo \u00b7 alerts"]
    assert delays.rows == (("ngo \u00b7 alerts", ("1.5 s",)),)


def test_an_empty_period_says_so_in_each_chart() -> None:
    report = R.Report(0, None, [], R.Tally(R.ALL, R.ALL))
    for chart in charts.report_charts(report):
        root = parsed(str(chart.svg))
        assert bar_widths(chart) == []
        assert any("in this period" in t for t in texts(root))
