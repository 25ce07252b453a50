"""Read the unit strings that recording files carry (``'uV'``, ``'µV'``, ``'volts'``, ``'fT/cm'``).

The unit algebra is brainunit's (:func:`brainunit.parse_unit`); this module only turns
the spellings files use into brainunit's spellings, and refuses the ambiguous ones.
"""

from __future__ import annotations

import re

import brainunit as u

__all__ = ["parse_unit"]

# Symbol -> (brainunit name without prefix, full name for messages). Case-sensitive.
_SYMBOLS: dict[str, tuple[str, str]] = {
    "V": ("volt", "volt"),
    "A": ("amp", "ampere"),
    "T": ("tesla", "tesla"),
    "m": ("metre", "metre"),
    "s": ("second", "second"),
    "Hz": ("hertz", "hertz"),
    "S": ("siemens", "siemens"),
    "Ohm": ("ohm", "ohm"),
    "ohm": ("ohm", "ohm"),
    "\u03a9": ("ohm", "ohm"),  # Greek capital omega
    "\u2126": ("ohm", "ohm"),  # ohm sign
    "F": ("farad", "farad"),
    "K": ("kelvin", "kelvin"),
    "g": ("gram", "gram"),
    "mol": ("mole", "mole"),
    "M": ("molar", "molar"),
    "L": ("liter", "litre"),
    "l": ("liter", "litre"),
    "Pa": ("pascal", "pascal"),
    "W": ("watt", "watt"),
    "Wb": ("weber", "weber"),
    "J": ("joule", "joule"),
    "N": ("newton", "newton"),
    "H": ("henry", "henry"),
    "C": ("coulomb", "coulomb"),  # alone it is refused: coulomb or Celsius
}

# SI prefix as written -> (brainunit prefix, name); 'u', 'µ' (U+00B5) and 'μ' (U+03BC) mean micro.
_PREFIXES: dict[str, tuple[str, str]] = {
    "Y": ("Y", "yotta"),
    "Z": ("Z", "zetta"),
    "E": ("E", "exa"),
    "P": ("P", "peta"),
    "T": ("T", "tera"),
    "G": ("G", "giga"),
    "M": ("M", "mega"),
    "k": ("k", "kilo"),
    "h": ("h", "hecto"),
    "da": ("da", "deca"),
    "d": ("d", "deci"),
    "c": ("c", "centi"),
    "m": ("m", "milli"),
    "u": ("u", "micro"),
    "\u00b5": ("u", "micro"),
    "\u03bc": ("u", "micro"),
    "n": ("n", "nano"),
    "p": ("p", "pico"),
    "f": ("f", "femto"),
    "a": ("a", "atto"),
    "z": ("z", "zepto"),
    "y": ("y", "yocto"),
}

# Whole words, in any case, singular or plural, with an optional prefix word.
_WORDS: dict[str, str] = {
    "volt": "volt",
    "ampere": "amp",
    "amp": "amp",
    "tesla": "tesla",
    "meter": "metre",
    "metre": "metre",
    "second": "second",
    "hertz": "hertz",
    "siemens": "siemens",
    "ohm": "ohm",
    "farad": "farad",
    "kelvin": "kelvin",
    "gram": "gram",
    "mole": "mole",
    "molar": "molar",
    "liter": "liter",
    "litre": "liter",
    "pascal": "pascal",
    "watt": "watt",
    "weber": "weber",
    "joule": "joule",
    "newton": "newton",
    "henry": "henry",
    "coulomb": "coulomb",
}
_PREFIX_WORDS = {name: pre for pre, name in _PREFIXES.values()} | {"deka": "da"}

_DEG_C = u.Unit.create(u.get_dim(u.kelvin), name="degC", dispname="degC")
_PERCENT = u.Unit.create(u.get_dim(u.UNITLESS), name="percent", dispname="%", scale=-2)
_MMHG = u.Unit.create(u.get_dim(u.pascal), name="mmHg", dispname="mmHg", scale=2, factor=1.33322387415)
_BPM = u.Unit.create(u.get_dim(u.hertz), name="bpm", dispname="bpm", factor=1 / 60)

# Units brainunit has no name for: the named unit alone, its brainunit expression in a compound.
_SPECIAL: dict[str, tuple[u.Unit, str]] = {
    "degC": (_DEG_C, "kelvin"),
    "\u00b0C": (_DEG_C, "kelvin"),
    "\u2103": (_DEG_C, "kelvin"),
    "celsius": (_DEG_C, "kelvin"),
    "%": (_PERCENT, "(10^-2)"),
    "percent": (_PERCENT, "(10^-2)"),
    "mmHg": (_MMHG, "(10^2 * 1.33322387415 * pascal)"),
    "bpm": (_BPM, "(hertz / 60)"),
}
_SPECIAL_FOLDED = {k.casefold(): v for k, v in _SPECIAL.items()}
_DIMENSIONLESS = {"", "1", "dimensionless", "unitless"}
# Spellings of "no unit given": refused rather than guessed (case-insensitive).
_NOT_A_UNIT = {"n/a", "na", "n.a.", "none", "null", "unknown", "?", "-"}

_SUP = "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
_SUPERSCRIPTS = str.maketrans(_SUP, "-0123456789")
_TOKEN = re.compile(
    rf"\s*(?:(?P<open>\()|(?P<close>\))|(?P<div>/)|(?P<mul>[*\u00b7\u22c5\u00d7])"
    rf"|\^(?P<exp>[+-]?\d+)|(?P<sup>[{_SUP}]+)|(?P<name>[^\s()/*\u00b7\u22c5\u00d7^{_SUP}]+))"
)
_HELP = (
    "expected e.g. 'uV', 'µV', 'mV', 'V', 'volts', 'nA', 'pA', 'T', 'fT', 'T/m', 'fT/cm', 'degC', '%' "
    "(see unitnorm.io.parse_unit)"
)


def _readings(name: str, *, fold: bool) -> dict[str, tuple[str, str]]:
    """Read ``name`` as [prefix]symbol: spelling -> (brainunit name, words), one per unit."""
    key = name.casefold() if fold else name
    out: dict[str, tuple[str, str]] = {}
    for sym, (attr, full) in _SYMBOLS.items():
        for pre, (bpre, pname) in [("", ("", ""))] + list(_PREFIXES.items()):
            spelled = pre + sym
            target = bpre + attr
            if (spelled.casefold() if fold else spelled) == key and all(t != target for t, _ in out.values()):
                out[bpre + sym] = (target, pname + full)
    return out


def _word(name: str) -> str | None:
    word = name.casefold()
    for stem in (word, word[:-1] if word.endswith("s") else None):
        if not stem:
            continue
        if stem in _WORDS:
            return _WORDS[stem]
        for pword, pre in _PREFIX_WORDS.items():
            if stem.startswith(pword) and stem[len(pword) :] in _WORDS:
                return pre + _WORDS[stem[len(pword) :]]
    return None


def _special(name: str) -> tuple[u.Unit, str] | None:
    if name in _SPECIAL:
        return _SPECIAL[name]
    if _word(name) is None and not _readings(name, fold=False):
        return _SPECIAL_FOLDED.get(name.casefold())
    return None


def _name(name: str, text: str) -> str:
    """Give the brainunit spelling of one unit name as a file writes it."""
    if name == "1":
        return "1"
    special = _special(name)
    if special is not None:
        return special[1]
    if name == "C":
        raise ValueError(
            f"ambiguous unit {text!r}: 'C' could be coulomb or degree Celsius; write 'coulomb' or 'degC'"
        )
    exact = _readings(name, fold=False)
    if len(exact) == 1:
        return next(iter(exact.values()))[0]
    word = _word(name)
    if word is not None:
        return word
    folded = _readings(name, fold=True)
    if len(folded) == 1:
        return next(iter(folded.values()))[0]
    if len(folded) > 1:
        options = " or ".join(f"{spelled!r} ({words})" for spelled, (_, words) in sorted(folded.items()))
        raise ValueError(
            f"ambiguous unit {text!r}: {name!r} could be {options}; write it with the intended case"
        )
    raise ValueError(f"unknown unit {text!r}; {_HELP}")


def _to_brainunit(s: str, text: str) -> str:
    """Rewrite ``s`` in brainunit's spelling: names normalized, ``' * '`` and ``' / '`` explicit."""

    def fail(why: str) -> ValueError:
        return ValueError(f"unknown unit {text!r}: {why}; {_HELP}")

    s = s.replace("**", "^")
    out: list[str] = []
    opened: list[int] = []  # where each open '(' starts in ``out``
    prev = None  # kind of the previous token
    pos = 0
    while pos < len(s) and not s[pos:].isspace():
        match = _TOKEN.match(s, pos)
        if match is None:
            raise fail(f"cannot read {s[pos:].strip()!r}")
        kind, value, pos = match.lastgroup, match[match.lastgroup], match.end()
        if kind in ("name", "open"):
            if prev in ("name", "close", "exp", "sup"):
                out.append(" * ")  # juxtaposition is a product: 'm s^-1'
            if kind == "open":
                opened.append(len(out))
                out.append("(")
            else:
                out.append(_name(value, text))
        elif kind in ("mul", "div"):
            if prev not in ("name", "close", "exp", "sup"):
                raise fail(f"unexpected {value!r}")
            out.append(" * " if kind == "mul" else " / ")
        elif kind == "close":
            if not opened or prev not in ("name", "close", "exp", "sup"):
                raise fail("a ')' without its '('" if not opened else "a unit is missing")
            out.append(")")
            start = opened.pop()
            out[start:] = ["".join(out[start:])]
        else:  # an integer power of the name or the group before it
            if prev not in ("name", "close"):
                raise fail(f"unexpected {value!r}")
            power = int(value.translate(_SUPERSCRIPTS))
            if power == 0:
                raise fail("exponent 0")
            if prev == "name":
                out[-1] = f"{out[-1]}^{power}"
            else:  # brainunit powers names only: write the group's power as a product
                group = " * ".join([out[-1]] * abs(power))
                out[-1] = f"({group})" if power > 0 else f"(1 / ({group}))"
        prev = kind
    if opened:
        raise fail("a '(' is not closed")
    if prev not in ("name", "close", "exp", "sup"):
        raise fail("a unit is missing")
    return "".join(out)


def parse_unit(text: str) -> u.Unit:
    """Turn a unit string from a recording file into a brainunit ``Unit``.

    Parameters
    ----------
    text : str
        What the file says, e.g. an EDF header's physical dimension, an NWB
        ``TimeSeries.unit`` or a neo/quantities unit string.

    Returns
    -------
    brainunit.Unit
        The unit; ``str()`` of it is brainunit's spelling (``'uV'``, ``'fT / cm'``),
        which ``parse_unit`` reads back.

    Raises
    ------
    TypeError
        When ``text`` is not a string.
    ValueError
        When the string is unknown or ambiguous; the message quotes it.

    See Also
    --------
    brainunit.parse_unit : Reads brainunit's own spellings; this function rewrites
        the spellings of recording files into them and hands them over.

    Notes
    -----
    What is accepted, after stripping surrounding whitespace:

    * **Symbols with an SI prefix** (``Y`` ... ``y``, with ``u``, ``µ`` U+00B5 and
      ``μ`` U+03BC all meaning micro): ``V``, ``A``, ``T``, ``m``, ``s``, ``Hz``,
      ``S``, ``Ohm``/``ohm``/``Ω``, ``F``, ``K``, ``g``, ``mol``, ``M`` (molar),
      ``L``/``l``, ``Pa``, ``W``, ``Wb``, ``J``, ``N``, ``H``. Case matters first:
      ``'mV'`` is millivolt and ``'MV'`` megavolt, ``'nA'`` nanoampere.
    * **Other case variants** are read only where one unit fits: ``'uv'`` and
      ``'UV'`` are microvolt, ``'HZ'`` hertz, ``'KHZ'`` kilohertz; ``'mv'`` (mV or
      MV?), ``'pa'`` (pA or Pa?) and ``'US'`` (µS or µs?) are refused as ambiguous,
      and so is ``'C'`` (coulomb or Celsius?).
    * **Words**, in any case, singular or plural, with an optional prefix word:
      ``'volts'``, ``'Millivolt'``, ``'microvolts'``, ``'nanoamperes'``, ``'tesla'``.
    * **Products, quotients and integer powers**: ``'T/m'``, ``'fT/cm'``,
      ``'fT / cm'``, ``'uV^2'``, ``'uV**2'``, ``'m²'``, ``'m s^-1'``, ``'mV*s'``,
      ``'1/s'``, ``'(m/s)^2'``; ``'/'`` divides by the product up to the next
      ``'/'`` (``'J/kg K'`` is J/(kg K)). brainunit's own spellings such as
      ``'m^2 kg s^-3 A^-1'`` read back.
    * **Specials** without prefixes: ``'degC'``/``'°C'``/``'℃'``, ``'%'``/``'percent'``,
      ``'mmHg'``, ``'bpm'`` (1/60 Hz).
    * **Dimensionless**: ``''``, ``'1'``, ``'dimensionless'``, ``'unitless'``.

    Each name is rewritten to brainunit's name (``'µV'`` and ``'microvolts'`` to
    ``'uvolt'``, ``'kOhm'`` to ``'kohm'``), products and quotients to brainunit's
    ``' * '`` and ``' / '``, and :func:`brainunit.parse_unit` builds the unit.
    ``'degC'`` is a unit of temperature *difference* the size of a kelvin:
    brainunit has no affine units, so a Celsius channel keeps its Celsius values
    and its statistics print in degC; use ``brainunit.celsius2kelvin`` to turn an
    absolute Celsius value into kelvin. Strings that mean "not available"
    (``'N/A'``, ``'NA'``, ``'none'``, ``'?'``, ...) are refused rather than read
    as nanoampere or as dimensionless.

    Examples
    --------
    >>> from unitnorm.io import parse_unit
    >>> print(parse_unit("uV"), parse_unit("\u00b5V"), parse_unit("\u03bcV"), parse_unit("volts"))
    uV uV uV V
    >>> print(parse_unit("nA"), parse_unit("fT/cm"), parse_unit("T/m"), parse_unit("UV"))
    nA fT / cm T / m uV
    >>> parse_unit("furlongs")
    Traceback (most recent call last):
        ...
    ValueError: unknown unit 'furlongs'; expected e.g. 'uV', ...
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_unit expected a str, got {type(text).__name__} {text!r:.60}")
    s = text.strip()
    if s.casefold() in _DIMENSIONLESS:
        return u.UNITLESS
    if s.casefold() in _NOT_A_UNIT and s != "nA":
        raise ValueError(
            f"unknown unit {text!r}: it reads as 'not available', not as a unit "
            "(write 'nA' for nanoampere, '' or '1' for dimensionless)"
        )
    special = _special(s)
    if special is not None:
        return special[0]
    spelled = _to_brainunit(s, text)
    try:
        return u.parse_unit(spelled)
    except ValueError as err:  # pragma: no cover - every name above is one brainunit knows
        raise ValueError(f"unknown unit {text!r}: {err}; {_HELP}") from None
