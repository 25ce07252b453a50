"""Recordings in and out: EDF/BDF, NWB, neo and MNE data as brainunit Quantities.

``import unitnorm.io`` needs only numpy and brainunit; each reader imports its
library (pyedflib, pynwb, neo, mne) when called, and says how to install it
when it is missing (``pip install -e ".[io]"``).

- :func:`parse_unit` reads the unit strings files carry (``'uV'``, ``'µV'``, ``'volts'``, ``'fT/cm'``).
- :class:`Recording` holds channel names, units and a sampling rate, and reads
  samples lazily; :func:`read_recording` picks the reader (EDF/BDF, NWB, FIF through
  MNE, or any format neo reads) from the file's first bytes or its name;
  :func:`to_mne` (``Recording.to_mne()``) gives a recording back to MNE as a ``RawArray`` in SI
  units, and ``Recording.to_xarray()`` makes an ``xarray.DataArray`` with units in its attributes.
- :func:`write_npz` writes an array or a Recording (streamed chunk by chunk) to an
  ``.npz`` file atomically; :func:`load_normalized` reads a normalized one back.
- :func:`write_zarr` writes one to a chunked, compressed Zarr store atomically (for
  corpora and large outputs); :func:`read_zarr` reads it back as a Recording, with the
  statistics of its attributes as Quantities (needs ``pip install -e ".[scale]"``).

``unitnorm.io`` knows nothing of normalization: the streaming statistics
(``channel_stats``, ``robust_stats``, ``normalize_recording``,
``write_normalized``, ``ChannelStats``, ``RobustStats``) live in
:mod:`unitnorm.preprocessing`; the old names still resolve here, with a
``DeprecationWarning``.
"""

import importlib
import warnings
from typing import Any

from unitnorm.io._edf import read_edf, read_edf_by_rate
from unitnorm.io._mne import from_mne, read_fif, to_mne
from unitnorm.io._neo import from_neo, read_neo
from unitnorm.io._nwb import read_nwb
from unitnorm.io._recording import Recording, RecordingWarning
from unitnorm.io._sniff import read_recording
from unitnorm.io._stream import load_normalized, write_npz
from unitnorm.io._units_parse import parse_unit
from unitnorm.io._zarr import read_zarr, write_zarr

__all__ = [
    "Recording",
    "RecordingWarning",
    "from_mne",
    "from_neo",
    "load_normalized",
    "parse_unit",
    "read_edf",
    "read_edf_by_rate",
    "read_fif",
    "read_neo",
    "read_nwb",
    "read_recording",
    "read_zarr",
    "to_mne",
    "write_npz",
    "write_zarr",
]

_MOVED = (
    "ChannelStats",
    "RobustStats",
    "channel_stats",
    "normalize_recording",
    "robust_stats",
    "write_normalized",
)


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"unitnorm.io.{name} moved to unitnorm.preprocessing.{name}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("unitnorm.preprocessing"), name)
    raise AttributeError(f"module 'unitnorm.io' has no attribute {name!r}")
