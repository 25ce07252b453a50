"""Recordings in and out: EDF/BDF, NWB, neo and MNE data as brainunit Quantities.

``import unitnorm.io`` needs only numpy and brainunit; each reader imports its
library (pyedflib, pynwb, neo, mne) when called, and says how to install it
when it is missing (``pip install 'unitnorm[io]'``).

- :func:`parse_unit` reads the unit strings files carry (``'uV'``, ``'µV'``, ``'volts'``, ``'fT/cm'``).
- :class:`Recording` holds channel names, units and a sampling rate, and reads
  samples lazily; :func:`read_recording` picks the reader (EDF/BDF, NWB, FIF through
  MNE, or any format neo reads) from the file's first bytes or its name.
- :func:`channel_stats`, :func:`robust_stats`, :func:`normalize_recording` and
  :func:`write_normalized` compute per-channel statistics and normalize chunk by
  chunk, for files larger than memory.
"""

from unitnorm.io._edf import read_edf, read_edf_by_rate
from unitnorm.io._mne import from_mne, read_fif
from unitnorm.io._neo import from_neo, read_neo
from unitnorm.io._nwb import read_nwb
from unitnorm.io._recording import Recording, RecordingWarning
from unitnorm.io._sniff import read_recording
from unitnorm.io._stream import (
    ChannelStats,
    RobustStats,
    channel_stats,
    load_normalized,
    normalize_recording,
    robust_stats,
    write_normalized,
)
from unitnorm.io._units_parse import parse_unit

__all__ = [
    "ChannelStats",
    "Recording",
    "RecordingWarning",
    "RobustStats",
    "channel_stats",
    "from_mne",
    "from_neo",
    "load_normalized",
    "normalize_recording",
    "parse_unit",
    "read_edf",
    "read_edf_by_rate",
    "read_fif",
    "read_neo",
    "read_nwb",
    "read_recording",
    "robust_stats",
    "write_normalized",
]
