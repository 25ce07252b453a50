"""Text and HTML summaries of layers, recordings and scalers (``__repr__`` / ``_repr_html_``).

The one place that renders unitnorm objects for people: a compact one-line
``__repr__`` and a small self-contained HTML table for notebooks (no script, no
external style sheet; every piece of text goes through :func:`html.escape`).

Values are summarised, never printed whole: a per-feature statistic becomes its
range ``[min, max]`` with its unit, computed with NumPy on the concrete value
(one transfer from the device, no per-element round trips). Inside a traced
function (``jax.jit``) a value has no numbers yet and is shown as ``traced``.
Only NumPy is imported here; brainunit and jax are looked up when a value
needs them.
"""

from __future__ import annotations

import html
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "fmt",
    "html_table",
    "layer_fields",
    "layer_html",
    "layer_repr",
    "one_line",
    "sparkline_svg",
    "split",
    "unit_text",
    "value_range",
]

#: States summarised by their range only (their shape is the features' shape).
_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
_CELL = "padding:0 10px 0 0;text-align:left"
_ONE_NUMBER = re.compile(r"[-+]?(\d|inf|nan)")


def fmt(x: float) -> str:
    """Format one number with 4 significant digits (``-65.1``, ``1.35e-05``, ``nan``)."""
    return f"{float(x):.4g}"


def unit_text(unit: Any) -> str:
    """Return a unit's text (``'mV'``, ``'mV^2'``), or ``''`` for no unit or a dimensionless one."""
    if unit is None or getattr(unit, "is_unitless", False):
        return ""
    return str(unit)


def _is_tracer(value: Any) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(value, jax.core.Tracer)


def split(value: Any) -> tuple[Any, Any]:
    """Return ``(mantissa, unit)`` of a Quantity, or ``(value, None)`` of anything else."""
    mantissa = getattr(value, "mantissa", None)
    if mantissa is not None and hasattr(value, "unit"):
        return mantissa, value.unit
    return value, None


def _shape(mantissa: Any) -> tuple[int, ...] | None:
    shape = getattr(mantissa, "shape", None)
    return None if shape is None else tuple(int(d) for d in shape)


def value_range(value: Any) -> str:
    """Summarise a numeric value as ``'[min, max] unit'`` (``'v unit'`` when it holds one number).

    Non-finite entries are left out of the range and counted (``'[0, 1] (2 NaN)'``);
    a traced value gives ``'traced'``, an empty one ``'empty'``.
    """
    mantissa, unit = split(value)
    tail = f" {unit_text(unit)}" if unit_text(unit) else ""
    if _is_tracer(mantissa):
        return f"traced{tail}"
    try:
        m = np.asarray(mantissa)
    except Exception:  # a value NumPy cannot take (an abstract or deleted array)
        return "unavailable"
    if m.dtype.kind == "c":  # complex: the range of the magnitudes
        m, tail = np.abs(m), f"{tail} (magnitudes)"
    elif m.dtype.kind not in "biuf":
        try:  # bfloat16 and the float8 types are NumPy 'V' (void) kinds: read them as float32
            m = m.astype(np.float32)
        except (TypeError, ValueError):
            return f"<{m.dtype}>"
    if m.size == 0:
        return "empty"
    finite = np.isfinite(m) if m.dtype.kind == "f" else np.ones(m.shape, dtype=bool)
    n_bad = int(m.size - np.count_nonzero(finite))
    bad = f" ({n_bad} non-finite)" if n_bad else ""
    if n_bad == m.size:
        return f"all non-finite ({n_bad}){tail}"
    kept = m[finite] if n_bad else m
    lo, hi = kept.min(), kept.max()
    if m.size == 1:
        return f"{fmt(lo)}{tail}"
    return f"[{fmt(lo)}, {fmt(hi)}]{tail}{bad}"


def one_line(name: str, fields: Sequence[tuple[str, str]]) -> str:
    """Join ``(key, text)`` pairs as ``Name(key=text, ...)`` (no ``=`` after keys ending ``∈`` or ``: ``)."""
    parts = []
    for k, v in fields:
        if k.endswith("∈") and _ONE_NUMBER.match(v):  # one value: ``sigma=1``, not ``sigma∈1``
            k = k[:-1]
        parts.append(k + (v if k.endswith(("∈", ": ")) else f"={v}") if k else v)
    return f"{name}({', '.join(parts)})"


def html_table(
    title: str, rows: Iterable[Sequence[str]], header: Sequence[str] | None = None, note: str = ""
) -> str:
    """Return a self-contained HTML table; every cell is text and is escaped here.

    Cells that are :class:`Markup` (the SVG :func:`sparkline_svg` builds from
    numbers only) are inserted as they are; every other cell, channel names
    from files included, is escaped.
    """
    out = [
        '<div class="unitnorm-repr">',
        '<table style="border-collapse:collapse;font-family:monospace;font-size:12px">',
        '<caption style="text-align:left;font-weight:bold;padding-bottom:2px;white-space:nowrap">'
        f"{html.escape(title)}</caption>",
    ]
    if header:
        cells = "".join(f'<th style="{_CELL}">{html.escape(h)}</th>' for h in header)
        out.append(f"<tr>{cells}</tr>")
    for row in rows:
        cells = "".join(
            f'<td style="{_CELL}">{c if isinstance(c, Markup) else html.escape(c)}</td>' for c in row
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    if note:
        out.append(f'<div style="font-family:monospace;font-size:11px;color:#666">{html.escape(note)}</div>')
    out.append("</div>")
    return "\n".join(out)


class Markup(str):
    """HTML built here from numbers only: :func:`html_table` inserts it without escaping."""


def sparkline_svg(values: Any, width: int = 160, height: int = 22, points: int = 200) -> Markup:
    """Return an inline SVG of a trace's min/max envelope, at most ``points`` points.

    The samples are cut into ``points // 2`` bins; the polygon follows each bin's
    maximum left to right and its minimum back. Non-finite samples are skipped; a
    bin without finite samples is drawn at the middle.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    n_bins = max(1, min(points // 2, v.size))
    if v.size == 0:
        return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>')
    edges = np.linspace(0, v.size, n_bins + 1).astype(np.int64)[:-1]
    with np.errstate(invalid="ignore"):
        clean = np.where(np.isfinite(v), v, np.nan)
        hi = np.fmax.reduceat(clean, edges)
        lo = np.fmin.reduceat(clean, edges)
    finite = np.isfinite(hi)
    top, bottom = (float(lo[finite].min()), float(hi[finite].max())) if finite.any() else (0.0, 0.0)
    span = bottom - top or 1.0
    mid = (top + bottom) / 2
    hi, lo = np.where(finite, hi, mid), np.where(finite, lo, mid)
    x = np.linspace(0.5, width - 0.5, n_bins) if n_bins > 1 else np.array([width / 2])

    def y(a: np.ndarray) -> np.ndarray:
        return 1 + (height - 2) * (1 - (a - top) / span)

    xs = np.concatenate([x, x[::-1]])
    ys = np.concatenate([y(hi), y(lo)[::-1]])
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys, strict=True))
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><polygon points="{pts}" fill="#3b6fb6" '
        'stroke="#3b6fb6" stroke-width="0.6"/></svg>'
    )


# ---------------------------------------------------------------------------- layers


def _mode(layer: Any) -> str:
    if getattr(layer, "frozen", False):
        return "frozen (affine too)" if getattr(layer, "frozen_affine", False) else "frozen"
    return "train" if getattr(layer, "training", True) else "eval"


def _in_unit(layer: Any) -> str:
    unit = layer.in_unit
    if unit is None:
        return "None"
    return unit_text(unit) or "dimensionless"


def _param(name: str, value: Any) -> tuple[str, str]:
    mantissa, unit = split(value)
    shape = _shape(mantissa)
    if shape is None:
        return f"{name}: ", type(value).__name__
    if shape == ():
        return f"{name}∈", value_range(value)
    return f"{name}{shape}∈", value_range(value)


def layer_fields(layer: Any) -> list[tuple[str, str]]:
    """Return the ``(key, text)`` pairs that describe a layer, in display order.

    The class-independent parts (``in_size``, ``in_unit``, ``mode``), a few that
    identify a layer (``num_groups``, the wrapped parameter), then one entry per
    State: statistics as their range with units, parameters as their shape and
    range, single numbers as their value.
    """
    fields: list[tuple[str, str]] = []
    if hasattr(layer, "in_size"):
        fields.append(("in_size", str(tuple(layer.in_size))))
    if hasattr(layer, "in_unit"):
        fields.append(("in_unit", _in_unit(layer)))
    elif getattr(layer, "unit", None) is not None:
        fields.append(("unit", unit_text(layer.unit) or "dimensionless"))
    fields.append(("mode", _mode(layer)))
    if hasattr(layer, "num_groups"):
        fields.append(("num_groups", str(layer.num_groups)))
    inner = getattr(layer, "layer_instance", None)
    if inner is not None:
        fields.append(("wraps", f"{type(inner).__name__}.{layer.param}"))
    for name in getattr(layer, "_state_names", ()):
        state = getattr(layer, name, None)
        value = getattr(state, "value", state)
        if isinstance(value, dict):
            fields.extend(_param(k, v) for k, v in value.items() if v is not None)
        elif value is None:
            continue
        elif name in _STATISTICS:
            fields.append((f"{name}∈", value_range(value)))
        else:
            fields.append(_param(name, value))
    return fields


def layer_repr(layer: Any) -> str:
    """One line: class, in_size, reference unit, mode, statistics' ranges, parameters' shapes."""
    return one_line(type(layer).__name__, layer_fields(layer))


def layer_html(layer: Any) -> str:
    """Return the summary of :func:`layer_repr` as a two-column HTML table."""
    rows = []
    for key, text in layer_fields(layer):
        key = key.rstrip("∈: ")
        if key == "in_unit" and text == "None":
            text = "not fixed yet (adopted from the first input)"
        rows.append((key, text))
    return html_table(type(layer).__name__, rows)


# ---------------------------------------------------------------------------- recordings

#: At most this many values are read for a recording's sparklines (32 MB of float64).
_READ_BUDGET = 2**22
_SHOWN_CHANNELS = 16


def _unit_groups(names: Sequence[str], units: Sequence[Any]) -> list[tuple[str, list[str]]]:
    """Channel names grouped by unit text, groups in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for name, unit in zip(names, units, strict=True):
        groups.setdefault(unit_text(unit) or "dimensionless", []).append(name)
    return list(groups.items())


def recording_repr(rec: Any, shown: int = 6) -> str:
    """``Recording(n channels: ...; n samples at r Hz, d s)``; channels grouped by unit when many."""
    names, units, n = rec.channel_names, rec.channel_units, rec.n_channels
    plural = "channel" if n == 1 else "channels"
    if n <= shown:
        listed = ", ".join(f"{c} [{unit_text(unit) or '1'}]" for c, unit in zip(names, units, strict=True))
    else:
        parts = []
        for text, members in _unit_groups(names, units)[:4]:
            more = ", ..." if len(members) > 3 else ""
            parts.append(f"{len(members)} in {text} ({', '.join(members[:3])}{more})")
        rest = len(_unit_groups(names, units)) - 4
        listed = ", ".join(parts) + (f", {rest} more units" if rest > 0 else "")
    rate = float(rec.sampling_rate.mantissa)
    timing = f"{rec.n_samples} samples at {rate:g} Hz, {rec.n_samples / rate:g} s"
    return f"Recording({n} {plural}: {listed}; {timing})"


def _read_for_display(rec: Any, shown: int) -> tuple[np.ndarray, bool]:
    """Return float64 samples of the first ``shown`` channels (each in its own unit) and whether sampled.

    The whole recording when it fits :data:`_READ_BUDGET`; else 100 evenly spaced
    windows, put end to end (so each sparkline bin is one window).
    """
    sub = rec._derive(range(shown))
    n = rec.n_samples
    with sub._reader() as read:
        if n * shown <= _READ_BUDGET:
            return read(0, n), False
        length = max(1, _READ_BUDGET // (shown * 100))
        starts = np.linspace(0, n - length, 100).astype(np.int64)
        return np.concatenate([read(int(s), int(s) + length) for s in starts]), True


def recording_html(rec: Any) -> str:
    """Return an HTML table of a recording: per channel its unit, range and a sparkline (first 16)."""
    n, rate = rec.n_channels, float(rec.sampling_rate.mantissa)
    title = (
        f"Recording: {n} channel{'s' if n != 1 else ''}, {rec.n_samples / rate:g} s at {rate:g} Hz "
        f"({rec.n_samples} samples)"
    )
    shown = min(n, _SHOWN_CHANNELS)
    notes = []
    try:
        block, sampled = _read_for_display(rec, shown)
    except Exception as err:  # a display never raises: say why there is no trace
        block, sampled = None, False
        notes.append(f"samples not shown: {' '.join(str(err).split())[:200]}")
    rows = []
    for j in range(shown):
        unit = unit_text(rec.channel_units[j])
        if block is None:
            rows.append((rec.channel_names[j], unit, "", ""))
            continue
        trace = block[:, j]
        rows.append((rec.channel_names[j], unit, value_range(trace), sparkline_svg(trace)))
    if n > shown:
        groups = _unit_groups(rec.channel_names[shown:], rec.channel_units[shown:])
        notes.append(f"... {n - shown} more channels: " + ", ".join(f"{len(m)} in {t}" for t, m in groups))
    if sampled:
        notes.append("range and trace from 100 evenly spaced windows (the recording is long)")
    gaps = getattr(rec, "gaps", ())
    if gaps:
        notes.append(f"{len(gaps)} gap(s) read as NaN")
    return html_table(title, rows, header=("channel", "unit", "range", "trace"), note="; ".join(notes))


# ---------------------------------------------------------------------------- fitted scalers


Fitted = Sequence[tuple[str, str]] | None


def fitted_fields(values: Sequence[tuple[str, Any]]) -> list[tuple[str, str]]:
    """``(name∈, range)`` per fitted attribute; a tuple (one Quantity per unit group) joins with ``' | '``."""
    out = []
    for name, value in values:
        if value is None:
            continue
        parts = value if isinstance(value, tuple) else (value,)
        out.append((f"{name}∈", " | ".join(value_range(p) for p in parts)))
    return out


def changed_params(obj: Any, params: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Keep the settings that differ from the constructor's defaults (as scikit-learn prints them)."""
    import inspect

    signature = inspect.signature(type(obj).__init__)
    defaults = {k: p.default for k, p in signature.parameters.items() if p.default is not p.empty}
    out = []
    for k, v in params:
        d = defaults.get(k, inspect.Parameter.empty)
        try:
            same = v is d or (type(v) is type(d) and bool(v == d))
        except Exception:  # values whose == is not a bool (arrays, Quantities)
            same = False
        if not same:
            out.append((k, v))
    return out


def scaler_repr(name: str, params: Sequence[tuple[str, Any]], fitted: Fitted) -> str:
    """``Name(param=value, ...; not fitted)`` or ``Name(param=value, ...; fitted: mean_∈[...] mV, ...)``."""
    head = one_line(name, [(k, repr(v)) for k, v in params])[:-1]
    sep = "; " if params else ""
    if fitted is None:
        return f"{head}{sep}not fitted)"
    return f"{head}{sep}fitted: {one_line('', fitted)[1:-1]})"


def scaler_html(name: str, params: Sequence[tuple[str, Any]], fitted: Fitted) -> str:
    """Return the summary of :func:`scaler_repr` as an HTML table (settings, fitted ranges)."""
    rows = [(k, repr(v)) for k, v in params]
    if fitted is None:
        rows.append(("fitted", "not fitted"))
    else:
        rows.extend((k.rstrip("∈: "), v) for k, v in fitted)
    return html_table(name, rows)
