"""Read the unit strings that recording files carry (``'uV'``, ``'µV'``, ``'volts'``, ``'fT/cm'``)."""

from __future__ import annotations

import re

import brainunit as u

__all__ = ["parse_unit"]

# Symbol -> (brainunit attribute name used with SI prefixes, full name). Case-sensitive.
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
    # brainunit's names for derived units, so that str(unit) reads back
    "W": ("watt", "watt"),
    "Wb": ("weber", "weber"),
    "J": ("joule", "joule"),
    "N": ("newton", "newton"),
    "H": ("henry", "henry"),
    "C": ("coulomb", "coulomb"),
}

# SI prefixes: symbol -> (brainunit prefix, power of ten, name). 'u', 'µ' (U+00B5) and 'μ' (U+03BC)
# all mean micro.
_PREFIXES: dict[str, tuple[str, int, str]] = {
    "Y": ("Y", 24, "yotta"),
    "Z": ("Z", 21, "zetta"),
    "E": ("E", 18, "exa"),
    "P": ("P", 15, "peta"),
    "T": ("T", 12, "tera"),
    "G": ("G", 9, "giga"),
    "M": ("M", 6, "mega"),
    "k": ("k", 3, "kilo"),
    "h": ("h", 2, "hecto"),
    "da": ("da", 1, "deca"),
    "d": ("d", -1, "deci"),
    "c": ("c", -2, "centi"),
    "m": ("m", -3, "milli"),
    "u": ("u", -6, "micro"),
    "\u00b5": ("u", -6, "micro"),
    "\u03bc": ("u", -6, "micro"),
    "n": ("n", -9, "nano"),
    "p": ("p", -12, "pico"),
    "f": ("f", -15, "femto"),
    "a": ("a", -18, "atto"),
    "z": ("z", -21, "zepto"),
    "y": ("y", -24, "yocto"),
}

# Whole words, matched case-insensitively, with an optional plural 's' and an optional
# prefix word ('millivolts', 'Microvolt', 'nanoamperes').
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
_PREFIX_WORDS = {name: attr for attr, _, name in _PREFIXES.values()} | {"deka": "da"}

_DEG_C = u.Unit.create(u.get_dim(u.kelvin), name="degC", dispname="degC")
_PERCENT = u.Unit.create(u.get_dim(u.UNITLESS), name="percent", dispname="%", scale=-2)
_MMHG = u.Unit.create(u.get_dim(u.pascal), name="mmHg", dispname="mmHg", scale=2, factor=1.33322387415)
_BPM = u.Unit.create(u.get_dim(u.hertz), name="bpm", dispname="bpm", factor=1 / 60)

# Units that take no prefix.
_SPECIAL: dict[str, u.Unit] = {
    "degC": _DEG_C,
    "\u00b0C": _DEG_C,
    "\u2103": _DEG_C,
    "celsius": _DEG_C,
    "%": _PERCENT,
    "percent": _PERCENT,
    "mmHg": _MMHG,
    "bpm": _BPM,
}
_DIMENSIONLESS = {"", "1", "dimensionless", "unitless"}
# Spellings of "no unit given": refused rather than guessed (case-insensitive).
_NOT_A_UNIT = {"n/a", "na", "n.a.", "none", "null", "unknown", "?", "-"}

_SUPERSCRIPTS = str.maketrans(
    "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079", "-0123456789"
)
_SUP = "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
_TOKEN = re.compile(
    rf"\s*(?:(?P<open>\()|(?P<close>\))|(?P<div>/)|(?P<mul>[*\u00b7\u22c5\u00d7])"
    rf"|\^(?P<exp>[+-]?\d+)|(?P<sup>[{_SUP}]+)|(?P<name>[^\s()/*\u00b7\u22c5\u00d7^{_SUP}]+))"
)
_HELP = (
    "expected e.g. 'uV', 'µV', 'mV', 'V', 'volts', 'nA', 'pA', 'T', 'fT', 'T/m', 'fT/cm', 'degC', '%' "
    "(see unitnorm.io.parse_unit)"
)


def _prefixed(prefix: str, attr: str) -> u.Unit:
    return getattr(u, prefix + attr) if prefix else getattr(u, attr)


def _symbol_candidates(name: str, *, fold: bool) -> dict[str, u.Unit]:
    """All readings of ``name`` as [prefix]symbol, keyed by their canonical spelling."""
    out: dict[str, u.Unit] = {}
    key = name.casefold() if fold else name
    for sym, (attr, _) in _SYMBOLS.items():
        if (sym.casefold() if fold else sym) == key:
            out[sym] = _prefixed("", attr)
        for pre, (battr, _, _) in _PREFIXES.items():
            spelled = pre + sym
            if (spelled.casefold() if fold else spelled) == key:
                out[battr + sym] = _prefixed(battr, attr)
    # u, µ and μ (and Ohm, ohm, Ω) give the same unit: keep one reading per distinct unit
    distinct: dict[str, u.Unit] = {}
    for spelled, unit in out.items():
        if not any(unit == seen and str(unit) == str(seen) for seen in distinct.values()):
            distinct[spelled] = unit
    return distinct


def _word(name: str) -> u.Unit | None:
    word = name.casefold()
    for stem in (word, word[:-1] if word.endswith("s") else None):
        if not stem:
            continue
        if stem in _WORDS:
            return _prefixed("", _WORDS[stem])
        for pword, pattr in _PREFIX_WORDS.items():
            if stem.startswith(pword) and stem[len(pword) :] in _WORDS:
                return _prefixed(pattr, _WORDS[stem[len(pword) :]])
    return None


def _name(name: str, text: str) -> u.Unit:
    if name in _SPECIAL:
        return _SPECIAL[name]
    if name == "C":
        raise ValueError(
            f"ambiguous unit {text!r}: 'C' could be coulomb or degree Celsius; write 'coulomb' or 'degC'"
        )
    exact = _symbol_candidates(name, fold=False)
    if len(exact) == 1:
        return next(iter(exact.values()))
    word = _word(name)
    if word is not None:
        return word
    if name.casefold() in {k.casefold() for k in _SPECIAL}:
        return next(v for k, v in _SPECIAL.items() if k.casefold() == name.casefold())
    folded = _symbol_candidates(name, fold=True)
    if len(folded) == 1:
        return next(iter(folded.values()))
    if len(folded) > 1:
        options = " or ".join(f"{spelled!r} ({_describe(spelled)})" for spelled in sorted(folded))
        raise ValueError(
            f"ambiguous unit {text!r}: {name!r} could be {options}; write it with the intended case"
        )
    raise ValueError(f"unknown unit {text!r}; {_HELP}")


def _describe(spelled: str) -> str:
    for sym, (_, full) in _SYMBOLS.items():
        if spelled == sym:
            return full
        if spelled.endswith(sym) and spelled[: -len(sym)] in {p for _, (p, _, _) in _PREFIXES.items()}:
            pre = spelled[: -len(sym)]
            return next(n for _, (a, _, n) in _PREFIXES.items() if a == pre) + full
    return spelled  # pragma: no cover - every candidate is a prefix plus a symbol


def _tokens(s: str, text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    s = s.replace("**", "^")
    while pos < len(s):
        if s[pos:].isspace():
            break
        match = _TOKEN.match(s, pos)
        if match is None:
            raise ValueError(f"unknown unit {text!r}: cannot read {s[pos:].strip()!r}; {_HELP}")
        kind = match.lastgroup
        out.append((kind, match[kind]))
        pos = match.end()
    return out


class _Grammar:
    """Parse ``quotient := product ('/' product)*``.

    ``product := power ([*] power)*`` and ``power := (name | '(' quotient ')') [^int]``,
    so '/' divides by everything up to the next '/': ``'J/kg K'`` is ``J / (kg K)``.
    """

    def __init__(self, tokens: list[tuple[str, str]], text: str):
        self.tokens, self.pos, self.text = tokens, 0, text

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def fail(self, why: str) -> ValueError:
        return ValueError(f"unknown unit {self.text!r}: {why}; {_HELP}")

    def quotient(self) -> u.Unit:
        unit = self.product()
        while self.peek() == "div":
            self.pos += 1
            unit = unit / self.product()
        return unit

    def product(self) -> u.Unit:
        unit = self.power()
        while self.peek() in ("mul", "name", "open"):
            if self.peek() == "mul":
                self.pos += 1
            unit = unit * self.power()
        return unit

    def power(self) -> u.Unit:
        kind = self.peek()
        if kind == "name":
            name = self.tokens[self.pos][1]
            self.pos += 1
            base = u.UNITLESS if name == "1" else _name(name, self.text)
        elif kind == "open":
            self.pos += 1
            base = self.quotient()
            if self.peek() != "close":
                raise self.fail("a '(' is not closed")
            self.pos += 1
        else:
            raise self.fail(
                "a unit is missing" if kind is None else f"unexpected {self.tokens[self.pos][1]!r}"
            )
        kind = self.peek()
        if kind in ("exp", "sup"):
            power = int(self.tokens[self.pos][1].translate(_SUPERSCRIPTS))
            self.pos += 1
            if power == 0:
                raise self.fail("exponent 0")
            return base**power
        return base


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

    Notes
    -----
    What is accepted, after stripping surrounding whitespace:

    * **Symbols with an SI prefix** (``Y`` ... ``y``, with ``u``, ``µ`` U+00B5 and
      ``μ`` U+03BC all meaning micro): ``V``, ``A``, ``T``, ``m``, ``s``, ``Hz``,
      ``S``, ``Ohm``/``ohm``/``Ω``, ``F``, ``K``, ``g``, ``mol``, ``M`` (molar),
      ``L``/``l``, ``Pa``. Case matters first: ``'mV'`` is millivolt and ``'MV'``
      megavolt, ``'nA'`` nanoampere.
    * **Other case variants** are read only where one unit fits: ``'uv'`` and
      ``'UV'`` are microvolt, ``'HZ'`` hertz, ``'KHZ'`` kilohertz; ``'mv'`` (mV or
      MV?), ``'pa'`` (pA or Pa?) and ``'US'`` (µS or µs?) are refused as ambiguous.
    * **Words**, in any case, singular or plural, with an optional prefix word:
      ``'volts'``, ``'Millivolt'``, ``'microvolts'``, ``'nanoamperes'``, ``'tesla'``.
    * **Products, quotients and integer powers**: ``'T/m'``, ``'fT/cm'``,
      ``'fT / cm'``, ``'uV^2'``, ``'uV**2'``, ``'m²'``, ``'m s^-1'``, ``'mV*s'``,
      ``'1/s'`` (brainunit's own spellings such as ``'m^2 kg s^-3 A^-1'`` read back).
    * **Specials** without prefixes: ``'degC'``/``'°C'``/``'℃'``, ``'%'``/``'percent'``,
      ``'mmHg'``, ``'bpm'`` (1/60 Hz).
    * **Dimensionless**: ``''``, ``'1'``, ``'dimensionless'``, ``'unitless'``.

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
    if s in _SPECIAL:
        return _SPECIAL[s]
    grammar = _Grammar(_tokens(s, text), text)
    unit = grammar.quotient()
    if grammar.peek() is not None:
        raise grammar.fail(f"unexpected {grammar.tokens[grammar.pos][1]!r}")
    return unit
