"""neo ``AnalogSignal`` objects (units from the ``quantities`` package)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from unitnorm.io._recording import ReadFn, Recording, pick_named, require, shorten
from unitnorm.io._units_parse import parse_unit

__all__ = ["from_neo", "read_neo"]


def from_neo(signal: Any, label: str | None = None) -> Recording:
    """Turn a neo ``AnalogSignal`` (in memory) or ``AnalogSignalProxy`` (streamed) into a :class:`Recording`.

    Parameters
    ----------
    signal : neo.AnalogSignal or neo.io.proxyobjects.AnalogSignalProxy
        Samples of shape ``(time, channels)`` with a ``quantities`` unit and a
        sampling rate. A proxy (``read_block(lazy=True)``) is read chunk by chunk
        through ``proxy.load(time_slice=...)``, never whole.
    label : str, optional
        Where the signal came from, for error messages.

    Returns
    -------
    Recording
        The unit from the signal's unit string (``'mV'``, ``'uV'``, ``'pA'``, ...)
        through :func:`parse_unit`; the rate in Hz; channel names from the
        ``channel_names`` array annotation when present, else ``'ch0'``, ``'ch1'``, ...

    Raises
    ------
    TypeError
        When ``signal`` is not a neo ``AnalogSignal`` (an ``IrregularlySampledSignal``
        has no single rate).
    ValueError
        When its unit string is unknown.
    ImportError
        When neo is not installed.
    """
    neo = require("neo", "from_neo")
    from neo.io.proxyobjects import AnalogSignalProxy

    who = label or "from_neo"
    if isinstance(signal, AnalogSignalProxy):
        unit, names, n_channels = _names_units(signal, who)
        source = NeoProxySource(signal, who)
        names = names or [f"ch{i}" for i in range(n_channels)]
        return Recording._from_source(source, names, [unit] * n_channels, source.rate, description=label)
    if not isinstance(signal, neo.AnalogSignal):
        raise TypeError(
            f"from_neo expected a neo.AnalogSignal or AnalogSignalProxy, got {type(signal).__name__}"
        )
    unit, names, n_channels = _names_units(signal, who)
    rate = float(np.asarray(signal.sampling_rate.rescale("Hz").magnitude))
    mantissa = np.asarray(signal.magnitude)
    return Recording(mantissa, rate, channel_names=names, channel_units=[unit] * n_channels)


# neo's readers of these are unitnorm's own (EDF/BDF, NWB) or read no samples with units
# (pickles, images; text files carry no unit, so the ASCII readers would invent one).
NOT_NEO = frozenset(
    {
        "EDFIO",
        "NWBIO",
        "PickleIO",
        "TiffIO",
        "AsciiImageIO",
        "AsciiSignalIO",
        "AsciiSpikeTrainIO",
        "NixIO",
        "NeoMatlabIO",
    }
)


def neo_ios(path: str) -> list[Any]:
    """Return neo's reader classes for ``path`` by its name (none when neo is missing)."""
    try:
        import neo
    except ImportError:
        return []
    try:
        ios = neo.io.list_candidate_ios(path)
    except (OSError, ValueError):  # neo raises ValueError for a suffix no IO reads
        return []
    return [io for io in ios if io.__name__ not in NOT_NEO]


class NeoProxySource:
    """Windows of a neo ``AnalogSignalProxy``, loaded chunk by chunk through ``load(time_slice=...)``."""

    def __init__(self, proxy: Any, label: str):
        self.proxy = proxy
        self.label = label
        self.n_samples = int(proxy.shape[0])
        self.rate = float(np.asarray(proxy.sampling_rate.rescale("Hz").magnitude))
        self.t_start = float(np.asarray(proxy.t_start.rescale("s").magnitude))

    @contextlib.contextmanager
    def open(self) -> Iterator[ReadFn]:
        import quantities as pq

        def read(start: int, stop: int, columns: Sequence[int]) -> np.ndarray:
            cols = list(columns)
            if stop <= start:
                return np.empty((0, len(cols)))
            window = (
                (self.t_start + start / self.rate) * pq.s,
                (self.t_start + stop / self.rate) * pq.s,
            )
            signal = self.proxy.load(time_slice=window, strict_slicing=False, channel_indexes=cols)
            block = np.asarray(signal.rescale(self.proxy.units).magnitude, dtype=np.float64)
            if block.ndim == 1:
                block = block[:, None]
            if block.shape != (stop - start, len(cols)):
                raise ValueError(
                    f"{self.label}: neo gave {block.shape[0]} samples for {stop - start} "
                    f"from sample {start} (a rounding of time_slice?)"
                )
            return block

        yield read


def _names_units(signal: Any, who: str) -> tuple[Any, list[str] | None, int]:
    text = signal.units.dimensionality.string
    try:
        unit = parse_unit(text)
    except ValueError as err:
        raise ValueError(f"{who}: signal {signal.name!r}: {err}") from None
    n_channels = int(signal.shape[1]) if len(signal.shape) == 2 else 1
    names = None
    annotated = getattr(signal, "array_annotations", {}).get("channel_names")
    if annotated is not None and len(annotated) == n_channels:
        names = [str(n) for n in annotated]
    return unit, names, n_channels


def read_neo(
    path: str | os.PathLike,
    name: str | None = None,
    channels: str | Sequence[str] | None = None,
) -> Recording:
    """Read an analog signal of any file or folder neo reads, streamed through its lazy proxy.

    Parameters
    ----------
    path : str or os.PathLike
        A file or folder in a format neo knows by its name (BrainVision ``.vhdr``,
        Blackrock ``.ns5``, Intan ``.rhd``, an Open Ephys folder, ...).
    name : str, optional
        The signal (neo stream) to read when the file holds several: its name, or
        ``'<segment>/<name>'`` when there are several segments.
    channels : str or sequence of str, optional
        Channel names to keep, in this order.

    Returns
    -------
    Recording
        Read lazily: each chunk through ``AnalogSignalProxy.load(time_slice=...)``,
        in the signal's unit (through :func:`parse_unit`).

    Raises
    ------
    ValueError
        When neo does not know the format, the signal is ambiguous or missing,
        or its unit is unknown.
    ImportError
        When neo is not installed.

    See Also
    --------
    from_neo : For a neo ``AnalogSignal`` (or proxy) already in hand.

    Examples
    --------
    neo's ``ExampleIO`` makes up a recording for any ``.fake`` name; it holds
    several signals, so one is picked by name:

    >>> from unitnorm.io import read_neo
    >>> rec = read_neo("demo.fake", name="0/stream 0")
    >>> rec.n_channels, rec.n_samples, str(rec.channel_units[0])
    (8, 100000, 'uV')
    >>> rec.read(0, 5).shape
    (5, 8)
    """
    require("neo", "read_neo")  # say how to install it before trying
    path = os.fspath(path)
    block, failures = None, []
    for io_class in neo_ios(path):
        try:
            reader = io_class(path)
            try:
                block = reader.read_block(lazy=True)
            except Exception:  # some IOs read only eagerly
                block = reader.read_block(lazy=False)
            break
        except Exception as err:  # a candidate chosen by name alone may well not fit
            failures.append(f"{io_class.__name__}: {type(err).__name__}: {' '.join(str(err).split())}")
    if block is None:
        why = shorten("; ".join(failures), 200) if failures else "no neo reader takes this name"
        raise ValueError(f"{path}: neo cannot read it ({why})")
    found = []
    many = len(block.segments) > 1
    for k, segment in enumerate(block.segments):
        for j, signal in enumerate(segment.analogsignals):
            label = signal.name if signal.name else f"signal{j}"
            found.append((f"{k}/{label}" if many else str(label), signal))
    if not found:
        raise ValueError(f"{path}: neo finds no analog signal in it")
    if name is not None:
        matches = [s for n, s in found if n == name]
        if not matches:
            listing = shorten(", ".join(repr(n) for n, _ in found), 240)
            raise ValueError(f"{path}: no signal named {name!r}; pass name= (or --name) one of {listing}")
        signal = matches[0]
    elif len(found) == 1:
        signal = found[0][1]
    else:
        listing = shorten(", ".join(repr(n) for n, _ in found), 240)
        raise ValueError(f"{path}: {len(found)} signals; pass name=... (or --name) to pick one of {listing}")
    rec = from_neo(signal, label=path)
    return pick_named(rec, channels, path)
