"""Pick a reader from a file's first bytes (or, for formats neo reads, its name)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from unitnorm.io._edf import check_file, read_edf
from unitnorm.io._mne import read_fif
from unitnorm.io._neo import neo_ios, read_neo
from unitnorm.io._nwb import read_nwb
from unitnorm.io._recording import Recording

__all__ = ["read_recording", "sniff"]

_HDF5 = b"\x89HDF\r\n\x1a\n"
# HDF5 allows a user block before the superblock: the signature sits at 0, 512, 1024, 2048, ...
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096, 8192)
# A FIF file opens with the tag FIFF_FILE_ID (kind 100) of type FIFFT_ID_STRUCT (31), big-endian.
_FIF = b"\x00\x00\x00\x64\x00\x00\x00\x1f"


def sniff(path: str) -> str:
    """Return ``'edf'``, ``'bdf'``, ``'nwb'``, ``'fif'``, ``'neo'`` or ``'unknown'``.

    EDF, BDF, HDF5 (NWB) and FIF are recognized by their first bytes; other
    files (and folders, e.g. Open Ephys) by whether neo has a reader for
    their name (``.vhdr``, ``.ns5``, ``.rhd``, ...).
    """
    if not os.path.isdir(path):
        with open(path, "rb") as fh:
            head = fh.read(8)
            if head == b"0       ":
                return "edf"
            if head == b"\xffBIOSEMI":
                return "bdf"
            if head == _FIF:
                return "fif"
            for offset in _HDF5_OFFSETS:
                fh.seek(offset)
                if fh.read(8) == _HDF5:
                    return "nwb"
    if path.lower().endswith((".fif", ".fif.gz")):
        return "fif"
    return "neo" if _neo_candidates(path) else "unknown"


def _neo_candidates(path: str) -> list[str]:
    return [io.__name__ for io in neo_ios(path)]


def read_recording(
    path: str | os.PathLike,
    channels: str | Sequence[str] | None = None,
    name: str | None = None,
    *,
    skip_unknown_units: bool = False,
) -> Recording:
    """Read a recording in any format unitnorm reads (judged by content, then by name).

    Parameters
    ----------
    path : str or os.PathLike
        An EDF/BDF, NWB or FIF file (recognized by content), or a file or
        folder neo reads (BrainVision ``.vhdr``, Blackrock ``.ns5``, Intan
        ``.rhd``, Open Ephys, ...; recognized by name).
    channels : str or sequence of str, optional
        Channel names to keep, in this order.
    name : str, optional
        For NWB: the TimeSeries to read (see :func:`read_nwb`); for neo formats:
        the signal (see :func:`read_neo`).
    skip_unknown_units : bool, default False
        EDF/BDF: leave out channels whose unit is unknown, with one warning
        (see :func:`read_edf`). Other formats carry one unit per signal.

    Returns
    -------
    Recording
        Read lazily by :func:`read_edf`, :func:`read_nwb`, :func:`read_fif`
        (through MNE) or :func:`read_neo` (through neo's lazy proxies).

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When no reader knows it, and for everything the readers refuse.

    See Also
    --------
    read_edf, read_nwb, read_fif, read_neo
    """
    if isinstance(path, (str, os.PathLike)) and os.path.isdir(path):
        path = os.fspath(path)
        if _neo_candidates(path):
            return read_neo(path, name=name, channels=channels)
    path = check_file(path, "read_recording")
    kind = sniff(path)
    if kind in ("edf", "bdf"):
        if name is not None:
            raise ValueError(
                f"{path}: name= picks an NWB TimeSeries or a neo signal; this is an {kind.upper()} file"
            )
        return read_edf(path, channels=channels, skip_unknown_units=skip_unknown_units)
    if kind == "nwb":
        return read_nwb(path, name=name, channels=channels)
    if kind == "fif":
        if name is not None:
            raise ValueError(f"{path}: name= picks an NWB TimeSeries or a neo signal; this is a FIF file")
        return read_fif(path, channels=channels)
    with open(path, "rb") as fh:
        head = fh.read(16)
    text = f"{path}: not an EDF, BDF or NWB file (it starts with {head!r})"
    if kind == "neo":
        try:
            return read_neo(path, name=name, channels=channels)
        except ValueError as err:
            if "neo cannot read it" not in str(err):
                raise
            raise ValueError(f"{text}, and {str(err)[len(path) + 2 :]}") from None
    try:
        import neo  # noqa: F401  (only to say whether it could have helped)

        hint = "nor a name neo reads (.vhdr, .ns5, .rhd, an Open Ephys folder, ...)"
    except ImportError:
        hint = (
            "and neo, which reads BrainVision, Blackrock, Intan, Open Ephys, ..., "
            "is not installed (pip install neo)"
        )
    raise ValueError(f"{text}, nor FIF, {hint}")
