"""MNE ``Raw`` objects: SI units per channel (V, T, T/m, ...), read lazily."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import brainunit as u
import numpy as np

from unitnorm import _units
from unitnorm.io._recording import ReadFn, Recording, factor, pick_named, require
from unitnorm.io._units_parse import _DEG_C

__all__ = ["from_mne", "read_fif", "to_mne"]

# FIFF unit codes (mne.io.constants.FIFF.FIFF_UNIT_*) -> the SI unit MNE's get_data() returns.
_FIFF_UNITS: dict[int, u.Unit] = {
    -1: u.UNITLESS,  # FIFF_UNIT_NONE (stim, misc counters)
    0: u.UNITLESS,  # FIFF_UNIT_UNITLESS (fNIRS optical density, ...)
    1: u.metre,
    2: u.kilogram,
    3: u.second,
    4: u.amp,
    5: u.kelvin,
    6: u.molar,  # FIFF_UNIT_MOL: MNE stores fNIRS hbo/hbr in mol/l and names it "M"
    101: u.hertz,
    102: u.newton,
    103: u.pascal,
    104: u.joule,
    105: u.watt,
    106: u.coulomb,
    107: u.volt,
    108: u.farad,
    109: u.ohm,
    110: u.siemens,
    111: u.weber,
    112: u.tesla,
    113: u.henry,
    114: _DEG_C,
    117: u.volt / u.metre**2,
    118: u.second**2,
    201: u.tesla / u.metre,
    202: u.amp * u.metre,
    203: u.amp / u.metre,
    204: u.amp / u.metre**2,
}


def channel_units(info: Any, who: str) -> list[u.Unit]:
    """Return the SI unit of each channel of an MNE ``Info``, from its FIFF unit code."""
    units = []
    for ch in info["chs"]:
        code = int(ch["unit"])
        if code not in _FIFF_UNITS:
            raise ValueError(
                f"{who}: channel {ch['ch_name']!r} has FIFF unit code {code}, "
                "which unitnorm does not map; drop it with .pick(...) first"
            )
        units.append(_FIFF_UNITS[code])
    return units


class MneSource:
    """Windows of an MNE Raw through ``raw.get_data`` (preloaded or not)."""

    def __init__(self, raw: Any):
        self.raw = raw
        self.n_samples = int(raw.n_times)

    @contextlib.contextmanager
    def open(self) -> Iterator[ReadFn]:
        def read(start: int, stop: int, columns: Sequence[int]) -> np.ndarray:
            if stop == start:
                return np.empty((0, len(columns)))
            block = self.raw.get_data(picks=list(columns), start=start, stop=stop)
            return np.ascontiguousarray(block.T, dtype=np.float64)

        yield read


def from_mne(raw: Any) -> Recording:
    """Turn an MNE ``Raw`` into a :class:`Recording`, each channel in its SI unit.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        Preloaded or not; samples are read through ``raw.get_data`` when asked.

    Returns
    -------
    Recording
        Channel names from ``raw.ch_names``; units from each channel's FIFF unit
        code, which is what ``raw.get_data()`` returns: V for EEG/EOG/ECG/EMG/sEEG,
        T for magnetometers, T/m for gradiometers, dimensionless for stim
        channels, degC for temperature, mol/l (``M``) for fNIRS hbo/hbr.
        ``unit_mul`` is display metadata that ``get_data`` does not apply, so it
        is ignored here too.

    Raises
    ------
    TypeError
        When ``raw`` is not an MNE Raw.
    ValueError
        When a channel's unit code has no mapping (the message names the channel;
        ``raw.pick`` the others first).
    ImportError
        When mne is not installed.
    """
    mne = require("mne", "from_mne")
    if not isinstance(raw, mne.io.BaseRaw):
        raise TypeError(f"from_mne expected an mne.io.Raw, got {type(raw).__name__}")
    units = channel_units(raw.info, "from_mne")
    return Recording._from_source(MneSource(raw), list(raw.ch_names), units, float(raw.info["sfreq"]))


def read_fif(path: str | os.PathLike, channels: str | Sequence[str] | None = None) -> Recording:
    """Read a FIF raw file through MNE (``mne.io.read_raw_fif(preload=False)``), lazily.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.fif`` (or ``.fif.gz``) file.
    channels : str or sequence of str, optional
        Channel names to keep, in this order.

    Returns
    -------
    Recording
        As :func:`from_mne` gives it; samples are read per chunk by ``raw.get_data``.

    Raises
    ------
    ValueError
        When MNE cannot read it (its reason quoted), or a channel is missing.
    ImportError
        When mne is not installed.

    See Also
    --------
    read_recording : Recognizes a FIF file by its first bytes and calls this.

    Examples
    --------
    >>> import os, tempfile, numpy as np, mne
    >>> from unitnorm.io import read_fif
    >>> info = mne.create_info(["Cz", "Pz"], 100.0, "eeg")
    >>> raw = mne.io.RawArray(np.zeros((2, 100)), info, verbose="error")
    >>> path = os.path.join(tempfile.mkdtemp(), "demo_raw.fif")
    >>> _ = raw.save(path, verbose="error")
    >>> read_fif(path)
    Recording(2 channels: Cz [V], Pz [V]; 100 samples at 100 Hz, 1 s)
    """
    mne = require("mne", "read_fif")
    path = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # naming conventions (raw.fif, ...): not about the data
            raw = mne.io.read_raw_fif(path, preload=False, verbose="error")
    except Exception as err:  # MNE raises many kinds for a file that is not FIF
        text = " ".join(str(err).split()).replace(path, "the file")
        raise ValueError(f"{path}: not a readable FIF file ({text})") from None
    rec = from_mne(raw)
    rec._description = path
    return pick_named(rec, channels, path)


# MNE channel types of voltage channels, by a name's prefix (casefolded), as MNE's readers name them
_VOLTAGE_TYPES = (
    ("seeg", "seeg"),
    ("ecog", "ecog"),
    ("eog", "eog"),
    ("ecg", "ecg"),
    ("ekg", "ecg"),
    ("emg", "emg"),
)
_STIM_PREFIXES = ("sti", "trigger", "status")  # 'STI 014', 'STI101', BDF 'Status'


def _mne_type_and_code(name: str, unit: u.Unit) -> tuple[str, int]:
    """Return the MNE channel type and FIFF unit code of a channel, from its dimension and name."""
    folded = name.casefold().replace(" ", "")
    if _units.same_dim(unit, u.volt):
        if folded.startswith(_STIM_PREFIXES):  # MNE's create_info gives stim channels volts
            return "stim", 107
        kind = next((t for prefix, t in _VOLTAGE_TYPES if folded.startswith(prefix)), "eeg")
        return kind, 107
    if _units.same_dim(unit, u.tesla):
        return "mag", 112
    if _units.same_dim(unit, u.tesla / u.metre):
        return "grad", 201
    if u.get_dim(unit).is_dimensionless:
        return ("stim", -1) if folded.startswith(_STIM_PREFIXES) else ("misc", 0)
    if str(unit) == "degC":
        return "misc", 114
    for code, si in _FIFF_UNITS.items():
        if code > 0 and code != 114 and _units.same_dim(unit, si):
            return "misc", code
    raise ValueError(
        f"to_mne: channel {name!r} is {_units.describe(unit)}, which has no FIFF unit; "
        "pick the other channels first (Recording.pick)"
    )


def to_mne(rec: Recording, *, verbose: Any = "error") -> Any:
    """Turn a :class:`Recording` into an ``mne.io.RawArray``, each channel in SI units.

    Parameters
    ----------
    rec : Recording
        Read whole into memory (MNE's ``RawArray`` holds its data).
    verbose : bool, str or None, default "error"
        MNE's ``verbose`` for building the Raw.

    Returns
    -------
    mne.io.RawArray
        Channel names and sampling rate of the recording; values in the SI unit
        MNE expects (µV channels multiplied by 1e-6, fT by 1e-15, ...), so
        ``raw.get_data()`` is in V, T and T/m.

    Raises
    ------
    TypeError
        When ``rec`` is not a Recording.
    ValueError
        For a channel whose dimension has no FIFF unit (the message names it).
    ImportError
        When mne is not installed.

    See Also
    --------
    from_mne : The way back; ``from_mne(to_mne(rec))`` holds the same values.

    Notes
    -----
    The channel type comes from the dimension: voltage is ``eeg``, or ``seeg``,
    ``ecog``, ``eog``, ``ecg`` (also ``EKG``) or ``emg`` when the channel's name
    starts so (case and spaces ignored), as MNE's readers name them, and ``stim``
    when it starts with ``STI`` (``mne.create_info`` gives stim channels volts); magnetic
    flux density is ``mag``, its gradient (T/m) ``grad``; a dimensionless
    channel is ``stim`` when its name starts with ``STI``, ``trigger`` or
    ``Status``, else ``misc``; any other dimension with a FIFF unit (A, K, degC,
    Pa, Hz, ...) is ``misc`` with that unit code, so :func:`from_mne` reads it
    back in its unit.

    Examples
    --------
    >>> import brainunit as u, numpy as np
    >>> from unitnorm.io import Recording, from_mne
    >>> rec = Recording(np.array([[1., 2.], [3., 4.]]), 100., ["Cz", "EOG1"], ["uV", "mV"])
    >>> raw = rec.to_mne()
    >>> raw.get_channel_types(), raw.get_data()[:, 0].tolist()
    (['eeg', 'eog'], [1e-06, 0.002])
    >>> from_mne(raw)
    Recording(2 channels: Cz [V], EOG1 [V]; 2 samples at 100 Hz, 0.02 s)
    """
    mne = require("mne", "to_mne")
    if not isinstance(rec, Recording):
        raise TypeError(f"to_mne expected a unitnorm.io.Recording, got {type(rec).__name__}")
    names, units = rec.channel_names, rec.channel_units
    kinds, codes = zip(*(_mne_type_and_code(n, un) for n, un in zip(names, units, strict=True)), strict=True)
    factors = np.array(
        [
            1.0 if code in (-1, 0, 114) else factor(un, _FIFF_UNITS[code])
            for un, code in zip(units, codes, strict=True)
        ]
    )
    data = rec.mantissa() * factors
    info = mne.create_info(
        list(names), float(rec.sampling_rate.to_decimal(u.hertz)), list(kinds), verbose=verbose
    )
    for ch, code in zip(info["chs"], codes, strict=True):
        ch["unit"] = code
        ch["unit_mul"] = 0
    return mne.io.RawArray(np.ascontiguousarray(data.T), info, verbose=verbose)
