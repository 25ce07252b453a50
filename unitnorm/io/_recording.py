"""``Recording``: channels with names and units, read lazily from a file or held in memory."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import math
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, Protocol

import brainunit as u
import numpy as np

from unitnorm import _units
from unitnorm.io._units_parse import parse_unit

__all__ = ["Recording", "RecordingWarning"]


class RecordingWarning(UserWarning):
    """A fact about a recording's file that changes what is read.

    A header whose record count is wrong, gaps read as NaN, channels left out:
    the command line shows these (and hides library warnings).
    """


# read(start, stop, columns) -> float64 array (stop - start, len(columns)) in the source's units
ReadFn = Callable[[int, int, Sequence[int]], np.ndarray]


class Source(Protocol):
    """Where a recording's samples come from (a file, an array, an MNE Raw)."""

    n_samples: int

    def open(self) -> contextlib.AbstractContextManager[ReadFn]: ...


class ArraySource:
    """Samples held in memory as a ``(n_samples, n_channels)`` array of mantissas."""

    def __init__(self, mantissa: np.ndarray):
        self.mantissa = mantissa
        self.n_samples = int(mantissa.shape[0])

    @contextlib.contextmanager
    def open(self) -> Iterator[ReadFn]:
        def read(start: int, stop: int, columns: Sequence[int]) -> np.ndarray:
            block = self.mantissa[start:stop]
            if list(columns) != list(range(self.mantissa.shape[1])):
                block = block[:, list(columns)]
            # a fresh array: callers may work in place, the caller's data must not change
            return np.array(block, dtype=np.float64, copy=True)

        yield read


def unit_groups(names: Sequence[str], units: Sequence[u.Unit]) -> list[tuple[u.Unit, list[str]]]:
    """Group channel names by the dimension of their units, in order of first appearance."""
    groups: list[tuple[u.Unit, list[str]]] = []
    for name, unit in zip(names, units, strict=True):
        for first, members in groups:
            if _units.same_dim(first, unit):
                members.append(name)
                break
        else:
            groups.append((unit, [name]))
    return groups


def common_unit(names: Sequence[str], units: Sequence[u.Unit], what: str) -> tuple[u.Unit, np.ndarray]:
    """Return the first channel's unit and each channel's factor into it, or raise ``UnitError``."""
    groups = unit_groups(names, units)
    if len(groups) > 1:
        listing = "; ".join(f"{_units.describe(unit)}: {', '.join(members)}" for unit, members in groups)
        picks = " or ".join(f"select(u.{_si_name(unit)})" for unit, _ in groups[:2])
        raise _units.UnitError(
            f"{what} needs channels of one dimension, but this recording has {len(groups)} groups "
            f"({listing}); pick one with {picks}"
        )
    if not units:
        raise ValueError(f"{what}: the recording has no channels")
    target = units[0]
    return target, np.array([factor(unit, target) for unit in units], dtype=np.float64)


def _si_name(unit: u.Unit) -> str:
    for name, candidate in (("volt", u.volt), ("amp", u.amp), ("tesla", u.tesla), ("kelvin", u.kelvin)):
        if _units.same_dim(unit, candidate):
            return name
    if _units.same_dim(unit, u.tesla / u.metre):
        return "tesla / u.metre"
    return "UNITLESS" if u.get_dim(unit).is_dimensionless else repr(str(unit))


def factor(unit: u.Unit, target: u.Unit) -> float:
    """Return the number ``f`` with ``1 unit == f target`` (same dimension assumed)."""
    if unit == target and str(unit) == str(target):
        return 1.0
    if unit.base == target.base == 10:
        # exact powers of ten (1 mV is 1000.0 uV, not 1000.0000000000001)
        return float(unit.factor) / float(target.factor) * 10.0 ** (unit.scale - target.scale)
    return float(np.asarray(u.Quantity(1.0, unit=unit).to_decimal(target)))


def attach(mantissa: np.ndarray, unit: u.Unit) -> Any:
    """Return a Quantity in ``unit`` (a plain array when ``unit`` is unitless)."""
    return mantissa if unit.is_unitless else u.Quantity(mantissa, unit=unit)


def _rate(sampling_rate: Any) -> float:
    if isinstance(sampling_rate, u.Quantity):
        if not _units.same_dim(sampling_rate.unit, u.hertz):
            raise _units.UnitError(
                "Recording: sampling_rate must be a frequency (Hz), "
                f"got {_units.describe(sampling_rate.unit)}"
            )
        value = np.asarray(sampling_rate.to_decimal(u.hertz))
    else:
        value = np.asarray(sampling_rate)
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.number):
        raise TypeError(f"Recording: sampling_rate must be a scalar number of Hz, got {sampling_rate!r:.60}")
    rate = float(value)
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"Recording: sampling_rate must be finite and > 0 Hz, got {rate}")
    return rate


class Recording:
    """Channels with names and units, sampled at one rate, read lazily.

    A recording is what a reader returns (:func:`read_edf`, :func:`read_nwb`,
    :func:`from_neo`, :func:`from_mne`) or what you build from an array. File-backed
    recordings read nothing until asked: :attr:`data` reads everything,
    :meth:`read` a window, and the streaming functions (:func:`channel_stats`,
    :func:`write_normalized`) read chunk by chunk, so files larger than memory work.

    Parameters
    ----------
    data : Quantity or array_like
        Samples of shape ``(n_samples, n_channels)`` (or ``(n_samples,)`` for one
        channel). A Quantity gives every channel its unit; a plain array needs
        ``channel_units`` (or is dimensionless).
    sampling_rate : Quantity or float
        In Hz (a Quantity of frequency, or a float read in Hz).
    channel_names : sequence of str, optional
        Unique names; default ``'ch0'``, ``'ch1'``, ...
    channel_units : Unit, str or sequence of them, optional
        One unit per channel (strings go through :func:`parse_unit`), for a plain
        array whose channels differ in unit. Not allowed with a Quantity.

    Raises
    ------
    ValueError
        When shapes, names or the rate are inconsistent.
    TypeError
        When ``data`` is not numeric, or ``channel_units`` is given with a Quantity.

    Notes
    -----
    Samples stay in each channel's own unit; a channel in µV and one in mV stay
    so until :attr:`data` or :meth:`select` converts them to one unit. An array
    given here is kept, not copied (reads return new float64 arrays and never
    write to it), so do not modify it while the recording is in use.

    Examples
    --------
    >>> import brainunit as u, numpy as np
    >>> from unitnorm.io import Recording
    >>> rec = Recording(np.array([[1., 2.], [3., 4.], [5., 6.]]), 250 * u.Hz,
    ...                 channel_names=["Cz", "EMG"], channel_units=["uV", "mV"])
    >>> rec
    Recording(2 channels: Cz [uV], EMG [mV]; 3 samples at 250 Hz, 0.012 s)
    >>> print(rec.data.unit, rec.data.mantissa[:, 1])
    uV [2000. 4000. 6000.]
    """

    def __init__(
        self,
        data: Any,
        sampling_rate: Any,
        channel_names: Sequence[str] | None = None,
        channel_units: Any = None,
    ):
        if isinstance(data, u.Quantity):
            if channel_units is not None:
                raise TypeError("Recording: channel_units is for plain arrays; a Quantity carries its unit")
            mantissa, unit = np.asarray(data.mantissa), data.unit
        else:
            mantissa, unit = np.asarray(data), None
        if mantissa.dtype.kind not in "iuf":
            raise TypeError(f"Recording: data must be a real numeric array, got dtype {mantissa.dtype}")
        if mantissa.ndim == 1:
            mantissa = mantissa[:, None]
        if mantissa.ndim != 2:
            raise ValueError(
                "Recording: data must have shape (n_samples, n_channels) or (n_samples,), "
                f"got {mantissa.shape}"
            )
        n_channels = mantissa.shape[1]
        if unit is not None:
            units = [unit] * n_channels
        elif channel_units is None:
            units = [u.UNITLESS] * n_channels
        else:
            seq = [channel_units] if isinstance(channel_units, (str, u.Unit)) else list(channel_units)
            if len(seq) == 1:
                seq = seq * n_channels
            if len(seq) != n_channels:
                raise ValueError(f"Recording: {n_channels} channels but {len(seq)} channel_units")
            units = [parse_unit(s) if isinstance(s, str) else s for s in seq]
            bad = [s for s in units if not isinstance(s, u.Unit)]
            if bad:
                raise TypeError(
                    f"Recording: channel_units must be brainunit Units or strings, got {bad[0]!r}"
                )
        names = [f"ch{i}" for i in range(n_channels)] if channel_names is None else list(channel_names)
        self._init(ArraySource(mantissa), names, units, _rate(sampling_rate), range(n_channels), None)

    @classmethod
    def _from_source(
        cls,
        source: Source,
        names: Sequence[str],
        units: Sequence[u.Unit],
        rate: float,
        description: str | None = None,
        notes: Sequence[str] = (),
    ) -> Recording:
        rec = cls.__new__(cls)
        rec._init(source, names, units, rate, range(len(names)), None, description)
        rec._notes = tuple(notes)
        return rec

    def _init(
        self,
        source: Source,
        names: Sequence[str],
        units: Sequence[u.Unit],
        rate: float,
        columns: Sequence[int],
        factors: np.ndarray | None,
        description: str | None = None,
    ) -> None:
        names = [str(n) for n in names]
        if len(names) != len(units) or len(names) != len(columns):
            raise ValueError(f"Recording: {len(names)} channel names for {len(units)} channels")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"Recording: channel names must be unique, got repeats of {dupes}")
        self._source = source
        self._names = tuple(names)
        self._units = tuple(units)
        self._rate = rate
        self._columns = tuple(int(c) for c in columns)
        self._factors = factors
        self._description = description
        self._notes: tuple[str, ...] = ()

    def _derive(self, indices: Sequence[int], target: u.Unit | None = None) -> Recording:
        rec = Recording.__new__(Recording)
        names = [self._names[i] for i in indices]
        units = [self._units[i] for i in indices]
        factors = None if self._factors is None else self._factors[list(indices)]
        if target is not None:
            conv = np.array([factor(unit, target) for unit in units], dtype=np.float64)
            if np.any(conv != 1.0):
                factors = conv if factors is None else factors * conv
            units = [target] * len(indices)
        rec._init(
            self._source,
            names,
            units,
            self._rate,
            [self._columns[i] for i in indices],
            factors,
            self._description,
        )
        rec._notes = self._notes
        return rec

    # ------------------------------------------------------------------ description

    @property
    def channel_names(self) -> tuple[str, ...]:
        """The channel names, in column order."""
        return self._names

    @property
    def channel_units(self) -> tuple[u.Unit, ...]:
        """One brainunit Unit per channel."""
        return self._units

    @property
    def sampling_rate(self) -> u.Quantity:
        """The sampling rate, a Quantity in Hz."""
        return u.Quantity(self._rate, unit=u.hertz)

    @property
    def n_samples(self) -> int:
        """The number of samples per channel."""
        return self._source.n_samples

    @property
    def n_channels(self) -> int:
        """The number of channels."""
        return len(self._names)

    @property
    def duration(self) -> u.Quantity:
        """``n_samples / sampling_rate``, a Quantity in seconds."""
        return u.Quantity(self.n_samples / self._rate, unit=u.second)

    @property
    def gaps(self) -> tuple[tuple[int, int], ...]:
        """Sample ranges ``(start, stop)`` the file does not cover, read as NaN (EDF+D); else ``()``."""
        return tuple(getattr(self._source, "gaps", ()))

    @property
    def notes(self) -> tuple[str, ...]:
        """What the reader did that a user should know (also issued as :class:`RecordingWarning`)."""
        return self._notes

    def __repr__(self) -> str:
        from unitnorm import _display

        return _display.recording_repr(self)

    def _repr_html_(self) -> str:
        """Return an HTML table for notebooks: per channel its unit, range and a sparkline (first 16)."""
        from unitnorm import _display

        return _display.recording_html(self)

    # ------------------------------------------------------------------ picking channels

    def pick(self, names: str | Sequence[str]) -> Recording:
        """Keep the channels named ``names``, in that order (nothing is read).

        Raises
        ------
        ValueError
            When a name is not a channel of this recording; the message lists them.
        """
        wanted = [names] if isinstance(names, str) else list(names)
        if not wanted:
            raise ValueError("Recording.pick: no channel names given")
        index = {n: i for i, n in enumerate(self._names)}
        missing = [n for n in wanted if n not in index]
        if missing:
            raise ValueError(no_such_channel(missing[0], self._names))
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"Recording.pick: a channel is named twice in {wanted}")
        return self._derive([index[n] for n in wanted])

    def select(self, unit: u.Unit) -> Recording:
        """Keep the channels whose unit has ``unit``'s dimension, converted to ``unit``.

        ``select(u.volt)`` picks the V, mV and µV channels and expresses them all in V;
        ``select(u.uvolt)`` does the same in µV. Nothing is read until asked.

        Raises
        ------
        TypeError
            When ``unit`` is not a brainunit Unit.
        ValueError
            When no channel has that dimension; the message lists the channels' units.

        Examples
        --------
        >>> import brainunit as u, numpy as np
        >>> from unitnorm.io import Recording
        >>> rec = Recording(np.ones((4, 3)), 100., channel_names=["a", "b", "c"],
        ...                 channel_units=["uV", "fT", "mV"])
        >>> volts = rec.select(u.uvolt)
        >>> print(volts.channel_names, volts.data.unit, volts.data.mantissa[0].tolist())
        ('a', 'c') uV [1.0, 1000.0]
        """
        if isinstance(unit, u.Quantity):
            unit = unit.unit
        if not isinstance(unit, u.Unit):
            raise TypeError(f"Recording.select expected a brainunit Unit such as u.volt, got {unit!r:.60}")
        indices = [i for i, cu in enumerate(self._units) if _units.same_dim(cu, unit)]
        if not indices:
            have = ", ".join(sorted({_units.describe(cu) for cu in self._units}))
            raise ValueError(
                f"Recording.select: no channel is {_units.describe(unit)}; the channels are {have}"
            )
        return self._derive(indices, target=unit)

    # ------------------------------------------------------------------ reading

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Callable[[int, int], np.ndarray]]:
        """Open the source once; yield ``read(start, stop)`` of float64 mantissas in channel units."""
        with self._source.open() as raw_read:

            def read(start: int, stop: int) -> np.ndarray:
                block = raw_read(start, stop, self._columns)
                if block.shape != (stop - start, len(self._columns)):
                    raise ValueError(
                        f"{self._description or 'recording'}: expected {stop - start} samples of "
                        f"{len(self._columns)} channels from {start}, the file gave {block.shape}"
                    )
                if self._factors is not None:
                    block = block * self._factors
                return block

            yield read

    def _window(self, start: int, stop: int | None) -> tuple[int, int]:
        n = self.n_samples
        stop = n if stop is None else stop
        for name, v in (("start", start), ("stop", stop)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise TypeError(f"Recording.read: {name} must be an int, got {v!r}")
        if not 0 <= start <= stop <= n:
            raise ValueError(
                f"Recording.read: need 0 <= start <= stop <= {n}, got start={start}, stop={stop}"
            )
        return int(start), int(stop)

    def read(self, start: int = 0, stop: int | None = None) -> Any:
        """Read samples ``start:stop`` of every channel as one Quantity ``(stop - start, n_channels)``.

        The channels must share a dimension (see :attr:`data`).
        """
        return self._joined(start, stop, "Recording.read")

    def _joined(self, start: int, stop: int | None, what: str) -> Any:
        start, stop = self._window(start, stop)
        target, conv = common_unit(self._names, self._units, what)
        with self._reader() as read:
            block = read(start, stop)
        if np.any(conv != 1.0):
            block = block * conv
        return attach(block, target)

    @property
    def data(self) -> Any:
        """All samples, one Quantity of shape ``(n_samples, n_channels)``, float64.

        When the channels' units differ but share a dimension (µV and mV), all are
        converted to the first channel's unit. When dimensions differ (EEG in V and
        MEG in T) this raises a ``UnitError`` (a ``brainunit.UnitMismatchError``)
        listing the groups; use :meth:`select` to pick one. Dimensionless channels
        give a plain array.
        """
        return self._joined(0, None, "Recording.data")

    def to_mne(self) -> Any:
        """Return this recording as an ``mne.io.RawArray`` in SI units; see :func:`unitnorm.io.to_mne`."""
        from unitnorm.io._mne import to_mne

        return to_mne(self)

    def to_xarray(self) -> Any:
        """Return the samples as an ``xarray.DataArray`` with ``time`` and ``channel`` coordinates.

        Returns
        -------
        xarray.DataArray
            Dims ``("time", "channel")``, float64 values in each channel's own unit
            (read whole into memory); coordinate ``time`` in seconds (attribute
            ``units = "s"``), ``channel`` the names, and a per-channel coordinate
            ``unit`` holding each channel's unit string. When every channel has
            the same unit, ``attrs["units"]`` holds it, in pint's spelling
            (``"uV"``, ``"fT / cm"``, ``"V ** 2"``), so ``pint-xarray``'s
            ``da.pint.quantify()`` reads it; with mixed units it is absent.

        Raises
        ------
        ImportError
            When xarray is not installed (``pip install -e ".[xarray]"``).

        Examples
        --------
        >>> import numpy as np
        >>> from unitnorm.io import Recording
        >>> da = Recording(np.ones((3, 2)), 100., ["Cz", "Pz"], "uV").to_xarray()
        >>> da.dims, da.attrs["units"], da["time"].values.tolist()
        (('time', 'channel'), 'uV', [0.0, 0.01, 0.02])
        """
        try:
            import xarray as xr
        except ImportError as err:
            raise ImportError('Recording.to_xarray needs xarray: pip install -e ".[xarray]"') from err
        spelled = [_pint_spelling(unit) for unit in self._units]
        attrs = {"sampling_rate_hz": self._rate}
        if len(set(spelled)) == 1:
            attrs["units"] = spelled[0]
        return xr.DataArray(
            self.mantissa(),
            dims=("time", "channel"),
            coords={
                "time": ("time", np.arange(self.n_samples) / self._rate, {"units": "s"}),
                "channel": list(self._names),
                "unit": ("channel", spelled),
            },
            attrs=attrs,
        )

    def mantissa(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Read samples ``start:stop`` as float64 mantissas, each channel in its own unit."""
        start, stop = self._window(start, stop)
        with self._reader() as read:
            return read(start, stop)


def _pint_spelling(unit: u.Unit) -> str:
    """Spell ``unit`` as pint reads it: brainunit's ``str`` with ``^`` as ``**``, '' when dimensionless."""
    if u.get_dim(unit).is_dimensionless and unit.scale == 0 and unit.factor == 1:
        return ""
    text = str(unit)
    return {"degC": "degC", "%": "percent", "bpm": "1 / minute"}.get(text, text.replace("^", " ** "))


def shorten(text: str, limit: int) -> str:
    """``text`` cut in the middle to at most ``limit`` characters, keeping its start and its end."""
    if len(text) <= limit:
        return text
    keep = max(limit - 5, 2)
    head = keep * 2 // 3
    return f"{text[:head]} ... {text[len(text) - (keep - head) :]}"


def require(module: str, who: str) -> ModuleType:
    """Import an optional reader's library, or say how to install it (the ``formats`` extra)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{who} needs {module}, which is not installed: "
            f'pip install -e ".[formats]" (or pip install {module})'
        ) from err


def unknown_units_error(where: str, unknown: Sequence[tuple[str, str, Exception]]) -> ValueError:
    """Build the error for channels whose unit strings ``parse_unit`` refuses: what, the fix, why."""
    name, dim, err = unknown[0]
    detail = str(err)
    head = f"unknown unit {dim!r}"
    if len(unknown) == 1:
        what = f"channel {name!r}: {head}"
        detail = detail[len(head) :].lstrip(";: ") if detail.startswith(head) else detail
    else:
        listing = ", ".join(f"{n!r} ({d!r})" for n, d, _ in unknown)
        what = f"{len(unknown)} channels have units unitnorm does not know: {shorten(listing, 200)}"
    them = "them" if len(unknown) > 1 else "it"
    return ValueError(
        f"{where}: {what}; leave {them} out with skip_unknown_units=True (command line: "
        f"--skip-unknown-units) or pick channels with channels=[...] (--channels); {detail}"
    )


def pick_named(rec: Recording, channels: str | Sequence[str] | None, path: Any) -> Recording:
    """``rec`` with only ``channels`` (by name, in that order); every reader's ``channels=`` argument."""
    if channels is None:
        return rec
    wanted = [channels] if isinstance(channels, str) else list(channels)
    missing = [c for c in wanted if c not in rec.channel_names]
    if missing:
        raise ValueError(f"{path}: {no_such_channel(missing[0], rec.channel_names)}")
    return rec.pick(wanted)


def no_such_channel(name: str, names: Sequence[str]) -> str:
    """Describe a channel name that is not there, with close matches and the channel list."""
    close = difflib.get_close_matches(name, list(names), n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    shown = shorten(", ".join(map(repr, names)), 240)
    return f"no channel named {name!r}{hint}; the channels are {shown}"
