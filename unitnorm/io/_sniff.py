"""Pick a reader from a file's first bytes."""

from __future__ import annotations

import os
from collections.abc import Sequence

from unitnorm.io._edf import check_file, read_edf
from unitnorm.io._nwb import read_nwb
from unitnorm.io._recording import Recording

__all__ = ["read_recording", "sniff"]

_HDF5 = b"\x89HDF\r\n\x1a\n"
# HDF5 allows a user block before the superblock: the signature sits at 0, 512, 1024, 2048, ...
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096, 8192)


def sniff(path: str) -> str:
    """``'edf'``, ``'bdf'``, ``'nwb'`` or ``'unknown'`` from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if head == b"0       ":
            return "edf"
        if head == b"\xffBIOSEMI":
            return "bdf"
        for offset in _HDF5_OFFSETS:
            fh.seek(offset)
            if fh.read(8) == _HDF5:
                return "nwb"
    return "unknown"


def read_recording(
    path: str | os.PathLike,
    channels: str | Sequence[str] | None = None,
    name: str | None = None,
) -> Recording:
    """Read an EDF/BDF or NWB file, whichever it is (judged by content, not by name).

    Parameters
    ----------
    path : str or os.PathLike
    channels : str or sequence of str, optional
        Channel names to keep, in this order.
    name : str, optional
        For NWB: the TimeSeries to read (see :func:`read_nwb`).

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When it is neither EDF/BDF nor HDF5/NWB, and for everything
        :func:`read_edf` and :func:`read_nwb` refuse.
    """
    path = check_file(path, "read_recording")
    kind = sniff(path)
    if kind in ("edf", "bdf"):
        if name is not None:
            raise ValueError(f"{path}: name= picks an NWB TimeSeries; this is an {kind.upper()} file")
        return read_edf(path, channels=channels)
    if kind == "nwb":
        return read_nwb(path, name=name, channels=channels)
    with open(path, "rb") as fh:
        head = fh.read(16)
    raise ValueError(f"{path}: not an EDF, BDF or NWB file (it starts with {head!r})")
