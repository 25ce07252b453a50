"""neo ``AnalogSignal`` objects (units from the ``quantities`` package)."""

from __future__ import annotations

from typing import Any

import numpy as np

from unitnorm.io._recording import Recording
from unitnorm.io._units_parse import parse_unit

__all__ = ["from_neo"]


def from_neo(signal: Any) -> Recording:
    """Turn a neo ``AnalogSignal`` into a :class:`Recording` (in memory).

    Parameters
    ----------
    signal : neo.AnalogSignal
        Samples of shape ``(time, channels)`` with a ``quantities`` unit and a
        sampling rate.

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
    try:
        import neo
    except ImportError as err:
        raise ImportError("from_neo needs neo, which is not installed: pip install neo") from err
    if not isinstance(signal, neo.AnalogSignal):
        raise TypeError(f"from_neo expected a neo.AnalogSignal, got {type(signal).__name__}")
    text = signal.units.dimensionality.string
    try:
        unit = parse_unit(text)
    except ValueError as err:
        raise ValueError(f"from_neo: signal {signal.name!r}: {err}") from None
    rate = float(np.asarray(signal.sampling_rate.rescale("Hz").magnitude))
    mantissa = np.asarray(signal.magnitude)
    n_channels = mantissa.shape[1] if mantissa.ndim == 2 else 1
    names = None
    annotated = getattr(signal, "array_annotations", {}).get("channel_names")
    if annotated is not None and len(annotated) == n_channels:
        names = [str(n) for n in annotated]
    return Recording(mantissa, rate, channel_names=names, channel_units=[unit] * n_channels)
