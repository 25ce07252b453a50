"""The full table of unit spellings ``unitnorm.io.parse_unit`` reads, and what it refuses.

Written against the hand-written grammar before it was replaced by a thin layer over
``brainunit.parse_unit``: every spelling here must keep giving the same unit (same
dimension, scale, factor and, for single names, the same printed name). Expected units are
built from brainunit's own attributes, never from ``parse_unit``'s output.
"""

from __future__ import annotations

import brainunit as u
import pytest

from unitnorm.io import parse_unit

# symbol -> brainunit attribute (the unit without a prefix)
SYMBOLS = {
    "V": "volt",
    "A": "amp",
    "T": "tesla",
    "m": "metre",
    "s": "second",
    "Hz": "hertz",
    "S": "siemens",
    "Ohm": "ohm",
    "ohm": "ohm",
    "\u03a9": "ohm",
    "\u2126": "ohm",
    "F": "farad",
    "K": "kelvin",
    "g": "gram",
    "mol": "mole",
    "M": "molar",
    "L": "liter",
    "l": "liter",
    "Pa": "pascal",
    "W": "watt",
    "Wb": "weber",
    "J": "joule",
    "N": "newton",
    "H": "henry",
}
# prefix as written -> prefix of the brainunit attribute
PREFIXES = {
    "": "",
    "Y": "Y",
    "Z": "Z",
    "E": "E",
    "P": "P",
    "T": "T",
    "G": "G",
    "M": "M",
    "k": "k",
    "h": "h",
    "da": "da",
    "d": "d",
    "c": "c",
    "m": "m",
    "u": "u",
    "\u00b5": "u",
    "\u03bc": "u",
    "n": "n",
    "p": "p",
    "f": "f",
    "a": "a",
    "z": "z",
    "y": "y",
}


def _prefixed_table():
    rows = {}
    for sym, attr in SYMBOLS.items():
        for pre, battr in PREFIXES.items():
            rows.setdefault(pre + sym, []).append(getattr(u, battr + attr))
    # 'C' alone is refused (coulomb or Celsius); prefixed coulombs are read
    for pre, battr in PREFIXES.items():
        if pre:
            rows.setdefault(pre + "C", []).append(getattr(u, battr + "coulomb"))
    # keep spellings with one reading only (e.g. none collide today, but stay safe)
    return sorted((k, v[0]) for k, v in rows.items() if all(x == v[0] for x in v))


PREFIXED = _prefixed_table()

CASE_FOLDED = [
    ("uv", u.uvolt),
    ("UV", u.uvolt),
    ("Uv", u.uvolt),
    ("v", u.volt),
    ("nv", u.nvolt),
    ("HZ", u.hertz),
    ("hz", u.hertz),
    ("KHZ", u.khertz),
    ("khz", u.khertz),
    ("OHM", u.ohm),
    ("KOHM", u.kohm),
    ("kOHM", u.kohm),
    ("ft", u.ftesla),
    ("FT", u.ftesla),
    ("ua", u.uamp),
    ("na", None),  # "not available", refused below
]

WORDS = [
    ("volt", u.volt),
    ("volts", u.volt),
    ("Volt", u.volt),
    ("VOLTS", u.volt),
    ("millivolt", u.mvolt),
    ("Millivolts", u.mvolt),
    ("microvolt", u.uvolt),
    ("microvolts", u.uvolt),
    ("Microvolts", u.uvolt),
    ("nanovolts", u.nvolt),
    ("kilovolt", u.kvolt),
    ("decavolt", u.davolt),
    ("dekavolts", u.davolt),
    ("ampere", u.amp),
    ("amperes", u.amp),
    ("amps", u.amp),
    ("nanoamperes", u.namp),
    ("picoamps", u.pamp),
    ("tesla", u.tesla),
    ("femtotesla", u.ftesla),
    ("meter", u.metre),
    ("meters", u.metre),
    ("metre", u.metre),
    ("centimetres", u.cmetre),
    ("second", u.second),
    ("seconds", u.second),
    ("milliseconds", u.msecond),
    ("hertz", u.hertz),
    ("kilohertz", u.khertz),
    ("siemens", u.siemens),
    ("microsiemens", u.usiemens),
    ("ohm", u.ohm),
    ("ohms", u.ohm),
    ("kiloohms", u.kohm),
    ("megaohm", u.Mohm),
    ("farad", u.farad),
    ("picofarads", u.pfarad),
    ("kelvin", u.kelvin),
    ("gram", u.gram),
    ("kilograms", u.kgram),
    ("mole", u.mole),
    ("millimoles", u.mmole),
    ("molar", u.molar),
    ("millimolar", u.mmolar),
    ("liter", u.liter),
    ("litres", u.liter),
    ("milliliters", u.mliter),
    ("pascal", u.pascal),
    ("kilopascals", u.kpascal),
    ("watt", u.watt),
    ("milliwatts", u.mwatt),
    ("weber", u.weber),
    ("joule", u.joule),
    ("joules", u.joule),
    ("newton", u.newton),
    ("newtons", u.newton),
    ("henry", u.henry),
    ("coulomb", u.coulomb),
    ("coulombs", u.coulomb),
]

COMPOUND = [
    ("T/m", u.tesla / u.metre),
    ("fT/cm", u.ftesla / u.cmetre),
    ("fT / cm", u.ftesla / u.cmetre),
    ("fT/ cm", u.ftesla / u.cmetre),
    ("uV^2", u.uvolt**2),
    ("uV**2", u.uvolt**2),
    ("uV ^ 2", None),  # refused: the exponent belongs to the name
    ("\u00b5V\u00b2", u.uvolt**2),
    ("\u00b5V\u00b2/Hz", u.uvolt**2 / u.hertz),
    ("uV^2/Hz", u.uvolt**2 / u.hertz),
    ("V^+2", u.volt**2),
    ("m\u00b2", u.metre**2),
    ("m\u207b\u00b9", u.metre**-1),
    ("m^-1", u.metre**-1),
    ("m s^-1", u.metre / u.second),
    ("m*s^-1", u.metre / u.second),
    ("m * s^-1", u.metre / u.second),
    ("mV*s", u.mvolt * u.second),
    ("mV s", u.mvolt * u.second),
    ("mV\u00b7s", u.mvolt * u.second),
    ("mV \u22c5 s", u.mvolt * u.second),
    ("mV\u00d7s", u.mvolt * u.second),
    ("1/s", u.hertz),
    ("1 / s", u.hertz),
    ("V/s/s", u.volt / u.second / u.second),
    ("J/kg K", u.joule / (u.kgram * u.kelvin)),
    ("J/(kg K)", u.joule / (u.kgram * u.kelvin)),
    ("J/(kg*K)", u.joule / (u.kgram * u.kelvin)),
    ("(uV)^2", u.uvolt**2),
    ("(m/s)^2", (u.metre / u.second) ** 2),
    ("(m/s)^-1", u.second / u.metre),
    ("((m s)^2/A)^2", (u.metre**2 * u.second**2 / u.amp) ** 2),
    ("A/m^2", u.amp / u.metre**2),
    ("V/m\u00b2", u.volt / u.metre**2),
    ("nA/cm^2", u.namp / u.cmetre**2),
    ("mS/cm^2", u.msiemens / u.cmetre**2),
    ("mmol/L", u.mmole / u.liter),
    ("m^2 kg s^-3 A^-1", u.volt),
    ("kg m^2 s^-2", u.joule),
    ("microvolts/Hz", u.uvolt / u.hertz),
    ("uv/hz", u.uvolt / u.hertz),
    ("mmHg/s", None),  # checked below with the specials
]

SPECIALS = [
    ("degC", "degC", u.kelvin),
    ("\u00b0C", "degC", u.kelvin),
    ("\u2103", "degC", u.kelvin),
    ("celsius", "degC", u.kelvin),
    ("Celsius", "degC", u.kelvin),
    ("DEGC", "degC", u.kelvin),
    ("%", "%", u.UNITLESS),
    ("percent", "%", u.UNITLESS),
    ("Percent", "%", u.UNITLESS),
    ("mmHg", "mmHg", u.pascal),
    ("MMHG", "mmHg", u.pascal),
    ("bpm", "bpm", u.hertz),
    ("BPM", "bpm", u.hertz),
]
# one of each special, in SI: the size of one unit
SPECIAL_SI = {"degC": 1.0, "%": 0.01, "mmHg": 133.322387415, "bpm": 1 / 60}

DIMENSIONLESS = ["", "1", " ", "dimensionless", "Dimensionless", "unitless", "UNITLESS"]

WHITESPACE = [(" uV ", u.uvolt), ("\tuV\n", u.uvolt), ("  fT / cm  ", u.ftesla / u.cmetre)]

# brainunit's own str() of units reads back
BRAINUNIT_SPELLINGS = [
    u.uvolt,
    u.uvolt**2,
    u.ftesla / u.cmetre,
    u.volt * u.amp,
    u.mvolt / u.msecond,
    u.amp * u.metre,
    u.molar,
    u.tesla / u.metre,
    u.volt / u.metre**2,
    u.amp / u.metre**2,
    u.second**2,
    u.kohm,
    u.usiemens,
]

REFUSED = [
    ("mv", r"ambiguous unit 'mv'.*'MV' \(megavolt\).*'mV' \(millivolt\)"),
    ("MHZ", r"ambiguous unit 'MHZ'.*megahertz.*millihertz"),
    ("mhz", r"ambiguous unit 'mhz'"),
    ("pa", r"ambiguous unit 'pa'.*pascal"),
    ("US", r"ambiguous unit 'US'.*microsiemens.*microsecond"),
    ("mv/s", r"ambiguous unit 'mv/s': 'mv' could be"),
    ("C", r"ambiguous unit 'C'.*coulomb.*degC"),
    ("furlongs", r"unknown unit 'furlongs'; expected e.g. 'uV'"),
    ("N/A", r"unknown unit 'N/A'.*not available"),
    ("n/a", r"unknown unit 'n/a'.*not available"),
    ("NA", r"unknown unit 'NA'.*write 'nA' for nanoampere"),
    ("na", r"unknown unit 'na'.*not available"),
    ("none", r"unknown unit 'none'.*not available"),
    ("?", r"unknown unit '\?'.*not available"),
    ("-", r"unknown unit '-'.*not available"),
    ("m2", r"unknown unit 'm2'"),
    ("V^0", r"unknown unit 'V\^0'"),
    ("V^0.5", r"unknown unit 'V\^0.5'"),
    ("uV ^ 2", r"unknown unit 'uV \^ 2'"),
    ("uV/", r"unknown unit 'uV/'"),
    ("/uV", r"unknown unit '/uV'"),
    ("(uV", r"unknown unit '\(uV'"),
    ("uV)", r"unknown unit 'uV\)'"),
    ("()", r"unknown unit '\(\)'"),
    ("uV//s", r"unknown unit 'uV//s'"),
    ("uV**", r"unknown unit 'uV\*\*'"),
    ("xV", r"unknown unit 'xV'"),
    ("inch", r"unknown unit 'inch'"),
]


def _same(got, expected, *, name=True):
    assert got == expected, (got, expected)
    assert u.get_dim(got) == u.get_dim(expected)
    assert got.scale == expected.scale and got.factor == pytest.approx(expected.factor, rel=1e-15)
    if name:
        assert str(got) == str(expected), (str(got), str(expected))


@pytest.mark.parametrize(("text", "expected"), PREFIXED, ids=[t for t, _ in PREFIXED])
def test_prefixed_symbols(text, expected):
    _same(parse_unit(text), expected)


@pytest.mark.parametrize(("text", "expected"), [r for r in CASE_FOLDED if r[1] is not None])
def test_case_folded_symbols_with_one_reading(text, expected):
    _same(parse_unit(text), expected)


@pytest.mark.parametrize(("text", "expected"), WORDS)
def test_words(text, expected):
    _same(parse_unit(text), expected)


@pytest.mark.parametrize(("text", "expected"), [r for r in COMPOUND if r[1] is not None])
def test_compound(text, expected):
    _same(parse_unit(text), expected, name=False)


@pytest.mark.parametrize(("text", "name", "si"), SPECIALS)
def test_specials(text, name, si):
    got = parse_unit(text)
    assert str(got) == name
    assert u.get_dim(got) == u.get_dim(si)
    one = (1 * got).to_decimal(si)
    assert float(one) == pytest.approx(SPECIAL_SI[name], rel=1e-12)


@pytest.mark.parametrize(("text", "per"), [("mmHg/s", u.second), ("degC/s", u.second), ("%/s", u.second)])
def test_specials_in_compounds(text, per):
    base = text.split("/")[0]
    got = parse_unit(text)
    assert u.get_dim(got) == u.get_dim(parse_unit(base) / per)
    assert float((1 * got).to_decimal(parse_unit(base) / per)) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("text", DIMENSIONLESS)
def test_dimensionless(text):
    _same(parse_unit(text), u.UNITLESS, name=False)


@pytest.mark.parametrize(("text", "expected"), WHITESPACE)
def test_whitespace(text, expected):
    _same(parse_unit(text), expected)


@pytest.mark.parametrize("unit", BRAINUNIT_SPELLINGS, ids=str)
def test_brainunit_spelling_reads_back(unit):
    _same(parse_unit(str(unit)), unit, name=False)


def test_millivolt_is_not_megavolt():
    assert float((1 * parse_unit("mV")).to_decimal(u.volt)) == pytest.approx(1e-3)
    assert float((1 * parse_unit("MV")).to_decimal(u.volt)) == pytest.approx(1e6)
    assert float((1 * parse_unit("Mohm")).to_decimal(u.ohm)) == pytest.approx(1e6)
    assert float((1 * parse_unit("mohm")).to_decimal(u.ohm)) == pytest.approx(1e-3)


@pytest.mark.parametrize(("text", "match"), REFUSED)
def test_refused(text, match):
    with pytest.raises(ValueError, match=match):
        parse_unit(text)


@pytest.mark.parametrize("bad", [None, b"uV", 3, u.mV])
def test_type_error(bad):
    with pytest.raises(TypeError, match="parse_unit expected a str"):
        parse_unit(bad)


def test_the_grammar_is_brainunits():
    """The module rewrites spellings only; brainunit.parse_unit builds every compound unit."""
    from unitnorm.io import _units_parse

    assert not hasattr(_units_parse, "_Grammar")
    assert _units_parse._to_brainunit("\u00b5V\u00b2/Hz", "") == "uvolt^2 / hertz"
    assert _units_parse._to_brainunit("J/(kg K)", "") == "joule / (kgram * kelvin)"
    assert _units_parse._to_brainunit("(m/s)^-2", "") == "(1 / ((metre / second) * (metre / second)))"
