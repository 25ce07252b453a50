"""The performance page's chart and tables, drawn from the benchmark JSON at build time.

``benchmarks/run.py --json FILE`` writes every measurement; the file the docs
read is ``benchmarks/results.json`` (``unitnorm_benchmark_json`` in
``docs/conf.py``). Three directives, used by ``docs/performance.md``:

``unitnorm-benchmark-chart``
    one chart: for each case and shape, unitnorm's median time as a multiple
    of the fastest peer's (below 1: unitnorm is faster), as inline SVG.
``unitnorm-benchmark-summary``
    the same numbers as a table, with the fastest peer named.
``unitnorm-benchmark-details``
    every measured row, one folded section per case.
``unitnorm-benchmark-goals``
    the script's verdicts on its goals (``goals`` in the JSON).

And ``details`` (a folded block, ``<details>`` in HTML) for hand-written text.

Degrading gracefully: the JSON belongs to the benchmark script, whose schema
may change. Only these keys are read: ``results`` (a list of rows) and, in a
row, ``group``, ``shape_name``, ``shape``, ``impl``, ``family``,
``median_s`` and ``ratio_to_fastest_peer``; ``environment`` and ``goals``
are optional. A missing file, a missing key or a row that does not parse never
fails the build: the directive then shows a sentence saying what is missing
(and logs it at info level, so ``-W`` builds still pass), and rows it cannot
read are skipped.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from sphinx.util import logging

logger = logging.getLogger(__name__)

PEERS = ("flax", "brainstate", "equinox", "torch")
CHANNELS_FIRST_PEERS = ("equinox", "torch")  # their GroupNorm/InstanceNorm take (channels, length)
SHAPE_ORDER = ("tiny", "small", "medium", "large")
# which unitnorm row stands for unitnorm in a case: the layer with Quantities (the
# path users take), else the layer with arrays, else the first unitnorm row
PREFERRED = (re.compile(r"layer.*\(Quantity\)|\(Quantity\)"), re.compile(r"\(array\)|layer"))
# short labels for the chart's axis, by group key; unknown groups use their own title
SHORT = {
    "bn_train": "BatchNorm1d train",
    "bn_eval": "BatchNorm1d eval",
    "bn_grad": "BatchNorm1d fwd+bwd",
    "bn_donated": "BatchNorm1d donated",
    "bn_eager": "BatchNorm1d eager",
    "layer_norm": "LayerNorm",
    "rms_norm": "RMSNorm",
    "group_norm": "GroupNorm",
    "bn_renorm": "BatchRenorm1d train",
    "spectral_norm": "SpectralNorm",
    "weight_norm": "WeightNorm",
    "instance_norm": "InstanceNorm",
    "weight_std": "weight standardization",
    "reductions": "one sum (what XLA charges for a step before it)",
}


# ----------------------------------------------------------------------------
# reading the JSON


def load(path: Path) -> tuple[dict[str, Any] | None, str]:
    """Return the parsed JSON (or None) and, when None, why."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"no benchmark results at {path.name}"
    except (OSError, ValueError) as err:
        return None, f"the benchmark results could not be read ({type(err).__name__})"
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        return None, "the benchmark results have no 'results' list (the JSON schema changed?)"
    return data, ""


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in data.get("results", []):
        if isinstance(r, dict) and {"group", "shape_name", "impl", "family"} <= set(r):
            rows.append(r)
    return rows


def _order(values: list[str], order: tuple[str, ...]) -> list[str]:
    return sorted(set(values), key=lambda v: (order.index(v) if v in order else len(order), values.index(v)))


def summary(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per (case, shape): unitnorm's row, its ratio, the fastest peer."""
    rows = _rows(data)
    groups = _order([r["group"] for r in rows], tuple(SHORT))
    shapes = _order([r["shape_name"] for r in rows], SHAPE_ORDER)
    out = []
    for g in groups:
        for s in shapes:
            case = [r for r in rows if r["group"] == g and r["shape_name"] == s]
            ours = [r for r in case if r["family"] == "unitnorm" and _num(r.get("ratio_to_fastest_peer"))]
            peers = [r for r in case if r["family"] in PEERS and _num(r.get("median_s"))]
            if not ours or not peers:
                continue
            pick = next((r for pat in PREFERRED for r in ours if pat.search(str(r["impl"]))), ours[0])
            best = min(peers, key=lambda r: r["median_s"])
            ratio, peer_name = _num(pick["ratio_to_fastest_peer"]), str(best["impl"])
            # like for like, as benchmarks/run.py's verdicts: equinox and torch take (channels, length)
            # samples, so they are held against unitnorm's channels-first row where the case has one;
            # the ratio shown is the worst over the peers
            first = next(
                (r for r in case if str(r["impl"]).endswith("channels first") and _num(r.get("median_s"))),
                None,
            )
            if _num(pick.get("median_s")):
                ratio = None
                for family in PEERS:
                    theirs = [r for r in peers if r["family"] == family]
                    if not theirs:
                        continue
                    peer = min(theirs, key=lambda r: r["median_s"])
                    mine = first if family in CHANNELS_FIRST_PEERS and first is not None else pick
                    r_ = mine["median_s"] / peer["median_s"]
                    if ratio is None or r_ > ratio:
                        ratio = r_
                        peer_name = str(peer["impl"]) + (
                            " (channels first, as its input)" if mine is first else ""
                        )
            out.append(
                {
                    "group": g,
                    "label": SHORT.get(g, g),
                    "shape": s,
                    "dims": tuple(case[0].get("shape") or ()),
                    "impl": str(pick["impl"]),
                    "ratio": ratio,
                    "median_s": _num(pick.get("median_s")),
                    "peer": peer_name,
                    "peer_s": _num(best["median_s"]),
                }
            )
    return out


# ----------------------------------------------------------------------------
# drawing


def chart_svg(entries: list[dict[str, Any]]) -> str:
    """Draw a horizontal grouped bar chart (a bar per shape, a group per case); return SVG text."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(e["label"] for e in entries))
    shapes = _order([e["shape"] for e in entries], SHAPE_ORDER)
    colors = {"tiny": "#bbbbbb", "small": "#9ecae1", "medium": "#4292c6", "large": "#08519c"}
    height = 0.8 / max(len(shapes), 1)
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(labels) * max(len(shapes), 1) / 2 + 1.4), dpi=100)
    for i, shape in enumerate(shapes):
        ys, xs = [], []
        for j, label in enumerate(labels):
            e = next((e for e in entries if e["label"] == label and e["shape"] == shape), None)
            if e is not None and e["ratio"] is not None:
                ys.append(j + (i - (len(shapes) - 1) / 2) * height)
                xs.append(e["ratio"])
        dims = next((e["dims"] for e in entries if e["shape"] == shape and e["dims"]), ())
        name = f"{shape} {tuple(dims)}" if dims else shape
        bars = ax.barh(ys, xs, height=height * 0.95, color=colors.get(shape, None), label=name)
        ax.bar_label(bars, labels=[f"{x:.2f}" for x in xs], padding=2, fontsize=7)
    ax.axvline(1.0, color="#d62728", linewidth=1, linestyle="--")
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("unitnorm's median time / the fastest peer's (below 1: unitnorm is faster)")
    ax.set_xlim(0, max([e["ratio"] for e in entries if e["ratio"]] + [1.0]) * 1.15)
    ax.legend(loc="lower right", fontsize=8, title="shape (batch, length, channels)", title_fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


# ----------------------------------------------------------------------------
# nodes and directives


class details(nodes.General, nodes.Element):
    """A folded block: ``<details><summary>`` in HTML, its content elsewhere."""


def _visit_details_html(self: Any, node: details) -> None:
    self.body.append(f'<details class="unitnorm-details"><summary>{self.encode(node["summary"])}</summary>\n')


def _depart_details_html(self: Any, node: details) -> None:
    self.body.append("</details>\n")


def _visit_details_other(self: Any, node: details) -> None:
    pass


def _depart_details_other(self: Any, node: details) -> None:
    pass


class DetailsDirective(Directive):
    """``details``: fold the content under a one-line summary (the argument)."""

    required_arguments = 1
    final_argument_whitespace = True
    has_content = True

    def run(self) -> list[nodes.Node]:
        node = details(summary=self.arguments[0])
        self.state.nested_parse(self.content, self.content_offset, node)
        return [node]


class _BenchmarkDirective(Directive):
    has_content = False
    option_spec = {"path": directives.unchanged}

    def _data(self) -> tuple[dict[str, Any] | None, list[nodes.Node]]:
        env = self.state.document.settings.env
        path = Path(env.srcdir, self.options.get("path", env.config.unitnorm_benchmark_json)).resolve()
        env.note_dependency(str(path))
        data, why = load(path)
        if data is None:
            logger.info("performance page: %s", why)
            return None, [nodes.paragraph(text=f"(Not shown: {why}.)")]
        return data, []


class ChartDirective(_BenchmarkDirective):
    def run(self) -> list[nodes.Node]:
        data, fallback = self._data()
        if data is None:
            return fallback
        entries = summary(data)
        if not entries:
            return [nodes.paragraph(text="(Not shown: the benchmark results hold no case with a peer.)")]
        try:
            svg = chart_svg(entries)
        except ImportError:
            return [nodes.paragraph(text="(Not shown: the chart needs matplotlib.)")]
        html = f'<figure class="unitnorm-chart" role="img" aria-label="benchmark ratios">{svg}</figure>'
        return [nodes.raw("", html, format="html")]


def _table(header: list[str], rows: list[list[str]], widths: list[int] | None = None) -> nodes.table:
    table = nodes.table(classes=["unitnorm-bench"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for w in widths or [1] * len(header):
        group += nodes.colspec(colwidth=w)
    head = nodes.thead()
    group += head
    body = nodes.tbody()
    group += body
    for target, cells in [(head, header), *[(body, r) for r in rows]]:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += nodes.paragraph(text=cell)
            row += entry
        target += row
    return table


class SummaryDirective(_BenchmarkDirective):
    def run(self) -> list[nodes.Node]:
        data, fallback = self._data()
        if data is None:
            return fallback
        entries = summary(data)
        shapes = _order([e["shape"] for e in entries], SHAPE_ORDER)
        labels = list(dict.fromkeys(e["label"] for e in entries))
        rows = []
        for label in labels:
            cells = [label]
            for s in shapes:
                e = next((e for e in entries if e["label"] == label and e["shape"] == s), None)
                cells.append("-" if e is None or e["ratio"] is None else f"{e['ratio']:.2f}")
            fastest = {e["peer"].split(",")[0] for e in entries if e["label"] == label}
            cells.append(", ".join(sorted(fastest)))
            rows.append(cells)
        return [_table(["case", *shapes, "fastest peer"], rows, [4, *[1] * len(shapes), 4])]


class DetailsTablesDirective(_BenchmarkDirective):
    def run(self) -> list[nodes.Node]:
        data, fallback = self._data()
        if data is None:
            return fallback
        rows = _rows(data)
        out: list[nodes.Node] = []
        groups = _order([r["group"] for r in rows], tuple(SHORT))
        shapes = _order([r["shape_name"] for r in rows], SHAPE_ORDER)
        for g in groups:
            box = details(summary=f"{SHORT.get(g, g)}: every implementation")
            for s in shapes:
                case = [r for r in rows if r["group"] == g and r["shape_name"] == s]
                if not case:
                    continue
                dims = tuple(case[0].get("shape") or ())
                box += nodes.paragraph(text=f"{s} {dims}" if dims else s)
                body = []
                for r in case:
                    ratio = _num(r.get("ratio_to_fastest_peer"))
                    body.append(
                        [
                            str(r["impl"]),
                            _fmt_time(_num(r.get("median_s"))),
                            _fmt_time(_num(r.get("min_s"))),
                            "-" if ratio is None else f"{ratio:.2f}",
                            str(r.get("note") or ""),
                        ]
                    )
                box += _table(
                    ["implementation", "median", "fastest", "× fastest peer", "note"], body, [6, 2, 2, 2, 5]
                )
            out.append(box)
        return out


def goal_rows(data: dict[str, Any]) -> list[list[str]]:
    """Return the goals table's rows: goal, shape, measured, target, met ("(shown)" for evidence lines)."""
    rows = []
    for g in data.get("goals") or []:
        if not isinstance(g, dict) or not {"goal", "shape", "ratio"} <= set(g):
            continue
        ratio, target = _num(g.get("ratio")), _num(g.get("target"))
        met = g.get("met")
        rows.append(
            [
                str(g["goal"]),
                str(g["shape"]),
                "-" if ratio is None else f"{ratio:.2f}",
                "-" if target is None else f"≤ {target:.2f}",
                # a line without a finite target is evidence shown beside the goals, not a goal
                "(shown)" if target is None else "yes" if met is True else "no" if met is False else "-",
            ]
        )
    return rows


class GoalsDirective(_BenchmarkDirective):
    def run(self) -> list[nodes.Node]:
        data, fallback = self._data()
        if data is None:
            return fallback
        rows = goal_rows(data)
        if not rows:
            return [nodes.paragraph(text="(Not shown: the benchmark results hold no goals.)")]
        return [_table(["goal", "shape", "measured", "target", "met"], rows, [8, 1, 1, 1, 1])]


def setup(app: Any) -> dict[str, Any]:
    app.add_config_value("unitnorm_benchmark_json", "../benchmarks/results.json", "env")
    app.add_node(
        details,
        html=(_visit_details_html, _depart_details_html),
        latex=(_visit_details_other, _depart_details_other),
        text=(_visit_details_other, _depart_details_other),
        man=(_visit_details_other, _depart_details_other),
        texinfo=(_visit_details_other, _depart_details_other),
    )
    app.add_directive("details", DetailsDirective)
    app.add_directive("unitnorm-benchmark-chart", ChartDirective)
    app.add_directive("unitnorm-benchmark-summary", SummaryDirective)
    app.add_directive("unitnorm-benchmark-details", DetailsTablesDirective)
    app.add_directive("unitnorm-benchmark-goals", GoalsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
