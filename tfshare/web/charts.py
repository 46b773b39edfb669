"""Pictures for the coordinator's view: a message's lineage as a graph, its recipients'
receipts on a timeline, and the period report as bar charts, each as inline SVG markup.

Owns: the chart inputs (``Node``/``Edge``, ``ReceiptPoint``, ``BarGroup``/``Series``), their
layout (rows by depth, the time scale, the bar lengths) and the SVG templates.

Every text drawn here came from outside (agency, channel, schema and code names are chosen by
members and carried in rosters and envelopes): it is first made visible (``visible.escape``:
no control, bidi or zero-width character reaches the page) and then written only through a
Jinja environment with autoescaping on, so a name such as ``<script>`` or ``"]]>`` is text
in the picture, never markup. Nothing here marks data safe; the result is ``Markup`` only
because the templates made it. Presentation attributes (``fill``, ``stroke``) and classes
style the pictures: a strict Content-Security-Policy forbids ``style`` attributes.

Pure: no clock, no files, no network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import jinja2
from markupsafe import Markup

from tfshare import visible
from tfshare.audit import report as reports

# Colours of the bar series and of receipt outcomes (a fixed palette: nothing from data
# ever becomes a colour, a class or an attribute name).
PALETTE: Final = ("#1f6feb", "#2da44e", "#cf222e", "#bf8700", "#8250df", "#0a7480", "#bc4c00")
ACCEPTED: Final = "#2da44e"
REJECTED: Final = "#cf222e"
# Shown text is cut to fit its box; the whole text is in the element's <title> (hover).
NODE_CHARS: Final = 26
LABEL_CHARS: Final = 30

# --- templates -----------------------------------------------------------------------------

_LINEAGE = """\
<svg xmlns="http://www.w3.org/2000/svg" class="chart lineage" role="img" \
width="{{ width }}" height="{{ height }}" viewBox="0 0 {{ width }} {{ height }}" \
aria-label="{{ title }}">
<title>{{ title }}</title>
{%- for e in edges %}
<line class="edge" x1="{{ e.x1 }}" y1="{{ e.y1 }}" x2="{{ e.x2 }}" y2="{{ e.y2 }}" \
stroke="#57606a" stroke-width="1.5" marker-end="url(#arrow)"/>
{%- endfor %}
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" \
markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" \
fill="#57606a"/></marker></defs>
{%- for n in nodes %}
<g class="node{% if n.focus %} focus{% endif %}{% if n.flagged %} flagged{% endif %}\
{% if not n.logged %} unlogged{% endif %}" data-msg="{{ n.key }}">
<title>{{ n.title }}</title>
<rect x="{{ n.x }}" y="{{ n.y }}" width="{{ node_w }}" height="{{ node_h }}" rx="6" \
fill="{{ n.fill }}" stroke="{{ n.stroke }}" stroke-width="{{ n.stroke_width }}"\
{% if not n.logged %} stroke-dasharray="4 3"{% endif %}/>
<text class="sender" x="{{ n.cx }}" y="{{ n.y + 20 }}" text-anchor="middle" \
font-weight="bold">{{ n.sender }}</text>
<text class="detail" x="{{ n.cx }}" y="{{ n.y + 38 }}" text-anchor="middle" \
font-size="12">{{ n.detail }}</text>
</g>
{%- endfor %}
</svg>"""

_TIMELINE = """\
<svg xmlns="http://www.w3.org/2000/svg" class="chart timeline" role="img" \
width="{{ width }}" height="{{ height }}" viewBox="0 0 {{ width }} {{ height }}" \
aria-label="{{ title }}">
<title>{{ title }}</title>
<line class="axis" x1="{{ x0 }}" y1="{{ axis_y }}" x2="{{ x1 }}" y2="{{ axis_y }}" \
stroke="#57606a"/>
{%- for t in ticks %}
<line class="tick" x1="{{ t.x }}" y1="{{ top }}" x2="{{ t.x }}" y2="{{ axis_y + 4 }}" \
stroke="#d0d7de"/>
<text class="tick-label" x="{{ t.x }}" y="{{ axis_y + 18 }}" text-anchor="middle" \
font-size="11">{{ t.text }}</text>
{%- endfor %}
<text class="axis-label" x="{{ x1 }}" y="{{ axis_y + 34 }}" text-anchor="end" \
font-size="11">time since sending</text>
{%- for row in rows %}
<g class="recipient" data-recipient-row="{{ loop.index0 }}">
<title>{{ row.title }}</title>
<text class="label" x="{{ x0 - 8 }}" y="{{ row.y + 4 }}" text-anchor="end">{{ row.label }}</text>
<line x1="{{ x0 }}" y1="{{ row.y }}" x2="{{ x1 }}" y2="{{ row.y }}" stroke="#eaeef2"/>
{%- if not row.marks %}
<text class="none" x="{{ x0 + 6 }}" y="{{ row.y + 4 }}" font-size="12" \
font-style="italic" fill="#57606a">no receipt</text>
{%- endif %}
{%- for m in row.marks %}
<g class="receipt {{ m.kind }}"><title>{{ m.title }}</title>
{%- if m.kind == "accepted" %}
<circle cx="{{ m.x }}" cy="{{ row.y }}" r="6" fill="{{ accepted }}"/>
{%- else %}
<path d="M {{ m.x - 5 }} {{ row.y - 5 }} L {{ m.x + 5 }} {{ row.y + 5 }} M {{ m.x - 5 }} \
{{ row.y + 5 }} L {{ m.x + 5 }} {{ row.y - 5 }}" stroke="{{ rejected }}" stroke-width="2.5"/>
{%- endif %}
<text class="mark-label" x="{{ m.x + 9 }}" y="{{ row.y - 7 }}" font-size="11">{{ m.text }}</text>
</g>
{%- endfor %}
</g>
{%- endfor %}
</svg>"""

_BARS = """\
<svg xmlns="http://www.w3.org/2000/svg" class="chart bars" role="img" \
width="{{ width }}" height="{{ height }}" viewBox="0 0 {{ width }} {{ height }}" \
aria-label="{{ title }}">
<title>{{ title }}</title>
{%- for s in legend %}
<rect x="{{ s.x }}" y="6" width="12" height="12" fill="{{ s.colour }}"/>
<text class="legend" x="{{ s.x + 16 }}" y="16" font-size="12">{{ s.name }}</text>
{%- endfor %}
{%- if not groups %}
<text class="empty" x="8" y="{{ top + 16 }}" font-style="italic" fill="#57606a">{{ empty }}</text>
{%- endif %}
{%- for g in groups %}
<g class="group"><title>{{ g.title }}</title>
<text class="label" x="{{ x0 - 8 }}" y="{{ g.label_y }}" text-anchor="end" \
font-size="12">{{ g.label }}</text>
{%- for b in g.bars %}
<rect class="bar" x="{{ x0 }}" y="{{ b.y }}" width="{{ b.width }}" height="{{ bar_h }}" \
fill="{{ b.colour }}"><title>{{ b.title }}</title></rect>
<text class="value" x="{{ x0 + b.width + 4 }}" y="{{ b.y + bar_h - 2 }}" \
font-size="11">{{ b.text }}</text>
{%- endfor %}
</g>
{%- endfor %}
</svg>"""

_env: Final = jinja2.Environment(
    loader=jinja2.DictLoader({"lineage": _LINEAGE, "timeline": _TIMELINE, "bars": _BARS}),
    autoescape=True,  # every {{ }} is escaped: data can only ever be text
    undefined=jinja2.StrictUndefined,
    trim_blocks=False,
)


def _render(name: str, **context: object) -> Markup:
    return Markup(_env.get_template(name).render(**context))  # noqa: S704 - autoescaped


def shown(text: str, limit: int | None = None) -> str:
    """``text`` as it may be shown: hidden characters as visible escapes, cut to ``limit``
    characters (the cut marked with an ellipsis). Still raw text: the templates escape it."""
    out = visible.escape(text)
    if limit is not None and len(out) > limit:
        out = out[: limit - 1] + "\u2026"
    return out


# --- lineage -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One message of a lineage: ``key`` names it in edges (its msg_id in hex), ``depth``
    is its row (parents above, children below; any integers), ``relation`` how it derives
    from its parent ("" for the message traced or a root)."""

    key: str
    sender: str
    relation: str
    depth: int
    label: str = ""  # a short id to show (the msg_id's first digits)
    focus: bool = False  # the message traced
    flagged: bool = False  # breaks a handling rule, or equivocates
    logged: bool = True  # False: referred to, but not in the log


@dataclass(frozen=True)
class Edge:
    parent: str
    child: str


NODE_W: Final = 200
NODE_H: Final = 50
GAP_X: Final = 24
GAP_Y: Final = 46
MARGIN: Final = 12


def lineage_svg(nodes: Sequence[Node], edges: Sequence[Edge], *, title: str = "") -> Markup:
    """The lineage as a graph: one row per depth (the shallowest on top), nodes in the order
    given within their row, an arrow from each parent to each child. Edges naming an unknown
    node are left out (they would point nowhere)."""
    depths = sorted({n.depth for n in nodes})
    rows = {d: [n for n in nodes if n.depth == d] for d in depths}
    widest = max((len(r) for r in rows.values()), default=0)
    width = max(widest * (NODE_W + GAP_X) - GAP_X, NODE_W) + 2 * MARGIN
    height = max(len(depths) * (NODE_H + GAP_Y) - GAP_Y, NODE_H) + 2 * MARGIN
    placed: dict[str, dict[str, object]] = {}
    drawn = []
    for row_number, depth in enumerate(depths):
        row = rows[depth]
        row_width = len(row) * (NODE_W + GAP_X) - GAP_X
        left = (width - row_width) // 2
        y = MARGIN + row_number * (NODE_H + GAP_Y)
        for i, node in enumerate(row):
            x = left + i * (NODE_W + GAP_X)
            relation = shown(node.relation) if node.relation else ""
            label = shown(node.label) if node.label else ""
            detail = " \u00b7 ".join(p for p in (relation, label) if p)
            if not node.logged:
                detail = (detail + " \u00b7 " if detail else "") + "not in this log"
            whole = " ".join(p for p in (shown(node.sender), detail) if p)
            view = {
                "key": shown(node.key),
                "x": x,
                "y": y,
                "cx": x + NODE_W // 2,
                "sender": shown(node.sender, NODE_CHARS),
                "detail": shown(detail, NODE_CHARS + 6),
                "title": whole + (" (handling flag)" if node.flagged else ""),
                "focus": node.focus,
                "flagged": node.flagged,
                "logged": node.logged,
                "fill": "#fff8c5" if node.focus else "#f6f8fa",
                "stroke": REJECTED if node.flagged else ("#1f2328" if node.focus else "#8c959f"),
                "stroke_width": 3 if node.focus or node.flagged else 1.5,
            }
            placed.setdefault(node.key, view)
            drawn.append(view)
    lines = []
    for edge in edges:
        parent, child = placed.get(edge.parent), placed.get(edge.child)
        if parent is None or child is None:
            continue
        px, py, cx, cy = parent["cx"], parent["y"], child["cx"], child["y"]
        assert isinstance(px, int) and isinstance(py, int)
        assert isinstance(cx, int) and isinstance(cy, int)
        # From the bottom of the parent to the top of the child (or the reverse if a caller
        # put a child above its parent: the arrow still points at the child).
        y1, y2 = (py + NODE_H, cy) if cy > py else (py, cy + NODE_H)
        lines.append({"x1": px, "y1": y1, "x2": cx, "y2": y2})
    return _render(
        "lineage",
        title=shown(title) or "lineage",
        width=width,
        height=height,
        node_w=NODE_W,
        node_h=NODE_H,
        nodes=drawn,
        edges=lines,
    )


# --- receipts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptPoint:
    """One recipient's receipt: ``delay_ms`` from sending to receipt (None: that recipient
    sent no receipt; one such point per silent recipient), ``outcome`` "accepted" or
    "rejected" with its ``code``."""

    recipient: str
    delay_ms: int | None
    outcome: str = "accepted"
    code: str | None = None


LABEL_W: Final = 210
PLOT_W: Final = 520
ROW_H: Final = 34


# Axis lengths a person reads at a glance, each split into four round ticks: 10 ms to 40 s by
# 1, 2, 4, 6, 8 times a power of ten, then minutes, hours and days.
_SECOND: Final = 1000
_SPANS: Final = (
    *(m * 10**k for k in range(1, 5) for m in (1, 2, 4, 6, 8) if m * 10**k <= 40 * _SECOND),
    *(m * 60 * _SECOND for m in (1, 2, 4, 8, 16, 20, 40, 60)),
    *(h * 3600 * _SECOND for h in (2, 4, 8, 12, 16, 24, 48, 96, 168, 336)),
)


def time_ticks(longest_ms: int, count: int = 4) -> list[int]:
    """``count`` + 1 evenly spaced ticks from 0 to the first round span that holds
    ``longest_ms`` (at least 10 ms)."""
    span = next((s for s in _SPANS if s >= longest_ms), max(longest_ms, 1))
    return [span * i // count for i in range(count + 1)]


def receipts_svg(points: Sequence[ReceiptPoint], *, title: str = "") -> Markup:
    """Each recipient on its own row (in the order of first appearance), its receipts placed
    by their delay since sending; "no receipt" where it sent none. A negative delay (the
    two agencies' clocks differ) is drawn at 0 and labelled as it is."""
    order: dict[str, list[ReceiptPoint]] = {}
    for point in points:
        order.setdefault(point.recipient, []).append(point)
    delays = [p.delay_ms for p in points if p.delay_ms is not None]
    ticks = time_ticks(max(delays, default=0))
    span = ticks[-1]
    x0, x1 = LABEL_W, LABEL_W + PLOT_W

    def x_of(ms: int) -> int:
        return x0 + PLOT_W * min(max(ms, 0), span) // span

    top = 16
    rows = []
    for i, (recipient, mine) in enumerate(order.items()):
        marks = []
        for p in mine:
            if p.delay_ms is None:
                continue
            accepted = p.outcome == "accepted"
            words = "accepted" if accepted else f"rejected {shown(p.code or 'without a code')}"
            when = reports.duration(p.delay_ms)
            marks.append(
                {
                    "x": x_of(p.delay_ms),
                    "kind": "accepted" if accepted else "rejected",
                    "text": shown(f"{when}" if accepted else f"{p.code or 'rejected'}", 24),
                    "title": f"{shown(recipient)}: {words} {when} after sending",
                }
            )
        rows.append(
            {
                "y": top + 14 + i * ROW_H,
                "label": shown(recipient, LABEL_CHARS),
                "title": shown(recipient),
                "marks": marks,
            }
        )
    axis_y = top + 14 + len(rows) * ROW_H
    return _render(
        "timeline",
        title=shown(title) or "receipts",
        width=x1 + 90,
        height=axis_y + 44,
        x0=x0,
        x1=x1,
        top=top,
        axis_y=axis_y,
        ticks=[{"x": x_of(t), "text": reports.duration(t)} for t in ticks],
        rows=rows,
        accepted=ACCEPTED,
        rejected=REJECTED,
    )


# --- bar charts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BarGroup:
    """One category (an agency on a channel): a value per series, None where it has none,
    and the text to print beside each bar (default: the value)."""

    label: str
    values: Sequence[float | None]
    texts: Sequence[str] | None = None


@dataclass(frozen=True)
class Chart:
    title: str
    svg: Markup
    # The same numbers as text, for the table under the picture: (label, [cell per series]).
    series: tuple[str, ...] = ()
    rows: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)


BAR_H: Final = 13
BAR_PLOT_W: Final = 380


def _number(value: float) -> str:
    return f"{value:g}"


def bar_chart(
    title: str, series: Sequence[str], groups: Sequence[BarGroup], *, empty: str = "no data"
) -> Chart:
    """Horizontal grouped bars, one group per category and one bar per series, all on one
    scale (the largest value fills the plot)."""
    largest = max((v for g in groups for v in g.values if v is not None), default=0.0)
    scale = BAR_PLOT_W / largest if largest > 0 else 0.0
    x0 = LABEL_W
    top = 28
    drawn = []
    table = []
    y = top
    for group in groups:
        label = shown(group.label)
        texts = (
            list(group.texts)
            if group.texts is not None
            else ["-" if v is None else _number(v) for v in group.values]
        )
        bars: list[dict[str, object]] = []
        for i, (name, value) in enumerate(zip(series, group.values, strict=True)):
            if value is None:
                continue
            bars.append(
                {
                    "y": y + len(bars) * (BAR_H + 2),
                    "width": max(round(max(value, 0.0) * scale), 1 if value > 0 else 0),
                    "colour": PALETTE[i % len(PALETTE)],
                    "text": shown(texts[i], 20),
                    "title": f"{label}: {shown(name)} {shown(texts[i])}",
                }
            )
        block = max(len(bars), 1) * (BAR_H + 2)
        drawn.append(
            {
                "label": shown(group.label, LABEL_CHARS),
                "title": label,
                "label_y": y + block // 2 + 4,
                "bars": bars,
            }
        )
        table.append((label, tuple(shown(t) for t in texts)))
        y += block + 12
    legend = []
    lx = 8
    for i, name in enumerate(series):
        text = shown(name, 24)
        legend.append({"x": lx, "colour": PALETTE[i % len(PALETTE)], "name": text})
        lx += 28 + 7 * len(text)
    svg = _render(
        "bars",
        title=shown(title),
        width=max(x0 + BAR_PLOT_W + 80, lx + 8),
        height=max(y, top + 28) + 4,
        x0=x0,
        top=top,
        bar_h=BAR_H,
        legend=legend,
        groups=drawn,
        empty=empty,
    )
    return Chart(shown(title), svg, tuple(shown(s) for s in series), tuple(table))


def report_charts(result: reports.Report) -> list[Chart]:
    """The period report as three charts: messages sent, received and rejected per agency
    and channel; rejections per code; the median delay from sending to receipt."""
    rows = result.rows

    def name(t: reports.Tally) -> str:
        return f"{t.agency} \u00b7 {t.channel}"

    counts = bar_chart(
        "Messages per agency and channel",
        ("sent", "received", "rejected"),
        [BarGroup(name(t), (t.sent, t.received, t.rejected)) for t in rows],
        empty="nothing was sent or received in this period",
    )
    codes = sorted({code for t in rows for code in t.rejected_by_code})
    rejected = [t for t in rows if t.rejected]
    by_code = bar_chart(
        "Rejected, by code",
        codes,
        [BarGroup(name(t), [t.rejected_by_code.get(c, 0) for c in codes]) for t in rejected],
        empty="no message was rejected in this period",
    )
    timed = [t for t in rows if t.median_delay_ms is not None]
    delays = bar_chart(
        "Median receipt delay (sending to receipt)",
        ("median delay",),
        [
            BarGroup(
                name(t),
                (t.median_delay_ms,),
                (reports.duration(t.median_delay_ms or 0.0),),
            )
            for t in timed
        ],
        empty="no receipt of a logged message in this period",
    )
    return [counts, by_code, delays]
